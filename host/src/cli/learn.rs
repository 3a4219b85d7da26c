//! `cordon learn`: tell engines what messages are (spam, ham, virus,
//! clean), from files, directories, mbox files, Maildir folders or stdin.
//!
//! Each message goes to the engine's `learn` on a fresh instance, in this
//! process, or with `--daemon` in the running daemon (through its control
//! socket), whose store is the one its scans use: an embedded store is
//! open in one process only. What an engine learns it keeps through the
//! `store` capability (engines that do not learn answer `unsupported`).
//! One line a message and engine: `LABEL: ENGINE
//! learned|already-learned|unsupported`, or `ERROR` with the reason.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{EXIT_CLEAN, EXIT_ERROR, EngineSource, load_registry};
use crate::bindings::{LearnClass, LearnOutcome, empty_envelope};
use crate::inputs;

/// `cordon learn`.
#[derive(Debug, Args)]
pub struct LearnArgs {
    /// Config file. Default: $CORDON_CONFIG, ./cordon.toml,
    /// /etc/cordon/cordon.toml, the first that exists.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The engine that learns, by its name in config (repeatable); every
    /// enabled engine when absent.
    #[arg(long, value_name = "NAME")]
    pub engine: Vec<String>,
    /// What the messages are.
    #[arg(long, value_enum)]
    pub class: Class,
    /// Files, directories, mbox files, Maildir folders, or `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// Learn in the running daemon, through its control socket (the
    /// config's `control.socket`, or `--socket`).
    #[arg(long)]
    pub daemon: bool,
    /// The daemon's control socket (implies `--daemon`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `--class`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Class {
    /// Unsolicited bulk mail.
    Spam,
    /// Wanted mail.
    Ham,
    /// Mail carrying malware.
    Virus,
    /// Mail that carries no malware.
    Clean,
}

impl From<Class> for LearnClass {
    fn from(c: Class) -> LearnClass {
        match c {
            Class::Spam => LearnClass::Spam,
            Class::Ham => LearnClass::Ham,
            Class::Virus => LearnClass::Virus,
            Class::Clean => LearnClass::Clean,
        }
    }
}

impl Class {
    /// The class as the control protocol spells it.
    fn word(self) -> &'static str {
        match self {
            Class::Spam => "spam",
            Class::Ham => "ham",
            Class::Virus => "virus",
            Class::Clean => "clean",
        }
    }
}

/// The config `--config` names (or the default one), engines as it has
/// them.
fn config_source(args: &LearnArgs) -> EngineSource {
    EngineSource {
        config: args.config.clone(),
        engine: Vec::new(),
        setting: Vec::new(),
        definitions: None,
        grant: Vec::new(),
        dns_server: Vec::new(),
    }
}

/// Runs `cordon learn`; the exit code (2 when any message could not be
/// read or learned).
pub(super) async fn learn_command(args: LearnArgs) -> anyhow::Result<i32> {
    if args.daemon || args.socket.is_some() {
        return learn_in_daemon(args).await;
    }
    let registry = load_registry(config_source(&args).resolve()?).await?;
    let mut engines = registry.enabled();
    for name in &args.engine {
        if !engines.iter().any(|g| &*g.name == name.as_str()) {
            anyhow::bail!(
                "--engine {:?}: no enabled engine of that name (there are: {})",
                crate::text::escape(name, 64),
                engines
                    .iter()
                    .map(|g| g.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !args.engine.is_empty() {
        engines.retain(|g| args.engine.iter().any(|n| n.as_str() == &*g.name));
    }
    let class = LearnClass::from(args.class);
    let envelope = empty_envelope();
    each_message(&args.inputs, async |label, bytes, out| {
        let mut errors = 0;
        for g in &engines {
            match g.learn(&envelope, &bytes, class, None).await {
                Ok(o) => writeln!(out, "{label}: {} {}", g.name, word(o))?,
                Err(e) => {
                    errors += 1;
                    writeln!(out, "{label}: {} ERROR {e}", g.name)?;
                }
            }
        }
        Ok(errors)
    })
    .await
}

/// Reads every message of `inputs` and hands it to `learn` with its label
/// (escaped) and the output, which says how many of its lines were
/// errors; a message that cannot be read is an error line. The exit code.
async fn each_message(
    inputs: &[PathBuf],
    mut learn: impl AsyncFnMut(&str, Vec<u8>, &mut dyn Write) -> anyhow::Result<usize>,
) -> anyhow::Result<i32> {
    let mut errors = 0usize;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for op in inputs::expand(inputs) {
        let read = tokio::task::spawn_blocking(move || inputs::read(&op)).await?;
        for input in read {
            let label = crate::text::escape(&input.label, 1024);
            match input.bytes {
                Ok(bytes) => errors += learn(&label, bytes, &mut out).await?,
                Err(e) => {
                    errors += 1;
                    writeln!(out, "{label}: ERROR {}", crate::text::escape(&e, 1024))?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if errors > 0 { EXIT_ERROR } else { EXIT_CLEAN })
}

/// `cordon learn --daemon`: each message to the daemon's `learn`.
async fn learn_in_daemon(args: LearnArgs) -> anyhow::Result<i32> {
    use crate::control::client::request_with_body;
    use crate::control::protocol::{LearnReply, MAX_LEARN_BYTES, Request};
    let socket = super::operator::control_socket(&args.socket, &config_source(&args))?;
    each_message(&args.inputs, async |label, bytes, out| {
        if bytes.len() as u64 > MAX_LEARN_BYTES {
            writeln!(
                out,
                "{label}: ERROR {} bytes, over the {MAX_LEARN_BYTES} the daemon takes",
                bytes.len()
            )?;
            return Ok(1);
        }
        let request = Request::Learn {
            class: args.class.word().into(),
            bytes: bytes.len() as u64,
            engines: args.engine.clone(),
        };
        // The daemon refusing (an unknown engine, no daemon) stops the
        // run: every later message would be refused the same way.
        let reply: LearnReply = request_with_body(&socket, &request, &bytes).await?;
        let mut errors = 0;
        for r in reply.results {
            let engine = crate::text::escape(&r.engine, 64);
            match (r.outcome, r.error) {
                (Some(o), _) => writeln!(out, "{label}: {engine} {}", crate::text::escape(&o, 32))?,
                (None, e) => {
                    errors += 1;
                    writeln!(
                        out,
                        "{label}: {engine} ERROR {}",
                        crate::text::escape(&e.unwrap_or_default(), 1024)
                    )?;
                }
            }
        }
        Ok(errors)
    })
    .await
}

/// `learn`'s outcome as the contract spells it.
pub(super) fn word(o: LearnOutcome) -> &'static str {
    match o {
        LearnOutcome::Learned => "learned",
        LearnOutcome::AlreadyLearned => "already-learned",
        LearnOutcome::Unsupported => "unsupported",
    }
}
