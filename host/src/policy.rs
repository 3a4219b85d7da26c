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

use crate::text::{bounded_list, printable};
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::bindings::{
    Envelope, IpAddress, Outcome, RecipientAction, ThreatKind, UnscannableReason,
};
use crate::engine::{EngineOutcome, FaultKind};
use crate::scan::EngineResult;

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
    fn action(self) -> Action {
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

/// The error kinds `on_error` distinguishes, in config order.
pub const ERROR_KINDS: [&str; 7] = [
    "timeout",
    "out-of-memory",
    "trap",
    "bad-output",
    "overloaded",
    "message-too-large",
    "unscannable",
];

/// On-error actions by fault kind (and `unscannable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnError {
    /// By kind, in [`ERROR_KINDS`] order.
    pub by_kind: [ErrorAction; 7],
}

impl OnError {
    /// The same action for every kind.
    pub fn all(a: ErrorAction) -> Self {
        Self { by_kind: [a; 7] }
    }
    fn fault(&self, kind: FaultKind) -> ErrorAction {
        self.by_kind[match kind {
            FaultKind::Timeout => 0,
            FaultKind::OutOfMemory => 1,
            FaultKind::Trap => 2,
            FaultKind::BadOutput => 3,
            FaultKind::Overloaded => 4,
            FaultKind::MessageTooLarge => 5,
        }]
    }
    fn unscannable(&self) -> ErrorAction {
        self.by_kind[6]
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

/// When an engine is not asked about a message. A rule set matches when any
/// one of its conditions holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkipRules {
    /// The SMTP client's address is in one of these networks.
    pub client_networks: Vec<ipnet::IpNet>,
    /// The sender authenticated (SMTP AUTH).
    pub authenticated: bool,
    /// The envelope sender's domain is one of these (`.example.com` also
    /// matches subdomains).
    pub sender_domains: Vec<String>,
    /// Every envelope recipient's domain is one of these.
    pub recipient_domains: Vec<String>,
    /// The message is larger than this many bytes.
    pub larger_than_bytes: Option<u64>,
}

impl SkipRules {
    /// Why `envelope` (of a message of `size` bytes) is skipped, or `None`.
    pub fn reason(&self, envelope: &Envelope, size: u64) -> Option<&'static str> {
        if let Some(ip) = envelope.client_address.as_ref().map(ip_addr)
            && self.client_networks.iter().any(|n| n.contains(&ip))
        {
            return Some("client-network");
        }
        if self.authenticated && envelope.authenticated_user.is_some() {
            return Some("authenticated");
        }
        if let Some(d) = domain_of(&envelope.mail_from)
            && self.sender_domains.iter().any(|p| domain_matches(p, &d))
        {
            return Some("sender-domain");
        }
        if !self.recipient_domains.is_empty()
            && !envelope.recipients.is_empty()
            && envelope.recipients.iter().all(|r| {
                domain_of(&r.address)
                    .is_some_and(|d| self.recipient_domains.iter().any(|p| domain_matches(p, &d)))
            })
        {
            return Some("recipient-domain");
        }
        if self.larger_than_bytes.is_some_and(|max| size > max) {
            return Some("size");
        }
        None
    }
}

/// The WIT address as a std address.
pub fn ip_addr(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
    }
}

/// An address without angle brackets and surrounding space.
pub fn bare_address(a: &str) -> &str {
    let a = a.trim();
    a.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a)
}

/// The lower-cased domain of an address, if it has one.
pub fn domain_of(address: &str) -> Option<String> {
    let a = bare_address(address);
    let (_, d) = a.rsplit_once('@')?;
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

/// `pattern` (lower case) matches `domain` exactly, or, when it starts with
/// a dot, matches any subdomain.
fn domain_matches(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix('.') {
        Some(suffix) => domain
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.')),
        None => pattern == domain,
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
    pub fn skip_reason(&self, envelope: &Envelope, size: u64) -> Option<&'static str> {
        self.skip.iter().find_map(|s| s.reason(envelope, size))
    }
}

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
    fn engine_header_allowed(&self, name: &str) -> bool {
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
    /// What the engine's rules made of it.
    pub action: ErrorAction,
}

/// An engine that was not asked, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The engine.
    pub engine: String,
    /// The skip rule that matched: `client-network`, `authenticated`,
    /// `sender-domain`, `recipient-domain`, `size`.
    pub reason: &'static str,
}

/// One engine's part in a decision, for the log line and the summary header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineSummary {
    /// The engine.
    pub engine: String,
    /// `clean`, `detected`, `unscannable:<reason>`, a fault kind, or
    /// `skipped:<reason>`.
    pub outcome: String,
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

/// Bytes of an SMTP reply line (RFC 5321: 512 with the code and CRLF).
const REPLY_LINE_BYTES: usize = 512;
/// Bytes of a header value we write: RFC 5322 lines are at most 998
/// bytes, and the name and `: ` share the line.
pub const HEADER_VALUE_BYTES: usize = 900;

/// The threat names, deduplicated in order, as a list that fits `budget`.
fn names_within(threats: &[&Found], budget: usize) -> String {
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
fn substitute(reply: &Reply, threats: &[&Found]) -> Reply {
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

/// Per-recipient severity: drop > alternate > deliver.
fn recipient_rank(a: &RecipientAction) -> u8 {
    match a {
        RecipientAction::Deliver => 0,
        RecipientAction::Alternate(_) => 1,
        RecipientAction::Drop => 2,
    }
}

/// An alternate location usable as a recipient address.
fn valid_location(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 254
        && l.contains('@')
        && l.chars()
            .all(|c| c.is_ascii_graphic() && !"<>()[],;:\"\\".contains(c))
}

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
    // Per envelope recipient: the most severe verdict and its rules (in
    // order, each once). Lookups are hashed: an engine may send a thousand
    // recipient verdicts with hundreds of rules each, and none of this may
    // grow faster than what it reads.
    let mut per_rcpt: Vec<(RecipientAction, Vec<String>)> = ctx
        .envelope
        .recipients
        .iter()
        .map(|_| (RecipientAction::Deliver, Vec::new()))
        .collect();
    let mut rcpt_rule_seen: Vec<std::collections::HashSet<String>> =
        vec![Default::default(); per_rcpt.len()];
    let mut rcpt_index: std::collections::HashMap<String, usize> = Default::default();
    for (i, e) in ctx.envelope.recipients.iter().enumerate() {
        rcpt_index
            .entry(bare_address(&e.address).to_ascii_lowercase())
            .or_insert(i);
    }
    let mut ignored_verdicts = 0usize;
    let mut spam_rules: Vec<String> = Vec::new();
    let mut spam_detected = false;
    let mut proposed: Vec<(String, String)> = Vec::new();
    // (engine index, action) to pick replies from.
    let mut actions: Vec<Action> = Vec::with_capacity(results.len());

    for r in results {
        let engine = r.engine.to_string();
        let rules = policy.rules(&engine);
        let (action, outcome) = match &r.outcome {
            EngineOutcome::Verdict(v) => {
                let judged = match &v.outcome {
                    Outcome::Clean => (Action::Accept, "clean".to_string()),
                    Outcome::Detected(ts) => {
                        let mut a = Action::Accept;
                        for t in ts {
                            a = a.max(rules.on_detect.get(t.kind).action());
                            spam_detected |= t.kind == ThreatKind::Spam;
                            d.threats.push(Found {
                                engine: engine.clone(),
                                name: t.name.clone(),
                                kind: kind_name(t.kind),
                                part: t.part.clone(),
                            });
                        }
                        (a, "detected".to_string())
                    }
                    Outcome::Unscannable(reason) => {
                        let kind = format!("unscannable:{}", reason_name(*reason));
                        let ea = rules.on_error.unscannable();
                        d.failures.push(Failure {
                            engine: engine.clone(),
                            kind: kind.clone(),
                            detail: "the engine could not scan the message".into(),
                            action: ea,
                        });
                        (error_action(ea), kind)
                    }
                };
                if let Some(s) = v.spam_score.filter(|s| s.is_finite()) {
                    d.spam_score = Some(d.spam_score.map_or(s, |m| m.max(s)));
                    spam_rules.extend(v.rules.iter().cloned());
                }
                d.rules
                    .extend(v.rules.iter().map(|rule| format!("{engine}:{rule}")));
                for rv in &v.recipients {
                    let want = bare_address(&rv.address).to_ascii_lowercase();
                    match rcpt_index.get(&want).copied() {
                        Some(i) => {
                            if recipient_rank(&rv.action) > recipient_rank(&per_rcpt[i].0) {
                                per_rcpt[i].0 = rv.action.clone();
                            }
                            for rule in &rv.rules {
                                let rule = format!("{engine}:{rule}");
                                if rcpt_rule_seen[i].insert(rule.clone()) {
                                    per_rcpt[i].1.push(rule);
                                }
                            }
                        }
                        None if ignored_verdicts < MAX_IGNORED_NOTES => {
                            ignored_verdicts += 1;
                            d.ignored.push(format!(
                                "{engine}: verdict for {:?}, not a recipient of this message",
                                printable(&rv.address)
                            ));
                        }
                        None => ignored_verdicts += 1,
                    }
                }
                proposed.extend(v.headers.iter().map(|h| (h.name.clone(), h.value.clone())));
                judged
            }
            EngineOutcome::Fault(f) => {
                let ea = rules.on_error.fault(f.kind);
                d.failures.push(Failure {
                    engine: engine.clone(),
                    kind: f.kind.as_str().to_string(),
                    detail: f.detail.clone(),
                    action: ea,
                });
                (error_action(ea), f.kind.as_str().to_string())
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
            outcome: format!("skipped:{}", s.reason),
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

    if ignored_verdicts > MAX_IGNORED_NOTES {
        d.ignored.push(format!(
            "{} more recipient verdicts for addresses that are not recipients",
            ignored_verdicts - MAX_IGNORED_NOTES
        ));
    }

    // Per-recipient verdicts.
    let mut rules_seen: std::collections::HashSet<String> = d.rules.iter().cloned().collect();
    let mut alternates: Vec<(String, String)> = Vec::new();
    let mut kept = 0;
    for (rcpt, (action, rules)) in ctx.envelope.recipients.iter().zip(per_rcpt) {
        match action {
            RecipientAction::Drop => {
                d.recipients
                    .push(RecipientEdit::Delete(rcpt.address.clone()));
                continue;
            }
            RecipientAction::Alternate(location) => match policy.headers.alternate {
                AlternateMode::Replace if valid_location(&location) => {
                    d.recipients
                        .push(RecipientEdit::Delete(rcpt.address.clone()));
                    d.recipients
                        .push(RecipientEdit::Add(format!("<{location}>")));
                }
                AlternateMode::Replace => d.ignored.push(format!(
                    "alternate location {:?} for {} is not an address",
                    printable(&location),
                    rcpt.address
                )),
                AlternateMode::Header => alternates.push((
                    bare_address(&rcpt.address).to_string(),
                    bounded_list([location.as_str()], HEADER_VALUE_BYTES / 2),
                )),
            },
            RecipientAction::Deliver => {}
        }
        kept += 1;
        for rule in rules {
            if rules_seen.insert(rule.clone()) {
                d.rules.push(rule);
            }
        }
    }
    if !ctx.envelope.recipients.is_empty() && kept == 0 {
        d.action = Action::Discard;
        d.quarantine = None;
        d.recipients.clear();
        return d;
    }

    if !policy.headers.add {
        return d;
    }
    let h = &mut d.add_headers;
    let scanned: Vec<&EngineSummary> = d
        .engines
        .iter()
        .filter(|e| !e.outcome.starts_with("skipped:"))
        .collect();
    if !scanned.is_empty() {
        let version = env!("CARGO_PKG_VERSION");
        h.push((
            "X-Virus-Scanned".into(),
            match ctx.host {
                Some(host) => format!("cordon {version} at {}", printable(host)),
                None => format!("cordon {version}"),
            },
        ));
        let viruses: Vec<&Found> = d.threats.iter().filter(|t| t.kind != "spam").collect();
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
    if d.spam_score.is_some() || spam_detected {
        let score = d.spam_score.unwrap_or(0.0);
        let spam = spam_detected || score >= policy.headers.spam_threshold;
        let mut tests: Vec<&str> = spam_rules.iter().map(String::as_str).collect();
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
    for (rcpt, location) in alternates {
        h.push((
            "X-Cordon-Alternate".into(),
            format!("<{}> {location}", printable(&rcpt)),
        ));
    }
    for (name, value) in proposed {
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
    d
}

/// Notes about recipient verdicts for non-recipients kept per message; the
/// rest are counted in one more note.
const MAX_IGNORED_NOTES: usize = 10;

fn error_action(a: ErrorAction) -> Action {
    match a {
        ErrorAction::Tempfail => Action::Tempfail,
        ErrorAction::Accept => Action::Accept,
    }
}

#[cfg(test)]
mod tests;
