//! The state as `&Arc<T>` and `Arc<T>` as well as `&T`, `HookReason`, `#[on_rollback]`, and
//! the `order` and `timeout` arguments: each registers once, with what it was given.

use std::sync::Arc;

use hotrestart::HookReason;

#[derive(Default, hotrestart::State)]
struct App {}

#[hotrestart::before_restart(order = -5)]
async fn by_arc_ref(app: &Arc<App>, why: HookReason) {
    let _ = (Arc::strong_count(app), why == HookReason::Exit);
}

#[hotrestart::before_restart(timeout = "250ms")]
fn by_arc(app: Arc<App>) {
    drop(app);
}

#[hotrestart::before_restart(order = 10)]
fn only_why(why: HookReason) -> Result<(), String> {
    match why {
        HookReason::Restart | HookReason::Exit => Ok(()),
        _ => Err("unexpected".into()),
    }
}

#[hotrestart::on_rollback(order = -5, timeout = "1s")]
async fn reopen(_app: &App) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    let hooks = &hotrestart::__private::HOOKS;
    let find = |suffix: &str| hooks.iter().find(|h| h.name.ends_with(suffix)).expect(suffix);
    assert_eq!(hooks.len(), 4);
    assert_eq!(find("::by_arc_ref").order, -5);
    assert_eq!(find("::by_arc").timeout_ms, Some(250));
    assert_eq!(find("::only_why").order, 10);
    assert!(find("::only_why").takes.is_none(), "HookReason alone takes no state");
    let reopen = find("::reopen");
    assert_eq!(reopen.when, hotrestart::__private::HookWhen::OnRollback);
    assert_eq!(reopen.timeout_ms, Some(1000));
    let (id, _) = (find("::by_arc").takes.unwrap())();
    assert_eq!(id, std::any::TypeId::of::<App>(), "Arc<App> takes App");
}
