//! The engine interface a component exports, found once per component
//! whichever contract version it was built against (see
//! [`crate::bindings::Contract`]), and its functions typed for a call.
//!
//! Calls go through the current contract's types: every record and
//! function an earlier version has is the same in the current one, and
//! wasmtime checks a typed function against the component by structure,
//! so a 0.1.0 engine's `scan` takes the same `Envelope` and returns the
//! same `Verdict`. [`EngineExports::check`] types every function once, at
//! load, so that a mismatch refuses the engine instead of faulting scans.

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Instance, TypedFunc};

use super::state::ScanState;
use crate::bindings::{
    Contract, EngineInfo, Envelope, LearnClass, LearnOutcome, PartInfo, Setting, Verdict,
};

/// `init`'s signature.
pub(crate) type InitFunc<'a> = TypedFunc<(&'a [Setting],), (Result<EngineInfo, String>,)>;
/// `scan`'s signature.
pub(crate) type ScanFunc<'a> = TypedFunc<(&'a Envelope, &'a [u8]), (Verdict,)>;
/// `scan-part`'s signature.
pub(crate) type ScanPartFunc<'a> = TypedFunc<(&'a Envelope, &'a PartInfo, &'a [u8]), (Verdict,)>;
/// `learn`'s signature (0.2.0 and later).
pub(crate) type LearnFunc<'a> = TypedFunc<
    (&'a Envelope, &'a [u8], LearnClass, Option<&'a str>),
    (Result<LearnOutcome, String>,),
>;

/// The functions of the engine interface a component exports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineExports {
    /// The contract version the engine was built against.
    pub contract: Contract,
    info: ComponentExportIndex,
    init: ComponentExportIndex,
    scan: ComponentExportIndex,
    scan_part: ComponentExportIndex,
    learn: Option<ComponentExportIndex>,
}

impl EngineExports {
    /// Finds the engine interface `component` exports (the newest version
    /// first) and its functions; the error names what is missing.
    pub fn of(component: &Component) -> Result<Self, String> {
        let Some((contract, iface)) = Contract::ALL.iter().find_map(|c| {
            component
                .get_export_index(None, c.engine_export())
                .map(|i| (*c, i))
        }) else {
            let versions: Vec<_> = Contract::ALL.iter().map(|c| c.engine_export()).collect();
            return Err(format!(
                "exports no engine interface cordon loads (one of {})",
                versions.join(", ")
            ));
        };
        let func = |name: &str| {
            component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| {
                    format!(
                        "exports {} without its function `{name}`",
                        contract.engine_export()
                    )
                })
        };
        Ok(EngineExports {
            contract,
            info: func("info")?,
            init: func("init")?,
            scan: func("scan")?,
            scan_part: func("scan-part")?,
            learn: if contract.has_learn() {
                Some(func("learn")?)
            } else {
                None
            },
        })
    }

    /// `info` on `instance`.
    pub fn info(
        &self,
        store: &mut Store<ScanState>,
        instance: &Instance,
    ) -> wasmtime::Result<TypedFunc<(), (EngineInfo,)>> {
        instance.get_typed_func(store, self.info)
    }

    /// `init` on `instance`.
    pub fn init<'a>(
        &self,
        store: &mut Store<ScanState>,
        instance: &Instance,
    ) -> wasmtime::Result<InitFunc<'a>> {
        instance.get_typed_func(store, self.init)
    }

    /// `scan` on `instance`.
    pub fn scan<'a>(
        &self,
        store: &mut Store<ScanState>,
        instance: &Instance,
    ) -> wasmtime::Result<ScanFunc<'a>> {
        instance.get_typed_func(store, self.scan)
    }

    /// `scan-part` on `instance`.
    pub fn scan_part<'a>(
        &self,
        store: &mut Store<ScanState>,
        instance: &Instance,
    ) -> wasmtime::Result<ScanPartFunc<'a>> {
        instance.get_typed_func(store, self.scan_part)
    }

    /// `learn` on `instance`, or none for a contract without it.
    pub fn learn<'a>(
        &self,
        store: &mut Store<ScanState>,
        instance: &Instance,
    ) -> wasmtime::Result<Option<LearnFunc<'a>>> {
        self.learn
            .map(|i| instance.get_typed_func(store, i))
            .transpose()
    }

    /// Types every function on `instance`: an error names the function
    /// whose signature is not the contract's.
    pub fn check(&self, store: &mut Store<ScanState>, instance: &Instance) -> Result<(), String> {
        let named = |name: &'static str| {
            let export = self.contract.engine_export();
            move |e: wasmtime::Error| {
                format!("{export}#{name} does not have the contract's signature: {e:#}")
            }
        };
        self.info(store, instance).map_err(named("info"))?;
        self.init(store, instance).map_err(named("init"))?;
        self.scan(store, instance).map_err(named("scan"))?;
        self.scan_part(store, instance)
            .map_err(named("scan-part"))?;
        self.learn(store, instance).map_err(named("learn"))?;
        Ok(())
    }
}
