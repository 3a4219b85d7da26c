//! The engine runtime: one long-lived `wasmtime::Engine`, the instance pool,
//! the epoch ticker, and loading a component into a [`Generation`].
//!
//! Loading a generation compiles the component (or loads it from the cache),
//! checks that it implements the world, runs its `init` with the configured
//! settings once, and snapshots the initialised instance with wizer, so that
//! every per-scan instance starts from the initialised memory image
//! (copy-on-write from the compiled artifact) without running `init` again.

pub mod artifacts;
mod async_scan;
pub mod builder;
pub mod capabilities;
pub mod compiler;
mod component_file;
pub mod definitions;
mod exports;
mod function_cache;
mod generation;
pub mod imports;
pub mod outcome;
mod preinit;
pub mod spec;
pub mod state;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

pub use async_scan::LearnError;
pub use generation::{Generation, ScanTiming, SnapshotSource};
pub use outcome::{EngineOutcome, EngineResult, Fault, FaultKind};
pub use spec::{
    Capability, EngineLimits, EngineSpec, Expect, Fingerprint, SelfTest, VERDICT_ITEM_BYTES,
    VerdictLimits, fingerprint,
};
use state::ScanState;

/// How often the epoch advances. Timeouts are enforced to this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The pool's memory slot does not fit this platform's address space.
    #[error("a memory limit of {0} bytes does not fit this platform")]
    MemoryTooLarge(u64),
    /// The compiled-component cache directory cannot be used.
    #[error(transparent)]
    Cache(#[from] artifacts::ArtifactError),
    /// wasmtime refused the configuration or a linker step.
    #[error("cannot {step}: {reason}")]
    Wasmtime {
        /// What was being set up.
        step: &'static str,
        /// wasmtime's reason.
        reason: String,
    },
}

fn wasmtime_error(step: &'static str) -> impl FnOnce(wasmtime::Error) -> RuntimeError {
    move |e| RuntimeError::Wasmtime {
        step,
        reason: format!("{e:#}"),
    }
}

/// Why an engine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("engine {engine}: cannot read component {path}: {source}")]
    Read {
        /// The engine's name.
        engine: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a component, or does not implement the world.
    #[error("engine {engine}: component {path}: {reason}")]
    Invalid {
        /// The engine's name.
        engine: String,
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the missing import or export.
        reason: String,
    },
    /// A self-test sample got the wrong answer.
    #[error("engine {engine}: self-test {path}: {reason}")]
    SelfTest {
        /// The engine's name.
        engine: String,
        /// The sample file.
        path: PathBuf,
        /// What the engine said instead.
        reason: String,
    },
    /// The engine's `init` refused its settings or definitions, or faulted.
    #[error("engine {engine}: component {path}: init failed: {reason}")]
    Init {
        /// The engine's name.
        engine: String,
        /// The file.
        path: PathBuf,
        /// The engine's own message, or the fault.
        reason: String,
    },
}

/// The shared runtime all generations are loaded into.
pub struct Runtime {
    /// The pool for pre-initialisation runs and large images; its engine
    /// also compiles, and names the cache's compatibility.
    mapped: Sandbox,
    /// The pool for generations whose image is at most
    /// [`RESIDENT_IMAGE_MAX_BYTES`].
    resident: Sandbox,
    compiler: compiler::Compiler,
    /// What serves the capabilities engines are granted.
    services: capabilities::Services,
    cache_dir: PathBuf,
    max_cache_bytes: u64,
    pool: Arc<Semaphore>,
    pool_instances: u32,
    _ticker: EpochTicker,
}

/// One wasmtime engine (with its instance pool) and the linkers over it.
pub(crate) struct Sandbox {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) linker: Linker<ScanState>,
    /// The linker scans use: WASI's asynchronous bindings, so that a scan
    /// runs as an async call on the calling worker (see `Generation::scan`).
    pub(crate) linker_async: Linker<ScanState>,
}

/// Bytes of a memory (or table) that a scan wrote which the resident pool
/// puts back from the image in place when the instance is freed, instead
/// of unmapping them (see [`RESIDENT_IMAGE_MAX_BYTES`]); past them, the
/// rest is unmapped as in the other pool.
///
/// What is put back stays resident and is copied back on every later
/// reset of the slot, whether the next scans write it or not: the kernel
/// reports a page copied back as written. So the bound is what one large
/// message can make every later scan pay. With 1 MiB, one 100 KB message
/// raised the fixed cost of every later scan from 9.6 to 14.7 us; with
/// 128 KiB, to 10.8 us, while the pages small scans write each time (the
/// stack, the allocator's state) still fit: scanning the corpus with a
/// small clamsig database took 18,000 page faults in 18,138 scans against
/// 15,600 with 1 MiB and 258,000 with 16 KiB (`perf stat`, three passes).
const KEEP_RESIDENT_BYTES: usize = 128 << 10;

/// The instance pools a runtime keeps (each reserves address space for
/// its slots): one for large images, one for small.
pub const POOLS: u32 = 2;

/// Images up to this size are served from the pool that keeps what scans
/// only read mapped between instances.
///
/// When an instance is freed, its pool slot is put back to the image. By
/// default every page the scan touched is unmapped (`madvise`), so the next
/// scan faults back in each page of the image it reads: for a small image
/// that is most of a scan's fixed cost, and for a large signature database
/// it is the hot tables every scan reads (about 24 read faults a message,
/// 1.5 MiB, for clamsig's 500,000-signature image). The resident pool
/// instead asks the kernel which pages were written (the `PAGEMAP_SCAN`
/// ioctl, Linux 6.7 and later; elsewhere wasmtime falls back to
/// unmapping) and copies only those back from the image, up to 128 KiB
/// (`KEEP_RESIDENT_BYTES`); pages only read stay mapped, up to where
/// the walk has found those 128 KiB. Past that point wasmtime unmaps the
/// rest as the other pool does, and pages once copied back count as
/// written on every later reset: after the first large messages, the
/// walk of clamsig's 500,000-signature linear memory (54 MiB) stops
/// about 3.7 MiB in, so its tables are unmapped on each reset and read in
/// again by the next scan (6.5-7 faults a message; see README, "clamsig
/// against ClamAV").
///
/// That scan of the page table costs time in proportion to the pages
/// mapped, and what rare scans read stays mapped too, so the pool is
/// bounded by image size. Measured on Linux 6.18 with clamsig on the
/// corpus, one thread (`cargo bench --bench clamsig`, and the same loop by
/// hand for 2,000,000 signatures): the 66 MiB image of 500,000 signatures
/// scans in 125-130 us a message here against 170 us unmapping, and a
/// fresh instance costs 20 us (36 us once the corpus has been scanned on
/// its slot) against 34 us; the 220 MiB image of 2,000,000 signatures
/// scans in 430-480 us against 460-490 us. (On Linux 6.x kernels of
/// earlier sessions and the then 102 MiB image, keeping pages resident
/// made a fresh instance 4 to 12 times dearer: the bound keeps an image
/// past the measured range on the pool that unmaps.)
///
/// `VmRSS` counts the image pages each slot keeps mapped, once per slot,
/// though they are one copy in the page cache: `RssAnon` is the private
/// memory (see `benches/swap.rs`).
pub const RESIDENT_IMAGE_MAX_BYTES: usize = 256 << 20;

/// Core instances, memories and tables one component may create: a Rust
/// component has a handful (the main module and adapter shims).
const PER_COMPONENT: u32 = 16;

/// Pool slots beyond `pool.max_instances`, for loads.
pub const LOAD_SLOTS: u32 = 4;

/// Memories one instance may have; each pool slot reserves address space
/// for this many, and the memory limit covers all of them together.
pub const MEMORIES_PER_INSTANCE: u32 = PER_COMPONENT;

impl Runtime {
    /// Builds the runtime for `engines`: the pool holds `pool_instances`
    /// instances, each memory slot as large as the largest engine memory
    /// limit; compiled components and snapshots are kept in `cache_dir`
    /// (created private, refused when not safe: see [`artifacts`]), at
    /// most `max_cache_bytes` of them.
    pub fn new(
        engines: &[EngineSpec],
        pool_instances: u32,
        cache_dir: PathBuf,
        max_cache_bytes: u64,
    ) -> Result<Self, RuntimeError> {
        let max_memory = engines
            .iter()
            .map(|e| e.limits.memory_bytes)
            .max()
            .unwrap_or(64 << 20);
        Self::with_pool(pool_instances, max_memory, cache_dir, max_cache_bytes)
    }

    /// Builds a runtime with an explicit pool size and memory slot size.
    pub fn with_pool(
        pool_instances: u32,
        max_memory_bytes: u64,
        cache_dir: PathBuf,
        max_cache_bytes: u64,
    ) -> Result<Self, RuntimeError> {
        artifacts::prepare_cache_dir(&cache_dir)?;
        // Reloads run on other threads than the one that started the
        // daemon: what they free must go back to the kernel there too.
        crate::process::bound_retained_heap();
        // Loading a generation needs instances beyond those scans use (the
        // pre-initialisation run), so the pool has spare slots: a few loads
        // at once, and room for a load abandoned at its deadline while its
        // thread is still stuck in the kernel.
        let slots = pool_instances + LOAD_SLOTS;
        let max_memory = usize::try_from(max_memory_bytes)
            .map_err(|_| RuntimeError::MemoryTooLarge(max_memory_bytes))?;
        let mapped = Sandbox::new(pool_config(slots, max_memory, false))?;
        let resident = Sandbox::new(pool_config(slots, max_memory, true))?;
        let ticker = EpochTicker::start(&[&mapped.wasmtime, &resident.wasmtime]);
        Ok(Self {
            mapped,
            resident,
            compiler: compiler::Compiler::detect(),
            services: capabilities::Services::default(),
            cache_dir,
            max_cache_bytes,
            pool: Arc::new(Semaphore::new(pool_instances as usize)),
            pool_instances,
            _ticker: ticker,
        })
    }

    /// Serves the capabilities with `services` for the generations loaded
    /// from now on; a capability without a service is refused at load.
    pub fn set_services(&mut self, services: capabilities::Services) {
        self.services = services;
    }

    /// What serves the capabilities.
    pub fn services(&self) -> &capabilities::Services {
        &self.services
    }

    /// Instances that may be alive at once.
    pub fn pool_instances(&self) -> u32 {
        self.pool_instances
    }

    /// The pool (engine and linkers) that serves a generation whose image
    /// has `image_bytes`: see [`RESIDENT_IMAGE_MAX_BYTES`].
    pub(crate) fn sandbox_for(&self, image_bytes: usize) -> &Sandbox {
        if image_bytes <= RESIDENT_IMAGE_MAX_BYTES {
            &self.resident
        } else {
            &self.mapped
        }
    }

    /// Loads `spec` into a new generation numbered `number`. Blocking: it
    /// compiles and runs the engine's `init`; call it off the async runtime.
    pub fn load(&self, spec: &EngineSpec, number: u64) -> Result<Generation, LoadError> {
        generation::load(self, spec, number)
    }
}

/// Links the host interfaces of every contract version (see
/// [`crate::bindings::Contract`]). The capabilities are linked apart (see
/// [`capabilities`]).
fn link_contracts(linker: &mut Linker<ScanState>) -> wasmtime::Result<()> {
    use crate::bindings::{cordon::scanner as current, v0_1::cordon::scanner as v0_1};
    use wasmtime::component::HasSelf;
    current::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    current::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v0_1::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v0_1::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// The pool's settings: `slots` instances, memories of up to `max_memory`
/// bytes; `resident` keeps what scans only read mapped between instances
/// (see [`RESIDENT_IMAGE_MAX_BYTES`]).
fn pool_config(slots: u32, max_memory: usize, resident: bool) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * PER_COMPONENT)
        .total_memories(slots * PER_COMPONENT)
        .total_tables(slots * PER_COMPONENT)
        .total_stacks(slots)
        .max_core_instances_per_component(PER_COMPONENT)
        .max_memories_per_component(PER_COMPONENT)
        .max_tables_per_component(PER_COMPONENT)
        .max_memory_size(max_memory)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .table_elements(100_000);
    if resident {
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
    }
    pool
}

impl Sandbox {
    fn new(pool: PoolingAllocationConfig) -> Result<Self, RuntimeError> {
        let mut cfg = wasmtime_config();
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            wasmtime::Engine::new(&cfg).map_err(wasmtime_error("create the wasmtime engine"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasmtime_error("link WASI"))?;
        bounded_sleeps(&mut linker).map_err(wasmtime_error("link WASI clocks"))?;
        link_contracts(&mut linker).map_err(wasmtime_error("link the cordon host interface"))?;
        capabilities::link_unavailable(&mut linker)
            .map_err(wasmtime_error("link the capabilities"))?;
        let mut linker_async = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker_async)
            .map_err(wasmtime_error("link WASI"))?;
        bounded_sleeps(&mut linker_async).map_err(wasmtime_error("link WASI clocks"))?;
        link_contracts(&mut linker_async)
            .map_err(wasmtime_error("link the cordon host interface"))?;
        capabilities::link_async(&mut linker_async)
            .map_err(wasmtime_error("link the capabilities"))?;
        Ok(Self {
            wasmtime: engine,
            linker,
            linker_async,
        })
    }
}

/// The wasmtime settings compiled code depends on, shared by the runtime
/// and the compiler child (which needs no instance pool), so that what the
/// child compiles the runtime can load.
fn wasmtime_config() -> wasmtime::Config {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .parallel_compilation(true);
    cfg
}

/// Advances the engine's epoch on its own thread, until the runtime is
/// dropped. The epoch counts [`EPOCH_TICK`]s of the monotonic clock since
/// the ticker started, not sleeps: a sleep that overruns on a loaded machine
/// is made up at once, so a deadline in ticks is a deadline in time.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engines: &[&wasmtime::Engine]) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let weak: Vec<_> = engines.iter().map(|e| e.weak()).collect();
        let flag = stop.clone();
        let started = std::time::Instant::now();
        let thread = std::thread::Builder::new()
            .name("cordon-epoch".into())
            .spawn(move || {
                let mut epoch: u128 = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    let due = due_epochs(started.elapsed());
                    // Every engine is advanced by the same ticks; the
                    // ticker ends with the first engine dropped.
                    for w in &weak {
                        let Some(e) = w.upgrade() else { return };
                        for _ in epoch..due {
                            e.increment_epoch();
                        }
                    }
                    epoch = epoch.max(due);
                }
            })
            .expect("spawning the epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The epoch due after `elapsed` of monotonic time.
fn due_epochs(elapsed: Duration) -> u128 {
    elapsed.as_nanos() / EPOCH_TICK.as_nanos()
}

/// Epoch ticks for a timeout, rounded up, plus one so that a deadline never
/// falls short of the configured time.
fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

/// WASI's clock subscriptions, served so that no sleep an engine asks for
/// outlasts its call's deadline: `subscribe-duration` and
/// `subscribe-instant` give a pollable that is ready at the requested time
/// or just past the deadline, whichever is first (a duration past what an
/// `Instant` can hold included). Once it is ready the guest runs again and
/// the epoch deadline interrupts it. These are the only pollables that can
/// wait: engines get no sockets, stdin is empty and stdout a memory pipe.
fn bounded_sleeps(linker: &mut Linker<ScanState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::{DynPollable, subscribe};

    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, ScanState>,
         (nanos,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let state = store.data_mut();
            let until = state.sleep_until(nanos);
            let table = state.table();
            let sleep = table.push(state::Sleep(until.into()))?;
            Ok((subscribe(table, sleep)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, ScanState>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let state = store.data_mut();
            let until = state.sleep_until(state.nanos_until(when));
            let table = state.table();
            let sleep = table.push(state::Sleep(until.into()))?;
            Ok((subscribe(table, sleep)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI clock interface as wasmtime-wasi defines it; components built
/// against any earlier 0.2 release resolve to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_are_served_by_the_resident_pool_and_large_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::with_pool(1, 64 << 20, dir.path().join("cache"), 0).unwrap();
        let resident = rt.sandbox_for(RESIDENT_IMAGE_MAX_BYTES).wasmtime.clone();
        let mapped = rt
            .sandbox_for(RESIDENT_IMAGE_MAX_BYTES + 1)
            .wasmtime
            .clone();
        assert!(wasmtime::Engine::same(&resident, &rt.resident.wasmtime));
        assert!(wasmtime::Engine::same(&mapped, &rt.mapped.wasmtime));
        assert!(!wasmtime::Engine::same(&resident, &mapped));
        // What one compiles the other loads: a snapshot is compiled before
        // its image size decides its pool.
        let artifact = rt
            .mapped
            .wasmtime
            .precompile_component(b"\0asm\x0d\x00\x01\x00")
            .unwrap();
        // SAFETY: bytes this engine just compiled.
        #[allow(unsafe_code)]
        let loaded = unsafe { wasmtime::component::Component::deserialize(&resident, &artifact) };
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn epochs_follow_the_clock_not_the_sleeps() {
        // A ticker that overslept 100 ms owes 50 ticks at once, so a
        // deadline of N ticks is N ticks of time.
        assert_eq!(due_epochs(Duration::from_millis(100)), 50);
        assert_eq!(due_epochs(Duration::from_millis(1)), 0);
        let timeout = Duration::from_millis(5000);
        assert!(u128::from(deadline_ticks(timeout)) * EPOCH_TICK.as_nanos() >= timeout.as_nanos());
    }
}
