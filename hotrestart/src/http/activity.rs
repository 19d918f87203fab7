//! Request bookkeeping: whether a connection is between two requests, and whether a
//! request body was left unfinished (such a connection must not move).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;

/// An HTTP/1 connection that was active this recently when its process stopped accepting may
/// be about to send its next request: it gets this long to do so, and that request is served
/// (answered with `connection: close`). One idle for longer is closed at once. Applies when
/// connections are not handed over (at exit, or with hand-over turned off).
pub(crate) const IDLE_GRACE: Duration = Duration::from_millis(250);

/// What a connection's task knows of its requests. Plain atomics on the request path: the
/// bookkeeping must cost nothing measurable while serving.
pub(super) struct Activity {
    /// Requests whose response body has not ended yet.
    pub(super) in_flight: AtomicU32,
    pub(super) born: Instant,
    /// Last response end, in µs since `born` (0: the accept).
    pub(super) last_us: AtomicU64,
    /// Set once this process stops serving without handing the connection over: responses
    /// then carry `connection: close`, and every change is announced on `changed`.
    pub(super) draining: AtomicBool,
    /// Set while the connection is being stopped between two requests to be handed over:
    /// the socket is not read while no request is in flight, so the next request stays in the
    /// kernel's buffer and travels with the socket.
    pub(super) parking: AtomicBool,
    /// Bytes were written to the socket and not flushed since (hyper's buffer is not empty).
    pub(super) unflushed: AtomicBool,
    /// The last request's body was dropped before its end: the rest of it may still be in
    /// hyper's buffer or the socket, so the connection is not between two requests and must
    /// not be handed over (the successor would read body bytes as a request).
    pub(super) unread_body: AtomicBool,
    /// Request bodies not read to their end and still held by the application (e.g. moved
    /// into a task that reads an upload after the response went out): the rest of such a body
    /// is still to be read from this connection, so it is not between two requests.
    pub(super) open_bodies: AtomicU32,
    /// The response going out has a body of no known length (an event stream, a download, a
    /// gRPC stream): the connection is long-lived while it runs, and cannot park before its
    /// end.
    pub(super) streaming: AtomicBool,
    /// A response has ended on this connection (so `last_us` is a response's end, not the
    /// accept): its client sends requests one after the other.
    pub(super) responded: AtomicBool,
    /// hyper's read waiting behind the parking gate.
    pub(super) reader: Mutex<Option<Waker>>,
    pub(super) changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            in_flight: AtomicU32::new(0),
            born: Instant::now(),
            last_us: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            unread_body: AtomicBool::new(false),
            open_bodies: AtomicU32::new(0),
            streaming: AtomicBool::new(false),
            responded: AtomicBool::new(false),
            reader: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    pub(super) fn touch(&self) {
        self.last_us
            .store(self.born.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// How long until the connection has been idle for [`IDLE_GRACE`].
    pub(super) fn grace_left(&self) -> Duration {
        let since = self
            .born
            .elapsed()
            .saturating_sub(Duration::from_micros(self.last_us.load(Ordering::Relaxed)));
        IDLE_GRACE.saturating_sub(since)
    }

    pub(super) fn announce(&self) {
        if self.draining.load(Ordering::Acquire) || self.parking.load(Ordering::Acquire) {
            self.changed.notify_one();
        }
    }

    /// Where a parking connection stands. `None`: a response is still going out (in flight,
    /// or not all flushed to the kernel). Then `Some(true)` if it is between two requests and
    /// can move, `Some(false)` if the application left the last request body unfinished
    /// (dropped, or still held): the rest of that body is on this connection, which therefore
    /// ends here, as in a drain.
    pub(super) fn stop_point(&self) -> Option<bool> {
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
    pub(super) fn gate_closed(&self, cx: &Context<'_>) -> bool {
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
    pub(super) fn unpark(&self) {
        self.parking.store(false, Ordering::Release);
        if let Some(waker) = self.reader.lock().unwrap().take() {
            waker.wake();
        }
    }
}

/// A request in flight, from its head to the end of its response body.
pub(super) struct InFlight(pub(super) Arc<Activity>);

impl InFlight {
    pub(super) fn enter(activity: &Arc<Activity>) -> Self {
        // A new request head was parsed: hyper is past the previous request's body.
        activity.unread_body.store(false, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.announce();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Its response, streamed or not, is over.
        self.0.streaming.store(false, Ordering::Release);
        self.0.responded.store(true, Ordering::Release);
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.announce();
    }
}

/// What kind of long-lived response a body is, by its content type: the kinds this process
/// ends cleanly itself when it stops, so that their clients reconnect to the successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LongLived {
    /// Any other response: it runs to its end, or to the drain timeout.
    No,
    /// `text/event-stream`: the stream ends (a complete response), `EventSource` reconnects.
    EventStream,
    /// `application/grpc`: the call ends with trailers `grpc-status: 14` (`UNAVAILABLE`), the
    /// status a gRPC client retries, instead of a reset stream.
    Grpc,
}

impl LongLived {
    pub(super) fn of(headers: &axum::http::HeaderMap) -> Self {
        let kind = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if kind.starts_with("text/event-stream") {
            LongLived::EventStream
        } else if kind.starts_with("application/grpc") {
            LongLived::Grpc
        } else {
            LongLived::No
        }
    }
}

/// A response body that ends its request's [`InFlight`] (and, for a body of known length, its
/// live-work guard) when hyper is done with it; a long-lived kind of response is ended cleanly
/// once this process stops.
pub(super) struct TrackedBody {
    pub(super) body: axum::body::Body,
    pub(super) _in_flight: InFlight,
    /// Work the snapshot waits for, until the body's end (bodies of known length only).
    pub(super) _work: Option<crate::WorkGuard>,
    pub(super) long_lived: LongLived,
    /// Resolves when this process stops: set for long-lived kinds only.
    pub(super) stop: Option<Pin<Box<crate::Shutdown>>>,
    /// The clean end was produced: nothing follows.
    pub(super) ended: bool,
}

impl Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_ready() {
            return polled;
        }
        // Waiting for the application's next event: if this process is stopping, end here.
        let Some(stop) = this.stop.as_mut() else {
            return Poll::Pending;
        };
        if stop.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.ended = true;
        match this.long_lived {
            LongLived::Grpc => {
                let mut trailers = axum::http::HeaderMap::new();
                trailers.insert("grpc-status", axum::http::HeaderValue::from_static("14"));
                trailers.insert(
                    "grpc-message",
                    axum::http::HeaderValue::from_static("server%20restarting"),
                );
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that notes, if the application drops it before its end, that the connection
/// is not at a request boundary.
pub(super) struct RequestBody {
    pub(super) body: Incoming,
    /// Until the body has ended.
    pub(super) activity: Option<Arc<Activity>>,
}

impl RequestBody {
    pub(super) fn new(body: Incoming, activity: &Arc<Activity>) -> Self {
        let activity = (!body.is_end_stream()).then(|| {
            activity.open_bodies.fetch_add(1, Ordering::AcqRel);
            activity.clone()
        });
        RequestBody { body, activity }
    }

    /// The body reached its end, or was dropped (`unread`: before it).
    pub(super) fn close(&mut self, unread: bool) {
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
