//! `cargo bench --bench scaling`: how scanning scales with cores, cordon +
//! clamsig against clamd, in one run.
//!
//! Both scan the SpamAssassin corpus with the same generated signature
//! database, with 1, 2, 4, ... up to the machine's cores scans in flight:
//! cordon in process (`scan_message` from that many tasks; each engine's
//! `max_concurrency` and the pool sized to the cores), clamd through
//! `INSTREAM` from that many client threads (`MaxThreads` = cores). For each
//! step: messages per second, the speed-up over one in flight, and the
//! resident memory of the scanning process (the bench itself for cordon,
//! clamd's). The output says how many cores it saw, so the same command
//! reports a 2-core laptop and a 64-core MX alike.

#[path = "support/bench.rs"]
mod bench;
#[path = "support/clamd.rs"]
mod clamd;
#[path = "support/sigs.rs"]
mod sigs;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::Sampler;
use clamd::Clamd;
use cordon::registry::Registry;
use cordon::scan::{Message, scan_message};

/// How long each step scans.
const STEP: Duration = Duration::from_secs(5);
/// Signatures in the generated database (plus the real sample ones).
const SIGNATURES: usize = 100_000;

/// 1, 2, 4, ... and the core count itself.
fn steps(cores: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|n| *n <= cores)
        .collect();
    if v.last() != Some(&cores) {
        v.push(cores);
    }
    v
}

/// One step's figures.
struct Step {
    rate: f64,
    rss_mib: f64,
}

/// Runs `scan(i)` from `n` workers for [`STEP`] after a short warm-up and
/// returns messages per second; `sampler` is reset after the warm-up.
fn run_threads(n: usize, sampler: &Sampler, scan: impl Fn(usize) + Sync) -> f64 {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let counting = AtomicBool::new(false);
    let elapsed = std::thread::scope(|s| {
        for k in 0..n {
            let (done, stop, counting, scan) = (&done, &stop, &counting, &scan);
            s.spawn(move || {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    scan(i);
                    i += n;
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        sampler.reset();
        counting.store(true, Ordering::Relaxed);
        let t = Instant::now();
        std::thread::sleep(STEP);
        let elapsed = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        elapsed
    });
    done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

fn cordon_steps(db: &Path, cores: usize, messages: &Arc<Vec<Vec<u8>>>, work: &Path) -> Vec<Step> {
    let config = bench::clamsig_config(
        &work.join("cordon-scaling.toml"),
        db,
        &format!("pool.max_instances = {cores}"),
        &format!(
            "limits.memory_mib = 1024\nlimits.timeout_ms = 60000\nlimits.max_concurrency = {cores}"
        ),
    );
    let registry = Arc::new(Registry::load(&config.registry).unwrap_or_else(|e| panic!("{e:#}")));
    // As `cordon` runs (see `runtime_builder`).
    let rt = cordon::mime::runtime_builder()
        .worker_threads(cores)
        .build()
        .unwrap();
    let sampler = Sampler::start(std::process::id());
    steps(cores)
        .into_iter()
        .map(|n| {
            let rate = run_threads(n, &sampler, |i| {
                let msg = Message::from_bytes(messages[i % messages.len()].clone());
                rt.block_on(scan_message(&registry.enabled(), &msg, &Default::default()));
            });
            Step {
                rate,
                rss_mib: sampler.peak_mib(),
            }
        })
        .collect()
}

fn clamd_steps(db: &Path, cores: usize, messages: &Arc<Vec<Vec<u8>>>, work: &Path) -> Vec<Step> {
    let clamd = Clamd::start("scaling", db, work, cores);
    let sampler = Sampler::start(clamd.pid());
    steps(cores)
        .into_iter()
        .map(|n| {
            let rate = run_threads(n, &sampler, |i| {
                clamd::scan(&clamd.sock, &messages[i % messages.len()]);
            });
            Step {
                rate,
                rss_mib: sampler.peak_mib(),
            }
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let messages: Arc<Vec<Vec<u8>>> = Arc::new(bench::corpus(Some(2000)));
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("db");
    sigs::write_db(&db, SIGNATURES);
    let cordon = cordon_steps(&db, cores, &messages, work.path());
    let clamd = clamd_steps(&db, cores, &messages, work.path());
    println!(
        "scaling with scans in flight: {cores} core(s) seen, {} messages of the SpamAssassin corpus, {} signatures, {} s per step",
        messages.len(),
        SIGNATURES,
        STEP.as_secs()
    );
    println!(
        "{:>9} {:>14} {:>9} {:>10} {:>14} {:>9} {:>10} {:>14}",
        "in flight",
        "cordon msg/s",
        "speed-up",
        "RSS MiB",
        "clamd msg/s",
        "speed-up",
        "RSS MiB",
        "cordon/clamd"
    );
    for (i, n) in steps(cores).into_iter().enumerate() {
        let (c, d) = (&cordon[i], &clamd[i]);
        println!(
            "{n:>9} {:>14.0} {:>8.2}x {:>10.1} {:>14.0} {:>8.2}x {:>10.1} {:>13.2}x",
            c.rate,
            c.rate / cordon[0].rate,
            c.rss_mib,
            d.rate,
            d.rate / clamd[0].rate,
            d.rss_mib,
            c.rate / d.rate
        );
    }
}
