//! What [`serve`](super::serve) accepts from, and how a listener's connections can move.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tokio::io::{AsyncRead, AsyncWrite};

/// A listener [`serve`](super::serve) can accept from: tokio's TCP and Unix listeners.
///
/// The three provided methods let [`serve`](super::serve) hand open connections to the next process; a
/// listener that keeps their defaults (e.g. one whose connections are TLS streams, which
/// cannot move) has its connections closed at a restart instead.
pub trait Accept: Send + 'static {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    ///
    /// # Cancel safety
    /// Must be cancel safe: `serve` drops a pending accept when a handover begins.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// Names this listener the same way in the old and the new process (it is the same
    /// socket), so the successor's `serve` finds the connections accepted here.
    fn identity(&self) -> Option<String> {
        None
    }

    /// The socket of an accepted connection, if it can be handed over as it is.
    fn socket(_io: &Self::Io) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Rebuilds a connection handed over by the previous process.
    fn adopt(_fd: OwnedFd) -> io::Result<Self::Io> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this listener's connections cannot be handed over",
        ))
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn identity(&self) -> Option<String> {
        self.local_addr().ok().map(|a| format!("tcp:{a}"))
    }

    fn socket(io: &Self::Io) -> Option<BorrowedFd<'_>> {
        Some(io.as_fd())
    }

    fn adopt(fd: OwnedFd) -> io::Result<Self::Io> {
        let stream = std::net::TcpStream::from(fd);
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }

    fn identity(&self) -> Option<String> {
        let addr = self.local_addr().ok()?;
        addr.as_pathname().map(|p| format!("unix:{}", p.display()))
    }

    fn socket(io: &Self::Io) -> Option<BorrowedFd<'_>> {
        Some(io.as_fd())
    }

    fn adopt(fd: OwnedFd) -> io::Result<Self::Io> {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    }
}
