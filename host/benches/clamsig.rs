//! `cargo bench --bench clamsig`: clamsig against ClamAV on the same corpus
//! and the same signatures, in one run.
//!
//! For a small database (tens of signatures) and a large one (500,000
//! generated signatures) it measures:
//! - clamscan over the corpus (`--tempdir` on tmpfs), and its database load;
//! - clamd over INSTREAM (two client threads), its load time and memory;
//! - cordon with clamsig in-process (the `cordon scan` path, two messages at
//!   a time), its generation load time (compile from cache, init, snapshot)
//!   and memory; and `cordon scan` end to end as a command;
//! - clamsig's matcher built natively and called directly, one thread,
//!   against the same matcher in the sandbox, one thread (the ratio is the
//!   sandbox's cost);
//! - the snapshot: a scan's fresh instance against running `init` (what
//!   every scan would pay without pre-initialisation).
//!
//! The corpus is the SpamAssassin public corpus that `./dev test` prepares
//! in target/corpus/spamassassin. Needs clamscan and clamd (`./dev bench`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/bench.rs"]
mod bench;
#[path = "support/clamd.rs"]
mod clamd;
#[path = "support/sigs.rs"]
mod sigs;

use bench::{corpus_dir, root, rss_kib};
use clamd::Clamd;
use cordon::bindings::empty_envelope;
use cordon::config::Config;
use cordon::mime::{MimeLimits, decompose};
use cordon::registry::Registry;
use cordon::scan::{Message, scan_message};
use futures_util::StreamExt;
use sigs::write_db;

struct Row {
    db: &'static str,
    what: String,
    load: Option<Duration>,
    rss_mib: Option<f64>,
    msgs_per_s: f64,
    detected: usize,
}

fn clamscan_run(db: &Path, target: &Path, tmp: &Path) -> (Duration, usize) {
    let t = Instant::now();
    let o = Command::new("clamscan")
        .args(["--no-summary", "-r", "--tempdir"])
        .arg(tmp)
        .arg("-d")
        .arg(db)
        .arg(target)
        .output()
        .expect("clamscan: run ./dev bench, which installs clamav");
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "clamscan: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let found = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.ends_with(" FOUND"))
        .count();
    (t.elapsed(), found)
}

fn clamd_instream(sock: &Path, data: &[u8]) -> bool {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(b"zINSTREAM\0").unwrap();
    for chunk in data.chunks(64 * 1024) {
        s.write_all(&(chunk.len() as u32).to_be_bytes()).unwrap();
        s.write_all(chunk).unwrap();
    }
    s.write_all(&0u32.to_be_bytes()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let r = String::from_utf8_lossy(&reply);
    assert!(r.starts_with("stream: "), "clamd said {r:?}");
    r.trim_end_matches('\0').ends_with(" FOUND")
}

fn clamd_bench(
    db: &Path,
    messages: &Arc<Vec<Vec<u8>>>,
    work: &Path,
) -> (Duration, f64, f64, usize) {
    let started = Instant::now();
    let clamd = Clamd::start("clamsig", db, work, 2);
    let sock = clamd.sock.clone();
    let load = started.elapsed();
    let idle_rss = rss_kib(clamd.pid()) as f64 / 1024.0;
    let t = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let m = messages.clone();
            let sock = sock.clone();
            std::thread::spawn(move || {
                m.iter()
                    .skip(k)
                    .step_by(2)
                    .filter(|d| clamd_instream(&sock, d))
                    .count()
            })
        })
        .collect();
    let detected: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let rate = messages.len() as f64 / t.elapsed().as_secs_f64();
    drop(clamd);
    (load, idle_rss, rate, detected)
}

/// This process's minor page faults so far (`minflt`, the tenth field
/// of `/proc/self/stat` after the command name).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("cannot read /proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("no command name in /proc/self/stat") + 2..];
    after_name
        .split(' ')
        .nth(7)
        .and_then(|f| f.parse().ok())
        .expect("no minflt field in /proc/self/stat")
}

fn main() {
    let corpus = corpus_dir();
    let messages: Arc<Vec<Vec<u8>>> = Arc::new(bench::corpus(None));
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!(
        "corpus: {} messages, {:.1} MiB (SpamAssassin public corpus)\n",
        messages.len(),
        bytes as f64 / (1 << 20) as f64
    );
    // As `cordon` runs (see `runtime_builder`).
    let rt = cordon::mime::runtime_builder().build().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tmpfs = Path::new("/dev/shm").join(format!("cordon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmpfs).unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    for (db_name, generated, memory_mib) in [("small", 60usize, 256u64), ("large", 500_000, 3000)] {
        let db = work.path().join(db_name);
        write_db(&db, generated);
        let sigs = generated + 3;

        // clamscan: load alone (an empty file), then the corpus.
        let empty = work.path().join("empty.eml");
        std::fs::write(&empty, b"").unwrap();
        let (load, _) = clamscan_run(&db, &empty, &tmpfs);
        let (total, found) = clamscan_run(&db, &corpus, &tmpfs);
        let scan = total.saturating_sub(load);
        rows.push(Row {
            db: db_name,
            what: "clamscan, tmpfs (scan only)".into(),
            load: Some(load),
            rss_mib: None,
            msgs_per_s: messages.len() as f64 / scan.as_secs_f64(),
            detected: found,
        });

        // clamd over INSTREAM.
        let (load, rss, rate, found) = clamd_bench(&db, &messages, work.path());
        rows.push(Row {
            db: db_name,
            what: "clamd INSTREAM, 2 clients".into(),
            load: Some(load),
            rss_mib: Some(rss),
            msgs_per_s: rate,
            detected: found,
        });

        // cordon in-process: load a generation, then scan two at a time.
        let cfg_text = format!(
            "cache_dir = {:?}\n[engines.clamsig]\ncomponent = {:?}\ndefinitions = {:?}\n\
             limits.memory_mib = {memory_mib}\nlimits.max_concurrency = 2\nlimits.timeout_ms = 60000\n",
            root()
                .join("target/cordon-bench-cache")
                .display()
                .to_string(),
            root()
                .join("target/wasm32-wasip2/release/clamsig.wasm")
                .display()
                .to_string(),
            db.display().to_string()
        );
        let cfg_path = work.path().join(format!("{db_name}.toml"));
        std::fs::write(&cfg_path, &cfg_text).unwrap();
        let config = Config::load(&cfg_path).unwrap();
        let rss_before = rss_kib(std::process::id());
        // The first load compiles the snapshot into the cache; the second is
        // what a restart or a reload of the same definitions costs.
        let t = Instant::now();
        let first = Registry::load(&config.registry).unwrap();
        let first_load = t.elapsed();
        drop(first);
        let t = Instant::now();
        let registry = Registry::load(&config.registry).unwrap();
        let load = t.elapsed();
        let rss_loaded = rss_kib(std::process::id());
        let engines = registry.enabled();
        let mime = MimeLimits::default();
        let t = Instant::now();
        let found = rt.block_on(async {
            futures_util::stream::iter(messages.iter().cloned())
                .map(|m| {
                    let engines = engines.clone();
                    let mime = mime.clone();
                    async move {
                        let r = scan_message(&engines, &Message::from_bytes(m), &mime).await;
                        matches!(&r.results[0].outcome, cordon::engine::EngineOutcome::Verdict(v)
                            if matches!(v.outcome, cordon::bindings::Outcome::Detected(_)))
                    }
                })
                .buffer_unordered(2)
                .filter(|d| std::future::ready(*d))
                .count()
                .await
        });
        let rate = messages.len() as f64 / t.elapsed().as_secs_f64();
        let rss_scanning = rss_kib(std::process::id());
        rows.push(Row {
            db: db_name,
            what: "cordon + clamsig, 2 at a time".into(),
            load: Some(load),
            rss_mib: Some(rss_loaded.saturating_sub(rss_before) as f64 / 1024.0),
            msgs_per_s: rate,
            detected: found,
        });
        notes.push(format!(
            "{db_name}: cordon generation load {:.2} s the first time (compiling the snapshot), {:.2} s from the cache; \
             process RSS +{:.0} MiB after load, {:.0} MiB after scanning",
            first_load.as_secs_f64(),
            load.as_secs_f64(),
            rss_loaded.saturating_sub(rss_before) as f64 / 1024.0,
            rss_scanning as f64 / 1024.0
        ));

        // `cordon scan` as a command, load included.
        let t = Instant::now();
        let o = Command::new(root().join("target/release/cordon"))
            .args(["scan", "--no-summary", "-i", "--config"])
            .arg(&cfg_path)
            .arg(&corpus)
            .output()
            .unwrap();
        let total = t.elapsed();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let found = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(" FOUND"))
            .count();
        rows.push(Row {
            db: db_name,
            what: "cordon scan command (incl. load)".into(),
            load: None,
            rss_mib: None,
            msgs_per_s: messages.len() as f64 / total.as_secs_f64(),
            detected: found,
        });

        // Native clamsig against clamsig in the sandbox, one thread each, on
        // the same decomposed messages.
        let t = Instant::now();
        let mut native_db = clamsig::db::Db::default();
        for entry in std::fs::read_dir(&db).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            native_db
                .add_file(&name, &std::fs::read_to_string(&p).unwrap())
                .unwrap();
        }
        let matcher = clamsig::scanner::Matcher::new(native_db).unwrap();
        let native_load = t.elapsed();
        let decomposed: Vec<_> = messages.iter().map(|m| decompose(m, &mime)).collect();
        let t = Instant::now();
        let mut native_found = 0;
        for (m, d) in messages.iter().zip(&decomposed) {
            let mut hit = !clamsig::scan_raw(&matcher, m).is_empty();
            for p in &d.parts {
                hit |= !clamsig::scan_decoded(
                    &matcher,
                    &p.info.content_type,
                    &p.content,
                    Default::default(),
                )
                .found
                .is_empty();
            }
            native_found += usize::from(hit);
        }
        let native = t.elapsed();
        let g = &engines[0];
        let env = empty_envelope();
        let faults_before = minor_faults();
        let t = Instant::now();
        let mut wasm_found = 0;
        for (m, d) in messages.iter().zip(&decomposed) {
            if let cordon::engine::EngineOutcome::Verdict(v) =
                g.scan_with_parts_blocking(&env, m, d)
                && matches!(v.outcome, cordon::bindings::Outcome::Detected(_))
            {
                wasm_found += 1;
            }
        }
        let wasm = t.elapsed();
        let faults = minor_faults() - faults_before;
        rows.push(Row {
            db: db_name,
            what: "clamsig native, 1 thread".into(),
            load: Some(native_load),
            rss_mib: None,
            msgs_per_s: messages.len() as f64 / native.as_secs_f64(),
            detected: native_found,
        });
        rows.push(Row {
            db: db_name,
            what: "clamsig in the sandbox, 1 thread".into(),
            load: None,
            rss_mib: None,
            msgs_per_s: messages.len() as f64 / wasm.as_secs_f64(),
            detected: wasm_found,
        });
        notes.push(format!(
            "{db_name}: sandbox/native time ratio {:.2}x for {sigs} signatures",
            wasm.as_secs_f64() / native.as_secs_f64()
        ));
        notes.push(format!(
            "{db_name}: {:.2} minor page faults a message in the sandbox \
             (the pages each fresh instance reads or writes again after the reset)",
            faults as f64 / messages.len() as f64
        ));

        // The snapshot: a fresh instance per scan against running init.
        let mut samples: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                let _ = g.scan_blocking(&env, b"");
                t.elapsed()
            })
            .collect();
        samples.sort();
        notes.push(format!(
            "{db_name}: pre-initialised image {:.1} MiB, mapped copy-on-write by every instance; \
             without the snapshot each of the 2 concurrent instances would build its own copy",
            g.image_bytes as f64 / (1 << 20) as f64
        ));
        notes.push(format!(
            "{db_name}: with the snapshot a scan's fresh instance (empty message) costs {:.0} µs median; \
             without it every scan would first run init, at least {:.3} s (the native parse and build; \
             slower in the sandbox): {:.0}x",
            samples[25].as_secs_f64() * 1e6,
            native_load.as_secs_f64(),
            native_load.as_secs_f64() / samples[25].as_secs_f64()
        ));
        drop(registry);
    }
    let _ = std::fs::remove_dir_all(&tmpfs);

    println!(
        "{:<6} {:<34} {:>9} {:>9} {:>10} {:>9}",
        "db", "scanner", "load s", "RSS MiB", "msgs/s", "detected"
    );
    for r in &rows {
        println!(
            "{:<6} {:<34} {:>9} {:>9} {:>10.0} {:>9}",
            r.db,
            r.what,
            r.load
                .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())),
            r.rss_mib.map_or("-".into(), |m| format!("{m:.0}")),
            r.msgs_per_s,
            r.detected
        );
    }
    println!();
    for db in ["small", "large"] {
        let rate = |what: &str| {
            rows.iter()
                .find(|r| r.db == db && r.what.starts_with(what))
                .map(|r| r.msgs_per_s)
                .unwrap_or(f64::NAN)
        };
        println!(
            "{db}: cordon/clamd {:.2}x, cordon/clamscan {:.2}x (messages per second)",
            rate("cordon +") / rate("clamd"),
            rate("cordon +") / rate("clamscan")
        );
    }
    for n in notes {
        println!("{n}");
    }
}
