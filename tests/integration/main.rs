//! cordon's integration tests: one binary, one module per area.
//!
//! They run real components built from `engines/` and `tests/engines/` for
//! wasm32-wasip2 (`./dev build` builds them; a missing component is a test
//! failure that says so) and the real `cordon` binary.

mod async_scans;
mod clamscan;
mod clamscan_classes;
mod clamscan_macros;
mod clamscan_pcre;
mod cli;
mod common;
mod containers;
mod dns;
mod engine_kit;
mod executables;
mod fuzz;
mod golden;
mod hardening;
mod hostile;
mod milter;
mod milter_protocol;
#[path = "../support/postfix.rs"]
mod pf;
mod postfix;
mod snapshots;
mod store;
mod swap;
mod world;
