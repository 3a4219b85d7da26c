//! Reading an engine's component file.
//!
//! A load reads the component once, in chunks, for its digest (the key of
//! its compiled artifacts and snapshots) and its imports (checked before
//! anything is compiled), without holding it: a daemon swapping in a new
//! generation of a 14 MB engine would otherwise hold those 14 MB for the
//! whole build. Whoever needs the bytes after (the snapshot build child, or
//! the in-process build) reads the file again and checks it against the
//! digest, so what is built is what was checked.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::LoadError;
use super::imports::{self, ReadImportsError};
use super::spec::EngineSpec;

/// What one pass over a component file found.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The SHA-256 of its bytes.
    pub digest: [u8; 32],
    /// What it imports (see [`imports::imports`]).
    pub imports: Vec<String>,
}

/// A reader that digests and counts what passes through it.
struct Digesting<R> {
    inner: R,
    hash: Sha256,
    read: u64,
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Opens the component file: a regular file of at most
/// `max_component_bytes`.
fn open(spec: &EngineSpec) -> Result<(std::fs::File, u64), LoadError> {
    let file = std::fs::File::open(&spec.component).map_err(|e| read_error(spec, e))?;
    let meta = file.metadata().map_err(|e| read_error(spec, e))?;
    if !meta.is_file() {
        return Err(invalid(spec, "is not a regular file".into()));
    }
    let max = spec.limits.max_component_bytes;
    if meta.len() > max {
        return Err(invalid(
            spec,
            format!(
                "{} bytes, over the limit of {max} (max_component_mib)",
                meta.len()
            ),
        ));
    }
    Ok((file, max))
}

fn read_error(spec: &EngineSpec, source: std::io::Error) -> LoadError {
    LoadError::Read {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        source,
    }
}

fn invalid(spec: &EngineSpec, reason: String) -> LoadError {
    LoadError::Invalid {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        reason,
    }
}

fn grew(spec: &EngineSpec) -> LoadError {
    invalid(
        spec,
        format!(
            "grew past the limit of {} bytes while being read (max_component_mib)",
            spec.limits.max_component_bytes
        ),
    )
}

/// Reads the component file of `spec` once: its digest and imports,
/// holding at most a chunk and one top-level section at a time.
pub fn inspect(spec: &EngineSpec) -> Result<Inspected, LoadError> {
    let (file, max) = open(spec)?;
    let mut src = Digesting {
        inner: file.take(max + 1),
        hash: Sha256::new(),
        read: 0,
    };
    let names = imports::imports_from(&mut src);
    if src.read > max {
        return Err(grew(spec));
    }
    let names = names.map_err(|e| match e {
        ReadImportsError::Read(e) => read_error(spec, e),
        ReadImportsError::Imports(e) => invalid(spec, e.to_string()),
    })?;
    Ok(Inspected {
        digest: src.hash.finalize().into(),
        imports: names,
    })
}

/// Reads the whole component file of `spec`, which must still be the one
/// [`inspect`] found (`digest`): an update that lands in between fails
/// the load (the file watcher loads the update next).
pub fn read_checked(spec: &EngineSpec, digest: &[u8; 32]) -> Result<Vec<u8>, LoadError> {
    let (file, max) = open(spec)?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(spec, e))?;
    if bytes.len() as u64 > max {
        return Err(grew(spec));
    }
    check_digest(&bytes, digest).map_err(|reason| invalid(spec, reason))?;
    Ok(bytes)
}

/// Whether `bytes` are the component with `digest`; the error says what
/// happened in words for a load error.
pub fn check_digest(bytes: &[u8], digest: &[u8; 32]) -> Result<(), String> {
    if Sha256::digest(bytes)[..] == digest[..] {
        Ok(())
    } else {
        Err(
            "the file changed while it was being loaded (an update landed): the next \
             reload reads it again"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> EngineSpec {
        EngineSpec {
            name: "e".into(),
            component: path.into(),
            enabled: true,
            definitions: None,
            settings: Default::default(),
            capabilities: Vec::new(),
            limits: Default::default(),
            self_test: vec![],
            cache: true,
        }
    }

    /// A real component: clamsig's path and bytes.
    fn clamsig() -> (&'static str, Vec<u8>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/wasm32-wasip2/release/clamsig.wasm"
        );
        let bytes = std::fs::read(path).expect("build the engines first (./dev build)");
        (path, bytes)
    }

    /// The streaming read finds what reading the whole file finds, and
    /// digests every byte.
    #[test]
    fn a_chunked_read_finds_the_imports_and_the_digest_of_the_whole_file() {
        let (path, bytes) = clamsig();
        let mut spec = spec(path);
        let found = inspect(&spec).unwrap();
        assert_eq!(found.imports, imports::imports(&bytes).unwrap());
        assert!(
            found
                .imports
                .iter()
                .any(|n| n.starts_with("cordon:scanner/"))
        );
        assert_eq!(found.digest[..], Sha256::digest(&bytes)[..]);
        assert_eq!(read_checked(&spec, &found.digest).unwrap(), bytes);
        let mut other = found.digest;
        other[0] ^= 1;
        let e = read_checked(&spec, &other).unwrap_err().to_string();
        assert!(e.contains("changed while it was being loaded"), "{e}");
        spec.limits.max_component_bytes = bytes.len() as u64 - 1;
        let e = inspect(&spec).unwrap_err().to_string();
        assert!(e.contains("over the limit"), "{e}");
    }

    /// Trailing bytes, a cut-off nested module and a core module are
    /// refused, from the stream as from the bytes.
    #[test]
    fn a_chunked_read_refuses_what_is_not_one_whole_component() {
        let (_, bytes) = clamsig();
        let read = |b: &[u8]| imports::imports_from(&mut &b[..]);
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"junk");
        assert!(matches!(
            read(&trailing),
            Err(ReadImportsError::Imports(imports::ImportError::Malformed(
                _
            )))
        ));
        assert!(read(&bytes[..bytes.len() / 2]).is_err());
        let core = b"\0asm\x01\0\0\0";
        assert!(format!("{:?}", read(core).unwrap_err()).contains("core module"));
    }
}
