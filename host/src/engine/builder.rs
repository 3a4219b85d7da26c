//! Building a snapshot in a child process, so that its cost never lands in
//! the daemon.
//!
//! Building a generation's snapshot runs the engine's `init` (which may
//! build large tables from its definitions), snapshots the instance, and
//! compiles the snapshot: at its peak, the definitions, the engine's
//! memory, the snapshot and the compiler's working set are all alive at
//! once. Done in the daemon, that peak stays in its resident memory after
//! the swap (the allocator keeps it). So the daemon re-executes itself
//! (`cordon build-snapshot`, hidden) with the engine's spec and the digest
//! of the component it checked on stdin: the child reads the component
//! file itself (refusing it if it is no longer the one the daemon
//! checked), builds the snapshot exactly as the daemon would, writes the
//! compiled artifact to a file in the cache directory and exits; the daemon maps the file (copy-on-write from the page
//! cache), so its own memory grows by what scans touch, not by the build.
//! The child reports failures as the daemon's own load errors would read;
//! the engine's log lines during `init` are passed on to the daemon's log.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::compiler::{CompileBounds, Compiler};
use super::spec::{EngineLimits, EngineSpec};
use super::{LoadError, Runtime};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "build-snapshot";

/// What the daemon asks of the child: one JSON line on stdin.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    name: String,
    component: PathBuf,
    definitions: Option<PathBuf>,
    settings: BTreeMap<String, String>,
    limits: EngineLimits,
    cache_dir: PathBuf,
    out: PathBuf,
    /// The component's function cache file, if one is kept.
    functions: Option<PathBuf>,
    /// The SHA-256 of the component the daemon checked, in hex.
    component_sha256: String,
}

/// What the child answers: one JSON line on stdout.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// The artifact is at `out`; the snapshot had this many bytes, and the
    /// child's resident memory peaked at this.
    Built {
        image_bytes: usize,
        peak_rss_bytes: Option<u64>,
    },
    /// `init` refused or failed, or the snapshot could not be built.
    Init { reason: String },
    /// The component is not a usable engine.
    Invalid { reason: String },
}

/// Lines of the child's log passed on, and bytes of each.
const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE_BYTES: usize = 1024;
/// Bytes of the child's log read as lines.
const MAX_LOG_BYTES: u64 = 1 << 20;

/// Builds the snapshot of `spec`, whose component file has `digest`, in a
/// child process running `exe`, as [`super::generation`] would in process,
/// and compiles it into a new file at `out`. Returns the snapshot's size
/// and the child's peak resident memory.
pub(super) fn build_in_child(
    exe: &Path,
    rt: &Runtime,
    spec: &EngineSpec,
    digest: &[u8; 32],
    out: &Path,
    functions: Option<PathBuf>,
) -> Result<(usize, Option<u64>), LoadError> {
    let init_error = |reason: String| LoadError::Init {
        engine: spec.name.clone(),
        path: spec.component.clone(),
        reason,
    };
    let request = Request {
        name: spec.name.clone(),
        component: spec.component.clone(),
        definitions: spec.definitions.clone(),
        settings: spec.settings.clone(),
        limits: spec.limits.clone(),
        cache_dir: rt.cache_dir.clone(),
        out: out.to_path_buf(),
        functions,
        component_sha256: hex::encode(digest),
    };
    let mut head = serde_json::to_vec(&request)
        .map_err(|e| init_error(format!("cannot encode the build request: {e}")))?;
    head.push(b'\n');
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .env("CORDON_LOG", child_log_level())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| init_error(format!("cannot start {} {SUBCOMMAND}: {e}", exe.display())))?;
    let started = Instant::now();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout.take(1 << 20)).read_line(&mut line);
        line
    });
    let stderr = child.stderr.take().expect("piped stderr");
    let engine = spec.name.clone();
    let logger = std::thread::spawn(move || {
        // At most MAX_LOG_BYTES are read as lines; the rest is drained, so
        // the child never blocks on a full pipe and never costs more here.
        let mut stderr = stderr;
        let mut lines = std::io::BufReader::new((&mut stderr).take(MAX_LOG_BYTES)).split(b'\n');
        let mut passed = 0;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if passed < MAX_LOG_LINES {
                relay(&engine, &String::from_utf8_lossy(&line));
            }
            passed += 1;
        }
        drop(lines);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        if passed > MAX_LOG_LINES {
            tracing::warn!(
                target: "cordon::engine",
                engine = %engine,
                "snapshot build: {} more log lines dropped",
                passed - MAX_LOG_LINES
            );
        }
    });
    // The child bounds `init` and each compile itself; this is the
    // backstop for a child that hangs anyway.
    let patience = spec.limits.init_timeout
        + spec.limits.compile_timeout.saturating_mul(2)
        + Duration::from_secs(10);
    // The child reads the component itself: holding it here for the
    // build was its size (14 MB for clamsig) on this process's peak.
    let _ = stdin.write_all(&head);
    drop(stdin);
    let status = wait_for(&mut child, started, patience, &init_error);
    let line = reader.join().unwrap_or_default();
    let _ = logger.join();
    let fail = |e: LoadError| {
        let _ = std::fs::remove_file(out);
        Err(e)
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match serde_json::from_str::<Reply>(line.trim()) {
        Ok(Reply::Built {
            image_bytes,
            peak_rss_bytes,
        }) if status.success() => Ok((image_bytes, peak_rss_bytes)),
        Ok(Reply::Init { reason }) => fail(init_error(reason)),
        Ok(Reply::Invalid { reason }) => fail(LoadError::Invalid {
            engine: spec.name.clone(),
            path: spec.component.clone(),
            reason,
        }),
        _ => fail(init_error(format!(
            "the snapshot build ended without a result ({status})"
        ))),
    }
}

/// Waits for the build child to end, killing it once `patience` has
/// passed since `started`.
fn wait_for(
    child: &mut std::process::Child,
    started: Instant,
    patience: Duration,
    init_error: &dyn Fn(String) -> LoadError,
) -> Result<std::process::ExitStatus, LoadError> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() >= patience => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(init_error(format!(
                    "the snapshot build did not finish within {} ms (init_timeout_ms and twice compile_timeout_ms); killed",
                    patience.as_millis()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(init_error(format!("cannot wait for the build: {e}"))),
        }
    }
}

/// The child logs at `debug` when the daemon does (its phase timings),
/// else at `info` (the engine's own lines from `init`).
fn child_log_level() -> &'static str {
    if tracing::enabled!(target: "cordon::engine", tracing::Level::DEBUG) {
        "info,cordon=debug"
    } else {
        "info"
    }
}

/// Passes one line of the child's log on at its level: the child logs as
/// `TIME LEVEL TARGET: MESSAGE FIELDS` (what `cordon` prints); anything else
/// is passed on whole at `info`.
fn relay(engine: &str, line: &str) {
    let line = crate::text::escape(line.trim_end(), MAX_LOG_LINE_BYTES);
    let word = |s: &str| -> Option<(String, String)> {
        let (w, rest) = s.trim_start().split_once(char::is_whitespace)?;
        Some((w.to_string(), rest.trim_start().to_string()))
    };
    let parsed = word(&line)
        .and_then(|(_time, rest)| word(&rest))
        .map(|(level, rest)| {
            let message = rest.split_once(": ").map_or(rest.as_str(), |(_, m)| m);
            (level, message.to_string())
        });
    match parsed {
        Some((level, m)) if level == "ERROR" => {
            tracing::error!(target: "cordon::engine", "snapshot build ({engine}): {m}")
        }
        Some((level, m)) if level == "WARN" => {
            tracing::warn!(target: "cordon::engine", "snapshot build ({engine}): {m}")
        }
        Some((level, m)) if level == "INFO" => {
            tracing::info!(target: "cordon::engine", "snapshot build ({engine}): {m}")
        }
        Some((level, m)) if level == "DEBUG" || level == "TRACE" => {
            tracing::debug!(target: "cordon::engine", "snapshot build ({engine}): {m}")
        }
        _ => tracing::info!(target: "cordon::engine", "snapshot build ({engine}): {line}"),
    }
}

/// The child's side: reads the request from stdin and the component from
/// its file, builds and compiles the snapshot into `out`, and answers one
/// JSON line on stdout. Exit code 0 when built, 2 otherwise.
pub fn child_main() -> i32 {
    let reply = build().unwrap_or_else(|e| e);
    let ok = matches!(reply, Reply::Built { .. });
    let line = serde_json::to_string(&reply).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if ok { 0 } else { 2 }
}

fn build() -> Result<Reply, Reply> {
    let init = |reason: String| Reply::Init { reason };
    let mut stdin = std::io::stdin().lock();
    let mut head = String::new();
    stdin
        .read_line(&mut head)
        .map_err(|e| init(format!("cannot read the build request: {e}")))?;
    let req: Request =
        serde_json::from_str(&head).map_err(|e| init(format!("bad build request: {e}")))?;
    let spec = EngineSpec {
        name: req.name,
        component: req.component,
        enabled: true,
        definitions: req.definitions,
        settings: req.settings,
        // The parent checked the imports against the grants; `init` is
        // given no capability.
        capabilities: Vec::new(),
        limits: req.limits,
        self_test: Vec::new(),
        cache: false,
    };
    // The component the daemon checked, or none.
    let digest: [u8; 32] = hex::decode(&req.component_sha256)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| init(format!("bad component digest {:?}", req.component_sha256)))?;
    let bytes = super::component_file::read_checked(&spec, &digest).map_err(|e| match e {
        LoadError::Invalid { reason, .. } => Reply::Invalid { reason },
        other => init(other.to_string()),
    })?;
    // One instance for `init`; nothing is kept (the daemon keeps the
    // artifact), and compiles go to the compiler child as in the daemon.
    let rt = Runtime::with_pool(1, spec.limits.memory_bytes, req.cache_dir, 0)
        .map_err(|e| init(e.to_string()))?;
    let label = spec.component.display().to_string();
    let bounds = CompileBounds {
        timeout: spec.limits.compile_timeout,
        max_memory_bytes: spec.limits.compile_memory_bytes,
    };
    let snapshot =
        super::preinit::build_snapshot(&rt, &spec, bytes, &label, bounds).map_err(|e| match e {
            LoadError::Invalid { reason, .. } => Reply::Invalid { reason },
            LoadError::Init { reason, .. } => Reply::Init { reason },
            other => Reply::Init {
                reason: other.to_string(),
            },
        })?;
    let image_bytes = snapshot.len();
    let compile_started = Instant::now();
    // The snapshot is compiled here, not in a compiler child of its own:
    // its code is the component's, which compiled within the bounds
    // already, and its data is what the engine's memory limit let `init`
    // build; so this process needs no other bound than the address space
    // for the compile, set once the instance pool is released. (Handing
    // the snapshot to a child cost a copy of the whole image through a
    // pipe, and a process start.)
    drop(rt);
    // The compile's engine has no instance pool (as in a compiler child).
    let engine = wasmtime::Engine::new(&super::wasmtime_config()).map_err(|e| Reply::Invalid {
        reason: format!("cannot create the wasmtime engine: {e:#}"),
    })?;
    if let Some(in_use) = crate::process::address_space_bytes(crate::process::Pid::Current) {
        limit_address_space(in_use.saturating_add(bounds.max_memory_bytes));
    }
    Compiler::InProcess
        .compile_to(
            &engine,
            &snapshot,
            &req.out,
            &label,
            bounds,
            req.functions.as_deref(),
        )
        .map_err(|reason| Reply::Invalid {
            reason: format!("pre-initialised snapshot: {reason}"),
        })?;
    tracing::debug!(
        compile_ms = compile_started.elapsed().as_millis(),
        "snapshot compiled"
    );
    Ok(Reply::Built {
        image_bytes,
        peak_rss_bytes: crate::process::peak_rss_bytes(crate::process::Pid::Current),
    })
}

/// Caps this process's address space at `bytes` (the build child, for
/// its compile); logged and skipped if the system refuses.
#[allow(unsafe_code)]
fn limit_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: one `setrlimit` system call on this process with a value
    // built above; it touches no memory of ours.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        tracing::warn!(
            "cannot limit the snapshot compile's address space: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether snapshots are built in a child: when there is a `cordon`
/// executable to run (see [`Compiler::detect`]).
pub(super) fn child_exe(compiler: &Compiler) -> Option<&Path> {
    match compiler {
        Compiler::Child(exe) => Some(exe),
        Compiler::InProcess => None,
    }
}
