//! Hot restarts for tokio services: hand the listening sockets and the `#[persist]` state to
//! the next version of the binary, without refusing a connection.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use axum::{extract::State as AxumState, routing::post, Router};
//!
//! #[derive(Default, hotrestart::State)]
//! struct App {
//!     #[persist]
//!     hits: AtomicU64,
//! }
//!
//! #[hotrestart::before_restart]
//! async fn flush(app: &App) {
//!     tracing::info!(hits = app.hits.load(Ordering::Relaxed), "handing over");
//! }
//!
//! #[hotrestart::hot_main(state_file = "app.state")]
//! async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = hot.tcp("http", "127.0.0.1:3000")?;   // inherited after a restart
//!     let app = hot.ready(App::default()).await?;           // state restored here
//!     let router = Router::new()
//!         .route("/hit", post(|AxumState(app): AxumState<Arc<App>>| async move {
//!             (app.hits.fetch_add(1, Ordering::Relaxed) + 1).to_string()
//!         }))
//!         .with_state(app);
//!     hotrestart::http::serve(&hot, listener, router).await?;
//!     Ok(())
//! }
//! ```
//!
//! `kill -HUP <pid>` (or [`Hot::restart`]) starts the binary found at the path this process was
//! started from, which may be a new version. The successor inherits the sockets and runs its
//! slow start-up while this process still serves; then this process stops accepting (the
//! kernel queues new connections), finishes the requests in flight, parks its idle HTTP/1.1
//! connections, runs the [`#[before_restart]`](before_restart) hooks and streams its snapshot;
//! the successor restores it, takes the parked connections, says READY and serves, and this
//! process exits 0. If anything fails before READY, the
//! successor is killed and this process resumes accepting with its live state.
//!
//! **Invariant:** at every instant some process holds every listening socket open, and at most
//! one process accepts.
//!
//! Linux only (SCM_RIGHTS, `/proc/self/exe`). The book in `book/` is the guide.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod conns;
pub mod control;
mod drain;
mod error;
mod handoff;
mod hooks;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod lifecycle;
mod listeners;
mod movable;
mod notify;
mod options;
mod snapshot;
mod state_file;
mod supervisor;
mod sys;
mod tracked;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use drain::{Phase, Shutdown, WorkGuard};
pub use error::{Error, Result};
pub use hooks::{HookReason, DEFAULT_HOOK_TIMEOUT};
pub use hotrestart_macros::{before_restart, hot_main, on_rollback, State};
pub use lifecycle::{Hot, Restarted, MAX_GENERATIONS};
pub use movable::{Movable, Moved, Signal, MAX_CONNECTION_STATE, MAX_UNREAD};
pub use options::{
    Options, DEFAULT_DRAIN_TIMEOUT, DEFAULT_READY_TIMEOUT, DEFAULT_SNAPSHOT_TIMEOUT,
};
pub use snapshot::{SnapshotReader, SnapshotWriter, State, FORMAT_VERSION};
pub use tracked::{BytesRead, TrackedBytes, TrackedMap};
