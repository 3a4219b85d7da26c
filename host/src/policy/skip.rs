//! Skip rules: when an engine is not asked about a message, and the
//! address helpers they (and the milter) use.

use std::net::IpAddr;

use serde::Serialize;

use crate::bindings::{Envelope, IpAddress};

/// Why an engine was not asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The client is in a skipped network.
    ClientNetwork,
    /// The sender authenticated.
    Authenticated,
    /// The sender's domain is skipped.
    SenderDomain,
    /// Every recipient's domain is skipped.
    RecipientDomain,
    /// The message is over the size rule.
    Size,
}

impl SkipReason {
    /// The name used in output and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ClientNetwork => "client-network",
            SkipReason::Authenticated => "authenticated",
            SkipReason::SenderDomain => "sender-domain",
            SkipReason::RecipientDomain => "recipient-domain",
            SkipReason::Size => "size",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    pub fn reason(&self, envelope: &Envelope, size: u64) -> Option<SkipReason> {
        if let Some(ip) = envelope.client_address.as_ref().map(ip_addr)
            && self.client_networks.iter().any(|n| n.contains(&ip))
        {
            return Some(SkipReason::ClientNetwork);
        }
        if self.authenticated && envelope.authenticated_user.is_some() {
            return Some(SkipReason::Authenticated);
        }
        if let Some(d) = domain_of(&envelope.mail_from)
            && self.sender_domains.iter().any(|p| domain_matches(p, &d))
        {
            return Some(SkipReason::SenderDomain);
        }
        if !self.recipient_domains.is_empty()
            && !envelope.recipients.is_empty()
            && envelope.recipients.iter().all(|r| {
                domain_of(&r.address)
                    .is_some_and(|d| self.recipient_domains.iter().any(|p| domain_matches(p, &d)))
            })
        {
            return Some(SkipReason::RecipientDomain);
        }
        if self.larger_than_bytes.is_some_and(|max| size > max) {
            return Some(SkipReason::Size);
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

/// An SMTP path as an address: without surrounding space, angle brackets
/// and source route (`<@relay.example:user@example.com>` is
/// `user@example.com`); the null sender `<>` is empty.
pub fn bare_address(a: &str) -> &str {
    let a = a.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a);
    match a.strip_prefix('@') {
        Some(route) => route.split_once(':').map_or(a, |(_, mailbox)| mailbox),
        None => a,
    }
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
