//! What every benchmark needs: the repository root, the corpus, and a
//! process's resident memory. Included by the benchmarks with `#[path]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The SpamAssassin corpus directory `./dev test` and `./dev bench` prepare.
pub fn corpus_dir() -> PathBuf {
    let dir = root().join("target/corpus/spamassassin");
    assert!(
        root().join("target/corpus/spamassassin.complete").is_file(),
        "the SpamAssassin corpus is missing: run `./dev bench` (or `./dev test`)"
    );
    dir
}

/// The first `n` corpus messages in name order (all of them for `None`),
/// as they are on disk.
pub fn corpus(n: Option<usize>) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("reading the corpus directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
        .iter()
        .take(n.unwrap_or(usize::MAX))
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// A process's resident memory now (`VmRSS`), in KiB; 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    cordon::process::rss_bytes(cordon::process::Pid::Other(pid)).unwrap_or(0) / 1024
}

/// A process's private resident memory now (`RssAnon`), in KiB; 0 if it
/// is gone.
pub fn anon_kib(pid: u32) -> u64 {
    cordon::process::anon_rss_bytes(cordon::process::Pid::Other(pid)).unwrap_or(0) / 1024
}

/// A process's proportional set size now (`Pss` of `smaps_rollup`), in
/// KiB: its private pages, and each page it shares counted once, divided
/// among the mappings of it (a file page four pool slots map counts once,
/// where `VmRSS` counts it four times); 0 if it is gone.
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's resident memory (`VmRSS`), its private part
/// (`RssAnon`) and its proportional set size (`Pss`) every 10 ms; the
/// peaks since `reset`.
pub struct Sampler {
    peak: Arc<AtomicU64>,
    anon_peak: Arc<AtomicU64>,
    pss_peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let anon_peak = Arc::new(AtomicU64::new(0));
        let pss_peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, a, q, s) = (
            peak.clone(),
            anon_peak.clone(),
            pss_peak.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                a.fetch_max(anon_kib(pid), Ordering::Relaxed);
                q.fetch_max(pss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            peak,
            anon_peak,
            pss_peak,
            stop,
            thread: Some(thread),
        }
    }
    /// Forgets the peaks so far.
    pub fn reset(&self) {
        self.peak.store(0, Ordering::Relaxed);
        self.anon_peak.store(0, Ordering::Relaxed);
        self.pss_peak.store(0, Ordering::Relaxed);
    }
    /// The peak of `VmRSS` since the start or the last reset, in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
    /// The peak of `RssAnon` since the start or the last reset, in MiB.
    pub fn anon_peak_mib(&self) -> f64 {
        self.anon_peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
    /// The peak of `Pss` since the start or the last reset, in MiB.
    pub fn pss_peak_mib(&self) -> f64 {
        self.pss_peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A config file at `path` with clamsig reading `db` (the verdict cache
/// off, so every scan scans), `extra` top-level keys (before any table)
/// and `limits` keys for the engine; returned validated.
pub fn clamsig_config(
    path: &Path,
    db: &Path,
    extra: &str,
    limits: &str,
) -> cordon::config::ValidConfig {
    std::fs::write(
        path,
        format!(
            "cache_dir = {:?}\n{extra}\n[cache]\nmax_entries = 0\n\
             [engines.clamsig]\ncomponent = {:?}\ndefinitions = {:?}\n{limits}\n",
            root().join("target/cordon-cache").display().to_string(),
            root()
                .join("target/wasm32-wasip2/release/clamsig.wasm")
                .display()
                .to_string(),
            db.display().to_string(),
        ),
    )
    .unwrap();
    cordon::config::Config::load(path).unwrap_or_else(|e| panic!("{e}"))
}
