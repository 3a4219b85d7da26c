//! The on-disk cache of compiled components, and the one place that loads
//! native code from disk.
//!
//! An artifact's file name is the SHA-256 of the component bytes and a hash
//! of wasmtime's compatibility key (version, target, compiler settings), so a
//! host upgrade or a changed setting never loads a stale artifact. Artifacts
//! are written to a temporary file in the same directory and renamed into
//! place, so a reader never sees half a file.
#![allow(unsafe_code)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::compiler::{CompileBounds, Compiler};

/// Why a compiled component could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The cache directory or an artifact file could not be written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The compiler failed, ran out of time or memory.
    #[error("{0}")]
    Compile(String),
    /// wasmtime refused the compiled artifact.
    #[error("{label}: cannot load the compiled {what}: {reason}")]
    Load {
        /// The component.
        label: String,
        /// Component or snapshot.
        what: &'static str,
        /// wasmtime's reason.
        reason: String,
    },
}

/// Compiles `bytes`, or loads the artifact a previous run compiled from the
/// same bytes with a compatible host. `label` names the component in errors.
/// A cache that cannot be written is logged and skipped: it costs time, not
/// correctness.
pub fn load_or_compile(
    engine: &wasmtime::Engine,
    compiler: &Compiler,
    bounds: CompileBounds,
    cache_dir: &Path,
    bytes: &[u8],
    label: &str,
) -> Result<Component, ArtifactError> {
    let path = artifact_path(engine, cache_dir, bytes);
    if path.is_file() {
        // SAFETY: `Component::deserialize_file` runs native code from the
        // file, so the file must be one wasmtime wrote. Artifacts are written
        // only by `store` below, into a cache directory that belongs to the
        // operator running cordon; the name binds the artifact to these exact
        // component bytes and to this wasmtime's compatibility key, and
        // wasmtime itself re-checks the version and settings in the header.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(
                artifact = %path.display(),
                "compiled-component cache entry unusable, recompiling: {e:#}"
            ),
        }
    }
    create_dir(cache_dir)?;
    // Compiled into a private name, then renamed into place: a reader
    // never sees half an artifact.
    let tmp = temp_name(cache_dir);
    compiler
        .compile_to(engine, bytes, &tmp, label, bounds)
        .map_err(|e| ArtifactError::Compile(e.to_string()))?;
    if let Err(source) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ArtifactError::Io {
            action: "move the artifact into",
            path,
            source,
        });
    }
    // SAFETY: as above; the file was written just now by this wasmtime's
    // compiler (here or in the child running this executable) under a
    // name no other writer uses, then renamed into place.
    unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| ArtifactError::Load {
        label: label.to_string(),
        what: "component",
        reason: format!("{e:#}"),
    })
}

/// Compiles a pre-initialised snapshot, which is never cached (no two
/// snapshots are alike), so that its memory image is backed by a file:
/// the artifact is written to a private file, mapped, and the file
/// unlinked. The image is then mapped copy-on-write from the page cache
/// instead of being copied into anonymous memory next to the artifact, and
/// the bytes of the compile are freed as soon as they are on disk.
pub fn compile_mapped(
    engine: &wasmtime::Engine,
    compiler: &Compiler,
    bounds: CompileBounds,
    cache_dir: &Path,
    bytes: &[u8],
    label: &str,
) -> Result<Component, ArtifactError> {
    let dir = cache_dir.join("generations");
    create_dir(&dir)?;
    let path = temp_name(&dir);
    if let Err(e) = compiler.compile_to(engine, bytes, &path, label, bounds) {
        let _ = std::fs::remove_file(&path);
        return Err(ArtifactError::Compile(e.to_string()));
    }
    // SAFETY: `deserialize_file` runs native code from the file. The file
    // was created just now with `create_new` in the operator's cache
    // directory under a name no other writer uses, holding exactly what
    // this wasmtime's compiler produced (here or in the child running this
    // executable), and wasmtime re-checks its header.
    let component = unsafe { Component::deserialize_file(engine, &path) };
    // The mapping outlives the name.
    let _ = std::fs::remove_file(&path);
    component.map_err(|e| ArtifactError::Load {
        label: label.to_string(),
        what: "snapshot",
        reason: format!("{e:#}"),
    })
}

fn create_dir(dir: &Path) -> Result<(), ArtifactError> {
    std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

fn artifact_path(engine: &wasmtime::Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    let digest = Sha256::digest(bytes);
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    cache_dir.join(format!("{}-{:016x}.cwasm", hex::encode(digest), h.finish()))
}

/// A path in `dir` that no other writer uses (process id and a counter);
/// the file is created by whoever writes it, with `create_new`.
fn temp_name(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}
