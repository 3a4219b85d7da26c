//! What every benchmark needs: the repository root, the corpus, and a
//! process's resident memory. Included by the benchmarks with `#[path]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
