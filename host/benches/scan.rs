//! `cargo bench`: what the sandbox costs, measured against the same work
//! done natively, in one run.
//!
//! 1. Cost per scan with testsig on 5 KB, 100 KB and 10 MB messages:
//!    - native: `testsig::matcher::find` linked into this binary, called
//!      directly (the baseline);
//!    - host, blocking: fresh instance from the pre-initialised generation,
//!      copy the message in, call `scan`, lift and check the verdict;
//!    - host, async: the same through `Generation::scan` (concurrency and
//!      pool semaphores, a blocking-pool hop), as the scan path uses it.
//!
//!    Ratios are host time over native time.
//! 2. The fixed cost per scan (a fresh instance, `scan` of an empty
//!    message and its verdict), on pool slots that have seen only empty
//!    scans and again after the large messages.
//! 3. Timeout stop latency: the looping hostile engine under a 50 ms
//!    timeout; how long after the deadline the call actually returns.
//! 4. MIME decomposition as the scan path runs it (`decompose_bounded`: a
//!    decoder thread whose stack holds the message, under the
//!    decoder limit and a time bound) against `decompose` called in place,
//!    on a sample attachment message and a 100,000-level nesting attack.
//!
//! Run with `./dev bench` (which builds the components first) or
//! `cargo bench -p cordon-host` after `./dev build`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon::bindings::empty_envelope;
use cordon::config::Config;
use cordon::engine::{EngineOutcome, FaultKind, Generation};
use cordon::registry::Registry;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn component(name: &str) -> PathBuf {
    let p = root().join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    assert!(p.is_file(), "{} missing: run ./dev build", p.display());
    p
}

fn load(engines: &str) -> Registry {
    let text = format!(
        "cache_dir = {:?}\n{engines}",
        root()
            .join("target/cordon-bench-cache")
            .display()
            .to_string()
    );
    let path = Path::new("bench.toml");
    let cfg = Config::parse(&text, path).unwrap().validate(path).unwrap();
    Registry::load(&cfg.registry).unwrap()
}

/// A message of `size` bytes of mail-like text with EICAR at the very end,
/// so every scanner must read all of it.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: bench\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJ.\r\n";
    let tail = testsig::matcher::EICAR;
    while m.len() + line.len() + tail.len() < size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(tail);
    m
}

/// Runs `f` for about `budget` (at least `min_iters` times) after a warm-up,
/// and returns the median and mean per call.
fn measure(budget: Duration, min_iters: u32, mut f: impl FnMut()) -> (Duration, Duration, u32) {
    for _ in 0..3 {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min_iters as usize || start.elapsed() < budget {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    let total: Duration = samples.iter().sum();
    let n = samples.len() as u32;
    (samples[samples.len() / 2], total / n, n)
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn expect_eicar(o: &EngineOutcome) {
    match o {
        EngineOutcome::Verdict(v) => assert!(
            matches!(&v.outcome, cordon::bindings::Outcome::Detected(t) if t[0].name == "Eicar-Test-Signature"),
            "{v:?}"
        ),
        other => panic!("{other:?}"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let reg = load(&format!(
        "[engines.testsig]\ncomponent = {:?}\nlimits.memory_mib = 128\n",
        component("testsig").display().to_string()
    ));
    let g: Arc<Generation> = reg.enabled()[0].clone();
    let env = empty_envelope();
    let env_arc = Arc::new(empty_envelope());

    // The fixed cost on slots that have only seen empty scans; measured
    // again below, after the large messages.
    let fixed = || {
        measure(Duration::from_millis(1000), 50, || {
            let o = g.scan_blocking(&env, b"");
            assert!(matches!(o, EngineOutcome::Verdict(_)));
        })
        .0
    };
    let empty_first = fixed();

    println!("cordon scan cost: testsig in the sandbox vs the same matcher native");
    println!(
        "{:>8} | {:>10} | {:>12} {:>7} | {:>12} {:>7} | {:>9} {:>9}",
        "size", "native", "host", "ratio", "host async", "ratio", "native", "host"
    );
    println!(
        "{:>8} | {:>10} | {:>12} {:>7} | {:>12} {:>7} | {:>9} {:>9}",
        "", "median", "median", "", "median", "", "MB/s", "MB/s"
    );
    for (label, size) in [("5 KB", 5_000), ("100 KB", 100_000), ("10 MB", 10_000_000)] {
        let msg = message(size);
        assert!(testsig::matcher::find(&msg).eicar);
        let budget = Duration::from_millis(1500);
        let (native, _, _) = measure(budget, 20, || {
            std::hint::black_box(testsig::matcher::find(std::hint::black_box(&msg)));
        });
        let (host, _, _) = measure(budget, 20, || {
            expect_eicar(&g.scan_blocking(&env, &msg));
        });
        let shared: Arc<[u8]> = msg.clone().into();
        let (host_async, _, _) = measure(budget, 20, || {
            let (o, _) = rt.block_on(g.scan(env_arc.clone(), shared.clone(), None));
            expect_eicar(&o);
        });
        let mbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{label:>8} | {:>10} | {:>12} {:>6.1}x | {:>12} {:>6.1}x | {:>9.0} {:>9.0}",
            fmt(native),
            fmt(host),
            host.as_secs_f64() / native.as_secs_f64(),
            fmt(host_async),
            host_async.as_secs_f64() / native.as_secs_f64(),
            mbps(native),
            mbps(host),
        );
    }

    // Instantiation alone: a scan of an empty message is instance + call +
    // verdict with next to no matching. Again after the large messages:
    // what their pool slots kept resident is put back on every reset.
    let empty = fixed();
    println!(
        "\nfixed cost per scan (fresh instance + call + verdict, empty message): {} \
         ({} before the scans above)",
        fmt(empty),
        fmt(empty_first)
    );

    // Timeout stop latency.
    let timeout_ms = 50u64;
    let reg = load(&format!(
        "[engines.loop]\ncomponent = {:?}\nsettings.mode = \"loop\"\nlimits.timeout_ms = {timeout_ms}\n",
        component("hostile").display().to_string()
    ));
    let lp = reg.enabled()[0].clone();
    let mut overshoot = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let o = lp.scan_blocking(&env, b"x");
        let took = t.elapsed();
        assert!(
            matches!(o.as_fault(), Some(f) if f.kind == FaultKind::Timeout),
            "{o:?}"
        );
        overshoot.push(took.saturating_sub(Duration::from_millis(timeout_ms)));
    }
    overshoot.sort();
    println!(
        "timeout stop latency past a {timeout_ms} ms deadline (40 runs, epoch tick {} ms): median {}, p95 {}, max {}",
        cordon::engine::EPOCH_TICK.as_millis(),
        fmt(overshoot[overshoot.len() / 2]),
        fmt(overshoot[overshoot.len() * 95 / 100]),
        fmt(*overshoot.last().unwrap()),
    );

    // Decomposition: bounded (the scan path) against in place.
    println!("\nMIME decomposition: bounded (decoder thread, sized stack, limits) vs in place");
    let limits = cordon::mime::MimeLimits::default();
    let attachment = std::fs::read(root().join("samples/eicar-attachment.eml")).unwrap();
    let mut nested = b"Subject: x\r\n".to_vec();
    for _ in 0..100_000 {
        nested.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    for (label, raw) in [
        ("attachment message", attachment),
        ("100 KB text", message(100_000)),
        ("100,000-level nesting", nested),
    ] {
        let shared: Arc<[u8]> = raw.clone().into();
        let budget = Duration::from_millis(1000);
        let (bounded, _, _) = measure(budget, 20, || {
            std::hint::black_box(
                rt.block_on(cordon::mime::decompose_bounded(shared.clone(), &limits)),
            );
        });
        // What the scan path did before: tokio's blocking pool (2 MiB
        // stacks, no decoder limit); the 100,000-level message is left out
        // there, since that is what overflowed those stacks.
        let blocking = (raw.len() < 1_000_000).then(|| {
            measure(budget, 20, || {
                let raw = shared.clone();
                let limits = limits.clone();
                std::hint::black_box(rt.block_on(async move {
                    tokio::task::spawn_blocking(move || cordon::mime::decompose(&raw, &limits))
                        .await
                        .unwrap()
                }));
            })
            .0
        });
        let in_place = {
            // In place needs the stack the bounded path would give it.
            let raw = raw.clone();
            let limits = limits.clone();
            std::thread::Builder::new()
                .stack_size(cordon::mime::stack_bytes_for(raw.len()))
                .spawn(move || {
                    measure(budget, 20, || {
                        std::hint::black_box(cordon::mime::decompose(&raw, &limits));
                    })
                    .0
                })
                .unwrap()
                .join()
                .unwrap()
        };
        println!(
            "{label:>22}: bounded {:>10}, in place {:>10}, overhead {:>9} ({:.2}x); blocking pool {}",
            fmt(bounded),
            fmt(in_place),
            fmt(bounded.saturating_sub(in_place)),
            bounded.as_secs_f64() / in_place.as_secs_f64(),
            blocking.map_or("-".to_string(), fmt),
        );
    }
}
