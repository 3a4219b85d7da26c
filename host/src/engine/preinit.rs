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

use super::deadline_ticks;
use super::spec::EngineLimits;
use super::state::ScanState;
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
    let init = Scanner::new(&mut store, &instance)
        .and_then(|s| s.cordon_scanner_engine().call_init(&mut store, &settings));
    store.data().flush_output();
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
    let snap = futures_executor::block_on(wizer.snapshot_component(
        &cx,
        &mut WasmtimeWizerComponent {
            store: &mut store,
            instance,
        },
    ))
    .map_err(|e| failed("cannot snapshot the initialised engine", e))?;
    Ok(snap)
}
