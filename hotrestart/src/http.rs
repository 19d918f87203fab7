//! Serving HTTP (axum, or any hyper-compatible tower service) under hotrestart.
//!
//! [`serve`] is `axum::serve` with the lifecycle built in: it pauses accepting while a successor
//! takes over (the sockets stay open, connections queue in the kernel), resumes if the restart
//! rolls back, finishes open connections before the snapshot is taken (so no acknowledged
//! change to `#[persist]` state is lost), and drains on exit.

use std::convert::Infallible;
use std::future::Future;
use std::io;
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
use tokio::sync::watch;
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
pub async fn serve<L, S>(hot: &Hot, mut listener: L, app: S) -> io::Result<()>
where
    L: Accept,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
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
    Ok(())
}

/// An HTTP/1 connection that was active this recently when its process stopped accepting may
/// be about to send its next request: it gets this long to do so, and that request is served
/// (answered with `connection: close`). One idle for longer is closed at once.
pub const IDLE_GRACE: Duration = Duration::from_millis(250);

/// What a connection's task knows of its requests.
#[derive(Clone, Copy)]
struct Activity {
    in_flight: u32,
    http2: bool,
    /// Last request start or response end; the accept time before the first request.
    last: Instant,
}

fn spawn_connection<I, S>(hot: &Hot, io: I, app: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let guard = hot.track();
    let mut phase = hot.phase();
    let response_phase = hot.phase();
    let drain = hot.options().drain_timeout;
    let activity = Arc::new(watch::Sender::new(Activity {
        in_flight: 0,
        http2: false,
        last: Instant::now(),
    }));
    let tracked = activity.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let http2 = req.version() == Version::HTTP_2;
            tracked.send_modify(|a| {
                a.in_flight += 1;
                a.http2 |= http2;
                a.last = Instant::now();
            });
            let response = app.clone().call(req.map(axum::body::Body::new));
            let tracked = tracked.clone();
            let phase = response_phase.clone();
            async move {
                let mut response = response.await?;
                if !http2 && *phase.borrow() != Phase::Serving {
                    // This process is handing over: the client's next request goes to the next
                    // process, on a new connection, instead of racing a close.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                tracked.send_modify(|a| {
                    a.in_flight -= 1;
                    a.last = Instant::now();
                });
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
        let deadline = tokio::time::Instant::now() + drain;
        if !activity.borrow().http2 {
            // HTTP/1: responses now carry `connection: close`, so hyper closes the connection
            // after the request in flight, or after the next one the client was about to send.
            let mut changes = activity.subscribe();
            loop {
                let now = *changes.borrow_and_update();
                let idle_for = IDLE_GRACE.saturating_sub(now.last.elapsed());
                if now.in_flight == 0 && idle_for.is_zero() {
                    break;
                }
                let idle_deadline = if now.in_flight == 0 {
                    tokio::time::Instant::now() + idle_for
                } else {
                    deadline
                };
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep_until(idle_deadline.min(deadline)) => {
                        if tokio::time::Instant::now() >= deadline {
                            break;
                        }
                    }
                }
            }
        }
        // HTTP/2: GOAWAY, streams in flight finish. HTTP/1: close an idle connection.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout_at(deadline, conn).await;
    });
}
