//! The configuration: read from TOML ([`schema`]), validated with errors
//! that name the file and the dotted key, and turned into the typed values
//! each layer takes: the registry's [`Setup`] (engines, pool, verdict
//! cache, live settings), the milter's, control's and watcher's settings.
//! The layers below never read config; config builds what they take.
//!
//! Config is strict: an unknown key is an error naming the key and the file,
//! and every value is checked once here, so the rest of the host works with
//! values it can trust. Paths in a config file are relative to that file.

mod daemon;
mod engines;
mod rules;
pub mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::judge::Rules;
use crate::live::LiveSettings;
use crate::mime::MimeLimits;
use crate::registry::Setup;
use crate::verdict_cache::VerdictCacheLimits;
use engines::{MAX_TIMEOUT_MS, MIB, range};
pub use schema::Config;
use schema::{
    CacheConfig, ControlConfig, DnsConfig, EngineConfig, HeadersConfig, LimitsConfig, MilterConfig,
    PoolConfig, ReloadConfig, RulesConfig, StoreConfig,
};

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config file {path}: key `{key}`: {reason}")]
    Invalid {
        /// The file (or `<command line>`).
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `$XDG_CACHE_HOME/cordon`, else `$HOME/.cache/cordon`; `None` when
/// neither is set. Never a shared directory such as the system temporary
/// directory: native code is loaded from the cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("cordon"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(h).join(".cache").join("cordon"));
    }
    None
}

/// The default directory for state cordon keeps (the embedded store):
/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
/// `$XDG_STATE_HOME/cordon`, else `~/.local/state/cordon`.
pub fn default_state_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("STATE_DIRECTORY") {
        // systemd may list several, separated by colons: the first.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return Some(PathBuf::from(first));
    }
    if let Some(x) = var("XDG_STATE_HOME") {
        return Some(PathBuf::from(x).join("cordon"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".local/state/cordon"))
}

/// A config after validation: each layer's typed values.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// Where the config came from (for messages).
    pub source: PathBuf,
    /// The engines, pool, verdict cache and live settings.
    pub registry: Setup,
    /// The milter listeners.
    pub milter: crate::milter::Settings,
    /// The control socket and HTTP listener.
    pub control: crate::control::Settings,
    /// Reload watching.
    pub reload: crate::watch::Settings,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)?.validate(path)
    }

    /// Parses TOML text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// A config with one engine per component file and default limits, as
    /// `cordon scan --engine a.wasm --engine b.wasm` builds it.
    pub fn from_components(components: &[PathBuf]) -> Config {
        let mut engines = BTreeMap::new();
        for (i, path) in components.iter().enumerate() {
            // An engine's name takes letters, digits, '-' and '_': a file
            // named `vendor-engine-1.2.wasm` is the engine `vendor-engine-1_2`.
            let stem: String = path
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                })
                .filter(|s: &String| !s.is_empty())
                .unwrap_or_else(|| format!("engine{i}"));
            let mut name = stem.clone();
            let mut n = 2;
            while engines.contains_key(&name) {
                name = format!("{stem}{n}");
                n += 1;
            }
            engines.insert(
                name,
                EngineConfig {
                    component: path.clone(),
                    enabled: true,
                    definitions: None,
                    settings: BTreeMap::new(),
                    capabilities: Vec::new(),
                    limits: LimitsConfig::default(),
                    on_detect: None,
                    on_error: None,
                    reject: None,
                    tempfail: None,
                    skip: None,
                    self_test: Vec::new(),
                    cache: true,
                },
            );
        }
        Config {
            cache_dir: None,
            cache_dir_max_mib: schema::default_cache_dir_max_mib(),
            pool: PoolConfig::default(),
            mime: MimeLimits::default(),
            engines,
            policy: RulesConfig::default(),
            headers: HeadersConfig::default(),
            milter: MilterConfig::default(),
            profiles: BTreeMap::new(),
            cache: CacheConfig::default(),
            control: ControlConfig::default(),
            reload: ReloadConfig::default(),
            dns: DnsConfig::default(),
            store: StoreConfig::default(),
        }
    }

    /// Checks every value; `path` is the config file, against which relative
    /// paths are resolved. The result holds each layer's typed values.
    pub fn validate(self, path: &Path) -> Result<ValidConfig, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(""));
        let (engines, engine_rules) = engines::engine_specs(path, self.engines)?;
        let pool_instances = engines::pool_instances(path, &self.pool, &engines)?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            reason,
        };
        range(self.mime.max_parts, 1, 100_000).map_err(|r| invalid("mime.max_parts", r))?;
        range(self.mime.max_depth, 1, crate::mime::MAX_DEPTH_CEILING)
            .map_err(|r| invalid("mime.max_depth", r))?;
        range(self.mime.max_decoded_bytes, 1, 16 * 1024 * MIB)
            .map_err(|r| invalid("mime.max_decoded_bytes", r))?;
        range(self.mime.max_decode_ms, 1, MAX_TIMEOUT_MS)
            .map_err(|r| invalid("mime.max_decode_ms", r))?;
        range(self.cache.max_entries, 0, 10_000_000)
            .map_err(|r| invalid("cache.max_entries", r))?;
        range(self.cache.max_bytes, 0, 64 * 1024 * MIB as usize)
            .map_err(|r| invalid("cache.max_bytes", r))?;
        if !self.headers.spam_threshold.is_finite() {
            return Err(invalid(
                "headers.spam_threshold",
                format!("{} is not a finite number", self.headers.spam_threshold),
            ));
        }
        let policy = rules::build_policy(path, &self.policy, &engine_rules, &self.headers)?;
        let (milter, host_name, session) = daemon::milter_settings(path, &self.milter)?;
        let control = daemon::control_settings(path, &self.control)?;
        let reload = daemon::reload_settings(path, &self.reload)?;
        let dns = daemon::dns_settings(path, &self.dns)?;
        let store = daemon::store_settings(path, &self.store)?;
        let profiles = rules::profiles(path, &self.profiles)?;
        let cache_dir = match self.cache_dir {
            Some(d) if d.is_absolute() => d,
            Some(d) => base.join(d),
            None => default_cache_dir().ok_or_else(|| {
                invalid(
                    "cache_dir",
                    "not set, and neither XDG_CACHE_HOME nor HOME is: name a directory of the user running cordon".into(),
                )
            })?,
        };
        range(self.cache_dir_max_mib, 0, 1 << 24).map_err(|r| invalid("cache_dir_max_mib", r))?;
        Ok(ValidConfig {
            source: path.to_path_buf(),
            registry: Setup {
                cache_dir,
                max_cache_bytes: self.cache_dir_max_mib * MIB,
                pool_instances,
                engines,
                dns,
                store,
                verdict_cache: VerdictCacheLimits {
                    max_entries: self.cache.max_entries,
                    max_bytes: self.cache.max_bytes,
                },
                live: LiveSettings {
                    rules: Rules {
                        policy,
                        mime: self.mime,
                    },
                    profiles,
                    host_name,
                    session,
                },
            },
            milter,
            control,
            reload,
        })
    }
}
