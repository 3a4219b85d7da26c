//! `[policy]`, the per-engine rule overrides, `[headers]` and
//! `[profiles]` validated into the policy's typed rules.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;
use super::schema::{HeadersConfig, ReplyConfig, RulesConfig, SkipConfig};
use crate::policy::{EngineRules, HeaderRules, OnDetect, OnError, Policy, Reply, SkipRules};

pub(super) fn build_policy(
    path: &Path,
    global: &RulesConfig,
    engines: &[(String, RulesConfig)],
    headers: &HeadersConfig,
) -> Result<Policy, ConfigError> {
    let bad = |key: String, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        reason,
    };
    let base = EngineRules::default();
    let global_skip = global
        .skip
        .as_ref()
        .map(|s| skip_rules(s, "policy.skip", &bad))
        .transpose()?;
    let rules = |prefix: &str,
                 own: &RulesConfig,
                 fallback: &EngineRules|
     -> Result<EngineRules, ConfigError> {
        let mut r = fallback.clone();
        if let Some(t) = &own.on_detect {
            r.on_detect = OnDetect {
                by_kind: overlay(r.on_detect.by_kind, t.default, t.by_kind()),
            };
        }
        if let Some(t) = &own.on_error {
            r.on_error = OnError {
                by_kind: overlay(r.on_error.by_kind, t.default, t.by_kind()),
            };
        }
        if let Some(c) = &own.reject {
            r.reject = reply(c, &r.reject, b'5', &format!("{prefix}reject"), &bad)?;
        }
        if let Some(c) = &own.tempfail {
            r.tempfail = reply(c, &r.tempfail, b'4', &format!("{prefix}tempfail"), &bad)?;
        }
        Ok(r)
    };
    let mut default = rules("policy.", global, &base)?;
    default.skip = global_skip.into_iter().collect();
    let mut policy = Policy {
        default: default.clone(),
        engines: BTreeMap::new(),
        headers: HeaderRules {
            add: headers.add,
            spam_threshold: headers.spam_threshold,
            engine_headers: headers.engine_headers.clone(),
            alternate: headers.alternate,
        },
    };
    if !headers.spam_threshold.is_finite() {
        return Err(bad(
            "headers.spam_threshold".into(),
            "must be a finite number".into(),
        ));
    }
    for (i, h) in headers.engine_headers.iter().enumerate() {
        let name = h.strip_suffix('*').unwrap_or(h);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b':' && b != b'*')
        {
            return Err(bad(
                format!("headers.engine_headers[{i}]"),
                format!("{h:?} is not a header name (a trailing * is allowed)"),
            ));
        }
    }
    for (name, own) in engines {
        let prefix = format!("engines.{name}.");
        let mut r = rules(&prefix, own, &default)?;
        if let Some(s) = &own.skip {
            r.skip.push(skip_rules(s, &format!("{prefix}skip"), &bad)?);
        }
        policy.engines.insert(name.clone(), r);
    }
    // Keep the kinds list and the table in step.
    Ok(policy)
}

/// An action table over `base`: `default`, when given, replaces every kind,
/// then each kind given replaces its own.
fn overlay<A: Copy, const N: usize>(
    base: [A; N],
    default: Option<A>,
    by_kind: [Option<A>; N],
) -> [A; N] {
    let mut out = default.map_or(base, |d| [d; N]);
    for (slot, a) in out.iter_mut().zip(by_kind) {
        if let Some(a) = a {
            *slot = a;
        }
    }
    out
}

fn reply(
    c: &ReplyConfig,
    fallback: &Reply,
    class: u8,
    key: &str,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<Reply, ConfigError> {
    let r = Reply {
        code: c
            .code
            .unwrap_or(if fallback.code / 100 == u16::from(class - b'0') {
                fallback.code
            } else {
                u16::from(class - b'0') * 100 + 50
            }),
        status: c.status.clone().unwrap_or_else(|| fallback.status.clone()),
        text: c.text.clone().unwrap_or_else(|| fallback.text.clone()),
    };
    let code = r.code.to_string();
    if code.len() != 3 || code.as_bytes()[0] != class {
        return Err(bad(
            format!("{key}.code"),
            format!("{} is not a {}xx code", r.code, class as char),
        ));
    }
    let parts: Vec<&str> = r.status.split('.').collect();
    if parts.len() != 3
        || parts[0].as_bytes() != [class]
        || !parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(
            format!("{key}.status"),
            format!(
                "{:?} is not an enhanced status code {}.x.y",
                r.status, class as char
            ),
        ));
    }
    if r.text.is_empty() || !r.text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(bad(
            format!("{key}.text"),
            "must be non-empty printable ASCII on one line".into(),
        ));
    }
    // The reply line (code, status, text, CRLF) has 512 bytes (RFC 5321);
    // keep room for what %v brings in.
    if r.text.len() > 400 {
        return Err(bad(
            format!("{key}.text"),
            format!(
                "{} bytes, over the 400 an SMTP reply has room for",
                r.text.len()
            ),
        ));
    }
    Ok(r)
}

fn skip_rules(
    c: &SkipConfig,
    key: &str,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<SkipRules, ConfigError> {
    let mut nets = Vec::new();
    for (i, n) in c.client_networks.iter().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                bad(
                    format!("{key}.client_networks[{i}]"),
                    format!("{n:?} is not a network (10.0.0.0/8) or address"),
                )
            })?;
        nets.push(net);
    }
    let domains = |list: &[String], field: &str| -> Result<Vec<String>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, d)| {
                let bare = d.strip_prefix('.').unwrap_or(d);
                if bare.is_empty() || bare.contains(['@', ' ', '*']) {
                    Err(bad(
                        format!("{key}.{field}[{i}]"),
                        format!("{d:?} is not a domain (.example.com matches subdomains)"),
                    ))
                } else {
                    Ok(d.to_ascii_lowercase())
                }
            })
            .collect()
    };
    Ok(SkipRules {
        client_networks: nets,
        authenticated: c.authenticated,
        sender_domains: domains(&c.sender_domains, "sender_domains")?,
        recipient_domains: domains(&c.recipient_domains, "recipient_domains")?,
        larger_than_bytes: c.larger_than_bytes,
    })
}

/// Validates `[profiles]`: (lower-cased pattern, profile) pairs.
pub(super) fn profiles(
    path: &Path,
    configured: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut profiles = Vec::new();
    for (name, patterns) in configured {
        for p in patterns {
            let ok = match p.split_once('@') {
                Some((local, domain)) => {
                    !domain.is_empty()
                        && !domain.contains('@')
                        && (local.is_empty() || !local.contains(char::is_whitespace))
                }
                None => false,
            };
            if !ok {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("profiles.{name}"),
                    reason: format!("{p:?} is neither user@domain nor @domain"),
                });
            }
            profiles.push((p.to_ascii_lowercase(), name.clone()));
        }
    }
    Ok(profiles)
}
