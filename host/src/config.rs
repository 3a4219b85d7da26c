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
use crate::policy::{
    AlternateMode, DetectAction, ERROR_KINDS, EngineRules, ErrorAction, HeaderRules, OnDetect,
    OnError, Policy, Reply, SkipRules,
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
    /// Policy defaults for every engine; each engine may override them.
    #[serde(default)]
    pub policy: RulesConfig,
    /// The headers cordon writes.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// The milter daemon (`cordon serve`).
    #[serde(default)]
    pub milter: MilterConfig,
    /// Recipient opt-in profiles handed to engines: profile name to
    /// addresses (`user@domain`) and domains (`@domain`).
    #[serde(default)]
    pub profiles: BTreeMap<String, Vec<String>>,
    /// The verdict cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The control socket and the metrics listener.
    #[serde(default)]
    pub control: ControlConfig,
    /// Reloading engines when their files change.
    #[serde(default)]
    pub reload: ReloadConfig,
}

/// `[cache]`: verdicts by content digest, engine and generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Verdicts kept; 0 turns the cache off.
    pub max_entries: usize,
    /// Bytes of verdicts kept (estimated).
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The control socket `cordon stats`, `version`, `reload` talk to.
    pub socket: Option<PathBuf>,
    /// Its permissions, octal.
    pub socket_mode: String,
    /// `host:port` on loopback for HTTP `/metrics` (Prometheus) and
    /// `/stats` (JSON); off when absent.
    pub http: Option<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: None,
            socket_mode: "0600".into(),
            http: None,
        }
    }
}

/// `[reload]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch component files and definitions directories and reload an
    /// engine when they change.
    pub watch: bool,
    /// How often to look; a change is acted on once it has held still for
    /// one interval.
    pub interval_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            interval_ms: 1000,
        }
    }
}

/// A self-test sample as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestConfig {
    /// A message file.
    pub file: PathBuf,
    /// `clean`, `detected`, or a threat name that must be among those found.
    pub expect: String,
}

/// Policy rules as written: in `[policy]` (defaults) or in an engine's
/// table (overrides, key by key).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Action on detection: one action, or a table by threat kind with an
    /// optional `default`.
    #[serde(default, deserialize_with = "detect_table")]
    pub on_detect: Option<DetectTable>,
    /// Action when the engine gives no verdict: one action, or a table by
    /// fault kind with an optional `default`.
    #[serde(default, deserialize_with = "error_table")]
    pub on_error: Option<ErrorTable>,
    /// The reject reply; `%v` becomes the threat names.
    #[serde(default)]
    pub reject: Option<ReplyConfig>,
    /// The tempfail reply.
    #[serde(default)]
    pub tempfail: Option<ReplyConfig>,
    /// When the engine is not asked.
    #[serde(default)]
    pub skip: Option<SkipConfig>,
}

/// `on_detect` by threat kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DetectTable {
    pub default: Option<DetectAction>,
    pub virus: Option<DetectAction>,
    pub malware: Option<DetectAction>,
    pub phishing: Option<DetectAction>,
    pub spam: Option<DetectAction>,
    pub policy: Option<DetectAction>,
    pub heuristic: Option<DetectAction>,
}

impl From<DetectAction> for DetectTable {
    fn from(a: DetectAction) -> Self {
        Self {
            default: Some(a),
            ..Self::default()
        }
    }
}

impl DetectTable {
    fn by_kind(&self) -> [Option<DetectAction>; 6] {
        [
            self.virus,
            self.malware,
            self.phishing,
            self.spam,
            self.policy,
            self.heuristic,
        ]
    }
}

/// `on_error` by fault kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct ErrorTable {
    pub default: Option<ErrorAction>,
    pub timeout: Option<ErrorAction>,
    pub out_of_memory: Option<ErrorAction>,
    pub trap: Option<ErrorAction>,
    pub bad_output: Option<ErrorAction>,
    pub overloaded: Option<ErrorAction>,
    pub message_too_large: Option<ErrorAction>,
    pub unscannable: Option<ErrorAction>,
}

impl From<ErrorAction> for ErrorTable {
    fn from(a: ErrorAction) -> Self {
        Self {
            default: Some(a),
            ..Self::default()
        }
    }
}

impl ErrorTable {
    /// In [`ERROR_KINDS`] order.
    fn by_kind(&self) -> [Option<ErrorAction>; 7] {
        [
            self.timeout,
            self.out_of_memory,
            self.trap,
            self.bad_output,
            self.overloaded,
            self.message_too_large,
            self.unscannable,
        ]
    }
}

fn detect_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DetectTable>, D::Error> {
    one_or_table::<D, DetectTable, DetectAction>(d)
}

fn error_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ErrorTable>, D::Error> {
    one_or_table::<D, ErrorTable, ErrorAction>(d)
}

/// Accepts `key = "action"` or `key = { default = ..., kind = ... }`.
fn one_or_table<'de, D, T, A>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + From<A>,
    A: Deserialize<'de>,
{
    use serde::de::{self, IntoDeserializer};
    struct V<T, A>(std::marker::PhantomData<(T, A)>);
    impl<'de, T: Deserialize<'de> + From<A>, A: Deserialize<'de>> de::Visitor<'de> for V<T, A> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an action name, or a table of actions by kind")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            A::deserialize(s.into_deserializer()).map(T::from)
        }
        fn visit_map<M: de::MapAccess<'de>>(self, m: M) -> Result<T, M::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(m))
        }
    }
    d.deserialize_any(V(std::marker::PhantomData)).map(Some)
}

/// An SMTP reply as written; missing keys come from the default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    /// Three-digit code: 5xx for reject, 4xx for tempfail.
    pub code: Option<u16>,
    /// Enhanced status code, `class.subject.detail`, class matching the code.
    pub status: Option<String>,
    /// Text, printable ASCII.
    pub text: Option<String>,
}

/// Skip rules as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipConfig {
    /// Client networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`) or
    /// single addresses.
    #[serde(default)]
    pub client_networks: Vec<String>,
    /// Skip authenticated senders.
    #[serde(default)]
    pub authenticated: bool,
    /// Sender domains; `.example.com` also matches subdomains.
    #[serde(default)]
    pub sender_domains: Vec<String>,
    /// Recipient domains: skipped when every recipient is in one.
    #[serde(default)]
    pub recipient_domains: Vec<String>,
    /// Skip messages larger than this.
    #[serde(default)]
    pub larger_than_bytes: Option<u64>,
}

/// `[headers]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Add X-Virus-*, X-Spam-* and X-Cordon-* headers (forged copies are
    /// removed either way).
    pub add: bool,
    /// Spam score at or above which `X-Spam-Flag: YES`.
    pub spam_threshold: f64,
    /// Engine-proposed header names let through; a trailing `*` matches any
    /// rest.
    pub engine_headers: Vec<String>,
    /// `header` (add `X-Cordon-Alternate`) or `replace` (redirect the
    /// recipient).
    pub alternate: AlternateMode,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        let h = HeaderRules::default();
        Self {
            add: h.add,
            spam_threshold: h.spam_threshold,
            engine_headers: h.engine_headers,
            alternate: h.alternate,
        }
    }
}

/// `[milter]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MilterConfig {
    /// Sockets, in Postfix's notation: `unix:/path`, `inet:port@host`,
    /// `inet6:port@host`.
    pub listen: Vec<String>,
    /// Milter sessions at once; more wait in the listen queue.
    pub max_sessions: u32,
    /// Permissions of unix sockets, octal.
    pub socket_mode: String,
    /// On SIGTERM, how long sessions in flight may take to finish.
    pub shutdown_timeout_s: u64,
    /// The name in `X-Virus-Scanned`; default: the MTA's (`j` macro).
    pub host_name: Option<String>,
    /// Time to wait for the MTA's next complete command; a session idle or
    /// slower than this is closed. Above Postfix's `smtpd_timeout` (300 s),
    /// since Postfix keeps the milter connection while its client is slow.
    pub command_timeout_s: u64,
    /// Time one connection may last in all.
    pub session_timeout_s: u64,
    /// Headers per message; a message with more is not scanned but judged
    /// as `message-too-large`.
    pub max_headers: u32,
    /// Recipients per message; likewise.
    pub max_recipients: u32,
}

impl Default for MilterConfig {
    fn default() -> Self {
        let s = crate::milter::SessionLimits::default();
        Self {
            listen: Vec::new(),
            max_sessions: 256,
            socket_mode: "0660".into(),
            shutdown_timeout_s: 30,
            host_name: None,
            command_timeout_s: s.command_timeout.as_secs(),
            session_timeout_s: s.session_timeout.as_secs(),
            max_headers: s.max_headers,
            max_recipients: s.max_recipients,
        }
    }
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
    /// Action on detection (overrides `policy.on_detect`).
    #[serde(default, deserialize_with = "detect_table")]
    pub on_detect: Option<DetectTable>,
    /// Action on faults (overrides `policy.on_error`).
    #[serde(default, deserialize_with = "error_table")]
    pub on_error: Option<ErrorTable>,
    /// Reject reply (overrides `policy.reject`, key by key).
    #[serde(default)]
    pub reject: Option<ReplyConfig>,
    /// Tempfail reply (overrides `policy.tempfail`, key by key).
    #[serde(default)]
    pub tempfail: Option<ReplyConfig>,
    /// Skip rules, in addition to `policy.skip`.
    #[serde(default)]
    pub skip: Option<SkipConfig>,
    /// Samples every new generation must get right before it serves.
    #[serde(default)]
    pub self_test: Vec<SelfTestConfig>,
    /// Cache this engine's verdicts (turn off for engines whose verdict
    /// depends on the envelope, not only the content).
    #[serde(default = "yes")]
    pub cache: bool,
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
    /// Bytes of one verdict altogether (strings, and a share for each item
    /// of a list); also what the host lifts out of the guest in one call.
    pub max_verdict_bytes: u64,
    /// Largest component file the host reads.
    pub max_component_mib: u64,
    /// Wall-clock time `init` may take (loading definitions), host calls
    /// included.
    pub init_timeout_ms: u64,
    /// Bytes of the definitions directory's files together.
    pub max_definitions_mib: u64,
    /// Wall-clock time compiling the component (and each generation's
    /// snapshot) may take; the compiler runs in a child process, killed
    /// past it.
    pub compile_timeout_ms: u64,
    /// Address space the compiler child may use.
    pub compile_memory_mib: u64,
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
            max_verdict_bytes: l.verdict.max_verdict_bytes,
            max_component_mib: l.max_component_bytes / MIB,
            init_timeout_ms: l.init_timeout.as_millis() as u64,
            max_definitions_mib: l.max_definitions_bytes / MIB,
            compile_timeout_ms: l.compile_timeout.as_millis() as u64,
            compile_memory_mib: l.compile_memory_bytes / MIB,
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
    /// Largest component file read.
    pub max_component_bytes: u64,
    /// Wall-clock time `init` may take.
    pub init_timeout: Duration,
    /// Bytes of definitions files together.
    pub max_definitions_bytes: u64,
    /// Wall-clock time one compile may take.
    pub compile_timeout: Duration,
    /// Address space of the compiler child.
    pub compile_memory_bytes: u64,
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
    /// Bytes of the whole verdict: every string, plus
    /// [`VERDICT_ITEM_BYTES`] for each list item.
    pub max_verdict_bytes: u64,
}

/// What each list item of a verdict counts towards `max_verdict_bytes`
/// besides its strings: the host's own record of it.
pub const VERDICT_ITEM_BYTES: u64 = 32;

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
                max_verdict_bytes: MIB,
            },
            max_component_bytes: 256 * MIB,
            init_timeout: Duration::from_secs(60),
            max_definitions_bytes: 4096 * MIB,
            compile_timeout: Duration::from_secs(120),
            compile_memory_bytes: 8192 * MIB,
        }
    }
}

/// Checks that `v` is in `lo..=hi`; the error says the range.
fn range<T: PartialOrd + std::fmt::Display>(v: T, lo: T, hi: T) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("{v} is out of range {lo}..={hi}"));
    }
    Ok(())
}

/// Hard ceilings: values past these are config mistakes, not choices.
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
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

/// A self-test sample, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTest {
    /// The file it came from.
    pub file: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// What the engine must say.
    pub expect: Expect,
}

/// A self-test's expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A clean verdict.
    Clean,
    /// Any detection.
    Detected,
    /// A detection with this threat name among those found.
    Threat(String),
}

/// One engine after validation: everything the runtime needs to load it.
#[derive(Debug, Clone, PartialEq)]
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
    /// Samples a new generation must pass.
    pub self_test: Vec<SelfTest>,
    /// Whether its verdicts are cached.
    pub cache: bool,
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
    /// The policy.
    pub policy: Policy,
    /// The milter daemon.
    pub milter: MilterSettings,
    /// Recipient profiles: (pattern, profile), patterns lower-cased.
    pub profiles: Vec<(String, String)>,
    /// The verdict cache.
    pub cache: CacheConfig,
    /// The control socket and HTTP listener.
    pub control: ControlSettings,
    /// Reload watching.
    pub reload: ReloadConfig,
}

/// `[control]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    /// The control socket.
    pub socket: Option<PathBuf>,
    /// Its permissions.
    pub socket_mode: u32,
    /// The HTTP listener, on loopback.
    pub http: Option<std::net::SocketAddr>,
}

/// A listening address, in Postfix's notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:/path`.
    Unix(PathBuf),
    /// `inet:port@host` or `inet6:port@host` (host may be empty: all).
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) if a.is_ipv4() => write!(f, "inet:{}@{}", a.port(), a.ip()),
            ListenAddr::Tcp(a) => write!(f, "inet6:{}@{}", a.port(), a.ip()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: expected unix:/path, inet:port@host or inet6:port@host")
        })?;
        match kind {
            "unix" | "local" => {
                if rest.is_empty() {
                    return Err(format!("{s:?}: empty socket path"));
                }
                Ok(ListenAddr::Unix(PathBuf::from(rest)))
            }
            "inet" | "inet6" => {
                let (port, host) = rest.split_once('@').unwrap_or((rest, ""));
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
                let v6 = kind == "inet6";
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let ip: std::net::IpAddr = match host {
                    "" if v6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    "localhost" if v6 => std::net::Ipv6Addr::LOCALHOST.into(),
                    "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
                    h => h
                        .parse()
                        .map_err(|_| format!("{s:?}: {h:?} is not an IP address"))?,
                };
                if ip.is_ipv6() != v6 {
                    return Err(format!(
                        "{s:?}: {ip} is not an {} address",
                        if v6 { "IPv6" } else { "IPv4" }
                    ));
                }
                Ok(ListenAddr::Tcp(std::net::SocketAddr::new(ip, port)))
            }
            other => Err(format!(
                "{s:?}: unknown socket type {other:?} (unix, inet, inet6)"
            )),
        }
    }
}

/// `[milter]` after validation.
#[derive(Debug, Clone)]
pub struct MilterSettings {
    /// Where to listen.
    pub listen: Vec<ListenAddr>,
    /// Sessions at once.
    pub max_sessions: u32,
    /// Unix socket permissions.
    pub socket_mode: u32,
    /// Grace period on shutdown.
    pub shutdown_timeout: Duration,
    /// Name for `X-Virus-Scanned`.
    pub host_name: Option<String>,
    /// Bounds on each session and message.
    pub session: crate::milter::SessionLimits,
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
        }
    }

    /// Checks every value; `path` is the config file, against which relative
    /// component paths are resolved.
    pub fn validate(self, path: &Path) -> Result<ValidConfig, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(""));
        let mut engines = Vec::with_capacity(self.engines.len());
        let mut engine_rules = Vec::with_capacity(self.engines.len());
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
        let reserved = u64::from(pool_instances + 1)
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
        let policy = build_policy(path, &self.policy, &engine_rules, &self.headers)?;
        let milter = milter_settings(path, &self.milter)?;
        let control = control_settings(path, &self.control)?;
        range(self.reload.interval_ms, 10, 3_600_000)
            .map_err(|r| invalid("reload.interval_ms", r))?;
        let mut profiles = Vec::new();
        for (name, patterns) in &self.profiles {
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
            policy,
            milter,
            profiles,
            cache: self.cache,
            control,
            reload: self.reload,
        })
    }
}

fn build_policy(
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
    debug_assert_eq!(ERROR_KINDS.len(), ErrorTable::default().by_kind().len());
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

/// A unix socket mode written in octal (`"0660"`).
fn octal_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o777)
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

fn control_settings(path: &Path, c: &ControlConfig) -> Result<ControlSettings, ConfigError> {
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
    Ok(ControlSettings {
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

fn milter_settings(path: &Path, c: &MilterConfig) -> Result<MilterSettings, ConfigError> {
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
    Ok(MilterSettings {
        listen,
        max_sessions: c.max_sessions,
        socket_mode,
        shutdown_timeout: Duration::from_secs(c.shutdown_timeout_s),
        host_name: c.host_name.clone(),
        session: crate::milter::SessionLimits {
            command_timeout: Duration::from_secs(c.command_timeout_s),
            session_timeout: Duration::from_secs(c.session_timeout_s),
            max_headers: c.max_headers,
            max_recipients: c.max_recipients,
        },
    })
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

#[cfg(test)]
mod policy_tests {
    use super::*;
    use crate::bindings::ThreatKind;
    use crate::policy::kind_index;

    const PATH: &str = "/etc/cordon/cordon.toml";

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        Config::parse(text, Path::new(PATH))?.validate(Path::new(PATH))
    }

    #[test]
    fn actions_as_one_word_or_by_kind_and_engine_overrides() {
        let c = parse(
            r#"
            [policy]
            on_detect = "quarantine"
            on_error = { default = "tempfail", timeout = "accept" }
            reject.text = "No: %v"
            [engines.a]
            component = "a.wasm"
            on_detect = { spam = "tag" }
            reject = { code = 554 }
            [engines.b]
            component = "b.wasm"
            on_error = "accept"
            "#,
        )
        .unwrap();
        let a = c.policy.rules("a");
        assert_eq!(a.on_detect.get(ThreatKind::Virus), DetectAction::Quarantine);
        assert_eq!(a.on_detect.get(ThreatKind::Spam), DetectAction::Tag);
        assert_eq!(a.on_error.by_kind[0], ErrorAction::Accept);
        assert_eq!(a.on_error.by_kind[2], ErrorAction::Tempfail);
        assert_eq!(a.reject.to_string(), "554 5.7.1 No: %v");
        let b = c.policy.rules("b");
        assert_eq!(b.on_error, OnError::all(ErrorAction::Accept));
        assert_eq!(
            b.on_detect.by_kind[kind_index(ThreatKind::Spam)],
            DetectAction::Quarantine
        );
    }

    #[test]
    fn bad_policy_values_name_the_key() {
        let cases = [
            ("[policy]\non_detect = \"bounce\"\n", "bounce"),
            ("[policy]\non_error = { timout = \"accept\" }\n", "timout"),
            ("[policy]\nreject.code = 450\n", "policy.reject.code"),
            (
                "[policy]\ntempfail.status = \"5.7.1\"\n",
                "policy.tempfail.status",
            ),
            (
                "[policy]\nreject.text = \"a\\r\\nb\"\n",
                "policy.reject.text",
            ),
            (
                "[policy]\nskip.client_networks = [\"10.0.0.0/33\"]\n",
                "policy.skip.client_networks[0]",
            ),
            ("[milter]\nlisten = [\"tcp:25\"]\n", "milter.listen[0]"),
            (
                "[milter]\nlisten = [\"inet6:25@127.0.0.1\"]\n",
                "milter.listen[0]",
            ),
            ("[milter]\nsocket_mode = \"999\"\n", "milter.socket_mode"),
            (
                "[profiles]\nspam-drop = [\"nobody\"]\n",
                "profiles.spam-drop",
            ),
            (
                "[headers]\nengine_headers = [\"X-A: b\"]\n",
                "headers.engine_headers[0]",
            ),
        ];
        for (text, want) in cases {
            let text = format!("{text}[engines.t]\ncomponent = \"t.wasm\"\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains(PATH), "{err}");
        }
    }

    #[test]
    fn listen_addresses_in_postfix_notation() {
        let table = [
            ("unix:/run/cordon.sock", Some("unix:/run/cordon.sock")),
            ("inet:7357@127.0.0.1", Some("inet:7357@127.0.0.1")),
            ("inet:7357", Some("inet:7357@0.0.0.0")),
            ("inet:7357@localhost", Some("inet:7357@127.0.0.1")),
            ("inet6:7357@::1", Some("inet6:7357@::1")),
            ("inet6:7357@[::1]", Some("inet6:7357@::1")),
            ("inet:x@127.0.0.1", None),
            ("unix:", None),
        ];
        for (text, want) in table {
            let got = text.parse::<ListenAddr>().map(|a| a.to_string()).ok();
            assert_eq!(got.as_deref(), want, "{text}");
        }
    }

    #[test]
    fn every_number_has_a_range_and_errors_name_the_key() {
        let engine = "[engines.a]\ncomponent = \"a.wasm\"\n";
        for (line, key) in [
            ("pool.max_instances = 4294967295\n", "pool.max_instances"),
            ("pool.max_instances = 1000000\n", "pool.max_instances"),
            ("mime.max_depth = 6000\n", "mime.max_depth"),
            ("mime.max_parts = 0\n", "mime.max_parts"),
            ("mime.max_decode_ms = 0\n", "mime.max_decode_ms"),
            ("cache.max_entries = 100000000\n", "cache.max_entries"),
            ("reload.interval_ms = 1\n", "reload.interval_ms"),
            ("milter.max_sessions = 1000000\n", "milter.max_sessions"),
            ("milter.command_timeout_s = 0\n", "milter.command_timeout_s"),
            ("milter.max_headers = 0\n", "milter.max_headers"),
            ("headers.spam_threshold = nan\n", "headers.spam_threshold"),
        ] {
            let err = parse(&format!("{line}{engine}")).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
            assert!(err.contains("/etc/cordon/cordon.toml"), "{err}");
        }
        for (line, key) in [
            (
                "limits.max_concurrency = 4294967295\n",
                "limits.max_concurrency",
            ),
            ("limits.max_verdict_bytes = 1\n", "limits.max_verdict_bytes"),
            ("limits.max_component_mib = 0\n", "limits.max_component_mib"),
            ("limits.init_timeout_ms = 0\n", "limits.init_timeout_ms"),
            ("limits.max_threats = 0\n", "limits.max_threats"),
            (
                "limits.max_string_bytes = 4294967295\n",
                "limits.max_string_bytes",
            ),
        ] {
            let err = parse(&format!("{engine}{line}")).unwrap_err().to_string();
            assert!(err.contains(&format!("engines.a.{key}")), "{line}: {err}");
        }
        // Within range, the pool's reservation is still checked.
        let err = parse(&format!(
            "pool.max_instances = 1024\n{engine}limits.memory_mib = 4095\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pool.max_instances") && err.contains("address space"),
            "{err}"
        );
    }
}
