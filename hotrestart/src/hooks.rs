//! `#[before_restart]` hooks, collected at link time with `linkme`.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One registered hook. Built by `#[before_restart]`.
pub struct Hook {
    /// `module::function`, for logs.
    pub name: &'static str,
    /// Runs the user's function.
    pub run: for<'a> fn(&'a HookContext) -> BoxFuture<'a, Result<(), String>>,
}

/// Every `#[before_restart]` function in the program, in no particular order.
#[linkme::distributed_slice]
pub static HOOKS: [Hook];

/// What a hook may be given.
pub struct HookContext {
    pub(crate) state: Arc<dyn Any + Send + Sync>,
}

impl HookContext {
    /// The application state, if it is a `T`.
    pub fn state<T: Any + Send + Sync>(&self) -> Result<&T, String> {
        self.state.downcast_ref::<T>().ok_or_else(|| {
            format!(
                "the hook takes `&{}`, but the state given to `Hot::ready` is another type",
                std::any::type_name::<T>()
            )
        })
    }
}

/// What a hook may return: `()` or a `Result` whose error is displayed in the log.
#[diagnostic::on_unimplemented(
    message = "a `#[before_restart]` hook must return `()` or `Result<(), E>` with `E: Display`, not `{Self}`",
    label = "this return type"
)]
pub trait HookOutput {
    /// `Ok` for success, `Err(message)` for a failure to log.
    fn into_result(self) -> Result<(), String>;
}

impl HookOutput for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> HookOutput for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Runs every hook, one after the other. A failing hook is logged and does not stop the others
/// nor the restart: hooks prepare the handover, they do not veto it.
pub(crate) async fn run_all(cx: &HookContext, why: &str) {
    for hook in HOOKS.iter() {
        let started = std::time::Instant::now();
        match (hook.run)(cx).await {
            Ok(()) => tracing::debug!(
                hook = hook.name,
                why,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "before_restart hook done"
            ),
            Err(e) => tracing::warn!(hook = hook.name, why, "before_restart hook failed: {e}"),
        }
    }
}
