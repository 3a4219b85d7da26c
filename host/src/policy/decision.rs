//! What the policy decides: the [`Decision`] for the MTA and the records
//! it is made of, typed where code branches on them.

use serde::{Serialize, Serializer};

use super::rules::{Action, ErrorAction, Reply};
use super::skip::SkipReason;
use crate::bindings::{Envelope, ThreatKind, UnscannableReason};
use crate::engine::FaultKind;
use crate::text::bounded_list;

/// One engine's outcome as the decision records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// A clean verdict.
    Clean,
    /// A detection.
    Detected,
    /// The engine said it could not scan the message.
    Unscannable(UnscannableReason),
    /// No verdict.
    Fault(FaultKind),
    /// Not asked.
    Skipped(SkipReason),
}

impl OutcomeKind {
    /// Whether the engine was asked (not skipped).
    pub fn scanned(self) -> bool {
        !matches!(self, OutcomeKind::Skipped(_))
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutcomeKind::Clean => f.write_str("clean"),
            OutcomeKind::Detected => f.write_str("detected"),
            OutcomeKind::Unscannable(r) => write!(f, "unscannable:{}", reason_name(*r)),
            OutcomeKind::Fault(k) => f.write_str(k.as_str()),
            OutcomeKind::Skipped(r) => write!(f, "skipped:{r}"),
        }
    }
}

impl Serialize for OutcomeKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn threat_kind<S: Serializer>(k: &ThreatKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind_name(*k))
}

/// The name used in output and headers for a threat kind.
pub fn kind_name(k: ThreatKind) -> &'static str {
    match k {
        ThreatKind::Virus => "virus",
        ThreatKind::Malware => "malware",
        ThreatKind::Phishing => "phishing",
        ThreatKind::Spam => "spam",
        ThreatKind::Policy => "policy",
        ThreatKind::Heuristic => "heuristic",
    }
}

/// The name used in output for an unscannable reason.
pub fn reason_name(r: UnscannableReason) -> &'static str {
    match r {
        UnscannableReason::Encrypted => "encrypted",
        UnscannableReason::LimitsExceeded => "limits-exceeded",
        UnscannableReason::Corrupt => "corrupt",
        UnscannableReason::Unsupported => "unsupported",
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
    #[serde(serialize_with = "threat_kind")]
    pub kind: ThreatKind,
    /// Where in the message, or empty.
    pub part: String,
}

/// An engine that could not give a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The engine.
    pub engine: String,
    /// A fault kind, or `unscannable:<reason>`.
    pub kind: OutcomeKind,
    /// Detail for the operator.
    pub detail: String,
    /// What the engine's rules made of it.
    pub action: ErrorAction,
}

/// An engine that was not asked, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The engine.
    pub engine: String,
    /// The skip rule that matched.
    pub reason: SkipReason,
}

/// One engine's part in a decision, for the log line and the summary header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineSummary {
    /// The engine.
    pub engine: String,
    /// What it made of the message.
    pub outcome: OutcomeKind,
    /// The action its outcome called for.
    pub action: Action,
}

/// A change to the envelope recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "edit", content = "address", rename_all = "lowercase")]
pub enum RecipientEdit {
    /// Delete this recipient, spelt as the MTA gave it.
    Delete(String),
    /// Add this recipient.
    Add(String),
}

/// A header to remove: the `index`-th (from 1) header of that name, counted
/// case-insensitively, as the milter protocol addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderRemoval {
    /// The name.
    pub name: String,
    /// Which occurrence, from 1.
    pub index: u32,
}

/// What the MTA is told about one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// The SMTP reply for reject and tempfail.
    pub reply: Option<Reply>,
    /// The reason handed to the MTA's quarantine.
    pub quarantine: Option<String>,
    /// Threats found, in engine order.
    pub threats: Vec<Found>,
    /// Engines that gave no verdict.
    pub failures: Vec<Failure>,
    /// Engines that were not asked.
    pub skipped: Vec<Skipped>,
    /// Each engine's outcome and action.
    pub engines: Vec<EngineSummary>,
    /// The highest spam score any engine reported.
    pub spam_score: Option<f64>,
    /// Rules fired, as `engine:rule`.
    pub rules: Vec<String>,
    /// Recipient edits.
    pub recipients: Vec<RecipientEdit>,
    /// Incoming headers to remove (forged copies of ours).
    pub remove_headers: Vec<HeaderRemoval>,
    /// Headers to add, in order.
    pub add_headers: Vec<(String, String)>,
    /// Verdict parts that were ignored, and why (for the log).
    pub ignored: Vec<String>,
}

/// What the policy knows about the message besides the engine results.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The envelope (its recipients are the ones per-recipient verdicts may
    /// edit).
    pub envelope: &'a Envelope,
    /// The names of the message's headers, in order.
    pub header_names: &'a [String],
    /// The scan reference id for the summary header.
    pub scan_id: &'a str,
    /// The host name for `X-Virus-Scanned`, if known.
    pub host: Option<&'a str>,
}

/// The threat names, in engine order, repeats next to each other dropped,
/// joined by ", ": what `%v` becomes and what `cordon scan` prints.
pub fn threat_names(threats: &[Found]) -> String {
    let mut names: Vec<&str> = threats.iter().map(|t| t.name.as_str()).collect();
    names.dedup();
    names.join(", ")
}

/// Bytes of an SMTP reply line (RFC 5321: 512 with the code and CRLF).
const REPLY_LINE_BYTES: usize = 512;
/// Bytes of a header value we write: RFC 5322 lines are at most 998
/// bytes, and the name and `: ` share the line.
pub const HEADER_VALUE_BYTES: usize = 900;

/// The threat names, deduplicated in order, as a list that fits `budget`.
pub(super) fn names_within(threats: &[&Found], budget: usize) -> String {
    let mut seen = std::collections::HashSet::new();
    bounded_list(
        threats
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| seen.insert(*n)),
        budget,
    )
}

/// `reply` with `%v` replaced by the threat names, bounded so that the
/// whole reply line stays within [`REPLY_LINE_BYTES`].
pub(super) fn substitute(reply: &Reply, threats: &[&Found]) -> Reply {
    // "550 5.7.1 " + text + CRLF.
    let fixed = 4 + reply.status.len() + 1 + reply.text.len() + 2;
    let uses = reply.text.matches("%v").count();
    let budget = match uses {
        0 => 0,
        n => (REPLY_LINE_BYTES.saturating_sub(fixed) + 2 * n) / n,
    };
    Reply {
        code: reply.code,
        status: reply.status.clone(),
        text: reply.text.replace("%v", &names_within(threats, budget)),
    }
}
