//! The `cordon` subcommands: `serve` (the daemon), `scan` (the test-scan
//! CLI, in `scan`), `engines`, `check-config`, and the operator commands
//! that talk to a running daemon (`stats`, `version`, `reload`, `engines
//! --live`, in `operator`).
//!
//! Arguments are parsed in two stages: clap reads raw flags into [`Cli`],
//! then [`EngineSource::resolve`] turns them into a validated config, so
//! every later step works with checked values.

mod engine_c;
mod engine_new;
mod engine_test;
mod learn;
mod operator;
mod scan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ValidConfig};
use crate::daemon::Daemon;
use crate::registry::Registry;

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
    /// Tell engines what messages are (spam, ham, virus, clean): each
    /// message goes to the engines' `learn`.
    Learn(learn::LearnArgs),
    /// For engine vendors: test a component.
    #[command(subcommand)]
    Engine(EngineCommand),
    /// Internal: compile a component read from stdin into an artifact file
    /// (run by cordon itself, in a child process with bounds).
    #[command(name = "compile-component", hide = true)]
    CompileComponent {
        /// Where to write the artifact.
        out: std::path::PathBuf,
        /// The component's name for error messages.
        label: String,
    },
    /// Internal: build an engine's pre-initialised snapshot from a request
    /// and component read from stdin (run by cordon itself, in a child
    /// process, so the build's memory never lands in the daemon).
    #[command(name = "build-snapshot", hide = true)]
    BuildSnapshot,
    /// Counters and timings of a running daemon, per engine.
    Stats(ControlArgs),
    /// Versions of cordon and of each engine in a running daemon.
    Version(ControlArgs),
    /// Load a new generation of an engine (or all) in a running daemon.
    Reload(ReloadArgs),
}

/// `cordon engine ...`: the vendor kit.
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Make a working engine project to start from (source, build script,
    /// config, self-test samples), which builds outside cordon's
    /// repository.
    New(engine_new::EngineNewArgs),
    /// Run the conformance suite on a component: it loads, says who it is,
    /// detects EICAR or GTUBE (or the given samples), passes clean mail,
    /// gives the same verdicts every time, stays within its limits, and
    /// answers `learn`; with load and scan figures. Exit 0 when all pass.
    Test(engine_test::EngineTestArgs),
    /// Make a component of a core module built for wasm32-wasi as a
    /// reactor with the contract's bindings linked in (a C engine: see
    /// `cordon engine new --lang c`), with the preview1 adapter of the
    /// wasmtime cordon runs on.
    Componentize(engine_c::ComponentizeArgs),
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
    /// A setting for the engines given with --engine, as in
    /// `[engines.NAME.settings]` (repeatable).
    #[arg(long, value_name = "KEY=VALUE", requires = "engine")]
    pub setting: Vec<String>,
    /// The definitions directory of the engines given with --engine.
    #[arg(long, value_name = "DIR", requires = "engine")]
    pub definitions: Option<PathBuf>,
    /// A capability to grant the engines given with --engine (`dns`,
    /// `store`), as `[engines.NAME] capabilities` (repeatable).
    #[arg(long, value_name = "CAPABILITY", requires = "engine")]
    pub grant: Vec<String>,
    /// A DNS server for the `dns` capability, as `[dns] servers`
    /// (repeatable; default: /etc/resolv.conf's).
    #[arg(long, value_name = "ADDRESS", requires = "engine")]
    pub dns_server: Vec<String>,
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
    /// The envelope every message is scanned with, as an MTA would give
    /// it (engines such as DNS block lists judge it).
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    /// Files, directories, mbox files, Maildir folders; `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
}

/// The envelope `cordon scan` hands the engines.
#[derive(Debug, Args)]
pub struct EnvelopeArgs {
    /// The connecting client's address.
    #[arg(long, value_name = "IP")]
    pub client: Option<std::net::IpAddr>,
    /// The client's HELO name.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub helo: String,
    /// MAIL FROM (angle brackets optional).
    #[arg(long, value_name = "ADDRESS", default_value = "")]
    pub from: String,
    /// RCPT TO (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub rcpt: Vec<String>,
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
            let config = components_config(
                &self.engine,
                &ComponentFlags {
                    settings: &self.setting,
                    definitions: &self.definitions,
                    grants: &self.grant,
                    dns_servers: &self.dns_server,
                },
            )?;
            return Ok(config.validate(cli)?);
        }
        let path = match &self.config {
            Some(p) => p.clone(),
            None => find_config()?,
        };
        Ok(Config::load(&path)?)
    }
}

/// A config with one engine per component file, each given `settings`
/// (`KEY=VALUE`, as `--setting`) and `definitions` (as `--definitions`).
fn components_config(components: &[PathBuf], flags: &ComponentFlags) -> anyhow::Result<Config> {
    let mut config = Config::from_components(components);
    for engine in config.engines.values_mut() {
        for s in flags.settings {
            let Some((key, value)) = s.split_once('=') else {
                anyhow::bail!("--setting {s:?}: expected KEY=VALUE");
            };
            engine.settings.insert(key.to_string(), value.to_string());
        }
        engine.definitions.clone_from(flags.definitions);
        engine.capabilities = flags.grants.to_vec();
    }
    config.dns.servers = flags.dns_servers.to_vec();
    Ok(config)
}

/// The flags that configure engines given as component files.
struct ComponentFlags<'a> {
    /// `--setting KEY=VALUE`.
    settings: &'a [String],
    /// `--definitions DIR`.
    definitions: &'a Option<PathBuf>,
    /// `--grant CAPABILITY`.
    grants: &'a [String],
    /// `--dns-server ADDRESS`.
    dns_servers: &'a [String],
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
        Command::Scan(args) => scan::scan_command(args).await,
        Command::Engines(args) => operator::engines_command(args).await,
        Command::CheckConfig(source) => check_config(source).await,
        Command::Learn(args) => learn::learn_command(args).await,
        Command::Engine(EngineCommand::New(args)) => engine_new::engine_new_command(args),
        Command::Engine(EngineCommand::Test(args)) => engine_test::engine_test_command(args).await,
        Command::Engine(EngineCommand::Componentize(args)) => engine_c::componentize_command(args),
        Command::Stats(args) => operator::stats_command(args).await,
        Command::Version(args) => operator::version_command(args).await,
        Command::Reload(args) => operator::reload_command(args).await,
        Command::CompileComponent { out, label } => Ok(tokio::task::spawn_blocking(move || {
            crate::engine::compiler::child_main(&out, &label)
        })
        .await?),
        Command::BuildSnapshot => {
            Ok(tokio::task::spawn_blocking(crate::engine::builder::child_main).await?)
        }
    }
}

/// Loads the engines of `config` off the async workers.
async fn load_registry(config: ValidConfig) -> anyhow::Result<Arc<Registry>> {
    let registry = tokio::task::spawn_blocking(move || Registry::load(&config.registry))
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
    Daemon::start(config).await?.run(shutdown_signal()).await;
    Ok(EXIT_CLEAN)
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
        .engines()
        .iter()
        .map(|s| {
            let g = s.current();
            format!(
                "{} {} (definitions {}, contract {}){}",
                g.info.name,
                g.info.version,
                g.info.definitions_version,
                g.contract().version(),
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
