//! `cargo bench --bench swap`: replacing a live signature database, cordon
//! against clamd, in one run, for a small and a large database.
//!
//! Both scan the SpamAssassin corpus continuously with two clients while
//! the database changes:
//! - cordon (clamsig, in process): a definitions file is renamed over the
//!   old one, and either the file watcher (100 ms interval) notices, or
//!   (a second run, watcher off) the operator's reload command follows the
//!   change as clamd's RELOAD does (what `cordon reload` asks the daemon
//!   for, as freshclam's NotifyClamd asks clamd); a new generation is
//!   loaded, self-tested and swapped in while scans go on;
//! - clamd: the same file change, then `RELOAD` (clamd reloads in a
//!   background thread and swaps, `ConcurrentDatabaseReload yes`, its
//!   default); done when its log says "Database correctly reloaded".
//!
//! Each swaps three times in a row (a new signature each time), and the
//! median of the three latencies is reported with the range, as this
//! shared machine's timings move by a third from run to run. Reported for
//! each: the latency from the change to the new database serving; scans
//! per second and the longest scan during the swap against
//! steady state (how much scanning is slowed or blocked); resident memory
//! at steady state and its peak during the swap, three ways: `VmRSS`, its
//! private part (`RssAnon`), and the proportional set size (`Pss`). cordon
//! maps the compiled image from the page cache into each pool slot that
//! serves the engine, and `VmRSS` counts an image page once per slot that
//! maps it; `Pss` counts it once. clamd's memory is all private, so its
//! three figures agree. Needs clamd (`./dev
//! bench`) and the corpus (`./dev test` or `./dev bench` prepares it).

#[path = "support/bench.rs"]
mod bench;
#[path = "support/clamd.rs"]
mod clamd;
#[path = "support/sigs.rs"]
mod sigs;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bench::Sampler;
use clamd::Clamd;
use cordon::registry::Registry;
use cordon::scan::{Message, scan_message};

/// Completed scans: (when it ended, how long it took).
type Log = Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>;

/// Scans per second and the longest scan between `from` and `to`.
fn window(log: &Log, from: Instant, to: Instant) -> (f64, Duration) {
    let l = log.lock().unwrap();
    let inside: Vec<Duration> = l
        .iter()
        .filter(|(end, _)| *end >= from && *end <= to)
        .map(|(_, d)| *d)
        .collect();
    let secs = (to - from).as_secs_f64().max(1e-9);
    (
        inside.len() as f64 / secs,
        inside.iter().copied().max().unwrap_or_default(),
    )
}

struct Row {
    db: &'static str,
    who: &'static str,
    /// The median of the swaps' latencies.
    latency: Duration,
    /// The shortest and the longest.
    latency_range: (Duration, Duration),
    steady_rate: f64,
    swap_rate: f64,
    steady_max: Duration,
    swap_max: Duration,
    steady_mib: f64,
    peak_mib: f64,
    /// The private part (`RssAnon`): what is not file pages mapped from
    /// the page cache, which `VmRSS` counts once per mapping.
    steady_anon_mib: f64,
    peak_anon_mib: f64,
    /// The proportional set size (`Pss`): each page counted once.
    steady_pss_mib: f64,
    peak_pss_mib: f64,
    /// cordon: the peak of the child process that built the new snapshot.
    child_peak_mib: Option<f64>,
    /// How long the swaps took together: the window of their peaks.
    swap_window: Duration,
}

/// How long steady state is watched. Its peaks are compared with those of
/// the swaps, which take about as long together (three swaps of a large
/// database, 4-6 s here): a peak over a shorter window would be lower by
/// chance, as cordon's resident memory moves from scan to scan with the
/// image pages each scan reads (tens of MiB for the large database).
const STEADY: Duration = Duration::from_secs(6);

/// Swaps measured per row.
const SWAPS: usize = 3;

/// Adds signature `n` to the database. Its name carries the time, so that
/// every run's new database is new to cordon's snapshot cache too: a swap
/// to a database seen in an earlier run would map that run's snapshot
/// instead of building one.
fn add_signature(db: &Path, n: usize) {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let text = sigs::real_sigs()
        + &format!(
            "Bench.Swap.{n}.{nonce}:0:*:{}\n",
            sigs::hex(b"swap-test-marker")
        );
    let tmp = db.join(".real.ndb.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, db.join("real.ndb")).unwrap();
}

/// What tells cordon that the definitions changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The file watcher, polling every 100 ms.
    Watcher,
    /// A reload request right after the change (`cordon reload`).
    Command,
}

fn cordon_swap(
    name: &'static str,
    db: &Path,
    memory_mib: u64,
    messages: &Arc<Vec<Vec<u8>>>,
    work: &Path,
    trigger: Trigger,
) -> Row {
    let config = bench::clamsig_config(
        &work.join(format!("cordon-{name}.toml")),
        db,
        "",
        &format!("limits.memory_mib = {memory_mib}\nlimits.timeout_ms = 60000"),
    );
    let sampler = Sampler::start(std::process::id());
    // As `cordon` runs (see `runtime_builder`).
    let rt = cordon::mime::runtime_builder().build().unwrap();
    let registry = Arc::new(Registry::load(&config.registry).unwrap_or_else(|e| panic!("{e:#}")));
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (watch_stop, watch_rx) = tokio::sync::watch::channel(false);
    if trigger == Trigger::Watcher {
        rt.spawn(cordon::watch::run(
            registry.clone(),
            Duration::from_millis(100),
            watch_rx,
        ));
    }
    let clients: Vec<_> = (0..2)
        .map(|k| {
            let (reg, log, stop, m) = (
                registry.clone(),
                log.clone(),
                stop.clone(),
                messages.clone(),
            );
            rt.spawn(async move {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let msg = Message::from_bytes(m[i % m.len()].clone());
                    i += 2;
                    let t = Instant::now();
                    scan_message(&reg.enabled(), &msg, &Default::default()).await;
                    log.lock().unwrap().push((Instant::now(), t.elapsed()));
                }
            })
        })
        .collect();
    let row = measure(
        name,
        match trigger {
            Trigger::Watcher => "cordon, watcher",
            Trigger::Command => "cordon, reload",
        },
        &sampler,
        &log,
        |k| {
            add_signature(db, k);
            if trigger == Trigger::Command {
                let engine = registry.enabled()[0].name.clone();
                registry
                    .reload(&engine)
                    .unwrap_or_else(|e| panic!("reload: {e}"));
            }
        },
        |k| registry.enabled()[0].number > k as u64,
    );
    stop.store(true, Ordering::Relaxed);
    watch_stop.send_replace(true);
    for c in clients {
        rt.block_on(c).unwrap();
    }
    assert_eq!(
        registry.enabled()[0].snapshot,
        cordon::engine::SnapshotSource::Built,
        "the swap must build its snapshot, not map a cached one"
    );
    let mut row = row;
    row.child_peak_mib = registry.enabled()[0]
        .build_peak_rss_bytes
        .map(|b| b as f64 / 1_048_576.0);
    row
}

/// With scans running and recorded in `log`: steady state for [`STEADY`],
/// then [`SWAPS`] times `change(k)` (k from 1) and the swap until
/// `live(k)` says so.
fn measure(
    db: &'static str,
    who: &'static str,
    sampler: &Sampler,
    log: &Log,
    change: impl Fn(usize),
    live: impl Fn(usize) -> bool,
) -> Row {
    std::thread::sleep(Duration::from_millis(500));
    sampler.reset();
    let steady_from = Instant::now();
    std::thread::sleep(STEADY);
    let steady_to = Instant::now();
    let steady_mib = sampler.peak_mib();
    let steady_anon_mib = sampler.anon_peak_mib();
    let steady_pss_mib = sampler.pss_peak_mib();
    sampler.reset();
    let mut latencies = Vec::new();
    let (mut swap_time, mut swap_scans, mut swap_max) = (Duration::ZERO, 0.0, Duration::ZERO);
    for k in 1..=SWAPS {
        let changed = Instant::now();
        change(k);
        while !live(k) {
            assert!(
                changed.elapsed() < Duration::from_secs(600),
                "{db}, {who}: the new database never served"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let swapped = Instant::now();
        latencies.push(swapped - changed);
        let (rate, max) = window(log, changed, swapped);
        swap_scans += rate * (swapped - changed).as_secs_f64();
        swap_time += swapped - changed;
        swap_max = swap_max.max(max);
    }
    let peak_mib = sampler.peak_mib();
    let peak_anon_mib = sampler.anon_peak_mib();
    let peak_pss_mib = sampler.pss_peak_mib();
    let (steady_rate, steady_max) = window(log, steady_from, steady_to);
    let swap_rate = swap_scans / swap_time.as_secs_f64().max(1e-9);
    latencies.sort();
    Row {
        db,
        who,
        latency: latencies[latencies.len() / 2],
        latency_range: (latencies[0], latencies[latencies.len() - 1]),
        steady_rate,
        swap_rate,
        steady_max,
        swap_max,
        steady_mib,
        peak_mib,
        steady_anon_mib,
        peak_anon_mib,
        steady_pss_mib,
        peak_pss_mib,
        child_peak_mib: None,
        swap_window: swap_time,
    }
}

fn clamd_swap(name: &'static str, db: &Path, messages: &Arc<Vec<Vec<u8>>>, work: &Path) -> Row {
    let clamd = Clamd::start(name, db, work, 10);
    let sock = clamd.sock.clone();
    let sampler = Sampler::start(clamd.pid());
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|k| {
            let (log, stop, m, sock) = (log.clone(), stop.clone(), messages.clone(), sock.clone());
            std::thread::spawn(move || {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    clamd::scan(&sock, &m[i % m.len()]);
                    i += 2;
                    log.lock().unwrap().push((Instant::now(), t.elapsed()));
                }
            })
        })
        .collect();
    let row = measure(
        name,
        "clamd RELOAD",
        &sampler,
        &log,
        |k| {
            add_signature(db, k);
            let reply = clamd::request(&sock, b"zRELOAD\0");
            assert!(reply.starts_with("RELOADING"), "clamd said {reply:?}");
        },
        |k| clamd.logged_times("Database correctly reloaded") >= k,
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    drop(sampler);
    drop(clamd);
    row
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let messages: Arc<Vec<Vec<u8>>> = Arc::new(bench::corpus(Some(2000)));
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (name, generated, memory_mib) in [("small", 60usize, 256u64), ("large", 500_000, 3000)] {
        let db = work.path().join(name);
        for trigger in [Trigger::Watcher, Trigger::Command] {
            sigs::write_db(&db, generated);
            rows.push(cordon_swap(
                name,
                &db,
                memory_mib,
                &messages,
                work.path(),
                trigger,
            ));
        }
        sigs::write_db(&db, generated);
        rows.push(clamd_swap(name, &db, &messages, work.path()));
    }
    println!(
        "{:<6} {:<17} {:>22} {:>22} {:>24} {:>22} {:>22} {:>22}",
        "db",
        "",
        "swap (median, range)",
        "scans/s steady→swap",
        "longest scan steady→swap",
        "RSS MiB steady→peak",
        "anon MiB steady→peak",
        "PSS MiB steady→peak"
    );
    for r in &rows {
        println!(
            "{:<6} {:<17} {:>6.2} s ({:.2}-{:.2}) {:>10.0} → {:>8.0} {:>11.1} ms → {:>7.1} ms {:>10.1} → {:>8.1} {:>10.1} → {:>8.1} {:>10.1} → {:>8.1}",
            r.db,
            r.who,
            r.latency.as_secs_f64(),
            r.latency_range.0.as_secs_f64(),
            r.latency_range.1.as_secs_f64(),
            r.steady_rate,
            r.swap_rate,
            r.steady_max.as_secs_f64() * 1000.0,
            r.swap_max.as_secs_f64() * 1000.0,
            r.steady_mib,
            r.peak_mib,
            r.steady_anon_mib,
            r.peak_anon_mib,
            r.steady_pss_mib,
            r.peak_pss_mib
        );
    }
    for r in rows.iter().filter(|r| r.child_peak_mib.is_some()) {
        println!(
            "{}: {}: the snapshot was built in a child process, whose resident memory peaked at {:.1} MiB (not in the daemon's figures above)",
            r.db,
            r.who,
            r.child_peak_mib.unwrap_or(0.0)
        );
    }
    println!();
    // Per database: cordon with the watcher, cordon with the reload
    // command, clamd.
    for set in rows.chunks(3) {
        let d = &set[2];
        for c in &set[..2] {
            println!(
                "{} ({}): swap latency cordon/clamd {:.2}; throughput during swap, share of steady: cordon {:.0}%, clamd {:.0}%; \
                 memory growth during swap (VmRSS; private; PSS): cordon +{:.0} MiB ({:.2}x; +{:.0} MiB, {:.2}x; \
                 +{:.0} MiB, {:.2}x; peaks over {:.1} s of swaps and {:.0} s steady), \
                 clamd +{:.0} MiB ({:.2}x; +{:.0} MiB, {:.2}x; +{:.0} MiB, {:.2}x)",
                c.db,
                c.who,
                c.latency.as_secs_f64() / d.latency.as_secs_f64(),
                100.0 * c.swap_rate / c.steady_rate,
                100.0 * d.swap_rate / d.steady_rate,
                c.peak_mib - c.steady_mib,
                c.peak_mib / c.steady_mib,
                c.peak_anon_mib - c.steady_anon_mib,
                c.peak_anon_mib / c.steady_anon_mib,
                c.peak_pss_mib - c.steady_pss_mib,
                c.peak_pss_mib / c.steady_pss_mib,
                c.swap_window.as_secs_f64(),
                STEADY.as_secs_f64(),
                d.peak_mib - d.steady_mib,
                d.peak_mib / d.steady_mib,
                d.peak_anon_mib - d.steady_anon_mib,
                d.peak_anon_mib / d.steady_anon_mib,
                d.peak_pss_mib - d.steady_pss_mib,
                d.peak_pss_mib / d.steady_pss_mib,
            );
        }
    }
}
