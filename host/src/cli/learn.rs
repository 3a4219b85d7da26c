//! `cordon learn`: tell engines what messages are (spam, ham, virus,
//! clean), from files, directories, mbox files, Maildir folders or stdin.
//!
//! Each message goes to the engine's `learn` on a fresh instance, in this
//! process; what an engine learns it keeps through the `store` capability
//! (engines that do not learn answer `unsupported`). One line a message
//! and engine: `LABEL: ENGINE learned|already-learned|unsupported`, or
//! `ERROR` with the reason.

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

/// Runs `cordon learn`; the exit code (2 when any message could not be
/// read or learned).
pub(super) async fn learn_command(args: LearnArgs) -> anyhow::Result<i32> {
    let config = EngineSource {
        config: args.config.clone(),
        engine: Vec::new(),
        setting: Vec::new(),
        definitions: None,
        grant: Vec::new(),
        dns_server: Vec::new(),
    }
    .resolve()?;
    let registry = load_registry(config).await?;
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
    let mut errors = 0usize;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for op in inputs::expand(&args.inputs) {
        let read = tokio::task::spawn_blocking(move || inputs::read(&op)).await?;
        for input in read {
            let label = crate::text::escape(&input.label, 1024);
            let bytes = match input.bytes {
                Ok(b) => b,
                Err(e) => {
                    errors += 1;
                    writeln!(out, "{label}: ERROR {}", crate::text::escape(&e, 1024))?;
                    continue;
                }
            };
            for g in &engines {
                match g.learn(&envelope, &bytes, class, None).await {
                    Ok(o) => writeln!(out, "{label}: {} {}", g.name, word(o))?,
                    Err(e) => {
                        errors += 1;
                        writeln!(out, "{label}: {} ERROR {e}", g.name)?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(if errors > 0 { EXIT_ERROR } else { EXIT_CLEAN })
}

/// `learn`'s outcome as the contract spells it.
pub(super) fn word(o: LearnOutcome) -> &'static str {
    match o {
        LearnOutcome::Learned => "learned",
        LearnOutcome::AlreadyLearned => "already-learned",
        LearnOutcome::Unsupported => "unsupported",
    }
}
