//! Per-store state: what one engine instance can reach while it runs.
//!
//! Every scan gets a fresh [`ScanState`]. It grants no WASI capability: no
//! preopened directories, no environment, no arguments, no network (the
//! socket address check denies everything and name lookup is off). The one
//! exception is `init`: an engine with a definitions directory sees it,
//! read-only, at `/definitions` while its generation is being initialised,
//! and never during a scan. Guest
//! stdout and stderr go to bounded in-memory pipes that the host logs after
//! the call; nothing reaches the terminal.

use std::path::Path;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::cordon::scanner::host::{Host, Level};

/// Where an engine sees its definitions directory during `init`.
pub const DEFINITIONS_GUEST_PATH: &str = "/definitions";

/// Bytes of guest stdout/stderr kept per scan; the rest is dropped.
const OUTPUT_CAPTURE_BYTES: usize = 16 * 1024;
/// `log` calls honoured per scan; the rest are counted and dropped.
const LOG_LINES_PER_SCAN: u32 = 100;
/// Bytes of one `log` line kept.
const LOG_LINE_BYTES: usize = 1024;

/// The state of one store: one engine instance for one call.
pub struct ScanState {
    engine: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    log_lines: u32,
    log_dropped: u32,
    /// Enforces the memory limit and remembers whether it was hit.
    pub limiter: MemoryLimiter,
}

impl ScanState {
    /// A state for a scan by `engine`, whose memories may each grow to
    /// `memory_bytes`.
    pub fn new(engine: Arc<str>, memory_bytes: u64) -> Self {
        let mut wasi = WasiCtx::builder();
        Self::build(engine, memory_bytes, &mut wasi)
    }

    /// A state for an engine's `init`, with `definitions` (if any) preopened
    /// read-only at [`DEFINITIONS_GUEST_PATH`]. The error names the directory.
    pub fn for_init(
        engine: Arc<str>,
        memory_bytes: u64,
        definitions: Option<&Path>,
    ) -> Result<Self, String> {
        let mut wasi = WasiCtx::builder();
        if let Some(dir) = definitions {
            wasi.preopened_dir(dir, DEFINITIONS_GUEST_PATH, FsPerms::ReadOnly)
                .map_err(|e| format!("cannot open definitions directory {}: {e}", dir.display()))?;
        }
        Ok(Self::build(engine, memory_bytes, &mut wasi))
    }

    fn build(engine: Arc<str>, memory_bytes: u64, wasi: &mut WasiCtxBuilder) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPTURE_BYTES);
        let wasi = wasi
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Self {
            engine,
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            log_lines: 0,
            log_dropped: 0,
            limiter: MemoryLimiter::new(memory_bytes),
        }
    }

    /// Logs whatever the guest wrote to stdout and stderr, and how many log
    /// lines were dropped. Called once when the store is done.
    pub fn flush_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(engine = %self.engine, stream, "{}", truncate(line, LOG_LINE_BYTES));
            }
        }
        if self.log_dropped > 0 {
            tracing::warn!(
                engine = %self.engine,
                dropped = self.log_dropped,
                "engine exceeded {LOG_LINES_PER_SCAN} log lines in one call"
            );
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl WasiView for ScanState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for ScanState {
    fn log(&mut self, level: Level, text: String) {
        if self.log_lines >= LOG_LINES_PER_SCAN {
            self.log_dropped += 1;
            return;
        }
        self.log_lines += 1;
        let text = truncate(&text, LOG_LINE_BYTES);
        let engine = &*self.engine;
        match level {
            Level::Debug => tracing::debug!(engine, "{text}"),
            Level::Info => tracing::info!(engine, "{text}"),
            Level::Warn => tracing::warn!(engine, "{text}"),
            Level::Error => tracing::error!(engine, "{text}"),
        }
    }
}

impl crate::bindings::cordon::scanner::types::Host for ScanState {}

/// Caps each linear memory and table of an instance, and remembers whether a
/// growth was refused so that the trap that usually follows (an allocator
/// abort) is reported as out-of-memory rather than as a plain trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    memory_bytes: usize,
    /// Set when a memory growth past the limit was refused.
    pub memory_denied: bool,
}

/// Table elements one table may hold.
const TABLE_ELEMENTS: usize = 100_000;
/// Core instances, tables and memories one component instance may create.
pub const INSTANCES_PER_STORE: usize = 32;

impl MemoryLimiter {
    fn new(memory_bytes: u64) -> Self {
        Self {
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            memory_denied: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        INSTANCES_PER_STORE
    }

    fn tables(&self) -> usize {
        INSTANCES_PER_STORE
    }

    fn memories(&self) -> usize {
        INSTANCES_PER_STORE
    }
}
