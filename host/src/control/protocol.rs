//! The control socket's protocol, shared by the daemon and the CLI: one
//! request line in, one JSON reply line out. Every reply is one of the
//! types here, or `{"error": "..."}`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::SnapshotSource;
use crate::engine::stats::StatsSnapshot;
use crate::registry::ConfigChange;
use crate::verdict_cache::CacheStats;

/// A command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Per-engine figures and the cache's: [`StatsReply`].
    Stats,
    /// cordon's version and each engine's: [`VersionReply`].
    Version,
    /// The engines: a list of [`EngineEntry`].
    Engines,
    /// Reload one engine, or every engine: [`ReloadReply`].
    Reload(Option<String>),
    /// Re-read the config file: [`ConfigReloadReply`].
    ReloadConfig,
    /// Teach the engines a message, whose `bytes` follow the line:
    /// [`LearnReply`].
    Learn {
        /// `spam`, `ham`, `virus` or `clean`.
        class: String,
        /// The message's size.
        bytes: u64,
        /// The engines that learn; every enabled engine when empty.
        engines: Vec<String>,
    },
}

/// What the daemon says to a line it does not know.
pub const KNOWN: &str =
    "stats, version, engines, reload [ENGINE], reload-config, learn CLASS BYTES [ENGINE...]";

/// The largest message `learn` takes through the socket.
pub const MAX_LEARN_BYTES: u64 = 256 << 20;

/// The classes `learn` knows.
pub const LEARN_CLASSES: [&str; 4] = ["spam", "ham", "virus", "clean"];

impl std::str::FromStr for Request {
    type Err = String;
    fn from_str(line: &str) -> Result<Self, String> {
        if let Some(rest) = line.strip_prefix("learn ") {
            let mut words = rest.split_whitespace();
            let class = words.next().unwrap_or("");
            if !LEARN_CLASSES.contains(&class) {
                return Err(format!(
                    "learn: class {:?}: one of {}",
                    crate::text::escape(class, 32),
                    LEARN_CLASSES.join(", ")
                ));
            }
            let bytes = words
                .next()
                .and_then(|b| b.parse::<u64>().ok())
                .filter(|b| *b <= MAX_LEARN_BYTES)
                .ok_or_else(|| format!("learn: BYTES must be a size up to {MAX_LEARN_BYTES}"))?;
            return Ok(Request::Learn {
                class: class.to_string(),
                bytes,
                engines: words.map(str::to_string).collect(),
            });
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("stats"), None, _) => Ok(Request::Stats),
            (Some("version"), None, _) => Ok(Request::Version),
            (Some("engines"), None, _) => Ok(Request::Engines),
            (Some("reload"), name, None) => Ok(Request::Reload(name.map(str::to_string))),
            (Some("reload-config"), None, _) => Ok(Request::ReloadConfig),
            _ => Err(format!("unknown command {line:?}: {KNOWN}")),
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Stats => f.write_str("stats"),
            Request::Version => f.write_str("version"),
            Request::Engines => f.write_str("engines"),
            Request::Reload(None) => f.write_str("reload"),
            Request::Reload(Some(name)) => write!(f, "reload {name}"),
            Request::ReloadConfig => f.write_str("reload-config"),
            Request::Learn {
                class,
                bytes,
                engines,
            } => {
                write!(f, "learn {class} {bytes}")?;
                for e in engines {
                    write!(f, " {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// The reply to [`Request::Learn`]: one result per engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearnReply {
    /// In engine order.
    pub results: Vec<LearnResult>,
}

/// One engine's answer to `learn`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearnResult {
    /// The engine.
    pub engine: String,
    /// `learned`, `already-learned` or `unsupported`.
    pub outcome: Option<String>,
    /// Why it gave no outcome.
    pub error: Option<String>,
}

/// The reply to a request the daemon refused or could not carry out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: String,
}

/// The reply to [`Request::Stats`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsReply {
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// Resident memory now.
    pub rss_bytes: Option<u64>,
    /// Peak resident memory.
    pub peak_rss_bytes: Option<u64>,
    /// The verdict cache's figures, if there is one.
    pub cache: Option<CacheStats>,
    /// One per engine, in name order.
    pub engines: Vec<EngineStatsReply>,
}

/// One engine's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineStatsReply {
    /// The engine's name in config.
    pub engine: String,
    /// Whether it scans.
    pub enabled: bool,
    /// The generation serving.
    pub generation: u64,
    /// Its age.
    pub generation_age_s: f64,
    /// Generations alive (current and retiring).
    pub generations_alive: usize,
    /// The pre-initialised image of the generation serving.
    pub image_bytes: usize,
    /// Its compiled code.
    pub code_bytes: usize,
    /// What the engine says its definitions are.
    pub definitions_version: String,
    /// The last reload's error, if the last reload failed.
    pub last_reload_error: Option<String>,
    /// The counters.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

/// The reply to [`Request::Version`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionReply {
    /// cordon's version.
    pub cordon: String,
    /// One per engine.
    pub engines: Vec<EngineVersion>,
}

/// One engine's versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineVersion {
    /// The engine's name in config.
    pub engine: String,
    /// The engine's own name.
    pub name: String,
    /// Its vendor.
    pub vendor: String,
    /// Its version.
    pub version: String,
    /// Its definitions.
    pub definitions_version: String,
    /// The generation serving.
    pub generation: u64,
    /// When it was loaded (Unix seconds).
    pub loaded_at_unix: f64,
    /// How long the load took.
    pub load_ms: f64,
}

/// One engine as `cordon engines --json` shows it, from a daemon
/// (`--live`) or loaded by the CLI: one shape for both.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineEntry {
    /// The engine's name in config.
    pub engine: String,
    /// Whether it scans.
    pub enabled: bool,
    /// The engine's own name.
    pub name: String,
    /// Its vendor.
    pub vendor: String,
    /// Its version.
    pub version: String,
    /// Its definitions.
    pub definitions_version: String,
    /// Whether it asks for decoded parts.
    pub wants_parts: bool,
    /// The component file.
    pub component: PathBuf,
    /// The definitions directory.
    pub definitions: Option<PathBuf>,
    /// The generation serving.
    pub generation: u64,
    /// How long its load took.
    pub load_ms: u64,
    /// Its pre-initialised image.
    pub image_bytes: usize,
    /// Whether the load built its snapshot or mapped it from the cache.
    pub snapshot: SnapshotSource,
    /// Its main limits.
    pub limits: EntryLimits,
}

/// The limits [`EngineEntry`] shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryLimits {
    /// Time per scan.
    pub timeout_ms: u64,
    /// Memory per instance.
    pub memory_mib: u64,
    /// Largest message handed to the engine.
    pub max_message_bytes: u64,
    /// Scans at once.
    pub max_concurrency: u32,
}

/// The reply to [`Request::Reload`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadReply {
    /// Engines reloaded, with the generation now serving.
    pub reloaded: Vec<Reloaded>,
    /// Engines whose candidate was rejected, with the reason.
    pub failed: Vec<ReloadFailed>,
}

/// One engine reloaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reloaded {
    /// The engine.
    pub engine: String,
    /// The generation now serving.
    pub generation: u64,
}

/// One reload rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadFailed {
    /// The engine.
    pub engine: String,
    /// Why.
    pub error: String,
}

/// The reply to [`Request::ReloadConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigReloadReply {
    /// The config file read.
    pub config: PathBuf,
    /// What changed.
    pub change: ConfigChange,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_lines_say_what_is_known() {
        for r in [
            Request::Stats,
            Request::Version,
            Request::Engines,
            Request::Reload(None),
            Request::Reload(Some("clamsig".into())),
            Request::ReloadConfig,
        ] {
            assert_eq!(r.to_string().parse::<Request>(), Ok(r));
        }
        let e = "frobnicate".parse::<Request>().unwrap_err();
        assert!(e.contains("stats, version"), "{e}");
        assert!("reload a b".parse::<Request>().is_err());
        assert!("stats now".parse::<Request>().is_err());
    }
}
