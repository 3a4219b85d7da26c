//! The capabilities: host services an engine may import when the operator
//! grants them (`[engines.NAME] capabilities`), served with the host's own
//! bounds and metered per engine.
//!
//! A capability is served only to a scan or a `learn` call, which run as
//! async calls: a guest waiting on one is a suspended fiber, holding no
//! thread, and the wait ends at the call's deadline at the latest. The
//! synchronous calls (`init` in the pre-initialisation run, `info`, the
//! self-test) get the same imports answering that the service is not
//! available: what `init` learned would be frozen into the snapshot, and a
//! self-test must not depend on the network or write learned state.

pub mod dns;
mod kv_embedded;
mod kv_redis;
pub mod store;

use std::sync::Arc;

use wasmtime::component::Linker;

use super::spec::Capability;
use super::state::ScanState;

/// The services behind the capabilities, shared by every engine of a
/// runtime (each engine's store keys under a prefix of its own). A
/// capability without a service is refused at load.
#[derive(Clone, Default)]
pub struct Services {
    /// DNS lookups, when configured (`[dns]`, or the system's resolver).
    pub dns: Option<Arc<dns::Dns>>,
    /// The key-value store (`[store]`).
    pub store: Option<Arc<store::Store>>,
}

impl Services {
    /// Whether `capability` is served.
    pub fn serves(&self, capability: Capability) -> bool {
        match capability {
            Capability::Dns => self.dns.is_some(),
            Capability::Store => self.store.is_some(),
        }
    }
}

/// Links the capabilities' async host functions (scans and `learn`).
pub(super) fn link_async(linker: &mut Linker<ScanState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    crate::bindings::cordon::scanner::dns::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    crate::bindings::cordon::scanner::store::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Links the capabilities for synchronous calls: each answers that the
/// service is not available (see the module documentation).
pub(super) fn link_unavailable(linker: &mut Linker<ScanState>) -> wasmtime::Result<()> {
    dns::link_unavailable(linker)?;
    store::link_unavailable(linker)
}
