//! What a handler can ask of the lifecycle, as axum extractors: the [`Hot`] handle itself, and
//! [`LongLived`] for a connection that outlives its request (a WebSocket).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use tokio::sync::watch;

use crate::{Hot, WorkGuard};

/// The close code a WebSocket gets when this process stops at a restart: 1012, "Service
/// Restart" (RFC 6455 §7.4, IANA registry). Browsers and clients reconnect, and the successor
/// answers.
pub const SERVICE_RESTART: u16 = 1012;

/// Why an extractor found no lifecycle in the request: the handler is not served by
/// [`serve`](super::serve).
const NOT_SERVED: (StatusCode, &str) = (
    StatusCode::INTERNAL_SERVER_ERROR,
    "hotrestart: this handler is not served by hotrestart::http::serve",
);

/// `hot: hotrestart::Hot` as a handler argument: every request served by
/// [`serve`](super::serve) carries the process's handle (no `OnceLock`, no state field).
impl<S: Send + Sync> FromRequestParts<S> for Hot {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Hot>().cloned().ok_or(NOT_SERVED)
    }
}

/// A connection that outlives its request, such as a WebSocket: taken as a handler argument
/// and moved into the upgraded connection's task. While it exists this process, once it
/// stops accepting, stays until the connection ends or the drain timeout passes; the snapshot
/// never waits for it. [`LongLived::stopping`] resolves when the process stops (its successor
/// took over, or SIGTERM): end the connection cleanly then, and the client reconnects to the
/// successor.
///
/// ```no_run
/// use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
/// use hotrestart::http::{LongLived, SERVICE_RESTART};
///
/// async fn ws(upgrade: WebSocketUpgrade, mut live: LongLived) -> axum::response::Response {
///     upgrade.on_upgrade(|mut socket| async move {
///         loop {
///             tokio::select! {
///                 // The one line a restart needs: close with 1012, the client reconnects.
///                 _ = live.stopping() => {
///                     let close = CloseFrame { code: SERVICE_RESTART, reason: "service restart".into() };
///                     let _ = socket.send(Message::Close(Some(close))).await;
///                     return;
///                 }
///                 message = socket.recv() => match message {
///                     Some(Ok(Message::Text(text))) => {
///                         if socket.send(Message::Text(text)).await.is_err() { return }
///                     }
///                     Some(Ok(_)) => {}
///                     _ => return,
///                 },
///             }
///         }
///     })
/// }
/// ```
pub struct LongLived {
    _guard: WorkGuard,
    stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for LongLived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongLived")
            .field("stopping", &*self.stopping.borrow())
            .finish_non_exhaustive()
    }
}

impl LongLived {
    /// A long-lived connection of `hot`'s process (for connections not served by
    /// [`serve`](super::serve)).
    pub fn new(hot: &Hot) -> Self {
        LongLived {
            _guard: hot.long_lived(),
            stopping: hot.stopping_signal(),
        }
    }

    /// Resolves once this process stops serving for good; at once if it already has. Can be
    /// awaited again (in a `select!` loop, say).
    pub async fn stopping(&mut self) {
        let _ = self.stopping.wait_for(|s| *s).await;
    }

    /// Whether this process is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LongLived {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let hot = parts.extensions.get::<Hot>().ok_or(NOT_SERVED)?;
        Ok(LongLived::new(hot))
    }
}
