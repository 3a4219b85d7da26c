//! Per-store state: what one engine instance can reach while it runs.
//!
//! Every scan gets a fresh [`ScanState`]. It grants no WASI capability: no
//! preopened directories, no environment, no arguments, no network (the
//! socket address check denies everything and name lookup is off). The one
//! exception is `init`: an engine with a definitions directory sees it,
//! read-only, at `/definitions` while its generation is being initialised,
//! and never during a scan. Guest
//! stdout and stderr go to bounded in-memory pipes that the host logs after
//! the call; nothing reaches the terminal. Everything an engine logs counts
//! against one cap per call and is escaped before it reaches the log.
//!
//! A scan or `learn` call of an engine granted a capability carries its
//! share of it (its query budget); other calls carry none.
//!
//! Each state knows its call's wall-clock deadline: the clock functions an
//! engine could sleep on are served so that no wait outlasts it (see
//! [`ScanState::sleep_until`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::cordon::scanner::host::{Host, Level};

/// Where an engine sees its definitions directory during `init`.
pub const DEFINITIONS_GUEST_PATH: &str = "/definitions";

/// Bytes of guest stdout/stderr kept per scan; the rest is dropped.
const OUTPUT_CAPTURE_BYTES: usize = 16 * 1024;
/// Host-side resources (WASI streams, pollables) one instance may hold at
/// once: an engine needs a handful, and each one is host memory.
pub const MAX_HOST_RESOURCES: usize = 10_000;

/// Component-model handles (the guest's own resources, kept in host-side
/// tables) one store may hold at once.
pub const MAX_COMPONENT_HANDLES: usize = 10_000;

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
    log_lines: std::cell::Cell<u32>,
    log_dropped: std::cell::Cell<u32>,
    clock_start: Instant,
    /// When the call must be over; host waits end there.
    pub deadline: Instant,
    /// Enforces the memory limit and remembers whether it was hit.
    pub limiter: MemoryLimiter,
    /// The call's share of the `dns` capability, when granted and the call
    /// is one that capabilities serve (see `capabilities`).
    pub(crate) dns: Option<super::capabilities::dns::DnsCall>,
    /// The call's share of the `store` capability, likewise.
    pub(crate) store: Option<super::capabilities::store::StoreCall>,
}

/// A guest sleep that ends at a fixed time (see [`ScanState::sleep_until`]).
pub struct Sleep(pub tokio::time::Instant);

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Sleep {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// The engine's wall clock: the time its state was made (the start of the
/// call), in whole seconds, fixed for the call, so that a scan is repeatable given its start
/// time. Engines need the date (a DKIM signature's expiry, a Date header
/// in the future), not a second clock to time themselves with.
struct CallStartClock(std::time::Duration);

impl CallStartClock {
    fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        CallStartClock(std::time::Duration::from_secs(since_epoch.as_secs()))
    }
}

impl wasmtime_wasi::HostWallClock for CallStartClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        self.0
    }
}

/// The engine's monotonic clock: nanoseconds since its state was made.
struct GuestClock(Instant);

impl wasmtime_wasi::HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
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
        let clock_start = Instant::now();
        let wasi = wasi
            .monotonic_clock(GuestClock(clock_start))
            .wall_clock(CallStartClock::now())
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        Self {
            engine,
            wasi,
            table,
            stdout,
            stderr,
            log_lines: Default::default(),
            log_dropped: Default::default(),
            clock_start,
            // Until the store sets it: no call runs without a deadline.
            deadline: clock_start,
            limiter: MemoryLimiter::new(memory_bytes),
            dns: None,
            store: None,
        }
    }

    /// When a sleep of `nanos` from now asked by the guest must end: never
    /// past the call's deadline (plus a moment, so that the epoch has
    /// passed it and the guest is interrupted as soon as it runs again).
    pub fn sleep_until(&self, nanos: u64) -> Instant {
        let cap = self.deadline + Duration::from_millis(5);
        Instant::now()
            .checked_add(Duration::from_nanos(nanos))
            .map_or(cap, |t| t.min(cap))
    }

    /// Nanoseconds from now until the guest clock reads `when`.
    pub fn nanos_until(&self, when: u64) -> u64 {
        let now = u64::try_from(self.clock_start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        when.saturating_sub(now)
    }

    /// The resource table, for host functions that hand out resources.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Takes one line from the call's log budget; false (and counted) when
    /// the budget is spent.
    fn take_log_line(&self) -> bool {
        if self.log_lines.get() >= LOG_LINES_PER_SCAN {
            self.log_dropped.set(self.log_dropped.get() + 1);
            return false;
        }
        self.log_lines.set(self.log_lines.get() + 1);
        true
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
                if self.take_log_line() {
                    tracing::info!(
                        engine = %self.engine,
                        stream,
                        "{}",
                        crate::text::escape(line, LOG_LINE_BYTES)
                    );
                }
            }
        }
        if self.log_dropped.get() > 0 {
            tracing::warn!(
                engine = %self.engine,
                dropped = self.log_dropped.get(),
                "engine exceeded {LOG_LINES_PER_SCAN} log lines in one call"
            );
        }
    }
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
        if !self.take_log_line() {
            return;
        }
        let text = crate::text::escape(&text, LOG_LINE_BYTES);
        let engine = &*self.engine;
        match level {
            Level::Debug => tracing::debug!(engine = %engine, "{text}"),
            Level::Info => tracing::info!(engine = %engine, "{text}"),
            Level::Warn => tracing::warn!(engine = %engine, "{text}"),
            Level::Error => tracing::error!(engine = %engine, "{text}"),
        }
    }
}

impl crate::bindings::cordon::scanner::types::Host for ScanState {}

impl crate::bindings::v0_1::cordon::scanner::host::Host for ScanState {
    fn log(&mut self, level: crate::bindings::v0_1::cordon::scanner::host::Level, text: String) {
        use crate::bindings::v0_1::cordon::scanner::host::Level as L;
        let level = match level {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        Host::log(self, level, text)
    }
}

impl crate::bindings::v0_1::cordon::scanner::types::Host for ScanState {}

/// Caps the linear memories of an instance together (a component may carry
/// many core modules, each with a memory of its own) and each table, and
/// remembers whether a growth was refused so that the trap that usually follows (an allocator
/// abort) is reported as out-of-memory rather than as a plain trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    memory_bytes: usize,
    /// Bytes of all memories of the store now.
    total_bytes: usize,
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
            total_bytes: 0,
            memory_denied: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called with current = 0 when a memory is created, so the total
        // covers every memory from its start.
        let total = (self.total_bytes - current.min(self.total_bytes)).saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_denied = true;
            return Ok(false);
        }
        self.total_bytes = total;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_covers_all_memories_together() {
        let mut l = MemoryLimiter::new(64 << 20);
        // Fifteen memories of 16 MiB each, created one after another: the
        // fifth would bring the instance to 80 MiB.
        for i in 0..4 {
            assert!(l.memory_growing(0, 16 << 20, None).unwrap(), "memory {i}");
        }
        assert!(!l.memory_growing(0, 16 << 20, None).unwrap());
        assert!(l.memory_denied);
        // Growing one of them counts only the difference.
        let mut l = MemoryLimiter::new(64 << 20);
        assert!(l.memory_growing(0, 32 << 20, None).unwrap());
        assert!(l.memory_growing(32 << 20, 48 << 20, None).unwrap());
        assert!(l.memory_growing(0, 16 << 20, None).unwrap());
        assert!(!l.memory_growing(16 << 20, 17 << 20, None).unwrap());
    }

    #[test]
    fn host_resources_are_capped() {
        let mut s = ScanState::new("t".into(), 1 << 20);
        let table = s.table();
        assert_eq!(table.max_capacity(), MAX_HOST_RESOURCES);
        for i in 0..MAX_HOST_RESOURCES {
            assert!(table.push(i).is_ok(), "resource {i}");
        }
        assert!(table.push(0usize).is_err(), "one past the cap");
    }

    #[test]
    fn guest_sleeps_end_at_the_deadline() {
        let mut s = ScanState::new("t".into(), 1 << 20);
        s.deadline = Instant::now() + Duration::from_millis(100);
        let cap = s.deadline + Duration::from_millis(5);
        assert!(s.sleep_until(u64::MAX) <= cap);
        assert!(s.sleep_until(60_000_000_000) <= cap);
        assert!(s.sleep_until(1_000) < s.deadline);
        assert_eq!(s.nanos_until(0), 0);
    }
}
