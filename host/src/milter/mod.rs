//! The milter daemon: listeners on unix and TCP sockets, a bound on
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

pub mod session;

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use miltr_server::Server;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::config::ListenAddr;
pub use session::{Live, Pulse, Session, SessionLimits, Shared};

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

/// A bound socket.
pub enum Listener {
    /// A unix socket and the path to remove on shutdown.
    Unix(UnixListener, PathBuf),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `addr`. A unix socket path left over by a process that is gone
    /// is replaced; one a live process answers on is an error, as is any
    /// other file at that path. `mode` is applied to unix sockets.
    pub async fn bind(addr: &ListenAddr, mode: u32) -> anyhow::Result<Self> {
        match addr {
            ListenAddr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        anyhow::bail!(
                            "cannot listen on {addr}: {} exists and is not a socket",
                            path.display()
                        );
                    }
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        anyhow::bail!(
                            "cannot listen on {addr}: another process is listening there"
                        );
                    }
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove stale socket {}", path.display())
                    })?;
                }
                let l =
                    UnixListener::bind(path).with_context(|| format!("cannot listen on {addr}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot set the mode of {}", path.display()))?;
                Ok(Listener::Unix(l, path.clone()))
            }
            ListenAddr::Tcp(sa) => Ok(Listener::Tcp(
                TcpListener::bind(sa)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            )),
        }
    }

    /// Where it listens (with the real port for port 0).
    pub fn local_addr(&self) -> ListenAddr {
        match self {
            Listener::Unix(_, p) => ListenAddr::Unix(p.clone()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => ListenAddr::Tcp(a),
                Err(_) => ListenAddr::Tcp(([0, 0, 0, 0], 0).into()),
            },
        }
    }
}

/// Limits of the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions at once; further connections wait in the listen queue.
    pub max_sessions: u32,
    /// After shutdown begins, how long sessions may take to finish.
    pub shutdown_timeout: Duration,
}

/// Serves milter sessions on `listeners` until `shutdown` resolves, then
/// drains as the module doc says. Returns the number of sessions served.
pub async fn serve(
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    limits: Limits,
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
            shared.clone(),
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
    shared: Arc<Shared>,
    sessions: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    served: Arc<std::sync::atomic::AtomicU64>,
    pulses: Arc<std::sync::Mutex<Pulses>>,
) {
    let name = listener.local_addr().to_string();
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: say so, back off a
                // little so the loop does not spin, keep serving.
                tracing::warn!("accept on {name} failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
        };
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
        let shared = shared.clone();
        let stop = stop.clone();
        let pulse = Arc::new(Pulse::default());
        let id = pulses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(pulse.clone());
        let pulses = pulses.clone();
        tokio::spawn(async move {
            match stream {
                Stream::Unix(s) => run_session_with(s, &peer, shared, stop, pulse).await,
                Stream::Tcp(s) => run_session_with(s, &peer, shared, stop, pulse).await,
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

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(l: &Listener) -> std::io::Result<(Stream, String)> {
    match l {
        Listener::Unix(l, p) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), format!("unix:{}", p.display())))
        }
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Milter is many small request/response packets: without this,
            // Nagle and delayed ACKs stall every exchange.
            s.set_nodelay(true)?;
            Ok((Stream::Tcp(s), peer.to_string()))
        }
    }
}

/// Runs one session over `stream` until the MTA ends it, shutdown comes
/// while no message is in progress, or a session limit closes it.
pub async fn run_session<S>(stream: S, peer: &str, shared: Arc<Shared>, stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    run_session_with(stream, peer, shared, stop, Arc::default()).await;
}

async fn run_session_with<S>(
    stream: S,
    peer: &str,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    pulse: Arc<Pulse>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = shared.live().session.clone();
    let (busy_tx, mut busy_rx) = watch::channel(false);
    pulse.beat();
    let mut session = Session::new(shared, busy_tx, pulse.clone());
    let mut server = Server::default_postfix(&mut session);
    let mut stream = stream.compat();
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
