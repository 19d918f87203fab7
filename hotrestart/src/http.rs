//! Serving HTTP (axum, or any hyper-compatible tower service) under hotrestart.
//!
//! [`serve`] is `axum::serve` with the lifecycle built in: it pauses accepting while a successor
//! takes over (the sockets stay open, connections queue in the kernel), resumes if the restart
//! rolls back, finishes the requests in flight before the snapshot is taken (so no acknowledged
//! change to `#[persist]` state is lost), and drains on exit.
//!
//! At a hot restart, HTTP/1.1 connections are not closed: each is stopped between two
//! requests (its request in flight finishes here first) and handed to the successor with any
//! bytes already read from it, and the successor's `serve` on the same listener goes on serving
//! it. The client keeps its TCP connection and sees the next response come from the new
//! process. What cannot move ends as it would at a plain drain: HTTP/2 connections get a
//! GOAWAY, upgraded connections (WebSocket) stay with the old process until it exits, a request
//! still running at the drain timeout is cut, and listeners whose [`Accept`] does not expose
//! the socket (TLS) close their connections after the response in flight.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Version};
use axum::response::Response;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tower_service::Service;

use crate::conns::{Parcel, Verdict};
use crate::drain::Phase;
use crate::{Hot, WorkGuard};

/// A listener [`serve`] can accept from: tokio's TCP and Unix listeners.
///
/// The three provided methods let [`serve`] hand open connections to the next process; a
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

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2) until this process stops, following the
/// hot-restart lifecycle. Returns once the process is stopping and open connections have
/// finished or moved to the successor, or the drain timeout has passed.
///
/// Connections handed over by the previous process on the same listener are served first.
///
/// ```no_run
/// # async fn f(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = hot.tcp("http", "127.0.0.1:3000")?;
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
/// hot.ready(()).await?;
/// hotrestart::http::serve(&hot, listener, app).await?;
/// # Ok(()) }
/// ```
pub async fn serve<L, S>(hot: &Hot, listener: L, app: S) -> io::Result<()>
where
    L: Accept,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // The accept loop runs as a task on the runtime's workers, not on the thread that awaits
    // `serve` (often `main`'s own thread, outside the worker pool): on a small machine that
    // extra thread costs a quarter of the connection rate.
    let task = tokio::spawn(accept_loop(hot.clone(), listener, app));
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io::Error::other(e)),
    }
}

async fn accept_loop<L, S>(hot: Hot, mut listener: L, app: S) -> io::Result<()>
where
    L: Accept,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let hot = &hot;
    let key: Option<Arc<str>> = listener.identity().map(Arc::from);
    if let Some(key) = &key {
        let arrivals = hot.claim_connections(key);
        let count = arrivals.len();
        for arrival in arrivals {
            match L::adopt(arrival.fd) {
                Ok(io) => spawn_connection::<L, S>(hot, io, arrival.prefix, Some(key), app.clone()),
                Err(e) => tracing::warn!("a handed-over connection cannot be served: {e}"),
            }
        }
        if count > 0 {
            tracing::debug!(listener = &**key, count, "serving handed-over connections");
        }
    }
    let mut phase = hot.phase();
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Stopping => break,
            Phase::Quiesced => {
                if phase.changed().await.is_err() {
                    break;
                }
                continue;
            }
            Phase::Serving => {}
        }
        // The accept loop is live work: a snapshot waits until it has stopped accepting.
        let _accepting = hot.track();
        loop {
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok(io) => spawn_connection::<L, S>(hot, io, Vec::new(), key.as_ref(), app.clone()),
                    Err(e) => {
                        // EMFILE, ECONNABORTED...: log and keep going, slowing down a little.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }
    let left = hot.inner_work_idle().await;
    if left > 0 {
        tracing::warn!(
            left,
            "connections still open after the drain timeout: closing them"
        );
    }
    hot.report_cut("while draining");
    Ok(())
}

/// An HTTP/1 connection that was active this recently when its process stopped accepting may
/// be about to send its next request: it gets this long to do so, and that request is served
/// (answered with `connection: close`). One idle for longer is closed at once. Applies when
/// connections are not handed over (at exit, or with hand-over turned off).
pub(crate) const IDLE_GRACE: Duration = Duration::from_millis(250);

/// What a connection's task knows of its requests. Plain atomics on the request path: the
/// bookkeeping must cost nothing measurable while serving.
struct Activity {
    /// Requests whose response body has not ended yet.
    in_flight: AtomicU32,
    born: Instant,
    /// Last response end, in µs since `born` (0: the accept).
    last_us: AtomicU64,
    /// Set once this process stops serving without handing the connection over: responses
    /// then carry `connection: close`, and every change is announced on `changed`.
    draining: AtomicBool,
    /// Set while the connection is being stopped between two requests to be handed over:
    /// the socket is not read while no request is in flight, so the next request stays in the
    /// kernel's buffer and travels with the socket.
    parking: AtomicBool,
    /// Bytes were written to the socket and not flushed since (hyper's buffer is not empty).
    unflushed: AtomicBool,
    /// The last request's body was dropped before its end: the rest of it may still be in
    /// hyper's buffer or the socket, so the connection is not between two requests and must
    /// not be handed over (the successor would read body bytes as a request).
    unread_body: AtomicBool,
    /// Request bodies not read to their end and still held by the application (e.g. moved
    /// into a task that reads an upload after the response went out): the rest of such a body
    /// is still to be read from this connection, so it is not between two requests.
    open_bodies: AtomicU32,
    /// hyper's read waiting behind the parking gate.
    reader: Mutex<Option<Waker>>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicU32::new(0),
            born: Instant::now(),
            last_us: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            unread_body: AtomicBool::new(false),
            open_bodies: AtomicU32::new(0),
            reader: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn touch(&self) {
        self.last_us
            .store(self.born.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// How long until the connection has been idle for [`IDLE_GRACE`].
    fn grace_left(&self) -> Duration {
        let since = self
            .born
            .elapsed()
            .saturating_sub(Duration::from_micros(self.last_us.load(Ordering::Relaxed)));
        IDLE_GRACE.saturating_sub(since)
    }

    fn announce(&self) {
        if self.draining.load(Ordering::Acquire) || self.parking.load(Ordering::Acquire) {
            self.changed.notify_one();
        }
    }

    /// Where a parking connection stands. `None`: a response is still going out (in flight,
    /// or not all flushed to the kernel). Then `Some(true)` if it is between two requests and
    /// can move, `Some(false)` if the application left the last request body unfinished
    /// (dropped, or still held): the rest of that body is on this connection, which therefore
    /// ends here, as in a drain.
    fn stop_point(&self) -> Option<bool> {
        if self.in_flight.load(Ordering::Acquire) > 0 || self.unflushed.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.open_bodies.load(Ordering::Acquire) == 0
                && !self.unread_body.load(Ordering::Acquire),
        )
    }

    /// Whether a read must wait: the connection is parking, no request is in flight and no
    /// request body is still being read.
    fn gate_closed(&self, cx: &Context<'_>) -> bool {
        if !self.parking.load(Ordering::Acquire)
            || self.in_flight.load(Ordering::Acquire) > 0
            || self.open_bodies.load(Ordering::Acquire) > 0
        {
            return false;
        }
        *self.reader.lock().unwrap() = Some(cx.waker().clone());
        // Re-checked after the waker is stored: `unpark` clears the flag, then wakes.
        self.parking.load(Ordering::Acquire)
    }

    /// The connection stays here after all: reads go on.
    fn unpark(&self) {
        self.parking.store(false, Ordering::Release);
        if let Some(waker) = self.reader.lock().unwrap().take() {
            waker.wake();
        }
    }
}

/// A request in flight, from its head to the end of its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        // A new request head was parsed: hyper is past the previous request's body.
        activity.unread_body.store(false, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.announce();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.announce();
    }
}

/// A response body that ends its request's [`InFlight`] when hyper is done with it.
struct TrackedBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that notes, if the application drops it before its end, that the connection
/// is not at a request boundary.
struct RequestBody {
    body: Incoming,
    /// Until the body has ended.
    activity: Option<Arc<Activity>>,
}

impl RequestBody {
    fn new(body: Incoming, activity: &Arc<Activity>) -> Self {
        let activity = (!body.is_end_stream()).then(|| {
            activity.open_bodies.fetch_add(1, Ordering::AcqRel);
            activity.clone()
        });
        RequestBody { body, activity }
    }

    /// The body reached its end, or was dropped (`unread`: before it).
    fn close(&mut self, unread: bool) {
        if let Some(activity) = self.activity.take() {
            if unread {
                activity.unread_body.store(true, Ordering::Release);
            }
            activity.open_bodies.fetch_sub(1, Ordering::AcqRel);
            activity.announce();
        }
    }
}

impl Body for RequestBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        // Only the end itself counts: until the application has seen it, hyper may still be
        // finishing the message (taking the connection apart then would cut the body short).
        if matches!(polled, Poll::Ready(None)) {
            this.close(false);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Every byte received but the end not polled: nothing is left on the connection.
        let unread = !self.body.is_end_stream();
        self.close(unread);
    }
}

/// The connection's stream as hyper sees it: bytes handed over (or read ahead to tell HTTP/1
/// from HTTP/2) come first; reads wait at the parking gate; writes are tracked until flushed.
struct Wire<I> {
    io: I,
    prefix: Vec<u8>,
    at: usize,
    activity: Arc<Activity>,
}

impl<I> Wire<I> {
    /// Puts `bytes` back in front of what is still to be read.
    fn unread(&mut self, bytes: &[u8]) {
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
    fn pending(&self) -> &[u8] {
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
async fn detect<I: AsyncRead + Unpin>(wire: &mut Wire<I>, head: &mut Vec<u8>) -> io::Result<bool> {
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

fn spawn_connection<L, S>(hot: &Hot, io: L::Io, prefix: Vec<u8>, key: Option<&Arc<str>>, app: S)
where
    L: Accept,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let guard = hot.track();
    let handle = match (key, L::socket(&io).map(|fd| fd.as_raw_fd())) {
        (Some(key), Some(fd)) => Some((key.clone(), fd)),
        _ => None,
    };
    tokio::spawn(connection(hot.clone(), guard, io, prefix, handle, app));
}

/// What became of a connection offered to the successor.
#[derive(PartialEq)]
enum Parked {
    /// The successor serves it: close this process's copy.
    Moved,
    /// The restart rolled back (or the process is stopping): serve it here again.
    Kept,
    /// Too late, the parked connections were already sent: serve it here and let it drain.
    Refused,
}

/// Parks the connection for the successor and waits for the verdict. While parked it is not
/// live work (the snapshot does not wait for it), but it still keeps a draining process from
/// finishing, since it may be given back.
async fn park(
    hot: &Hot,
    guard: &mut Option<WorkGuard>,
    prefix: Vec<u8>,
    (key, fd): &(Arc<str>, RawFd),
) -> Parked {
    let Some(ticket) = hot.outbox().park(Parcel {
        fd: *fd,
        key: key.clone(),
        prefix,
    }) else {
        return Parked::Refused;
    };
    // Moved from the live count to the parked count in one step (and back, if kept): the
    // two are never both zero while the connection is open.
    let parked = guard
        .take()
        .expect("a connection being served holds its guard")
        .into_parked();
    match ticket.verdict().await {
        Verdict::Moved => Parked::Moved,
        Verdict::Kept | Verdict::Pending => {
            *guard = Some(parked.into_live());
            Parked::Kept
        }
    }
}

/// A parked connection was given back: waits until the rollback is over (the phase leaves
/// this quiescence) or a new handover round already takes connections, then lets the caller
/// serve it again. Its idle grace starts now, so a request the client sent while it was parked
/// is read and answered even if the process is stopping. False if the process is gone.
async fn given_back(
    hot: &Hot,
    phase: &mut tokio::sync::watch::Receiver<Phase>,
    activity: &Activity,
) -> bool {
    activity.touch();
    phase
        .wait_for(|p| *p != Phase::Quiesced || hot.outbox().is_open())
        .await
        .is_ok()
}

/// Resolves when the phase is no longer [`Phase::Serving`] (or the process is gone).
async fn left_serving(phase: &mut tokio::sync::watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p != Phase::Serving).await;
}

/// Whether connections are being handed over right now.
fn handing_over(hot: &Hot, phase: &tokio::sync::watch::Receiver<Phase>) -> bool {
    *phase.borrow() == Phase::Quiesced && hot.outbox().is_open()
}

async fn connection<I, S>(
    hot: Hot,
    guard: WorkGuard,
    io: I,
    prefix: Vec<u8>,
    handle: Option<(Arc<str>, RawFd)>,
    app: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut guard = Some(guard);
    let drain = hot.options().drain_timeout;
    let mut phase = hot.phase();
    let activity = Arc::new(Activity::new());
    let mut wire = Wire {
        io,
        prefix,
        at: 0,
        activity: activity.clone(),
    };

    // Which protocol? A connection that has not said yet moves as it is.
    let mut head = Vec::new();
    let h2 = loop {
        tokio::select! {
            biased;
            _ = left_serving(&mut phase) => {
                let Some(handle) = handle.as_ref().filter(|_| handing_over(&hot, &phase)) else {
                    // Ending here: a client that just connected is about to send its request,
                    // which is served (and answered with `connection: close`); one silent for
                    // IDLE_GRACE since its accept is closed.
                    let grace = activity.grace_left();
                    match tokio::time::timeout(grace, detect(&mut wire, &mut head)).await {
                        Ok(Ok(h2)) => break h2,
                        _ => return,
                    }
                };
                wire.unread(&head);
                head.clear();
                match park(&hot, &mut guard, wire.pending().to_vec(), handle).await {
                    Parked::Moved => return,
                    Parked::Kept => {
                        if !given_back(&hot, &mut phase, &activity).await {
                            return;
                        }
                    }
                    // Not handing over any more: the next turn drains it.
                    Parked::Refused => {}
                }
            }
            detected = detect(&mut wire, &mut head) => match detected {
                Ok(h2) => break h2,
                Err(_) => return,
            },
        }
    };
    wire.unread(&head);

    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let http2 = req.version() == Version::HTTP_2;
        let in_flight = InFlight::enter(&tracked);
        let response = app
            .clone()
            .call(req.map(|body| axum::body::Body::new(RequestBody::new(body, &tracked))));
        let tracked = tracked.clone();
        async move {
            let mut response = response.await?;
            if !http2 && tracked.draining.load(Ordering::Acquire) {
                // This process is stopping: the client's next request goes to the next
                // process, on a new connection, instead of racing a close.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        }
    });

    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(wire), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = left_serving(&mut phase) => {}
        }
        // GOAWAY: streams in flight finish, the client opens its next connection elsewhere.
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout(drain, conn).await.is_err() {
            hot.connection_cut();
        }
        return;
    }

    let mut service = service;
    loop {
        // Where a connection that ends here must be done by.
        let mut deadline = None;
        let mut conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(wire), service)
            .with_upgrades();
        let parks = loop {
            tokio::select! {
                biased;
                _ = &mut conn => return,
                _ = left_serving(&mut phase) => {}
            }
            if handle.is_none() || !handing_over(&hot, &phase) {
                break false;
            }
            // Stop between two requests: the one in flight finishes here; the next one is
            // left unread, in the kernel, for the successor.
            activity.parking.store(true, Ordering::Release);
            let window = *deadline.insert(tokio::time::Instant::now() + drain);
            let stopped = loop {
                if let Some(movable) = activity.stop_point() {
                    break movable;
                }
                if *phase.borrow() != Phase::Quiesced {
                    break false;
                }
                tokio::select! {
                    biased;
                    _ = &mut conn => return,
                    _ = activity.changed.notified() => {}
                    changed = phase.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(window) => break false,
                }
            };
            if stopped {
                break true;
            }
            activity.unpark();
            if *phase.borrow() == Phase::Serving {
                deadline = None;
                continue; // rolled back: serve on
            }
            // Busy past the drain timeout, or stopping: it ends here.
            break false;
        };
        if !parks {
            let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + drain);
            drain_http1(&hot, &activity, conn, deadline).await;
            return;
        }
        let parts = conn
            .into_parts()
            .expect("a connection still being served is not upgraded");
        wire = parts.io.into_inner();
        wire.unread(&parts.read_buf);
        service = parts.service;
        let handle = handle.as_ref().expect("parking needs a handle");
        match park(&hot, &mut guard, wire.pending().to_vec(), handle).await {
            // Dropping our copy of the socket leaves the successor's open.
            Parked::Moved => return,
            Parked::Kept => {
                activity.unpark();
                if !given_back(&hot, &mut phase, &activity).await {
                    return;
                }
            }
            // Served again here; the next turn sees no handover and drains it.
            Parked::Refused => {
                activity.unpark();
                activity.touch();
            }
        }
    }
}

/// The connection ends here: responses say `connection: close`, a client that was just
/// active gets [`IDLE_GRACE`] to send its next request, and the drain timeout bounds it all.
async fn drain_http1<C>(hot: &Hot, activity: &Activity, mut conn: C, deadline: tokio::time::Instant)
where
    C: Future + Unpin + GracefulShutdown,
{
    activity.draining.store(true, Ordering::Release);
    loop {
        let in_flight = activity.in_flight.load(Ordering::Acquire);
        let grace = activity.grace_left();
        if in_flight == 0 && grace.is_zero() {
            break;
        }
        let wake = if in_flight == 0 {
            tokio::time::Instant::now() + grace
        } else {
            deadline
        };
        tokio::select! {
            _ = &mut conn => return,
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(wake.min(deadline)) => {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    conn.shutdown();
    if tokio::time::timeout_at(deadline, conn).await.is_err() {
        hot.connection_cut();
    }
}

/// hyper's `graceful_shutdown`, named so [`drain_http1`] can be written once.
trait GracefulShutdown {
    fn shutdown(&mut self);
}

impl<I, S, B> GracefulShutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}
