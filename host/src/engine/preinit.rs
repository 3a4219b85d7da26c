//! Pre-initialisation: run an engine's `init` once and snapshot the result.
//!
//! wizer instruments the component; the instrumented component is compiled
//! through the compiled-component cache (instrumenting is deterministic, so
//! after the first load of a component this is a cache hit, and a reload
//! for new definitions compiles only the snapshot); it is instantiated in a
//! limited store, `init(settings)` is called through the typed bindings,
//! and wizer writes the instance's memories and globals back into a new
//! component. Instances made from that component start initialised, so
//! `init` runs once per generation however many messages are scanned.

use std::collections::BTreeMap;

use wasmtime::Store;
use wasmtime_wizer::{ComponentInstanceState, WasmtimeWizerComponent, Wizer};

use std::time::Duration;

use super::compiler::CompileBounds;
use super::exports::EngineExports;
use super::spec::{EngineLimits, EngineSpec};
use super::state::ScanState;
use super::{LoadError, Runtime, deadline_ticks};
use crate::bindings::Setting;

/// Why pre-initialisation failed.
pub(super) enum PreinitError {
    /// The engine's `init` returned an error string.
    Refused(String),
    /// The engine faulted, or the snapshot could not be made.
    Failed(String),
}

/// Everything one pre-initialisation needs, owned, so that it can run on a
/// thread the load does not have to wait for past its deadline.
pub(super) struct Job {
    pub wasmtime: wasmtime::Engine,
    pub linker: wasmtime::component::Linker<ScanState>,
    pub compiler: super::compiler::Compiler,
    pub bounds: super::compiler::CompileBounds,
    pub cache_dir: std::path::PathBuf,
    pub name: String,
    pub bytes: Vec<u8>,
    pub label: String,
    pub settings: BTreeMap<String, String>,
    pub limits: EngineLimits,
    pub definitions: Option<std::path::PathBuf>,
    pub timeout: std::time::Duration,
}

impl Job {
    /// Runs `init(settings)` in a fresh instance of the component and
    /// returns the snapshot. The definitions directory, when given, is
    /// preopened read-only as `/definitions` for the duration of `init`.
    pub(super) fn run(self) -> Result<Vec<u8>, PreinitError> {
        snapshot(&self)
    }
}

fn snapshot(job: &Job) -> Result<Vec<u8>, PreinitError> {
    let Job {
        wasmtime: engine,
        linker,
        compiler,
        bounds,
        cache_dir,
        name: engine_name,
        bytes,
        label,
        settings,
        limits,
        definitions,
        timeout: init_timeout,
    } = job;
    let init_timeout = *init_timeout;
    let failed = |what: &str, e: wasmtime::Error| PreinitError::Failed(format!("{what}: {e:#}"));
    let mut wizer = Wizer::new();
    // cordon calls `init` itself (below) and keeps it exported, so wizer
    // never looks for an init function by name.
    wizer.keep_init_func(true);
    let (cx, instrumented) = wizer
        .instrument_component(bytes)
        .map_err(|e| failed("cannot instrument the component", e))?;
    let component = super::artifacts::load_or_compile(
        engine,
        compiler,
        *bounds,
        cache_dir,
        &instrumented,
        label,
    )
    .map_err(|e| PreinitError::Failed(format!("instrumented component: {e:#}")))?;

    let state = ScanState::for_init(
        engine_name.as_str().into(),
        limits.memory_bytes,
        definitions.as_deref(),
    )
    .map_err(PreinitError::Failed)?;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_hostcall_fuel(super::generation::hostcall_fuel(limits));
    store.set_max_component_handles(super::state::MAX_COMPONENT_HANDLES);
    store.data_mut().deadline = std::time::Instant::now() + init_timeout;
    store.set_epoch_deadline(deadline_ticks(init_timeout));
    store.epoch_deadline_trap();

    let fault = |store: &Store<ScanState>, e: &wasmtime::Error| {
        let f = super::outcome::classify(e, store.data().limiter.memory_denied);
        PreinitError::Failed(format!("{} ({}): {e:#}", f.kind, f.detail))
    };
    let mut linker = linker.clone();
    if let Err(e) = super::imports::deny_the_rest(&mut linker, &component) {
        return Err(failed("cannot link what cordon denies", e));
    }
    let instance = match linker.instantiate(&mut store, &component) {
        Ok(i) => i,
        Err(e) => {
            store.data().flush_output();
            return Err(fault(&store, &e));
        }
    };
    let settings: Vec<Setting> = settings
        .iter()
        .map(|(k, v)| Setting {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    let init_started = std::time::Instant::now();
    let init = EngineExports::of(&component)
        .map_err(|e| wasmtime::format_err!("{e}"))
        .and_then(|exports| exports.init(&mut store, &instance))
        .and_then(|init| init.call(&mut store, (&settings,)))
        .map(|(r,)| r);
    store.data().flush_output();
    let init_ms = init_started.elapsed().as_millis();
    match init {
        Ok(Ok(_)) => {}
        Ok(Err(msg)) => return Err(PreinitError::Refused(msg)),
        Err(e) => return Err(fault(&store, &e)),
    }
    // The snapshot reads the instance's memories and globals through the
    // component (wizer's accessor exports), and those reads are lifted like
    // any guest-to-host transfer: the per-call bound meant for verdicts and
    // log lines would refuse any engine with more state than that. What is
    // read is bounded by the memory limit the instance ran under.
    store.set_hostcall_fuel(usize::MAX);
    let snapshot_started = std::time::Instant::now();
    let mut view = PageGranular {
        inner: WasmtimeWizerComponent {
            store: &mut store,
            instance,
        },
        reads: BTreeMap::new(),
    };
    let snap = futures_executor::block_on(wizer.snapshot_component(&cx, &mut view))
        .map_err(|e| failed("cannot snapshot the initialised engine", e))?;
    view.check().map_err(PreinitError::Failed)?;
    tracing::debug!(
        engine = %engine_name,
        init_ms,
        snapshot_ms = snapshot_started.elapsed().as_millis(),
        image_bytes = snap.len(),
        "init run and snapshotted"
    );
    Ok(snap)
}

/// Bytes per page of the snapshot's segmentation: the host page, which is
/// what the compiled image is mapped in anyway.
const SNAPSHOT_PAGE: usize = 4096;

/// wizer's view of the instance, making its data segments page-granular.
///
/// wizer reads each memory twice: once to find the ranges of non-zero
/// bytes, then to copy those ranges out as data segments. It finds the
/// ranges byte by byte, and a dense heap (little-endian integers are full
/// of zero bytes) splits into millions of runs that are then sorted and
/// merged down to ten thousand segments: about 0.4 s of a 0.65 s snapshot
/// for clamsig's 108 MB image. The first read of each memory is therefore
/// given a mask of the same length in which each 4 KiB page holding any
/// non-zero byte is all 0xff and every other page is zero; the second read
/// is the real memory, so each segment is a whole run of pages with its
/// real contents (zero bytes included, which the zeroed memory makes
/// harmless). The compiled image is page-based, so it is the same. The
/// reads are counted and a snapshot in which a memory was not read
/// exactly twice is refused, so a wizer that took its data from the first
/// read could never produce an image of masks (wizer is pinned with
/// wasmtime; the count is the guard for when it moves).
struct PageGranular<S> {
    inner: S,
    /// Reads of each memory accessor so far.
    reads: BTreeMap<String, u32>,
}

impl<S> PageGranular<S> {
    /// Whether every memory was read exactly twice (ranges, then data).
    fn check(&self) -> Result<(), String> {
        match self.reads.iter().find(|(_, n)| **n != 2) {
            None => Ok(()),
            Some((memory, n)) => Err(format!(
                "cannot snapshot the initialised engine: wizer read memory {memory} {n} time(s), \
                 where the page-granular snapshot expects two (a ranges pass, then a data pass)"
            )),
        }
    }
}

/// `memory` with every 4 KiB page that holds a non-zero byte set to 0xff.
fn page_mask(memory: &[u8]) -> Vec<u8> {
    // Zeroed allocation: the pages left zero are never touched.
    let mut mask = vec![0u8; memory.len()];
    for (page, out) in memory
        .chunks(SNAPSHOT_PAGE)
        .zip(mask.chunks_mut(SNAPSHOT_PAGE))
    {
        // OR-folding whole words vectorises; `any` with its early exit
        // does not.
        let mut words = page.chunks_exact(8);
        let mut acc = words.by_ref().fold(0u64, |a, w| {
            a | u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))
        });
        acc |= words
            .remainder()
            .iter()
            .fold(0u64, |a, b| a | u64::from(*b));
        if acc != 0 {
            out.fill(0xff);
        }
    }
    mask
}

impl<S: ComponentInstanceState> ComponentInstanceState for PageGranular<S> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let n = self.reads.entry(func.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            self.inner
                .call_func_ret_list_u8(instance, func, |memory| contents(&page_mask(memory)))
                .await
        } else {
            self.inner
                .call_func_ret_list_u8(instance, func, contents)
                .await
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.inner.call_func_ret_s32(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.inner.call_func_ret_s64(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.inner.call_func_ret_f32(instance, func).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.inner.call_func_ret_f64(instance, func).await
    }
}

/// How long past `init_timeout` a load waits for the init thread: the epoch
/// and the clock end a guest at the deadline; this is for a thread stuck in
/// the kernel.
const INIT_GRACE: Duration = Duration::from_secs(2);

/// Compiles the component (or takes it from the cache), checks that it
/// implements the world, runs its `init` and returns the snapshot of the
/// initialised instance.
pub(super) fn build_snapshot(
    rt: &Runtime,
    spec: &EngineSpec,
    bytes: Vec<u8>,
    label: &str,
    bounds: CompileBounds,
) -> Result<Vec<u8>, LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        reason,
    };
    // Check the world on the original component first: its errors are the
    // ones a vendor can act on (which import or export is missing).
    let original = super::artifacts::load_or_compile(
        &rt.mapped.wasmtime,
        &rt.compiler,
        bounds,
        &rt.cache_dir,
        &bytes,
        label,
    )
    .map_err(|e| invalid(format!("{e:#}")))?;
    let _ = super::generation::pre_for(&rt.mapped.linker, &original).map_err(invalid)?;

    let init_timeout = spec.limits.init_timeout;
    // On a thread of its own: WASI's synchronous bridge blocks on a tokio
    // runtime and must not find itself inside one (a caller's async task),
    // so loading is safe from any context. The epoch deadline stops a guest
    // that computes and the clock stops one that sleeps; a host call stuck
    // in the kernel is not interruptible, so the load also has a hard
    // wall-clock limit: past it the load is refused and the thread is left
    // to end on its own.
    let snapshot = {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = Job {
            wasmtime: rt.mapped.wasmtime.clone(),
            linker: rt.mapped.linker.clone(),
            compiler: rt.compiler.clone(),
            bounds,
            cache_dir: rt.cache_dir.clone(),
            name: spec.name.clone(),
            bytes,
            label: label.to_string(),
            settings: spec.settings.clone(),
            limits: spec.limits.clone(),
            definitions: spec.definitions.clone(),
            timeout: init_timeout,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("cordon-init-{}", spec.name))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()))
                    .unwrap_or_else(|panic| {
                        let why = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("no message");
                        Err(PreinitError::Failed(format!(
                            "pre-initialisation failed: {why}"
                        )))
                    });
                let _ = tx.send(r);
            });
        match spawned {
            Err(e) => Err(PreinitError::Failed(format!(
                "cannot start the init thread: {e}"
            ))),
            Ok(_) => match rx.recv_timeout(init_timeout + INIT_GRACE) {
                Ok(r) => r,
                Err(_) => Err(PreinitError::Failed(format!(
                    "init did not finish within {} ms (init_timeout_ms); the engine is stuck in a host call",
                    init_timeout.as_millis()
                ))),
            },
        }
    }
    .map_err(|e| match e {
        PreinitError::Refused(reason) | PreinitError::Failed(reason) => LoadError::Init {
            engine: spec.name.clone(),
            path: spec.component.clone(),
            // The engine sees its definitions as /definitions: name the
            // operator's files instead.
            reason: crate::text::escape(
                &match &spec.definitions {
                    Some(d) => reason.replace("/definitions/", &format!("{}/", d.display())),
                    None => reason,
                },
                super::generation::MAX_REASON_BYTES,
            ),
        },
    })?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory of one partial and three whole pages: non-zero bytes at the
    /// very end of page 0, none in page 1, one in the middle of page 2, and
    /// the partial last page non-zero only in its last byte.
    fn memory() -> Vec<u8> {
        let mut m = vec![0u8; 3 * SNAPSHOT_PAGE + 100];
        m[SNAPSHOT_PAGE - 1] = 1;
        m[2 * SNAPSHOT_PAGE + 2000] = 0x80;
        m[3 * SNAPSHOT_PAGE + 99] = 7;
        m
    }

    #[test]
    fn the_mask_covers_exactly_the_pages_that_hold_a_non_zero_byte() {
        let m = memory();
        let mask = page_mask(&m);
        assert_eq!(mask.len(), m.len());
        let page = |k: usize| &mask[k * SNAPSHOT_PAGE..((k + 1) * SNAPSHOT_PAGE).min(mask.len())];
        assert!(page(0).iter().all(|b| *b == 0xff));
        assert!(page(1).iter().all(|b| *b == 0));
        assert!(page(2).iter().all(|b| *b == 0xff));
        assert!(page(3).iter().all(|b| *b == 0xff));
        assert_eq!(page(3).len(), 100);
    }

    /// Hands out one memory.
    struct Fake(Vec<u8>);

    impl ComponentInstanceState for Fake {
        async fn call_func_ret_list_u8(
            &mut self,
            _: &str,
            _: &str,
            contents: impl FnOnce(&[u8]) + Send,
        ) {
            contents(&self.0)
        }
        async fn call_func_ret_s32(&mut self, _: &str, _: &str) -> i32 {
            0
        }
        async fn call_func_ret_s64(&mut self, _: &str, _: &str) -> i64 {
            0
        }
        async fn call_func_ret_f32(&mut self, _: &str, _: &str) -> u32 {
            0
        }
        async fn call_func_ret_f64(&mut self, _: &str, _: &str) -> u64 {
            0
        }
    }

    #[test]
    fn the_first_read_of_a_memory_sees_the_mask_and_the_second_the_memory() {
        let m = memory();
        let mut view = PageGranular {
            inner: Fake(m.clone()),
            reads: BTreeMap::new(),
        };
        let mut got = Vec::new();
        for _ in 0..2 {
            futures_executor::block_on(
                view.call_func_ret_list_u8("i", "memory0", |b| got.push(b.to_vec())),
            );
        }
        assert_eq!(got[0], page_mask(&m));
        assert_eq!(got[1], m);
        assert_eq!(view.reads.get("memory0"), Some(&2));
        assert!(view.check().is_ok());
        // A wizer that read a memory once would have taken its data from
        // the mask: refused.
        futures_executor::block_on(view.call_func_ret_list_u8("i", "memory1", |_| {}));
        let e = view.check().unwrap_err();
        assert!(e.contains("memory1 1 time(s)"), "{e}");
    }
}
