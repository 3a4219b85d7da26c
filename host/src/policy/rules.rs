//! The policy's rules, as config builds them: actions by threat kind and
//! by error kind, replies, skip rules and header rules per engine.

use std::collections::BTreeMap;

use serde::Serialize;

use super::headers::HeaderRules;
use super::skip::{SkipReason, SkipRules};
use crate::bindings::{Envelope, ThreatKind};
use crate::engine::FaultKind;

/// The action for the MTA, in ascending severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver.
    Accept,
    /// Ask the client to retry later (4xx).
    Tempfail,
    /// Accept and hold (the milter quarantine action).
    Quarantine,
    /// Accept and drop silently.
    Discard,
    /// Refuse (5xx).
    Reject,
}

impl Action {
    /// The name used in output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Tempfail => "tempfail",
            Action::Quarantine => "quarantine",
            Action::Discard => "discard",
            Action::Reject => "reject",
        }
    }
}

/// What to do when an engine detects a threat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectAction {
    /// Refuse with the engine's reject reply.
    Reject,
    /// Defer with the engine's tempfail reply.
    Tempfail,
    /// Accept and drop.
    Discard,
    /// Accept and hold.
    Quarantine,
    /// Deliver, with headers naming what was found.
    Tag,
}

impl DetectAction {
    /// The message action it calls for.
    pub fn action(self) -> Action {
        match self {
            DetectAction::Reject => Action::Reject,
            DetectAction::Tempfail => Action::Tempfail,
            DetectAction::Discard => Action::Discard,
            DetectAction::Quarantine => Action::Quarantine,
            DetectAction::Tag => Action::Accept,
        }
    }
}

/// What to do when an engine gives no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorAction {
    /// Defer with the engine's tempfail reply (the default: fail-closed).
    Tempfail,
    /// Go on as if the engine had said clean.
    Accept,
}

impl ErrorAction {
    /// The message action it calls for.
    pub fn action(self) -> Action {
        match self {
            ErrorAction::Tempfail => Action::Tempfail,
            ErrorAction::Accept => Action::Accept,
        }
    }
}

/// On-detection actions by threat kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDetect {
    /// By kind, in [`ThreatKind`] order: virus, malware, phishing, spam,
    /// policy, heuristic.
    pub by_kind: [DetectAction; 6],
}

impl OnDetect {
    /// The same action for every kind.
    pub fn all(a: DetectAction) -> Self {
        Self { by_kind: [a; 6] }
    }
    /// The action for `kind`.
    pub fn get(&self, kind: ThreatKind) -> DetectAction {
        self.by_kind[kind_index(kind)]
    }
}

/// Index of a kind in [`OnDetect::by_kind`].
pub fn kind_index(kind: ThreatKind) -> usize {
    match kind {
        ThreatKind::Virus => 0,
        ThreatKind::Malware => 1,
        ThreatKind::Phishing => 2,
        ThreatKind::Spam => 3,
        ThreatKind::Policy => 4,
        ThreatKind::Heuristic => 5,
    }
}

/// What `on_error` is keyed by: an engine fault, or an unscannable verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The engine gave no verdict.
    Fault(FaultKind),
    /// The engine said it could not scan the message.
    Unscannable,
}

impl ErrorKind {
    /// Every kind, in the order config lists them.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Fault(FaultKind::ALL[0]),
        ErrorKind::Fault(FaultKind::ALL[1]),
        ErrorKind::Fault(FaultKind::ALL[2]),
        ErrorKind::Fault(FaultKind::ALL[3]),
        ErrorKind::Fault(FaultKind::ALL[4]),
        ErrorKind::Fault(FaultKind::ALL[5]),
        ErrorKind::Unscannable,
    ];

    /// Its place in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        match self {
            ErrorKind::Fault(f) => f.index(),
            ErrorKind::Unscannable => FaultKind::ALL.len(),
        }
    }

    /// The name config uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Fault(f) => f.as_str(),
            ErrorKind::Unscannable => "unscannable",
        }
    }
}

/// On-error actions by [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnError {
    /// By kind, in [`ErrorKind::ALL`] order.
    pub by_kind: [ErrorAction; ErrorKind::ALL.len()],
}

impl OnError {
    /// The same action for every kind.
    pub fn all(a: ErrorAction) -> Self {
        Self {
            by_kind: [a; ErrorKind::ALL.len()],
        }
    }

    /// The action for `kind`.
    pub fn get(&self, kind: ErrorKind) -> ErrorAction {
        self.by_kind[kind.index()]
    }
}

/// An SMTP reply: code, enhanced status code, text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// Basic status code, e.g. 550.
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.1`.
    pub status: String,
    /// Human-readable text; in configured reject texts `%v` stands for the
    /// threat names.
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

impl Reply {
    /// The default reject reply, as clamav-milter words it.
    pub fn default_reject() -> Self {
        Reply {
            code: 550,
            status: "5.7.1".into(),
            text: "Message rejected: %v found".into(),
        }
    }
    /// The default tempfail reply.
    pub fn default_tempfail() -> Self {
        Reply {
            code: 451,
            status: "4.7.1".into(),
            text: "Message could not be scanned, try again later".into(),
        }
    }
}

/// One engine's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRules {
    /// Action on detection, by kind.
    pub on_detect: OnDetect,
    /// Action when no verdict, by kind.
    pub on_error: OnError,
    /// Reply for `reject`.
    pub reject: Reply,
    /// Reply for `tempfail`.
    pub tempfail: Reply,
    /// Skip rule sets (the global one, then the engine's own); the engine
    /// is skipped when any matches.
    pub skip: Vec<SkipRules>,
}

impl Default for EngineRules {
    fn default() -> Self {
        Self {
            on_detect: OnDetect::all(DetectAction::Reject),
            on_error: OnError::all(ErrorAction::Tempfail),
            reject: Reply::default_reject(),
            tempfail: Reply::default_tempfail(),
            skip: Vec::new(),
        }
    }
}

impl EngineRules {
    /// Why this engine skips the message, or `None`.
    pub fn skip_reason(&self, envelope: &Envelope, size: u64) -> Option<SkipReason> {
        self.skip.iter().find_map(|s| s.reason(envelope, size))
    }
}

/// The whole policy: rules per engine, header rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Rules for an engine not named in `engines`.
    pub default: EngineRules,
    /// Rules by engine name.
    pub engines: BTreeMap<String, EngineRules>,
    /// Headers.
    pub headers: HeaderRules,
}

impl Policy {
    /// The rules for engine `name`.
    pub fn rules(&self, name: &str) -> &EngineRules {
        self.engines.get(name).unwrap_or(&self.default)
    }
}
