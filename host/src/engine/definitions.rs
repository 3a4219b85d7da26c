//! The definitions directory checked before an engine's `init` may read it.
//!
//! `init` reads through WASI with the host's file calls, which the epoch
//! deadline cannot interrupt: opening a FIFO blocks until a writer comes,
//! a device or a huge sparse file can be read for as long as `init` may
//! run. So the directory must hold only regular files and directories
//! (symlinks are judged by what they point to), at most [`MAX_ENTRIES`]
//! entries [`MAX_DEPTH`] deep, and files of at most the engine's
//! `max_definitions_mib` together.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Entries a definitions tree may hold.
pub const MAX_ENTRIES: usize = 200_000;
/// Directory levels below the definitions directory.
pub const MAX_DEPTH: usize = 16;

/// Checks `dir` as the module doc says and returns its regular files in
/// path order; the error names the offending path.
pub fn check(dir: &Path, max_bytes: u64) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut entries = 0usize;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let listing = std::fs::read_dir(&d)
            .map_err(|e| format!("cannot read definitions directory {}: {e}", d.display()))?;
        for entry in listing {
            let entry = entry
                .map_err(|e| format!("cannot read definitions directory {}: {e}", d.display()))?;
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(format!(
                    "definitions directory {} holds more than {MAX_ENTRIES} entries",
                    dir.display()
                ));
            }
            let path = entry.path();
            // Follows symlinks: what `init` would open is what counts.
            let meta = std::fs::metadata(&path)
                .map_err(|e| format!("definitions file {}: {e}", path.display()))?;
            if meta.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!(
                        "definitions directory {} is nested deeper than {MAX_DEPTH} levels",
                        path.display()
                    ));
                }
                stack.push((path, depth + 1));
            } else if meta.is_file() {
                files.push(path.clone());
                total = total.saturating_add(meta.len());
                if total > max_bytes {
                    return Err(format!(
                        "definitions in {} are over {max_bytes} bytes together (max_definitions_mib); {} is where the sum passed it",
                        dir.display(),
                        path.display()
                    ));
                }
            } else {
                return Err(format!(
                    "definitions entry {} is not a regular file or directory (a FIFO, socket or device would stall init)",
                    path.display()
                ));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A digest of the definitions: each file's path below `dir` and the
/// SHA-256 of its content, in path order. Reads at most `max_bytes` in
/// all (a file that grew past the check is an error).
pub fn digest(dir: &Path, files: &[PathBuf], max_bytes: u64) -> Result<[u8; 32], String> {
    let mut all = Sha256::new();
    let mut left = max_bytes;
    let mut buf = vec![0u8; 1 << 16];
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        all.update(rel.as_os_str().as_encoded_bytes());
        all.update([0]);
        let mut file =
            std::fs::File::open(f).map_err(|e| format!("definitions file {}: {e}", f.display()))?;
        let mut one = Sha256::new();
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("definitions file {}: {e}", f.display()))?;
            if n == 0 {
                break;
            }
            left = left.checked_sub(n as u64).ok_or_else(|| {
                format!(
                    "definitions in {} grew past {max_bytes} bytes while being read",
                    dir.display()
                )
            })?;
            one.update(&buf[..n]);
        }
        all.update(one.finalize());
    }
    Ok(all.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.ndb"), b"0123456789").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.hdb"), b"01234").unwrap();
        let files = check(dir.path(), 15).unwrap();
        assert_eq!(
            files,
            [dir.path().join("a.ndb"), dir.path().join("sub/b.hdb")]
        );
        let over = check(dir.path(), 14).unwrap_err();
        assert!(over.contains("max_definitions_mib"), "{over}");

        let fifo = dir.path().join("sub/pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo failed");
        let err = check(dir.path(), 1 << 20).unwrap_err();
        assert!(
            err.contains("sub/pipe") && err.contains("not a regular file"),
            "{err}"
        );
        std::fs::remove_file(&fifo).unwrap();

        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        let err = check(dir.path(), 1 << 20).unwrap_err();
        assert!(err.contains("zero"), "{err}");
    }

    #[test]
    fn the_digest_changes_with_any_content_or_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.ndb"), b"one").unwrap();
        std::fs::write(dir.path().join("b.ndb"), b"two").unwrap();
        let d = |max| {
            let files = check(dir.path(), 1 << 20).unwrap();
            digest(dir.path(), &files, max)
        };
        let first = d(1 << 20).unwrap();
        assert_eq!(
            d(1 << 20).unwrap(),
            first,
            "the same files, the same digest"
        );
        std::fs::write(dir.path().join("b.ndb"), b"twO").unwrap();
        let changed = d(1 << 20).unwrap();
        assert_ne!(changed, first);
        std::fs::rename(dir.path().join("b.ndb"), dir.path().join("c.ndb")).unwrap();
        assert_ne!(d(1 << 20).unwrap(), changed, "a renamed file counts");
        assert!(d(4).unwrap_err().contains("grew past"));
    }
}
