//! What `/proc` says about a process: resident memory now and at its peak,
//! CPU time used. One reader for the daemon's own figures (`cordon stats`,
//! `/metrics`), the benchmarks and the tests that watch a child process.

/// Which process to read: this one or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// The calling process (`/proc/self`).
    Current,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Current => "/proc/self".into(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in bytes.
fn status_bytes(pid: Pid, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("{}/status", pid.dir())).ok()?;
    parse_status_kib(&status, field).map(|k| k * 1024)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Returns the heap's free memory to the kernel (glibc's `malloc_trim`;
/// a no-op elsewhere). glibc keeps what a reload frees (the component read,
/// its parsing, the build's bookkeeping) for later use, so without this a
/// daemon's resident memory grows by it with each swap.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and only returns free heap
    // memory to the kernel; it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations glibc serves from `mmap` (and returns with `munmap` when
/// freed) from this size up; see [`bound_retained_heap`].
pub const MMAP_THRESHOLD_BYTES: usize = 1 << 20;

/// Free memory at the top of a heap glibc keeps before returning it.
pub const TRIM_THRESHOLD_BYTES: usize = 4 << 20;

/// Fixes glibc's thresholds ([`MMAP_THRESHOLD_BYTES`],
/// [`TRIM_THRESHOLD_BYTES`]) for the whole process, once; a no-op elsewhere.
///
/// By default glibc raises both as the program frees large blocks: after a
/// reload freed the 14 MB component it had read, a block that size came
/// from the heap instead of `mmap`, and up to twice that stayed at the top
/// of the heap when freed. `malloc_trim` returns that memory for the main
/// heap only, not for the heaps of other threads, and reloads run on the
/// watcher's blocking threads: each one kept about 28 MB of clamsig's
/// reloads for good (a daemon's private memory 13 -> 82 MiB over the first
/// swaps with the small database, `cargo bench --bench swap`). Fixed
/// thresholds turn the adjustment off, so large blocks go back to the
/// kernel when freed, on any thread.
#[allow(unsafe_code)]
pub fn bound_retained_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: `mallopt` takes no pointers and only sets allocator
            // parameters; glibc applies them under its own locks.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int);
            }
        });
    }
}

/// Resident memory now (`VmRSS`), in bytes; `None` if the process is gone.
pub fn rss_bytes(pid: Pid) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// Private resident memory now (`RssAnon`: the heap, stacks, pages a
/// scan wrote), in bytes; `None` if the process is gone. Unlike `VmRSS` it
/// leaves out file pages mapped from the page cache (engine images, code),
/// which `VmRSS` counts once per mapping although they are one copy.
pub fn anon_rss_bytes(pid: Pid) -> Option<u64> {
    status_bytes(pid, "RssAnon:")
}

/// Address space in use (`VmSize`), in bytes; `None` if the process is gone.
pub fn address_space_bytes(pid: Pid) -> Option<u64> {
    status_bytes(pid, "VmSize:")
}

/// Peak resident memory (`VmHWM`), in bytes; `None` if the process is gone.
pub fn peak_rss_bytes(pid: Pid) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// CPU time used so far, user and system, in clock ticks
/// (`/proc/PID/stat` fields 14 and 15); `None` if the process is gone.
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("{}/stat", pid.dir())).ok()?;
    parse_stat_ticks(&stat)
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The fields after the command name, which is in parentheses and may
    // hold spaces and parentheses itself.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3: utime (14) and stime (15) are 11 and 12.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(n(11)? + n(12)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_fields_are_read() {
        let status = "Name:\tcordon\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0";
        assert_eq!(parse_stat_ticks(stat), Some(12));
        assert_eq!(parse_stat_ticks("42 (x"), None);
    }

    #[test]
    fn this_process_has_resident_memory() {
        let rss = rss_bytes(Pid::Current).expect("VmRSS of this process");
        let peak = peak_rss_bytes(Pid::Current).expect("VmHWM of this process");
        assert!(rss > 0 && peak >= rss, "rss {rss}, peak {peak}");
        assert!(cpu_ticks(Pid::Current).is_some());
    }
}
