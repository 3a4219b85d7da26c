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

/// Messages up to this size are decoded on the calling thread when its
/// stack is known to be large enough ([`declare_thread_stack`]): a small
/// message decodes in microseconds, in well under a millisecond at this
/// size, whatever its structure.
const MAX_IN_PLACE_BYTES: usize = 64 * 1024;

/// Stack the calling thread may already be using when it decodes in place.
const STACK_IN_USE_MARGIN: usize = 4 << 20;

std::thread_local! {
    /// The stack size this thread was started with, when its creator
    /// declared it; 0 (never decode in place) otherwise.
    static THREAD_STACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Declares that the calling thread was started with a stack of `bytes`
/// (a runtime's `on_thread_start`), so that small messages may be decoded
/// on it instead of on a decoder thread.
pub fn declare_thread_stack(bytes: usize) {
    THREAD_STACK.set(bytes);
}

/// Stack of the async runtime's workers (address space, touched only if
/// used): enough for the messages small enough to be decoded in place (up
/// to 64 KiB).
pub const WORKER_STACK_BYTES: usize = 32 << 20;

/// A multi-threaded async runtime as `cordon` runs: its workers have
/// [`WORKER_STACK_BYTES`] of stack and declare it, so that small messages
/// are decoded on the worker that scans them instead of being handed to a
/// decoder thread and back. The benchmarks build theirs here too, so that
/// they measure what the daemon does.
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .on_thread_start(|| declare_thread_stack(WORKER_STACK_BYTES));
    b
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
    if raw.len() <= MAX_IN_PLACE_BYTES
        && THREAD_STACK.get() >= stack_bytes_for(raw.len()) + STACK_IN_USE_MARGIN
    {
        // Small enough to decode here, on a thread whose stack is known
        // to hold it: handing it to a decoder thread and back cost more
        // than decoding it (`cargo bench --bench scan`).
        #[cfg(test)]
        IN_PLACE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decompose(&raw, limits)))
            .unwrap_or_else(|_| Decomposed {
                parts: Vec::new(),
                exceeded: Some("MIME decomposition panicked".to_string()),
            });
    }
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

/// Decodings done in place, for the tests.
#[cfg(test)]
static IN_PLACE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn mail(body_bytes: usize) -> Arc<[u8]> {
        let body = "x".repeat(body_bytes);
        format!(
            "Subject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n\
             Content-Type: application/octet-stream; name=a.bin\r\n\r\n{body}\r\n--b--\r\n"
        )
        .into_bytes()
        .into()
    }

    /// (parts as (type, file name, size), in place or not) of `raw`
    /// decoded on a thread that declared `declared` bytes of stack.
    fn on_thread(
        raw: Arc<[u8]>,
        declared: Option<usize>,
    ) -> (Vec<(String, Option<String>, usize)>, bool) {
        std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(move || {
                if let Some(d) = declared {
                    declare_thread_stack(d);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let before = IN_PLACE.load(Ordering::Relaxed);
                let d = rt.block_on(decompose_bounded(raw, &MimeLimits::default()));
                let in_place = IN_PLACE.load(Ordering::Relaxed) > before;
                let parts = d
                    .parts
                    .iter()
                    .map(|p| {
                        (
                            p.info.content_type.clone(),
                            p.info.file_name.clone(),
                            p.content.len(),
                        )
                    })
                    .collect();
                (parts, in_place)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn small_messages_decode_in_place_only_on_a_declared_stack_and_the_same() {
        let small = mail(1000);
        let (pooled, in_place) = on_thread(small.clone(), None);
        assert!(!in_place, "no stack declared: the decoder threads");
        assert_eq!(pooled.len(), 2, "{pooled:?}");
        let (here, in_place) = on_thread(small.clone(), Some(32 << 20));
        assert!(
            in_place,
            "a declared 32 MiB stack decodes a small message in place"
        );
        assert_eq!(here, pooled);
        // A declared stack too small for the message's worst case, or a
        // message over the in-place size: the decoder threads.
        assert!(!on_thread(small, Some(8 << 20)).1);
        assert!(!on_thread(mail(MAX_IN_PLACE_BYTES), Some(32 << 20)).1);
    }
}
