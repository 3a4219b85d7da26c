//! Pre-initialisation: run an engine's `init` once and snapshot the result.
//!
//! wizer instruments the component, instantiates it in a limited store, calls
//! `init(settings)` through its WAVE-encoded init call, and writes the
//! instance's memories and globals back into a new component. Instances made
//! from that component start initialised, so `init` runs once per generation
//! however many messages are scanned.

use std::collections::BTreeMap;

use wasmtime::Store;
use wasmtime::component::{Val, wasm_wave};
use wasmtime_wizer::Wizer;

use super::state::ScanState;
use super::{Runtime, deadline_ticks};
use crate::config::EngineLimits;

/// The fully qualified `init` export, in the form wizer's init call takes.
const INIT_EXPORT: &str = "cordon:scanner/engine.init@0.1.0";

/// Why pre-initialisation failed.
pub(super) enum PreinitError {
    /// The engine's `init` returned an error string.
    Refused(String),
    /// The engine faulted, or the snapshot could not be made.
    Failed(String),
}

/// Runs `init(settings)` in a fresh instance of `bytes` and returns the
/// snapshotted component.
pub(super) fn snapshot(
    rt: &Runtime,
    engine_name: &str,
    bytes: &[u8],
    settings: &BTreeMap<String, String>,
    limits: &EngineLimits,
    definitions: Option<&std::path::Path>,
    init_timeout: std::time::Duration,
) -> Result<Vec<u8>, PreinitError> {
    let list = Val::List(
        settings
            .iter()
            .map(|(k, v)| {
                Val::Record(vec![
                    ("key".into(), Val::String(k.clone())),
                    ("value".into(), Val::String(v.clone())),
                ])
            })
            .collect(),
    );
    let wave = wasm_wave::to_string(&list)
        .map_err(|e| PreinitError::Failed(format!("cannot encode settings: {e}")))?;
    let mut wizer = Wizer::new();
    wizer
        .init_func(format!("{INIT_EXPORT}({wave})"))
        .keep_init_func(true);

    let state = ScanState::for_init(engine_name.into(), limits.memory_bytes, definitions)
        .map_err(PreinitError::Failed)?;
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| &mut s.limiter);
    // wizer reads the initialised memories back through host calls; the
    // default cap on bytes per host call (128 MiB) is smaller than a large
    // definitions set. The engine's memory limit bounds it instead.
    store.set_hostcall_fuel(
        usize::try_from(limits.memory_bytes.saturating_mul(2)).unwrap_or(usize::MAX),
    );
    store.set_epoch_deadline(deadline_ticks(init_timeout));
    store.epoch_deadline_trap();

    let linker = &rt.linker;
    let run = wizer.run_component(&mut store, bytes, async |store, component| {
        linker.instantiate_async(store, component).await
    });
    let result = futures_executor::block_on(run);
    store.data().flush_output();
    let (snapshot, rets) = match result {
        Ok(r) => r,
        Err(e) => {
            let fault = super::outcome::classify(&e, store.data().limiter.memory_denied);
            return Err(PreinitError::Failed(format!(
                "{} ({}): {e:#}",
                fault.kind, fault.detail
            )));
        }
    };
    match rets.first() {
        Some(Val::Result(Ok(_))) => Ok(snapshot),
        Some(Val::Result(Err(Some(msg)))) => Err(PreinitError::Refused(match &**msg {
            Val::String(s) => s.clone(),
            other => format!("{other:?}"),
        })),
        other => Err(PreinitError::Failed(format!(
            "init returned an unexpected value: {other:?}"
        ))),
    }
}
