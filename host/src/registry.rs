//! The configured engines and the generation each one currently serves.
//!
//! A scan takes the current generation of every enabled engine (an
//! `Arc<Generation>`) and keeps it until the scan ends, so replacing a
//! generation never disturbs a scan in flight; the old generation is freed
//! when its last scan drops it.

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

    /// The runtime the engines run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}
