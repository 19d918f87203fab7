//! `#[before_restart]` and `#[on_rollback]` hooks, collected at link time with `linkme`.
//!
//! **Order.** `linkme` gives no order (the linker's), so each hook has an `order` (its macro
//! argument, default 0): hooks run by ascending `order`, then by their full path
//! (`crate::module::function`) — a rule the program controls and that does not change from
//! one build to the next. Rollback hooks run in the same order as `before_restart` hooks (give
//! the undo of a step the same `order` as the step).
//!
//! **Time limit.** Each hook runs for at most its `timeout` (macro argument; default
//! [`DEFAULT_HOOK_TIMEOUT`]; `HOTRESTART_HOOK_TIMEOUT` overrides every hook's): past it its
//! future is dropped, one line names it, and the restart (or the exit, or the return to
//! serving) goes on — a hook prepares the handover, it does not hold the service. A plain `fn`
//! hook runs on a blocking thread, so that the limit holds even if it blocks; an `async fn`
//! hook must await rather than block its thread.

use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Default time limit of one hook.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a hook runs, for a hook that takes a `hotrestart::HookReason` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookReason {
    /// `#[before_restart]`: the successor is ready; this process hands over and exits.
    Restart,
    /// `#[before_restart]`: a graceful exit (SIGTERM/SIGINT), before the state file is written.
    Exit,
    /// `#[on_rollback]`: the restart this process prepared for failed; it serves again next.
    Rollback,
}

/// When a hook runs.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookWhen {
    /// Before a handover's snapshot, and before a graceful exit.
    BeforeRestart,
    /// After a restart that ran the `BeforeRestart` hooks failed, before accepting again.
    OnRollback,
}

/// One registered hook. Built by `#[before_restart]` and `#[on_rollback]`.
#[doc(hidden)]
pub struct Hook {
    /// `module::function`, for logs and for the order.
    pub name: &'static str,
    pub when: HookWhen,
    /// Ascending; ties by `name`.
    pub order: i32,
    /// Its own time limit in ms (`timeout = "..."`), else the default.
    pub timeout_ms: Option<u64>,
    /// The state type the hook is given, checked at `Hot::ready` (`None`: it takes none).
    pub takes: Option<fn() -> (TypeId, &'static str)>,
    /// Runs the user's function.
    pub run: for<'a> fn(&'a HookContext) -> BoxFuture<'a, std::result::Result<(), String>>,
}

/// Every hook in the program, in no particular order (see the module's docs for the order
/// they run in).
#[doc(hidden)]
#[linkme::distributed_slice]
pub static HOOKS: [Hook];

/// What a hook may be given.
#[doc(hidden)]
pub struct HookContext {
    pub(crate) state: Arc<dyn Any + Send + Sync>,
    pub(crate) reason: HookReason,
}

impl HookContext {
    /// The application state, if it is a `T` (checked at `Hot::ready` already).
    pub fn state<T: Any + Send + Sync>(&self) -> std::result::Result<&T, String> {
        self.state
            .downcast_ref::<T>()
            .ok_or_else(|| mismatch::<T>())
    }

    /// The application state's `Arc`, for a hook that takes `Arc<T>` or `&Arc<T>`.
    pub fn state_arc<T: Any + Send + Sync>(&self) -> std::result::Result<Arc<T>, String> {
        self.state
            .clone()
            .downcast::<T>()
            .map_err(|_| mismatch::<T>())
    }

    /// Why the hook runs.
    pub fn reason(&self) -> HookReason {
        self.reason
    }
}

fn mismatch<T>() -> String {
    format!(
        "the hook takes `{}`, but the state given to `Hot::ready` is another type",
        std::any::type_name::<T>()
    )
}

/// What a hook may return: `()` or a `Result` whose error is displayed in the log.
#[diagnostic::on_unimplemented(
    message = "a hook must return `()` or `Result<(), E>` with `E: Display`, not `{Self}`",
    label = "this return type"
)]
pub trait HookOutput {
    /// `Ok` for success, `Err(message)` for a failure to log.
    fn into_result(self) -> std::result::Result<(), String>;
}

impl HookOutput for () {
    fn into_result(self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> HookOutput for std::result::Result<(), E> {
    fn into_result(self) -> std::result::Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// The hooks of `when`, in the order they run.
fn ordered(when: HookWhen) -> Vec<&'static Hook> {
    in_order(HOOKS.iter(), when)
}

/// `hooks` of `when`, by ascending `order`, then by path.
fn in_order<'h>(hooks: impl Iterator<Item = &'h Hook>, when: HookWhen) -> Vec<&'h Hook> {
    let mut hooks: Vec<&Hook> = hooks.filter(|h| h.when == when).collect();
    hooks.sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(b.name)));
    hooks
}

/// Checks, before the service serves, that every hook that takes the state takes the type
/// given to `Hot::ready`: a mismatch would otherwise only show at the first restart, as a hook
/// that silently does not run.
pub(crate) fn check_state_type<S: Any>() -> Result<()> {
    let given = TypeId::of::<S>();
    let given_name = std::any::type_name::<S>();
    for hook in HOOKS.iter() {
        let Some(takes) = hook.takes else { continue };
        let (id, name) = takes();
        if id != given {
            let short = short_name(given_name);
            return Err(Error::Hook {
                hook: hook.name.to_owned(),
                reason: format!(
                    "it takes the state as `{name}`, but the state given to `hot.ready` is `{given_name}`: \
                     take `&{short}`, `&Arc<{short}>` or `Arc<{short}>` (or no parameter)"
                ),
            });
        }
    }
    Ok(())
}

/// `Counter` from `my_app::Counter` (generic arguments kept), for advice a user can paste.
fn short_name(full: &str) -> &str {
    let head = full.split('<').next().unwrap_or(full);
    match head.rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

/// Runs every hook of `when`, one after the other, each within its time limit. A failing or
/// late hook is logged and does not stop the others nor what follows: hooks prepare, they do
/// not veto. `limit` is the operator's override (`HOTRESTART_HOOK_TIMEOUT`), if any.
pub(crate) async fn run_all(cx: &HookContext, when: HookWhen, limit: Option<Duration>) {
    let label = match when {
        HookWhen::BeforeRestart => "before_restart",
        HookWhen::OnRollback => "on_rollback",
    };
    let why = cx.reason;
    for hook in ordered(when) {
        let timeout = limit
            .or(hook.timeout_ms.map(Duration::from_millis))
            .unwrap_or(DEFAULT_HOOK_TIMEOUT);
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, (hook.run)(cx)).await {
            Ok(Ok(())) => tracing::debug!(
                hook = hook.name,
                ?why,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "{label} hook done"
            ),
            Ok(Err(e)) => tracing::warn!(hook = hook.name, ?why, "{label} hook failed: {e}"),
            Err(_) => tracing::warn!(
                hook = hook.name,
                ?why,
                "{label} hook `{}` did not finish within its time limit ({timeout:?}): abandoned, going on",
                hook.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &'static str, when: HookWhen, order: i32) -> Hook {
        fn run(_: &HookContext) -> BoxFuture<'_, std::result::Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        Hook {
            name,
            when,
            order,
            timeout_ms: None,
            takes: None,
            run,
        }
    }

    #[test]
    fn hooks_run_by_order_then_by_path_and_only_those_of_their_kind() {
        let hooks = [
            hook("app::z_flush", HookWhen::BeforeRestart, 0),
            hook("app::close_pool", HookWhen::BeforeRestart, 10),
            hook("app::a_log", HookWhen::BeforeRestart, 0),
            hook("app::first", HookWhen::BeforeRestart, -1),
            hook("app::reopen", HookWhen::OnRollback, 10),
        ];
        let names = |when| -> Vec<&str> {
            in_order(hooks.iter(), when)
                .iter()
                .map(|h| h.name)
                .collect()
        };
        assert_eq!(
            names(HookWhen::BeforeRestart),
            [
                "app::first",
                "app::a_log",
                "app::z_flush",
                "app::close_pool"
            ]
        );
        assert_eq!(names(HookWhen::OnRollback), ["app::reopen"]);
    }

    #[test]
    fn advice_names_the_type_without_its_path() {
        assert_eq!(short_name("my_app::state::Counter"), "Counter");
        assert_eq!(
            short_name("my_app::Wrapper<std::string::String>"),
            "Wrapper<std::string::String>"
        );
        assert_eq!(short_name("()"), "()");
    }
}
