//! Hot swap: generations replaced under load, broken candidates rejected,
//! the file watcher, the verdict cache across swaps, and the control
//! socket and `/metrics` of a running daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cordon::bindings::Outcome;
use cordon::config::Config;
use cordon::engine::EngineOutcome;
use cordon::registry::Registry;
use cordon::scan::{Message, scan_with_cache};

use crate::common::*;

/// The string the swap signatures look for.
const PAYLOAD: &[u8] = b"CORDON-SWAP-PAYLOAD";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One .ndb line naming the payload `name`.
fn sig(name: &str) -> String {
    format!("{name}:0:*:{}\n", hex(PAYLOAD))
}

/// Writes `text` to `dir/file` the way definition updates arrive: a
/// temporary file renamed over the old one.
fn replace(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Writes `dir/cordon.toml`: clamsig reading `defs`, with a self-test
/// sample that must be detected, and `extra` config; returns its path.
fn write_swap_config(dir: &Path, defs: &Path, component: &Path, extra: &str) -> PathBuf {
    let sample = dir.join("sample.eml");
    std::fs::write(&sample, message("self-test", "CORDON-SWAP-PAYLOAD")).unwrap();
    let text = format!(
        "cache_dir = {}\n{extra}\n[engines.clamsig]\ncomponent = {}\ndefinitions = {}\n\
         self_test = [{{ file = {}, expect = \"detected\" }}]\n",
        toml_path(&cache_dir()),
        toml_path(component),
        toml_path(defs),
        toml_path(&sample),
    );
    let path = dir.join("cordon.toml");
    std::fs::write(&path, &text).unwrap();
    path
}

/// The engines of [`write_swap_config`]'s config.
fn registry(dir: &Path, defs: &Path, component: &Path, extra: &str) -> Arc<Registry> {
    let path = write_swap_config(dir, defs, component, extra);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Registry::load(&config.registry).unwrap_or_else(|e| panic!("{e:#}")))
}

async fn reload(r: &Arc<Registry>) -> Result<Arc<cordon::engine::Generation>, String> {
    let r = r.clone();
    tokio::task::spawn_blocking(move || r.reload("clamsig").map_err(|e| e.to_string()))
        .await
        .unwrap()
}

/// The name each generation must give the payload: odd generations load
/// `Swap.A`, even ones `Swap.B`.
fn expected(generation: u64) -> &'static str {
    if generation % 2 == 1 {
        "Swap.A.UNOFFICIAL"
    } else {
        "Swap.B.UNOFFICIAL"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_swaps_under_load_lose_no_scan() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    replace(&defs, "swap.ndb", &sig("Swap.A"));
    let reg = registry(dir.path(), &defs, &component("clamsig"), "");
    assert!(reg.cache.is_some(), "the cache is on by default");

    let stop = Arc::new(AtomicBool::new(false));
    let msg = Message::from_bytes(message("swap", "CORDON-SWAP-PAYLOAD"));
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (reg, stop, msg) = (reg.clone(), stop.clone(), msg.clone());
            tokio::spawn(async move {
                // Each result checked as it comes: keeping them all would
                // grow without bound while the swaps run.
                let (mut scans, mut hits) = (0usize, 0usize);
                let mut per_generation = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let engines = reg.enabled();
                    let report =
                        scan_with_cache(&engines, &msg, &Default::default(), reg.cache.as_ref())
                            .await;
                    let r = &report.results[0];
                    let name = match &r.outcome {
                        EngineOutcome::Verdict(v) => match &v.outcome {
                            Outcome::Detected(t) => t[0].name.clone(),
                            other => format!("{other:?}"),
                        },
                        EngineOutcome::Fault(f) => format!("fault {}: {}", f.kind, f.detail),
                    };
                    assert_eq!(
                        name,
                        expected(r.generation),
                        "generation {} (cached: {})",
                        r.generation,
                        r.cached
                    );
                    scans += 1;
                    hits += r.cached as usize;
                    per_generation.insert(r.generation);
                }
                (scans, hits, per_generation)
            })
        })
        .collect();

    let mut generations = vec![Arc::downgrade(&reg.enabled()[0])];
    for i in 0..100 {
        let next = if i % 2 == 0 { "Swap.B" } else { "Swap.A" };
        replace(&defs, "swap.ndb", &sig(next));
        let g = reload(&reg)
            .await
            .unwrap_or_else(|e| panic!("swap {i}: {e}"));
        assert_eq!(g.number, i + 2);
        generations.push(Arc::downgrade(&g));
        assert!(
            reg.engine("clamsig").unwrap().alive() <= 2,
            "at most two generations alive"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut scans = 0;
    let mut hits = 0;
    let mut per_generation = std::collections::BTreeSet::new();
    for l in loaders {
        let (n, h, g) = l.await.unwrap();
        scans += n;
        hits += h;
        per_generation.extend(g);
    }
    assert!(scans > 100, "the load generator ran: {scans} scans");
    assert!(hits > 0, "the cache answered some scans");
    assert!(
        per_generation.len() > 10,
        "scans ran on many generations: {per_generation:?}"
    );
    // Every generation but the current one is gone.
    let alive: Vec<usize> = generations
        .iter()
        .enumerate()
        .filter(|(_, w)| w.strong_count() > 0)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(alive, [101]);
    let stats = reg.engine("clamsig").unwrap().stats.snapshot();
    assert_eq!(stats.reloads_ok, 100);
    assert_eq!(stats.messages, scans as u64);
    assert_eq!(stats.cache_hits, hits as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_candidates_are_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    replace(&defs, "swap.ndb", &sig("Swap.A"));
    let wasm = dir.path().join("clamsig.wasm");
    std::fs::copy(component("clamsig"), &wasm).unwrap();
    let reg = registry(dir.path(), &defs, &wasm, "");
    let serving = |reg: &Registry| reg.enabled()[0].number;

    // A broken component.
    std::fs::write(&wasm, b"\0asm this is not a component").unwrap();
    let err = reload(&reg).await.unwrap_err();
    assert!(err.contains(&wasm.display().to_string()), "{err}");
    assert_eq!(serving(&reg), 1);
    std::fs::copy(component("clamsig"), &wasm).unwrap();

    // A broken definitions file.
    replace(&defs, "bad.ndb", "Broken:0:*:zz\n");
    let err = reload(&reg).await.unwrap_err();
    let file = defs.join("bad.ndb").display().to_string();
    assert!(err.contains(&format!("{file} line 1")), "{err}");
    assert_eq!(serving(&reg), 1);
    std::fs::remove_file(defs.join("bad.ndb")).unwrap();

    // Definitions that load but fail the self-test.
    replace(&defs, "swap.ndb", "Other:0:*:414243444546\n");
    let err = reload(&reg).await.unwrap_err();
    let sample = dir.path().join("sample.eml").display().to_string();
    assert!(err.contains(&format!("self-test {sample}")), "{err}");
    assert!(err.contains("expected a detection"), "{err}");
    assert_eq!(serving(&reg), 1);
    let entry = reg.engine("clamsig").unwrap();
    assert_eq!(entry.stats.snapshot().reloads_failed, 3);
    assert!(entry.last_error().unwrap().contains("self-test"));

    // The old generation still serves, and a good update goes through.
    let msg = Message::from_bytes(message("still", "CORDON-SWAP-PAYLOAD"));
    let report = scan_with_cache(&reg.enabled(), &msg, &Default::default(), None).await;
    match &report.results[0].outcome {
        EngineOutcome::Verdict(v) => {
            assert!(matches!(&v.outcome, Outcome::Detected(t) if t[0].name == "Swap.A.UNOFFICIAL"))
        }
        other => panic!("{other:?}"),
    }
    replace(&defs, "swap.ndb", &sig("Swap.B"));
    assert_eq!(reload(&reg).await.unwrap().number, 5);
    assert!(entry.last_error().is_none());
}

/// Waits until clamsig serves generation `n`.
/// Waits (on the registry's swap notifications) until generation `n` or
/// a later one serves.
async fn wait_generation(reg: &Registry, n: u64) {
    let mut swaps = reg.swaps();
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        swaps.wait_for(|s| s.generation >= n),
    )
    .await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "generation {n} never came; serving {}",
        reg.enabled()[0].number
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_reloads_on_file_rename_and_directory_flip() {
    let dir = tempfile::tempdir().unwrap();
    // `defs` is a symlink, flipped atomically between two directories.
    let (a, b) = (dir.path().join("defs.a"), dir.path().join("defs.b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    replace(&a, "swap.ndb", &sig("Swap.A"));
    replace(&b, "swap.ndb", &sig("Swap.A"));
    let defs = dir.path().join("defs");
    std::os::unix::fs::symlink(&a, &defs).unwrap();
    let reg = registry(dir.path(), &defs, &component("clamsig"), "");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(cordon::watch::run(
        reg.clone(),
        Duration::from_millis(20),
        stop_rx,
    ));

    // A file renamed over another.
    replace(&a, "swap.ndb", &sig("Swap.B"));
    wait_generation(&reg, 2).await;
    assert_eq!(reg.enabled()[0].number, 2);

    // The directory flipped to another one.
    let tmp = dir.path().join("defs.tmp");
    std::os::unix::fs::symlink(&b, &tmp).unwrap();
    std::fs::rename(&tmp, &defs).unwrap();
    wait_generation(&reg, 3).await;

    // A broken update is tried once and not again until it changes.
    replace(&b, "swap.ndb", "Broken:0:*:zz\n");
    let entry = reg.engine("clamsig").unwrap();
    let mut swaps = reg.swaps();
    tokio::time::timeout(
        Duration::from_secs(120),
        swaps.wait_for(|s| s.rejected >= 1),
    )
    .await
    .expect("the broken update was not tried")
    .expect("the registry is alive");
    assert_eq!(reg.enabled()[0].number, 3, "generation 3 keeps serving");
    stop_tx.send_replace(true);
    watcher.await.unwrap();
    assert_eq!(entry.stats.snapshot().reloads_failed, 1);
}

/// Sends an HTTP GET to `addr` and returns the response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn control_socket_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    replace(&defs, "swap.ndb", &sig("Swap.A"));
    let sock = dir.path().join("control.sock");
    let path = write_swap_config(
        dir.path(),
        &defs,
        &component("clamsig"),
        &format!(
            "reload.watch = false\nmilter.listen = [\"inet:0@127.0.0.1\"]\n\
             control.socket = {}\ncontrol.http = \"127.0.0.1:0\"\n",
            toml_path(&sock)
        ),
    );
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = cordon::daemon::Daemon::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = running.registry().clone();
    let http_addr = running.http_addr().expect("the metrics listener");
    assert_eq!(running.control_socket(), Some(sock.as_path()));
    let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));

    // Two scans of one message: one scan, one cache hit.
    let msg = Message::from_bytes(message("m", "CORDON-SWAP-PAYLOAD"));
    for _ in 0..2 {
        scan_with_cache(
            &reg.enabled(),
            &msg,
            &Default::default(),
            reg.cache.as_ref(),
        )
        .await;
    }

    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        let s = sock.display().to_string();
        all.extend(["--socket", &s]);
        let out = cordon_in(dir.path(), &all);
        (out.status.code(), stdout(&out), stderr(&out))
    };
    let (code, out, err) = cli(&["stats"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("clamsig: generation 1"), "{out}");
    assert!(out.contains("messages 2, parts 1, detections 2"), "{out}");
    assert!(out.contains("cache hits 1"), "{out}");
    let (code, out, err) = cli(&["version"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("clamsig: clamsig 0.1.0 by cordon, definitions 1 signatures, generation 1"),
        "{out}"
    );

    replace(&defs, "swap.ndb", &sig("Swap.B"));
    let (code, out, err) = cli(&["reload", "clamsig"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "clamsig: generation 2 serving");
    let (code, out, _) = cli(&["engines", "--live"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("generation 2"), "{out}");
    replace(&defs, "swap.ndb", "Broken:0:*:zz\n");
    let (code, _, err) = cli(&["reload"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("reload rejected"), "{err}");
    assert!(err.contains("swap.ndb line 1"), "{err}");

    // After the swap the cached verdict of generation 1 is not served.
    let report = scan_with_cache(
        &reg.enabled(),
        &msg,
        &Default::default(),
        reg.cache.as_ref(),
    )
    .await;
    assert!(!report.results[0].cached);
    assert_eq!(report.results[0].generation, 2);

    let metrics = http_get(http_addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    for line in [
        "cordon_messages_total{engine=\"clamsig\"} 3",
        "cordon_cache_hits_total{engine=\"clamsig\"} 1",
        "cordon_generation{engine=\"clamsig\"} 2",
        "cordon_reloads_total{engine=\"clamsig\",result=\"ok\"} 1",
        "cordon_reloads_total{engine=\"clamsig\",result=\"failed\"} 1",
        "cordon_faults_total{engine=\"clamsig\",kind=\"timeout\"} 0",
        "# TYPE cordon_messages_total counter",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let stats = http_get(http_addr, "/stats").await;
    assert!(stats.contains("\"generations_alive\":"), "{stats}");
    assert!(
        http_get(http_addr, "/nope")
            .await
            .starts_with("HTTP/1.1 404")
    );

    // An unknown command is an error that says what is known.
    let err = cordon::control::client::send_line(&sock, "frobnicate")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stats, version"), "{err}");
}

/// `cordon reload --config-file` against a running daemon: engines added
/// and the policy changed take effect together; a config that does not
/// validate is refused naming the key, and the one in force stays.
#[tokio::test(flavor = "multi_thread")]
async fn config_reload_swaps_engines_and_policy_together_or_not_at_all() {
    use crate::milter::{Mail, added, is_continue, reply, session};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let path = dir.path().join("cordon.toml");
    let head = format!(
        "cache_dir = {}\nreload.watch = false\nmilter.listen = [\"inet:0@127.0.0.1\"]\n\
         control.socket = {}\n",
        toml_path(&cache_dir()),
        toml_path(&sock)
    );
    let testsig = format!(
        "[engines.testsig]\ncomponent = {}\n",
        toml_path(&component("testsig"))
    );
    std::fs::write(
        &path,
        format!("{head}[policy]\non_detect = \"reject\"\n{testsig}"),
    )
    .unwrap();
    let running = cordon::daemon::Daemon::start(Config::load(&path).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = running.registry().clone();
    let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));
    let body = format!("{}\r\n", eicar());
    let mail = Mail {
        body: &body,
        ..Mail::default()
    };
    let r = session(&reg, &mail).await;
    assert!(reply(&r).starts_with("550 5.7.1"), "{}", reply(&r));

    // A second engine and a new policy, applied by one reload.
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    replace(
        &defs,
        "eicar.ndb",
        "Reload.Eicar:0:*:58354f2150254041505b345c505a5835\n",
    );
    std::fs::write(
        &path,
        format!(
            "{head}[policy]\non_detect = \"tag\"\n{testsig}\
             [engines.clamsig]\ncomponent = {}\ndefinitions = {}\n",
            toml_path(&component("clamsig")),
            toml_path(&defs)
        ),
    )
    .unwrap();
    let s = sock.display().to_string();
    let o = cordon_in(dir.path(), &["reload", "--config-file", "--socket", &s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let change: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(change["added"], serde_json::json!(["clamsig"]), "{change}");
    assert_eq!(change["failed"], serde_json::json!([]), "{change}");
    let r = session(&reg, &mail).await;
    assert!(is_continue(&r), "{}", reply(&r));
    assert_eq!(
        added(&r, "X-Virus-Status"),
        ["Infected (Reload.Eicar.UNOFFICIAL, Eicar-Test-Signature)"]
    );

    // A broken config changes nothing.
    std::fs::write(
        &path,
        format!("{head}[policy]\non_detect = \"tag\"\nbogus = 1\n{testsig}"),
    )
    .unwrap();
    let o = cordon_in(dir.path(), &["reload", "--config-file", "--socket", &s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bogus"), "{}", stderr(&o));
    assert_eq!(reg.engines().len(), 2);
    let r = session(&reg, &mail).await;
    assert!(is_continue(&r), "{}", reply(&r));
}

/// A daemon's load peaks at little more than the component it read, and
/// a daemon whose watcher swaps generations gives back what each reload
/// freed. Reloads run on blocking threads, and glibc, adjusting its
/// thresholds to the large blocks a reload frees (clamsig's 14 MB
/// component), kept up to twice that at the top of those threads' heaps,
/// where `malloc_trim` does not reach: 28 MB of private memory more after
/// the first watcher swap, for good.
#[test]
fn watcher_swaps_give_the_memory_of_their_reloads_back() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    // New to the snapshot cache on every run, so that every load builds.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    replace(&defs, "swap.ndb", &sig(&format!("Swap.A.{nonce}")));
    let clamsig = component("clamsig");
    let component_bytes = std::fs::metadata(&clamsig).unwrap().len();
    let sock = dir.path().join("milter.sock");
    let config = write_swap_config(
        dir.path(),
        &defs,
        &clamsig,
        &format!(
            "[milter]\nlisten = [\"unix:{}\"]\n[reload]\nwatch = true\ninterval_ms = 50\n",
            sock.display()
        ),
    );
    let daemon = crate::postfix::cordon_serve(&config);
    let pid = cordon::process::Pid::Other(daemon.child.id());
    // The first load's peak over what stays: well under the component,
    // which the daemon reads in chunks and does not hold while the child
    // builds (holding it was its size on the peak; copying it to send it
    // to the build child, three times its size).
    let peak = cordon::process::peak_rss_bytes(pid).expect("the daemon's peak");
    let now = cordon::process::rss_bytes(pid).expect("the daemon's memory");
    eprintln!(
        "first load: peak {} KiB over what stays (component {} KiB)",
        peak.saturating_sub(now) / 1024,
        component_bytes / 1024
    );
    assert!(
        peak.saturating_sub(now) < component_bytes / 3,
        "the first load peaked {} KiB over what the daemon holds after it (component {} KiB)",
        peak.saturating_sub(now) / 1024,
        component_bytes / 1024
    );
    let before = cordon::process::anon_rss_bytes(pid).expect("the daemon's memory");
    for generation in 2..=4u64 {
        replace(
            &defs,
            "swap.ndb",
            &sig(&format!("Swap.G{generation}.{nonce}")),
        );
        let field = format!("generation={generation} ");
        daemon.wait_line(|l| l.contains("generation swapped in") && l.contains(&field));
    }
    let after = cordon::process::anon_rss_bytes(pid).expect("the daemon's memory");
    let grown = after.saturating_sub(before);
    assert!(
        grown < component_bytes / 2,
        "three watcher swaps grew the daemon's private memory by {} KiB \
         ({} -> {} KiB; the component is {} KiB)\n{}",
        grown / 1024,
        before / 1024,
        after / 1024,
        component_bytes / 1024,
        daemon.log()
    );
}
