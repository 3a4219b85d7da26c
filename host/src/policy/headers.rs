//! The headers cordon owns and writes: which incoming ones are removed as
//! forgeries, which engine-proposed ones pass, and the status headers
//! (`X-Virus-*`, `X-Spam-*`, `X-Cordon-*`) added to a delivered message.

use serde::Serialize;

use super::decision::{Context, Decision, Found, HEADER_VALUE_BYTES, names_within};
use super::rules::Policy;
use crate::bindings::ThreatKind;
use crate::text::{bounded_list, printable};

/// How `alternate` per-recipient verdicts are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlternateMode {
    /// Add an `X-Cordon-Alternate` header naming recipient and location;
    /// delivery is unchanged.
    Header,
    /// Delete the recipient and add the location as a recipient.
    Replace,
}

/// Headers cordon writes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderRules {
    /// Add headers at all (forged copies are removed either way).
    pub add: bool,
    /// Spam score at or above which `X-Spam-Flag: YES`.
    pub spam_threshold: f64,
    /// Names of engine-proposed headers let through (case-insensitive; a
    /// trailing `*` matches any rest).
    pub engine_headers: Vec<String>,
    /// How alternates are carried out.
    pub alternate: AlternateMode,
}

impl Default for HeaderRules {
    fn default() -> Self {
        Self {
            add: true,
            spam_threshold: 5.0,
            engine_headers: Vec::new(),
            alternate: AlternateMode::Header,
        }
    }
}

/// A header field name: printable ASCII without `:` (RFC 5322).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Headers cordon owns: removed from every message first, so that senders
/// cannot forge them.
pub const OWN_HEADERS: [&str; 8] = [
    "X-Virus-Scanned",
    "X-Virus-Status",
    "X-Spam-Flag",
    "X-Spam-Score",
    "X-Spam-Status",
    "X-Cordon-Scan",
    "X-Cordon-Rules",
    "X-Cordon-Alternate",
];

impl HeaderRules {
    /// Whether an engine may propose a header of this name.
    pub fn engine_header_allowed(&self, name: &str) -> bool {
        valid_header_name(name)
            && self
                .engine_headers
                .iter()
                .any(|p| match p.strip_suffix('*') {
                    Some(prefix) => {
                        name.len() >= prefix.len()
                            && name.as_bytes()[..prefix.len()]
                                .eq_ignore_ascii_case(prefix.as_bytes())
                    }
                    None => name.eq_ignore_ascii_case(p),
                })
    }
    /// Whether an incoming header of this name is removed.
    pub fn owns(&self, name: &str) -> bool {
        OWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) || self.engine_header_allowed(name)
    }
}

/// What the engines said that the headers report, besides the decision.
pub(super) struct Reported {
    /// Some engine detected spam.
    pub spam_detected: bool,
    /// Rules of engines that gave a spam score.
    pub spam_rules: Vec<String>,
    /// Recipients with an alternate location: (address, location).
    pub alternates: Vec<(String, String)>,
    /// Headers the engines proposed.
    pub proposed: Vec<(String, String)>,
}

/// Adds the status headers, the allowed engine headers and the scan
/// summary to `d` (a message being delivered).
pub(super) fn add_headers(d: &mut Decision, policy: &Policy, ctx: &Context<'_>, r: Reported) {
    let mut h = Vec::new();
    if d.engines.iter().any(|e| e.outcome.scanned()) {
        let version = env!("CARGO_PKG_VERSION");
        h.push((
            "X-Virus-Scanned".into(),
            match ctx.host {
                Some(host) => format!("cordon {version} at {}", printable(host)),
                None => format!("cordon {version}"),
            },
        ));
        let viruses: Vec<&Found> = d
            .threats
            .iter()
            .filter(|t| t.kind != ThreatKind::Spam)
            .collect();
        let status = if !viruses.is_empty() {
            format!(
                "Infected ({})",
                names_within(&viruses, HEADER_VALUE_BYTES - 11)
            )
        } else if !d.failures.is_empty() {
            let why: Vec<String> = d
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.engine, f.kind))
                .collect();
            format!("Not scanned ({})", why.join(", "))
        } else {
            "Clean".to_string()
        };
        h.push(("X-Virus-Status".into(), status));
    }
    if d.spam_score.is_some() || r.spam_detected {
        let score = d.spam_score.unwrap_or(0.0);
        let spam = r.spam_detected || score >= policy.headers.spam_threshold;
        let mut tests: Vec<&str> = r.spam_rules.iter().map(String::as_str).collect();
        tests.sort_unstable();
        tests.dedup();
        let tests = if tests.is_empty() {
            "none".to_string()
        } else {
            bounded_list(tests, HEADER_VALUE_BYTES - 60).replace(", ", ",")
        };
        h.push((
            "X-Spam-Flag".into(),
            if spam { "YES" } else { "NO" }.to_string(),
        ));
        h.push(("X-Spam-Score".into(), format!("{score:.1}")));
        h.push((
            "X-Spam-Status".into(),
            format!(
                "{}, score={score:.1} required={:.1} tests={tests}",
                if spam { "Yes" } else { "No" },
                policy.headers.spam_threshold
            ),
        ));
    }
    if !d.rules.is_empty() {
        h.push((
            "X-Cordon-Rules".into(),
            bounded_list(d.rules.iter().map(String::as_str), HEADER_VALUE_BYTES),
        ));
    }
    for (rcpt, location) in r.alternates {
        h.push((
            "X-Cordon-Alternate".into(),
            format!("<{}> {location}", printable(&rcpt)),
        ));
    }
    for (name, value) in r.proposed {
        if policy.headers.engine_header_allowed(&name)
            && !OWN_HEADERS.iter().any(|o| o.eq_ignore_ascii_case(&name))
        {
            let mut value = printable(&value);
            value.truncate(HEADER_VALUE_BYTES);
            h.push((name, value));
        } else {
            d.ignored.push(format!(
                "header {:?} is not in headers.engine_headers",
                printable(&name)
            ));
        }
    }
    let mut summary = format!("id={}", ctx.scan_id);
    for e in &d.engines {
        summary.push_str(&format!("; {}={}", e.engine, e.outcome));
    }
    h.push(("X-Cordon-Scan".into(), summary));
    d.add_headers = h;
}
