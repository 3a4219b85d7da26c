//! `cordon scan`: messages from files, directories, mbox, Maildir or
//! stdin judged the same way the daemon judges them, printed one line each
//! (or one JSON object each), with a summary.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;

use super::{EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND, ScanArgs, load_registry};
use crate::engine::EngineOutcome;
use crate::inputs::{self, Operand};
use crate::judge::{Case, Rules, judge};
use crate::policy::{self, Action, Decision};
use crate::scan::{self, Message, ScanReport};

/// The result for one input.
struct Scanned {
    label: String,
    result: Result<(ScanReport, Decision), String>,
}

#[derive(Default)]
struct Totals {
    messages: u64,
    detected: u64,
    errors: u64,
}

pub(super) async fn scan_command(args: ScanArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let config = args.source.resolve()?;
    let rules = Arc::new(config.registry.live.rules.clone());
    let envelope = Arc::new(envelope_of(&args.envelope, &config.registry.live)?);
    let registry = load_registry(config).await?;
    let engines = registry.enabled();
    let jobs = args
        .jobs
        .unwrap_or_else(|| (registry.runtime().pool_instances() as usize / engines.len()).max(1))
        .max(1);

    let operands = inputs::expand(&args.inputs);
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(operands.len() as u64),
        if std::io::stderr().is_terminal() && !args.json && operands.len() > 1 {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let mut results = futures_util::stream::iter(operands)
        .map(|op| {
            let engines = engines.clone();
            let rules = rules.clone();
            let envelope = envelope.clone();
            async move { scan_operand(op, &engines, &rules, &envelope).await }
        })
        .buffered(jobs);

    let mut totals = Totals::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(batch) = results.next().await {
        progress.inc(1);
        for s in batch {
            totals.messages += 1;
            match &s.result {
                Err(_) => totals.errors += 1,
                Ok((_, d)) => {
                    if d.action == Action::Tempfail {
                        totals.errors += 1;
                    } else if !d.threats.is_empty() {
                        totals.detected += 1;
                    }
                }
            }
            progress.suspend(|| print_result(&mut out, &s, &args))?;
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "type": "summary",
                "engines": engines.iter().map(|g| g.name.to_string()).collect::<Vec<_>>(),
                "messages": totals.messages,
                "detected": totals.detected,
                "errors": totals.errors,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                "peak_rss_kib": crate::process::peak_rss_bytes(crate::process::Pid::Current).map(|b| b / 1024),
            })
        )?;
    } else if !args.no_summary {
        writeln!(out, "\n----------- SCAN SUMMARY -----------")?;
        writeln!(
            out,
            "Engines: {}",
            engines
                .iter()
                .map(|g| format!("{} ({})", g.name, g.info.definitions_version))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(out, "Scanned messages: {}", totals.messages)?;
        writeln!(out, "Detected messages: {}", totals.detected)?;
        writeln!(out, "Errors: {}", totals.errors)?;
        writeln!(out, "Time: {:.3} sec", elapsed.as_secs_f64())?;
        if let Some(b) = crate::process::peak_rss_bytes(crate::process::Pid::Current) {
            writeln!(out, "Peak memory: {:.1} MiB", b as f64 / 1_048_576.0)?;
        }
    }
    out.flush()?;
    Ok(if totals.errors > 0 {
        EXIT_ERROR
    } else if totals.detected > 0 {
        EXIT_FOUND
    } else {
        EXIT_CLEAN
    })
}

/// The envelope the flags describe: addresses bare, each recipient with
/// the profiles the config gives it.
fn envelope_of(
    args: &super::EnvelopeArgs,
    live: &crate::live::LiveSettings,
) -> anyhow::Result<crate::bindings::Envelope> {
    use crate::bindings::Recipient;
    use crate::policy::bare_address;
    for (flag, value) in [("--helo", &args.helo), ("--from", &args.from)]
        .into_iter()
        .chain(args.rcpt.iter().map(|r| ("--rcpt", r)))
    {
        if value.len() > 1024 || value.chars().any(char::is_control) {
            anyhow::bail!(
                "{flag} {:?}: at most 1024 characters, none of them control characters",
                crate::text::escape(value, 64)
            );
        }
    }
    Ok(crate::bindings::Envelope {
        client_address: args.client.map(crate::bindings::ip_address),
        helo: args.helo.clone(),
        mail_from: bare_address(&args.from).to_string(),
        recipients: args
            .rcpt
            .iter()
            .map(|r| Recipient {
                address: bare_address(r).to_string(),
                profiles: live.profiles_of(r),
            })
            .collect(),
        ..crate::bindings::empty_envelope()
    })
}

async fn scan_operand(
    op: Operand,
    engines: &[Arc<crate::engine::Generation>],
    rules: &Rules,
    envelope: &Arc<crate::bindings::Envelope>,
) -> Vec<Scanned> {
    let read = match tokio::task::spawn_blocking(move || inputs::read(&op)).await {
        Ok(i) => i,
        Err(e) => {
            return vec![Scanned {
                label: "?".into(),
                result: Err(format!("reading task failed: {e}")),
            }];
        }
    };
    let mut out = Vec::with_capacity(read.len());
    for input in read {
        let result = match input.bytes {
            Err(e) => Err(e),
            Ok(bytes) => {
                let message = Message {
                    envelope: envelope.clone(),
                    bytes: bytes.into(),
                };
                let names = inputs::header_names(&message.bytes);
                let id = scan::scan_id();
                let j = judge(
                    engines,
                    None,
                    rules,
                    Case {
                        message: &message,
                        size: message.bytes.len() as u64,
                        header_names: &names,
                        scan_id: &id,
                        host: None,
                    },
                )
                .await;
                Ok((j.report, j.decision))
            }
        };
        out.push(Scanned {
            label: input.label,
            result,
        });
    }
    out
}

fn print_result(out: &mut impl Write, s: &Scanned, args: &ScanArgs) -> std::io::Result<()> {
    if args.json {
        let value = match &s.result {
            Err(e) => json!({"type": "message", "path": s.label, "error": e}),
            Ok((report, decision)) => json!({
                "type": "message",
                "path": s.label,
                "decision": decision,
                "elapsed_ms": report.elapsed.as_secs_f64() * 1000.0,
                "engines": report.results.iter().map(|r| {
                    let mut v = json!({
                        "engine": &*r.engine,
                        "generation": r.generation,
                        "queued_ms": r.timing.queued.as_secs_f64() * 1000.0,
                        "run_ms": r.timing.run.as_secs_f64() * 1000.0,
                    });
                    match &r.outcome {
                        EngineOutcome::Verdict(verdict) => {
                            v["outcome"] = json!(match &verdict.outcome {
                                crate::bindings::Outcome::Clean => "clean",
                                crate::bindings::Outcome::Detected(_) => "detected",
                                crate::bindings::Outcome::Unscannable(_) => "unscannable",
                            });
                            v["spam_score"] = json!(verdict.spam_score);
                            v["rules"] = json!(verdict.rules);
                        }
                        EngineOutcome::Fault(f) => {
                            v["outcome"] = json!("fault");
                            v["fault"] = json!(f);
                        }
                    }
                    v
                }).collect::<Vec<_>>(),
            }),
        };
        return writeln!(out, "{value}");
    }
    // The label is a file name and the details may quote an engine: one
    // safe line each, whatever bytes they hold.
    let label = crate::text::escape(&s.label, 4096);
    let label = &label;
    match &s.result {
        Err(e) => writeln!(out, "{label}: ERROR {}", crate::text::escape(e, 4096)),
        Ok((_, d)) => {
            if args.infected && d.action == Action::Accept && d.threats.is_empty() {
                return Ok(());
            }
            let reply = d
                .reply
                .as_ref()
                .map(|r| format!(" [{} {r}]", d.action.as_str()))
                .unwrap_or_default();
            match d.action {
                Action::Accept if d.threats.is_empty() => writeln!(out, "{label}: OK"),
                Action::Accept => writeln!(
                    out,
                    "{}: {} FOUND [accept, tagged]",
                    label,
                    policy::threat_names(&d.threats)
                ),
                Action::Reject | Action::Discard | Action::Quarantine => writeln!(
                    out,
                    "{}: {} FOUND{}",
                    label,
                    policy::threat_names(&d.threats),
                    if d.action == Action::Reject {
                        reply
                    } else {
                        format!(" [{}]", d.action.as_str())
                    }
                ),
                Action::Tempfail => {
                    let why: Vec<String> = d
                        .failures
                        .iter()
                        .map(|f| {
                            format!(
                                "{} {}: {}",
                                f.engine,
                                f.kind,
                                crate::text::escape(&f.detail, 1024)
                            )
                        })
                        .collect();
                    writeln!(out, "{label}: ERROR {}{reply}", why.join("; "))
                }
            }
        }
    }
}
