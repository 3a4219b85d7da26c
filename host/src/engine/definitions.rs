//! The definitions directory checked before an engine's `init` may read it.
//!
//! `init` reads through WASI with the host's file calls, which the epoch
//! deadline cannot interrupt: opening a FIFO blocks until a writer comes,
//! a device or a huge sparse file can be read for as long as `init` may
//! run. So the directory must hold only regular files and directories
//! (symlinks are judged by what they point to), at most [`MAX_ENTRIES`]
//! entries [`MAX_DEPTH`] deep, and files of at most the engine's
//! `max_definitions_mib` together.

use std::path::Path;

/// Entries a definitions tree may hold.
pub const MAX_ENTRIES: usize = 200_000;
/// Directory levels below the definitions directory.
pub const MAX_DEPTH: usize = 16;

/// Checks `dir` as the module doc says; the error names the offending path.
pub fn check(dir: &Path, max_bytes: u64) -> Result<(), String> {
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
    Ok(())
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
        assert_eq!(check(dir.path(), 15), Ok(()));
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
}
