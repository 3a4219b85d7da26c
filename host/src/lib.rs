//! cordon: a mail-scanning host that runs each anti-virus and anti-spam
//! engine as an isolated WebAssembly component behind one WIT interface.
//!
//! The map, bottom layer first. A module uses only modules of lower
//! layers; modules of one layer do not use each other. The layers are
//! written down once, in `layers.rs`, whose test fails on an import that
//! points up or sideways (`./dev lint` runs it).
//!
//! - [`text`]: text from engines, mail and clients made safe for
//!   terminals, logs, headers and replies.
//! - [`process`]: resident memory and CPU time from `/proc`.
//! - [`listen`]: listening sockets in Postfix's notation and the one accept
//!   loop.
//! - [`inputs`]: messages read from files, directories, mbox, Maildir and
//!   stdin.
//! - [`bindings`]: the host side of the WIT world (`wit/scanner.wit`).
//! - [`mime`]: a message into decoded leaf parts, once, within limits.
//! - [`verdict_cache`]: verdicts by content digest, engine and generation.
//! - [`engine`]: the wasmtime runtime, limits, compiled artifacts,
//!   pre-initialisation, per-engine stats, and [`engine::Generation`],
//!   which hands out a fresh instance per scan and turns guest faults into
//!   outcomes.
//! - [`scan`]: one message fanned out to every enabled engine.
//! - [`policy`]: outcomes to a [`policy::Decision`]; pure, no I/O.
//! - [`judge`]: skip rules, then the scan, then the policy.
//! - [`live`]: the settings a config reload replaces in one step.
//! - [`registry`]: the configured engines, their current generations and
//!   the live settings.
//! - [`watch`]: reloading engines when their files change.
//! - [`milter`]: milter sessions: a decision applied as milter actions.
//! - [`control`]: the control socket, its protocol, and the HTTP metrics
//!   listener.
//! - [`config`]: the TOML config tree, its validation, and the typed values
//!   it builds for the layers above.
//! - [`daemon`]: the running service, started the same way by `cordon
//!   serve` and the tests.
//! - [`cli`]: the `cordon` subcommands.

pub mod bindings;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod inputs;
pub mod judge;
pub mod listen;
pub mod live;
pub mod milter;
pub mod mime;
pub mod policy;
pub mod process;
pub mod registry;
pub mod scan;
pub mod text;
pub mod verdict_cache;
pub mod watch;

#[cfg(test)]
mod layers;
