//! One connection's life: served, parked between two requests for the successor, given back
//! on a rollback, or drained.

use std::convert::Infallible;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Version};
use axum::response::Response;
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use super::activity::Activity;
use super::activity::InFlight;
use super::activity::LongLived;
use super::activity::RequestBody;
use super::activity::TrackedBody;
use super::wire::detect;
use super::wire::Wire;
use super::Accept;
use crate::conns::{Parcel, Verdict};
use crate::drain::Phase;
use crate::{Hot, WorkGuard};

pub(super) fn spawn_connection<L, S>(
    hot: &Hot,
    io: L::Io,
    prefix: Vec<u8>,
    key: Option<&Arc<str>>,
    app: S,
) where
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
    let Some(ticket) = hot.connections().outbox.park(Parcel {
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
        .wait_for(|p| *p != Phase::Quiesced || hot.connections().outbox.is_open())
        .await
        .is_ok()
}

/// Resolves when the phase is no longer [`Phase::Serving`] (or the process is gone).
async fn left_serving(phase: &mut tokio::sync::watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p != Phase::Serving).await;
}

/// Whether connections are being handed over right now.
fn handing_over(hot: &Hot, phase: &tokio::sync::watch::Receiver<Phase>) -> bool {
    *phase.borrow() == Phase::Quiesced && hot.connections().outbox.is_open()
}

/// How long an HTTP/2 connection that was busy a moment ago holds the snapshot after its
/// GOAWAY, for the requests its client sent before it saw it (about a round trip; on loopback
/// and in a data centre far less).
const H2_RACE_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// What a request that starts after the snapshot gets: not served (its changes would be lost
/// with this process), but refused with what its client retries — gRPC `UNAVAILABLE` (a
/// trailers-only response), else `503` with `retry-after: 0` and `connection: close`.
fn refuse_late<B>(req: &Request<B>) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let mut response = Response::new(axum::body::Body::empty());
    if !grpc {
        *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    let headers = response.headers_mut();
    if grpc {
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("server%20restarting"),
        );
    } else {
        headers.insert("retry-after", HeaderValue::from_static("0"));
        if req.version() != Version::HTTP_2 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
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
    let hot_for_requests = hot.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let http2 = req.version() == Version::HTTP_2;
        let handover = hot_for_requests.connections();
        let late = handover.snapshot_taken.load(Ordering::SeqCst).then(|| {
            handover.refused_late.fetch_add(1, Ordering::Relaxed);
            refuse_late(&req)
        });
        let in_flight = InFlight::enter(&tracked);
        // Until its response is there, a request may change `#[persist]` state: the snapshot
        // waits for it (up to the snapshot timeout).
        let work = hot_for_requests.track();
        // Handlers reach the lifecycle through their request (`hotrestart::Hot` and
        // `hotrestart::http::LongLived` are extractors).
        req.extensions_mut().insert(hot_for_requests.clone());
        let response = late.is_none().then(|| {
            app.clone()
                .call(req.map(|body| axum::body::Body::new(RequestBody::new(body, &tracked))))
        });
        let tracked = tracked.clone();
        let hot = hot_for_requests.clone();
        async move {
            let mut response = match (response, late) {
                (Some(response), _) => response.await?,
                (None, Some(refusal)) => refusal,
                (None, None) => unreachable!("a request is served or refused"),
            };
            if !http2 && tracked.draining.load(Ordering::Acquire) {
                // This process is stopping: the client's next request goes to the next
                // process, on a new connection, instead of racing a close.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // A body of known length is written at once: the request stays work the snapshot
            // waits for until it is out (so the connection can park right after). A body of no
            // known length is a stream that may last: the state work is done, the response
            // is long-lived from here.
            let exact = response.body().size_hint().exact().is_some();
            let long_lived = LongLived::of(response.headers());
            if !exact {
                tracked.streaming.store(true, Ordering::Release);
                tracked.announce();
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
                _work: exact.then_some(work),
                long_lived,
                stop: (long_lived != LongLived::No).then(|| Box::pin(hot.shutdown())),
                ended: false,
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
        // GOAWAY (twice, as RFC 9113 §6.8 says: a first one announcing the shutdown, the last
        // one after a round trip with the real last stream id, so no request that raced it is
        // refused): streams in flight finish, the client opens its next connection elsewhere.
        // Event streams and gRPC streams are ended cleanly once this process stops.
        conn.as_mut().graceful_shutdown();
        // Requests the client sent before it saw the GOAWAY still arrive, for about a round
        // trip, and are served here: a connection that answered a request a moment ago (its
        // client sends one after the other) holds the snapshot that
        // long (those requests are live work of their own), so that they are in it. After that
        // the connection is long-lived and does not hold the snapshot; a request that still
        // comes is refused, retryable (`refuse_late`).
        let window = if activity.responded.load(Ordering::Acquire) {
            activity.grace_left().min(H2_RACE_WINDOW)
        } else {
            // Only long-lived streams so far (a `Watch`): nothing is sending requests.
            std::time::Duration::ZERO
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(window) => {}
        }
        let _long_lived = guard.take().map(WorkGuard::into_long_lived);
        tokio::select! {
            _ = conn => {}
            _ = after_stop(&hot, drain) => hot.connections().connection_cut(),
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
                if activity.streaming.load(Ordering::Acquire) {
                    // A response of no known length is going out: it may last, and the
                    // connection cannot park before its end. It stays here, long-lived.
                    guard = guard.take().map(WorkGuard::into_long_lived);
                    break false;
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
            // A response of no known length that ends here: long-lived, it does not hold the
            // snapshot (a request after it on this connection is refused, see `refuse_late`).
            // Held to the end of the drain either way.
            let long_lived = activity.streaming.load(Ordering::Acquire);
            let _held = long_lived.then(|| guard.take().map(WorkGuard::into_long_lived));
            if long_lived {
                drain_http1(&hot, &activity, conn, after_stop(&hot, drain)).await;
            } else {
                let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + drain);
                drain_http1(&hot, &activity, conn, tokio::time::sleep_until(deadline)).await;
            }
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
async fn drain_http1<C>(hot: &Hot, activity: &Activity, mut conn: C, cut: impl Future<Output = ()>)
where
    C: Future + Unpin + GracefulShutdown,
{
    tokio::pin!(cut);
    activity.draining.store(true, Ordering::Release);
    loop {
        let in_flight = activity.in_flight.load(Ordering::Acquire);
        let grace = activity.grace_left();
        if in_flight == 0 && grace.is_zero() {
            break;
        }
        // Idle: its grace; busy: until its response is out, or the cut.
        let idle_until = (in_flight == 0).then(|| tokio::time::Instant::now() + grace);
        tokio::select! {
            _ = &mut conn => return,
            _ = activity.changed.notified() => {}
            _ = &mut cut => break,
            _ = async {
                match idle_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    conn.shutdown();
    tokio::select! {
        _ = conn => {}
        _ = &mut cut => hot.connections().connection_cut(),
    }
}

/// The hard end of a long-lived connection: `drain` after this process stops — not after a
/// quiescence, which a rollback may undo (the process then serves on, and so does the stream).
async fn after_stop(hot: &Hot, drain: std::time::Duration) {
    let mut stopping = hot.stopping_signal();
    let _ = stopping.wait_for(|s| *s).await;
    tokio::time::sleep(drain).await;
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
