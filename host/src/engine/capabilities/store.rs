//! The `store` capability: a key-value namespace per engine for what it
//! learns (token counts, reputation, rate counters), kept by the host.
//!
//! Two backends: an embedded database (redb, one file under the state
//! directory, for one host) and Redis or Valkey (shared by every node of a
//! cluster). Each engine's keys live under its own prefix, so engines never
//! see each other's. Counters are kept as decimal text (as Redis keeps
//! them), so `get` reads a counter as its digits.
//!
//! Each call is bounded before it is made: a key is at most
//! [`StoreSettings::max_key_bytes`] and a value at most
//! [`StoreSettings::max_value_bytes`] (else `too-large`), and one scan (or
//! `learn` call) may touch at most [`StoreSettings::max_ops_per_scan`] keys
//! and move at most [`StoreSettings::max_bytes_per_scan`] bytes of keys and
//! values (else `quota-exhausted`, the call not made). A Redis call waits at
//! most [`StoreSettings::timeout`], and never past the scan's deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;

use super::kv_embedded::Embedded;
use super::kv_redis::Redis;
use crate::bindings::cordon::scanner::store::{Host, IncrementEntry, SetEntry, StoreError};
use crate::engine::state::ScanState;
use crate::engine::stats::EngineStats;

/// Where the store keeps its data (`[store] backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A redb file on this host.
    Embedded {
        /// The database file.
        path: PathBuf,
    },
    /// A Redis or Valkey server (`redis://host:port/db`, `unix:///path`).
    Redis {
        /// The server's URL.
        url: String,
    },
}

/// The store's settings (`[store]` in config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// The backend.
    pub backend: Backend,
    /// Keys one scan may read, write or delete (each key of a batch
    /// counts).
    pub max_ops_per_scan: u32,
    /// Bytes of keys and values one scan may move, both ways.
    pub max_bytes_per_scan: u64,
    /// The largest key.
    pub max_key_bytes: u32,
    /// The largest value.
    pub max_value_bytes: u32,
    /// How long one Redis call may wait (never past the scan's deadline).
    pub timeout: Duration,
}

impl StoreSettings {
    /// The defaults, for `backend`.
    pub fn with_backend(backend: Backend) -> Self {
        Self {
            backend,
            max_ops_per_scan: 10_000,
            max_bytes_per_scan: 4 << 20,
            max_key_bytes: 512,
            max_value_bytes: 64 << 10,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the store: {0}")]
pub struct StoreSetupError(pub String);

/// A backend's failure; the guest sees `unavailable`, the log the reason.
#[derive(Debug)]
pub(super) struct BackendError(pub String);

/// The runtime's store.
pub struct Store {
    backend: BackendImpl,
    settings: StoreSettings,
    /// The second (since the epoch) of the last backend failure logged:
    /// one line a second at most, however many calls fail.
    last_warned: std::sync::atomic::AtomicU64,
}

enum BackendImpl {
    Embedded(Arc<Embedded>),
    Redis(Box<Redis>),
}

/// The prefix of an engine's namespace.
fn namespace(engine: &str) -> Vec<u8> {
    format!("cordon:{engine}:").into_bytes()
}

impl Store {
    /// The store `settings` name, opened on first use: the embedded file
    /// is then created (with its directory, private) or opened, and locked
    /// for this process; a Redis URL is checked now, and connected on first
    /// use.
    pub fn open(settings: StoreSettings) -> Result<Self, StoreSetupError> {
        let backend = match &settings.backend {
            Backend::Embedded { path } => BackendImpl::Embedded(Arc::new(Embedded::new(path))),
            Backend::Redis { url } => BackendImpl::Redis(Box::new(Redis::new(url)?)),
        };
        Ok(Self {
            backend,
            settings,
            last_warned: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether a backend failure may be logged now (one a second).
    fn may_warn(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = unix_now();
        let last = self.last_warned.load(Relaxed);
        now > last
            && self
                .last_warned
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// Opens the embedded file now (the daemon does at start, so that a
    /// store it cannot use stops it there); Redis is connected on use.
    pub fn open_now(&self) -> Result<(), StoreSetupError> {
        match &self.backend {
            BackendImpl::Embedded(db) => db.open_now(),
            BackendImpl::Redis(_) => Ok(()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    async fn get(
        &self,
        keys: Vec<Vec<u8>>,
        deadline: Instant,
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        match &self.backend {
            BackendImpl::Embedded(db) => {
                let db = db.clone();
                blocking(move || db.get(&keys)).await
            }
            BackendImpl::Redis(r) => r.get(keys, self.wait(deadline)).await,
        }
    }

    async fn set(&self, entries: Vec<SetEntry>, deadline: Instant) -> Result<(), BackendError> {
        match &self.backend {
            BackendImpl::Embedded(db) => {
                let db = db.clone();
                blocking(move || db.set(&entries)).await
            }
            BackendImpl::Redis(r) => r.set(entries, self.wait(deadline)).await,
        }
    }

    async fn increment(
        &self,
        entries: Vec<IncrementEntry>,
        deadline: Instant,
    ) -> Result<Result<Vec<i64>, String>, BackendError> {
        match &self.backend {
            BackendImpl::Embedded(db) => {
                let db = db.clone();
                blocking(move || db.increment(&entries)).await
            }
            BackendImpl::Redis(r) => r.increment(entries, self.wait(deadline)).await,
        }
    }

    async fn delete(&self, keys: Vec<Vec<u8>>, deadline: Instant) -> Result<(), BackendError> {
        match &self.backend {
            BackendImpl::Embedded(db) => {
                let db = db.clone();
                blocking(move || db.delete(&keys)).await
            }
            BackendImpl::Redis(r) => r.delete(keys, self.wait(deadline)).await,
        }
    }

    /// How long a Redis call may wait now.
    fn wait(&self, deadline: Instant) -> Duration {
        self.settings
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()))
    }
}

/// Runs an embedded-database call on the blocking pool (a commit waits on
/// the disk): the scan's task, and its worker, go on meanwhile.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError(format!("the store call failed: {e}")))?
}

/// What one call may still do with the store.
pub struct StoreCall {
    store: Arc<Store>,
    prefix: Vec<u8>,
    ops_left: u32,
    bytes_left: u64,
    stats: Arc<EngineStats>,
    engine: Arc<str>,
}

impl StoreCall {
    /// The share of `store` one call of `engine` has, counted in `stats`.
    pub fn new(store: Arc<Store>, engine: Arc<str>, stats: Arc<EngineStats>) -> Self {
        let s = &store.settings;
        Self {
            ops_left: s.max_ops_per_scan,
            bytes_left: s.max_bytes_per_scan,
            prefix: namespace(&engine),
            store,
            stats,
            engine,
        }
    }

    /// Checks the sizes and takes `ops` keys and `bytes` from the quotas,
    /// or says why not (nothing is taken then).
    fn take<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k [u8]>,
        values: impl Iterator<Item = usize>,
    ) -> Result<(), StoreError> {
        let s = &self.store.settings;
        let (mut ops, mut bytes) = (0u64, 0u64);
        for k in keys {
            if k.len() > s.max_key_bytes as usize {
                return Err(StoreError::TooLarge);
            }
            ops += 1;
            bytes += k.len() as u64;
        }
        for v in values {
            if v > s.max_value_bytes as usize {
                return Err(StoreError::TooLarge);
            }
            bytes += v as u64;
        }
        if ops > u64::from(self.ops_left) || bytes > self.bytes_left {
            return Err(StoreError::QuotaExhausted);
        }
        self.ops_left -= ops as u32;
        self.bytes_left -= bytes;
        Ok(())
    }

    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(k);
        full
    }

    /// Counts a call's result, and logs a backend's failure.
    fn count<T>(&self, op: &str, r: &Result<T, StoreError>, why: Option<&BackendError>) {
        let result = match r {
            Ok(_) => "ok",
            Err(StoreError::QuotaExhausted) => "quota-exhausted",
            Err(StoreError::TooLarge) => "too-large",
            Err(StoreError::Unavailable) => "unavailable",
        };
        self.stats.record_capability("store", result);
        if let Some(e) = why.filter(|_| self.store.may_warn()) {
            tracing::warn!(engine = %self.engine, op, "store unavailable: {}", crate::text::escape(&e.0, 512));
        }
    }
}

/// The guest's result of a backend call.
fn lift<T>(r: Result<T, BackendError>) -> (Result<T, StoreError>, Option<BackendError>) {
    match r {
        Ok(v) => (Ok(v), None),
        Err(e) => (Err(StoreError::Unavailable), Some(e)),
    }
}

impl Host for ScanState {
    async fn get(
        &mut self,
        keys: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, StoreError>> {
        let deadline = self.deadline;
        let Some(call) = self.store.as_mut() else {
            return Ok(Err(StoreError::Unavailable));
        };
        if let Err(e) = call.take(keys.iter().map(Vec::as_slice), std::iter::empty()) {
            let r = Err(e);
            call.count("get", &r, None);
            return Ok(r);
        }
        let full: Vec<Vec<u8>> = keys.iter().map(|k| call.key(k)).collect();
        let (mut r, why) = lift(call.store.get(full, deadline).await);
        // What came back counts against the bytes too.
        if let Ok(values) = &r {
            let got: u64 = values.iter().flatten().map(|v| v.len() as u64).sum();
            if got > call.bytes_left {
                call.bytes_left = 0;
                r = Err(StoreError::QuotaExhausted);
            } else {
                call.bytes_left -= got;
            }
        }
        call.count("get", &r, why.as_ref());
        Ok(r)
    }

    async fn set(&mut self, entries: Vec<SetEntry>) -> wasmtime::Result<Result<(), StoreError>> {
        let deadline = self.deadline;
        let Some(call) = self.store.as_mut() else {
            return Ok(Err(StoreError::Unavailable));
        };
        if let Err(e) = call.take(
            entries.iter().map(|e| e.key.as_slice()),
            entries.iter().map(|e| e.value.len()),
        ) {
            let r = Err(e);
            call.count("set", &r, None);
            return Ok(r);
        }
        let full = entries
            .into_iter()
            .map(|e| SetEntry {
                key: call.key(&e.key),
                ..e
            })
            .collect();
        let (r, why) = lift(call.store.set(full, deadline).await);
        call.count("set", &r, why.as_ref());
        Ok(r)
    }

    async fn increment(
        &mut self,
        entries: Vec<IncrementEntry>,
    ) -> wasmtime::Result<Result<Vec<i64>, StoreError>> {
        let deadline = self.deadline;
        let Some(call) = self.store.as_mut() else {
            return Ok(Err(StoreError::Unavailable));
        };
        // A counter's value is at most 20 digits each way.
        if let Err(e) = call.take(
            entries.iter().map(|e| e.key.as_slice()),
            entries.iter().map(|_| 40),
        ) {
            let r = Err(e);
            call.count("increment", &r, None);
            return Ok(r);
        }
        let full = entries
            .into_iter()
            .map(|e| IncrementEntry {
                key: call.key(&e.key),
                ..e
            })
            .collect();
        let (r, why) = match call.store.increment(full, deadline).await {
            Ok(Ok(values)) => (Ok(values), None),
            // Not a counter, or past i64: the engine's own doing.
            Ok(Err(why)) => (Err(StoreError::Unavailable), Some(BackendError(why))),
            Err(e) => (Err(StoreError::Unavailable), Some(e)),
        };
        call.count("increment", &r, why.as_ref());
        Ok(r)
    }

    async fn delete(&mut self, keys: Vec<Vec<u8>>) -> wasmtime::Result<Result<(), StoreError>> {
        let deadline = self.deadline;
        let Some(call) = self.store.as_mut() else {
            return Ok(Err(StoreError::Unavailable));
        };
        if let Err(e) = call.take(keys.iter().map(Vec::as_slice), std::iter::empty()) {
            let r = Err(e);
            call.count("delete", &r, None);
            return Ok(r);
        }
        let full = keys.iter().map(|k| call.key(k)).collect();
        let (r, why) = lift(call.store.delete(full, deadline).await);
        call.count("delete", &r, why.as_ref());
        Ok(r)
    }
}

/// The `store` interface for synchronous calls: every call fails with
/// `unavailable` (see the module documentation of `capabilities`).
pub(super) fn link_unavailable(linker: &mut Linker<ScanState>) -> wasmtime::Result<()> {
    type Unit = Result<(), StoreError>;
    type Values = Result<Vec<Option<Vec<u8>>>, StoreError>;
    let mut store = linker.instance("cordon:scanner/store@0.2.0")?;
    store.func_wrap(
        "get",
        |_, (_,): (Vec<Vec<u8>>,)| -> wasmtime::Result<(Values,)> {
            Ok((Err(StoreError::Unavailable),))
        },
    )?;
    store.func_wrap(
        "set",
        |_, (_,): (Vec<SetEntry>,)| -> wasmtime::Result<(Unit,)> {
            Ok((Err(StoreError::Unavailable),))
        },
    )?;
    store.func_wrap(
        "increment",
        |_, (_,): (Vec<IncrementEntry>,)| -> wasmtime::Result<(Result<Vec<i64>, StoreError>,)> {
            Ok((Err(StoreError::Unavailable),))
        },
    )?;
    store.func_wrap(
        "delete",
        |_, (_,): (Vec<Vec<u8>>,)| -> wasmtime::Result<(Unit,)> {
            Ok((Err(StoreError::Unavailable),))
        },
    )?;
    Ok(())
}

/// Seconds since the epoch now.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_are_logged_once_a_second_at_most() {
        let store = Store::open(StoreSettings::with_backend(Backend::Redis {
            url: "redis://127.0.0.1:1/0".into(),
        }))
        .unwrap();
        assert!(store.may_warn());
        // However many fail within the same second, one line.
        assert!((0..1000).all(|_| !store.may_warn()));
    }

    #[test]
    fn quotas_and_sizes_are_checked_before_the_call_and_take_nothing_then() {
        let mut settings = StoreSettings::with_backend(Backend::Redis {
            url: "redis://127.0.0.1:1/0".into(),
        });
        settings.max_ops_per_scan = 3;
        settings.max_bytes_per_scan = 100;
        settings.max_key_bytes = 10;
        settings.max_value_bytes = 20;
        let store = Arc::new(Store::open(settings).unwrap());
        let mut call = StoreCall::new(store, "t".into(), Arc::default());
        let k = |s: &'static str| s.as_bytes();
        assert!(matches!(
            call.take([k("a-very-long-key")].into_iter(), std::iter::empty()),
            Err(StoreError::TooLarge)
        ));
        assert!(matches!(
            call.take([k("a")].into_iter(), [21].into_iter()),
            Err(StoreError::TooLarge)
        ));
        assert!(matches!(
            call.take(
                [k("a"), k("b"), k("c"), k("d")].into_iter(),
                std::iter::empty()
            ),
            Err(StoreError::QuotaExhausted)
        ));
        // Nothing was taken by the refusals: three keys still fit.
        assert!(
            call.take([k("a"), k("b"), k("c")].into_iter(), [20].into_iter())
                .is_ok()
        );
        assert!(matches!(
            call.take([k("d")].into_iter(), std::iter::empty()),
            Err(StoreError::QuotaExhausted)
        ));
        assert_eq!(call.key(b"k"), b"cordon:t:k");
    }
}
