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
use std::time::Duration;

use axum::extract::Request;
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

/// How long a connection accepted just before a quiesce may take to send its first request:
/// the client has connected and is about to send; closing it would fail that request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

fn spawn_connection<I, S>(hot: &Hot, io: I, app: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let guard = hot.track();
    let mut phase = hot.phase();
    let drain = hot.options().drain_timeout;
    let requests = Arc::new(watch::Sender::new(0u64));
    let counter = requests.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            counter.send_modify(|n| *n += 1);
            let mut app = app.clone();
            app.call(req.map(axum::body::Body::new))
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = phase.wait_for(|p| *p != Phase::Serving) => {}
        }
        // Quiesce or stop. A connection that has not sent its first request yet was accepted a
        // moment ago: serve that request (then close) rather than fail it.
        if *requests.borrow() == 0 {
            let mut started = requests.subscribe();
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::timeout(FIRST_REQUEST_GRACE, started.wait_for(|n| *n > 0)) => {}
            }
        }
        // Finish the request in flight (hyper answers it with `connection: close`), then close.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(drain, conn).await;
    });
}
