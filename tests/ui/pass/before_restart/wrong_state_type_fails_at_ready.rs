//! A hook that takes another type than the state given to `hot.ready` would never run: `ready`
//! refuses to start instead, naming the hook and the signature to write.

#[derive(Debug, Default, hotrestart::State)]
struct App {}

#[hotrestart::before_restart]
fn flush(_count: &u64) {}

#[hotrestart::hot_main(supervisor = false)]
async fn main(hot: hotrestart::Hot) {
    let err = hot.ready(App::default()).await.expect_err("the hook takes &u64, the state is App");
    let text = err.to_string();
    assert!(matches!(err, hotrestart::Error::Hook { .. }), "{text}");
    assert!(text.contains("::flush"), "names the hook: {text}");
    assert!(text.contains("`u64`"), "says what it takes: {text}");
    assert!(text.contains("take `&App`, `&Arc<App>` or `Arc<App>`"), "gives the fix: {text}");
}
