//! `[engines.NAME]` and `[pool]` validated: limits in range, paths
//! resolved, self-test samples read, the pool sized; the result is the
//! [`EngineSpec`]s the runtime loads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::schema::{EngineConfig, LimitsConfig, PoolConfig, RulesConfig};
use crate::engine::{EngineLimits, EngineSpec, Expect, SelfTest, VerdictLimits};

pub(super) const MIB: u64 = 1024 * 1024;

/// Checks that `v` is in `lo..=hi`; the error says the range.
pub(super) fn range<T: PartialOrd + std::fmt::Display>(v: T, lo: T, hi: T) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("{v} is out of range {lo}..={hi}"));
    }
    Ok(())
}

/// Hard ceilings: values past these are config mistakes, not choices.
pub(super) const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
const MAX_MEMORY_MIB: u64 = 4095;
/// The pool reserves address space for every slot up front.
const MAX_POOL_INSTANCES: u32 = 1024;
/// Address space the pool may reserve: well inside the 128 TiB a 64-bit
/// Linux process has.
const MAX_POOL_RESERVATION: u64 = 32 << 40;

impl LimitsConfig {
    /// Checks ranges and turns the raw values into [`EngineLimits`].
    pub fn validate(&self, path: &Path, engine: &str) -> Result<EngineLimits, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("engines.{engine}.limits.{key}"),
            reason,
        };
        range(self.timeout_ms, 1, MAX_TIMEOUT_MS).map_err(|r| bad("timeout_ms", r))?;
        range(self.memory_mib, 1, MAX_MEMORY_MIB).map_err(|r| bad("memory_mib", r))?;
        range(self.max_message_bytes, 1, 4096 * MIB).map_err(|r| bad("max_message_bytes", r))?;
        range(self.max_concurrency, 1, 1024).map_err(|r| bad("max_concurrency", r))?;
        range(self.max_threats, 1, 10_000).map_err(|r| bad("max_threats", r))?;
        range(self.max_rules, 0, 10_000).map_err(|r| bad("max_rules", r))?;
        range(self.max_headers, 0, 1000).map_err(|r| bad("max_headers", r))?;
        range(self.max_recipient_verdicts, 0, 100_000)
            .map_err(|r| bad("max_recipient_verdicts", r))?;
        range(self.max_string_bytes, 16, 65_536).map_err(|r| bad("max_string_bytes", r))?;
        range(self.max_verdict_bytes, 1024, 256 * MIB).map_err(|r| bad("max_verdict_bytes", r))?;
        range(self.max_component_mib, 1, 4096).map_err(|r| bad("max_component_mib", r))?;
        range(self.init_timeout_ms, 1, MAX_TIMEOUT_MS).map_err(|r| bad("init_timeout_ms", r))?;
        range(self.max_definitions_mib, 1, 1 << 20).map_err(|r| bad("max_definitions_mib", r))?;
        range(self.compile_timeout_ms, 1, MAX_TIMEOUT_MS)
            .map_err(|r| bad("compile_timeout_ms", r))?;
        range(self.compile_memory_mib, 16, 1 << 20).map_err(|r| bad("compile_memory_mib", r))?;
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
                max_verdict_bytes: self.max_verdict_bytes,
            },
            max_component_bytes: self.max_component_mib * MIB,
            init_timeout: Duration::from_millis(self.init_timeout_ms),
            max_definitions_bytes: self.max_definitions_mib * MIB,
            compile_timeout: Duration::from_millis(self.compile_timeout_ms),
            compile_memory_bytes: self.compile_memory_mib * MIB,
        })
    }
}

/// Each engine's rule overrides, by engine name.
pub(super) type RuleOverrides = Vec<(String, RulesConfig)>;

/// Validates `[engines.*]`: the specs the runtime loads, and each
/// engine's rule overrides for the policy. Paths are resolved against
/// `path`'s directory.
pub(super) fn engine_specs(
    path: &Path,
    configured: std::collections::BTreeMap<String, EngineConfig>,
) -> Result<(Vec<EngineSpec>, RuleOverrides), ConfigError> {
    let base = path.parent().unwrap_or(Path::new(""));
    let mut engines = Vec::with_capacity(configured.len());
    let mut engine_rules = Vec::with_capacity(configured.len());
    for (name, e) in configured {
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
        let mut capabilities = Vec::new();
        for c in &e.capabilities {
            match crate::engine::Capability::from_name(c) {
                Some(c) if !capabilities.contains(&c) => capabilities.push(c),
                Some(_) => {}
                None => {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        key: format!("engines.{name}.capabilities"),
                        reason: format!(
                            "unknown capability {:?} (there are: {})",
                            crate::text::escape(c, 64),
                            crate::engine::Capability::ALL.map(|c| c.name()).join(", ")
                        ),
                    });
                }
            }
        }
        engine_rules.push((
            name.clone(),
            RulesConfig {
                on_detect: e.on_detect,
                on_error: e.on_error,
                reject: e.reject,
                tempfail: e.tempfail,
                skip: e.skip,
            },
        ));
        let mut self_test = Vec::with_capacity(e.self_test.len());
        for (i, t) in e.self_test.iter().enumerate() {
            let key = format!("engines.{name}.self_test[{i}]");
            let file = resolve(t.file.clone());
            let bytes = std::fs::read(&file).map_err(|err| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("{key}.file"),
                reason: format!("cannot read {}: {err}", file.display()),
            })?;
            let expect = match t.expect.as_str() {
                "clean" => Expect::Clean,
                "detected" => Expect::Detected,
                "" => {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        key: format!("{key}.expect"),
                        reason: "clean, detected, or a threat name".into(),
                    });
                }
                name => Expect::Threat(name.to_string()),
            };
            self_test.push(SelfTest {
                file,
                bytes,
                expect,
            });
        }
        engines.push(EngineSpec {
            name,
            component,
            definitions,
            enabled: e.enabled,
            settings: e.settings,
            capabilities,
            limits,
            self_test,
            cache: e.cache,
        });
    }
    if !engines.iter().any(|e| e.enabled) {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "engines".into(),
            reason: "no enabled engine: configure at least one [engines.NAME]".into(),
        });
    }
    Ok((engines, engine_rules))
}

/// Sizes the pool: `pool.max_instances`, or the enabled engines'
/// concurrency together; refused when the address space it reserves is
/// past what a process has.
pub(super) fn pool_instances(
    path: &Path,
    pool: &PoolConfig,
    engines: &[EngineSpec],
) -> Result<u32, ConfigError> {
    let demand: u32 = engines
        .iter()
        .filter(|e| e.enabled)
        .map(|e| e.limits.max_concurrency)
        .sum();
    let pool_instances = match pool.max_instances {
        Some(0) => {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "pool.max_instances".into(),
                reason: "must be at least 1".into(),
            });
        }
        Some(n) => {
            range(n, 1, MAX_POOL_INSTANCES).map_err(|reason| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "pool.max_instances".into(),
                reason,
            })?;
            n
        }
        None => demand.clamp(1, MAX_POOL_INSTANCES),
    };
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.into(),
        reason,
    };
    // Every pool slot reserves address space for its memories up front.
    let largest_memory = engines.iter().map(|e| e.limits.memory_bytes).max();
    let reserved = u64::from(crate::engine::POOLS)
        * u64::from(pool_instances + 1)
        * u64::from(crate::engine::MEMORIES_PER_INSTANCE)
        * largest_memory.unwrap_or(0);
    if reserved > MAX_POOL_RESERVATION {
        return Err(invalid(
            "pool.max_instances",
            format!(
                "{pool_instances} instances with memories of up to {} MiB would reserve {} GiB of address space, over {} GiB: lower pool.max_instances or memory_mib",
                largest_memory.unwrap_or(0) / MIB,
                reserved >> 30,
                MAX_POOL_RESERVATION >> 30
            ),
        ));
    }
    Ok(pool_instances)
}
