//! Engine outcomes to a [`Decision`]: what the MTA is told. Pure: no I/O, no
//! clock, so it is tested as tables.
//!
//! Severity, most severe first; the most severe action any engine's outcome
//! calls for wins:
//!
//! 1. `reject` (5xx): some engine detected a threat;
//! 2. `tempfail` (4xx): some engine faulted (timeout, out-of-memory, trap,
//!    bad output, overload, message too large) or found the message
//!    unscannable, and nothing was detected. Fail-closed: a message that
//!    could not be scanned by every engine is never accepted by default;
//! 3. `accept`: every engine returned a clean verdict.
//!
//! A detection outranks a fault because the message is known bad whatever
//! the faulting engine would have said.

use serde::Serialize;

use crate::bindings::{Outcome, ThreatKind, UnscannableReason};
use crate::engine::EngineOutcome;
use crate::scan::EngineResult;

/// The action for the MTA, in ascending severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver.
    Accept,
    /// Ask the client to retry later (4xx).
    Tempfail,
    /// Refuse (5xx).
    Reject,
}

impl Action {
    /// The name used in output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Tempfail => "tempfail",
            Action::Reject => "reject",
        }
    }
}

/// An SMTP reply: code, enhanced status code, text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// Basic status code, e.g. 550.
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.1`.
    pub status: String,
    /// Human-readable text.
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// A threat some engine found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// The engine.
    pub engine: String,
    /// The threat's name as the engine printed it.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// Where in the message, or empty.
    pub part: String,
}

/// An engine that could not give a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The engine.
    pub engine: String,
    /// `timeout`, `out-of-memory`, `trap`, `bad-output`, `overloaded`,
    /// `message-too-large`, or `unscannable:<reason>`.
    pub kind: String,
    /// Detail for the operator.
    pub detail: String,
}

/// What the MTA is told about one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// The SMTP reply for reject and tempfail.
    pub reply: Option<Reply>,
    /// Threats found, in engine order.
    pub threats: Vec<Found>,
    /// Engines that gave no verdict.
    pub failures: Vec<Failure>,
    /// The highest spam score any engine reported.
    pub spam_score: Option<f64>,
    /// Rules fired, as `engine:rule`.
    pub rules: Vec<String>,
}

/// Replies used when a message is refused or deferred.
#[derive(Debug, Clone)]
pub struct Policy {
    /// For detections; `%v` becomes the threat names.
    pub reject: Reply,
    /// For faults and unscannable messages.
    pub tempfail: Reply,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            reject: Reply {
                code: 550,
                status: "5.7.1".into(),
                text: "Message rejected: %v found".into(),
            },
            tempfail: Reply {
                code: 451,
                status: "4.7.1".into(),
                text: "Message could not be scanned, try again later".into(),
            },
        }
    }
}

fn kind_name(k: ThreatKind) -> &'static str {
    match k {
        ThreatKind::Virus => "virus",
        ThreatKind::Malware => "malware",
        ThreatKind::Phishing => "phishing",
        ThreatKind::Spam => "spam",
        ThreatKind::Policy => "policy",
        ThreatKind::Heuristic => "heuristic",
    }
}

fn reason_name(r: UnscannableReason) -> &'static str {
    match r {
        UnscannableReason::Encrypted => "encrypted",
        UnscannableReason::LimitsExceeded => "limits-exceeded",
        UnscannableReason::Corrupt => "corrupt",
        UnscannableReason::Unsupported => "unsupported",
    }
}

/// The threat names, in engine order, repeats next to each other dropped,
/// joined by ", ": what `%v` becomes and what `cordon scan` prints.
pub fn threat_names(threats: &[Found]) -> String {
    let mut names: Vec<&str> = threats.iter().map(|t| t.name.as_str()).collect();
    names.dedup();
    names.join(", ")
}

/// Judges one message's engine results.
pub fn decide(policy: &Policy, results: &[EngineResult]) -> Decision {
    let mut threats = Vec::new();
    let mut failures = Vec::new();
    let mut spam_score: Option<f64> = None;
    let mut rules = Vec::new();
    for r in results {
        let engine = r.engine.to_string();
        match &r.outcome {
            EngineOutcome::Verdict(v) => {
                match &v.outcome {
                    Outcome::Clean => {}
                    Outcome::Detected(ts) => threats.extend(ts.iter().map(|t| Found {
                        engine: engine.clone(),
                        name: t.name.clone(),
                        kind: kind_name(t.kind),
                        part: t.part.clone(),
                    })),
                    Outcome::Unscannable(reason) => failures.push(Failure {
                        engine: engine.clone(),
                        kind: format!("unscannable:{}", reason_name(*reason)),
                        detail: "the engine could not scan the message".into(),
                    }),
                }
                if let Some(s) = v.spam_score {
                    spam_score = Some(spam_score.map_or(s, |m| m.max(s)));
                }
                rules.extend(v.rules.iter().map(|rule| format!("{engine}:{rule}")));
            }
            EngineOutcome::Fault(f) => failures.push(Failure {
                engine,
                kind: f.kind.as_str().to_string(),
                detail: f.detail.clone(),
            }),
        }
    }
    let (action, reply) = if !threats.is_empty() {
        let mut reply = policy.reject.clone();
        reply.text = reply.text.replace("%v", &threat_names(&threats));
        (Action::Reject, Some(reply))
    } else if !failures.is_empty() {
        (Action::Tempfail, Some(policy.tempfail.clone()))
    } else {
        (Action::Accept, None)
    };
    Decision {
        action,
        reply,
        threats,
        failures,
        spam_score,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Threat, Verdict};
    use crate::engine::{FaultKind, ScanTiming};

    fn verdict(outcome: Outcome) -> EngineOutcome {
        EngineOutcome::Verdict(Verdict {
            outcome,
            spam_score: None,
            rules: vec![],
            recipients: vec![],
            headers: vec![],
        })
    }
    fn clean() -> EngineOutcome {
        verdict(Outcome::Clean)
    }
    fn virus(name: &str) -> EngineOutcome {
        verdict(Outcome::Detected(vec![Threat {
            name: name.into(),
            kind: ThreatKind::Virus,
            part: String::new(),
        }]))
    }
    fn fault(kind: FaultKind) -> EngineOutcome {
        EngineOutcome::fault(kind, "test")
    }
    fn results(outcomes: Vec<EngineOutcome>) -> Vec<EngineResult> {
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| EngineResult {
                engine: format!("e{i}").into(),
                generation: 1,
                outcome,
                timing: ScanTiming::default(),
            })
            .collect()
    }

    #[test]
    fn most_severe_outcome_wins() {
        use Action::*;
        let table: Vec<(Vec<EngineOutcome>, Action)> = vec![
            (vec![clean()], Accept),
            (vec![clean(), clean()], Accept),
            (vec![virus("V")], Reject),
            (vec![clean(), virus("V")], Reject),
            (vec![fault(FaultKind::Timeout)], Tempfail),
            (vec![clean(), fault(FaultKind::Trap)], Tempfail),
            (vec![fault(FaultKind::OutOfMemory), virus("V")], Reject),
            (
                vec![verdict(Outcome::Unscannable(UnscannableReason::Encrypted))],
                Tempfail,
            ),
            (vec![clean(), fault(FaultKind::MessageTooLarge)], Tempfail),
            (
                vec![fault(FaultKind::BadOutput), fault(FaultKind::Overloaded)],
                Tempfail,
            ),
            // No engine at all is not a clean scan: config validation
            // refuses it, and accept here would still be the only sound
            // answer for an empty list, so it is pinned.
            (vec![], Accept),
        ];
        for (i, (outcomes, want)) in table.into_iter().enumerate() {
            let d = decide(&Policy::default(), &results(outcomes));
            assert_eq!(d.action, want, "row {i}: {d:?}");
            assert_eq!(d.reply.is_some(), want != Accept, "row {i}");
        }
    }

    #[test]
    fn reject_text_names_threats_and_tempfail_is_451() {
        let d = decide(
            &Policy::default(),
            &results(vec![
                virus("Eicar-Test-Signature"),
                fault(FaultKind::Timeout),
            ]),
        );
        let reply = d.reply.unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(reply.text, "Message rejected: Eicar-Test-Signature found");
        assert_eq!(d.failures.len(), 1);
        assert_eq!(d.failures[0].kind, "timeout");

        let d = decide(
            &Policy::default(),
            &results(vec![fault(FaultKind::Timeout)]),
        );
        assert_eq!(d.reply.unwrap().code, 451);
    }

    #[test]
    fn spam_score_is_the_maximum() {
        let mut a = Verdict {
            outcome: Outcome::Clean,
            spam_score: Some(2.5),
            rules: vec!["R1".into()],
            recipients: vec![],
            headers: vec![],
        };
        let b = EngineOutcome::Verdict(a.clone());
        a.spam_score = Some(7.0);
        let d = decide(
            &Policy::default(),
            &results(vec![b, EngineOutcome::Verdict(a)]),
        );
        assert_eq!(d.spam_score, Some(7.0));
        assert_eq!(d.rules, ["e0:R1", "e1:R1"]);
    }
}
