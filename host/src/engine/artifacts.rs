//! The on-disk cache of compiled components and pre-initialised snapshots,
//! and the one place that loads native code from disk.
//!
//! A compiled component's file name is the SHA-256 of the component bytes
//! and a hash of wasmtime's compatibility key (version, target, compiler
//! settings), so a host upgrade or a changed setting never loads a stale
//! artifact. A snapshot (`snapshots/KEY.cwasm`) is named by a digest of
//! everything it is built from ([`SnapshotInputs`]): the component bytes,
//! every definitions file's name and content, the settings, the limits
//! `init` ran under, and this cordon build and wasmtime, so a restart
//! with unchanged inputs maps it instead of running `init` again, and any
//! change builds a new one. Files are written to a temporary name in the
//! same directory and renamed into place, so a reader never sees half a
//! file; the cache is bounded in total size, least recently used first
//! out.
//!
//! Loading native code from a file is only as safe as the directory it
//! lives in: the cache directory is created private (0700), and one owned
//! by another user or writable by others is refused.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    /// The cache directory is not safe to load native code from.
    #[error(
        "compiled-component cache {}: {reason}; refusing to load native code from it (set cache_dir to a directory of the user running cordon)",
        dir.display()
    )]
    Unsafe {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
            Ok(c) => {
                touch(&path);
                return Ok(c);
            }
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
        .compile_to(engine, bytes, &tmp, label, bounds, None)
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

fn create_dir(dir: &Path) -> Result<(), ArtifactError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ArtifactError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })
}

/// Creates the cache directory (private, 0700) if it is missing, and
/// checks that it is safe to load native code from: a directory, owned by
/// the user running cordon, not writable by group or others.
pub fn prepare_cache_dir(dir: &Path) -> Result<(), ArtifactError> {
    create_dir(dir)?;
    let unsafe_dir = |reason: String| ArtifactError::Unsafe {
        dir: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|source| ArtifactError::Io {
        action: "inspect",
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by uid {me} running cordon",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "writable by {} (mode {:o})",
            if meta.mode() & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// What a snapshot is built from. Two loads with equal inputs may share
/// one snapshot.
pub struct SnapshotInputs<'a> {
    /// The component's digest (SHA-256).
    pub component: [u8; 32],
    /// The definitions' digest (`definitions::digest`), if any.
    pub definitions: Option<[u8; 32]>,
    /// The settings handed to `init`.
    pub settings: &'a BTreeMap<String, String>,
    /// The limits that bear on `init`, in a stable text form.
    pub limits: String,
}

/// This cordon build: its version and the executable's size and change
/// time, so that no two builds share snapshots.
fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let exe = std::env::current_exe()
            .and_then(std::fs::metadata)
            .map(|m| format!("{}:{}.{}", m.len(), m.mtime(), m.mtime_nsec()))
            .unwrap_or_default();
        format!("cordon {} {exe}", env!("CARGO_PKG_VERSION"))
    })
}

/// The cache key of a snapshot: a digest of its inputs, this cordon build
/// and wasmtime's compatibility key.
pub fn snapshot_key(engine: &wasmtime::Engine, inputs: &SnapshotInputs<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, bytes: &[u8]| {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("build", build_id().as_bytes());
    let mut compat = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    field("wasmtime", &compat.finish().to_le_bytes());
    field("component", &inputs.component);
    field(
        "definitions",
        inputs.definitions.as_ref().map_or(&[][..], |d| &d[..]),
    );
    for (k, v) in inputs.settings {
        field("setting", k.as_bytes());
        field("value", v.as_bytes());
    }
    field("limits", inputs.limits.as_bytes());
    hex::encode(h.finalize())
}

/// The file a snapshot is cached in.
pub fn snapshot_file(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("snapshots").join(format!("{key}.cwasm"))
}

/// The file beside a cached snapshot that records the snapshot's size
/// before compiling (what `cordon stats` calls its image).
fn image_size_file(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("image")
}

/// The snapshot cached under `key`, mapped, and its image size, if there is
/// a usable one; its use is recorded for the least-recently-used order.
pub fn cached_snapshot(
    engine_for: &dyn Fn(usize) -> wasmtime::Engine,
    cache_dir: &Path,
    key: &str,
) -> Option<(Component, usize)> {
    let path = snapshot_file(cache_dir, key);
    let image_bytes: usize = std::fs::read_to_string(image_size_file(&path))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !path.is_file() {
        return None;
    }
    // SAFETY: as in `load_or_compile`: the file was written by this cordon
    // build's compiler into the operator's private cache directory
    // (checked by `prepare_cache_dir`), under a name that binds it to its
    // inputs, this build and this wasmtime; wasmtime re-checks its header.
    match unsafe { Component::deserialize_file(&engine_for(image_bytes), &path) } {
        Ok(c) => {
            touch(&path);
            Some((c, image_bytes))
        }
        Err(e) => {
            tracing::warn!(
                snapshot = %path.display(),
                "snapshot cache entry unusable, rebuilding: {e:#}"
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// A new private file name in the snapshot directory, for a snapshot
/// about to be compiled (here or in a child).
pub fn snapshot_temp(cache_dir: &Path) -> Result<PathBuf, ArtifactError> {
    let dir = cache_dir.join("snapshots");
    create_dir(&dir)?;
    Ok(temp_name(&dir))
}

/// Takes a snapshot artifact compiled into `tmp` (by [`snapshot_temp`]'s
/// name): moves it into the cache under `key` and maps it, then evicts
/// down to `max_bytes`; with `max_bytes` 0 maps it and removes the name
/// (the mapping stays valid), keeping nothing. `image_bytes` is recorded
/// beside a kept snapshot.
pub fn adopt_snapshot(
    engine: &wasmtime::Engine,
    cache_dir: &Path,
    key: &str,
    tmp: &Path,
    label: &str,
    image_bytes: usize,
    max_bytes: u64,
) -> Result<Component, ArtifactError> {
    let path = if max_bytes == 0 {
        tmp.to_path_buf()
    } else {
        let path = snapshot_file(cache_dir, key);
        // The size first: a snapshot without it is not used.
        let _ = std::fs::write(image_size_file(&path), image_bytes.to_string());
        if let Err(source) = std::fs::rename(tmp, &path) {
            let _ = std::fs::remove_file(tmp);
            return Err(ArtifactError::Io {
                action: "move the snapshot into",
                path,
                source,
            });
        }
        path
    };
    // SAFETY: `deserialize_file` runs native code from the file. It was
    // written just now by this build's compiler (here, or in a child running
    // this executable) under a private name (`create_new`) in the private
    // cache directory (`prepare_cache_dir`), and renamed into place under
    // its key; wasmtime re-checks its header.
    let component =
        unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| ArtifactError::Load {
            label: label.to_string(),
            what: "snapshot",
            reason: format!("{e:#}"),
        });
    if max_bytes == 0 {
        let _ = std::fs::remove_file(&path);
    } else if component.is_ok() {
        evict(cache_dir, max_bytes, &path);
    } else {
        let _ = std::fs::remove_file(&path);
    }
    component
}

/// Marks `path` as used now (its modification time orders eviction: access
/// times are often not kept).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes cached artifacts (compiled components and snapshots), least
/// recently used first, until they hold at most `max_bytes`; `keep` stays.
/// A mapped file stays valid after its name is removed.
fn evict(cache_dir: &Path, max_bytes: u64, keep: &Path) {
    let mut entries: Vec<(SystemTime, u64, PathBuf)> =
        [cache_dir.to_path_buf(), cache_dir.join("snapshots")]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "cwasm" || x == "functions")
            })
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
    let mut total: u64 = entries.iter().map(|(_, n, _)| n).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            let _ = std::fs::remove_file(image_size_file(&path));
            tracing::info!(artifact = %path.display(), bytes = len, "evicted from the compiled-component cache");
            total = total.saturating_sub(len);
        }
    }
}

fn artifact_path(engine: &wasmtime::Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    cache_dir.join(format!("{}.cwasm", artifact_stem(engine, &digest)))
}

/// The component's digest and wasmtime's compatibility hash.
fn artifact_stem(engine: &wasmtime::Engine, digest: &[u8; 32]) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{}-{:016x}", hex::encode(digest), h.finish())
}

/// The function cache shared by the snapshots of the component whose
/// digest is `digest` (see the `function_cache` module); evicted with the
/// snapshots.
pub fn functions_file(engine: &wasmtime::Engine, cache_dir: &Path, digest: &[u8; 32]) -> PathBuf {
    cache_dir
        .join("snapshots")
        .join(format!("{}.functions", artifact_stem(engine, digest)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_cache_directory_is_created_private_and_refused_when_unsafe() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b/cache");
        prepare_cache_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "created {mode:o}");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_cache_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains("writable by every user") && e.contains("cache"),
            "{e}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = prepare_cache_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by its group"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_cache_dir(&dir).unwrap();

        // Owned by someone else: as root, hand the directory to nobody; as
        // another user, the root directory is someone else's.
        // SAFETY: geteuid has no preconditions.
        let other = if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            dir.clone()
        } else {
            PathBuf::from("/")
        };
        let e = prepare_cache_dir(&other).unwrap_err().to_string();
        assert!(e.contains("owned by uid"), "{e}");
    }

    #[test]
    fn eviction_removes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir(&snaps).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        let files = [
            (dir.path().join("a.cwasm"), 30u64),
            (snaps.join("b.cwasm"), 0),
            (snaps.join("c.cwasm"), 60),
        ];
        for (f, age) in &files {
            std::fs::write(f, vec![0u8; 100]).unwrap();
            let t = old + std::time::Duration::from_secs(*age);
            std::fs::File::options()
                .append(true)
                .open(f)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // b is the oldest but is the one just written: a goes first, then c.
        evict(dir.path(), 250, &files[1].0);
        assert!(!files[0].0.exists() && files[1].0.exists() && files[2].0.exists());
        evict(dir.path(), 100, &files[1].0);
        assert!(files[1].0.exists() && !files[2].0.exists());
        // Used again: touched, so it is the newest.
        std::fs::write(&files[0].0, vec![0u8; 100]).unwrap();
        touch(&files[1].0);
        evict(dir.path(), 100, Path::new("/nothing"));
        assert!(files[1].0.exists() && !files[0].0.exists());
    }
}
