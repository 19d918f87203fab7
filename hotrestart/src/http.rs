//! Serving HTTP (axum, or any hyper-compatible tower service) under hotrestart.
//!
//! [`serve`] is `axum::serve` with the lifecycle built in: it pauses accepting while a successor
//! takes over (the sockets stay open, connections queue in the kernel), resumes if the restart
//! rolls back, finishes open connections before the snapshot is taken (so no acknowledged
//! change to `#[persist]` state is lost), and drains on exit.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Version};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tower_service::Service;

use crate::drain::Phase;
use crate::Hot;

/// A listener [`serve`] can accept from: tokio's TCP and Unix listeners.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }
}

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2) until this process stops, following the
/// hot-restart lifecycle. Returns once the process is stopping and open connections have
/// finished, or the drain timeout has passed.
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
                    Ok(io) => spawn_connection(hot, io, app.clone()),
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
/// (answered with `connection: close`). One idle for longer is closed at once.
pub const IDLE_GRACE: Duration = Duration::from_millis(250);

/// What a connection's task knows of its requests. Plain atomics on the request path: the
/// bookkeeping must cost nothing measurable while serving.
struct Activity {
    in_flight: AtomicU32,
    http2: AtomicBool,
    born: Instant,
    /// Last response end, in µs since `born` (0: the accept).
    last_us: AtomicU64,
    /// Set once this process stops serving: responses then carry `connection: close`, and
    /// every change is announced on `changed`.
    draining: AtomicBool,
    changed: Notify,
}

impl Activity {
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
        if self.draining.load(Ordering::Acquire) {
            self.changed.notify_one();
        }
    }
}

fn spawn_connection<I, S>(hot: &Hot, io: I, app: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let guard = hot.track();
    let cut = hot.clone();
    let mut phase = hot.phase();
    let drain = hot.options().drain_timeout;
    let activity = Arc::new(Activity {
        in_flight: AtomicU32::new(0),
        http2: AtomicBool::new(false),
        born: Instant::now(),
        last_us: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        changed: Notify::new(),
    });
    let tracked = activity.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let http2 = req.version() == Version::HTTP_2;
            if http2 {
                tracked.http2.store(true, Ordering::Relaxed);
            }
            // No clock read here: while a request is in flight the idle grace does not apply.
            tracked.in_flight.fetch_add(1, Ordering::AcqRel);
            tracked.announce();
            let response = app.clone().call(req.map(axum::body::Body::new));
            let tracked = tracked.clone();
            async move {
                let mut response = response.await?;
                if !http2 && tracked.draining.load(Ordering::Acquire) {
                    // This process is handing over: the client's next request goes to the next
                    // process, on a new connection, instead of racing a close.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                tracked.touch();
                tracked.in_flight.fetch_sub(1, Ordering::AcqRel);
                tracked.announce();
                Ok::<_, Infallible>(response)
            }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = phase.wait_for(|p| *p != Phase::Serving) => {}
        }
        activity.draining.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + drain;
        if !activity.http2.load(Ordering::Relaxed) {
            // HTTP/1: responses now carry `connection: close`, so hyper closes the connection
            // after the request in flight, or after the next one the client was about to send.
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
                    _ = conn.as_mut() => return,
                    _ = activity.changed.notified() => {}
                    _ = tokio::time::sleep_until(wake.min(deadline)) => {
                        if tokio::time::Instant::now() >= deadline {
                            break;
                        }
                    }
                }
            }
        }
        // HTTP/2: GOAWAY, streams in flight finish. HTTP/1: close an idle connection.
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout_at(deadline, conn).await.is_err() {
            cut.connection_cut();
        }
    });
}
