//! `[milter]`, `[control]`, `[reload]`, `[dns]` and `[store]` validated
//! into the daemon's listener, control, watcher, resolver and store
//! settings.

use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::engines::range;
use super::schema::{ControlConfig, DnsConfig, MilterConfig, ReloadConfig, StoreConfig};
use crate::listen::ListenAddr;
use crate::live::SessionLimits;

/// A unix socket mode written in octal (`"0660"`).
fn octal_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o777)
}

pub(super) fn control_settings(
    path: &Path,
    c: &ControlConfig,
) -> Result<crate::control::Settings, ConfigError> {
    let bad = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("control.{key}"),
        reason,
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let socket_mode = octal_mode(&c.socket_mode).ok_or_else(|| {
        bad(
            "socket_mode",
            format!("{:?} is not an octal mode like \"0600\"", c.socket_mode),
        )
    })?;
    let http = match &c.http {
        None => None,
        Some(h) => {
            let a: std::net::SocketAddr = h
                .parse()
                .map_err(|_| bad("http", format!("{h:?} is not host:port")))?;
            if !a.ip().is_loopback() {
                return Err(bad(
                    "http",
                    format!("{h:?} is not on loopback: the metrics listener has no authentication"),
                ));
            }
            Some(a)
        }
    };
    Ok(crate::control::Settings {
        socket: c.socket.as_ref().map(|s| {
            if s.is_absolute() {
                s.clone()
            } else {
                base.join(s)
            }
        }),
        socket_mode,
        http,
    })
}

/// `[milter]` validated: the listeners' settings, and the host name and
/// session limits that go into the live settings.
pub(super) fn milter_settings(
    path: &Path,
    c: &MilterConfig,
) -> Result<(crate::milter::Settings, Option<String>, SessionLimits), ConfigError> {
    let bad = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("milter.{key}"),
        reason,
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut listen = Vec::new();
    for (i, l) in c.listen.iter().enumerate() {
        let mut a: ListenAddr = l.parse().map_err(|e| bad(&format!("listen[{i}]"), e))?;
        if let ListenAddr::Unix(p) = &mut a
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        listen.push(a);
    }
    range(c.max_sessions, 1, 65_536).map_err(|r| bad("max_sessions", r))?;
    range(c.shutdown_timeout_s, 0, 3600).map_err(|r| bad("shutdown_timeout_s", r))?;
    range(c.command_timeout_s, 1, 3600).map_err(|r| bad("command_timeout_s", r))?;
    range(c.session_timeout_s, 1, 7 * 86_400).map_err(|r| bad("session_timeout_s", r))?;
    range(c.max_headers, 1, 100_000).map_err(|r| bad("max_headers", r))?;
    range(c.max_recipients, 1, 100_000).map_err(|r| bad("max_recipients", r))?;
    let socket_mode = octal_mode(&c.socket_mode).ok_or_else(|| {
        bad(
            "socket_mode",
            format!("{:?} is not an octal mode like \"0660\"", c.socket_mode),
        )
    })?;
    if let Some(h) = &c.host_name
        && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(bad("host_name", format!("{h:?} is not a host name")));
    }
    Ok((
        crate::milter::Settings {
            listen,
            socket_mode,
            max_sessions: c.max_sessions,
            shutdown_timeout: Duration::from_secs(c.shutdown_timeout_s),
        },
        c.host_name.clone(),
        SessionLimits {
            command_timeout: Duration::from_secs(c.command_timeout_s),
            session_timeout: Duration::from_secs(c.session_timeout_s),
            max_headers: c.max_headers,
            max_recipients: c.max_recipients,
        },
    ))
}

/// `[reload]` validated.
pub(super) fn reload_settings(
    path: &Path,
    c: &ReloadConfig,
) -> Result<crate::watch::Settings, ConfigError> {
    range(c.interval_ms, 10, 3_600_000).map_err(|reason| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: "reload.interval_ms".into(),
        reason,
    })?;
    Ok(crate::watch::Settings {
        enabled: c.watch,
        interval: Duration::from_millis(c.interval_ms),
    })
}

/// `[dns]` validated: each server an address with an optional port (53).
pub(super) fn dns_settings(
    path: &Path,
    c: &DnsConfig,
) -> Result<crate::engine::capabilities::dns::DnsSettings, ConfigError> {
    let bad = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("dns.{key}"),
        reason,
    };
    range(c.timeout_ms, 1, super::MAX_TIMEOUT_MS).map_err(|r| bad("timeout_ms", r))?;
    range(c.max_queries_per_scan, 0, 10_000).map_err(|r| bad("max_queries_per_scan", r))?;
    range(c.cache_entries, 0, 10_000_000).map_err(|r| bad("cache_entries", r))?;
    if c.servers.len() > 16 {
        return Err(bad(
            "servers",
            format!("{} servers; at most 16", c.servers.len()),
        ));
    }
    let servers = c
        .servers
        .iter()
        .map(|text| {
            let addr = text
                .parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    text.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    bad(
                        "servers",
                        format!(
                            "{:?} is not an address (`127.0.0.1`, `127.0.0.1:53`, `[::1]:53`)",
                            crate::text::escape(text, 128)
                        ),
                    )
                })?;
            if addr.port() == 0 {
                return Err(bad("servers", format!("{addr}: port 0")));
            }
            Ok(addr)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::engine::capabilities::dns::DnsSettings {
        servers,
        query_timeout: Duration::from_millis(c.timeout_ms),
        max_queries_per_scan: c.max_queries_per_scan,
        cache_entries: c.cache_entries,
    })
}

/// `[store]` validated: the backend and what it needs, and the quotas.
pub(super) fn store_settings(
    path: &Path,
    c: &StoreConfig,
) -> Result<crate::engine::capabilities::store::StoreSettings, ConfigError> {
    use crate::engine::capabilities::store::{Backend, StoreSettings};
    let bad = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("store.{key}"),
        reason,
    };
    range(c.max_ops_per_scan, 0, 1_000_000).map_err(|r| bad("max_ops_per_scan", r))?;
    range(c.max_bytes_per_scan, 0, 1 << 30).map_err(|r| bad("max_bytes_per_scan", r))?;
    range(c.max_key_bytes, 1, 64 << 10).map_err(|r| bad("max_key_bytes", r))?;
    range(c.max_value_bytes, 1, 64 << 20).map_err(|r| bad("max_value_bytes", r))?;
    range(c.timeout_ms, 1, super::MAX_TIMEOUT_MS).map_err(|r| bad("timeout_ms", r))?;
    let backend = match c.backend.as_str() {
        "embedded" => {
            if c.url.is_some() {
                return Err(bad("url", "is for backend = \"redis\"".into()));
            }
            let base = path.parent().unwrap_or(Path::new(""));
            let file = match &c.path {
                Some(p) if p.is_absolute() => p.clone(),
                Some(p) => base.join(p),
                None => super::default_state_dir()
                    .ok_or_else(|| {
                        bad(
                            "path",
                            "not set, and none of STATE_DIRECTORY, XDG_STATE_HOME and HOME is"
                                .into(),
                        )
                    })?
                    .join("store.redb"),
            };
            Backend::Embedded { path: file }
        }
        "redis" => {
            if c.path.is_some() {
                return Err(bad("path", "is for backend = \"embedded\"".into()));
            }
            let url = c
                .url
                .clone()
                .ok_or_else(|| bad("url", "backend = \"redis\" needs a url".into()))?;
            if !["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(bad(
                    "url",
                    format!(
                        "{:?} is not a Redis URL (redis://host:port/db, unix:///path)",
                        crate::text::escape(&url, 128)
                    ),
                ));
            }
            Backend::Redis { url }
        }
        other => {
            return Err(bad(
                "backend",
                format!(
                    "{:?}: \"embedded\" or \"redis\"",
                    crate::text::escape(other, 64)
                ),
            ));
        }
    };
    Ok(StoreSettings {
        max_ops_per_scan: c.max_ops_per_scan,
        max_bytes_per_scan: c.max_bytes_per_scan,
        max_key_bytes: c.max_key_bytes,
        max_value_bytes: c.max_value_bytes,
        timeout: Duration::from_millis(c.timeout_ms),
        ..StoreSettings::with_backend(backend)
    })
}
