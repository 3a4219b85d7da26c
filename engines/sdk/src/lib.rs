//! cordon-engine-sdk: write a cordon scanning engine as one trait impl and
//! one macro call.
//!
//! ```text
//! use cordon_engine_sdk::{Engine, Envelope, Settings, Verdict, export_engine};
//!
//! struct MyEngine { /* definitions loaded by init */ }
//!
//! impl Engine for MyEngine {
//!     const NAME: &'static str = "my-engine";
//!     const VENDOR: &'static str = "Example Ltd";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!
//!     fn init(settings: &Settings) -> Result<Self, String> { Ok(MyEngine {}) }
//!     fn definitions_version(&self) -> String { "1".into() }
//!     fn scan(&self, envelope: &Envelope, message: &[u8]) -> Verdict { Verdict::clean() }
//! }
//!
//! export_engine!(MyEngine);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component cordon loads.
//!
//! `init` runs once per generation and its result is snapshotted: every scan
//! starts from a fresh copy of the state `init` built, so `scan` takes
//! `&self` and anything it changes is gone after the call.
//!
//! Definitions: when the operator configures `definitions = "DIR"`, `init`
//! can read that directory (read-only) as `/definitions` with `std::fs`.
//! Read everything you need in `init`: during scans there is no filesystem,
//! and touching the handle `init` used is a fault.

#[doc(hidden)]
#[allow(unsafe_code, missing_docs)]
pub mod bindings {
    // The generated export glue contains `unsafe` FFI shims; they are
    // wit-bindgen's, checked against the WIT by the macro.
    wit_bindgen::generate!({
        // The crate's own `wit/` (in cordon's repository, a link to the
        // top-level `wit/`), so the crate builds on its own.
        path: "wit",
        // Only the capabilities an engine calls end up imported.
        world: "scanner-with-capabilities",
        pub_export_macro: true,
        export_macro_name: "__export_scanner",
        default_bindings_module: "cordon_engine_sdk::bindings",
    });
}

use std::collections::BTreeMap;

pub use bindings::cordon::scanner::host::Level;
pub use bindings::cordon::scanner::types::{
    EngineInfo, Envelope, Header, IpAddress, LearnClass, LearnOutcome, Outcome, PartInfo,
    Recipient, RecipientAction, RecipientVerdict, Threat, ThreatKind, UnscannableReason, Verdict,
};

/// The capabilities an operator may grant (`[engines.NAME] capabilities`):
/// DNS lookups and a key-value store for learned state. An engine that
/// calls one imports it, and is refused unless it is granted.
pub mod capabilities {
    pub use crate::bindings::cordon::scanner::{dns, store};
}

/// The settings from `[engines.NAME.settings]` in cordon's config.
pub type Settings = BTreeMap<String, String>;

/// A scanning engine. Implement it and call [`export_engine!`] once.
pub trait Engine: Sized + Send + Sync + 'static {
    /// Short machine name, lower case.
    const NAME: &'static str;
    /// Who makes the engine.
    const VENDOR: &'static str;
    /// The engine's version.
    const VERSION: &'static str;
    /// Whether cordon should call [`Engine::scan_part`] with each decoded
    /// MIME leaf part.
    const WANTS_PARTS: bool = false;

    /// Builds the engine from its settings, loading definitions. Runs once per
    /// generation. An `Err` rejects the generation; say which setting or file
    /// is wrong.
    fn init(settings: &Settings) -> Result<Self, String>;

    /// The version of the loaded definitions.
    fn definitions_version(&self) -> String;

    /// Scans a raw message.
    fn scan(&self, envelope: &Envelope, message: &[u8]) -> Verdict;

    /// Scans one decoded MIME part. The default finds nothing.
    fn scan_part(&self, _envelope: &Envelope, _part: &PartInfo, _content: &[u8]) -> Verdict {
        Verdict::clean()
    }

    /// Learns that `message` is of `class` (`cordon learn`); `reference` is
    /// the scan id of an earlier scan of it, when known. What is learned
    /// must go through the `store` capability: the instance is discarded
    /// after the call. The default learns nothing.
    fn learn(
        &self,
        _envelope: &Envelope,
        _message: &[u8],
        _class: LearnClass,
        _reference: Option<&str>,
    ) -> Result<LearnOutcome, String> {
        Ok(LearnOutcome::Unsupported)
    }
}

/// Writes a line to cordon's log, tagged with the engine's name.
pub fn log(level: Level, text: &str) {
    bindings::cordon::scanner::host::log(level, text);
}

impl Verdict {
    /// Nothing found.
    pub fn clean() -> Self {
        Verdict {
            outcome: Outcome::Clean,
            spam_score: None,
            rules: Vec::new(),
            recipients: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The given threats found (an empty list is clean).
    pub fn detected(threats: Vec<Threat>) -> Self {
        if threats.is_empty() {
            return Self::clean();
        }
        Verdict {
            outcome: Outcome::Detected(threats),
            ..Self::clean()
        }
    }

    /// Could not scan.
    pub fn unscannable(reason: UnscannableReason) -> Self {
        Verdict {
            outcome: Outcome::Unscannable(reason),
            ..Self::clean()
        }
    }
}

impl Threat {
    /// A threat found in the message as a whole.
    pub fn new(name: impl Into<String>, kind: ThreatKind) -> Self {
        Threat {
            name: name.into(),
            kind,
            part: String::new(),
        }
    }
}

#[doc(hidden)]
pub mod __private {
    //! Glue used by [`export_engine!`](crate::export_engine); not part of the API.
    use super::*;

    pub fn info<E: Engine>(state: Option<&E>) -> EngineInfo {
        EngineInfo {
            name: E::NAME.into(),
            vendor: E::VENDOR.into(),
            version: E::VERSION.into(),
            definitions_version: state.map(|s| s.definitions_version()).unwrap_or_default(),
            wants_parts: E::WANTS_PARTS,
        }
    }

    pub fn init<E: Engine>(
        cell: &std::sync::OnceLock<E>,
        settings: Vec<bindings::cordon::scanner::types::Setting>,
    ) -> Result<EngineInfo, String> {
        if cell.get().is_some() {
            return Err("init called twice on one instance".into());
        }
        let settings: Settings = settings.into_iter().map(|s| (s.key, s.value)).collect();
        let engine = E::init(&settings)?;
        let _ = cell.set(engine);
        Ok(info(cell.get()))
    }

    pub fn state<E: Engine>(cell: &std::sync::OnceLock<E>) -> &E {
        match cell.get() {
            Some(e) => e,
            // The host always initialises a generation before scanning; a
            // trap here is reported to the operator as a fault.
            None => panic!("{}: scan called before init", E::NAME),
        }
    }
}

/// Exports `$engine` (a type implementing [`Engine`]) as the component's
/// `cordon:scanner/engine` interface. Call it once, at the crate root.
#[macro_export]
macro_rules! export_engine {
    ($engine:ty) => {
        static __CORDON_ENGINE: ::std::sync::OnceLock<$engine> = ::std::sync::OnceLock::new();

        struct __CordonExport;

        impl $crate::bindings::exports::cordon::scanner::engine::Guest for __CordonExport {
            fn info() -> $crate::EngineInfo {
                $crate::__private::info::<$engine>(__CORDON_ENGINE.get())
            }
            fn init(
                settings: ::std::vec::Vec<$crate::bindings::cordon::scanner::types::Setting>,
            ) -> ::std::result::Result<$crate::EngineInfo, ::std::string::String> {
                $crate::__private::init::<$engine>(&__CORDON_ENGINE, settings)
            }
            fn scan(envelope: $crate::Envelope, message: ::std::vec::Vec<u8>) -> $crate::Verdict {
                $crate::Engine::scan(
                    $crate::__private::state(&__CORDON_ENGINE),
                    &envelope,
                    &message,
                )
            }
            fn scan_part(
                envelope: $crate::Envelope,
                part: $crate::PartInfo,
                content: ::std::vec::Vec<u8>,
            ) -> $crate::Verdict {
                $crate::Engine::scan_part(
                    $crate::__private::state(&__CORDON_ENGINE),
                    &envelope,
                    &part,
                    &content,
                )
            }
            fn learn(
                envelope: $crate::Envelope,
                message: ::std::vec::Vec<u8>,
                class: $crate::LearnClass,
                reference: ::std::option::Option<::std::string::String>,
            ) -> ::std::result::Result<$crate::LearnOutcome, ::std::string::String> {
                $crate::Engine::learn(
                    $crate::__private::state(&__CORDON_ENGINE),
                    &envelope,
                    &message,
                    class,
                    reference.as_deref(),
                )
            }
        }

        $crate::bindings::__export_scanner!(__CordonExport with_types_in $crate::bindings);
    };
}
