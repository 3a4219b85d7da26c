//! What one engine made of one message: a verdict, or a fault.
//!
//! A guest fault is data. Traps, timeouts, refused memory growth and verdicts
//! over the limits are classified here into [`FaultKind`]s for the policy to
//! judge; nothing here panics or propagates a guest error upward.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Trap;

use super::ScanTiming;
use super::spec::{VERDICT_ITEM_BYTES, VerdictLimits};
use crate::bindings::{Outcome, Verdict};

/// The kinds of fault, which the policy treats separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The call ran past the engine's timeout and was interrupted.
    Timeout,
    /// The engine asked for more memory than its limit.
    OutOfMemory,
    /// The engine trapped: a panic, a stack overflow, an invalid access, a
    /// host call it made wrongly, or a result the host could not read.
    Trap,
    /// The engine returned a verdict over the limits or inconsistent (a
    /// detection without threats, a header with a line break).
    BadOutput,
    /// The engine could not be instantiated or was shut out (pool or
    /// concurrency exhausted past waiting).
    Overloaded,
    /// The message is larger than the engine's `max_message_bytes`; it was
    /// not handed to the engine.
    MessageTooLarge,
}

impl FaultKind {
    /// Every kind, in the order config, stats and metrics list them.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Timeout,
        FaultKind::OutOfMemory,
        FaultKind::Trap,
        FaultKind::BadOutput,
        FaultKind::Overloaded,
        FaultKind::MessageTooLarge,
    ];

    /// Its place in [`FaultKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in output, logs and config.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::OutOfMemory => "out-of-memory",
            FaultKind::Trap => "trap",
            FaultKind::BadOutput => "bad-output",
            FaultKind::Overloaded => "overloaded",
            FaultKind::MessageTooLarge => "message-too-large",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault with what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// The kind, for the policy.
    pub kind: FaultKind,
    /// A one-line description for the operator.
    pub detail: String,
}

/// What one engine made of one message.
#[derive(Debug, Clone)]
pub enum EngineOutcome {
    /// The engine answered within its limits.
    Verdict(Verdict),
    /// It did not.
    Fault(Fault),
}

impl EngineOutcome {
    /// A fault outcome.
    pub fn fault(kind: FaultKind, detail: impl Into<String>) -> Self {
        EngineOutcome::Fault(Fault {
            kind,
            detail: detail.into(),
        })
    }

    /// The fault, if this is one.
    pub fn as_fault(&self) -> Option<&Fault> {
        match self {
            EngineOutcome::Fault(f) => Some(f),
            EngineOutcome::Verdict(_) => None,
        }
    }
}

/// Turns the error of a failed guest call into a fault. `memory_denied` is
/// whether the store's limiter refused a memory growth during the call.
pub fn classify(err: &wasmtime::Error, memory_denied: bool) -> Fault {
    let trap = err.downcast_ref::<Trap>().copied();
    let (kind, what) = match trap {
        Some(Trap::Interrupt) => (
            FaultKind::Timeout,
            "interrupted at its deadline".to_string(),
        ),
        Some(Trap::StackOverflow) => (FaultKind::Trap, "stack overflow".to_string()),
        _ if memory_denied => (
            FaultKind::OutOfMemory,
            "memory growth past the limit was refused".to_string(),
        ),
        Some(Trap::UnreachableCodeReached) => (
            FaultKind::Trap,
            "unreachable code reached (a guest panic or abort)".to_string(),
        ),
        Some(t) => (FaultKind::Trap, t.to_string()),
        // The host refused to lift more than the store's hostcall fuel: a
        // verdict (or a log line) larger than the engine's bounds.
        None if root_cause(err).contains(HOSTCALL_FUEL_EXHAUSTED) => (
            FaultKind::BadOutput,
            "handed the host more data in one call than max_verdict_bytes allows".to_string(),
        ),
        // Not a trap, but the guest broke the contract all the same: a
        // host call refused (an unknown resource handle) or a value the
        // canonical ABI cannot lift (invalid UTF-8, a bad discriminant).
        None => (FaultKind::Trap, root_cause(err)),
    };
    Fault { kind, detail: what }
}

/// What wasmtime says when a call's hostcall fuel runs out (its error type
/// is private, so the text is what there is to go by).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// The innermost error's first line: the one that says what went wrong.
fn root_cause(err: &wasmtime::Error) -> String {
    let s = err.root_cause().to_string();
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// Folds `next` (a part's verdict) into `acc` (the message's so far):
/// threats add up, a detection outranks unscannable outranks clean, the
/// highest spam score wins, rules, recipients and headers accumulate.
/// Linear in the two verdicts' sizes; the caller checks `acc` against the
/// limits after each merge, so it never grows past them.
pub fn merge(acc: &mut Verdict, next: Verdict) {
    acc.outcome = match (
        std::mem::replace(&mut acc.outcome, Outcome::Clean),
        next.outcome,
    ) {
        (Outcome::Detected(mut a), Outcome::Detected(b)) => {
            // One threat per name; a part location beats "the whole message".
            let mut by_name: HashMap<String, usize> = a
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect();
            for t in b {
                match by_name.get(&t.name) {
                    Some(&i) if a[i].part.is_empty() => a[i].part = t.part,
                    Some(_) => {}
                    None => {
                        by_name.insert(t.name.clone(), a.len());
                        a.push(t);
                    }
                }
            }
            Outcome::Detected(a)
        }
        (Outcome::Detected(a), _) | (_, Outcome::Detected(a)) => Outcome::Detected(a),
        (Outcome::Unscannable(r), _) | (_, Outcome::Unscannable(r)) => Outcome::Unscannable(r),
        (Outcome::Clean, Outcome::Clean) => Outcome::Clean,
    };
    acc.spam_score = match (acc.spam_score, next.spam_score) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let mut seen: HashSet<String> = acc.rules.iter().cloned().collect();
    for r in next.rules {
        if seen.insert(r.clone()) {
            acc.rules.push(r);
        }
    }
    acc.recipients.extend(next.recipients);
    acc.headers.extend(next.headers);
}

/// Makes a checked verdict's names safe to print anywhere: control and
/// text-hiding characters in threat names, locations and rules become
/// escapes (see [`crate::text::escape`]). Header values were refused
/// already if they hold line breaks.
pub fn sanitize(v: &mut Verdict) {
    let clean = |s: &mut String| {
        if s.chars().any(|c| c.is_control() || !c.is_ascii()) {
            *s = crate::text::escape(s, usize::MAX);
        }
    };
    if let Outcome::Detected(threats) = &mut v.outcome {
        for t in threats {
            clean(&mut t.name);
            clean(&mut t.part);
        }
    }
    v.rules.iter_mut().for_each(clean);
    for r in &mut v.recipients {
        r.rules.iter_mut().for_each(clean);
    }
}

/// Checks a verdict against the engine's limits. `Err` names the first bound
/// it breaks.
pub fn check_verdict(v: &Verdict, limits: &VerdictLimits) -> Result<(), String> {
    fn count(what: &str, n: usize, max: u32) -> Result<(), String> {
        if n > max as usize {
            return Err(format!("verdict has {n} {what}, over the limit of {max}"));
        }
        Ok(())
    }
    let max_str = limits.max_string_bytes as usize;
    let total = std::cell::Cell::new(0u64);
    let string = |what: &str, s: &str| -> Result<(), String> {
        if s.len() > max_str {
            return Err(format!(
                "verdict {what} is {} bytes, over the limit of {max_str}",
                s.len()
            ));
        }
        total.set(total.get() + s.len() as u64 + VERDICT_ITEM_BYTES);
        if total.get() > limits.max_verdict_bytes {
            return Err(format!(
                "verdict is over {} bytes in all (max_verdict_bytes)",
                limits.max_verdict_bytes
            ));
        }
        Ok(())
    };
    if let Outcome::Detected(threats) = &v.outcome {
        count("threats", threats.len(), limits.max_threats)?;
        if threats.is_empty() {
            return Err("verdict says detected but names no threat".into());
        }
        for t in threats {
            string("threat name", &t.name)?;
            string("threat part", &t.part)?;
            if t.name.trim().is_empty() {
                return Err("verdict names a threat with an empty name".into());
            }
        }
    }
    if let Some(score) = v.spam_score
        && !score.is_finite()
    {
        return Err(format!("verdict spam score {score} is not a finite number"));
    }
    count("rules", v.rules.len(), limits.max_rules)?;
    for r in &v.rules {
        string("rule", r)?;
    }
    count(
        "recipient verdicts",
        v.recipients.len(),
        limits.max_recipient_verdicts,
    )?;
    for r in &v.recipients {
        string("recipient address", &r.address)?;
        count("rules for one recipient", r.rules.len(), limits.max_rules)?;
        for rule in &r.rules {
            string("recipient rule", rule)?;
        }
        if let crate::bindings::RecipientAction::Alternate(loc) = &r.action {
            string("alternate location", loc)?;
        }
    }
    count("headers", v.headers.len(), limits.max_headers)?;
    for h in &v.headers {
        string("header name", &h.name)?;
        string("header value", &h.value)?;
        if h.name.is_empty() || !h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!(
                "verdict proposes an invalid header name {:?}",
                h.name
            ));
        }
        if h.value.contains(['\r', '\n', '\0']) {
            return Err(format!(
                "verdict header {} has a line break or NUL in its value",
                h.name
            ));
        }
    }
    Ok(())
}

/// What one engine made of the message.
#[derive(Debug, Clone)]
pub struct EngineResult {
    /// The engine's name in config.
    pub engine: Arc<str>,
    /// The generation that scanned it.
    pub generation: u64,
    /// The verdict or fault.
    pub outcome: EngineOutcome,
    /// Where the time went.
    pub timing: ScanTiming,
    /// The verdict came from the cache.
    pub cached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Header, Threat, ThreatKind};
    use crate::engine::EngineLimits;

    fn clean() -> Verdict {
        crate::bindings::verdict_of(Outcome::Clean)
    }

    #[test]
    fn verdict_limits_are_enforced() {
        let limits = EngineLimits::default().verdict;
        assert!(check_verdict(&clean(), &limits).is_ok());

        let mut v = clean();
        v.rules = vec!["R".into(); limits.max_rules as usize + 1];
        assert!(check_verdict(&v, &limits).unwrap_err().contains("rules"));

        let mut v = clean();
        v.outcome = Outcome::Detected(vec![Threat {
            name: "x".repeat(limits.max_string_bytes as usize + 1),
            kind: ThreatKind::Virus,
            part: String::new(),
        }]);
        assert!(
            check_verdict(&v, &limits)
                .unwrap_err()
                .contains("threat name")
        );

        let mut v = clean();
        v.outcome = Outcome::Detected(vec![]);
        assert!(check_verdict(&v, &limits).is_err());

        let mut v = clean();
        v.spam_score = Some(f64::NAN);
        assert!(check_verdict(&v, &limits).is_err());

        let mut v = clean();
        v.headers = vec![Header {
            name: "X-Bad".into(),
            value: "a\r\nBcc: victim@example.com".into(),
        }];
        assert!(
            check_verdict(&v, &limits)
                .unwrap_err()
                .contains("line break")
        );

        let mut v = clean();
        v.headers = vec![Header {
            name: "Bad Name:".into(),
            value: "v".into(),
        }];
        assert!(check_verdict(&v, &limits).is_err());
    }
}
