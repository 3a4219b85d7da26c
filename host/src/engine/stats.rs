//! Counters and timings per engine, shared by every generation of the
//! engine, read by `cordon stats` and `/metrics`. Lock-free: atomics only.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bindings::Outcome;
use crate::engine::{EngineOutcome, FaultKind};

/// Buckets of a [`Histogram`]: bucket `i` holds durations below `2^i` µs
/// (and at least `2^(i-1)` µs); the last one everything longer.
const BUCKETS: usize = 32;

/// A log2-bucketed histogram of durations, with count and sum.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = ((u64::BITS - us.leading_zeros()) as usize).min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The mean, or zero.
    pub fn mean(&self) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.sum_ns.load(Relaxed) / n)
    }

    /// An upper bound on the `q` quantile (0..=1): the top of the bucket it
    /// falls in, so within a factor of two.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Duration::from_micros(1u64 << i);
            }
        }
        Duration::from_micros(1u64 << (BUCKETS - 1))
    }
}

/// The results of capability calls that are counted, as (capability,
/// result): every error the contract has, and success.
pub const CAPABILITY_RESULTS: [(&str, &str); 11] = [
    ("dns", "ok"),
    ("dns", "nxdomain"),
    ("dns", "no-data"),
    ("dns", "timeout"),
    ("dns", "server-failure"),
    ("dns", "budget-exhausted"),
    ("dns", "invalid-name"),
    ("store", "ok"),
    ("store", "quota-exhausted"),
    ("store", "too-large"),
    ("store", "unavailable"),
];

/// One engine's counters.
#[derive(Default)]
pub struct EngineStats {
    /// Messages the engine gave an outcome for (cache hits included).
    pub messages: AtomicU64,
    /// Decoded parts scanned.
    pub parts: AtomicU64,
    /// Messages with a detection.
    pub detections: AtomicU64,
    /// Messages the engine said were unscannable.
    pub unscannable: AtomicU64,
    /// Faults, by kind in [`FaultKind::ALL`] order.
    pub faults: [AtomicU64; FaultKind::ALL.len()],
    /// Verdicts served from the cache.
    pub cache_hits: AtomicU64,
    /// Time per message (queue and run), scans only.
    pub message_time: Histogram,
    /// Time per decoded part.
    pub part_time: Histogram,
    /// Generations swapped in after loading.
    pub reloads_ok: AtomicU64,
    /// Candidate generations rejected.
    pub reloads_failed: AtomicU64,
    /// Capability calls, by (capability, result) in
    /// [`CAPABILITY_RESULTS`] order.
    pub capability_calls: [AtomicU64; CAPABILITY_RESULTS.len()],
}

impl EngineStats {
    /// Counts one message's outcome.
    pub fn record(&self, outcome: &EngineOutcome, time: Duration, cached: bool) {
        self.messages.fetch_add(1, Relaxed);
        if cached {
            self.cache_hits.fetch_add(1, Relaxed);
        } else {
            self.message_time.record(time);
        }
        match outcome {
            EngineOutcome::Verdict(v) => match v.outcome {
                Outcome::Detected(_) => {
                    self.detections.fetch_add(1, Relaxed);
                }
                Outcome::Unscannable(_) => {
                    self.unscannable.fetch_add(1, Relaxed);
                }
                Outcome::Clean => {}
            },
            EngineOutcome::Fault(f) => {
                self.faults[f.kind.index()].fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts one scanned part.
    pub fn record_part(&self, time: Duration) {
        self.parts.fetch_add(1, Relaxed);
        self.part_time.record(time);
    }

    /// Counts one call of `capability` that ended in `result` (a name in
    /// [`CAPABILITY_RESULTS`]; another is a bug, counted nowhere).
    pub fn record_capability(&self, capability: &str, result: &str) {
        if let Some(i) = CAPABILITY_RESULTS
            .iter()
            .position(|&(c, r)| c == capability && r == result)
        {
            self.capability_calls[i].fetch_add(1, Relaxed);
        }
    }

    /// A copy of the figures.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        StatsSnapshot {
            messages: self.messages.load(Relaxed),
            parts: self.parts.load(Relaxed),
            detections: self.detections.load(Relaxed),
            unscannable: self.unscannable.load(Relaxed),
            faults: FaultKind::ALL
                .iter()
                .zip(&self.faults)
                .map(|(k, n)| (k.as_str().to_string(), n.load(Relaxed)))
                .collect(),
            timeouts: self.faults[FaultKind::Timeout.index()].load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            message_mean_ms: ms(self.message_time.mean()),
            message_p99_ms: ms(self.message_time.quantile(0.99)),
            part_mean_ms: ms(self.part_time.mean()),
            part_p99_ms: ms(self.part_time.quantile(0.99)),
            reloads_ok: self.reloads_ok.load(Relaxed),
            reloads_failed: self.reloads_failed.load(Relaxed),
            capability_calls: CAPABILITY_RESULTS
                .iter()
                .zip(&self.capability_calls)
                .map(|((c, r), n)| (format!("{c}.{r}"), n.load(Relaxed)))
                .collect(),
        }
    }
}

/// [`EngineStats`] at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Messages.
    pub messages: u64,
    /// Parts.
    pub parts: u64,
    /// Detections.
    pub detections: u64,
    /// Unscannable verdicts.
    pub unscannable: u64,
    /// Faults by kind.
    pub faults: std::collections::BTreeMap<String, u64>,
    /// Timeouts (also in `faults`).
    pub timeouts: u64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Mean time per scanned message.
    pub message_mean_ms: f64,
    /// 99th percentile per scanned message (upper bound, within 2x).
    pub message_p99_ms: f64,
    /// Mean time per part.
    pub part_mean_ms: f64,
    /// 99th percentile per part.
    pub part_p99_ms: f64,
    /// Generations swapped in.
    pub reloads_ok: u64,
    /// Candidates rejected.
    pub reloads_failed: u64,
    /// Capability calls by `capability.result` (`dns.ok`, `dns.timeout`).
    #[serde(default)]
    pub capability_calls: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_mean_and_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        for _ in 0..98 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(10));
        h.record(Duration::from_millis(10));
        assert_eq!(h.count(), 100);
        // 100 µs falls in the bucket below 128 µs; 10 ms below 16.384 ms.
        assert_eq!(h.quantile(0.5), Duration::from_micros(128));
        assert_eq!(h.quantile(0.98), Duration::from_micros(128));
        assert_eq!(h.quantile(0.99), Duration::from_micros(16384));
        assert_eq!(h.mean(), Duration::from_micros(298));
    }

    #[test]
    fn outcomes_are_counted_by_kind() {
        let s = EngineStats::default();
        s.record(
            &EngineOutcome::fault(FaultKind::Timeout, "t"),
            Duration::from_millis(1),
            false,
        );
        s.record(
            &EngineOutcome::fault(FaultKind::Trap, "t"),
            Duration::from_millis(1),
            false,
        );
        let snap = s.snapshot();
        assert_eq!(snap.messages, 2);
        assert_eq!(snap.timeouts, 1);
        assert_eq!(snap.faults["trap"], 1);
        assert_eq!(snap.faults["out-of-memory"], 0);
    }

    #[test]
    fn capability_calls_are_counted_by_result() {
        let s = EngineStats::default();
        s.record_capability("dns", "ok");
        s.record_capability("dns", "ok");
        s.record_capability("dns", "timeout");
        s.record_capability("dns", "no-such-result");
        let snap = s.snapshot();
        assert_eq!(snap.capability_calls["dns.ok"], 2);
        assert_eq!(snap.capability_calls["dns.timeout"], 1);
        assert_eq!(snap.capability_calls["dns.nxdomain"], 0);
        assert_eq!(snap.capability_calls.values().sum::<u64>(), 3);
    }
}
