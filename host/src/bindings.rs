//! The host side of the WIT world `cordon:scanner/scanner`: the `bindgen!`
//! calls. Everything the host knows about the contract's types comes from
//! here.
//!
//! The contract is versioned, and engines built against an earlier version
//! keep loading: the current package (`wit/scanner.wit`, 0.2.0) is what the
//! host's types come from; each earlier one (`wit/v0.1.0/`) is bound in a
//! module of its own for its host imports. An engine's calls are made
//! through the current types whatever version it exports: the records and
//! functions an earlier version has are the same in the current one, and
//! wasmtime checks types by structure (see [`Contract`]).

// Generated items carry the WIT doc comments; the few without them (helpers
// bindgen adds) are not part of our API surface.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "scanner-with-capabilities",
    // The capabilities wait on the network or a backend: served as async
    // host functions, so that a guest waiting on one holds no thread (the
    // fiber it runs on is suspended), and may trap a call the host cannot
    // serve at all.
    imports: {
        "cordon:scanner/dns": async | trappable,
        "cordon:scanner/store": async | trappable,
    },
});

/// The first version of the contract, `cordon:scanner@0.1.0`: its host
/// imports, for engines built against it.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "scanner",
    });
}

/// A version of the contract an engine may be built against, known by the
/// engine interface it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    /// `cordon:scanner@0.1.0`: no capabilities, no `learn`.
    V0_1,
    /// `cordon:scanner@0.2.0`.
    V0_2,
}

impl Contract {
    /// Every version the host loads, newest first.
    pub const ALL: [Contract; 2] = [Contract::V0_2, Contract::V0_1];

    /// The package version.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// The name of the engine interface a component of this version
    /// exports.
    pub fn engine_export(self) -> &'static str {
        match self {
            Contract::V0_1 => "cordon:scanner/engine@0.1.0",
            Contract::V0_2 => "cordon:scanner/engine@0.2.0",
        }
    }

    /// Whether this version has the capabilities (`dns`, `store`).
    pub fn has_capabilities(self) -> bool {
        self >= Contract::V0_2
    }

    /// Whether engines of this version export `learn`.
    pub fn has_learn(self) -> bool {
        self >= Contract::V0_2
    }
}

pub use cordon::scanner::types::{
    EngineInfo, Envelope, Header, IpAddress, LearnClass, LearnOutcome, Outcome, PartInfo,
    Recipient, RecipientAction, RecipientVerdict, Setting, Threat, ThreatKind, UnscannableReason,
    Verdict,
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

/// An IP address as the contract gives it; an IPv4-mapped IPv6 address
/// is given as the IPv4 address it maps.
pub fn ip_address(ip: std::net::IpAddr) -> IpAddress {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ip_address(std::net::IpAddr::V4(v4)),
            None => {
                let [a, b, c, d, e, f, g, h] = v6.segments();
                IpAddress::Ipv6((a, b, c, d, e, f, g, h))
            }
        },
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
