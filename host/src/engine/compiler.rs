//! Compiling components to native code in a child process.
//!
//! A component is vendor input: one built to be slow to compile can keep
//! Cranelift busy for as long as it likes, and one with a large data
//! segment makes the compile spend many times its size in memory. Neither
//! can be interrupted inside the daemon. So the daemon re-executes itself
//! (`cordon compile-component`, hidden) with the component on stdin and an
//! output path: the child compiles with the same wasmtime settings, writes
//! the artifact file and exits. The child runs under a wall-clock limit
//! (killed past it) and a memory limit (`RLIMIT_AS`), so a hostile
//! component costs a refused load, never a stalled or swollen daemon. The
//! daemon then maps the artifact file.
//!
//! Where no `cordon` executable can be found (the library used from another
//! program), compilation runs in the process, without these two bounds,
//! and a warning says so once.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::function_cache::FunctionCache;

/// How components are compiled.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// In a child process running this `cordon` executable.
    Child(PathBuf),
    /// In this process (no executable to run).
    InProcess,
}

/// What one compile may spend (a child's; in-process compiles are not
/// bounded).
#[derive(Debug, Clone, Copy)]
pub struct CompileBounds {
    /// Wall-clock time.
    pub timeout: Duration,
    /// Address space.
    pub max_memory_bytes: u64,
}

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "compile-component";

/// Bytes of the child's error output kept.
const MAX_CHILD_ERROR_BYTES: u64 = 8 * 1024;

impl Compiler {
    /// The compiler for this process: `CORDON_COMPILER` if set (a path, or
    /// `in-process`), else this executable when it is `cordon`, else a
    /// `cordon` beside it or one directory up (how cargo lays out test
    /// binaries), else in-process.
    pub fn detect() -> Self {
        let child = Compiler::Child;
        if let Some(v) = std::env::var_os("CORDON_COMPILER") {
            if v == "in-process" {
                return Compiler::InProcess;
            }
            return child(PathBuf::from(v));
        }
        let Ok(me) = std::env::current_exe() else {
            return Compiler::InProcess;
        };
        if me.file_name().is_some_and(|n| n == "cordon") {
            return child(me);
        }
        let beside = me.parent().map(|d| d.join("cordon"));
        let above = me.parent().and_then(Path::parent).map(|d| d.join("cordon"));
        match [beside, above].into_iter().flatten().find(|p| p.is_file()) {
            Some(exe) => child(exe),
            None => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "no cordon executable to compile components in: compiling in-process, without the compile time and memory bounds"
                    )
                });
                Compiler::InProcess
            }
        }
    }

    /// Compiles `bytes` into an artifact file at `out` (created, not
    /// overwritten). `engine` is used in-process; a child builds its own
    /// with the same settings. With `functions` (in-process compiles only:
    /// a snapshot, compiled by the build child), compiled functions are
    /// taken from and added to that function cache file (see the
    /// `function_cache` module). The error names `label`.
    pub fn compile_to(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        out: &Path,
        label: &str,
        bounds: CompileBounds,
        functions: Option<&Path>,
    ) -> Result<(), String> {
        match self {
            Compiler::InProcess => {
                let cache = functions.map(|f| Arc::new(FunctionCache::open(f)));
                let cached_engine;
                let engine = match &cache {
                    None => engine,
                    Some(cache) => {
                        let mut cfg = super::wasmtime_config();
                        cfg.enable_incremental_compilation(cache.clone())
                            .map_err(|e| format!("cannot enable the function cache: {e:#}"))?;
                        cached_engine = wasmtime::Engine::new(&cfg)
                            .map_err(|e| format!("cannot create the wasmtime engine: {e:#}"))?;
                        &cached_engine
                    }
                };
                let artifact = engine
                    .precompile_component(bytes)
                    .map_err(|e| format!("{label}: not a valid WebAssembly component: {e:#}"))?;
                if let Some(cache) = cache {
                    let (hits, added) = cache.counts();
                    tracing::debug!(hits, added, "{label}: functions from the function cache");
                    if let Err(e) = cache.save() {
                        tracing::warn!(file = ?functions, "cannot write the function cache: {e}");
                    }
                }
                write_new(out, &artifact)
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))
            }
            Compiler::Child(exe) => {
                debug_assert!(
                    functions.is_none(),
                    "a compiler child takes no function cache"
                );
                run_child(exe, bounds, bytes, out, label)
            }
        }
    }
}

fn run_child(
    exe: &Path,
    bounds: CompileBounds,
    bytes: &[u8],
    out: &Path,
    label: &str,
) -> Result<(), String> {
    let CompileBounds {
        timeout,
        max_memory_bytes,
    } = bounds;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg(out)
        .arg(label)
        .env("CORDON_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    limit_memory(&mut cmd, max_memory_bytes);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{label}: cannot start the compiler {}: {e}", exe.display()))?;
    let started = Instant::now();
    // Feed and drain on threads of their own, so a child that stops
    // reading or floods its error output cannot block the wait below.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let drainer = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut stderr)
            .take(MAX_CHILD_ERROR_BYTES)
            .read_to_end(&mut kept);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        kept
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{label}: did not compile within {} ms (compile_timeout_ms); refused",
                    timeout.as_millis()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("{label}: cannot wait for the compiler: {e}")),
        }
    };
    let _ = feeder.join();
    let errors = drainer.join().unwrap_or_default();
    let status = status.inspect_err(|_| {
        let _ = std::fs::remove_file(out);
    })?;
    if status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(out);
    let said = crate::text::escape(String::from_utf8_lossy(&errors).trim(), 2048);
    Err(match status.code() {
        Some(_) if !said.is_empty() => said,
        Some(code) => format!("{label}: the compiler exited with code {code}"),
        None => format!(
            "{label}: the compiler was killed ({status}), most likely by its memory limit of {} MiB (compile_memory_mib)",
            max_memory_bytes >> 20
        ),
    })
}

/// Caps the child's address space.
#[allow(unsafe_code)]
fn limit_memory(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes one `setrlimit`
    // system call on a value prepared before the fork, and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Writes `data` to a new file at `path`, or fails if it exists.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    // In pieces: one write(2) of a whole snapshot artifact (107 MB, the
    // 500,000-signature clamsig) took 330 ms on the test machine, against
    // 23 ms for the same bytes in 1 MiB writes.
    for chunk in data.chunks(1 << 20) {
        f.write_all(chunk)?;
    }
    f.flush()
}

/// The child's side: reads a component from stdin, compiles it with the
/// runtime's settings and writes the artifact to `out`. Exit code 0 when
/// written, 2 with the reason (naming `label`) on stderr otherwise.
pub fn child_main(out: &Path, label: &str) -> i32 {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the component from stdin: {e}");
        return 2;
    }
    let engine = match wasmtime::Engine::new(&super::wasmtime_config()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot create the wasmtime engine: {e:#}");
            return 2;
        }
    };
    let unbounded = CompileBounds {
        timeout: Duration::MAX,
        max_memory_bytes: u64::MAX,
    };
    match Compiler::InProcess.compile_to(&engine, &bytes, out, label, unbounded, None) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}
