//! The configuration tree, read from TOML, and its validation.
//!
//! Config is strict: an unknown key is an error naming the key and the file,
//! and every value is checked once here, so the rest of the host works with
//! values it can trust. Paths in a config file are relative to that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mime::MimeLimits;

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

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where compiled components are cached. Defaults to
    /// `$XDG_CACHE_HOME/cordon` or `~/.cache/cordon`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The instance pool shared by all engines.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Limits on MIME decomposition, for engines that want decoded parts.
    #[serde(default)]
    pub mime: MimeLimits,
    /// The engines, by name. Order of scanning does not matter: engines of one
    /// message run concurrently.
    #[serde(default)]
    pub engines: BTreeMap<String, EngineConfig>,
}

/// The pooling allocator behind every engine instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Instances alive at once across all engines. A scan that finds the pool
    /// full waits for a slot. Defaults to the sum of the engines'
    /// `max_concurrency`.
    #[serde(default)]
    pub max_instances: Option<u32>,
}

/// One engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The component file (`.wasm`).
    pub component: PathBuf,
    /// A disabled engine is loaded by `check-config` but not used to scan.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A directory of definitions the engine reads, read-only, during
    /// `init` (it sees it as `/definitions`).
    #[serde(default)]
    pub definitions: Option<PathBuf>,
    /// Settings handed to the engine's `init`, as strings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn yes() -> bool {
    true
}

/// Per-engine limits as written in config; see [`EngineLimits`] for meaning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Wall-clock time one scan call may take.
    pub timeout_ms: u64,
    /// Linear memory one instance may hold.
    pub memory_mib: u64,
    /// Messages larger than this are not handed to the engine.
    pub max_message_bytes: u64,
    /// Scans of this engine running at once; more wait.
    pub max_concurrency: u32,
    /// Threats in one verdict.
    pub max_threats: u32,
    /// Rules fired in one verdict.
    pub max_rules: u32,
    /// Headers proposed in one verdict.
    pub max_headers: u32,
    /// Per-recipient verdicts in one verdict.
    pub max_recipient_verdicts: u32,
    /// Bytes in any one string of a verdict.
    pub max_string_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = EngineLimits::default();
        Self {
            timeout_ms: l.timeout.as_millis() as u64,
            memory_mib: l.memory_bytes / MIB,
            max_message_bytes: l.max_message_bytes,
            max_concurrency: l.max_concurrency,
            max_threats: l.verdict.max_threats,
            max_rules: l.verdict.max_rules,
            max_headers: l.verdict.max_headers,
            max_recipient_verdicts: l.verdict.max_recipient_verdicts,
            max_string_bytes: l.verdict.max_string_bytes,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Validated per-engine limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineLimits {
    /// Wall-clock time one call may take; enforced by epoch interruption.
    pub timeout: Duration,
    /// Bytes of linear memory (all memories together) one instance may hold.
    pub memory_bytes: u64,
    /// Larger messages are not handed to the engine: the outcome is a
    /// `message-too-large` fault.
    pub max_message_bytes: u64,
    /// Scans running at once.
    pub max_concurrency: u32,
    /// Bounds on the verdict.
    pub verdict: VerdictLimits,
}

/// Bounds on what one verdict may carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictLimits {
    /// Threats.
    pub max_threats: u32,
    /// Rules fired.
    pub max_rules: u32,
    /// Proposed headers.
    pub max_headers: u32,
    /// Per-recipient verdicts.
    pub max_recipient_verdicts: u32,
    /// Bytes in any one string.
    pub max_string_bytes: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            memory_bytes: 256 * MIB,
            max_message_bytes: 50 * MIB,
            max_concurrency: 4,
            verdict: VerdictLimits {
                max_threats: 64,
                max_rules: 256,
                max_headers: 16,
                max_recipient_verdicts: 1000,
                max_string_bytes: 1024,
            },
        }
    }
}

/// Hard ceilings: values past these are config mistakes, not choices.
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
const MAX_MEMORY_MIB: u64 = 4095;

impl LimitsConfig {
    /// Checks ranges and turns the raw values into [`EngineLimits`].
    pub fn validate(&self, path: &Path, engine: &str) -> Result<EngineLimits, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("engines.{engine}.limits.{key}"),
            reason,
        };
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad(
                "timeout_ms",
                format!("{} is out of range 1..={MAX_TIMEOUT_MS}", self.timeout_ms),
            ));
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(bad(
                "memory_mib",
                format!("{} is out of range 1..={MAX_MEMORY_MIB}", self.memory_mib),
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(bad("max_message_bytes", "must be at least 1".into()));
        }
        if self.max_concurrency == 0 || self.max_concurrency > 1024 {
            return Err(bad(
                "max_concurrency",
                format!("{} is out of range 1..=1024", self.max_concurrency),
            ));
        }
        if self.max_string_bytes < 16 {
            return Err(bad("max_string_bytes", "must be at least 16".into()));
        }
        Ok(EngineLimits {
            timeout: Duration::from_millis(self.timeout_ms),
            memory_bytes: self.memory_mib * MIB,
            max_message_bytes: self.max_message_bytes,
            max_concurrency: self.max_concurrency,
            verdict: VerdictLimits {
                max_threats: self.max_threats,
                max_rules: self.max_rules,
                max_headers: self.max_headers,
                max_recipient_verdicts: self.max_recipient_verdicts,
                max_string_bytes: self.max_string_bytes,
            },
        })
    }
}

/// One engine after validation: everything the runtime needs to load it.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// The engine's name in config.
    pub name: String,
    /// The component file, absolute or relative to the working directory.
    pub component: PathBuf,
    /// Whether it scans.
    pub enabled: bool,
    /// The definitions directory, if any.
    pub definitions: Option<PathBuf>,
    /// Settings for `init`.
    pub settings: BTreeMap<String, String>,
    /// Limits.
    pub limits: EngineLimits,
}

/// A config after validation.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// Where the config came from (for messages).
    pub source: PathBuf,
    /// Compiled-component cache.
    pub cache_dir: PathBuf,
    /// Pool size: instances alive at once.
    pub pool_instances: u32,
    /// MIME decomposition limits.
    pub mime: MimeLimits,
    /// Engines, in name order.
    pub engines: Vec<EngineSpec>,
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
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
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
                    limits: LimitsConfig::default(),
                },
            );
        }
        Config {
            cache_dir: None,
            pool: PoolConfig::default(),
            mime: MimeLimits::default(),
            engines,
        }
    }

    /// Checks every value; `path` is the config file, against which relative
    /// component paths are resolved.
    pub fn validate(self, path: &Path) -> Result<ValidConfig, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(""));
        let mut engines = Vec::with_capacity(self.engines.len());
        for (name, e) in self.engines {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("engines.{name}"),
                    reason: "engine names use only letters, digits, '-' and '_'".into(),
                });
            }
            let limits = e.limits.validate(path, &name)?;
            let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
            let component = resolve(e.component);
            let definitions = e.definitions.map(resolve);
            if let Some(d) = &definitions
                && !d.is_dir()
            {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("engines.{name}.definitions"),
                    reason: format!("{} is not a directory", d.display()),
                });
            }
            engines.push(EngineSpec {
                name,
                component,
                definitions,
                enabled: e.enabled,
                settings: e.settings,
                limits,
            });
        }
        if !engines.iter().any(|e| e.enabled) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "engines".into(),
                reason: "no enabled engine: configure at least one [engines.NAME]".into(),
            });
        }
        let demand: u32 = engines
            .iter()
            .filter(|e| e.enabled)
            .map(|e| e.limits.max_concurrency)
            .sum();
        let pool_instances = match self.pool.max_instances {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "pool.max_instances".into(),
                    reason: "must be at least 1".into(),
                });
            }
            Some(n) => n,
            None => demand.max(1),
        };
        let cache_dir = match self.cache_dir {
            Some(d) if d.is_absolute() => d,
            Some(d) => base.join(d),
            None => default_cache_dir(),
        };
        Ok(ValidConfig {
            source: path.to_path_buf(),
            cache_dir,
            pool_instances,
            mime: self.mime,
            engines,
        })
    }
}

/// `$XDG_CACHE_HOME/cordon`, else `$HOME/.cache/cordon`, else a directory
/// under the system temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("cordon");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("cordon");
    }
    std::env::temp_dir().join("cordon-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        Config::parse(text, Path::new("/etc/cordon/cordon.toml"))?
            .validate(Path::new("/etc/cordon/cordon.toml"))
    }

    #[test]
    fn minimal_engine_gets_defaults_and_resolves_relative_path() {
        let c = parse("[engines.testsig]\ncomponent = \"engines/testsig.wasm\"\n").unwrap();
        assert_eq!(c.engines.len(), 1);
        let e = &c.engines[0];
        assert_eq!(e.component, Path::new("/etc/cordon/engines/testsig.wasm"));
        assert_eq!(e.limits, EngineLimits::default());
        assert_eq!(c.pool_instances, EngineLimits::default().max_concurrency);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\ntimeout = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/cordon/cordon.toml"), "{msg}");
        assert!(msg.contains("unknown field `timeout`"), "{msg}");
    }

    #[test]
    fn out_of_range_limit_names_dotted_key() {
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\nlimits.timeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.t.limits.timeout_ms"), "{err}");
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\nlimits.memory_mib = 9999\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.t.limits.memory_mib"), "{err}");
    }

    #[test]
    fn no_enabled_engine_is_an_error() {
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\nenabled = false\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no enabled engine"), "{err}");
        assert!(parse("").is_err());
    }

    #[test]
    fn bad_engine_name_is_rejected() {
        let err = parse("[engines.\"a b\"]\ncomponent = \"t.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.a b"), "{err}");
    }

    #[test]
    fn pool_defaults_to_sum_of_concurrency() {
        let c = parse(
            "[engines.a]\ncomponent = \"a.wasm\"\nlimits.max_concurrency = 3\n\
             [engines.b]\ncomponent = \"b.wasm\"\nlimits.max_concurrency = 5\n",
        )
        .unwrap();
        assert_eq!(c.pool_instances, 8);
        let c = parse("pool.max_instances = 2\n[engines.a]\ncomponent = \"a.wasm\"\n").unwrap();
        assert_eq!(c.pool_instances, 2);
    }

    #[test]
    fn engines_from_components_get_unique_names() {
        let c = Config::from_components(&[
            PathBuf::from("x/testsig.wasm"),
            PathBuf::from("y/testsig.wasm"),
        ]);
        let names: Vec<_> = c.engines.keys().cloned().collect();
        assert_eq!(names, ["testsig", "testsig2"]);
    }
}
