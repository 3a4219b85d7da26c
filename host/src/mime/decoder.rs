//! Where decomposition runs: on long-lived decoder threads with large
//! stacks (one per core; a message too large for their stacks gets a
//! thread of its own), under a process-wide concurrency limit and a
//! wall-clock bound, so that no message takes more CPU than the machine
//! has, or the stack of an async worker.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Decomposed, MimeLimits, decompose};

/// Stack for [`decompose`] on `len` bytes of mail. The walk's own
/// recursion (one frame per encoded embedded message) stops at
/// `max_depth`; the rest is a reserve in case mail-parser ever takes its
/// recursive path for embedded messages (see `prepare`): each level
/// takes at least 30 bytes of mail and well under 512 bytes of stack. The
/// reserve is address space, touched only if used.
pub fn stack_bytes_for(len: usize) -> usize {
    const BASE: usize = 16 << 20;
    const MAX_RESERVE: usize = 1 << 30;
    BASE + (len / 30).saturating_mul(512).min(MAX_RESERVE)
}

/// Decompositions running at once in this process: one per core, so
/// decoding never takes more CPU than the machine has, whatever the number
/// of sessions.
static DECODERS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(cores())));

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Stack of the long-lived decoder threads: enough for every message of up
/// to about 2.9 MB by [`stack_bytes_for`]; larger messages get a thread of
/// their own with the stack they need.
const POOL_STACK_BYTES: usize = 64 << 20;

type Job = Box<dyn FnOnce() + Send>;

/// One long-lived decoder thread per core: starting a thread with a large
/// stack for every message cost more than decoding a small one.
static POOL: LazyLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = LazyLock::new(|| {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..cores() {
        let rx = rx.clone();
        let started = std::thread::Builder::new()
            .name(format!("cordon-mime-{i}"))
            .stack_size(POOL_STACK_BYTES)
            .spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = started {
            tracing::warn!("cannot start decoder thread {i}: {e}");
        }
    }
    std::sync::Mutex::new(tx)
});

/// Runs `job` on a decoder thread whose stack holds `stack` bytes: a pooled
/// one when it is large enough, else a thread of its own.
fn run_decoder(stack: usize, job: Job) -> Result<(), String> {
    if stack <= POOL_STACK_BYTES {
        let sent = POOL.lock().unwrap_or_else(|p| p.into_inner()).send(job);
        return sent.map_err(|_| "the decoder threads are gone".to_string());
    }
    std::thread::Builder::new()
        .name("cordon-mime-large".into())
        .stack_size(stack)
        .spawn(job)
        .map(drop)
        .map_err(|e| format!("cannot start a decoder thread: {e}"))
}

/// [`decompose`] on a decoder thread with a stack sized for `raw`, under
/// the process-wide decoder limit and `limits.max_decode_ms` of wall clock
/// (waiting for a decoder included). Past the time bound the message is
/// reported as exceeded; the decoder finishes on its own and keeps its slot
/// until it does, so abandoned work never piles up.
pub async fn decompose_bounded(raw: Arc<[u8]>, limits: &MimeLimits) -> Decomposed {
    let budget = Duration::from_millis(limits.max_decode_ms);
    let late = || Decomposed {
        parts: Vec::new(),
        exceeded: Some(format!(
            "decoding took longer than {} ms (max_decode_ms)",
            limits.max_decode_ms
        )),
    };
    let work = async {
        let permit = DECODERS
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the decoder pool is closed".to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lim = limits.clone();
        let stack = stack_bytes_for(raw.len());
        run_decoder(
            stack,
            Box::new(move || {
                let d = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decompose(&raw, &lim)
                }));
                drop(permit);
                let _ = tx.send(d);
            }),
        )?;
        match rx.await {
            Ok(Ok(d)) => Ok(d),
            _ => Err("MIME decomposition panicked".to_string()),
        }
    };
    match tokio::time::timeout(budget, work).await {
        Ok(Ok(d)) => d,
        Ok(Err(why)) => Decomposed {
            parts: Vec::new(),
            exceeded: Some(why),
        },
        Err(_) => late(),
    }
}
