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
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Compiles `bytes`, or loads the artifact a previous run compiled from the
/// same bytes with a compatible host. `label` names the component in errors.
/// A cache that cannot be written is logged and skipped: it costs time, not
/// correctness.
pub fn load_or_compile(
    engine: &wasmtime::Engine,
    cache_dir: &Path,
    bytes: &[u8],
    label: &str,
) -> anyhow::Result<Component> {
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
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("{label}: not a valid WebAssembly component: {e:#}"))?;
    if let Err(e) = store(&component, &path) {
        tracing::warn!(
            cache = %cache_dir.display(),
            "cannot write compiled-component cache: {e:#}"
        );
    }
    Ok(component)
}

/// Compiles a pre-initialised snapshot, which is never cached (no two
/// snapshots are alike), so that its memory image is backed by a file:
/// the artifact is written to a private file, mapped, and the file
/// unlinked. The image is then mapped copy-on-write from the page cache
/// instead of being copied into anonymous memory next to the artifact, and
/// the bytes of the compile are freed as soon as they are on disk.
pub fn compile_mapped(
    engine: &wasmtime::Engine,
    cache_dir: &Path,
    bytes: &[u8],
    label: &str,
) -> anyhow::Result<Component> {
    let artifact = engine
        .precompile_component(bytes)
        .map_err(|e| anyhow::anyhow!("{label}: not a valid WebAssembly component: {e:#}"))?;
    let dir = cache_dir.join("generations");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let (path, mut file) = tempfile_in(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create a file in {}: {e}", dir.display()))?;
    let written = file.write_all(&artifact).and_then(|()| file.flush());
    drop(artifact);
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        anyhow::bail!("cannot write {}: {e}", path.display());
    }
    // SAFETY: `deserialize_file` runs native code from the file. The file
    // was created just now with `create_new` in the operator's cache
    // directory, holding exactly what this wasmtime engine's
    // `precompile_component` produced, and wasmtime re-checks its header.
    let component = unsafe { Component::deserialize_file(engine, &path) };
    // The mapping outlives the name.
    let _ = std::fs::remove_file(&path);
    component.map_err(|e| anyhow::anyhow!("{label}: cannot map the compiled snapshot: {e:#}"))
}

fn artifact_path(engine: &wasmtime::Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    let digest = Sha256::digest(bytes);
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    cache_dir.join(format!("{}-{:016x}.cwasm", hex::encode(digest), h.finish()))
}

fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().expect("artifact path has a parent");
    std::fs::create_dir_all(dir)?;
    let serialized = component.serialize()?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(&serialized)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    Ok(())
}

/// A new file in `dir` with a name no other writer uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let name = format!(
            ".tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let p = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
