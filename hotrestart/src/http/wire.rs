//! The IO wrapper hyper runs on: a read gate that keeps the next request in the kernel while
//! a connection waits to be handed over, and HTTP/2 detection by the preface.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::activity::Activity;

/// The connection's stream as hyper sees it: bytes handed over (or read ahead to tell HTTP/1
/// from HTTP/2) come first; reads wait at the parking gate; writes are tracked until flushed.
pub(super) struct Wire<I> {
    pub(super) io: I,
    pub(super) prefix: Vec<u8>,
    pub(super) at: usize,
    pub(super) activity: Arc<Activity>,
}

impl<I> Wire<I> {
    /// Puts `bytes` back in front of what is still to be read.
    pub(super) fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut prefix = Vec::with_capacity(bytes.len() + self.prefix.len() - self.at);
        prefix.extend_from_slice(bytes);
        prefix.extend_from_slice(&self.prefix[self.at..]);
        self.prefix = prefix;
        self.at = 0;
    }

    /// Bytes put back and not read yet.
    pub(super) fn pending(&self) -> &[u8] {
        &self.prefix[self.at..]
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Wire<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if this.activity.gate_closed(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Wire<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.activity.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.activity.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) && self.activity.unflushed.load(Ordering::Relaxed)
        {
            self.activity.unflushed.store(false, Ordering::Release);
            self.activity.announce();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes in `head` tell HTTP/2 (its preface) from HTTP/1. Cancel-safe: what
/// was read is in `head`.
pub(super) async fn detect<I: AsyncRead + Unpin>(
    wire: &mut Wire<I>,
    head: &mut Vec<u8>,
) -> io::Result<bool> {
    loop {
        if !H2_PREFACE.starts_with(head) {
            return Ok(false);
        }
        if head.len() == H2_PREFACE.len() {
            return Ok(true);
        }
        let mut buf = [0u8; 24];
        let want = H2_PREFACE.len() - head.len();
        let n = wire.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}
