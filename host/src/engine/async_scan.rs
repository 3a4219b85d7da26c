//! Scans as async calls on the calling worker.
//!
//! A scan handed to a blocking thread costs a thread switch there and one
//! back for every engine and every message: through Postfix, with testsig
//! and clamsig, about a third of the CPU cordon spent per message. So
//! scans run as async calls (wasmtime runs the guest on a fiber) on the
//! async worker that asks: the guest's WASI calls are WASI's asynchronous
//! bindings (the synchronous ones block on the runtime and cannot run on
//! a worker), and the epoch, every tick, makes a running guest yield to
//! the worker's other tasks until the scan's wall-clock deadline, where it
//! traps. A looping engine therefore shares the worker until its timeout
//! instead of holding it; `init`, `info` and the self-test keep their
//! synchronous path.

use std::time::Instant;

use wasmtime::component::Instance;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::generation::{Generation, call_outcome, finish_parts, instantiation_fault, merge_part};
use super::outcome::{EngineOutcome, check_verdict};
use super::state::ScanState;
use crate::bindings::{Envelope, PartInfo, Verdict};
use crate::mime::Decomposed;

/// The engine interface's name in the component's exports.
const ENGINE_EXPORT: &str = "cordon:scanner/engine@0.1.0";

impl Generation {
    /// Scans `message` (and `parts`, when given) on a fresh instance, as an
    /// async call within the engine's timeout.
    pub(super) async fn scan_async(
        &self,
        envelope: &Envelope,
        message: &[u8],
        parts: Option<&Decomposed>,
    ) -> EngineOutcome {
        let mut store = self.new_store();
        let deadline = store.data().deadline;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let outcome = match self.pre_async.instantiate_async(&mut store).await {
            Err(e) => instantiation_fault(&e, store.data().limiter.memory_denied),
            Ok(instance) => {
                let r = self
                    .calls(&mut store, &instance, envelope, message, parts)
                    .await;
                call_outcome(r, store.data().limiter.memory_denied)
            }
        };
        store.data().flush_output();
        outcome
    }

    /// `scan`, then `scan-part` for each part, merged and checked against
    /// the verdict limits after every step.
    async fn calls(
        &self,
        store: &mut Store<ScanState>,
        instance: &Instance,
        envelope: &Envelope,
        message: &[u8],
        parts: Option<&Decomposed>,
    ) -> wasmtime::Result<Result<Verdict, String>> {
        let limits = &self.limits.verdict;
        let engine = instance
            .get_export_index(&mut *store, None, ENGINE_EXPORT)
            .ok_or_else(|| wasmtime::format_err!("no export {ENGINE_EXPORT}"))?;
        let func = |store: &mut Store<ScanState>, name: &str| {
            instance
                .get_export_index(&mut *store, Some(&engine), name)
                .ok_or_else(|| wasmtime::format_err!("no export {ENGINE_EXPORT}#{name}"))
        };
        let scan_index = func(store, "scan")?;
        let scan =
            instance.get_typed_func::<(&Envelope, &[u8]), (Verdict,)>(&mut *store, &scan_index)?;
        let (mut acc,) = scan.call_async(&mut *store, (envelope, message)).await?;
        if let Err(why) = check_verdict(&acc, limits) {
            return Ok(Err(why));
        }
        let Some(parts) = parts else {
            return Ok(Ok(acc));
        };
        let part_index = func(store, "scan-part")?;
        let scan_part = instance.get_typed_func::<(&Envelope, &PartInfo, &[u8]), (Verdict,)>(
            &mut *store,
            &part_index,
        )?;
        for part in &parts.parts {
            let started = Instant::now();
            let (v,) = scan_part
                .call_async(&mut *store, (envelope, &part.info, &part.content))
                .await?;
            self.stats.record_part(started.elapsed());
            if let Err(why) = merge_part(&mut acc, v, part.info.index, limits) {
                return Ok(Err(why));
            }
        }
        Ok(finish_parts(acc, parts, limits))
    }
}
