//! The host side of the WIT world `cordon:scanner/scanner`: the one
//! `bindgen!` call. Everything the host knows about the contract's types
//! comes from here.

// Generated items carry the WIT doc comments; the few without them (helpers
// bindgen adds) are not part of our API surface.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "scanner",
});

pub use cordon::scanner::types::{
    EngineInfo, Envelope, Header, IpAddress, Outcome, PartInfo, Recipient, RecipientAction,
    RecipientVerdict, Setting, Threat, ThreatKind, UnscannableReason, Verdict,
};

/// A verdict with `outcome` and nothing else: no score, rules, recipient
/// verdicts or headers.
pub fn verdict_of(outcome: Outcome) -> Verdict {
    Verdict {
        outcome,
        spam_score: None,
        rules: Vec::new(),
        recipients: Vec::new(),
        headers: Vec::new(),
    }
}

/// An envelope with nothing known.
pub fn empty_envelope() -> Envelope {
    Envelope {
        client_address: None,
        client_name: String::new(),
        helo: String::new(),
        mail_from: String::new(),
        recipients: Vec::new(),
        authenticated_user: None,
        queue_id: None,
    }
}
