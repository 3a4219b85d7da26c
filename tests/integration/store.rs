//! The `store` capability: the `tally` test engine, granted `store`, keeps
//! counts across scans and what `cordon learn` taught it, in the embedded
//! store (across restarts) and in a real `redis-server` (shared by two
//! cordon processes); the quotas and size bounds reach it as errors.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use cordon::bindings::{Envelope, LearnClass, LearnOutcome, Outcome, empty_envelope};
use cordon::engine::EngineOutcome;
use cordon::scan::{Message, scan_message};

use crate::common::*;

fn config(store: &str, engine: &str) -> String {
    format!(
        "cache_dir = {}\n[store]\n{store}\n\
         [engines.tally]\ncomponent = {}\ncapabilities = [\"store\"]\n{engine}\n",
        toml_path(&cache_dir()),
        toml_path(&component("tally")),
    )
}

fn embedded(dir: &Path) -> String {
    format!("path = {}", toml_path(&dir.join("state/store.redb")))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn envelope(from: &str) -> Envelope {
    Envelope {
        mail_from: from.into(),
        ..empty_envelope()
    }
}

/// The rules and threats of one scan of `bytes` by the only engine.
fn scan(
    reg: &cordon::registry::Registry,
    rt: &tokio::runtime::Runtime,
    from: &str,
    bytes: &[u8],
) -> (Vec<String>, Vec<String>) {
    let msg = Message {
        envelope: Arc::new(envelope(from)),
        bytes: bytes.into(),
    };
    let report = rt.block_on(scan_message(&reg.enabled(), &msg, &Default::default()));
    match &report.results[0].outcome {
        EngineOutcome::Verdict(v) => {
            let threats = match &v.outcome {
                Outcome::Detected(ts) => ts.iter().map(|t| t.name.clone()).collect(),
                _ => Vec::new(),
            };
            (v.rules.clone(), threats)
        }
        EngineOutcome::Fault(f) => panic!("a fault: {}: {}", f.kind, f.detail),
    }
}

fn learn(
    reg: &cordon::registry::Registry,
    rt: &tokio::runtime::Runtime,
    bytes: &[u8],
    class: LearnClass,
) -> LearnOutcome {
    let g = reg.enabled().remove(0);
    rt.block_on(g.learn(&envelope(""), bytes, class, None))
        .unwrap_or_else(|e| panic!("learn: {e}"))
}

#[test]
fn counts_and_lessons_persist_in_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(&embedded(dir.path()), "");
    let rt = runtime();
    let spam = message("buy now", "cheap pills");
    {
        let reg = registry_from_toml(&text);
        let (rules, threats) = scan(&reg, &rt, "a@example.org", &spam);
        assert!(threats.is_empty(), "{threats:?}");
        assert_eq!(
            rules,
            ["scans=1", "from=1", "learned.spam=0", "learned.ham=0"]
        );
        let (rules, _) = scan(&reg, &rt, "a@example.org", b"other");
        assert_eq!(rules[..2], ["scans=2", "from=2"]);
        // Each instance is fresh: what it keeps is what the host kept.
        assert!(matches!(
            learn(&reg, &rt, &spam, LearnClass::Spam),
            LearnOutcome::Learned
        ));
        assert!(matches!(
            learn(&reg, &rt, &spam, LearnClass::Spam),
            LearnOutcome::AlreadyLearned
        ));
        let (rules, threats) = scan(&reg, &rt, "b@example.org", &spam);
        assert_eq!(threats, ["Tally.LearnedSpam"]);
        assert_eq!(
            rules,
            ["scans=3", "from=1", "learned.spam=1", "learned.ham=0"]
        );
        let calls = reg
            .engine("tally")
            .unwrap()
            .stats
            .snapshot()
            .capability_calls;
        assert_eq!(calls["store.ok"], 3 * 2 + 3 + 1, "{calls:?}");
    }
    // A restart: the same file, the same counts.
    let reg = registry_from_toml(&text);
    let (rules, threats) = scan(&reg, &rt, "a@example.org", &spam);
    assert_eq!(threats, ["Tally.LearnedSpam"]);
    assert_eq!(rules[..3], ["scans=4", "from=3", "learned.spam=1"]);
    // The file is the operator's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("state/store.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // While this process has the store open, another cordon cannot, and
    // says what to do instead.
    let cfg = write_config(dir.path(), &text);
    let eml = dir.path().join("spam.eml");
    std::fs::write(&eml, &spam).unwrap();
    let o = cordon(&[
        "learn",
        "--config",
        cfg.to_str().unwrap(),
        "--class",
        "spam",
        eml.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(err.contains("open in another process"), "{err}");
    assert!(err.contains("store.redb"), "{err}");
}

#[test]
fn quotas_and_sizes_reach_the_engine_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    for (mode, store, want) in [
        ("flood", "", "store:quota-exhausted"),
        (
            "flood",
            "max_ops_per_scan = 100000\nmax_bytes_per_scan = 100",
            "store:quota-exhausted",
        ),
        ("big", "", "store:too-large"),
        ("not-counter", "", "store:unavailable"),
    ] {
        let path = dir.path().join(format!("{mode}-{}.redb", store.len()));
        let reg = registry_from_toml(&config(
            &format!("path = {}\n{store}", toml_path(&path)),
            &format!("settings.mode = \"{mode}\""),
        ));
        let (rules, _) = scan(&reg, &rt, "", b"m");
        assert_eq!(rules, [want], "{mode} {store}");
        let calls = reg
            .engine("tally")
            .unwrap()
            .stats
            .snapshot()
            .capability_calls;
        let result = want.trim_start_matches("store:");
        assert_eq!(calls[&format!("store.{result}")], 1, "{mode}: {calls:?}");
    }
}

/// A private `redis-server` on a loopback port, stopped on drop.
struct RedisServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        let found = Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "redis-server is missing: `./dev test` installs it (Debian redis-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting redis-server");
        let url = format!("redis://127.0.0.1:{port}/0");
        // Ready when it answers PING.
        let mut ready = false;
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() {
                    ready = &buf == b"+PONG\r\n";
                }
            }
            if ready {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(ready, "redis-server did not answer PING on port {port}");
        RedisServer {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_cordons_share_what_they_learn_through_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("backend = \"redis\"\nurl = \"{}\"", redis.url);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let cfg_a = write_config(&a, &config(&store, ""));
    let cfg_b = write_config(&b, &config(&store, ""));
    let spam = dir.path().join("spam.eml");
    std::fs::write(&spam, message("buy now", "cheap pills")).unwrap();

    // cordon A learns, in its own process.
    let o = cordon(&[
        "learn",
        "--config",
        cfg_a.to_str().unwrap(),
        "--class",
        "spam",
        spam.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("tally learned"), "{}", stdout(&o));

    // cordon B, another process, finds the message taught.
    let o = cordon(&[
        "scan",
        "--json",
        "--config",
        cfg_b.to_str().unwrap(),
        spam.to_str().unwrap(),
    ]);
    let out = stdout(&o);
    assert!(out.contains("Tally.LearnedSpam"), "{out}{}", stderr(&o));
    assert!(out.contains("learned.spam=1"), "{out}");

    // And B, teaching the same message, is told A already did.
    let o = cordon(&[
        "learn",
        "--config",
        cfg_b.to_str().unwrap(),
        "--class",
        "spam",
        spam.to_str().unwrap(),
    ]);
    assert!(
        stdout(&o).contains("tally already-learned"),
        "{}",
        stdout(&o)
    );

    // Two registries in this process count together.
    let rt = runtime();
    let ra = registry_from_toml(&config(&store, ""));
    let rb = registry_from_toml(&config(&store, ""));
    let (first, _) = scan(&ra, &rt, "x@example.org", b"m");
    let (second, _) = scan(&rb, &rt, "x@example.org", b"m");
    let n = |rules: &[String]| -> u64 {
        rules[0]
            .strip_prefix("scans=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{rules:?}"))
    };
    assert_eq!(n(&second), n(&first) + 1);
    assert_eq!(second[1], "from=2");
}

#[test]
fn an_unreachable_redis_is_unavailable_not_a_stall() {
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let reg = registry_from_toml(&config(
        &format!("backend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 500"),
        "",
    ));
    let rt = runtime();
    let (rules, threats) = scan(&reg, &rt, "", b"m");
    assert!(threats.is_empty());
    assert_eq!(rules, ["store:unavailable", "store:unavailable"]);
}

/// `cordon learn --daemon` teaches the running daemon's engines, whose
/// store (embedded: open in that process only) is the one its scans use;
/// a second daemon on the same store is refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn learning_through_the_daemon_reaches_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let text = format!(
        "reload.watch = false\nmilter.listen = [\"inet:0@127.0.0.1\"]\ncontrol.socket = {}\n\
         control.http = \"127.0.0.1:0\"\n{}",
        toml_path(&sock),
        config(&embedded(dir.path()), "")
    );
    let cfg = write_config(dir.path(), &text);
    let running = cordon::daemon::Daemon::start(cordon::config::Config::load(&cfg).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = running.registry().clone();
    let http = running.http_addr().expect("the metrics listener");
    let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));

    let spam = message("buy now", "cheap pills");
    let eml = dir.path().join("spam.eml");
    std::fs::write(&eml, &spam).unwrap();
    let learn = |extra: &[&str]| {
        let mut args = vec![
            "learn",
            "--class",
            "spam",
            "--config",
            cfg.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(eml.to_str().unwrap());
        let o = cordon_in(dir.path(), &args);
        (o.status.code(), stdout(&o), stderr(&o))
    };
    let (code, out, err) = learn(&["--daemon"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("spam.eml: tally learned\n"), "{out}");
    let (code, out, _) = learn(&["--daemon"]);
    assert_eq!(code, Some(0));
    assert!(out.ends_with("spam.eml: tally already-learned\n"), "{out}");
    // A client that announces more than it sends, and hangs up, is
    // dropped; nothing is learned from it, and the daemon serves on.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"learn spam 100000 tally\nFrom: a@b\r\n")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "", "no answer to a message cut short");
    }
    // The daemon's scans see what it learned.
    let msg = Message::from_bytes(spam.clone());
    let report = scan_message(&reg.enabled(), &msg, &Default::default()).await;
    assert!(
        matches!(&report.results[0].outcome, EngineOutcome::Verdict(v)
            if matches!(&v.outcome, Outcome::Detected(t) if t[0].name == "Tally.LearnedSpam")),
        "{:?}",
        report.results[0].outcome
    );
    // In another process the store cannot be opened, and the error says
    // what to do.
    let (code, _, err) = learn(&[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("cordon learn --daemon"), "{err}");
    // An engine the daemon does not have is refused, naming it.
    let (code, _, err) = learn(&["--daemon", "--engine", "nosuch"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no enabled engine \"nosuch\""), "{err}");
    // Counted: the learns' and the scan's store calls.
    let o = cordon_in(dir.path(), &["stats", "--socket", sock.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("capability calls: store.ok"),
        "{}",
        stdout(&o)
    );
    let metrics = crate::swap::http_get(http, "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "cordon_capability_calls_total{engine=\"tally\",capability=\"store\",result=\"ok\"}",
            )
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 5.0, "{line}");

    // A second daemon cannot have the same embedded store.
    let text2 = text.replace("control.sock\"", "control2.sock\"");
    std::fs::create_dir(dir.path().join("second")).unwrap();
    let cfg2 = write_config(&dir.path().join("second"), &text2);
    let second = cordon::daemon::Daemon::start(cordon::config::Config::load(&cfg2).unwrap()).await;
    let err = second.err().expect("refused").to_string();
    assert!(err.contains("open in another process"), "{err}");
}

/// `cordon engine test` on an engine that uses the store: refused without
/// the grant, naming the key; granted, it runs on a store of its own and
/// passes, its outcomes (not its counts) the same every round.
#[test]
fn engine_test_grants_the_store_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.eml");
    std::fs::write(&clean, message("hello", "nothing to see")).unwrap();
    let wasm = component("tally");
    let sample = format!("{}=clean", clean.display());
    let base = [
        "engine",
        "test",
        wasm.to_str().unwrap(),
        "--sample",
        &sample,
    ];
    let o = cordon(&base);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("engines.tally.capabilities"), "{all}");
    let mut granted = base.to_vec();
    granted.extend(["--grant", "store"]);
    let o = cordon(&granted);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("learn: spam -> learned"),
        "{}",
        stdout(&o)
    );
}
