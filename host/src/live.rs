//! The settings a config reload replaces, as one value: the rules that
//! judge a message, recipient profiles, the host name for
//! `X-Virus-Scanned` and the bounds on each protocol session. The
//! [`crate::registry::Registry`] holds the value in force next to the
//! engines and swaps both in one step; a message is judged by the value
//! it started end-of-message with.

use std::time::Duration;

use crate::judge::Rules;
use crate::policy::bare_address;

/// The live settings.
#[derive(Debug, Clone, Default)]
pub struct LiveSettings {
    /// Policy and MIME limits.
    pub rules: Rules,
    /// Recipient profiles: (lower-cased pattern, profile). A pattern is an
    /// address or `@domain`.
    pub profiles: Vec<(String, String)>,
    /// Name for `X-Virus-Scanned`, overriding the MTA's (`j` macro).
    pub host_name: Option<String>,
    /// Bounds on each protocol session and message.
    pub session: SessionLimits,
}

impl LiveSettings {
    /// The profiles of one recipient (angle brackets and case ignored), in
    /// the order config lists them.
    pub fn profiles_of(&self, address: &str) -> Vec<String> {
        let a = bare_address(address).to_ascii_lowercase();
        let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let mut out: Vec<String> = self
            .profiles
            .iter()
            .filter(|(p, _)| match p.strip_prefix('@') {
                Some(d) => d == domain,
                None => *p == a,
            })
            .map(|(_, name)| name.clone())
            .collect();
        out.dedup();
        out
    }
}

/// What one MTA connection may make the daemon spend.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionLimits {
    /// Time to wait for the MTA's next complete command (a session idle
    /// that long, or sending a command slower than that, is closed).
    pub command_timeout: Duration,
    /// Time one connection may last in all.
    pub session_timeout: Duration,
    /// Headers per message; past it the message is not scanned (the
    /// engines get `message-too-large`).
    pub max_headers: u32,
    /// Recipients per message; the same.
    pub max_recipients: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
            max_headers: 2000,
            max_recipients: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_match_addresses_and_domains_without_brackets_or_case() {
        let live = LiveSettings {
            profiles: vec![
                ("bob@in.test".into(), "spam-drop".into()),
                ("@alt.test".into(), "spam-alternate".into()),
                ("@alt.test".into(), "spam-alternate".into()),
            ],
            ..LiveSettings::default()
        };
        assert_eq!(live.profiles_of("<Bob@IN.test>"), ["spam-drop"]);
        assert_eq!(live.profiles_of("carol@alt.test"), ["spam-alternate"]);
        assert!(live.profiles_of("dave@in.test").is_empty());
        assert!(live.profiles_of("x@sub.alt.test").is_empty());
    }
}
