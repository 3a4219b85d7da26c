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

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Instance;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::generation::{
    Generation, call_outcome, finish_parts, instantiation_fault, instantiation_fault_of, merge_part,
};
use super::outcome::{EngineOutcome, Fault, FaultKind, check_verdict, classify};
use super::state::ScanState;
use crate::bindings::{Envelope, LearnClass, LearnOutcome, Verdict};
use crate::mime::Decomposed;

/// Why `learn` gave no outcome.
#[derive(Debug, Clone)]
pub enum LearnError {
    /// The engine faulted (trap, timeout, memory), or no instance could be
    /// made.
    Fault(Fault),
    /// The engine returned an error; its text, escaped and bounded.
    Refused(String),
}

impl std::fmt::Display for LearnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LearnError::Fault(fault) => write!(f, "{}: {}", fault.kind, fault.detail),
            LearnError::Refused(why) => write!(f, "the engine refused: {why}"),
        }
    }
}

impl Generation {
    /// A store for an async call on a fresh instance: the epoch makes a
    /// running guest yield every tick until the call's deadline, where it
    /// traps; the granted capabilities are served.
    fn async_store(&self) -> Store<ScanState> {
        let mut store = self.new_store();
        if let Some(dns) = &self.services.dns {
            store.data_mut().dns = Some(super::capabilities::dns::DnsCall::new(
                dns.clone(),
                self.stats.clone(),
            ));
        }
        if let Some(kv) = &self.services.store {
            store.data_mut().store = Some(super::capabilities::store::StoreCall::new(
                kv.clone(),
                self.name.clone(),
                self.stats.clone(),
            ));
        }
        let deadline = store.data().deadline;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Scans `message` (and `parts`, when given) on a fresh instance, as an
    /// async call within the engine's timeout.
    pub(super) async fn scan_async(
        &self,
        envelope: &Envelope,
        message: &[u8],
        parts: Option<&Decomposed>,
    ) -> EngineOutcome {
        let mut store = self.async_store();
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

    /// Calls the engine's `learn` with `message` as `class` on a fresh
    /// instance, waiting for a concurrency permit and a pool slot first, as
    /// a scan does. `reference` is the scan id of an earlier scan of it.
    pub async fn learn(
        self: &Arc<Self>,
        envelope: &Envelope,
        message: &[u8],
        class: crate::bindings::LearnClass,
        reference: Option<&str>,
    ) -> Result<crate::bindings::LearnOutcome, LearnError> {
        if message.len() as u64 > self.limits.max_message_bytes {
            return Err(LearnError::Fault(Fault {
                kind: FaultKind::MessageTooLarge,
                detail: format!(
                    "message is {} bytes, over the engine's max_message_bytes of {}",
                    message.len(),
                    self.limits.max_message_bytes
                ),
            }));
        }
        let shutting_down = || {
            LearnError::Fault(Fault {
                kind: FaultKind::Overloaded,
                detail: "engine is shutting down".into(),
            })
        };
        let _permit = self
            .concurrency
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shutting_down())?;
        let _pool_slot = self
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shutting_down())?;
        self.learn_async(envelope, message, class, reference).await
    }

    /// Calls the engine's `learn` on a fresh instance, within its timeout.
    /// An engine built against a contract without `learn` (0.1.0) learns
    /// nothing: `unsupported`.
    async fn learn_async(
        &self,
        envelope: &Envelope,
        message: &[u8],
        class: LearnClass,
        reference: Option<&str>,
    ) -> Result<LearnOutcome, LearnError> {
        if !self.exports.contract.has_learn() {
            return Ok(LearnOutcome::Unsupported);
        }
        let mut store = self.async_store();
        let r = match self.pre_async.instantiate_async(&mut store).await {
            Err(e) => Err(LearnError::Fault(instantiation_fault_of(
                &e,
                store.data().limiter.memory_denied,
            ))),
            Ok(instance) => {
                let call = async {
                    let learn = self
                        .exports
                        .learn(&mut store, &instance)?
                        .ok_or_else(|| wasmtime::format_err!("no learn export"))?;
                    let (r,) = learn
                        .call_async(&mut store, (envelope, message, class, reference))
                        .await?;
                    wasmtime::Result::Ok(r)
                };
                match call.await {
                    Ok(Ok(outcome)) => Ok(outcome),
                    Ok(Err(why)) => Err(LearnError::Refused(crate::text::escape(
                        &why,
                        super::generation::MAX_REASON_BYTES,
                    ))),
                    Err(e) => Err(LearnError::Fault(classify(
                        &e,
                        store.data().limiter.memory_denied,
                    ))),
                }
            }
        };
        store.data().flush_output();
        r
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
        let scan = self.exports.scan(store, instance)?;
        let (mut acc,) = scan.call_async(&mut *store, (envelope, message)).await?;
        if let Err(why) = check_verdict(&acc, limits) {
            return Ok(Err(why));
        }
        let Some(parts) = parts else {
            return Ok(Ok(acc));
        };
        let scan_part = self.exports.scan_part(store, instance)?;
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
