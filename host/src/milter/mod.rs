//! Milter sessions on bound listeners (see [`crate::listen`]): a bound on
//! sessions, graceful shutdown.
//!
//! The protocol itself is miltr-server's; [`session`] is cordon's side of
//! it. Shutdown is a future passed in (SIGTERM in the binary, a channel in
//! tests): when it resolves, listeners stop accepting, idle sessions are
//! closed, sessions in the middle of a message finish it, and whatever is
//! still running after the grace period is dropped (the MTA then applies
//! its `milter_default_action`, tempfail in the documented setup, so no
//! mail is lost).
//!
//! A client cannot hold a session for free: each session is closed when
//! its MTA sends no complete command for `command_timeout_s` (idle, or one
//! byte at a time) and when it reaches `session_timeout_s`. When every
//! session is taken, a new connection closes the session that has waited
//! longest on its MTA (if it has waited at least [`EVICT_IDLE_AFTER`]), so
//! idle connections cannot lock out clients that make progress.

mod quiet;
pub mod session;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use miltr_server::Server;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::listen::{ListenAddr, Listener, Stream};
use crate::registry::Registry;
pub use session::{Pulse, Session};

/// How long a session must have waited on its MTA before a new connection
/// may take its place when all sessions are taken.
pub const EVICT_IDLE_AFTER: Duration = Duration::from_secs(2);

/// The sessions alive, for picking one to close.
#[derive(Default)]
struct Pulses {
    next: u64,
    alive: std::collections::HashMap<u64, Arc<Pulse>>,
}

impl Pulses {
    fn add(&mut self, p: Arc<Pulse>) -> u64 {
        self.next += 1;
        self.alive.insert(self.next, p);
        self.next
    }

    /// Closes the session that has waited longest on its MTA, if it has
    /// waited at least [`EVICT_IDLE_AFTER`]; true if one was told to go.
    fn evict_idlest(&self) -> bool {
        let idlest = self
            .alive
            .values()
            .map(|p| (p.idle(), p))
            .max_by_key(|(idle, _)| *idle);
        match idlest {
            Some((idle, p)) if idle >= EVICT_IDLE_AFTER => {
                tracing::warn!(
                    idle_ms = idle.as_millis() as u64,
                    "all milter sessions taken: closing the idlest one for a new connection"
                );
                p.evict.notify_one();
                true
            }
            _ => false,
        }
    }
}

/// The milter listeners and their bounds, fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: Vec<ListenAddr>,
    /// Unix socket permissions.
    pub socket_mode: u32,
    /// Sessions at once; further connections wait in the listen queue.
    pub max_sessions: u32,
    /// After shutdown begins, how long sessions may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            socket_mode: 0o660,
            max_sessions: 64,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves milter sessions on `listeners` until `shutdown` resolves, then
/// drains as the module doc says. Returns the number of sessions served.
pub async fn serve(
    listeners: Vec<Listener>,
    registry: Arc<Registry>,
    limits: &Settings,
    shutdown: impl Future<Output = ()>,
) -> u64 {
    let sessions = Arc::new(Semaphore::new(limits.max_sessions as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pulses: Arc<std::sync::Mutex<Pulses>> = Arc::default();
    let mut paths = Vec::new();
    let mut accept_loops = tokio::task::JoinSet::new();
    for l in listeners {
        if let Listener::Unix(_, p) = &l {
            paths.push(p.clone());
        }
        accept_loops.spawn(accept_loop(
            l,
            registry.clone(),
            sessions.clone(),
            stop_rx.clone(),
            served.clone(),
            pulses.clone(),
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: no new sessions, finishing messages in flight");
    stop_tx.send_replace(true);
    while accept_loops.join_next().await.is_some() {}
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    let all = limits.max_sessions;
    match tokio::time::timeout(limits.shutdown_timeout, sessions.acquire_many(all)).await {
        Ok(_) => tracing::info!("all sessions finished"),
        Err(_) => tracing::warn!(
            "{} session(s) still open after {:?}; closing them (the MTA defers their mail)",
            all as usize - sessions.available_permits(),
            limits.shutdown_timeout
        ),
    }
    served.load(std::sync::atomic::Ordering::Relaxed)
}

async fn accept_loop(
    listener: Listener,
    registry: Arc<Registry>,
    sessions: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    served: Arc<std::sync::atomic::AtomicU64>,
    pulses: Arc<std::sync::Mutex<Pulses>>,
) {
    while let Some((stream, peer)) = listener.next(&mut stop).await {
        let permit = match sessions.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // All taken: make room by closing the idlest session, else
                // wait for one to end, as a listen queue would.
                pulses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .evict_idlest();
                tokio::select! {
                    p = sessions.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let registry = registry.clone();
        let stop = stop.clone();
        let pulse = Arc::new(Pulse::default());
        let id = pulses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(pulse.clone());
        let pulses = pulses.clone();
        tokio::spawn(async move {
            match stream {
                Stream::Unix(s) => run_session_with(s, &peer, registry, stop, pulse).await,
                Stream::Tcp(s) => run_session_with(s, &peer, registry, stop, pulse).await,
            }
            pulses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .alive
                .remove(&id);
            drop(permit);
        });
    }
}

/// Runs one session over `stream` until the MTA ends it, shutdown comes
/// while no message is in progress, or a session limit closes it.
pub async fn run_session<S>(
    stream: S,
    peer: &str,
    registry: Arc<Registry>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    run_session_with(stream, peer, registry, stop, Arc::default()).await;
}

async fn run_session_with<S>(
    stream: S,
    peer: &str,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
    pulse: Arc<Pulse>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = registry.live().session.clone();
    let (busy_tx, mut busy_rx) = watch::channel(false);
    pulse.beat();
    let mut session = Session::new(registry, busy_tx, pulse.clone());
    let mut stream = quiet::QuietStream::new(stream, session.quiet()).compat();
    let mut server = Server::default_postfix(&mut session);
    let conn = server.handle_connection(&mut stream);
    let idle_after_stop = async {
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        let _ = busy_rx.wait_for(|b| !*b).await;
    };
    // Wakes when the MTA has sent no complete command for the command
    // timeout (time spent scanning does not count).
    let stalled = async {
        loop {
            let idle = pulse.idle();
            if idle >= limits.command_timeout {
                return idle;
            }
            tokio::time::sleep(limits.command_timeout - idle).await;
        }
    };
    tokio::select! {
        r = conn => match r {
            Ok(()) => tracing::debug!(peer, "milter session ended"),
            Err(e) => tracing::warn!(peer, "milter session ended with an error: {}", crate::text::escape(&e.to_string(), 512)),
        },
        _ = idle_after_stop => tracing::debug!(peer, "idle milter session closed for shutdown"),
        idle = stalled => tracing::warn!(
            peer,
            "milter session closed: no complete command for {} s (milter.command_timeout_s)",
            idle.as_secs()
        ),
        _ = tokio::time::sleep(limits.session_timeout) => tracing::warn!(
            peer,
            "milter session closed: open for {} s (milter.session_timeout_s)",
            limits.session_timeout.as_secs()
        ),
        _ = pulse.evict.notified() => tracing::debug!(peer, "idle milter session closed to make room"),
    }
}

/// Tells systemd (`Type=notify`) that the daemon is ready, when it runs
/// under systemd; a no-op otherwise.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = PathBuf::from(path);
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot notify systemd: {e}");
            return;
        }
    };
    let sent = if let Some(abstract_name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", &path)
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {}: {e}", path.display());
    }
}
