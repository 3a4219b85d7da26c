//! The milter protocol's "no reply" steps, which miltr-server lacks.
//!
//! By default an MTA waits for the milter's reply to every command: each
//! header, each body chunk, connect, HELO, MAIL, RCPT. cordon decides only
//! at end-of-message, so every one of those replies is "continue", and
//! every one costs a round trip: a wake-up of the MTA's process and of
//! cordon's, two system calls each side, per header. Milter protocol 6
//! lets the milter ask the MTA not to wait (`SMFIP_NR_HDR`, `NR_BODY`,
//! ...), and Postfix honours it. miltr-server 0.2 negotiates whatever the
//! milter answers but still writes a reply to every command, which the
//! MTA would then read as the answer to the *next* command. So the
//! session counts the replies it told the MTA not to expect
//! ([`Quiet::expect_unsent`]), and the stream under miltr-server drops
//! exactly that many whole frames before writing the next one through.
//! Replies are written in command order and each is written in full
//! before the next command is read, so the next frame to start after a
//! callback returns is that callback's reply.
//!
//! The same stream holds end-of-message's modification frames (headers
//! added, recipients changed: miltr-server flushes after each) until the
//! final answer, and writes them together: one write per message instead
//! of one per header.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Replies to drop, shared by the session (which counts them) and the
/// stream (which drops them).
#[derive(Debug, Clone, Default)]
pub struct Quiet(Arc<AtomicU32>);

impl Quiet {
    /// The reply the server is about to write must not reach the MTA.
    pub fn expect_unsent(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one pending drop, if any.
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Where the writer is in the frames it writes (`u32` big-endian length,
/// then that many bytes, the first of which is the reply's code).
#[derive(Debug, Default)]
struct Frame {
    /// Inside a frame (its length header may be incomplete).
    open: bool,
    /// This frame is dropped.
    dropping: bool,
    header: [u8; 4],
    header_seen: usize,
    /// Payload bytes still to come, once the header is complete.
    remaining: usize,
    /// The code of the last frame written through, once its first
    /// payload byte was seen.
    code: Option<u8>,
}

/// Reply codes that modify the message (end-of-message sends them before
/// its final answer, one frame each).
const MODIFICATIONS: &[u8] = b"+-2ehimqb";

/// Written bytes held before they go out, at most (past it they are
/// written without waiting for the final answer).
const MAX_HELD_BYTES: usize = 256 * 1024;

/// A stream that drops the replies counted in its [`Quiet`], and writes
/// end-of-message's modifications and its final answer in one write
/// instead of one per frame (miltr-server flushes after every frame).
#[derive(Debug)]
pub struct QuietStream<S> {
    inner: S,
    quiet: Quiet,
    frame: Frame,
    held: Vec<u8>,
}

impl<S> QuietStream<S> {
    /// Wraps `inner`; replies counted in `quiet` are not written.
    pub fn new(inner: S, quiet: Quiet) -> Self {
        Self {
            inner,
            quiet,
            frame: Frame::default(),
            held: Vec::new(),
        }
    }

    /// Takes `buf` through the frame tracker: bytes of dropped frames are
    /// skipped, the rest held.
    fn take_in(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            let f = &mut self.frame;
            if !f.open {
                f.open = true;
                f.dropping = self.quiet.take();
            }
            let n = if f.header_seen < 4 {
                let n = buf.len().min(4 - f.header_seen);
                f.header[f.header_seen..f.header_seen + n].copy_from_slice(&buf[..n]);
                f.header_seen += n;
                if f.header_seen == 4 {
                    f.remaining = u32::from_be_bytes(f.header) as usize;
                }
                n
            } else {
                let n = buf.len().min(f.remaining);
                if !f.dropping && n > 0 && f.remaining == u32::from_be_bytes(f.header) as usize {
                    f.code = Some(buf[0]);
                }
                f.remaining -= n;
                n
            };
            if !f.dropping {
                self.held.extend_from_slice(&buf[..n]);
            }
            if f.header_seen == 4 && f.remaining == 0 {
                let code = f.code;
                self.frame = Frame {
                    code,
                    ..Frame::default()
                };
            }
            buf = &buf[n..];
        }
    }

    /// Whether what is held may wait for more: it ends with a whole
    /// modification frame (the final answer follows) and is not large.
    fn may_wait(&self) -> bool {
        !self.frame.open
            && self.held.len() <= MAX_HELD_BYTES
            && self.frame.code.is_some_and(|c| MODIFICATIONS.contains(&c))
    }
}

impl<S: AsyncWrite + Unpin> QuietStream<S> {
    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.held.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for QuietStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for QuietStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.held.len() > MAX_HELD_BYTES {
            std::task::ready!(self.poll_drain(cx))?;
        }
        self.take_in(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.may_wait() {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    /// Counts the writes that reach it.
    struct Counting {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn modifications_go_out_with_the_final_answer_in_one_write() {
        let mut w = QuietStream::new(Counting { writes: Vec::new() }, Quiet::default());
        // A reply to a command goes out at its flush.
        w.write_all(&frame(b"c")).await.unwrap();
        w.flush().await.unwrap();
        // End-of-message: two headers added, then the answer.
        for f in [frame(b"hA\0x\0"), frame(b"hB\0y\0"), frame(b"c")] {
            w.write_all(&f).await.unwrap();
            w.flush().await.unwrap();
        }
        let writes = &w.inner.writes;
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[0], frame(b"c"));
        assert_eq!(
            writes[1],
            [frame(b"hA\0x\0"), frame(b"hB\0y\0"), frame(b"c")].concat()
        );
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn counted_frames_are_dropped_whole_whatever_the_write_sizes() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let quiet = Quiet::default();
        let mut w = QuietStream::new(a, quiet.clone());
        let stream = [
            frame(b"c"),
            frame(b"hX-Header\0value\0"),
            frame(b""),
            frame(b"c"),
            frame(b"y550 no"),
        ]
        .concat();
        // Frames 1 and 3 (the first and the empty one) are dropped; the
        // bytes arrive in awkward pieces (split inside length headers).
        quiet.expect_unsent();
        let mut sent = 0;
        for (i, size) in [1usize, 2, 3, 7, 1, 1, 5].iter().cycle().enumerate() {
            if sent == stream.len() {
                break;
            }
            // The empty frame is the third: counted just before it starts.
            if i == 4 {
                quiet.expect_unsent();
            }
            let end = (sent + size).min(stream.len());
            w.write_all(&stream[sent..end]).await.unwrap();
            w.flush().await.unwrap();
            sent = end;
        }
        w.shutdown().await.unwrap();
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        let want = [frame(b"hX-Header\0value\0"), frame(b"c"), frame(b"y550 no")].concat();
        assert_eq!(got, want);
    }
}
