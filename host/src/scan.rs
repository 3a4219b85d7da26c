//! One message fanned out to every enabled engine.
//!
//! The engines of one message run concurrently, each on its own fresh
//! instance and under its own limits; the message bytes are shared, never
//! copied per engine on the host side. The result is one [`EngineResult`]
//! per engine, in engine order, for the policy to judge
//! ([`crate::judge`] runs the whole way: skip rules, the scan, the policy).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::Envelope;
use crate::engine::{EngineOutcome, EngineResult, Generation, ScanTiming};
use crate::mime::{MimeLimits, decompose_bounded};
use crate::verdict_cache::VerdictCache;

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
            envelope: Arc::new(crate::bindings::empty_envelope()),
            bytes: bytes.into(),
        }
    }
}

/// Every engine's result for one message.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// One per engine, in engine order.
    pub results: Vec<EngineResult>,
    /// Wall-clock time for the whole message.
    pub elapsed: Duration,
}

/// Messages up to this size are hashed for the cache on the calling task
/// (tens of microseconds); larger ones on a blocking thread.
const INLINE_HASH_BYTES: usize = 256 * 1024;

/// Scans `message` with every generation in `engines`, concurrently. If
/// any engine wants decoded parts, the message is decomposed once, within
/// `mime`, and the parts are shared.
pub async fn scan_message(
    engines: &[Arc<Generation>],
    message: &Message,
    mime: &MimeLimits,
) -> ScanReport {
    scan_with_cache(engines, message, mime, None).await
}

/// [`scan_message`], answering from `cache` where it can and filling it,
/// and counting each engine's outcome in its stats.
pub async fn scan_with_cache(
    engines: &[Arc<Generation>],
    message: &Message,
    mime: &MimeLimits,
    cache: Option<&VerdictCache>,
) -> ScanReport {
    let started = Instant::now();
    // Hash only when some engine's verdict may be cached; a big message is
    // hashed off the async workers, as decomposition is.
    let digest = match cache {
        Some(_) if engines.iter().any(|g| g.cacheable) => {
            if message.bytes.len() <= INLINE_HASH_BYTES {
                Some(crate::verdict_cache::digest(&message.bytes))
            } else {
                let bytes = message.bytes.clone();
                tokio::task::spawn_blocking(move || crate::verdict_cache::digest(&bytes))
                    .await
                    .ok()
            }
        }
        _ => None,
    };
    let mut cached: Vec<Option<crate::bindings::Verdict>> = engines
        .iter()
        .map(|g| match (cache, &digest) {
            (Some(c), Some(d)) if g.cacheable => c.get(&g.name, g.number, d),
            _ => None,
        })
        .collect();
    let parts = if engines
        .iter()
        .zip(&cached)
        .any(|(g, c)| c.is_none() && g.info.wants_parts)
    {
        Some(Arc::new(
            decompose_bounded(message.bytes.clone(), mime).await,
        ))
    } else {
        None
    };
    let scans = engines.iter().zip(cached.iter_mut()).map(|(g, hit)| {
        let g = g.clone();
        let envelope = message.envelope.clone();
        let bytes = message.bytes.clone();
        let parts = parts.clone();
        let hit = hit.take();
        async move {
            if let Some(v) = hit {
                let outcome = EngineOutcome::Verdict(v);
                g.stats.record(&outcome, Duration::ZERO, true);
                return EngineResult {
                    engine: g.name.clone(),
                    generation: g.number,
                    outcome,
                    timing: ScanTiming::default(),
                    cached: true,
                };
            }
            let (outcome, timing) = g.scan(envelope, bytes, parts).await;
            g.stats.record(&outcome, timing.queued + timing.run, false);
            if let (Some(c), Some(d), EngineOutcome::Verdict(v)) = (cache, &digest, &outcome)
                && g.cacheable
            {
                c.put(&g.name, g.number, d, v);
            }
            EngineResult {
                engine: g.name.clone(),
                generation: g.number,
                outcome,
                timing,
                cached: false,
            }
        }
    });
    let results = futures_util::future::join_all(scans).await;
    ScanReport {
        results,
        elapsed: started.elapsed(),
    }
}

/// A fresh scan reference id: 16 hex digits, unique enough to find one
/// message in the logs (random per process, then counted).
pub fn scan_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    // A bijective mix, so consecutive ids do not look consecutive.
    let mut x = base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:016x}", x ^ (x >> 31))
}
