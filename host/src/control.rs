//! The operator's view of a running daemon: a unix control socket (one
//! command per connection, one JSON answer) for `cordon stats`, `cordon
//! version`, `cordon engines --live` and `cordon reload`, and an optional
//! HTTP listener on loopback with Prometheus `/metrics` and JSON `/stats`.
//!
//! Commands: `stats`, `version`, `engines`, `reload` (every engine),
//! `reload NAME`, `reload-config`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;

use crate::config::Config;
use crate::milter::{Live, Shared};
use crate::registry::Registry;

/// What the control socket steers.
pub struct Daemon {
    /// The engines.
    pub registry: Arc<Registry>,
    /// The milter sessions' shared state (its live config).
    pub shared: Arc<Shared>,
    /// The config file, re-read by `reload-config` and SIGHUP.
    pub config_path: PathBuf,
    /// When the daemon started.
    pub started: Instant,
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Daemon {
    /// Per engine figures and the cache's.
    pub fn stats(&self) -> Value {
        let engines: Vec<Value> = self
            .registry
            .slots()
            .iter()
            .map(|s| {
                let g = s.current();
                let mut v = serde_json::to_value(s.stats.snapshot()).unwrap_or_default();
                let age = g
                    .loaded_at
                    .elapsed()
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                v["engine"] = json!(&*g.name);
                v["enabled"] = json!(s.enabled());
                v["generation"] = json!(g.number);
                v["generation_age_s"] = json!(age);
                v["generations_alive"] = json!(s.alive());
                v["image_bytes"] = json!(g.image_bytes);
                v["code_bytes"] = json!(g.code_bytes);
                v["definitions_version"] = json!(g.info.definitions_version);
                v["last_reload_error"] = json!(s.last_error());
                v
            })
            .collect();
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "rss_bytes": crate::stats::rss_bytes(),
            "peak_rss_bytes": crate::stats::peak_rss_bytes(),
            "cache": self.registry.cache.as_ref().map(|c| c.stats()),
            "engines": engines,
        })
    }

    /// Versions: cordon's and each engine's, with definitions and load
    /// time.
    pub fn version(&self) -> Value {
        json!({
            "cordon": env!("CARGO_PKG_VERSION"),
            "engines": self.registry.slots().iter().map(|s| {
                let g = s.current();
                json!({
                    "engine": &*g.name,
                    "name": g.info.name,
                    "vendor": g.info.vendor,
                    "version": g.info.version,
                    "definitions_version": g.info.definitions_version,
                    "generation": g.number,
                    "loaded_at_unix": unix_secs(g.loaded_at),
                    "load_ms": g.load_time.as_secs_f64() * 1000.0,
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// The engines, as `cordon engines --json` prints them, live.
    pub fn engines(&self) -> Value {
        json!(
            self.registry
                .slots()
                .iter()
                .map(|s| {
                    let g = s.current();
                    let spec = s.spec();
                    json!({
                        "engine": &*g.name,
                        "enabled": s.enabled(),
                        "name": g.info.name,
                        "vendor": g.info.vendor,
                        "version": g.info.version,
                        "definitions_version": g.info.definitions_version,
                        "generation": g.number,
                        "component": spec.component,
                        "definitions": spec.definitions,
                        "limits": spec.limits,
                    })
                })
                .collect::<Vec<_>>()
        )
    }

    /// Reloads `name`, or every engine.
    pub async fn reload(&self, name: Option<&str>) -> Value {
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => self
                .registry
                .slots()
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
        };
        let mut reloaded = Vec::new();
        let mut failed = Vec::new();
        for n in names {
            let r = self.registry.clone();
            let engine = n.clone();
            match tokio::task::spawn_blocking(move || r.reload(&engine)).await {
                Ok(Ok(g)) => reloaded.push(json!({"engine": n, "generation": g.number})),
                Ok(Err(e)) => failed.push(json!({"engine": n, "error": e.to_string()})),
                Err(e) => failed.push(json!({"engine": n, "error": e.to_string()})),
            }
        }
        json!({"reloaded": reloaded, "failed": failed})
    }

    /// Re-reads the config file: engines added, removed or changed, and the
    /// policy, profiles and MIME limits. Listeners, pool and cache sizes
    /// need a restart.
    pub async fn reload_config(&self) -> Value {
        let path = self.config_path.clone();
        let registry = self.registry.clone();
        let r = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path)?;
            let change = registry.apply_config(&config);
            Ok::<_, anyhow::Error>((config, change))
        })
        .await;
        match r {
            Ok(Ok((config, change))) => {
                self.shared.set_live(Live::from_config(&config));
                tracing::info!(
                    "config {} reloaded: added {:?}, removed {:?}, reloaded {:?}, failed {:?}",
                    self.config_path.display(),
                    change.added,
                    change.removed,
                    change.reloaded,
                    change.failed
                );
                json!({"config": self.config_path, "change": change})
            }
            Ok(Err(e)) => {
                tracing::error!("config reload rejected, the old config stays: {e:#}");
                json!({"error": format!("{e:#}")})
            }
            Err(e) => json!({"error": e.to_string()}),
        }
    }

    /// Answers one command.
    pub async fn command(&self, line: &str) -> Value {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("stats"), None, _) => self.stats(),
            (Some("version"), None, _) => self.version(),
            (Some("engines"), None, _) => self.engines(),
            (Some("reload"), name, None) => self.reload(name).await,
            (Some("reload-config"), None, _) => self.reload_config().await,
            _ => json!({"error": format!(
                "unknown command {line:?}: stats, version, engines, reload [ENGINE], reload-config"
            )}),
        }
    }

    /// The Prometheus text exposition of [`Daemon::stats`].
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let slots = self.registry.slots();
        let per = |f: &dyn Fn(&crate::registry::Slot) -> f64| -> Vec<(String, f64)> {
            slots
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
        for s in &slots {
            for (kind, n) in crate::stats::FAULT_KINDS.iter().zip(&s.stats.faults) {
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
        for s in &slots {
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
            vec![(String::new(), crate::stats::rss_bytes().unwrap_or(0) as f64)],
        );
        out
    }
}

/// Serves the control socket until `stop` turns true.
pub async fn serve_socket(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                let at = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
                tracing::warn!(
                    "control socket {} accept failed: {e}",
                    at.unwrap_or_default()
                );
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            // One short line; a client that sends more is cut off.
            let mut r = BufReader::new(r.take(4096));
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = d.command(line.trim()).await;
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// Serves `GET /metrics` and `GET /stats` until `stop` turns true.
pub async fn serve_http(
    listener: TcpListener,
    daemon: Arc<Daemon>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                let at = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::warn!("metrics listener {at} accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
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
                (Some("GET"), "/metrics") => ("200 OK", "text/plain; version=0.0.4", d.metrics()),
                (Some("GET"), "/stats") => {
                    ("200 OK", "application/json", format!("{}\n", d.stats()))
                }
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

/// Sends `command` to the control socket at `socket` and returns the
/// answer.
pub async fn request(socket: &Path, command: &str) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach cordon's control socket {} (is `cordon serve` running?)",
            socket.display()
        )
    })?;
    s.write_all(format!("{command}\n").as_bytes()).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    let v: Value = serde_json::from_str(answer.trim())
        .with_context(|| format!("control socket {}: not JSON: {answer:?}", socket.display()))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("{e}");
    }
    Ok(v)
}
