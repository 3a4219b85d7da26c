//! `cordon engine test`: the conformance suite a vendor runs on a
//! component before shipping it.
//!
//! It loads the component as cordon would (from a cold cache, then from
//! the snapshot it built), checks what the engine says about itself, scans
//! samples (EICAR, GTUBE, clean mail, and the vendor's own), interleaved and
//! repeated, and calls `learn`. Every check prints `PASS` or `FAIL` with
//! what it saw, then the figures (load times, image and code size, scan
//! times); the exit code is 0 only when every check passed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::{EXIT_CLEAN, EXIT_FOUND};
use crate::bindings::{LearnClass, Outcome};
use crate::engine::{EngineOutcome, SnapshotSource};
use crate::mime::MimeLimits;
use crate::registry::Registry;
use crate::scan::{Message, scan_message};

/// `cordon engine test`.
#[derive(Debug, Args)]
pub struct EngineTestArgs {
    /// The component to test.
    #[arg(value_name = "WASM")]
    pub component: PathBuf,
    /// A setting, as in `[engines.NAME.settings]` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub setting: Vec<String>,
    /// The definitions directory.
    #[arg(long, value_name = "DIR")]
    pub definitions: Option<PathBuf>,
    /// A capability to grant (`dns`, `store`), as `[engines.NAME]
    /// capabilities` (repeatable).
    #[arg(long, value_name = "CAPABILITY")]
    pub grant: Vec<String>,
    /// A DNS server for the `dns` capability, as `[dns] servers`
    /// (repeatable; default: /etc/resolv.conf's).
    #[arg(long, value_name = "ADDRESS")]
    pub dns_server: Vec<String>,
    /// A message file and what the engine must make of it: `clean`,
    /// `detected`, or a threat name that must be among those found
    /// (repeatable). Without any, the engine must detect EICAR or GTUBE.
    #[arg(long, value_name = "FILE=EXPECT")]
    pub sample: Vec<String>,
}

/// The EICAR test file in a message.
pub(super) const EICAR_MAIL: &str = "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: eicar\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n";
/// The GTUBE anti-spam test string in a message.
pub(super) const GTUBE_MAIL: &str = "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
/// Clean mail of the usual shapes: plain text, HTML, an attachment.
pub(super) const CLEAN_MAIL: [(&str, &str); 3] = [
    (
        "clean text",
        "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: lunch\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <lunch@example.org>\r\n\r\nShall we meet at noon?\r\n",
    ),
    (
        "clean html",
        "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: agenda\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>The agenda is <b>attached</b> to the invite.</p></body></html>\r\n",
    ),
    (
        "clean attachment",
        "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: notes\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nNotes attached.\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTWVldGluZyBub3RlczogYWxsIGdvb2Qu\r\n--b1--\r\n",
    ),
];

/// What a sample must give.
#[derive(Debug, Clone)]
enum Expect {
    Clean,
    Detected,
    Threat(String),
}

impl Expect {
    fn parse(s: &str) -> Expect {
        match s {
            "clean" => Expect::Clean,
            "detected" => Expect::Detected,
            name => Expect::Threat(name.to_string()),
        }
    }
}

/// One sample message.
struct Sample {
    name: String,
    bytes: Arc<[u8]>,
    /// None: reported, not checked (EICAR and GTUBE, checked together).
    expect: Option<Expect>,
}

/// The suite's checks, as they are printed.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn check(&mut self, ok: bool, name: &str, detail: impl AsRef<str>) {
        let detail = crate::text::escape(detail.as_ref(), 2048);
        if ok {
            self.passed += 1;
            println!("  PASS {name}: {detail}");
        } else {
            self.failed += 1;
            println!("  FAIL {name}: {detail}");
        }
    }
}

/// Runs the suite on `args.component`; the exit code.
pub async fn engine_test_command(args: EngineTestArgs) -> anyhow::Result<i32> {
    let samples = samples(&args)?;
    let cache = tempfile::tempdir().context("cannot make a cache directory for the test")?;
    let mut config = super::components_config(
        std::slice::from_ref(&args.component),
        &super::ComponentFlags {
            settings: &args.setting,
            definitions: &args.definitions,
            grants: &args.grant,
            dns_servers: &args.dns_server,
        },
    )?;
    config.cache_dir = Some(cache.path().to_path_buf());
    // A store of its own, empty, never the operator's.
    config.store.path = Some(cache.path().join("store.redb"));
    let config = config.validate(std::path::Path::new("<command line>"))?;

    println!(
        "cordon engine test: {}",
        crate::text::escape(&args.component.display().to_string(), 1024)
    );
    let mut report = Report::default();

    // Loads: cold, then from the snapshot the first load built.
    let load = |config: crate::config::ValidConfig| async move {
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || Registry::load(&config.registry)).await?;
        anyhow::Ok((r, started.elapsed()))
    };
    let (first, first_time) = load(config.clone()).await?;
    let first = match first {
        Ok(r) => r,
        Err(e) => {
            report.check(false, "loads", format!("{e:#}"));
            println!("0 passed, 1 failed");
            return Ok(EXIT_FOUND);
        }
    };
    let g = first.enabled()[0].clone();
    report.check(
        true,
        "loads",
        format!(
            "contract {}, {:.2} s (compile, init, snapshot), image {:.1} MB, code {:.1} MB{}",
            g.contract().version(),
            first_time.as_secs_f64(),
            g.image_bytes as f64 / 1e6,
            g.code_bytes as f64 / 1e6,
            g.build_peak_rss_bytes
                .map(|b| format!(", build peak {} MiB", b >> 20))
                .unwrap_or_default()
        ),
    );
    drop(g);
    drop(first);
    let (second, second_time) = load(config.clone()).await?;
    let registry = second.context("the second load failed where the first passed")?;
    let g = registry.enabled()[0].clone();
    report.check(
        g.snapshot == SnapshotSource::Cached,
        "loads from the snapshot cache",
        format!(
            "{:.3} s, snapshot {:?}",
            second_time.as_secs_f64(),
            g.snapshot
        ),
    );

    let info = &g.info;
    let name_ok = !info.name.is_empty()
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    report.check(
        name_ok && !info.vendor.trim().is_empty() && !info.version.trim().is_empty(),
        "info",
        format!(
            "name {:?} (lower case letters, digits, '.', '_', '-'), vendor {:?}, version {:?}, \
             definitions {:?}, wants parts {}",
            info.name, info.vendor, info.version, info.definitions_version, info.wants_parts
        ),
    );

    // Every sample, three rounds, interleaved: each round scans them all in
    // order, so a detection is followed by clean mail on a fresh instance.
    let mime = MimeLimits::default();
    let mut first_verdicts: Vec<Option<String>> = vec![None; samples.len()];
    let mut results: Vec<EngineOutcome> = Vec::new();
    let mut times: Vec<Duration> = Vec::new();
    let mut faults = Vec::new();
    let mut changed = Vec::new();
    // An engine granted the store keeps what it learns across scans by
    // design: its scores and rules may move, its outcome must not.
    let with_store = args.grant.iter().any(|c| c == "store");
    for round in 0..3 {
        for (i, sample) in samples.iter().enumerate() {
            let message = Message::from_bytes(sample.bytes.clone());
            let started = Instant::now();
            let mut r = scan_message(std::slice::from_ref(&g), &message, &mime).await;
            times.push(started.elapsed());
            let outcome = r.results.remove(0).outcome;
            let seen = if with_store {
                describe_outcome(&outcome)
            } else {
                describe(&outcome)
            };
            if let EngineOutcome::Fault(f) = &outcome {
                let fault = format!("{}: {}: {}", sample.name, f.kind, f.detail);
                if !faults.contains(&fault) {
                    faults.push(fault);
                }
            }
            match &first_verdicts[i] {
                None => first_verdicts[i] = Some(seen),
                Some(before) if *before != seen => changed.push(format!(
                    "{} (round {}: {seen}; first: {before})",
                    sample.name,
                    round + 1
                )),
                Some(_) => {}
            }
            if round == 0 {
                results.push(outcome);
            }
        }
    }
    report.check(
        faults.is_empty(),
        "within limits",
        if faults.is_empty() {
            format!(
                "no fault in {} scans (timeout {} ms, memory {} MiB)",
                times.len(),
                g.limits.timeout.as_millis(),
                g.limits.memory_bytes >> 20
            )
        } else {
            faults.join("; ")
        },
    );
    report.check(
        changed.is_empty(),
        "deterministic and independent",
        if changed.is_empty() {
            format!(
                "{} samples x 3 rounds, interleaved: each gave the same {} every time",
                samples.len(),
                if with_store {
                    "outcome (rules and scores may follow the store)"
                } else {
                    "verdict"
                }
            )
        } else {
            format!("verdicts changed: {}", changed.join("; "))
        },
    );

    // The expectations.
    let mut clean_bad = Vec::new();
    let mut expect_bad = Vec::new();
    let mut test_files = Vec::new();
    for (sample, outcome) in samples.iter().zip(&results) {
        match &sample.expect {
            None => test_files.push(format!("{} {}", sample.name, describe(outcome))),
            Some(Expect::Clean) if !is_clean(outcome) => {
                clean_bad.push(format!("{}: {}", sample.name, describe(outcome)))
            }
            Some(Expect::Detected) if threats(outcome).is_none() => expect_bad.push(format!(
                "{}: {}, expected detected",
                sample.name,
                describe(outcome)
            )),
            Some(Expect::Threat(name))
                if !threats(outcome).is_some_and(|t| t.iter().any(|n| n == name)) =>
            {
                expect_bad.push(format!(
                    "{}: {}, expected {name}",
                    sample.name,
                    describe(outcome)
                ))
            }
            Some(_) => {}
        }
    }
    let clean_count = samples
        .iter()
        .filter(|s| matches!(s.expect, Some(Expect::Clean)))
        .count();
    report.check(
        clean_bad.is_empty(),
        "clean mail is clean",
        if clean_bad.is_empty() {
            format!("{clean_count} messages")
        } else {
            clean_bad.join("; ")
        },
    );
    if args.sample.is_empty() {
        let detected = samples
            .iter()
            .zip(&results)
            .any(|(s, o)| s.expect.is_none() && threats(o).is_some());
        report.check(
            detected,
            "detects a test file",
            format!(
                "{} (an engine that detects neither passes its own --sample FILE=EXPECT)",
                test_files.join(", ")
            ),
        );
    } else {
        report.check(
            expect_bad.is_empty(),
            "samples",
            if expect_bad.is_empty() {
                format!("{} as expected", args.sample.len())
            } else {
                expect_bad.join("; ")
            },
        );
    }

    // learn: whatever it answers, it answers (0.1.0 engines: unsupported).
    let envelope = crate::bindings::empty_envelope();
    let mut learned = Vec::new();
    let mut learn_ok = true;
    for (class, label, bytes) in [
        (LearnClass::Spam, "spam", GTUBE_MAIL),
        (LearnClass::Ham, "ham", CLEAN_MAIL[0].1),
    ] {
        match g.learn(&envelope, bytes.as_bytes(), class, None).await {
            Ok(outcome) => learned.push(format!("{label} -> {}", super::learn::word(outcome))),
            Err(e) => {
                learn_ok = false;
                learned.push(format!("{label} -> {e}"));
            }
        }
    }
    report.check(learn_ok, "learn", learned.join(", "));

    times.sort();
    println!(
        "figures: first load {:.2} s, cached load {:.3} s; scan (whole path, {} scans) median {:.2} ms, max {:.2} ms",
        first_time.as_secs_f64(),
        second_time.as_secs_f64(),
        times.len(),
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
    println!("{} passed, {} failed", report.passed, report.failed);
    Ok(if report.failed == 0 {
        EXIT_CLEAN
    } else {
        EXIT_FOUND
    })
}

/// The samples: EICAR, GTUBE and the clean messages, then the vendor's.
fn samples(args: &EngineTestArgs) -> anyhow::Result<Vec<Sample>> {
    let mut out = vec![
        Sample {
            name: "eicar".into(),
            bytes: EICAR_MAIL.as_bytes().into(),
            expect: None,
        },
        Sample {
            name: "gtube".into(),
            bytes: GTUBE_MAIL.as_bytes().into(),
            expect: None,
        },
    ];
    for (name, text) in CLEAN_MAIL {
        out.push(Sample {
            name: name.into(),
            bytes: text.as_bytes().into(),
            expect: Some(Expect::Clean),
        });
    }
    if !args.sample.is_empty() {
        // The vendor's samples say what EICAR and GTUBE should give.
        out.retain(|s| s.expect.is_some());
    }
    for s in &args.sample {
        let Some((file, expect)) = s.rsplit_once('=') else {
            anyhow::bail!("--sample {s:?}: expected FILE=clean|detected|THREAT");
        };
        let bytes = std::fs::read(file).with_context(|| format!("cannot read sample {file}"))?;
        out.push(Sample {
            name: file.to_string(),
            bytes: bytes.into(),
            expect: Some(Expect::parse(expect)),
        });
    }
    Ok(out)
}

/// The threat names of a detection.
fn threats(o: &EngineOutcome) -> Option<Vec<String>> {
    match o {
        EngineOutcome::Verdict(v) => match &v.outcome {
            Outcome::Detected(t) => Some(t.iter().map(|t| t.name.clone()).collect()),
            _ => None,
        },
        EngineOutcome::Fault(_) => None,
    }
}

fn is_clean(o: &EngineOutcome) -> bool {
    matches!(o, EngineOutcome::Verdict(v) if matches!(v.outcome, Outcome::Clean))
}

/// A one-line account of an outcome, with everything in the verdict that
/// could change between rounds.
fn describe(o: &EngineOutcome) -> String {
    let EngineOutcome::Verdict(v) = o else {
        return describe_outcome(o);
    };
    let mut out = describe_outcome(o);
    if let Some(score) = v.spam_score {
        out.push_str(&format!(", score {score}"));
    }
    if !v.rules.is_empty() {
        out.push_str(&format!(", rules {}", v.rules.join(" ")));
    }
    if !v.recipients.is_empty() || !v.headers.is_empty() {
        out.push_str(&format!(
            ", recipients {:?}, headers {:?}",
            v.recipients, v.headers
        ));
    }
    out
}

/// The outcome alone: clean, the threats found, unscannable, or the fault.
fn describe_outcome(o: &EngineOutcome) -> String {
    let v = match o {
        EngineOutcome::Verdict(v) => v,
        EngineOutcome::Fault(f) => return format!("fault {}: {}", f.kind, f.detail),
    };
    match &v.outcome {
        Outcome::Clean => "clean".to_string(),
        Outcome::Detected(t) => format!(
            "detected ({})",
            t.iter()
                .map(|t| format!("{} [{:?}]", t.name, t.kind))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Outcome::Unscannable(r) => format!("unscannable ({r:?})"),
    }
}
