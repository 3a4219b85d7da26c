//! The operator's view of a running daemon: a unix control socket (one
//! command per connection, one JSON answer; see [`protocol`]) for `cordon
//! stats`, `cordon version`, `cordon engines --live` and `cordon reload`,
//! and an optional HTTP listener on loopback with Prometheus `/metrics`
//! and JSON `/stats`. [`client`] is the CLI's side.

pub mod client;
pub mod protocol;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::engine::FaultKind;
use crate::listen::Listener;
use crate::process::{Pid, peak_rss_bytes, rss_bytes};
use crate::registry::Registry;
use protocol::{
    ConfigReloadReply, EngineEntry, EngineStatsReply, EngineVersion, EntryLimits, ErrorReply,
    LearnReply, LearnResult, ReloadFailed, ReloadReply, Reloaded, Request, StatsReply,
    VersionReply,
};

/// Re-reads the config file and applies it (the daemon supplies it; the
/// control socket does not know how config is read). Blocking.
pub type ConfigReloader = Arc<dyn Fn() -> Result<ConfigReloadReply, String> + Send + Sync>;

/// The control socket and HTTP settings, fixed at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The control socket.
    pub socket: Option<PathBuf>,
    /// Its permissions.
    pub socket_mode: u32,
    /// The HTTP listener, on loopback.
    pub http: Option<std::net::SocketAddr>,
}

/// What the control socket steers.
pub struct Control {
    /// The engines and live settings.
    pub registry: Arc<Registry>,
    /// When the daemon started.
    pub started: Instant,
    /// How `reload-config` and SIGHUP re-read the config, if they can.
    pub reload_config: Option<ConfigReloader>,
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every engine of `registry` as `cordon engines` shows it.
pub fn engine_entries(registry: &Registry) -> Vec<EngineEntry> {
    registry
        .engines()
        .iter()
        .map(|s| {
            let g = s.current();
            let spec = s.spec();
            EngineEntry {
                engine: s.name().to_string(),
                enabled: s.enabled(),
                name: g.info.name.clone(),
                vendor: g.info.vendor.clone(),
                version: g.info.version.clone(),
                definitions_version: g.info.definitions_version.clone(),
                wants_parts: g.info.wants_parts,
                component: spec.component,
                definitions: spec.definitions,
                generation: g.number,
                load_ms: g.load_time.as_millis() as u64,
                image_bytes: g.image_bytes,
                snapshot: g.snapshot,
                limits: EntryLimits {
                    timeout_ms: g.limits.timeout.as_millis() as u64,
                    memory_mib: g.limits.memory_bytes >> 20,
                    max_message_bytes: g.limits.max_message_bytes,
                    max_concurrency: g.limits.max_concurrency,
                },
            }
        })
        .collect()
}

impl Control {
    /// Per engine figures and the cache's.
    pub fn stats(&self) -> StatsReply {
        let engines = self
            .registry
            .engines()
            .iter()
            .map(|s| {
                let g = s.current();
                EngineStatsReply {
                    engine: g.name.to_string(),
                    enabled: s.enabled(),
                    generation: g.number,
                    generation_age_s: g
                        .loaded_at
                        .elapsed()
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0),
                    generations_alive: s.alive(),
                    image_bytes: g.image_bytes,
                    code_bytes: g.code_bytes,
                    definitions_version: g.info.definitions_version.clone(),
                    last_reload_error: s.last_error(),
                    stats: s.stats.snapshot(),
                }
            })
            .collect();
        StatsReply {
            uptime_s: self.started.elapsed().as_secs_f64(),
            rss_bytes: rss_bytes(Pid::Current),
            peak_rss_bytes: peak_rss_bytes(Pid::Current),
            cache: self.registry.cache.as_ref().map(|c| c.stats()),
            engines,
        }
    }

    /// Versions: cordon's and each engine's, with definitions and load
    /// time.
    pub fn version(&self) -> VersionReply {
        VersionReply {
            cordon: env!("CARGO_PKG_VERSION").to_string(),
            engines: self
                .registry
                .engines()
                .iter()
                .map(|s| {
                    let g = s.current();
                    EngineVersion {
                        engine: g.name.to_string(),
                        name: g.info.name.clone(),
                        vendor: g.info.vendor.clone(),
                        version: g.info.version.clone(),
                        definitions_version: g.info.definitions_version.clone(),
                        generation: g.number,
                        loaded_at_unix: unix_secs(g.loaded_at),
                        load_ms: g.load_time.as_secs_f64() * 1000.0,
                    }
                })
                .collect(),
        }
    }

    /// Reloads `name`, or every engine.
    pub async fn reload(&self, name: Option<&str>) -> ReloadReply {
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => self
                .registry
                .engines()
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
        };
        let mut reply = ReloadReply::default();
        for n in names {
            let r = self.registry.clone();
            let engine = n.clone();
            match tokio::task::spawn_blocking(move || r.reload(&engine)).await {
                Ok(Ok(g)) => reply.reloaded.push(Reloaded {
                    engine: n,
                    generation: g.number,
                }),
                Ok(Err(e)) => reply.failed.push(ReloadFailed {
                    engine: n,
                    error: e.to_string(),
                }),
                Err(e) => reply.failed.push(ReloadFailed {
                    engine: n,
                    error: e.to_string(),
                }),
            }
        }
        reply
    }

    /// Re-reads the config file: engines added, removed or changed, and the
    /// live settings. Listeners, pool and cache sizes need a restart.
    pub async fn reload_config(&self) -> Result<ConfigReloadReply, String> {
        let Some(reload) = self.reload_config.clone() else {
            return Err("this daemon has no config file to re-read".into());
        };
        match tokio::task::spawn_blocking(move || reload()).await {
            Ok(r) => r,
            Err(e) => Err(format!("config reload task failed: {e}")),
        }
    }

    /// Answers one command line with one JSON line.
    pub async fn command(&self, line: &str) -> String {
        fn json(v: &impl Serialize) -> String {
            serde_json::to_string(v)
                .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the reply: {e}\"}}"))
        }
        let error = |error: String| json(&ErrorReply { error });
        match line.parse::<Request>() {
            Err(e) => error(e),
            Ok(Request::Stats) => json(&self.stats()),
            Ok(Request::Version) => json(&self.version()),
            Ok(Request::Engines) => json(&engine_entries(&self.registry)),
            Ok(Request::Reload(name)) => json(&self.reload(name.as_deref()).await),
            Ok(Request::ReloadConfig) => match self.reload_config().await {
                Ok(r) => json(&r),
                Err(e) => error(e),
            },
            Ok(Request::Learn { .. }) => {
                error("learn: the message must follow the line (on the control socket)".into())
            }
        }
    }

    /// Teaches the enabled engines named in `engines` (all when empty)
    /// that `message` is of `class`, each on a fresh instance, as `cordon
    /// learn` does in process: what they learn reaches the daemon's store.
    pub async fn learn(
        &self,
        class: &str,
        engines: &[String],
        message: &[u8],
    ) -> Result<LearnReply, String> {
        use crate::bindings::LearnClass;
        let class = match class {
            "spam" => LearnClass::Spam,
            "ham" => LearnClass::Ham,
            "virus" => LearnClass::Virus,
            _ => LearnClass::Clean,
        };
        let enabled = self.registry.enabled();
        for name in engines {
            if !enabled.iter().any(|g| &*g.name == name.as_str()) {
                return Err(format!(
                    "learn: no enabled engine {:?}",
                    crate::text::escape(name, 64)
                ));
            }
        }
        let envelope = crate::bindings::empty_envelope();
        let mut results = Vec::new();
        for g in enabled
            .iter()
            .filter(|g| engines.is_empty() || engines.iter().any(|n| n.as_str() == &*g.name))
        {
            let r = g.learn(&envelope, message, class, None).await;
            results.push(LearnResult {
                engine: g.name.to_string(),
                outcome: r.as_ref().ok().map(|o| learn_word(*o).to_string()),
                error: r.err().map(|e| e.to_string()),
            });
        }
        Ok(LearnReply { results })
    }

    /// The Prometheus text exposition of [`Control::stats`].
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let entries = self.registry.engines();
        let per = |f: &dyn Fn(&crate::registry::Engine) -> f64| -> Vec<(String, f64)> {
            entries
                .iter()
                .map(|s| (format!("{{engine=\"{}\"}}", s.name()), f(s)))
                .collect()
        };
        use std::sync::atomic::Ordering::Relaxed;
        family(
            "cordon_messages_total",
            "counter",
            "Messages an engine gave an outcome for.",
            per(&|s| s.stats.messages.load(Relaxed) as f64),
        );
        family(
            "cordon_parts_total",
            "counter",
            "Decoded parts scanned.",
            per(&|s| s.stats.parts.load(Relaxed) as f64),
        );
        family(
            "cordon_detections_total",
            "counter",
            "Messages with a detection.",
            per(&|s| s.stats.detections.load(Relaxed) as f64),
        );
        family(
            "cordon_unscannable_total",
            "counter",
            "Messages the engine could not scan.",
            per(&|s| s.stats.unscannable.load(Relaxed) as f64),
        );
        let mut faults = Vec::new();
        for s in &entries {
            for (kind, n) in FaultKind::ALL.iter().zip(&s.stats.faults) {
                faults.push((
                    format!("{{engine=\"{}\",kind=\"{}\"}}", s.name(), kind.as_str()),
                    n.load(Relaxed) as f64,
                ));
            }
        }
        family(
            "cordon_faults_total",
            "counter",
            "Scans that ended in a fault, by kind.",
            faults,
        );
        family(
            "cordon_cache_hits_total",
            "counter",
            "Verdicts served from the cache.",
            per(&|s| s.stats.cache_hits.load(Relaxed) as f64),
        );
        family(
            "cordon_message_seconds_mean",
            "gauge",
            "Mean scan time per message.",
            per(&|s| s.stats.message_time.mean().as_secs_f64()),
        );
        family(
            "cordon_message_seconds_p99",
            "gauge",
            "99th percentile scan time per message (upper bound).",
            per(&|s| s.stats.message_time.quantile(0.99).as_secs_f64()),
        );
        family(
            "cordon_part_seconds_mean",
            "gauge",
            "Mean scan time per decoded part.",
            per(&|s| s.stats.part_time.mean().as_secs_f64()),
        );
        family(
            "cordon_part_seconds_p99",
            "gauge",
            "99th percentile scan time per decoded part (upper bound).",
            per(&|s| s.stats.part_time.quantile(0.99).as_secs_f64()),
        );
        family(
            "cordon_generation",
            "gauge",
            "The generation serving now.",
            per(&|s| s.current().number as f64),
        );
        family(
            "cordon_generation_age_seconds",
            "gauge",
            "Age of the generation serving now.",
            per(&|s| {
                s.current()
                    .loaded_at
                    .elapsed()
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            }),
        );
        family(
            "cordon_generations_alive",
            "gauge",
            "Generations alive (current and retiring).",
            per(&|s| s.alive() as f64),
        );
        family(
            "cordon_generation_image_bytes",
            "gauge",
            "Pre-initialised image of the generation serving now.",
            per(&|s| s.current().image_bytes as f64),
        );
        let mut reloads = Vec::new();
        for s in &entries {
            reloads.push((
                format!("{{engine=\"{}\",result=\"ok\"}}", s.name()),
                s.stats.reloads_ok.load(Relaxed) as f64,
            ));
            reloads.push((
                format!("{{engine=\"{}\",result=\"failed\"}}", s.name()),
                s.stats.reloads_failed.load(Relaxed) as f64,
            ));
        }
        family(
            "cordon_reloads_total",
            "counter",
            "Reloads, by result.",
            reloads,
        );
        let mut calls = Vec::new();
        for s in &entries {
            for ((capability, result), n) in crate::engine::stats::CAPABILITY_RESULTS
                .iter()
                .zip(&s.stats.capability_calls)
            {
                calls.push((
                    format!(
                        "{{engine=\"{}\",capability=\"{capability}\",result=\"{result}\"}}",
                        s.name()
                    ),
                    n.load(Relaxed) as f64,
                ));
            }
        }
        family(
            "cordon_capability_calls_total",
            "counter",
            "Capability calls (dns lookups), by capability and result.",
            calls,
        );
        if let Some(c) = &self.registry.cache {
            let st = c.stats();
            family(
                "cordon_cache_entries",
                "gauge",
                "Verdicts in the cache.",
                vec![(String::new(), st.entries as f64)],
            );
            family(
                "cordon_cache_bytes",
                "gauge",
                "Estimated bytes of verdicts in the cache.",
                vec![(String::new(), st.bytes as f64)],
            );
        }
        family(
            "cordon_resident_memory_bytes",
            "gauge",
            "Resident memory of the process.",
            vec![(String::new(), rss_bytes(Pid::Current).unwrap_or(0) as f64)],
        );
        out
    }
}

/// How long a `learn` client may take to send its message.
const LEARN_READ_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// `learn`'s outcome as the contract spells it.
fn learn_word(o: crate::bindings::LearnOutcome) -> &'static str {
    use crate::bindings::LearnOutcome;
    match o {
        LearnOutcome::Learned => "learned",
        LearnOutcome::AlreadyLearned => "already-learned",
        LearnOutcome::Unsupported => "unsupported",
    }
}

/// Serves the control socket until `stop` turns true.
pub async fn serve_socket(
    listener: Listener,
    control: Arc<Control>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some((stream, _)) = listener.next(&mut stop).await {
        let c = control.clone();
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(stream);
            let mut line = String::new();
            // One short line; a client that sends more is cut off.
            let mut r = BufReader::new(r);
            if (&mut r).take(4096).read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match line.trim().parse::<Request>() {
                Ok(Request::Learn {
                    class,
                    bytes,
                    engines,
                }) => {
                    // The message follows, in full and in time, or the
                    // client is dropped; memory grows with what arrives,
                    // not with what the line announced.
                    let mut message = Vec::new();
                    let mut body = (&mut r).take(bytes);
                    let read =
                        tokio::time::timeout(LEARN_READ_TIME, body.read_to_end(&mut message));
                    if !matches!(read.await, Ok(Ok(n)) if n as u64 == bytes) {
                        return;
                    }
                    match c.learn(&class, &engines, &message).await {
                        Ok(reply) => serde_json::to_string(&reply).unwrap_or_default(),
                        Err(error) => {
                            serde_json::to_string(&ErrorReply { error }).unwrap_or_default()
                        }
                    }
                }
                _ => c.command(line.trim()).await,
            };
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// Serves `GET /metrics` and `GET /stats` until `stop` turns true.
pub async fn serve_http(
    listener: Listener,
    control: Arc<Control>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some((stream, _)) = listener.next(&mut stop).await {
        let c = control.clone();
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(stream);
            let mut r = BufReader::new(r.take(16 * 1024));
            let mut request = String::new();
            if r.read_line(&mut request).await.is_err() {
                return;
            }
            // Read the rest of the head so the client sees a clean close.
            let mut line = String::new();
            while r.read_line(&mut line).await.is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body) = match (request.split_whitespace().next(), path) {
                (Some("GET"), "/metrics") => ("200 OK", "text/plain; version=0.0.4", c.metrics()),
                (Some("GET"), "/stats") => (
                    "200 OK",
                    "application/json",
                    format!(
                        "{}\n",
                        serde_json::to_string(&c.stats()).unwrap_or_default()
                    ),
                ),
                (Some("GET"), _) => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /stats\n".into(),
                ),
                _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
            };
            let _ = w
                .write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        });
    }
}
