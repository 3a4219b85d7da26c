//! Engine outcomes to a [`Decision`]: what the MTA is told. Pure: no I/O, no
//! clock, no randomness (the scan id comes in), so it is tested as tables.
//!
//! Each engine's outcome first becomes that engine's action, by its rules:
//! a clean verdict is `accept`; a detection takes `on_detect` for the
//! threat's kind (the most severe, if several kinds); an unscannable verdict
//! or a fault takes `on_error` for its kind (`tempfail` unless configured).
//! The message's action is the most severe of the engines' actions, in this
//! order, most severe first:
//!
//! 1. `reject` (5xx): the message is known bad and the sender is told;
//! 2. `discard`: known bad, accepted and dropped silently;
//! 3. `quarantine`: known bad or suspect, accepted and held by the MTA
//!    (Postfix: the hold queue);
//! 4. `tempfail` (4xx): some engine could not give a verdict (fail-closed)
//!    or a detection is configured to defer;
//! 5. `accept`: delivered, with headers saying what was found (a detection
//!    whose action is `tag` ends here).
//!
//! A verdict-driven action outranks a fault because the message is known bad
//! whatever the faulting engine would have said. When the message is
//! delivered (accept, quarantine), per-recipient verdicts then edit the
//! recipients: `drop` deletes one (all dropped: discard), `alternate` either
//! replaces it with the location or adds a header naming the location.

mod decision;
mod headers;
mod recipients;
mod rules;
mod skip;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use decision::{
    Context, Decision, EngineSummary, Failure, Found, HEADER_VALUE_BYTES, HeaderRemoval,
    OutcomeKind, RecipientEdit, Skipped, kind_name, reason_name, threat_names,
};
pub use headers::{AlternateMode, HeaderRules, OWN_HEADERS};
pub use rules::{
    Action, DetectAction, EngineRules, ErrorAction, ErrorKind, OnDetect, OnError, Policy, Reply,
    kind_index,
};
pub use skip::{SkipReason, SkipRules, bare_address, domain_of, ip_addr};

use crate::bindings::{Outcome, ThreatKind};
use crate::engine::{EngineOutcome, EngineResult};
use crate::text::printable;
use decision::{names_within, substitute};
use headers::Reported;
use recipients::Tally;

/// Judges one message's engine results.
pub fn decide(
    policy: &Policy,
    results: &[EngineResult],
    skipped: &[Skipped],
    ctx: Context<'_>,
) -> Decision {
    let mut d = Decision {
        action: Action::Accept,
        reply: None,
        quarantine: None,
        threats: Vec::new(),
        failures: Vec::new(),
        skipped: skipped.to_vec(),
        engines: Vec::new(),
        spam_score: None,
        rules: Vec::new(),
        recipients: Vec::new(),
        remove_headers: Vec::new(),
        add_headers: Vec::new(),
        ignored: Vec::new(),
    };
    let mut tally = Tally::new(ctx.envelope);
    let mut reported = Reported {
        spam_detected: false,
        spam_rules: Vec::new(),
        alternates: Vec::new(),
        proposed: Vec::new(),
    };
    // Each engine's action, in engine order, to pick replies from.
    let mut actions: Vec<Action> = Vec::with_capacity(results.len());

    for r in results {
        let engine = r.engine.to_string();
        let rules = policy.rules(&engine);
        let (action, outcome) = match &r.outcome {
            EngineOutcome::Verdict(v) => {
                let judged = match &v.outcome {
                    Outcome::Clean => (Action::Accept, OutcomeKind::Clean),
                    Outcome::Detected(ts) => {
                        let mut a = Action::Accept;
                        for t in ts {
                            a = a.max(rules.on_detect.get(t.kind).action());
                            reported.spam_detected |= t.kind == ThreatKind::Spam;
                            d.threats.push(Found {
                                engine: engine.clone(),
                                name: t.name.clone(),
                                kind: t.kind,
                                part: t.part.clone(),
                            });
                        }
                        (a, OutcomeKind::Detected)
                    }
                    Outcome::Unscannable(reason) => {
                        let kind = OutcomeKind::Unscannable(*reason);
                        let ea = rules.on_error.get(ErrorKind::Unscannable);
                        d.failures.push(Failure {
                            engine: engine.clone(),
                            kind,
                            detail: "the engine could not scan the message".into(),
                            action: ea,
                        });
                        (ea.action(), kind)
                    }
                };
                if let Some(s) = v.spam_score.filter(|s| s.is_finite()) {
                    d.spam_score = Some(d.spam_score.map_or(s, |m| m.max(s)));
                    reported.spam_rules.extend(v.rules.iter().cloned());
                }
                d.rules
                    .extend(v.rules.iter().map(|rule| format!("{engine}:{rule}")));
                for rv in &v.recipients {
                    tally.add(&engine, rv, &mut d);
                }
                reported
                    .proposed
                    .extend(v.headers.iter().map(|h| (h.name.clone(), h.value.clone())));
                judged
            }
            EngineOutcome::Fault(f) => {
                let ea = rules.on_error.get(ErrorKind::Fault(f.kind));
                d.failures.push(Failure {
                    engine: engine.clone(),
                    kind: OutcomeKind::Fault(f.kind),
                    detail: f.detail.clone(),
                    action: ea,
                });
                (ea.action(), OutcomeKind::Fault(f.kind))
            }
        };
        actions.push(action);
        d.engines.push(EngineSummary {
            engine,
            outcome,
            action,
        });
    }
    for s in skipped {
        d.engines.push(EngineSummary {
            engine: s.engine.clone(),
            outcome: OutcomeKind::Skipped(s.reason),
            action: Action::Accept,
        });
    }

    d.action = actions.iter().copied().max().unwrap_or(Action::Accept);
    // The reply comes from the first engine (name order) that called for
    // the winning action; %v names the threats of every engine that did.
    let deciding = |want: Action| {
        results
            .iter()
            .zip(&actions)
            .filter(move |(_, a)| **a == want)
            .map(|(r, _)| r.engine.to_string())
    };
    let found_by = |engines: &[String]| -> Vec<&Found> {
        d.threats
            .iter()
            .filter(|t| engines.contains(&t.engine))
            .collect()
    };
    match d.action {
        Action::Reject | Action::Tempfail => {
            let engines: Vec<String> = deciding(d.action).collect();
            let rules = policy.rules(&engines[0]);
            let reply = if d.action == Action::Reject {
                &rules.reject
            } else {
                &rules.tempfail
            };
            d.reply = Some(substitute(reply, &found_by(&engines)));
        }
        Action::Quarantine => {
            let engines: Vec<String> = deciding(Action::Quarantine).collect();
            d.quarantine = Some(format!(
                "cordon {}: {} found",
                printable(ctx.scan_id),
                names_within(&found_by(&engines), HEADER_VALUE_BYTES)
            ));
        }
        Action::Discard | Action::Accept => {}
    }

    // Forged copies of our headers go, whatever happens next.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for name in ctx.header_names {
        let n = seen.entry(name.to_ascii_lowercase()).or_insert(0);
        *n += 1;
        if policy.headers.owns(name) {
            d.remove_headers.push(HeaderRemoval {
                name: name.clone(),
                index: *n,
            });
        }
    }

    if !matches!(d.action, Action::Accept | Action::Quarantine) {
        return d;
    }
    match tally.apply(ctx.envelope, policy.headers.alternate, &mut d) {
        Some(alternates) => reported.alternates = alternates,
        None => {
            // Every recipient dropped.
            d.action = Action::Discard;
            d.quarantine = None;
            d.recipients.clear();
            return d;
        }
    }
    if policy.headers.add {
        headers::add_headers(&mut d, policy, &ctx, reported);
    }
    d
}
