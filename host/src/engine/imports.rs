//! What a component imports, checked before it is compiled.
//!
//! Compiling a component takes from a second (a Rust engine) to a minute
//! (a JavaScript runtime), so its imports are read from the binary first
//! and a component that imports anything cordon does not provide is
//! refused at once, naming the import and listing what cordon provides.
//! What is provided:
//! - `cordon:scanner/types` and `cordon:scanner/host` of every contract
//!   version cordon loads (see [`crate::bindings::Contract`]);
//! - WASI 0.2's standard interfaces: those cordon grants with no authority
//!   (clocks, random, stdio, the definitions directory during `init`), and
//!   those it denies (sockets refuse every address; `wasi:http` and the
//!   rest, which language runtimes link whether the engine uses them or
//!   not, fail when called: see [`deny_the_rest`]).
//!
//! The capabilities of contract 0.2.0 (`cordon:scanner/dns`,
//! `cordon:scanner/store`) need the operator's grant (`[engines.NAME]
//! capabilities`): an engine importing one not granted is refused, naming
//! the capability and the config key. They are not served yet: an engine
//! importing a granted one is refused too, saying so.

use wasmparser::{Parser, Payload};

use super::capabilities::Services;
use super::spec::Capability;

/// The WASI 0.2 packages wasmtime-wasi links (granting no authority: see
/// the engine state).
const LINKED_WASI_PACKAGES: [&str; 6] = [
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
];

/// The WASI 0.2 packages linked to functions that fail.
const DENIED_WASI_PACKAGES: [&str; 1] = ["wasi:http"];

/// The cordon interfaces every engine may import.
const HOST_INTERFACES: [&str; 2] = ["cordon:scanner/types", "cordon:scanner/host"];

/// Why a component's imports are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The binary could not be read as a component.
    Malformed(String),
    /// It imports an interface cordon does not provide.
    Unknown(String),
    /// It imports a capability the operator did not grant.
    NotGranted {
        /// The import's name.
        import: String,
        /// The capability.
        capability: Capability,
        /// The engine's name in config.
        engine: String,
    },
    /// It imports a granted capability this runtime does not serve (the
    /// store, for now; DNS when the runtime was built without a resolver).
    NotServed {
        /// The import's name.
        import: String,
        /// The capability.
        capability: Capability,
    },
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Malformed(e) => write!(f, "not a valid WebAssembly component: {e}"),
            ImportError::Unknown(name) => write!(
                f,
                "imports {}, which cordon does not provide; engines may import {}",
                crate::text::escape(name, 256),
                provided()
            ),
            ImportError::NotGranted {
                import,
                capability,
                engine,
            } => write!(
                f,
                "imports {import}, the `{c}` capability, which is not granted: grant it with \
                 capabilities = [\"{c}\"] in [engines.{engine}] (engines.{engine}.capabilities)",
                c = capability.name()
            ),
            ImportError::NotServed { import, capability } => write!(
                f,
                "imports {import}, the `{}` capability, which this cordon does not serve",
                capability.name()
            ),
        }
    }
}

/// What cordon provides, for error messages.
fn provided() -> String {
    let versions: Vec<_> = crate::bindings::Contract::ALL
        .iter()
        .map(|c| c.version())
        .collect();
    format!(
        "{} ({}) and WASI 0.2 ({}; what grants authority fails)",
        HOST_INTERFACES.join(", "),
        versions.join(", "),
        LINKED_WASI_PACKAGES
            .iter()
            .chain(&DENIED_WASI_PACKAGES)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The names of the interfaces and functions `bytes` imports (its own
/// imports, not those of the modules and components nested in it).
pub fn imports(bytes: &[u8]) -> Result<Vec<String>, ImportError> {
    imports_from(&mut &bytes[..]).map_err(|e| match e {
        ReadImportsError::Imports(e) => e,
        ReadImportsError::Read(e) => ImportError::Malformed(e.to_string()),
    })
}

/// Why [`imports_from`] failed: the source, or the component.
#[derive(Debug)]
pub enum ReadImportsError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// What was read is not a component.
    Imports(ImportError),
}

/// Bytes read from the source at a time.
const CHUNK_BYTES: u64 = 64 << 10;

/// [`imports`] over a reader, which is read to its end exactly once, so
/// that whoever wraps it sees (and may digest) every byte. The modules and
/// components nested in the component, nearly all of its bytes, are read
/// and dropped as they come: what is held at once is one top-level section
/// (types, aliases, imports, exports), not the file.
pub fn imports_from(src: &mut impl std::io::Read) -> Result<Vec<String>, ReadImportsError> {
    use std::io::Read;
    use wasmparser::Chunk;
    let malformed = |e: String| ReadImportsError::Imports(ImportError::Malformed(e));
    let mut parser = Parser::new(0);
    let mut buf: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut names = Vec::new();
    loop {
        let (consumed, skip, end) = match parser
            .parse(&buf, eof)
            .map_err(|e| malformed(e.to_string()))?
        {
            Chunk::NeedMoreData(more) => {
                let want = more.max(CHUNK_BYTES);
                let got = src
                    .by_ref()
                    .take(want)
                    .read_to_end(&mut buf)
                    .map_err(ReadImportsError::Read)?;
                eof = got == 0;
                continue;
            }
            Chunk::Parsed { consumed, payload } => match payload {
                Payload::Version { encoding, .. } => {
                    if encoding != wasmparser::Encoding::Component {
                        return Err(malformed(
                            "a core module, not a component (build for wasm32-wasip2, or wrap it \
                             with wasm-tools component new)"
                                .into(),
                        ));
                    }
                    (consumed, 0, false)
                }
                Payload::ComponentImportSection(reader) => {
                    for import in reader {
                        let import = import.map_err(|e| malformed(e.to_string()))?;
                        names.push(import.name.name.to_string());
                    }
                    (consumed, 0, false)
                }
                // Nested: not parsed, passed over.
                Payload::ModuleSection {
                    unchecked_range, ..
                }
                | Payload::ComponentSection {
                    unchecked_range, ..
                } => (consumed, unchecked_range.len() as u64, false),
                Payload::End(_) => (consumed, 0, true),
                _ => (consumed, 0, false),
            },
        };
        buf.drain(..consumed);
        let held = skip.min(buf.len() as u64);
        buf.drain(..held as usize);
        let rest = skip - held;
        if rest > 0 {
            let passed = std::io::copy(&mut src.by_ref().take(rest), &mut std::io::sink())
                .map_err(ReadImportsError::Read)?;
            if passed < rest {
                return Err(malformed(format!(
                    "a nested module or component is cut short ({passed} of {rest} bytes)"
                )));
            }
        }
        if end {
            // The rest of the source is read too (it is part of what the
            // caller digests); nothing may follow the component.
            let after = std::io::copy(src, &mut std::io::sink()).map_err(ReadImportsError::Read)?;
            if after > 0 || !buf.is_empty() {
                return Err(malformed(format!(
                    "{} bytes after the end of the component",
                    after + buf.len() as u64
                )));
            }
            return Ok(names);
        }
    }
}

/// Checks the imports `names` of a component ([`imports`],
/// [`imports_from`]) against what cordon provides and the capabilities
/// `granted` to the engine named `engine` in config, which `services`
/// must serve.
pub fn check(
    names: Vec<String>,
    engine: &str,
    granted: &[Capability],
    services: &Services,
) -> Result<(), ImportError> {
    for name in names {
        match check_one(&name)? {
            None => {}
            Some(capability) if !granted.contains(&capability) => {
                return Err(ImportError::NotGranted {
                    import: name,
                    capability,
                    engine: engine.to_string(),
                });
            }
            Some(capability) if services.serves(capability) => {}
            Some(capability) => {
                return Err(ImportError::NotServed {
                    import: name,
                    capability,
                });
            }
        }
    }
    Ok(())
}

/// Checks one import name (`package:name/interface@version`): provided,
/// the capability it is, or refused.
fn check_one(name: &str) -> Result<Option<Capability>, ImportError> {
    let (path, version) = name.split_once('@').unwrap_or((name, ""));
    let package = path.split_once('/').map_or(path, |(p, _)| p);
    if HOST_INTERFACES.contains(&path)
        && crate::bindings::Contract::ALL
            .iter()
            .any(|c| c.version() == version)
    {
        return Ok(None);
    }
    if let Some(c) = Capability::ALL.into_iter().find(|c| c.interface() == path)
        && crate::bindings::Contract::ALL
            .iter()
            .any(|v| v.has_capabilities() && v.version() == version)
    {
        return Ok(Some(c));
    }
    let wasi = LINKED_WASI_PACKAGES.contains(&package) || DENIED_WASI_PACKAGES.contains(&package);
    if wasi && version.starts_with("0.2.") {
        return Ok(None);
    }
    Err(ImportError::Unknown(name.to_string()))
}

/// A resource of a denied interface: no call can make one.
struct Denied;

/// Defines, in `linker`, the interfaces `component` imports that the linker
/// does not provide, with functions that fail when called and resources no
/// call can make. Run after [`check`] passed: what is left is standard WASI
/// that cordon does not grant (`wasi:http`, ...), which a language runtime
/// links whether or not the engine calls it. The interfaces the linker
/// provides are left to it (a component may ask for an older 0.2 version
/// than the linker's, which it still satisfies).
pub fn deny_the_rest<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;
    let engine = linker.engine().clone();
    let ty = component.component_type();
    // The resources of the interfaces the linker provides, which a denied
    // interface may use (`wasi:http/types` takes wasi:io's streams): those
    // must be the linker's own types.
    let mut linked: Vec<(ResourceType, ResourceType)> = Vec::new();
    for (name, import) in ty.imports(&engine) {
        let path = name.split_once('@').map_or(name, |(p, _)| p);
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        for (item, export) in instance.exports(&engine) {
            let ComponentItem::Resource(r) = export.ty else {
                continue;
            };
            let host = match (path, item) {
                ("wasi:io/poll", "pollable") => {
                    ResourceType::host::<wasmtime_wasi::p2::DynPollable>()
                }
                ("wasi:io/streams", "input-stream") => {
                    ResourceType::host::<wasmtime_wasi::p2::DynInputStream>()
                }
                ("wasi:io/streams", "output-stream") => {
                    ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>()
                }
                ("wasi:io/error", "error") => ResourceType::host::<wasmtime_wasi::p2::IoError>(),
                _ => continue,
            };
            linked.push((r, host));
        }
    }
    for (name, import) in ty.imports(&engine) {
        let package = name.split_once('/').map_or(name, |(p, _)| p);
        if package == "cordon:scanner" || LINKED_WASI_PACKAGES.contains(&package) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            wasmtime::bail!("import {name} is not an interface");
        };
        let mut denied = linker.instance(name)?;
        for (item, export) in instance.exports(&engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{item}");
                    denied.func_new(item, move |_, _, _, _| {
                        wasmtime::bail!("{what} is denied to engines")
                    })?;
                }
                ComponentItem::Resource(r) => {
                    let host = linked
                        .iter()
                        .find(|(theirs, _)| *theirs == r)
                        .map_or_else(ResourceType::host::<Denied>, |(_, host)| *host);
                    denied.resource(item, host, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_and_wasi_0_2_are_provided_and_nothing_else() {
        for ok in [
            "cordon:scanner/host@0.1.0",
            "cordon:scanner/types@0.2.0",
            "wasi:cli/environment@0.2.6",
            "wasi:http/types@0.2.3",
            "wasi:io/streams@0.2.0",
        ] {
            assert_eq!(check_one(ok), Ok(None), "{ok}");
        }
        for bad in [
            "cordon:scanner/host@0.3.0",
            "cordon:scanner/engine@0.2.0",
            "wasi:cli/environment@0.3.0",
            "wasi:nn/inference@0.2.0",
            "evil:net/raw-socket@1.0.0",
            "wasi:http",
        ] {
            assert_eq!(
                check_one(bad),
                Err(ImportError::Unknown(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            check_one("cordon:scanner/dns@0.2.0"),
            Ok(Some(Capability::Dns))
        );
        assert_eq!(
            check_one("cordon:scanner/store@0.2.0"),
            Ok(Some(Capability::Store))
        );
        // 0.1.0 had no capabilities.
        assert!(check_one("cordon:scanner/store@0.1.0").is_err());
    }

    #[test]
    fn the_refusal_names_the_import_and_what_is_provided() {
        let e = ImportError::Unknown("evil:net/raw-socket@1.0.0".into()).to_string();
        assert!(e.contains("imports evil:net/raw-socket@1.0.0"), "{e}");
        assert!(e.contains("cordon:scanner/host"), "{e}");
        assert!(e.contains("0.1.0") && e.contains("0.2.0"), "{e}");
        assert!(e.contains("wasi:http"), "{e}");
    }

    #[test]
    fn only_the_components_own_imports_are_read() {
        let outer = wat::parse_str(
            r#"(component
                (import "wasi:io/error@0.2.0" (instance))
                (component
                  (import "evil:inner/thing@1.0.0" (instance)))
              )"#,
        )
        .unwrap();
        assert_eq!(imports(&outer).unwrap(), ["wasi:io/error@0.2.0"]);
        let module = wat::parse_str("(module)").unwrap();
        assert!(matches!(imports(&module), Err(ImportError::Malformed(_))));
        assert!(matches!(
            imports(b"not wasm at all"),
            Err(ImportError::Malformed(_))
        ));
    }
}
