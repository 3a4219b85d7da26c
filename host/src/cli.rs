//! The `cordon` subcommands: `serve` (the milter daemon), `scan` (the
//! test-scan CLI), `engines` and `check-config`.
//!
//! Arguments are parsed in two stages: clap reads raw flags into [`Cli`],
//! then [`EngineSource::resolve`] turns them into a validated config, so
//! every later step works with checked values.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::json;

use crate::config::{Config, ValidConfig};
use crate::engine::EngineOutcome;
use crate::message::{self, Operand};
use crate::policy::{self, Action, Decision, Policy};
use crate::registry::Registry;
use crate::scan::{self, Message, ScanReport};

/// Exit code: every message clean.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: something was detected.
pub const EXIT_FOUND: i32 = 1;
/// Exit code: an error (bad config, unreadable input, a scan that failed).
pub const EXIT_ERROR: i32 = 2;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cordon",
    version,
    about = "Scan mail with sandboxed WebAssembly engines"
)]
pub struct Cli {
    /// Log filter for stderr (`warn`, `info`, `debug`, or tracing
    /// directives). Default: `info` for `serve`, `warn` otherwise.
    #[arg(long, global = true, env = "CORDON_LOG")]
    pub log: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the milter daemon for Postfix or Sendmail, in the foreground.
    Serve(ServeArgs),
    /// Scan files, directories, mbox files, Maildir folders or stdin (`-`)
    /// and print what an MTA would be told.
    Scan(ScanArgs),
    /// List the configured engines with their versions and limits.
    Engines(EnginesArgs),
    /// Validate a config file and load every engine in it.
    CheckConfig(EngineSource),
    /// Internal: compile a component read from stdin into an artifact file
    /// (run by cordon itself, in a child process with bounds).
    #[command(name = "compile-component", hide = true)]
    CompileComponent {
        /// Where to write the artifact.
        out: std::path::PathBuf,
        /// The component's name for error messages.
        label: String,
    },
    /// Counters and timings of a running daemon, per engine.
    Stats(ControlArgs),
    /// Versions of cordon and of each engine in a running daemon.
    Version(ControlArgs),
    /// Load a new generation of an engine (or all) in a running daemon.
    Reload(ReloadArgs),
}

/// Where engines come from: a config file, or component files.
#[derive(Debug, Args)]
pub struct EngineSource {
    /// Config file. Default: $CORDON_CONFIG, ./cordon.toml,
    /// /etc/cordon/cordon.toml, the first that exists.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "engine")]
    pub config: Option<PathBuf>,
    /// A component to scan with, default settings and limits (repeatable).
    #[arg(long, value_name = "WASM")]
    pub engine: Vec<PathBuf>,
}

/// `cordon scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Engines.
    #[command(flatten)]
    pub source: EngineSource,
    /// One JSON object per line: a `message` object per message, then a
    /// `summary` object.
    #[arg(long)]
    pub json: bool,
    /// Print only messages that were not accepted.
    #[arg(long, short = 'i')]
    pub infected: bool,
    /// Leave out the summary.
    #[arg(long)]
    pub no_summary: bool,
    /// Messages scanned at once (default: as many as the instance pool
    /// holds, divided among the engines).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Files, directories, mbox files, Maildir folders; `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
}

/// `cordon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Engines and policy.
    #[command(flatten)]
    pub source: EngineSource,
    /// Where to listen (repeatable; replaces `milter.listen`):
    /// `unix:/path`, `inet:port@host`, `inet6:port@host`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
}

/// `cordon engines`.
#[derive(Debug, Args)]
pub struct EnginesArgs {
    /// Engines.
    #[command(flatten)]
    pub source: EngineSource,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Ask the running daemon (its control socket) instead of loading the
    /// config.
    #[arg(long)]
    pub live: bool,
    /// The control socket, for `--live` (default: the config's
    /// `control.socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Commands that talk to a running daemon.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The config, to find `control.socket`.
    #[command(flatten)]
    pub source: EngineSource,
    /// The control socket (default: the config's `control.socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// `cordon reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The engine to reload; every engine when absent.
    pub engine: Option<String>,
    /// Re-read the config file instead (engines added, removed, changed;
    /// policy), as SIGHUP does.
    #[arg(long, conflicts_with = "engine")]
    pub config_file: bool,
    /// Where the daemon is.
    #[command(flatten)]
    pub control: ControlArgs,
}

impl EngineSource {
    /// Reads and validates the config these flags name.
    pub fn resolve(&self) -> anyhow::Result<ValidConfig> {
        if !self.engine.is_empty() {
            let cli = Path::new("<command line>");
            return Ok(Config::from_components(&self.engine).validate(cli)?);
        }
        let path = match &self.config {
            Some(p) => p.clone(),
            None => find_config()?,
        };
        Ok(Config::load(&path)?)
    }
}

fn find_config() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("CORDON_CONFIG").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("cordon.toml"));
    candidates.push(PathBuf::from("/etc/cordon/cordon.toml"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no config file: pass --config FILE or --engine WASM (looked for {})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Runs a parsed command line and returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => serve_command(args).await,
        Command::Scan(args) => scan_command(args).await,
        Command::Engines(args) => engines_command(args).await,
        Command::CheckConfig(source) => check_config(source).await,
        Command::Stats(args) => stats_command(args).await,
        Command::Version(args) => version_command(args).await,
        Command::Reload(args) => reload_command(args).await,
        Command::CompileComponent { out, label } => Ok(tokio::task::spawn_blocking(move || {
            crate::engine::compiler::child_main(&out, &label)
        })
        .await?),
    }
}

async fn load_registry(config: ValidConfig) -> anyhow::Result<Arc<Registry>> {
    let registry = tokio::task::spawn_blocking(move || Registry::load(&config))
        .await
        .context("engine loading task failed")??;
    Ok(Arc::new(registry))
}

async fn serve_command(args: ServeArgs) -> anyhow::Result<i32> {
    let mut config = args.source.resolve()?;
    if !args.listen.is_empty() {
        config.milter.listen = args
            .listen
            .iter()
            .map(|l| {
                l.parse()
                    .map_err(|e: String| anyhow::anyhow!("--listen {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if config.milter.listen.is_empty() {
        anyhow::bail!(
            "{}: nowhere to listen: set milter.listen or pass --listen unix:/path",
            config.source.display()
        );
    }
    let milter = config.milter.clone();
    let control = config.control.clone();
    let reload = config.reload.clone();
    let live = crate::milter::Live::from_config(&config);
    let config_path = config.source.clone();
    let started = Instant::now();
    let registry = load_registry(config).await?;
    for s in registry.slots().iter().filter(|s| s.enabled()) {
        let g = s.current();
        tracing::info!(
            "engine {} {} {} (definitions {}) loaded in {:.0} ms",
            s.name(),
            g.info.name,
            g.info.version,
            g.info.definitions_version,
            g.load_time.as_secs_f64() * 1000.0
        );
    }
    let mut listeners = Vec::new();
    for addr in &milter.listen {
        let l = crate::milter::Listener::bind(addr, milter.socket_mode).await?;
        tracing::info!("listening on {}", l.local_addr());
        listeners.push(l);
    }
    let shared = Arc::new(crate::milter::Shared::new(registry.clone(), live));
    let daemon = Arc::new(crate::control::Daemon {
        registry: registry.clone(),
        shared: shared.clone(),
        config_path,
        started,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut control_path = None;
    if let Some(path) = &control.socket {
        let addr = crate::config::ListenAddr::Unix(path.clone());
        let crate::milter::Listener::Unix(l, _) =
            crate::milter::Listener::bind(&addr, control.socket_mode).await?
        else {
            unreachable!("a unix address binds a unix listener")
        };
        tracing::info!("control socket {}", path.display());
        tokio::spawn(crate::control::serve_socket(
            l,
            daemon.clone(),
            stop_rx.clone(),
        ));
        control_path = Some(path.clone());
    }
    if let Some(addr) = control.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
        tokio::spawn(crate::control::serve_http(
            l,
            daemon.clone(),
            stop_rx.clone(),
        ));
    }
    if reload.watch {
        tokio::spawn(crate::watch::run(
            registry.clone(),
            Duration::from_millis(reload.interval_ms),
            stop_rx.clone(),
        ));
    }
    {
        let daemon = daemon.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot install a SIGHUP handler: config reload by signal is off");
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the config");
                        daemon.reload_config().await;
                    }
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                }
            }
        });
    }
    tracing::info!(
        "ready in {:.1} s, at most {} sessions",
        started.elapsed().as_secs_f64(),
        milter.max_sessions
    );
    crate::milter::notify_ready();
    let served = crate::milter::serve(
        listeners,
        shared,
        crate::milter::Limits {
            max_sessions: milter.max_sessions,
            shutdown_timeout: milter.shutdown_timeout,
        },
        shutdown_signal(),
    )
    .await;
    stop_tx.send_replace(true);
    if let Some(p) = control_path {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("stopped after {served} session(s)");
    Ok(EXIT_CLEAN)
}

/// Where the control socket is: `--socket`, else the config's
/// `control.socket`.
fn control_socket(socket: &Option<PathBuf>, source: &EngineSource) -> anyhow::Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    let config = source.resolve()?;
    config.control.socket.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no control.socket configured; pass --socket PATH",
            config.source.display()
        )
    })
}

async fn control_command(args: &ControlArgs, command: &str) -> anyhow::Result<serde_json::Value> {
    let socket = control_socket(&args.socket, &args.source)?;
    crate::control::request(&socket, command).await
}

async fn stats_command(args: ControlArgs) -> anyhow::Result<i32> {
    let v = control_command(&args, "stats").await?;
    if args.json {
        println!("{v}");
        return Ok(EXIT_CLEAN);
    }
    let mib = |b: &serde_json::Value| b.as_f64().unwrap_or(0.0) / 1_048_576.0;
    println!(
        "up {:.0} s, resident {:.1} MiB (peak {:.1} MiB)",
        v["uptime_s"].as_f64().unwrap_or(0.0),
        mib(&v["rss_bytes"]),
        mib(&v["peak_rss_bytes"])
    );
    if let Some(c) = v.get("cache").filter(|c| !c.is_null()) {
        println!(
            "cache: {} entries, {:.1} MiB, {} hits, {} misses",
            c["entries"],
            mib(&c["bytes"]),
            c["hits"],
            c["misses"]
        );
    }
    for e in v["engines"].as_array().into_iter().flatten() {
        println!(
            "{}: generation {} ({:.0} s old, {} alive, image {:.1} MiB){}",
            e["engine"].as_str().unwrap_or("?"),
            e["generation"],
            e["generation_age_s"].as_f64().unwrap_or(0.0),
            e["generations_alive"],
            mib(&e["image_bytes"]),
            if e["enabled"].as_bool() == Some(false) {
                ", disabled"
            } else {
                ""
            }
        );
        let faults: Vec<String> = e["faults"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "  messages {}, parts {}, detections {}, unscannable {}, cache hits {}, faults: {}",
            e["messages"],
            e["parts"],
            e["detections"],
            e["unscannable"],
            e["cache_hits"],
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            }
        );
        println!(
            "  per message {:.2} ms mean, {:.2} ms p99; per part {:.3} ms mean, {:.3} ms p99; reloads {} ok, {} failed",
            e["message_mean_ms"].as_f64().unwrap_or(0.0),
            e["message_p99_ms"].as_f64().unwrap_or(0.0),
            e["part_mean_ms"].as_f64().unwrap_or(0.0),
            e["part_p99_ms"].as_f64().unwrap_or(0.0),
            e["reloads_ok"],
            e["reloads_failed"]
        );
        if let Some(err) = e["last_reload_error"].as_str() {
            println!("  last reload failed: {err}");
        }
    }
    Ok(EXIT_CLEAN)
}

async fn version_command(args: ControlArgs) -> anyhow::Result<i32> {
    let v = control_command(&args, "version").await?;
    if args.json {
        println!("{v}");
        return Ok(EXIT_CLEAN);
    }
    println!("cordon {}", v["cordon"].as_str().unwrap_or("?"));
    for e in v["engines"].as_array().into_iter().flatten() {
        let loaded = e["loaded_at_unix"].as_f64().unwrap_or(0.0);
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() - loaded)
            .unwrap_or(0.0);
        println!(
            "{}: {} {} by {}, definitions {}, generation {}, loaded {:.0} s ago in {:.0} ms",
            e["engine"].as_str().unwrap_or("?"),
            e["name"].as_str().unwrap_or("?"),
            e["version"].as_str().unwrap_or("?"),
            e["vendor"].as_str().unwrap_or("?"),
            e["definitions_version"].as_str().unwrap_or("?"),
            e["generation"],
            ago,
            e["load_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(EXIT_CLEAN)
}

async fn reload_command(args: ReloadArgs) -> anyhow::Result<i32> {
    let command = match (&args.engine, args.config_file) {
        (_, true) => "reload-config".to_string(),
        (Some(e), false) => format!("reload {e}"),
        (None, false) => "reload".to_string(),
    };
    let v = control_command(&args.control, &command).await?;
    if args.control.json {
        println!("{v}");
    } else if args.config_file {
        println!("{}", v["change"]);
    } else {
        for r in v["reloaded"].as_array().into_iter().flatten() {
            println!(
                "{}: generation {} serving",
                r["engine"].as_str().unwrap_or("?"),
                r["generation"]
            );
        }
        for f in v["failed"].as_array().into_iter().flatten() {
            eprintln!(
                "{}: reload rejected: {}",
                f["engine"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?")
            );
        }
    }
    let failed = v["failed"].as_array().is_some_and(|f| !f.is_empty())
        || v["change"]["failed"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    Ok(if failed { EXIT_ERROR } else { EXIT_CLEAN })
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

async fn check_config(source: EngineSource) -> anyhow::Result<i32> {
    let config = source.resolve()?;
    let where_ = config.source.display().to_string();
    let registry = load_registry(config).await?;
    let names: Vec<String> = registry
        .slots()
        .iter()
        .map(|s| {
            let g = s.current();
            format!(
                "{} {} (definitions {}){}",
                g.info.name,
                g.info.version,
                g.info.definitions_version,
                if s.enabled() { "" } else { ", disabled" }
            )
        })
        .collect();
    println!(
        "{where_}: OK, {} engine(s): {}",
        names.len(),
        names.join("; ")
    );
    Ok(EXIT_CLEAN)
}

async fn engines_command(args: EnginesArgs) -> anyhow::Result<i32> {
    if args.live {
        let socket = control_socket(&args.socket, &args.source)?;
        let v = crate::control::request(&socket, "engines").await?;
        for e in v.as_array().into_iter().flatten() {
            if args.json {
                println!("{e}");
            } else {
                println!(
                    "{}: {} {}, definitions {}, generation {}{}",
                    e["engine"].as_str().unwrap_or("?"),
                    e["name"].as_str().unwrap_or("?"),
                    e["version"].as_str().unwrap_or("?"),
                    e["definitions_version"].as_str().unwrap_or("?"),
                    e["generation"],
                    if e["enabled"].as_bool() == Some(false) {
                        " (disabled)"
                    } else {
                        ""
                    }
                );
            }
        }
        return Ok(EXIT_CLEAN);
    }
    let registry = load_registry(args.source.resolve()?).await?;
    let rows: Vec<serde_json::Value> = registry
        .slots()
        .iter()
        .map(|s| {
            let g = s.current();
            json!({
                "engine": s.name().to_string(),
                "enabled": s.enabled(),
                "name": g.info.name,
                "vendor": g.info.vendor,
                "version": g.info.version,
                "definitions_version": g.info.definitions_version,
                "wants_parts": g.info.wants_parts,
                "component": g.component.display().to_string(),
                "generation": g.number,
                "load_ms": g.load_time.as_millis() as u64,
                "image_bytes": g.image_bytes,
                "limits": {
                    "timeout_ms": g.limits.timeout.as_millis() as u64,
                    "memory_mib": g.limits.memory_bytes >> 20,
                    "max_message_bytes": g.limits.max_message_bytes,
                    "max_concurrency": g.limits.max_concurrency,
                },
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(EXIT_CLEAN);
    }
    writeln!(
        out,
        "{:<12} {:<10} {:<14} {:<9} {:<20} {:>8} {:>7} {:>5} {:>10}",
        "ENGINE",
        "NAME",
        "VENDOR",
        "VERSION",
        "DEFINITIONS",
        "TIMEOUT",
        "MEMORY",
        "CONC",
        "MAX-SIZE"
    )?;
    for (s, r) in registry.slots().iter().zip(&rows) {
        let g = s.current();
        writeln!(
            out,
            "{:<12} {:<10} {:<14} {:<9} {:<20} {:>6}ms {:>4}MiB {:>5} {:>10}{}",
            s.name(),
            g.info.name,
            g.info.vendor,
            g.info.version,
            g.info.definitions_version,
            r["limits"]["timeout_ms"],
            r["limits"]["memory_mib"],
            g.limits.max_concurrency,
            g.limits.max_message_bytes,
            if s.enabled() { "" } else { "  (disabled)" },
        )?;
    }
    Ok(EXIT_CLEAN)
}

/// The result for one input.
struct Scanned {
    label: String,
    result: Result<(ScanReport, Decision), String>,
}

#[derive(Default)]
struct Totals {
    messages: u64,
    detected: u64,
    errors: u64,
}

async fn scan_command(args: ScanArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let config = args.source.resolve()?;
    let mime = Arc::new(config.mime.clone());
    let policy = Arc::new(config.policy.clone());
    let registry = load_registry(config).await?;
    let engines = registry.enabled();
    let jobs = args
        .jobs
        .unwrap_or_else(|| (registry.runtime().pool_instances() as usize / engines.len()).max(1))
        .max(1);

    let operands = message::expand(&args.inputs);
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(operands.len() as u64),
        if std::io::stderr().is_terminal() && !args.json && operands.len() > 1 {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let mut results = futures_util::stream::iter(operands)
        .map(|op| {
            let engines = engines.clone();
            let policy = policy.clone();
            let mime = mime.clone();
            async move { scan_operand(op, &engines, &policy, &mime).await }
        })
        .buffered(jobs);

    let mut totals = Totals::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(batch) = results.next().await {
        progress.inc(1);
        for s in batch {
            totals.messages += 1;
            match &s.result {
                Err(_) => totals.errors += 1,
                Ok((_, d)) => {
                    if d.action == Action::Tempfail {
                        totals.errors += 1;
                    } else if !d.threats.is_empty() {
                        totals.detected += 1;
                    }
                }
            }
            progress.suspend(|| print_result(&mut out, &s, &args))?;
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "type": "summary",
                "engines": engines.iter().map(|g| g.name.to_string()).collect::<Vec<_>>(),
                "messages": totals.messages,
                "detected": totals.detected,
                "errors": totals.errors,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                "peak_rss_kib": crate::stats::peak_rss_bytes().map(|b| b / 1024),
            })
        )?;
    } else if !args.no_summary {
        writeln!(out, "\n----------- SCAN SUMMARY -----------")?;
        writeln!(
            out,
            "Engines: {}",
            engines
                .iter()
                .map(|g| format!("{} ({})", g.name, g.info.definitions_version))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(out, "Scanned messages: {}", totals.messages)?;
        writeln!(out, "Detected messages: {}", totals.detected)?;
        writeln!(out, "Errors: {}", totals.errors)?;
        writeln!(out, "Time: {:.3} sec", elapsed.as_secs_f64())?;
        if let Some(b) = crate::stats::peak_rss_bytes() {
            writeln!(out, "Peak memory: {:.1} MiB", b as f64 / 1_048_576.0)?;
        }
    }
    out.flush()?;
    Ok(if totals.errors > 0 {
        EXIT_ERROR
    } else if totals.detected > 0 {
        EXIT_FOUND
    } else {
        EXIT_CLEAN
    })
}

async fn scan_operand(
    op: Operand,
    engines: &[Arc<crate::engine::Generation>],
    policy: &Policy,
    mime: &crate::mime::MimeLimits,
) -> Vec<Scanned> {
    let inputs = match tokio::task::spawn_blocking(move || message::read(&op)).await {
        Ok(i) => i,
        Err(e) => {
            return vec![Scanned {
                label: "?".into(),
                result: Err(format!("reading task failed: {e}")),
            }];
        }
    };
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let result = match input.bytes {
            Err(e) => Err(e),
            Ok(bytes) => {
                let message = Message::from_bytes(bytes);
                let names = message::header_names(&message.bytes);
                let id = scan::scan_id();
                let size = message.bytes.len() as u64;
                let j = scan::judge(
                    engines, &message, size, mime, None, policy, &names, &id, None,
                )
                .await;
                Ok((j.report, j.decision))
            }
        };
        out.push(Scanned {
            label: input.label,
            result,
        });
    }
    out
}

fn print_result(out: &mut impl Write, s: &Scanned, args: &ScanArgs) -> std::io::Result<()> {
    if args.json {
        let value = match &s.result {
            Err(e) => json!({"type": "message", "path": s.label, "error": e}),
            Ok((report, decision)) => json!({
                "type": "message",
                "path": s.label,
                "decision": decision,
                "elapsed_ms": report.elapsed.as_secs_f64() * 1000.0,
                "engines": report.results.iter().map(|r| {
                    let mut v = json!({
                        "engine": &*r.engine,
                        "generation": r.generation,
                        "queued_ms": r.timing.queued.as_secs_f64() * 1000.0,
                        "run_ms": r.timing.run.as_secs_f64() * 1000.0,
                    });
                    match &r.outcome {
                        EngineOutcome::Verdict(verdict) => {
                            v["outcome"] = json!(match &verdict.outcome {
                                crate::bindings::Outcome::Clean => "clean",
                                crate::bindings::Outcome::Detected(_) => "detected",
                                crate::bindings::Outcome::Unscannable(_) => "unscannable",
                            });
                            v["spam_score"] = json!(verdict.spam_score);
                            v["rules"] = json!(verdict.rules);
                        }
                        EngineOutcome::Fault(f) => {
                            v["outcome"] = json!("fault");
                            v["fault"] = json!(f);
                        }
                    }
                    v
                }).collect::<Vec<_>>(),
            }),
        };
        return writeln!(out, "{value}");
    }
    // The label is a file name and the details may quote an engine: one
    // safe line each, whatever bytes they hold.
    let label = crate::text::escape(&s.label, 4096);
    let label = &label;
    match &s.result {
        Err(e) => writeln!(out, "{label}: ERROR {}", crate::text::escape(e, 4096)),
        Ok((_, d)) => {
            if args.infected && d.action == Action::Accept && d.threats.is_empty() {
                return Ok(());
            }
            let reply = d
                .reply
                .as_ref()
                .map(|r| format!(" [{} {r}]", d.action.as_str()))
                .unwrap_or_default();
            match d.action {
                Action::Accept if d.threats.is_empty() => writeln!(out, "{label}: OK"),
                Action::Accept => writeln!(
                    out,
                    "{}: {} FOUND [accept, tagged]",
                    label,
                    policy::threat_names(&d.threats)
                ),
                Action::Reject | Action::Discard | Action::Quarantine => writeln!(
                    out,
                    "{}: {} FOUND{}",
                    label,
                    policy::threat_names(&d.threats),
                    if d.action == Action::Reject {
                        reply
                    } else {
                        format!(" [{}]", d.action.as_str())
                    }
                ),
                Action::Tempfail => {
                    let why: Vec<String> = d
                        .failures
                        .iter()
                        .map(|f| {
                            format!(
                                "{} {}: {}",
                                f.engine,
                                f.kind,
                                crate::text::escape(&f.detail, 1024)
                            )
                        })
                        .collect();
                    writeln!(out, "{label}: ERROR {}{reply}", why.join("; "))
                }
            }
        }
    }
}
