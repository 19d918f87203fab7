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
//! GOAWAY, a request still running at the drain timeout is cut, and listeners whose [`Accept`]
//! does not expose the socket (TLS) close their connections after the response in flight.
//!
//! **Nothing long-lived holds the snapshot.** The snapshot waits only for requests that have
//! no response yet (up to the snapshot timeout): they may still change `#[persist]` state. A
//! response with a body of no known length (an event stream, a gRPC stream, a download), an
//! HTTP/2 connection, and a WebSocket (a handler holding [`LongLived`]) are long-lived: the old
//! process keeps serving them after the successor took over, until they end or the drain
//! timeout passes, and ends the kinds it knows cleanly when it stops — an event stream
//! (`text/event-stream`) ends, a gRPC call ends with `UNAVAILABLE`, a WebSocket is closed
//! with [`SERVICE_RESTART`] (1012) by its handler — so that their clients reconnect to the
//! successor.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use tower_service::Service;

use crate::drain::Phase;
use crate::Hot;

mod accept;
mod activity;
mod connection;
mod extract;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
mod wire;

pub use accept::Accept;
use connection::spawn_connection;
pub use extract::{LongLived, SERVICE_RESTART};

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
        let arrivals = hot.connections().claim(key);
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
    let left = hot.connections().work_idle().await;
    if left > 0 {
        tracing::warn!(
            left,
            "connections still open after the drain timeout: closing them"
        );
    }
    hot.connections().report_cut("while draining");
    let refused = hot
        .connections()
        .refused_late
        .swap(0, std::sync::atomic::Ordering::Relaxed);
    if refused > 0 {
        tracing::warn!(
            refused,
            "{refused} request(s) arrived after the snapshot (HTTP/2 streams that raced the GOAWAY, requests after a long-lived response): refused with 503 / gRPC UNAVAILABLE for their clients to retry, rather than served on a state no longer handed over"
        );
    }
    Ok(())
}
