//! cordon: a mail-scanning host that runs each anti-virus and anti-spam
//! engine as an isolated WebAssembly component behind one WIT interface.
//!
//! The map, in data-path order:
//!
//! - [`config`]: the TOML config tree and its validation.
//! - [`bindings`]: the host side of the WIT world (`wit/scanner.wit`).
//! - [`engine`]: the wasmtime runtime, limits, the compiled-component cache,
//!   pre-initialisation, and [`engine::Generation`], which hands out a fresh
//!   instance per scan and turns guest faults into outcomes.
//! - [`registry`]: the configured engines and their current generations.
//! - [`message`]: reading messages from files, directories, mbox, Maildir and
//!   stdin.
//! - [`mime`]: a message into decoded leaf parts, once, within limits.
//! - [`cache`]: verdicts by content digest, engine and generation.
//! - [`scan`]: one message fanned out to every enabled engine.
//! - [`policy`]: outcomes to a [`policy::Decision`]; pure, no I/O.
//! - [`milter`]: the milter daemon: listeners, sessions, a decision applied
//!   as milter actions.
//! - [`stats`]: counters and timings per engine.
//! - [`watch`]: reloading engines when their files change.
//! - [`control`]: the control socket and the HTTP metrics listener.
//! - [`text`]: text from engines, mail and clients made safe for
//!   terminals, logs, headers and replies.
//! - [`cli`]: the `cordon` subcommands.

pub mod bindings;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod message;
pub mod milter;
pub mod mime;
pub mod policy;
pub mod registry;
pub mod scan;
pub mod stats;
pub mod text;
pub mod watch;
