//! The verdict cache: an engine's verdict on a message, by (engine,
//! generation, SHA-256 of the message), least recently used out first,
//! bounded by entries and by bytes.
//!
//! The generation is part of the key, so a swap never serves a verdict an
//! older generation gave; a swap also purges the older generations'
//! entries. Only verdicts are cached, never faults, and never verdicts that
//! carry per-recipient verdicts (those depend on the envelope).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bindings::{Outcome, Verdict};

/// A message's digest.
pub type ContentDigest = [u8; 32];

/// The digest of a message's bytes.
pub fn digest(bytes: &[u8]) -> ContentDigest {
    Sha256::digest(bytes).into()
}

type Key = (Arc<str>, u64, ContentDigest);

struct Entry {
    verdict: Verdict,
    bytes: usize,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    by_age: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
}

/// The cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictCacheLimits {
    /// Verdicts held at most (0: no cache).
    pub max_entries: usize,
    /// Estimated bytes held at most.
    pub max_bytes: usize,
}

/// The cache.
pub struct VerdictCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The cache's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheStats {
    /// Verdicts held.
    pub entries: usize,
    /// Their estimated size.
    pub bytes: usize,
    /// Lookups answered.
    pub hits: u64,
    /// Lookups not answered.
    pub misses: u64,
    /// The bounds.
    pub max_entries: usize,
    /// The bounds.
    pub max_bytes: usize,
}

/// Roughly what a verdict occupies.
fn size_of(v: &Verdict) -> usize {
    let threats = match &v.outcome {
        Outcome::Detected(ts) => ts.iter().map(|t| 48 + t.name.len() + t.part.len()).sum(),
        _ => 0,
    };
    160 + threats
        + v.rules.iter().map(|r| 24 + r.len()).sum::<usize>()
        + v.headers
            .iter()
            .map(|h| 48 + h.name.len() + h.value.len())
            .sum::<usize>()
}

impl VerdictCache {
    /// A cache holding at most `max_entries` verdicts and about `max_bytes`.
    pub fn new(limits: VerdictCacheLimits) -> Self {
        Self {
            max_entries: limits.max_entries,
            max_bytes: limits.max_bytes,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verdict `engine`'s `generation` gave on a message with this
    /// digest, if held.
    pub fn get(&self, engine: &Arc<str>, generation: u64, d: &ContentDigest) -> Option<Verdict> {
        let key = (engine.clone(), generation, *d);
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let Some(e) = inner.map.get_mut(&key) else {
            drop(inner);
            self.misses.fetch_add(1, Relaxed);
            return None;
        };
        let old = std::mem::replace(&mut e.tick, tick);
        let v = e.verdict.clone();
        inner.by_age.remove(&old);
        inner.by_age.insert(tick, key);
        drop(inner);
        self.hits.fetch_add(1, Relaxed);
        Some(v)
    }

    /// Keeps a verdict, unless it carries per-recipient verdicts or is
    /// bigger than the whole cache.
    pub fn put(&self, engine: &Arc<str>, generation: u64, d: &ContentDigest, verdict: &Verdict) {
        if self.max_entries == 0 || !verdict.recipients.is_empty() {
            return;
        }
        let bytes = size_of(verdict);
        if bytes > self.max_bytes {
            return;
        }
        let key = (engine.clone(), generation, *d);
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(old) = inner.map.insert(
            key.clone(),
            Entry {
                verdict: verdict.clone(),
                bytes,
                tick,
            },
        ) {
            inner.by_age.remove(&old.tick);
            inner.bytes -= old.bytes;
        }
        inner.by_age.insert(tick, key);
        inner.bytes += bytes;
        while inner.map.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some((_, oldest)) = inner.by_age.pop_first() else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
    }

    /// Drops every entry of `engine` from generations before `generation`.
    pub fn purge_before(&self, engine: &str, generation: u64) {
        let mut inner = self.lock();
        let stale: Vec<(Key, u64, usize)> = inner
            .map
            .iter()
            .filter(|(k, _)| &*k.0 == engine && k.1 < generation)
            .map(|(k, e)| (k.clone(), e.tick, e.bytes))
            .collect();
        for (k, tick, bytes) in stale {
            inner.map.remove(&k);
            inner.by_age.remove(&tick);
            inner.bytes -= bytes;
        }
    }

    /// The figures.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            bytes: inner.bytes,
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{RecipientAction, RecipientVerdict};

    fn clean() -> Verdict {
        crate::bindings::verdict_of(Outcome::Clean)
    }

    #[test]
    fn keyed_by_engine_generation_and_content() {
        let c = VerdictCache::new(VerdictCacheLimits {
            max_entries: 10,
            max_bytes: 1 << 20,
        });
        let e: Arc<str> = "e".into();
        let d = digest(b"message");
        assert!(c.get(&e, 1, &d).is_none());
        c.put(&e, 1, &d, &clean());
        assert!(c.get(&e, 1, &d).is_some());
        assert!(c.get(&e, 2, &d).is_none(), "another generation");
        assert!(c.get(&"f".into(), 1, &d).is_none(), "another engine");
        assert!(c.get(&e, 1, &digest(b"other")).is_none(), "other content");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 4, 1));
        c.purge_before("e", 2);
        assert!(c.get(&e, 1, &d).is_none());
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn bounded_by_entries_and_bytes_least_recent_out() {
        let c = VerdictCache::new(VerdictCacheLimits {
            max_entries: 3,
            max_bytes: 1 << 20,
        });
        let e: Arc<str> = "e".into();
        let ds: Vec<ContentDigest> = (0..4u8).map(|i| digest(&[i])).collect();
        for d in &ds[..3] {
            c.put(&e, 1, d, &clean());
        }
        // Touch the first so the second is least recently used.
        assert!(c.get(&e, 1, &ds[0]).is_some());
        c.put(&e, 1, &ds[3], &clean());
        assert!(c.get(&e, 1, &ds[1]).is_none());
        for i in [0, 2, 3] {
            assert!(c.get(&e, 1, &ds[i]).is_some(), "{i}");
        }
        let one = size_of(&clean());
        let c = VerdictCache::new(VerdictCacheLimits {
            max_entries: 100,
            max_bytes: one * 2,
        });
        for d in &ds {
            c.put(&e, 1, d, &clean());
        }
        assert_eq!(c.stats().entries, 2);
        assert!(c.stats().bytes <= one * 2);
    }

    #[test]
    fn per_recipient_verdicts_are_not_cached() {
        let c = VerdictCache::new(VerdictCacheLimits {
            max_entries: 10,
            max_bytes: 1 << 20,
        });
        let e: Arc<str> = "e".into();
        let mut v = clean();
        v.recipients.push(RecipientVerdict {
            address: "a@b".into(),
            action: RecipientAction::Drop,
            rules: vec![],
        });
        c.put(&e, 1, &digest(b"m"), &v);
        assert_eq!(c.stats().entries, 0);
        let off = VerdictCache::new(VerdictCacheLimits {
            max_entries: 0,
            max_bytes: 1 << 20,
        });
        off.put(&e, 1, &digest(b"m"), &clean());
        assert_eq!(off.stats().entries, 0);
    }
}
