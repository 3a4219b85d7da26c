//! The `dns` capability against a real DNS server on loopback
//! (`tests/support/dns_server.py`, Debian's python3-dnslib): the host's
//! resolver gives each record type and each error the contract names, its
//! cache answers repeats, and the `dnsbl` engine, granted `dns`, finds
//! listings through it within its query budget and its deadline, without
//! holding the worker while it waits.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cordon::bindings::cordon::scanner::dns::{DnsError, DnsRecord, Mx, RecordType};
use cordon::bindings::{Envelope, IpAddress, Outcome, Verdict, empty_envelope};
use cordon::engine::EngineOutcome;
use cordon::engine::capabilities::dns::{Dns, DnsSettings};
use cordon::scan::{Message, scan_message};

use crate::common::*;

/// The test DNS server, and every line it printed.
struct DnsServer {
    child: Child,
    addr: SocketAddr,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

const PYTHON: &str = "/usr/bin/python3";

impl DnsServer {
    fn start() -> DnsServer {
        let dnslib = Command::new(PYTHON)
            .args(["-c", "import dnslib"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            dnslib,
            "{PYTHON} with dnslib is missing: `./dev test` installs python3-dnslib (Debian)"
        );
        let mut child = Command::new(PYTHON)
            .arg(root().join("tests/support/dns_server.py"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the DNS server");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = child.stdout.take().expect("piped stdout");
        let shared = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (lock, cv) = &*shared;
                lock.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        let mut server = DnsServer {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            lines,
        };
        let first = server.wait_line(|l| l.starts_with("listening "));
        let port: u16 = first["listening ".len()..].parse().expect("a port");
        server.addr.set_port(port);
        server
    }

    /// The first line `wanted` accepts, waiting for the server to print it.
    fn wait_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        let (lock, cv) = &*self.lines;
        let (lines, timeout) = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(30), |l| {
                !l.iter().any(|x| wanted(x))
            })
            .unwrap();
        assert!(!timeout.timed_out(), "the DNS server printed: {lines:?}");
        lines.iter().find(|x| wanted(x)).unwrap().clone()
    }

    /// How many queries for `name` of `kind` reached the server.
    fn queries(&self, name: &str, kind: &str) -> usize {
        let want = format!("query {name} {kind}");
        let (lock, _) = &*self.lines;
        lock.lock().unwrap().iter().filter(|l| **l == want).count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings(server: &DnsServer, timeout: Duration) -> DnsSettings {
    DnsSettings {
        servers: vec![server.addr],
        query_timeout: timeout,
        ..DnsSettings::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_resolver_gives_each_record_type_and_each_error() {
    let server = DnsServer::start();
    let dns = Dns::new(settings(&server, Duration::from_millis(500))).unwrap();
    let far = || Instant::now() + Duration::from_secs(30);
    runtime().block_on(async {
        let records = |name: &'static str, t: RecordType| {
            let dns = &dns;
            async move {
                dns.lookup(name, t, far())
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            }
        };
        let a = records("2.0.0.127.bl.test", RecordType::A).await;
        assert!(matches!(a.records[..], [DnsRecord::A((127, 0, 0, 2))]));
        assert!(a.ttl > 0 && a.ttl <= 300, "{}", a.ttl);
        let mx = records("mail.test.", RecordType::Mx).await;
        let mut mxs: Vec<(u16, String)> = mx
            .records
            .iter()
            .map(|r| match r {
                DnsRecord::Mx(Mx {
                    preference,
                    exchange,
                }) => (*preference, exchange.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        mxs.sort();
        assert_eq!(
            mxs,
            [(10, "mx1.mail.test".into()), (20, "mx2.mail.test".into())]
        );
        assert!(mx.ttl <= 60, "the least of the records' TTLs: {}", mx.ttl);
        let txt = records("txt.test", RecordType::Txt).await;
        assert!(
            matches!(&txt.records[..], [DnsRecord::Txt(s)] if *s == [b"v=spf1 ".to_vec(), b"-all".to_vec()]),
            "{:?}",
            txt.records
        );
        let aaaa = records("aaaa.test", RecordType::Aaaa).await;
        assert!(matches!(
            aaaa.records[..],
            [DnsRecord::Aaaa((0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))]
        ));
        let ptr = records("4.3.2.1.in-addr.arpa", RecordType::Ptr).await;
        assert!(matches!(&ptr.records[..], [DnsRecord::Ptr(n)] if n == "host.test"));
        let ns = records("ns.test", RecordType::Ns).await;
        assert!(matches!(&ns.records[..], [DnsRecord::Ns(n)] if n == "ns1.test"));
        let cname = records("alias.test", RecordType::Cname).await;
        assert!(matches!(&cname.records[..], [DnsRecord::Cname(n)] if n == "target.test"));
        // An alias followed: the addresses, not the CNAME on the way.
        let via = records("alias.test", RecordType::A).await;
        assert!(
            matches!(via.records[..], [DnsRecord::A((192, 0, 2, 1))]),
            "{:?}",
            via.records
        );

        let err = |name: &'static str, t: RecordType, deadline: Instant| {
            let dns = &dns;
            async move {
                dns.lookup(name, t, deadline)
                    .await
                    .expect_err("an error")
            }
        };
        assert_eq!(err("nope.test", RecordType::A, far()).await, DnsError::Nxdomain);
        assert_eq!(err("empty.test", RecordType::Txt, far()).await, DnsError::NoData);
        assert_eq!(
            err("fail.test", RecordType::A, far()).await,
            DnsError::ServerFailure
        );
        assert_eq!(
            err("x.slow.test", RecordType::A, far()).await,
            DnsError::Timeout
        );
        assert_eq!(
            err("a..b.test", RecordType::A, far()).await,
            DnsError::InvalidName
        );
        // The scan's deadline ends the wait before the query timeout.
        let dns_long = Dns::new(settings(&server, Duration::from_secs(600))).unwrap();
        assert_eq!(
            dns_long
                .lookup(
                    "y.slow.test",
                    RecordType::A,
                    Instant::now() + Duration::from_millis(200)
                )
                .await
                .expect_err("cut at the deadline"),
            DnsError::Timeout
        );

        // Repeats come from the cache: answers, NXDOMAIN and no-data alike.
        for _ in 0..3 {
            records("2.0.0.127.bl.test", RecordType::A).await;
            err("nope.test", RecordType::A, far()).await;
            err("empty.test", RecordType::Txt, far()).await;
        }
    });
    assert_eq!(server.queries("2.0.0.127.bl.test", "A"), 1);
    assert_eq!(server.queries("nope.test", "A"), 1);
    assert_eq!(server.queries("empty.test", "TXT"), 1);
    assert_eq!(server.queries("a..b.test", "A"), 0, "refused unasked");
}

/// A registry with the `dnsbl` engine granted `dns`, asking `server`.
fn dnsbl_registry(server: &DnsServer, engine: &str, dns: &str) -> cordon::registry::Registry {
    registry_from_toml(&format!(
        "cache_dir = {}\n[dns]\nservers = [\"{}\"]\n{dns}\n\
         [engines.dnsbl]\ncomponent = {}\ncapabilities = [\"dns\"]\n{engine}\n",
        toml_path(&cache_dir()),
        server.addr,
        toml_path(&component("dnsbl")),
    ))
}

fn envelope(client: [u8; 4], from: &str) -> Envelope {
    Envelope {
        client_address: Some(IpAddress::Ipv4((
            client[0], client[1], client[2], client[3],
        ))),
        helo: "client.example".into(),
        mail_from: from.into(),
        ..empty_envelope()
    }
}

fn scan_one(
    reg: &cordon::registry::Registry,
    rt: &tokio::runtime::Runtime,
    envelope: Envelope,
) -> EngineOutcome {
    let msg = Message {
        envelope: Arc::new(envelope),
        bytes: message("dnsbl", "hello").into(),
    };
    let report = rt.block_on(scan_message(&reg.enabled(), &msg, &Default::default()));
    report.results[0].outcome.clone()
}

fn verdict(o: &EngineOutcome) -> &Verdict {
    match o {
        EngineOutcome::Verdict(v) => v,
        EngineOutcome::Fault(f) => panic!("a fault: {}: {}", f.kind, f.detail),
    }
}

fn threats(v: &Verdict) -> Vec<String> {
    match &v.outcome {
        Outcome::Detected(ts) => ts.iter().map(|t| t.name.clone()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn an_engine_granted_dns_finds_listings_through_the_host() {
    let server = DnsServer::start();
    let reg = dnsbl_registry(
        &server,
        "settings.zones = \"bl.test, bl2.test\"\nsettings.domain_zones = \"dbl.test\"",
        "",
    );
    let rt = runtime();
    let listed = scan_one(&reg, &rt, envelope([127, 0, 0, 2], "a@listed.example"));
    let v = verdict(&listed);
    assert_eq!(
        threats(v),
        ["DNSBL.bl.test", "DNSBL.bl2.test", "DNSBL.dbl.test"],
        "{v:?}"
    );
    assert!(
        v.rules.contains(&"bl.test=127.0.0.2".to_string()),
        "{:?}",
        v.rules
    );
    assert!(
        v.rules.contains(&"bl2.test=127.0.0.4".to_string()),
        "{:?}",
        v.rules
    );

    // Not listed anywhere: clean. A refused query is not a listing.
    let clean = scan_one(&reg, &rt, envelope([192, 0, 2, 1], "a@clean.example"));
    let v = verdict(&clean);
    assert!(matches!(v.outcome, Outcome::Clean), "{v:?}");
    let refused = scan_one(&reg, &rt, envelope([127, 0, 0, 3], ""));
    let v = verdict(&refused);
    assert!(matches!(v.outcome, Outcome::Clean), "{v:?}");
    assert!(
        v.rules
            .contains(&"bl.test:refused-127.255.255.254".to_string()),
        "{:?}",
        v.rules
    );
    assert!(server.queries("3.0.0.127.bl.test", "A") >= 1);

    // Every call is counted. The three scans asked: the two address
    // zones, and the domain zone for the sender's domain and the HELO's
    // (4: three listings, client.example not listed); 4 more not listed;
    // then the two address zones (one refused answer) and the HELO.
    let engine = reg.engine("dnsbl").unwrap();
    let snap = engine.stats.snapshot();
    let calls = &snap.capability_calls;
    assert_eq!(calls["dns.ok"], 4, "{calls:?}");
    assert_eq!(calls["dns.nxdomain"], 7, "{calls:?}");
    assert_eq!(calls.values().sum::<u64>(), 11, "{calls:?}");
}

#[test]
fn the_query_budget_and_timeouts_reach_the_engine_as_errors() {
    let server = DnsServer::start();
    let rt = runtime();
    // One query a scan: the first zone is asked, the others are refused
    // without reaching the server.
    let reg = dnsbl_registry(
        &server,
        "settings.zones = \"bl.test, bl2.test, nobudget.test\"",
        "max_queries_per_scan = 1",
    );
    let v = verdict(&scan_one(&reg, &rt, envelope([127, 0, 0, 2], ""))).clone();
    assert_eq!(threats(&v), ["DNSBL.bl.test"], "{v:?}");
    assert!(
        v.rules.contains(&"bl2.test:budget-exhausted".into()),
        "{:?}",
        v.rules
    );
    assert!(
        v.rules.contains(&"nobudget.test:budget-exhausted".into()),
        "{:?}",
        v.rules
    );
    assert_eq!(server.queries("2.0.0.127.nobudget.test", "A"), 0);
    let calls = reg
        .engine("dnsbl")
        .unwrap()
        .stats
        .snapshot()
        .capability_calls;
    assert_eq!(calls["dns.budget-exhausted"], 2, "{calls:?}");

    // A server that does not answer: the query times out, the answers
    // that came are used.
    let reg = dnsbl_registry(
        &server,
        "settings.zones = \"bl.test, slow.test\"",
        "timeout_ms = 300",
    );
    let v = verdict(&scan_one(&reg, &rt, envelope([127, 0, 0, 2], ""))).clone();
    assert_eq!(threats(&v), ["DNSBL.bl.test"], "{v:?}");
    assert!(
        v.rules.contains(&"slow.test:timeout".into()),
        "{:?}",
        v.rules
    );

    // A query that would outlast the scan: the scan's deadline wins, and
    // the scan is a timeout.
    let reg = dnsbl_registry(
        &server,
        "settings.zones = \"slow.test\"\nlimits.timeout_ms = 400",
        "timeout_ms = 600000",
    );
    let outcome = scan_one(&reg, &rt, envelope([127, 0, 0, 9], ""));
    assert!(
        matches!(&outcome, EngineOutcome::Fault(f) if f.kind.as_str() == "timeout"),
        "{outcome:?}"
    );
    assert!(server.queries("9.0.0.127.slow.test", "A") >= 1);
}

/// A hundred scans waiting on a server that never answers, and one quick
/// scan, polled together on one worker thread, the waiting ones first:
/// the quick one finishes first. Were a guest waiting on DNS to hold the
/// thread, the quick scan could not even start before the others ended.
#[test]
fn scans_waiting_on_dns_do_not_hold_the_worker() {
    let server = DnsServer::start();
    let reg = registry_from_toml(&format!(
        "cache_dir = {}\n[pool]\nmax_instances = 110\n[dns]\nservers = [\"{}\"]\ntimeout_ms = 3000\n\
         [engines.dnsbl]\ncomponent = {}\ncapabilities = [\"dns\"]\nsettings.zones = \"slow.test\"\n\
         limits.max_concurrency = 100\nlimits.timeout_ms = 10000\n\
         [engines.testsig]\ncomponent = {}\n",
        toml_path(&cache_dir()),
        server.addr,
        toml_path(&component("dnsbl")),
        toml_path(&component("testsig")),
    ));
    let engines = reg.enabled();
    let pick = |name: &str| -> Vec<_> {
        engines
            .iter()
            .filter(|g| &*g.name == name)
            .cloned()
            .collect()
    };
    let (waiting, quick) = (pick("dnsbl"), pick("testsig"));
    let order = Arc::new(Mutex::new(Vec::new()));
    let rt = runtime();
    rt.block_on(async {
        let mut scans = Vec::new();
        for i in 0..100u8 {
            let (waiting, order) = (waiting.clone(), order.clone());
            scans.push(tokio::spawn(async move {
                let msg = Message {
                    envelope: Arc::new(envelope([10, 0, 1, i], "")),
                    bytes: message("wait", "hello").into(),
                };
                let r = scan_message(&waiting, &msg, &Default::default()).await;
                order.lock().unwrap().push("dnsbl");
                r
            }));
        }
        let fast = {
            let order = order.clone();
            tokio::spawn(async move {
                let msg = Message::from_bytes(message("quick", eicar()));
                let r = scan_message(&quick, &msg, &Default::default()).await;
                order.lock().unwrap().push("testsig");
                r
            })
        };
        let fast = fast.await.unwrap();
        assert!(matches!(
            &fast.results[0].outcome,
            EngineOutcome::Verdict(v) if matches!(v.outcome, Outcome::Detected(_))
        ));
        for s in scans {
            let r = s.await.unwrap();
            let v = verdict(&r.results[0].outcome);
            assert!(
                v.rules.contains(&"slow.test:timeout".into()),
                "{:?}",
                v.rules
            );
        }
    });
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 101);
    assert_eq!(order[0], "testsig", "{order:?}");
}

/// `cordon engine test` on an engine that imports `dns`: refused without
/// the grant, naming the key; with `--grant dns --dns-server`, it passes
/// the suite.
#[test]
fn engine_test_grants_dns_from_the_command_line() {
    let server = DnsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.eml");
    std::fs::write(&clean, message("hello", "nothing to see")).unwrap();
    let wasm = component("dnsbl");
    let sample = format!("{}=clean", clean.display());
    let base = [
        "engine",
        "test",
        wasm.to_str().unwrap(),
        "--setting",
        "zones=bl.test",
        "--sample",
        &sample,
    ];
    let o = cordon(&base);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("engines.dnsbl.capabilities"), "{all}");

    let addr = server.addr.to_string();
    let mut granted = base.to_vec();
    granted.extend(["--grant", "dns", "--dns-server", &addr]);
    let o = cordon(&granted);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// The verdict cache keys on content, so it must not hold the verdicts of
/// an engine granted a capability: they depend on the envelope (here the
/// client address) and on what the network says. The same message from a
/// listed client and then from a clean one gets two fresh verdicts.
#[test]
fn verdicts_of_an_engine_with_capabilities_are_never_cached() {
    let server = DnsServer::start();
    let reg = dnsbl_registry(&server, "settings.zones = \"bl.test\"", "");
    assert!(reg.cache.is_some(), "the verdict cache is on by default");
    let rt = runtime();
    let bytes: Arc<[u8]> = message("same", "same content").into();
    let mut seen = Vec::new();
    for client in [[127, 0, 0, 2], [192, 0, 2, 1], [127, 0, 0, 2]] {
        let msg = Message {
            envelope: Arc::new(envelope(client, "")),
            bytes: bytes.clone(),
        };
        let report = rt.block_on(cordon::scan::scan_with_cache(
            &reg.enabled(),
            &msg,
            &Default::default(),
            reg.cache.as_ref(),
        ));
        let r = &report.results[0];
        assert!(!r.cached, "{client:?}: served from the cache");
        seen.push(threats(verdict(&r.outcome)));
    }
    assert_eq!(seen[0], ["DNSBL.bl.test"]);
    assert!(seen[1].is_empty(), "{seen:?}");
    assert_eq!(seen[2], ["DNSBL.bl.test"]);
}

/// `cordon scan` hands the engines the envelope its flags describe, so an
/// operator can try a DNS block list from the command line.
#[test]
fn cordon_scan_takes_the_envelope_from_its_flags() {
    let server = DnsServer::start();
    let wasm = component("dnsbl");
    let addr = server.addr.to_string();
    let scan = |extra: &[&str]| {
        let mut args = vec![
            "scan",
            "--no-summary",
            "--engine",
            wasm.to_str().unwrap(),
            "--grant",
            "dns",
            "--dns-server",
            &addr,
            "--setting",
            "zones=bl.test",
            "--setting",
            "domain_zones=dbl.test",
        ];
        args.extend_from_slice(extra);
        args.push("samples/clean.eml");
        cordon(&args)
    };
    let o = scan(&["--client", "127.0.0.2"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("DNSBL.bl.test FOUND"), "{}", stdout(&o));
    let o = scan(&["--client", "192.0.2.1", "--from", "<a@listed.example>"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("DNSBL.dbl.test FOUND"),
        "{}",
        stdout(&o)
    );
    let o = scan(&["--client", "192.0.2.1", "--helo", "clean.example"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("samples/clean.eml: OK"),
        "{}",
        stdout(&o)
    );
    let o = scan(&["--from", "a@b\r\nX-Injected: 1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--from"), "{}", stderr(&o));
    let o = scan(&["--client", "not-an-address"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--client"), "{}", stderr(&o));
}
