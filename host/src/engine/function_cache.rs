//! Cranelift's per-function compile cache, kept on disk for one component.
//!
//! A generation's snapshot is the engine's component with new data (the
//! memory `init` built): its functions are the component's own, unchanged.
//! Compiling each snapshot from scratch would redo all of that code
//! generation on every definitions update. Cranelift's incremental cache
//! keys each compiled function by its IR and the compiler's settings; this
//! store keeps those entries in one file per component (in the cache
//! directory, named by the component's digest and wasmtime's compatibility
//! hash), read by the compiler child before a snapshot compile and written
//! back, atomically, with the entries this compile used or added (so the
//! file holds one compile's functions, however many snapshots were built:
//! a few functions differ from snapshot to snapshot). A missing, damaged or
//! oversized file only means functions are compiled again: Cranelift
//! checks each entry it takes, and recompiles on any mismatch. What the
//! file holds becomes native code in the compiled snapshot, so it is read
//! only from the cache directory, whose ownership and permissions are
//! checked before anything is loaded from it, as for the artifacts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest file read (a component's functions take a few times its
/// code size; a Python runtime's, tens of MiB).
const MAX_FILE_BYTES: u64 = 512 << 20;

/// The file's first bytes, so that nothing else is read as entries.
const MAGIC: &[u8; 8] = b"cordonF1";

/// Compiled function by key, and whether this compile used it.
type Entries = HashMap<Vec<u8>, (Vec<u8>, bool)>;

/// An in-memory view of one component's function cache file.
#[derive(Debug)]
pub struct FunctionCache {
    path: PathBuf,
    entries: Mutex<Entries>,
    hits: AtomicUsize,
    added: AtomicUsize,
}

impl FunctionCache {
    /// Reads the cache at `path`; a missing or unreadable file is an empty
    /// cache (logged when it exists but cannot be used).
    pub fn open(path: &Path) -> FunctionCache {
        let entries = match read(path) {
            Ok(e) => e.into_iter().map(|(k, v)| (k, (v, false))).collect(),
            Err(e) => {
                if path.exists() {
                    tracing::debug!(file = %path.display(), "function cache not used: {e}");
                }
                HashMap::new()
            }
        };
        FunctionCache {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
            hits: AtomicUsize::new(0),
            added: AtomicUsize::new(0),
        }
    }

    /// Functions taken from the cache so far, and functions added.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.added.load(Ordering::Relaxed),
        )
    }

    /// Writes back the entries this compile used or added, when that is
    /// not what the file already holds: to a private name, then renamed
    /// over the file.
    pub fn save(&self) -> std::io::Result<()> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let unused = entries.values().any(|(_, used)| !used);
        if self.added.load(Ordering::Relaxed) == 0 && !unused {
            return Ok(());
        }
        let used = || entries.iter().filter(|(_, (_, used))| *used);
        let mut out = Vec::with_capacity(
            MAGIC.len()
                + used()
                    .map(|(k, (v, _))| 8 + k.len() + v.len())
                    .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        for (k, (v, _)) in used() {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        drop(entries);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".tmp-functions-{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&out));
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (v, used) = entries.get_mut(key)?;
        *used = true;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(key.to_vec(), (value, true));
        self.added.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The entries of the file at `path`: the magic, then (length, key,
/// length, value) records with little-endian `u32` lengths.
fn read(path: &Path) -> Result<HashMap<Vec<u8>, Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("over {} MiB", MAX_FILE_BYTES >> 20));
    }
    let mut rest = data
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a function cache")?;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
        let (len, tail) = rest.split_at_checked(4).ok_or("truncated")?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (part, tail) = tail.split_at_checked(len).ok_or("truncated")?;
        *rest = tail;
        Ok(part.to_vec())
    };
    let mut entries = HashMap::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        entries.insert(k, v);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    #[test]
    fn a_save_keeps_what_the_compile_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.functions");
        let c = FunctionCache::open(&path);
        c.insert(b"a", b"1".to_vec());
        c.insert(b"b", b"2".to_vec());
        c.save().unwrap();
        // The next compile uses `a` and adds `c`: `b` is dropped.
        let next = FunctionCache::open(&path);
        assert!(next.get(b"a").is_some());
        next.insert(b"c", b"3".to_vec());
        next.save().unwrap();
        let last = FunctionCache::open(&path);
        assert!(last.get(b"a").is_some() && last.get(b"c").is_some());
        assert!(last.get(b"b").is_none());
    }

    #[test]
    fn entries_survive_a_save_and_damage_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.functions");
        let c = FunctionCache::open(&path);
        assert!(c.get(b"k").is_none());
        c.save().unwrap();
        assert!(!path.exists(), "nothing added, nothing written");
        c.insert(b"k", b"value".to_vec());
        c.insert(b"", Vec::new());
        c.save().unwrap();
        let again = FunctionCache::open(&path);
        assert_eq!(again.get(b"k").as_deref(), Some(b"value".as_slice()));
        assert_eq!(again.get(b"").as_deref(), Some(b"".as_slice()));
        assert_eq!(again.counts(), (2, 0));
        // Truncated: nothing is taken from it.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(FunctionCache::open(&path).get(b"k").is_none());
        std::fs::write(&path, b"something else").unwrap();
        assert!(FunctionCache::open(&path).get(b"k").is_none());
    }
}
