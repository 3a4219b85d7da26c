//! `cargo bench --bench scaling`: how scanning scales with cores, cordon +
//! clamsig against clamd, in one run.
//!
//! Both scan the SpamAssassin corpus with the same generated signature
//! database, with 1, 2, 4, ... up to the machine's cores scans in flight:
//! cordon in process (`scan_message` from that many tasks; each engine's
//! `max_concurrency` and the pool sized to the cores), clamd through
//! `INSTREAM` from that many client threads (`MaxThreads` = cores). For each
//! step: messages per second, the speed-up over one in flight, the
//! resident memory of the scanning process (the bench itself for cordon,
//! clamd's), and the TLB shootdowns the machine's CPUs took a message
//! (`/proc/interrupts`, x86 Linux: each is an interrupt a core takes
//! because another unmapped pages of a process that core was running, a
//! cost that grows with the cores a scanner runs on). The output says how
//! many cores it saw, so the same command reports a 2-core laptop and a
//! 64-core MX alike.

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
/// Signatures in the generated databases (plus the real sample ones): the
/// larger one's image is past where the reset's walk stops, so every
/// scan's reset unmaps pages it read and the shootdowns show.
const DATABASES: [usize; 2] = [100_000, 500_000];

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
    /// TLB shootdowns a message, where the kernel counts them.
    shootdowns: Option<f64>,
}

/// TLB shootdown interrupts taken by all CPUs since boot: the `TLB:` row
/// of `/proc/interrupts` (x86 Linux), or `None` where there is none.
fn tlb_shootdowns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let row = text.lines().find(|l| l.trim_start().starts_with("TLB:"))?;
    Some(
        row.split_whitespace()
            .skip(1)
            .map_while(|f| f.parse::<u64>().ok())
            .sum(),
    )
}

/// Runs `scan(i)` from `n` workers for [`STEP`] after a short warm-up and
/// returns messages per second and TLB shootdowns a message; `sampler` is
/// reset after the warm-up.
fn run_threads(n: usize, sampler: &Sampler, scan: impl Fn(usize) + Sync) -> (f64, Option<f64>) {
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
        let before = tlb_shootdowns();
        counting.store(true, Ordering::Relaxed);
        let t = Instant::now();
        std::thread::sleep(STEP);
        let elapsed = t.elapsed();
        let after = tlb_shootdowns();
        stop.store(true, Ordering::Relaxed);
        (elapsed, before.zip(after))
    });
    let (elapsed, shootdowns) = elapsed;
    let done = done.load(Ordering::Relaxed) as f64;
    let per_message = shootdowns.map(|(b, a)| a.saturating_sub(b) as f64 / done.max(1.0));
    (done / elapsed.as_secs_f64(), per_message)
}

fn cordon_steps(db: &Path, cores: usize, messages: &Arc<Vec<Vec<u8>>>, work: &Path) -> Vec<Step> {
    let config = bench::clamsig_config(
        &work.join("cordon-scaling.toml"),
        db,
        &format!("pool.max_instances = {cores}"),
        &format!(
            "limits.memory_mib = 3000\nlimits.timeout_ms = 60000\nlimits.max_concurrency = {cores}"
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
            let (rate, shootdowns) = run_threads(n, &sampler, |i| {
                let msg = Message::from_bytes(messages[i % messages.len()].clone());
                rt.block_on(scan_message(&registry.enabled(), &msg, &Default::default()));
            });
            Step {
                rate,
                rss_mib: sampler.peak_mib(),
                shootdowns,
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
            let (rate, shootdowns) = run_threads(n, &sampler, |i| {
                clamd::scan(&clamd.sock, &messages[i % messages.len()]);
            });
            Step {
                rate,
                rss_mib: sampler.peak_mib(),
                shootdowns,
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
    for signatures in DATABASES {
        let dir = work.path().join(signatures.to_string());
        let db = dir.join("db");
        sigs::write_db(&db, signatures);
        let cordon = cordon_steps(&db, cores, &messages, &dir);
        let clamd = clamd_steps(&db, cores, &messages, &dir);
        print_steps(cores, signatures, messages.len(), &cordon, &clamd);
    }
}

/// Prints one database's table.
fn print_steps(cores: usize, signatures: usize, messages: usize, cordon: &[Step], clamd: &[Step]) {
    println!(
        "\nscaling with scans in flight: {cores} core(s) seen, {messages} messages of the SpamAssassin corpus, {signatures} signatures, {} s per step",
        STEP.as_secs()
    );
    println!(
        "{:>9} {:>14} {:>9} {:>10} {:>11} {:>14} {:>9} {:>10} {:>11} {:>14}",
        "in flight",
        "cordon msg/s",
        "speed-up",
        "RSS MiB",
        "TLB IPI/msg",
        "clamd msg/s",
        "speed-up",
        "RSS MiB",
        "TLB IPI/msg",
        "cordon/clamd"
    );
    let ipis = |s: &Step| s.shootdowns.map_or("-".into(), |x| format!("{x:.2}"));
    for (i, n) in steps(cores).into_iter().enumerate() {
        let (c, d) = (&cordon[i], &clamd[i]);
        println!(
            "{n:>9} {:>14.0} {:>8.2}x {:>10.1} {:>11} {:>14.0} {:>8.2}x {:>10.1} {:>11} {:>13.2}x",
            c.rate,
            c.rate / cordon[0].rate,
            c.rss_mib,
            ipis(c),
            d.rate,
            d.rate / clamd[0].rate,
            d.rss_mib,
            ipis(d),
            c.rate / d.rate
        );
    }
    if cordon[0].shootdowns.is_none() {
        println!("TLB IPI/msg: this kernel has no TLB row in /proc/interrupts");
    }
}
