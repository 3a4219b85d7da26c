//! Listening sockets in Postfix's notation (`unix:/path`, `inet:port@host`,
//! `inet6:port@host`), bound safely, and the one accept loop every
//! listener uses (milter, control socket, metrics): it stops when told to
//! and backs off after an accept error instead of spinning.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A file that is not a socket is in the way.
    #[error("cannot listen on {addr}: {} exists and is not a socket", path.display())]
    NotASocket {
        /// The address.
        addr: ListenAddr,
        /// The file.
        path: PathBuf,
    },
    /// A live process answers on the socket.
    #[error("cannot listen on {0}: another process is listening there")]
    InUse(ListenAddr),
    /// The system refused.
    #[error("cannot {action} {addr}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The address.
        addr: ListenAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A listening address, in Postfix's notation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// `unix:/path`.
    Unix(PathBuf),
    /// `inet:port@host` or `inet6:port@host` (host may be empty: all).
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) if a.is_ipv4() => write!(f, "inet:{}@{}", a.port(), a.ip()),
            ListenAddr::Tcp(a) => write!(f, "inet6:{}@{}", a.port(), a.ip()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: expected unix:/path, inet:port@host or inet6:port@host")
        })?;
        match kind {
            "unix" | "local" => {
                if rest.is_empty() {
                    return Err(format!("{s:?}: empty socket path"));
                }
                Ok(ListenAddr::Unix(PathBuf::from(rest)))
            }
            "inet" | "inet6" => {
                let (port, host) = rest.split_once('@').unwrap_or((rest, ""));
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
                let v6 = kind == "inet6";
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let ip: std::net::IpAddr = match host {
                    "" if v6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    "localhost" if v6 => std::net::Ipv6Addr::LOCALHOST.into(),
                    "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
                    h => h
                        .parse()
                        .map_err(|_| format!("{s:?}: {h:?} is not an IP address"))?,
                };
                if ip.is_ipv6() != v6 {
                    return Err(format!(
                        "{s:?}: {ip} is not an {} address",
                        if v6 { "IPv6" } else { "IPv4" }
                    ));
                }
                Ok(ListenAddr::Tcp(std::net::SocketAddr::new(ip, port)))
            }
            other => Err(format!(
                "{s:?}: unknown socket type {other:?} (unix, inet, inet6)"
            )),
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
    pub async fn bind(addr: &ListenAddr, mode: u32) -> Result<Self, BindError> {
        let io = |action| {
            let addr = addr.clone();
            move |source| BindError::Io {
                action,
                addr,
                source,
            }
        };
        match addr {
            ListenAddr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(BindError::NotASocket {
                            addr: addr.clone(),
                            path: path.clone(),
                        });
                    }
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(BindError::InUse(addr.clone()));
                    }
                    std::fs::remove_file(path).map_err(io("remove the stale socket of"))?;
                }
                let l = UnixListener::bind(path).map_err(io("listen on"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(io("set the mode of"))?;
                Ok(Listener::Unix(l, path.clone()))
            }
            ListenAddr::Tcp(sa) => Ok(Listener::Tcp(
                TcpListener::bind(sa).await.map_err(io("listen on"))?,
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

/// An accepted connection.
pub enum Stream {
    /// On a unix socket.
    Unix(tokio::net::UnixStream),
    /// On TCP.
    Tcp(tokio::net::TcpStream),
}

impl Listener {
    /// Accepts one connection: the stream and the peer's name for logs.
    pub async fn accept(&self) -> std::io::Result<(Stream, String)> {
        accept(self).await
    }

    /// The next connection, or `None` once `stop` turns true. An accept
    /// error (out of descriptors and the like) is logged and followed by a
    /// short pause, so the loop does not spin, and accepting goes on.
    pub async fn next(&self, stop: &mut watch::Receiver<bool>) -> Option<(Stream, String)> {
        next_ok(&self.local_addr().to_string(), stop, || self.accept()).await
    }
}

/// The pause after a failed accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Calls `accept` until it succeeds or `stop` turns true (then `None`);
/// each failure is logged naming `name` and followed by [`ACCEPT_BACKOFF`].
pub async fn next_ok<T, F, Fut>(
    name: &str,
    stop: &mut watch::Receiver<bool>,
    mut accept: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    loop {
        if *stop.borrow() {
            return None;
        }
        let accepted = tokio::select! {
            a = accept() => a,
            _ = stop.wait_for(|s| *s) => return None,
        };
        match accepted {
            Ok(t) => return Some(t),
            Err(e) => {
                tracing::warn!("accept on {name} failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
        }
    }
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

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_notation_round_trips_and_errors_name_the_input() {
        for s in [
            "unix:/run/cordon.sock",
            "inet:10025@127.0.0.1",
            "inet6:10025@::1",
        ] {
            let a: ListenAddr = s.parse().expect(s);
            assert_eq!(a.to_string(), s);
        }
        let a: ListenAddr = "inet:25@localhost".parse().expect("localhost");
        assert_eq!(a.to_string(), "inet:25@127.0.0.1");
        for bad in [
            "10025",
            "unix:",
            "inet:x@1.2.3.4",
            "inet6:1@127.0.0.1",
            "tcp:1@h",
        ] {
            let e = bad.parse::<ListenAddr>().expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[tokio::test]
    async fn next_returns_none_once_stopped() {
        let l = Listener::bind(&"inet:0@127.0.0.1".parse().expect("addr"), 0o600)
            .await
            .expect("bind");
        let (tx, mut rx) = watch::channel(false);
        tx.send_replace(true);
        assert!(l.next(&mut rx).await.is_none());
    }
}
