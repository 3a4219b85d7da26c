//! The configured engines, the generation each one currently serves, and
//! the live settings ([`crate::live`]) that judge messages with them: one
//! place, so that a config reload swaps engines and settings in one step.
//!
//! A scan takes the current generation of every enabled engine (an
//! `Arc<Generation>`) and keeps it until the scan ends, so replacing a
//! generation never disturbs a scan in flight; the old generation is freed
//! when its last scan drops it.
//!
//! A reload builds a candidate generation from the engine's files as they
//! are now (compile or cache, `init`, snapshot), runs the engine's
//! self-test samples on it, and only then swaps it in. A candidate that
//! fails is dropped with the reason, naming the file, and the current
//! generation keeps serving. At most two generations of an engine are
//! alive at once: a reload first waits for the generation retired by the
//! previous swap to drain (its scans are bounded by the engine's timeout).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tokio::sync::watch;

use crate::bindings::{Outcome, empty_envelope};
use crate::engine::Capability;
use crate::engine::capabilities::Services;
use crate::engine::capabilities::dns::Dns;
use crate::engine::capabilities::store::Store;
use crate::engine::stats::EngineStats;
use crate::engine::{
    EngineOutcome, EngineSpec, Expect, Fingerprint, Generation, LoadError, Runtime, RuntimeError,
    fingerprint,
};
use crate::live::LiveSettings;
use crate::mime::{MimeLimits, decompose, stack_bytes_for};
use crate::verdict_cache::{VerdictCache, VerdictCacheLimits};

/// Everything a registry is built from: the runtime's pool, the engines,
/// the verdict cache and the live settings. `config` builds it.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The compiled-component cache directory.
    pub cache_dir: std::path::PathBuf,
    /// Bytes the cache directory may hold (0: no snapshots kept).
    pub max_cache_bytes: u64,
    /// Instances alive at once across all engines.
    pub pool_instances: u32,
    /// The engines, in name order.
    pub engines: Vec<EngineSpec>,
    /// The resolver's settings, for engines granted `dns`.
    pub dns: crate::engine::capabilities::dns::DnsSettings,
    /// The store's settings, for engines granted `store`.
    pub store: crate::engine::capabilities::store::StoreSettings,
    /// The verdict cache's bounds (no cache when `max_entries` is 0).
    pub verdict_cache: VerdictCacheLimits,
    /// The settings a reload replaces.
    pub live: LiveSettings,
}

/// Why a registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The runtime could not be built.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Engines failed to load.
    #[error(transparent)]
    Load(#[from] LoadErrors),
    /// The resolver for the `dns` capability could not be set up.
    #[error(transparent)]
    Dns(#[from] crate::engine::capabilities::dns::DnsSetupError),
    /// The store for the `store` capability could not be opened.
    #[error(transparent)]
    Store(#[from] crate::engine::capabilities::store::StoreSetupError),
}

/// What reloads have done since the registry was built: the last
/// generation swapped in, and counts of swaps and of rejected candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swap {
    /// Swaps so far, every engine together.
    pub count: u64,
    /// Candidates rejected so far (failed to load or their self-test).
    pub rejected: u64,
    /// The engine of the last swap.
    pub engine: String,
    /// The generation it swapped in.
    pub generation: u64,
}

/// Engines that failed to load, each with its reason.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);

/// Why a reload did not swap anything in.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No engine of that name.
    #[error("no engine named {0:?} in the config")]
    Unknown(String),
    /// The candidate failed to load or its self-test.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The generation retired by the last swap still has scans in flight.
    #[error(
        "engine {engine}: generation {generation} still has scans in flight after {waited:?}; not loading a third"
    )]
    Busy {
        /// The engine.
        engine: String,
        /// The retired generation.
        generation: u64,
        /// How long the reload waited.
        waited: Duration,
    },
}

/// One configured engine and the generation it serves.
pub struct Engine {
    spec: RwLock<EngineSpec>,
    current: RwLock<Arc<Generation>>,
    retiring: Mutex<Vec<Weak<Generation>>>,
    next_number: AtomicU64,
    reloading: Mutex<()>,
    last_error: Mutex<Option<String>>,
    files: Mutex<Fingerprint>,
    /// Counters, shared by every generation of the engine.
    pub stats: Arc<EngineStats>,
}

impl Engine {
    /// The generation serving now.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// What config says about it now.
    pub fn spec(&self) -> EngineSpec {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its name.
    pub fn name(&self) -> Arc<str> {
        self.current().name.clone()
    }

    /// Whether it scans.
    pub fn enabled(&self) -> bool {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).enabled
    }

    /// Generations alive: the current one and retired ones with scans in
    /// flight.
    pub fn alive(&self) -> usize {
        let mut r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|w| w.strong_count() > 0);
        1 + r.len()
    }

    /// The engine's files as the last load or reload attempt found them.
    pub fn files(&self) -> Fingerprint {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last reload's error, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a config reload changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigChange {
    /// Engines loaded for the first time.
    pub added: Vec<String>,
    /// Engines no longer configured (their scans in flight finish).
    pub removed: Vec<String>,
    /// Engines whose config changed, reloaded.
    pub reloaded: Vec<String>,
    /// Engines that could not be loaded or reloaded, with the reason.
    pub failed: Vec<(String, String)>,
}

/// All engines of a config, loaded.
pub struct Registry {
    runtime: Runtime,
    engines: RwLock<Vec<Arc<Engine>>>,
    live: RwLock<Arc<LiveSettings>>,
    swaps: watch::Sender<Swap>,
    /// The verdict cache, unless turned off.
    pub cache: Option<VerdictCache>,
}

/// Runs the self-test samples on a candidate.
fn self_test(g: &Generation, spec: &EngineSpec, mime: &MimeLimits) -> Result<(), LoadError> {
    let envelope = empty_envelope();
    for t in &spec.self_test {
        let fail = |reason: String| LoadError::SelfTest {
            engine: spec.name.clone(),
            path: t.file.clone(),
            reason,
        };
        let outcome = if g.info.wants_parts {
            // The sample is a file like any mail: parsed on a stack sized
            // for it, never this thread's.
            let parts = std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(stack_bytes_for(t.bytes.len()))
                    .spawn_scoped(scope, || decompose(&t.bytes, mime))
                    .ok()
                    .and_then(|h| h.join().ok())
            })
            .ok_or_else(|| fail("cannot decompose the sample".into()))?;
            g.scan_with_parts_blocking(&envelope, &t.bytes, &parts)
        } else {
            g.scan_blocking(&envelope, &t.bytes)
        };
        let found: Option<Vec<String>> = match &outcome {
            EngineOutcome::Verdict(v) => match &v.outcome {
                Outcome::Detected(ts) => Some(ts.iter().map(|t| t.name.clone()).collect()),
                Outcome::Clean => None,
                Outcome::Unscannable(r) => {
                    return Err(fail(format!("said unscannable ({r:?})")));
                }
            },
            EngineOutcome::Fault(f) => return Err(fail(format!("{}: {}", f.kind, f.detail))),
        };
        match (&t.expect, found) {
            (Expect::Clean, None) => {}
            (Expect::Clean, Some(names)) => {
                return Err(fail(format!("expected clean, found {}", names.join(", "))));
            }
            (Expect::Detected, Some(_)) => {}
            (Expect::Threat(want), Some(names)) if names.contains(want) => {}
            (Expect::Detected, None) => return Err(fail("expected a detection, got clean".into())),
            (Expect::Threat(want), None) => {
                return Err(fail(format!("expected {want}, got clean")));
            }
            (Expect::Threat(want), Some(names)) => {
                return Err(fail(format!("expected {want}, found {}", names.join(", "))));
            }
        }
    }
    Ok(())
}

/// The services behind the capabilities the engines are granted: a
/// resolver only when an engine is granted `dns`.
fn services(setup: &Setup) -> Result<Services, RegistryError> {
    let mut services = Services::default();
    if setup
        .engines
        .iter()
        .any(|e| e.capabilities.contains(&Capability::Dns))
    {
        services.dns = Some(Arc::new(Dns::new(setup.dns.clone())?));
    }
    if setup
        .engines
        .iter()
        .any(|e| e.capabilities.contains(&Capability::Store))
    {
        services.store = Some(Arc::new(Store::open(setup.store.clone())?));
    }
    Ok(services)
}

impl Registry {
    /// Builds the runtime and loads every engine in the config, enabled or
    /// not, so that a broken disabled engine is reported too; each passes
    /// its self-test. Blocking.
    pub fn load(setup: &Setup) -> Result<Self, RegistryError> {
        let mut runtime = Runtime::new(
            &setup.engines,
            setup.pool_instances,
            setup.cache_dir.clone(),
            setup.max_cache_bytes,
        )?;
        runtime.set_services(services(setup)?);
        let mut engines = Vec::new();
        let mut errors = Vec::new();
        for spec in &setup.engines {
            match Self::first_generation(&runtime, spec, &setup.live.rules.mime) {
                Ok(e) => engines.push(Arc::new(e)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors).into());
        }
        let limits = setup.verdict_cache;
        Ok(Self {
            runtime,
            engines: RwLock::new(engines),
            live: RwLock::new(Arc::new(setup.live.clone())),
            swaps: watch::Sender::new(Swap::default()),
            cache: (limits.max_entries > 0).then(|| VerdictCache::new(limits)),
        })
    }

    /// The live settings in force now.
    pub fn live(&self) -> Arc<LiveSettings> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the live settings alone (engines unchanged).
    pub fn set_live(&self, live: LiveSettings) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    /// Notifications of generations swapped in: the receiver sees the last
    /// [`Swap`] and wakes on the next one (`changed`, `wait_for`), so a
    /// caller waits on the swap it expects instead of polling.
    pub fn swaps(&self) -> watch::Receiver<Swap> {
        self.swaps.subscribe()
    }

    fn first_generation(
        runtime: &Runtime,
        spec: &EngineSpec,
        mime: &MimeLimits,
    ) -> Result<Engine, LoadError> {
        let stats = Arc::new(EngineStats::default());
        let files = fingerprint(spec);
        let mut g = runtime.load(spec, 1)?;
        self_test(&g, spec, mime)?;
        g.stats = stats.clone();
        Ok(Engine {
            spec: RwLock::new(spec.clone()),
            current: RwLock::new(Arc::new(g)),
            retiring: Mutex::new(Vec::new()),
            next_number: AtomicU64::new(2),
            reloading: Mutex::new(()),
            last_error: Mutex::new(None),
            files: Mutex::new(files),
            stats,
        })
    }

    /// Every configured engine, in name order.
    pub fn engines(&self) -> Vec<Arc<Engine>> {
        self.engines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The engine named `name`.
    pub fn engine(&self, name: &str) -> Option<Arc<Engine>> {
        self.engines().into_iter().find(|s| &*s.name() == name)
    }

    /// The current generations of the enabled engines, in name order.
    pub fn enabled(&self) -> Vec<Arc<Generation>> {
        self.engines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.enabled())
            .map(|s| s.current())
            .collect()
    }

    /// Loads a new generation of engine `name` from its component and
    /// definitions as they are now, and swaps it in only if it loads (init
    /// and snapshot included) and passes its self-test. On failure the
    /// current generation keeps serving and the error names the file.
    /// Scans in flight finish on the generation they started with.
    /// Blocking.
    pub fn reload(&self, name: &str) -> Result<Arc<Generation>, ReloadError> {
        let entry = self
            .engine(name)
            .ok_or_else(|| ReloadError::Unknown(name.to_string()))?;
        let spec = entry.spec();
        self.reload_entry(&entry, spec)
    }

    fn reload_entry(
        &self,
        entry: &Engine,
        spec: EngineSpec,
    ) -> Result<Arc<Generation>, ReloadError> {
        let _one_at_a_time = entry.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let r = self.swap_in(entry, spec);
        let mut last = entry.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(_) => {
                entry.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                *last = None;
            }
            Err(e) => {
                entry.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                self.swaps.send_modify(|s| s.rejected += 1);
                tracing::error!("reload rejected, the current generation keeps serving: {e}");
                *last = Some(e.to_string());
            }
        }
        r
    }

    fn swap_in(&self, entry: &Engine, spec: EngineSpec) -> Result<Arc<Generation>, ReloadError> {
        // At most two generations alive: wait for the last retired one.
        let waited = Instant::now();
        let patience = spec.limits.timeout * 2 + Duration::from_secs(5);
        loop {
            let busy = {
                let mut r = entry.retiring.lock().unwrap_or_else(|p| p.into_inner());
                r.retain(|w| w.strong_count() > 0);
                r.first().and_then(Weak::upgrade).map(|g| g.number)
            };
            match busy {
                None => break,
                Some(generation) if waited.elapsed() >= patience => {
                    return Err(ReloadError::Busy {
                        engine: spec.name.clone(),
                        generation,
                        waited: waited.elapsed(),
                    });
                }
                // Scans are short and bounded; checking often is cheap.
                Some(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let number = entry.next_number.fetch_add(1, Ordering::Relaxed);
        // What the candidate is built from; recorded even if it fails, so
        // the watcher does not retry the same broken files.
        *entry.files.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint(&spec);
        let loaded = self.runtime.load(&spec, number);
        crate::process::release_free_memory();
        let mut g = loaded?;
        self_test(&g, &spec, &self.live().rules.mime)?;
        g.stats = entry.stats.clone();
        let fresh = Arc::new(g);
        let old = std::mem::replace(
            &mut *entry.current.write().unwrap_or_else(|p| p.into_inner()),
            fresh.clone(),
        );
        *entry.spec.write().unwrap_or_else(|p| p.into_inner()) = spec;
        let old_number = old.number;
        let old_image = old.image_bytes;
        entry
            .retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&old));
        let in_flight = Arc::strong_count(&old) - 1;
        drop(old);
        if let Some(cache) = &self.cache {
            cache.purge_before(&fresh.name, fresh.number);
        }
        let mib = |b: usize| b as f64 / 1_048_576.0;
        tracing::info!(
            engine = %fresh.name,
            generation = fresh.number,
            definitions = %fresh.info.definitions_version,
            image_mib = format!("{:.1}", mib(fresh.image_bytes)),
            code_mib = format!("{:.1}", mib(fresh.code_bytes)),
            load_ms = fresh.load_time.as_millis() as u64,
            retired = old_number,
            retired_image_mib = format!("{:.1}", mib(old_image)),
            retired_in_flight = in_flight,
            rss_mib = format!("{:.1}", mib(crate::process::rss_bytes(crate::process::Pid::Current).unwrap_or(0) as usize)),
            "generation swapped in"
        );
        let (engine, generation) = (fresh.name.to_string(), fresh.number);
        self.swaps.send_modify(|s| {
            s.count += 1;
            s.engine = engine;
            s.generation = generation;
        });
        Ok(fresh)
    }

    /// Applies a new config: engines added are loaded, engines removed are
    /// dropped (their scans in flight finish), engines whose config changed
    /// are reloaded (self-tested under the new MIME limits); then the new
    /// engine list and live settings replace the old in one step. Pool and
    /// cache sizes are fixed at start. Blocking.
    pub fn apply(&self, setup: &Setup) -> ConfigChange {
        let mime = &setup.live.rules.mime;
        let mut change = ConfigChange::default();
        let old = self.engines();
        let mut next = Vec::new();
        for spec in &setup.engines {
            match old.iter().find(|s| *s.name() == *spec.name) {
                Some(entry) if entry.spec() == *spec => next.push(entry.clone()),
                Some(entry) => match self.reload_entry(entry, spec.clone()) {
                    Ok(_) => {
                        change.reloaded.push(spec.name.clone());
                        next.push(entry.clone());
                    }
                    Err(e) => {
                        change.failed.push((spec.name.clone(), e.to_string()));
                        next.push(entry.clone());
                    }
                },
                None => match Self::first_generation(&self.runtime, spec, mime) {
                    Ok(entry) => {
                        change.added.push(spec.name.clone());
                        next.push(Arc::new(entry));
                    }
                    Err(e) => change.failed.push((spec.name.clone(), e.to_string())),
                },
            }
        }
        for entry in &old {
            if !setup.engines.iter().any(|e| *e.name == *entry.name()) {
                change.removed.push(entry.name().to_string());
            }
        }
        next.sort_by_key(|s| s.name());
        // Both locks at once: no judge sees the new engines with the old
        // settings or the reverse.
        let mut engines = self.engines.write().unwrap_or_else(|p| p.into_inner());
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        *engines = next;
        *live = Arc::new(setup.live.clone());
        change
    }

    /// The runtime the engines run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}
