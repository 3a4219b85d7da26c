//! The CLI's side of the control socket: send one [`Request`], read one
//! typed reply.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::protocol::Request;

/// Largest reply read.
const MAX_REPLY_BYTES: u64 = 64 << 20;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached.
    #[error("cannot reach cordon's control socket {} (is `cordon serve` running?): {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The conversation broke off.
    #[error("control socket {}: {source}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The reply was not what the request expects.
    #[error("control socket {}: unexpected reply ({reason}): {reply}", socket.display())]
    BadReply {
        /// The socket.
        socket: PathBuf,
        /// What did not fit.
        reason: String,
        /// The reply, escaped and cut short.
        reply: String,
    },
    /// The daemon refused or could not carry out the request.
    #[error("{0}")]
    Refused(String),
}

/// Sends `request` to the control socket at `socket` and reads its reply
/// as `T`.
pub async fn request<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
) -> Result<T, ControlError> {
    let value = send_line(socket, &request.to_string()).await?;
    serde_json::from_value(value.clone()).map_err(|e| ControlError::BadReply {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
        reply: crate::text::escape(&value.to_string(), 512),
    })
}

/// Sends `request` and then `body` (what the request says follows it, as
/// a `learn` message) and reads the reply as `T`.
pub async fn request_with_body<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    body: &[u8],
) -> Result<T, ControlError> {
    let value = send(socket, &request.to_string(), body).await?;
    serde_json::from_value(value.clone()).map_err(|e| ControlError::BadReply {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
        reply: crate::text::escape(&value.to_string(), 512),
    })
}

/// Sends one raw command line and returns the JSON reply; an `error`
/// reply is [`ControlError::Refused`].
pub async fn send_line(socket: &Path, line: &str) -> Result<serde_json::Value, ControlError> {
    send(socket, line, &[]).await
}

/// Sends a line and `body`, and reads the JSON reply.
async fn send(socket: &Path, line: &str, body: &[u8]) -> Result<serde_json::Value, ControlError> {
    let io = |source| ControlError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io)?;
    s.write_all(body).await.map_err(io)?;
    let mut answer = String::new();
    s.take(MAX_REPLY_BYTES)
        .read_to_string(&mut answer)
        .await
        .map_err(io)?;
    let v: serde_json::Value =
        serde_json::from_str(answer.trim()).map_err(|e| ControlError::BadReply {
            socket: socket.to_path_buf(),
            reason: format!("not JSON: {e}"),
            reply: crate::text::escape(&answer, 512),
        })?;
    if let Some(e) = v.get("error").and_then(serde_json::Value::as_str) {
        return Err(ControlError::Refused(crate::text::escape(e, 4096)));
    }
    Ok(v)
}
