//! A message judged the whole way: each engine's skip rules, the scan of
//! the engines left, then the policy's decision. The milter session and
//! `cordon scan` both come here, so an MTA and the CLI are told the same.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{EngineOutcome, EngineResult, Generation, ScanTiming};
use crate::mime::MimeLimits;
use crate::policy::{Context, Decision, Policy, Skipped};
use crate::scan::{Message, ScanReport, scan_with_cache};
use crate::verdict_cache::VerdictCache;

/// A message judged: the engines' results and the decision.
#[derive(Debug, Clone)]
pub struct Judged {
    /// What the engines that were asked said.
    pub report: ScanReport,
    /// What the MTA is told.
    pub decision: Decision,
}

/// The parts of the config that judge a message; a config reload replaces
/// them whole (see [`crate::live`]).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The policy.
    pub policy: Policy,
    /// MIME decomposition limits.
    pub mime: MimeLimits,
}

/// One message to judge and what the policy needs to know about it.
#[derive(Clone, Copy)]
pub struct Case<'a> {
    /// The message (the bytes kept of it).
    pub message: &'a Message,
    /// Its real size: when larger than `message.bytes` (the MTA sent more
    /// than any engine takes and the rest was not kept), the engines asked
    /// get a `message-too-large` fault without a scan.
    pub size: u64,
    /// Its header names, in order, for the header edits.
    pub header_names: &'a [String],
    /// The scan id for `X-Cordon-Scan` and the log.
    pub scan_id: &'a str,
    /// The MTA's host name for `X-Virus-Scanned`.
    pub host: Option<&'a str>,
}

/// Applies each engine's skip rules, scans with the engines left (answering
/// from `cache` where it can), and decides.
pub async fn judge(
    engines: &[Arc<Generation>],
    cache: Option<&VerdictCache>,
    rules: &Rules,
    case: Case<'_>,
) -> Judged {
    let Case {
        message,
        size,
        header_names,
        scan_id,
        host,
    } = case;
    let (policy, mime) = (&rules.policy, &rules.mime);
    let mut asked = Vec::with_capacity(engines.len());
    let mut skipped = Vec::new();
    for g in engines {
        match policy.rules(&g.name).skip_reason(&message.envelope, size) {
            Some(reason) => skipped.push(Skipped {
                engine: g.name.to_string(),
                reason,
            }),
            None => asked.push(g.clone()),
        }
    }
    let report = if asked.is_empty() {
        ScanReport {
            results: Vec::new(),
            elapsed: Duration::ZERO,
        }
    } else if size > message.bytes.len() as u64 {
        ScanReport {
            results: asked
                .iter()
                .map(|g| EngineResult {
                    engine: g.name.clone(),
                    generation: g.number,
                    outcome: EngineOutcome::fault(
                        crate::engine::FaultKind::MessageTooLarge,
                        format!(
                            "{size} bytes, over the engine's limit of {}",
                            g.limits.max_message_bytes
                        ),
                    ),
                    timing: ScanTiming::default(),
                    cached: false,
                })
                .collect(),
            elapsed: Duration::ZERO,
        }
    } else {
        scan_with_cache(&asked, message, mime, cache).await
    };
    // `decide` is linear in the verdicts, which are bounded, but a large
    // one is still milliseconds of CPU: that runs on a blocking thread, not
    // on an async worker that other sessions are waiting for.
    let decision = if verdict_items(&report.results) <= INLINE_DECIDE_ITEMS {
        crate::policy::decide(
            policy,
            &report.results,
            &skipped,
            Context {
                envelope: &message.envelope,
                header_names,
                scan_id,
                host,
            },
        )
    } else {
        let (p, results, envelope) = (
            policy.clone(),
            report.results.clone(),
            message.envelope.clone(),
        );
        let (names, id, mta_host) = (
            header_names.to_vec(),
            scan_id.to_string(),
            host.map(str::to_string),
        );
        let skipped_all = skipped.clone();
        let decided = tokio::task::spawn_blocking(move || {
            crate::policy::decide(
                &p,
                &results,
                &skipped_all,
                Context {
                    envelope: &envelope,
                    header_names: &names,
                    scan_id: &id,
                    host: mta_host.as_deref(),
                },
            )
        })
        .await;
        // A panic in `decide` is a bug: it goes on as if it had happened
        // here (the session ends and the MTA applies its default action).
        decided.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    Judged { report, decision }
}

/// Verdicts with at most this many items in all are judged on the calling
/// task (microseconds); larger ones on a blocking thread.
const INLINE_DECIDE_ITEMS: usize = 2048;

/// Threats, rules, recipient verdicts with their rules, and headers in all
/// of `results`: what `decide` walks.
fn verdict_items(results: &[EngineResult]) -> usize {
    results
        .iter()
        .map(|r| match &r.outcome {
            EngineOutcome::Verdict(v) => {
                let threats = match &v.outcome {
                    crate::bindings::Outcome::Detected(t) => t.len(),
                    _ => 0,
                };
                threats
                    + v.rules.len()
                    + v.headers.len()
                    + v.recipients
                        .iter()
                        .map(|r| 1 + r.rules.len())
                        .sum::<usize>()
            }
            EngineOutcome::Fault(_) => 1,
        })
        .sum()
}
