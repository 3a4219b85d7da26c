//! The configured engines and the generation each one currently serves.
//!
//! A scan takes the current generation of every enabled engine (an
//! `Arc<Generation>`) and keeps it until the scan ends, so replacing a
//! generation never disturbs a scan in flight; the old generation is freed
//! when its last scan drops it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{EngineSpec, ValidConfig};
use crate::engine::{Generation, LoadError, Runtime};

/// Engines that failed to load, each with its reason.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);

/// One configured engine.
pub struct Slot {
    /// What config says about it.
    pub spec: EngineSpec,
    current: RwLock<Arc<Generation>>,
    next_number: AtomicU64,
}

impl Slot {
    /// The generation serving now.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// All engines of a config, loaded.
pub struct Registry {
    runtime: Runtime,
    slots: Vec<Slot>,
}

impl Registry {
    /// Builds the runtime and loads every engine in the config, enabled or
    /// not, so that a broken disabled engine is reported too. Blocking.
    pub fn load(config: &ValidConfig) -> anyhow::Result<Self> {
        let runtime = Runtime::new(config)?;
        let mut slots = Vec::new();
        let mut errors = Vec::new();
        for spec in &config.engines {
            match runtime.load(spec, 1) {
                Ok(g) => slots.push(Slot {
                    spec: spec.clone(),
                    current: RwLock::new(Arc::new(g)),
                    next_number: AtomicU64::new(2),
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors).into());
        }
        Ok(Self { runtime, slots })
    }

    /// Every configured engine, in name order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The current generations of the enabled engines, in name order.
    pub fn enabled(&self) -> Vec<Arc<Generation>> {
        self.slots
            .iter()
            .filter(|s| s.spec.enabled)
            .map(Slot::current)
            .collect()
    }

    /// Loads a new generation of engine `name` from its component and
    /// definitions as they are now, and swaps it in only if it loads (init
    /// and snapshot included). On failure the current generation keeps
    /// serving and the error names the file. Scans in flight finish on the
    /// generation they started with. Blocking.
    pub fn reload(&self, name: &str) -> anyhow::Result<Arc<Generation>> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| anyhow::anyhow!("no engine named {name:?} in the config"))?;
        let number = slot.next_number.fetch_add(1, Ordering::Relaxed);
        let fresh = Arc::new(self.runtime.load(&slot.spec, number)?);
        *slot
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// The runtime the engines run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}
