//! Procedural macros for [hotrestart](https://docs.rs/hotrestart). Use them through the
//! `hotrestart` crate, which re-exports them: `hotrestart::hot_main`,
//! `hotrestart::before_restart` and `hotrestart::State`.
//!
//! Generated code reaches the runtime only through `::hotrestart::__private`, so a program
//! needs no dependency besides `hotrestart`. Every macro takes `crate = "..."` (for the derive,
//! `#[state(crate = "...")]`) when `hotrestart` is renamed or re-exported.

mod args;
mod before_restart;
mod errors;
mod hot_main;
mod state;

#[cfg(test)]
mod expand_snapshots;

use proc_macro::TokenStream;

/// Runs `main` under hotrestart: inherits the listening sockets and the state from the
/// previous process, starts the tokio runtime, and hands over on a restart.
///
/// It goes on `async fn main` with exactly one parameter, the [`Hot`] handle. `main` may
/// return `()` or a `Result`.
///
/// ```ignore
/// #[hotrestart::hot_main(ready_timeout = "5s", drain_timeout = "250ms", state_file = "counter.state")]
/// async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
///     let listener = hot.tcp("http", "127.0.0.1:3000")?;
///     let app = hot.ready(App::default()).await?;
///     serve(listener, app).await?;
///     Ok(())
/// }
/// ```
///
/// # Arguments
///
/// All are optional; the operator's `HOTRESTART_READY_TIMEOUT`, `HOTRESTART_DRAIN_TIMEOUT` and
/// `HOTRESTART_STATE_FILE` override the first three at run time.
///
/// | argument | default | meaning |
/// | --- | --- | --- |
/// | `ready_timeout = "30s"` | `30s` | how long a successor may take from spawn to READY before the restart is rolled back |
/// | `drain_timeout = "10s"` | `10s` | how long in-flight work and long-lived connections (WebSocket, event streams, gRPC streams) may run after this process stops accepting |
/// | `snapshot_timeout = "1s"` | `1s` | how long the snapshot waits for requests still computing (no response yet) at a hot restart; past it the snapshot is taken anyway |
/// | `state_file = "app.state"` | none | where `#[persist]` state is written on a graceful exit and read at a cold start |
/// | `flavor = "multi_thread"` | `"multi_thread"` | the tokio runtime: `"multi_thread"` or `"current_thread"` |
/// | `worker_threads = 4` | one per core | worker threads of the multi-thread runtime |
/// | `control_socket = "/run/app/control.sock"` | none | a control socket for `hotrestart-ctl` |
/// | `hand_over_connections = false` | `true` | hand idle HTTP/1.1 connections to the successor |
/// | `supervisor = true` | by environment | keep a main process whose pid never changes across restarts: on as PID 1, under an init or systemd, and in a terminal; off elsewhere (`HOTRESTART_SUPERVISOR=1\|0\|auto` overrides) |
/// | `crate = "hotrestart"` | `"hotrestart"` | the path to the `hotrestart` crate, when it is renamed |
///
/// Durations are a whole number and a unit, `ms`, `s`, `m` or `h`, checked at compile time.
///
/// `#[hot_main]` builds the tokio runtime itself: do not add `#[tokio::main]`.
///
/// # Equivalent code without the macro
///
/// The example above expands to a `fn main` that makes one call into the runtime. The user's
/// function is kept as written, nested inside, so every `return` and `?` of its body converts
/// to its declared return type:
///
/// ```ignore
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
///         let listener = hot.tcp("http", "127.0.0.1:3000")?;
///         let app = hot.ready(App::default()).await?;
///         serve(listener, app).await?;
///         Ok(())
///     }
///     ::hotrestart::__private::run_main(
///         ::hotrestart::__private::MainOptions::new()
///             .ready_timeout(::core::time::Duration::from_millis(5000u64))
///             .drain_timeout(::core::time::Duration::from_millis(250u64))
///             .state_file("counter.state"),
///         |hot| main(hot),
///     )
/// }
/// ```
///
/// [`Hot`]: https://docs.rs/hotrestart/latest/hotrestart/struct.Hot.html
#[proc_macro_attribute]
pub fn hot_main(args: TokenStream, item: TokenStream) -> TokenStream {
    hot_main::expand(args.into(), item.into()).into()
}

/// Runs a function before this process hands over to its successor (and before a graceful
/// exit): flush buffers, close sessions, log.
///
/// It goes on a free `fn` or `async fn` that takes no parameter or the application state as
/// `&AppState` (the type given to `Hot::ready`), and returns `()` or `Result<(), E>` with
/// `E: Display`. The function itself is left as written, and can still be called directly.
///
/// ```ignore
/// #[hotrestart::before_restart]
/// async fn flush(app: &App) -> Result<(), std::io::Error> {
///     app.journal.lock().await.flush().await
/// }
/// ```
///
/// The state can be taken as `&App`, `&Arc<App>` or `Arc<App>` (a clone of the `Arc` that
/// `hot.ready` returned); a parameter of type `hotrestart::HookReason` says why the hook runs
/// (`Restart` or `Exit`; `Rollback` for [`macro@on_rollback`] hooks). A hook that takes another
/// type than the one given to `hot.ready` makes `hot.ready` fail, before the service serves.
///
/// Hooks run one after the other, by ascending `order` (default 0), then by their path
/// (`crate::module::function`): `linkme`, which collects them at link time from any module,
/// gives no order of its own. Each runs for at most its `timeout` (default 5s;
/// `HOTRESTART_HOOK_TIMEOUT` overrides every hook's): past it the hook is abandoned with one log
/// line naming it and the restart goes on. A hook that fails is logged and does not stop the
/// others nor the restart. A hook cannot be a method nor be generic.
///
/// | argument | default | meaning |
/// | --- | --- | --- |
/// | `order = 10` | `0` | hooks run by ascending order, then by path; negative numbers run first |
/// | `timeout = "2s"` | `5s` | the hook's time limit |
/// | `crate = "hotrestart"` | `"hotrestart"` | the path to `hotrestart` when it is renamed |
///
/// # Equivalent code without the macro
///
/// ```ignore
/// async fn flush(app: &App) -> Result<(), std::io::Error> {
///     app.journal.lock().await.flush().await
/// }
/// const _: () = {
///     #[::hotrestart::__private::linkme::distributed_slice(::hotrestart::__private::HOOKS)]
///     #[linkme(crate = ::hotrestart::__private::linkme)]
///     static __HOTRESTART_HOOK: ::hotrestart::__private::Hook = ::hotrestart::__private::Hook {
///         name: ::core::concat!(::core::module_path!(), "::", "flush"),
///         when: ::hotrestart::__private::HookWhen::BeforeRestart,
///         order: 0,
///         timeout_ms: ::core::option::Option::None,
///         takes: ::core::option::Option::Some(|| (
///             ::core::any::TypeId::of::<App>(),
///             ::core::any::type_name::<App>(),
///         )),
///         run: __hotrestart_run,
///     };
///     fn __hotrestart_run<'a>(
///         __hotrestart_cx: &'a ::hotrestart::__private::HookContext,
///     ) -> ::hotrestart::__private::BoxFuture<
///         'a,
///         ::core::result::Result<(), ::std::string::String>,
///     > {
///         ::std::boxed::Box::pin(async move {
///             let __hotrestart_arg0 = __hotrestart_cx.state::<App>()?;
///             let __hotrestart_out = flush(__hotrestart_arg0).await;
///             ::hotrestart::__private::HookOutput::into_result(__hotrestart_out)
///         })
///     }
/// };
/// ```
#[proc_macro_attribute]
pub fn before_restart(args: TokenStream, item: TokenStream) -> TokenStream {
    before_restart::expand(
        args.into(),
        item.into(),
        before_restart::When::BeforeRestart,
    )
    .into()
}

/// Marks a function to run in the old process when a restart it prepared for fails (the
/// successor exited, refused, or timed out after the `#[before_restart]` hooks ran), before it
/// accepts again: reopen what a `#[before_restart]` hook closed (a database pool, a file).
///
/// Same signatures and arguments as [`macro@before_restart`] (`order`, `timeout`, `crate`).
///
/// ```ignore
/// #[hotrestart::on_rollback]
/// async fn reopen_pool(app: &App) -> Result<(), sqlx::Error> {
///     app.reopen().await
/// }
/// ```
#[proc_macro_attribute]
pub fn on_rollback(args: TokenStream, item: TokenStream) -> TokenStream {
    before_restart::expand(args.into(), item.into(), before_restart::When::OnRollback).into()
}

/// Implements `hotrestart::State` for a struct: the fields marked `#[persist]` are written into
/// the snapshot handed to the next process, and read back by `Hot::ready`.
///
/// ```ignore
/// #[derive(Default, hotrestart::State)]
/// struct App {
///     #[persist]
///     hits: AtomicU64,
///     #[persist]
///     sessions: Mutex<HashMap<String, u64>>,
///     started: std::time::Instant, // not persisted: the new process sets its own
/// }
/// ```
///
/// A `#[persist]` field's type must implement serde's `Serialize` and `DeserializeOwned`
/// (atomics, `Mutex` and `RwLock` of such types do). Fields are keyed by name: a field added
/// in a new version keeps the value the program constructed, a removed field is ignored, and a
/// field whose type changed fails the restore, which leaves the state untouched. `#[persist]`
/// takes no argument. `#[state(crate = "...")]` on the struct names a renamed `hotrestart`.
/// Generic structs are supported; their bounds are the ones written on the struct.
///
/// # Equivalent code without the macro
///
/// ```ignore
/// const _: () = {
///     #[allow(unused_imports)]
///     use ::hotrestart::__private::{
///         NotTracked as _, TrackedBehindALock as _, Unsupported as _, ViaLock as _,
///         ViaSerde as _, ViaTracked as _,
///     };
///     fn __hotrestart_assert_persist() {
///         (&&&&&::hotrestart::__private::Field::<AtomicU64>::NEW).persist_check();
///         (&&&&&::hotrestart::__private::Field::<Mutex<HashMap<String, u64>>>::NEW)
///             .persist_check();
///     }
///     #[automatically_derived]
///     impl ::hotrestart::__private::State for App {
///         fn save<'__hotrestart_a>(
///             &'__hotrestart_a self,
///             __hotrestart_w: &mut ::hotrestart::__private::SnapshotWriter<'__hotrestart_a>,
///         ) -> ::core::result::Result<(), ::hotrestart::__private::Error> {
///             (&&&&::hotrestart::__private::Field::<AtomicU64>::NEW)
///                 .persist_save(__hotrestart_w, "hits", &self.hits)?;
///             (&&&&::hotrestart::__private::Field::<Mutex<HashMap<String, u64>>>::NEW)
///                 .persist_save(__hotrestart_w, "sessions", &self.sessions)?;
///             ::core::result::Result::Ok(())
///         }
///         fn restore(
///             &mut self,
///             __hotrestart_r: &mut ::hotrestart::__private::SnapshotReader,
///         ) -> ::core::result::Result<(), ::hotrestart::__private::Error> {
///             let __hotrestart_hits = (&&&&::hotrestart::__private::Field::<
///                 AtomicU64,
///             >::NEW)
///                 .persist_take(__hotrestart_r, "hits")?;
///             let __hotrestart_sessions = (&&&&::hotrestart::__private::Field::<
///                 Mutex<HashMap<String, u64>>,
///             >::NEW)
///                 .persist_take(__hotrestart_r, "sessions")?;
///             if let ::core::option::Option::Some(__hotrestart_value) = __hotrestart_hits {
///                 self.hits = __hotrestart_value;
///             }
///             if let ::core::option::Option::Some(__hotrestart_value) = __hotrestart_sessions {
///                 self.sessions = __hotrestart_value;
///             }
///             ::core::result::Result::Ok(())
///         }
///         fn tracked<'__hotrestart_a>(
///             &'__hotrestart_a self,
///             __hotrestart_visit: &mut dyn ::core::ops::FnMut(
///                 &'static str,
///                 &'__hotrestart_a dyn ::hotrestart::__private::Tracked,
///             ),
///         ) {
///             let _ = &__hotrestart_visit;
///             (&&&&::hotrestart::__private::Field::<AtomicU64>::NEW)
///                 .persist_tracked(__hotrestart_visit, "hits", &self.hits);
///             (&&&&::hotrestart::__private::Field::<Mutex<HashMap<String, u64>>>::NEW)
///                 .persist_tracked(__hotrestart_visit, "sessions", &self.sessions);
///         }
///     }
/// };
/// ```
#[proc_macro_derive(State, attributes(persist, state))]
pub fn derive_state(input: TokenStream) -> TokenStream {
    state::derive(input.into()).into()
}
