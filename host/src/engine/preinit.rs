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
use wasmtime_wizer::{WasmtimeWizerComponent, Wizer};

use std::time::Duration;

use super::compiler::CompileBounds;
use super::spec::{EngineLimits, EngineSpec};
use super::state::ScanState;
use super::{LoadError, Runtime, deadline_ticks};
use crate::bindings::{Scanner, Setting};

/// The fully qualified `init` export, as wizer names it.
const INIT_EXPORT: &str = "cordon:scanner/engine.init@0.1.0";

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
    wizer.init_func(INIT_EXPORT).keep_init_func(true);
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
    let init = Scanner::new(&mut store, &instance)
        .and_then(|s| s.cordon_scanner_engine().call_init(&mut store, &settings));
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
    let snap = futures_executor::block_on(wizer.snapshot_component(
        &cx,
        &mut WasmtimeWizerComponent {
            store: &mut store,
            instance,
        },
    ))
    .map_err(|e| failed("cannot snapshot the initialised engine", e))?;
    tracing::debug!(
        engine = %engine_name,
        init_ms,
        snapshot_ms = snapshot_started.elapsed().as_millis(),
        image_bytes = snap.len(),
        "init run and snapshotted"
    );
    Ok(snap)
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
