//! One message fanned out to every enabled engine.
//!
//! The engines of one message run concurrently, each on its own fresh
//! instance and under its own limits; the message bytes are shared, never
//! copied per engine on the host side. The result is one [`EngineResult`]
//! per engine, in engine order, for the policy to judge; [`judge`] runs the
//! whole way: skip rules, the scan, the policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::Envelope;
use crate::cache::VerdictCache;
use crate::engine::{EngineOutcome, Generation, ScanTiming};
use crate::mime::{MimeLimits, decompose_bounded};
use crate::policy::{self, Context, Decision, Policy, Skipped};

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
    /// The verdict came from the cache.
    pub cached: bool,
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
                Some(crate::cache::digest(&message.bytes))
            } else {
                let bytes = message.bytes.clone();
                tokio::task::spawn_blocking(move || crate::cache::digest(&bytes))
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

/// A message judged: the engines' results and the decision.
#[derive(Debug, Clone)]
pub struct Judged {
    /// What the engines that were asked said.
    pub report: ScanReport,
    /// What the MTA is told.
    pub decision: Decision,
}

/// Applies each engine's skip rules, scans with the engines left, and
/// decides. `size` is the message's real size: when it is larger than
/// `message.bytes` (the MTA sent more than any engine takes and the rest
/// was not kept), the engines asked get a `message-too-large` fault
/// without a scan. `header_names`, `scan_id` and `host` are handed to the
/// policy.
#[allow(clippy::too_many_arguments)]
pub async fn judge(
    engines: &[Arc<Generation>],
    message: &Message,
    size: u64,
    mime: &MimeLimits,
    cache: Option<&VerdictCache>,
    policy: &Policy,
    header_names: &[String],
    scan_id: &str,
    host: Option<&str>,
) -> Judged {
    let mut asked = Vec::with_capacity(engines.len());
    let mut skipped = Vec::new();
    for g in engines {
        match policy.rules(&g.name).skip_reason(&message.envelope, size) {
            Some(reason) => skipped.push(Skipped {
                engine: g.name.to_string(),
                reason,
            }),
            None => asked.push(g.clone()),
        }
    }
    let report = if asked.is_empty() {
        ScanReport {
            results: Vec::new(),
            elapsed: Duration::ZERO,
        }
    } else if size > message.bytes.len() as u64 {
        ScanReport {
            results: asked
                .iter()
                .map(|g| EngineResult {
                    engine: g.name.clone(),
                    generation: g.number,
                    outcome: EngineOutcome::fault(
                        crate::engine::FaultKind::MessageTooLarge,
                        format!(
                            "{size} bytes, over the engine's limit of {}",
                            g.limits.max_message_bytes
                        ),
                    ),
                    timing: ScanTiming::default(),
                    cached: false,
                })
                .collect(),
            elapsed: Duration::ZERO,
        }
    } else {
        scan_with_cache(&asked, message, mime, cache).await
    };
    // `decide` is linear in the verdicts, which are bounded, but a large
    // one is still milliseconds of CPU: that runs on a blocking thread, not
    // on an async worker that other sessions are waiting for.
    let decision = if verdict_items(&report.results) <= INLINE_DECIDE_ITEMS {
        policy::decide(
            policy,
            &report.results,
            &skipped,
            Context {
                envelope: &message.envelope,
                header_names,
                scan_id,
                host,
            },
        )
    } else {
        let (p, results, envelope) = (
            policy.clone(),
            report.results.clone(),
            message.envelope.clone(),
        );
        let (names, id, mta_host) = (
            header_names.to_vec(),
            scan_id.to_string(),
            host.map(str::to_string),
        );
        let skipped_all = skipped.clone();
        let decided = tokio::task::spawn_blocking(move || {
            policy::decide(
                &p,
                &results,
                &skipped_all,
                Context {
                    envelope: &envelope,
                    header_names: &names,
                    scan_id: &id,
                    host: mta_host.as_deref(),
                },
            )
        })
        .await;
        // A panic in `decide` is a bug: it goes on as if it had happened
        // here (the session ends and the MTA applies its default action).
        decided.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    Judged { report, decision }
}

/// Verdicts with at most this many items in all are judged on the calling
/// task (microseconds); larger ones on a blocking thread.
const INLINE_DECIDE_ITEMS: usize = 2048;

/// Threats, rules, recipient verdicts with their rules, and headers in all
/// of `results`: what `decide` walks.
fn verdict_items(results: &[EngineResult]) -> usize {
    results
        .iter()
        .map(|r| match &r.outcome {
            EngineOutcome::Verdict(v) => {
                let threats = match &v.outcome {
                    crate::bindings::Outcome::Detected(t) => t.len(),
                    _ => 0,
                };
                threats
                    + v.rules.len()
                    + v.headers.len()
                    + v.recipients
                        .iter()
                        .map(|r| 1 + r.rules.len())
                        .sum::<usize>()
            }
            EngineOutcome::Fault(_) => 1,
        })
        .sum()
}
