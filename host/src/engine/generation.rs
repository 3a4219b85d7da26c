//! A generation: one (component, settings) pair compiled, initialised and
//! ready to hand out fresh instances, one per scan.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use wasmtime::Store;

use super::artifacts::{self, SnapshotInputs};
use super::compiler::CompileBounds;
use super::exports::EngineExports;
use super::outcome::{EngineOutcome, Fault, FaultKind, check_verdict, classify, merge};
use super::preinit;
use super::spec::{EngineLimits, EngineSpec};
use super::state::ScanState;
use super::{LoadError, Runtime, deadline_ticks};
use crate::bindings::{Contract, EngineInfo, Envelope, Outcome, UnscannableReason, Verdict};
use crate::mime::Decomposed;

/// What each scan store may lift out of the guest in one call, besides the
/// verdict's own bound: room for WASI's stream writes and a log line.
const HOSTCALL_FUEL_BASE: usize = 64 * 1024;

/// The hostcall fuel for calls under `limits`: every string and list the
/// host lifts out of the guest in one call (a verdict, a log line) counts
/// against it, so a guest cannot make the host allocate more than this per
/// call, however its data is laid out.
pub(super) fn hostcall_fuel(limits: &EngineLimits) -> usize {
    let verdict = usize::try_from(limits.verdict.max_verdict_bytes).unwrap_or(usize::MAX);
    // Lifted lists count the host's size of each element (a String is 24
    // bytes), more than the verdict bound's share per item.
    HOSTCALL_FUEL_BASE.saturating_add(verdict.saturating_mul(2))
}

/// A loaded, initialised engine version.
pub struct Generation {
    /// The engine's name in config.
    pub name: Arc<str>,
    /// Counts up from 1 for each generation of this engine.
    pub number: u64,
    /// What the initialised engine says about itself.
    pub info: EngineInfo,
    /// The limits every scan of this generation runs under.
    pub limits: EngineLimits,
    /// The component file it was loaded from.
    pub component: PathBuf,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// How long loading took (compile or cache load, init, snapshot).
    pub load_time: Duration,
    /// Bytes of the pre-initialised component: mostly the memory image
    /// `init` built, which every instance maps copy-on-write instead of
    /// building its own.
    pub image_bytes: usize,
    /// Bytes of machine code compiled from it.
    pub code_bytes: usize,
    /// The engine's counters, shared by its generations.
    pub stats: Arc<crate::engine::stats::EngineStats>,
    /// Its verdicts may be cached: the config allows it and the engine is
    /// granted no capability.
    pub cacheable: bool,
    /// Whether its snapshot was built by this load or mapped from the cache.
    pub snapshot: SnapshotSource,
    /// The peak resident memory of the child process that built the
    /// snapshot, when one did.
    pub build_peak_rss_bytes: Option<u64>,
    pre: wasmtime::component::InstancePre<ScanState>,
    /// The engine interface it exports, and the contract version.
    pub(super) exports: EngineExports,
    /// The same component linked to WASI's asynchronous bindings: what
    /// scans instantiate (see `async_scan`).
    pub(super) pre_async: wasmtime::component::InstancePre<ScanState>,
    pub(super) wasmtime: wasmtime::Engine,
    pub(super) concurrency: Arc<Semaphore>,
    pub(super) pool: Arc<Semaphore>,
    /// The services of the capabilities the engine is granted.
    pub(super) services: super::capabilities::Services,
}

/// Where a generation's pre-initialised snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotSource {
    /// This load ran `init` and built it.
    Built,
    /// A load with the same inputs built it earlier; it was mapped from the
    /// cache without running `init`.
    Cached,
}

/// Where the time of one scan went.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanTiming {
    /// Waiting for a concurrency permit and a pool slot.
    pub queued: Duration,
    /// Instantiating, calling and checking the verdict.
    pub run: Duration,
}

pub(super) fn load(rt: &Runtime, spec: &EngineSpec, number: u64) -> Result<Generation, LoadError> {
    let started = Instant::now();
    let invalid = |reason: String| LoadError::Invalid {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        reason,
    };
    let init_error = |reason: String| LoadError::Init {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        reason,
    };
    // Read once for its digest and imports, not held: see
    // `component_file`. Before anything is compiled, a component that
    // imports what cordon does not provide is refused in milliseconds.
    let file = super::component_file::inspect(spec)?;
    super::imports::check(file.imports, &spec.name, &spec.capabilities, &rt.services)
        .map_err(|e| invalid(e.to_string()))?;
    let definitions_digest = || -> Result<Option<[u8; 32]>, LoadError> {
        let Some(dir) = &spec.definitions else {
            return Ok(None);
        };
        let max = spec.limits.max_definitions_bytes;
        let files = super::definitions::check(dir, max).map_err(init_error)?;
        super::definitions::digest(dir, &files, max)
            .map(Some)
            .map_err(init_error)
    };
    let before = definitions_digest()?;
    let inputs = |definitions| SnapshotInputs {
        component: file.digest,
        definitions,
        settings: &spec.settings,
        limits: init_limits(&spec.limits),
    };
    let key = artifacts::snapshot_key(&rt.mapped.wasmtime, &inputs(before));
    let label = spec.component.display().to_string();
    let bounds = CompileBounds {
        timeout: spec.limits.compile_timeout,
        max_memory_bytes: spec.limits.compile_memory_bytes,
    };
    let cached = if rt.max_cache_bytes > 0 {
        artifacts::cached_snapshot(
            &|bytes| rt.sandbox_for(bytes).wasmtime.clone(),
            &rt.cache_dir,
            &key,
        )
    } else {
        None
    };
    let mut build_peak_rss_bytes = None;
    // The snapshot's functions are the component's: compiled once, taken
    // from this file by every later snapshot of the same component.
    let functions = (rt.max_cache_bytes > 0)
        .then(|| artifacts::functions_file(&rt.mapped.wasmtime, &rt.cache_dir, &file.digest));
    let (component, image_bytes, snapshot) = match cached {
        Some((component, image_bytes)) => (component, image_bytes, SnapshotSource::Cached),
        None => {
            let snapshot_error =
                |e: artifacts::ArtifactError| invalid(format!("pre-initialised snapshot: {e:#}"));
            let (tmp, image_bytes) = match super::builder::child_exe(&rt.compiler) {
                // In a child: its peak memory never lands in this process.
                Some(exe) => {
                    let tmp = artifacts::snapshot_temp(&rt.cache_dir).map_err(snapshot_error)?;
                    let (image_bytes, peak) = super::builder::build_in_child(
                        exe,
                        rt,
                        spec,
                        &file.digest,
                        &tmp,
                        functions,
                    )?;
                    build_peak_rss_bytes = peak;
                    (tmp, image_bytes)
                }
                None => {
                    let bytes = super::component_file::read_checked(spec, &file.digest)?;
                    let snapshot = preinit::build_snapshot(rt, spec, bytes, &label, bounds)?;
                    let tmp = artifacts::snapshot_temp(&rt.cache_dir).map_err(snapshot_error)?;
                    rt.compiler
                        .compile_to(
                            &rt.mapped.wasmtime,
                            &snapshot,
                            &tmp,
                            &label,
                            bounds,
                            functions.as_deref(),
                        )
                        .map_err(|e| invalid(format!("pre-initialised snapshot: {e}")))?;
                    (tmp, snapshot.len())
                }
            };
            // Kept under its inputs only if the definitions `init` read are
            // the ones the key names (an update may land while it runs).
            let keep = match definitions_digest() {
                Ok(now) => now == before,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let component = artifacts::adopt_snapshot(
                &rt.sandbox_for(image_bytes).wasmtime,
                &rt.cache_dir,
                &key,
                &tmp,
                &label,
                image_bytes,
                if keep { rt.max_cache_bytes } else { 0 },
            )
            .map_err(snapshot_error)?;
            (component, image_bytes, SnapshotSource::Built)
        }
    };
    let sandbox = rt.sandbox_for(image_bytes);
    let (pre, exports) = pre_for(&sandbox.linker, &component).map_err(invalid)?;
    let pre_async = {
        let mut linker = sandbox.linker_async.clone();
        super::imports::deny_the_rest(&mut linker, &component)
            .and_then(|()| linker.instantiate_pre(&component))
            .map_err(|e| invalid(format!("{e:#}")))?
    };

    let mut generation = Generation {
        name: spec.name.as_str().into(),
        number,
        info: EngineInfo {
            name: String::new(),
            vendor: String::new(),
            version: String::new(),
            definitions_version: String::new(),
            wants_parts: false,
        },
        limits: spec.limits.clone(),
        component: spec.component.clone(),
        loaded_at: SystemTime::now(),
        load_time: Duration::ZERO,
        image_bytes,
        code_bytes: {
            let r = component.image_range();
            (r.end as usize).saturating_sub(r.start as usize)
        },
        stats: Arc::default(),
        // The verdict cache keys on content; what an engine granted a
        // capability says depends on the envelope, the network and what it
        // learned, so its verdicts are never cached.
        cacheable: spec.cache && spec.capabilities.is_empty(),
        snapshot,
        build_peak_rss_bytes,
        pre,
        exports,
        pre_async,
        wasmtime: sandbox.wasmtime.clone(),
        concurrency: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
        pool: rt.pool.clone(),
        services: super::capabilities::Services {
            dns: rt
                .services
                .dns
                .clone()
                .filter(|_| spec.capabilities.contains(&super::Capability::Dns)),
            store: rt
                .services
                .store
                .clone()
                .filter(|_| spec.capabilities.contains(&super::Capability::Store)),
        },
    };
    // `info` on a fresh instance of the snapshot both reads the identity and
    // proves that instances start initialised.
    let mut info = generation.call_info().map_err(|e| LoadError::Init {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        reason: format!("info() on the initialised engine failed: {e}"),
    })?;
    // What the engine says about itself is printed and logged: one safe
    // line each, of bounded length.
    for s in [
        &mut info.name,
        &mut info.vendor,
        &mut info.version,
        &mut info.definitions_version,
    ] {
        *s = crate::text::escape(s, MAX_INFO_BYTES);
    }
    generation.info = info;
    generation.load_time = started.elapsed();
    tracing::info!(
        engine = %spec.name,
        generation = number,
        component = %spec.component.display(),
        version = %generation.info.version,
        definitions = %generation.info.definitions_version,
        load_ms = generation.load_time.as_millis() as u64,
        snapshot = ?generation.snapshot,
        build_peak_mib = generation.build_peak_rss_bytes.map(|b| b >> 20),
        "engine loaded"
    );
    Ok(generation)
}

/// What bears on `init` besides the component, definitions and settings:
/// the limits it runs under, in a stable form for the snapshot key.
fn init_limits(l: &EngineLimits) -> String {
    format!(
        "memory={} init_ms={} definitions={} verdict={}",
        l.memory_bytes,
        l.init_timeout.as_millis(),
        l.max_definitions_bytes,
        l.verdict.max_verdict_bytes
    )
}

/// Bytes of each `info` string kept.
const MAX_INFO_BYTES: usize = 256;

/// Bytes of an engine's own error text kept in a load error.
pub(super) const MAX_REASON_BYTES: usize = 2048;

/// An `InstancePre` for `component` and the engine interface it exports,
/// or the reason it does not fit the contract.
pub(super) fn pre_for(
    linker: &wasmtime::component::Linker<ScanState>,
    component: &wasmtime::component::Component,
) -> Result<(wasmtime::component::InstancePre<ScanState>, EngineExports), String> {
    let mut linker = linker.clone();
    super::imports::deny_the_rest(&mut linker, component)
        .map_err(|e| format!("cannot link what cordon denies: {e:#}"))?;
    let pre = linker.instantiate_pre(component).map_err(|e| {
        format!("imports something cordon does not provide (engines may import only cordon:scanner/host and WASI): {e:#}")
    })?;
    let exports = EngineExports::of(component)?;
    Ok((pre, exports))
}

impl Generation {
    /// Scans a whole message on a fresh instance, waiting for a concurrency
    /// permit and a pool slot first. The call is an async call on the
    /// calling task (see the `async_scan` module). When
    /// the engine wants parts and `parts` is given, the same instance also
    /// scans each decoded part, and the verdicts are merged; a decomposition
    /// cut short by a limit makes a clean result `unscannable(limits-exceeded)`.
    pub async fn scan(
        self: &Arc<Self>,
        envelope: Arc<Envelope>,
        message: Arc<[u8]>,
        parts: Option<Arc<Decomposed>>,
    ) -> (EngineOutcome, ScanTiming) {
        if message.len() as u64 > self.limits.max_message_bytes {
            return (
                EngineOutcome::fault(
                    FaultKind::MessageTooLarge,
                    format!(
                        "message is {} bytes, over the engine's max_message_bytes of {}",
                        message.len(),
                        self.limits.max_message_bytes
                    ),
                ),
                ScanTiming::default(),
            );
        }
        let parts = parts.filter(|_| self.info.wants_parts);
        let queued_at = Instant::now();
        // Both semaphores live as long as the generation: acquire cannot fail.
        let Ok(_permit) = self.concurrency.clone().acquire_owned().await else {
            return (overloaded(), ScanTiming::default());
        };
        let Ok(_pool_slot) = self.pool.clone().acquire_owned().await else {
            return (overloaded(), ScanTiming::default());
        };
        let queued = queued_at.elapsed();
        let run_at = Instant::now();
        let outcome = self.scan_async(&envelope, &message, parts.as_deref()).await;
        (
            outcome,
            ScanTiming {
                queued,
                run: run_at.elapsed(),
            },
        )
    }

    /// Scans a whole message on a fresh instance, on the calling thread,
    /// without waiting for permits or pool slots. For benchmarks and callers that manage
    /// concurrency themselves.
    pub fn scan_blocking(&self, envelope: &Envelope, message: &[u8]) -> EngineOutcome {
        self.call_verdict(|instance, store, limits| {
            let scan = self.exports.scan(store, instance)?;
            let (v,) = scan.call(&mut *store, (envelope, message))?;
            Ok(check_verdict(&v, limits).map(|()| v))
        })
    }

    /// Scans a message and then each of its decoded parts on one fresh
    /// instance, on the calling thread; the verdicts are merged.
    pub fn scan_with_parts_blocking(
        &self,
        envelope: &Envelope,
        message: &[u8],
        parts: &Decomposed,
    ) -> EngineOutcome {
        self.call_verdict(|instance, store, limits| {
            let scan = self.exports.scan(store, instance)?;
            let (mut acc,) = scan.call(&mut *store, (envelope, message))?;
            if let Err(why) = check_verdict(&acc, limits) {
                return Ok(Err(why));
            }
            let scan_part = self.exports.scan_part(store, instance)?;
            for part in &parts.parts {
                let started = Instant::now();
                let (v,) = scan_part.call(&mut *store, (envelope, &part.info, &part.content))?;
                self.stats.record_part(started.elapsed());
                if let Err(why) = merge_part(&mut acc, v, part.info.index, limits) {
                    return Ok(Err(why));
                }
            }
            Ok(finish_parts(acc, parts, limits))
        })
    }

    /// `info` on a fresh instance, after typing every function of the
    /// engine interface on it.
    fn call_info(&self) -> Result<EngineInfo, String> {
        let mut store = self.new_store();
        let instance = self.pre.instantiate(&mut store);
        let r = instance.map(|instance| {
            self.exports.check(&mut store, &instance)?;
            Ok(self
                .exports
                .info(&mut store, &instance)
                .and_then(|f| f.call(&mut store, ()).map(|(info,)| info)))
        });
        store.data().flush_output();
        let fault = |e: wasmtime::Error| {
            let f = classify(&e, store.data().limiter.memory_denied);
            format!(
                "{}: {}",
                f.kind,
                crate::text::escape(&f.detail, MAX_REASON_BYTES)
            )
        };
        match r {
            Err(e) | Ok(Ok(Err(e))) => Err(fault(e)),
            Ok(Err(signature)) => Err(signature),
            Ok(Ok(Ok(info))) => Ok(info),
        }
    }

    /// The contract version the engine was built against.
    pub fn contract(&self) -> Contract {
        self.exports.contract
    }

    pub(super) fn new_store(&self) -> Store<ScanState> {
        let mut store = Store::new(
            &self.wasmtime,
            ScanState::new(self.name.clone(), self.limits.memory_bytes),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(hostcall_fuel(&self.limits));
        store.set_max_component_handles(super::state::MAX_COMPONENT_HANDLES);
        store.data_mut().deadline = Instant::now() + self.limits.timeout;
        store.set_epoch_deadline(deadline_ticks(self.limits.timeout));
        store.epoch_deadline_trap();
        store
    }

    /// Runs `call` on a fresh instance. `call` returns the guest's error, or
    /// the verdict checked against the limits it is given.
    fn call_verdict(
        &self,
        call: impl FnOnce(
            &wasmtime::component::Instance,
            &mut Store<ScanState>,
            &super::spec::VerdictLimits,
        ) -> wasmtime::Result<Result<Verdict, String>>,
    ) -> EngineOutcome {
        let mut store = self.new_store();
        let outcome = match self.pre.instantiate(&mut store) {
            Err(e) => instantiation_fault(&e, store.data().limiter.memory_denied),
            Ok(scanner) => {
                let r = call(&scanner, &mut store, &self.limits.verdict);
                call_outcome(r, store.data().limiter.memory_denied)
            }
        };
        store.data().flush_output();
        outcome
    }
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("name", &self.name)
            .field("number", &self.number)
            .field("version", &self.info.version)
            .field("definitions", &self.info.definitions_version)
            .finish_non_exhaustive()
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        tracing::debug!(
            engine = %self.name,
            generation = self.number,
            image_bytes = self.image_bytes,
            "generation freed"
        );
    }
}

/// Merges one part's verdict `v` into `acc`: the part's verdict is checked
/// against `limits`, and so is the merged one after it, so that a merged
/// verdict never grows past the limits before it is refused.
pub(super) fn merge_part(
    acc: &mut Verdict,
    v: Verdict,
    index: u32,
    limits: &super::spec::VerdictLimits,
) -> Result<(), String> {
    check_verdict(&v, limits).map_err(|why| format!("part {index}: {why}"))?;
    merge(acc, v);
    check_verdict(acc, limits).map_err(|why| format!("merged up to part {index}: {why}"))
}

/// The verdict once every part is merged: a decomposition cut short by a
/// limit makes a clean result `unscannable(limits-exceeded)`.
pub(super) fn finish_parts(
    mut acc: Verdict,
    parts: &Decomposed,
    limits: &super::spec::VerdictLimits,
) -> Result<Verdict, String> {
    if parts.exceeded.is_some() && !matches!(acc.outcome, Outcome::Detected(_)) {
        acc.outcome = Outcome::Unscannable(UnscannableReason::LimitsExceeded);
    }
    check_verdict(&acc, limits).map(|()| acc)
}

/// The outcome of a fresh instance that could not be made.
pub(super) fn instantiation_fault(e: &wasmtime::Error, memory_denied: bool) -> EngineOutcome {
    EngineOutcome::Fault(instantiation_fault_of(e, memory_denied))
}

/// Why a fresh instance could not be made.
pub(super) fn instantiation_fault_of(e: &wasmtime::Error, memory_denied: bool) -> Fault {
    if memory_denied {
        Fault {
            kind: FaultKind::OutOfMemory,
            detail: format!("instantiation needs more memory than the limit: {e:#}"),
        }
    } else {
        Fault {
            kind: FaultKind::Overloaded,
            detail: format!("cannot instantiate: {e:#}"),
        }
    }
}

/// The outcome of a scan call: its verdict (sanitised), a verdict the
/// host refused (`bad-output`), or the fault it ended with.
pub(super) fn call_outcome(
    r: wasmtime::Result<Result<Verdict, String>>,
    memory_denied: bool,
) -> EngineOutcome {
    match r {
        Ok(Ok(mut v)) => {
            super::outcome::sanitize(&mut v);
            EngineOutcome::Verdict(v)
        }
        Ok(Err(why)) => EngineOutcome::fault(FaultKind::BadOutput, why),
        Err(e) => EngineOutcome::Fault(classify(&e, memory_denied)),
    }
}

fn overloaded() -> EngineOutcome {
    EngineOutcome::fault(FaultKind::Overloaded, "engine is shutting down")
}
