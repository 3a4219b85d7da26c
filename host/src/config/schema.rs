//! The config file's schema: the serde tree as operators write it, with
//! defaults. Nothing here is validated; [`super::Config::validate`] does
//! that and builds the typed values the layers use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::engines::MIB;
use crate::engine::EngineLimits;
use crate::mime::MimeLimits;
use crate::policy::{AlternateMode, DetectAction, ErrorAction, ErrorKind, HeaderRules};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where compiled components and pre-initialised snapshots are cached.
    /// Defaults to `$XDG_CACHE_HOME/cordon` or `~/.cache/cordon`. Created
    /// 0700; one owned by another user or writable by others is refused.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// MiB the cache directory may hold (least recently used out first);
    /// 0 keeps no snapshots, so every load runs `init`.
    #[serde(default = "default_cache_dir_max_mib")]
    pub cache_dir_max_mib: u64,
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
    /// The resolver behind the `dns` capability.
    #[serde(default)]
    pub dns: DnsConfig,
    /// The key-value store behind the `store` capability.
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[store]`: where engines granted `store` keep what they learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `"embedded"` (a file on this host) or `"redis"` (shared).
    pub backend: String,
    /// The embedded database file. Default: `store.redb` in
    /// `$STATE_DIRECTORY`, `$XDG_STATE_HOME/cordon` or
    /// `~/.local/state/cordon`.
    pub path: Option<PathBuf>,
    /// The Redis or Valkey server (`redis://127.0.0.1:6379/0`).
    pub url: Option<String>,
    /// Keys one scan may read, write or delete.
    pub max_ops_per_scan: u32,
    /// Bytes of keys and values one scan may move.
    pub max_bytes_per_scan: u64,
    /// The largest key.
    pub max_key_bytes: u32,
    /// The largest value.
    pub max_value_bytes: u32,
    /// How long one Redis call may wait (never past the scan's timeout).
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        use crate::engine::capabilities::store::{Backend, StoreSettings};
        let d = StoreSettings::with_backend(Backend::Redis { url: String::new() });
        Self {
            backend: "embedded".into(),
            path: None,
            url: None,
            max_ops_per_scan: d.max_ops_per_scan,
            max_bytes_per_scan: d.max_bytes_per_scan,
            max_key_bytes: d.max_key_bytes,
            max_value_bytes: d.max_value_bytes,
            timeout_ms: d.timeout.as_millis() as u64,
        }
    }
}

/// `[dns]`: the resolver engines granted `dns` ask through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Servers, `address` or `address:port` (`127.0.0.1:53`, `[::1]:53`);
    /// empty: those of `/etc/resolv.conf`.
    pub servers: Vec<String>,
    /// How long one query may wait (never past the scan's own timeout).
    pub timeout_ms: u64,
    /// Queries one scan may make.
    pub max_queries_per_scan: u32,
    /// Answers the cache keeps (each for its TTL).
    pub cache_entries: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let d = crate::engine::capabilities::dns::DnsSettings::default();
        Self {
            servers: Vec::new(),
            timeout_ms: d.query_timeout.as_millis() as u64,
            max_queries_per_scan: d.max_queries_per_scan,
            cache_entries: d.cache_entries,
        }
    }
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
    /// In [`crate::policy::kind_index`] order.
    pub fn by_kind(&self) -> [Option<DetectAction>; 6] {
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
    /// The action written for `kind`, if any.
    pub fn get(&self, kind: ErrorKind) -> Option<ErrorAction> {
        use crate::engine::FaultKind;
        match kind {
            ErrorKind::Fault(FaultKind::Timeout) => self.timeout,
            ErrorKind::Fault(FaultKind::OutOfMemory) => self.out_of_memory,
            ErrorKind::Fault(FaultKind::Trap) => self.trap,
            ErrorKind::Fault(FaultKind::BadOutput) => self.bad_output,
            ErrorKind::Fault(FaultKind::Overloaded) => self.overloaded,
            ErrorKind::Fault(FaultKind::MessageTooLarge) => self.message_too_large,
            ErrorKind::Unscannable => self.unscannable,
        }
    }

    /// In [`ErrorKind::ALL`] order.
    pub fn by_kind(&self) -> [Option<ErrorAction>; ErrorKind::ALL.len()] {
        ErrorKind::ALL.map(|k| self.get(k))
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
        let s = crate::live::SessionLimits::default();
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
    /// The capabilities granted to the engine (`"dns"`, `"store"`); an
    /// engine that imports one not granted is refused at load.
    #[serde(default)]
    pub capabilities: Vec<String>,
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

/// The default bound of the cache directory, in MiB.
pub(super) fn default_cache_dir_max_mib() -> u64 {
    4096
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
