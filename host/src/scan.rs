//! One message fanned out to every enabled engine.
//!
//! The engines of one message run concurrently, each on its own fresh
//! instance and under its own limits; the message bytes are shared, never
//! copied per engine on the host side. The result is one [`EngineResult`]
//! per engine, in engine order, for the policy to judge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::Envelope;
use crate::engine::{EngineOutcome, Generation, ScanTiming};
use crate::mime::{MimeLimits, decompose};

/// A message to scan.
#[derive(Clone)]
pub struct Message {
    /// What the MTA knows about it.
    pub envelope: Arc<Envelope>,
    /// The raw bytes, headers and body.
    pub bytes: Arc<[u8]>,
}

impl Message {
    /// A message with an empty envelope, as `cordon scan` has for files.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Self {
            envelope: Arc::new(empty_envelope()),
            bytes: bytes.into(),
        }
    }
}

/// An envelope with nothing known.
pub fn empty_envelope() -> Envelope {
    Envelope {
        client_address: None,
        client_name: String::new(),
        helo: String::new(),
        mail_from: String::new(),
        recipients: Vec::new(),
        authenticated_user: None,
        queue_id: None,
    }
}

/// What one engine made of the message.
#[derive(Debug, Clone)]
pub struct EngineResult {
    /// The engine's name in config.
    pub engine: Arc<str>,
    /// The generation that scanned it.
    pub generation: u64,
    /// The verdict or fault.
    pub outcome: EngineOutcome,
    /// Where the time went.
    pub timing: ScanTiming,
}

/// Every engine's result for one message.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// One per engine, in engine order.
    pub results: Vec<EngineResult>,
    /// Wall-clock time for the whole message.
    pub elapsed: Duration,
}

/// Scans `message` with every generation in `engines`, concurrently. If
/// any engine wants decoded parts, the message is decomposed once, within
/// `mime`, and the parts are shared.
pub async fn scan_message(
    engines: &[Arc<Generation>],
    message: &Message,
    mime: &MimeLimits,
) -> ScanReport {
    let started = Instant::now();
    let parts = if engines.iter().any(|g| g.info.wants_parts) {
        let bytes = message.bytes.clone();
        let limits = mime.clone();
        tokio::task::spawn_blocking(move || decompose(&bytes, &limits))
            .await
            .ok()
            .map(Arc::new)
    } else {
        None
    };
    let scans = engines.iter().map(|g| {
        let g = g.clone();
        let envelope = message.envelope.clone();
        let bytes = message.bytes.clone();
        let parts = parts.clone();
        async move {
            let (outcome, timing) = match &parts {
                Some(_) => g.scan(envelope, bytes, parts).await,
                // Decomposition itself failed (a panic in the parser): the
                // engines that wanted parts cannot give a full verdict.
                None if g.info.wants_parts => (
                    EngineOutcome::fault(
                        crate::engine::FaultKind::Trap,
                        "MIME decomposition failed",
                    ),
                    ScanTiming::default(),
                ),
                None => g.scan(envelope, bytes, None).await,
            };
            EngineResult {
                engine: g.name.clone(),
                generation: g.number,
                outcome,
                timing,
            }
        }
    });
    let results = futures_util::future::join_all(scans).await;
    ScanReport {
        results,
        elapsed: started.elapsed(),
    }
}
