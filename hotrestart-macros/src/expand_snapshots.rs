//! Snapshots of what each macro expands to, formatted with prettyplease and checked in under
//! `tests/expand/`, so a change that makes `cargo expand` output longer or harder to read shows
//! up in review. `UPDATE_EXPAND=1 cargo test -p hotrestart-macros` rewrites them.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::quote;

fn check(name: &str, expanded: TokenStream) {
    let file: syn::File = syn::parse2(expanded).expect("the expansion parses as a file");
    let pretty = prettyplease::unparse(&file);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expand")
        .join(format!("{name}.expanded.rs"));
    if std::env::var_os("UPDATE_EXPAND").is_some() || !path.exists() {
        std::fs::write(&path, &pretty).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert!(
        expected == pretty,
        "the expansion of {name} changed; review it and run `UPDATE_EXPAND=1 cargo test -p hotrestart-macros`.\n--- expected\n{expected}\n--- actual\n{pretty}"
    );
}

#[test]
fn hot_main() {
    let args = quote!(state_file = "counter.state", ready_timeout = "5s");
    let item = quote! {
        async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
            let listener = hot.tcp("http", "127.0.0.1:3000")?;
            let counter = hot.ready(Counter::default()).await?;
            hotrestart::http::serve(&hot, listener, app(counter)).await?;
            Ok(())
        }
    };
    check("hot_main", crate::hot_main::expand(args, item));
}

#[test]
fn hot_main_hand_over_off() {
    let args = quote!(hand_over_connections = false, drain_timeout = "2s");
    let item = quote! {
        async fn main(hot: hotrestart::Hot) {
            let _ = hot;
        }
    };
    check(
        "hot_main_hand_over_off",
        crate::hot_main::expand(args, item),
    );
}

#[test]
fn before_restart_async_with_state() {
    let item = quote! {
        async fn log_handover(counter: &Counter) {
            tracing::info!(hits = counter.hits.load(Ordering::SeqCst), "handing over");
        }
    };
    check(
        "before_restart_async_with_state",
        crate::before_restart::expand(TokenStream::new(), item),
    );
}

#[test]
fn before_restart_sync_no_arg() {
    let item = quote! {
        fn flush() -> std::io::Result<()> {
            std::io::Write::flush(&mut std::io::stdout())
        }
    };
    check(
        "before_restart_sync_no_arg",
        crate::before_restart::expand(TokenStream::new(), item),
    );
}

#[test]
fn derive_state() {
    let item = quote! {
        struct AppState {
            #[persist]
            hits: AtomicU64,
            #[persist]
            sessions: RwLock<HashMap<String, Session>>,
            pool: Pool,
        }
    };
    check("derive_state", crate::state::derive(item));
}
