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
        crate::before_restart::expand(
            TokenStream::new(),
            item,
            crate::before_restart::When::BeforeRestart,
        ),
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
        crate::before_restart::expand(
            TokenStream::new(),
            item,
            crate::before_restart::When::BeforeRestart,
        ),
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

/// The code blocks (```` ```ignore ````) of the doc comment above `pub fn <name>` in `lib.rs`,
/// each with the range of its lines.
fn doc_blocks(lines: &[&str], name: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("pub fn {name}(")))
        .expect("the entry point");
    let mut start = at;
    while start > 0 && (lines[start - 1].starts_with("///") || lines[start - 1].starts_with("#[")) {
        start -= 1;
    }
    let mut blocks = Vec::new();
    let mut open = None;
    for (i, line) in lines.iter().enumerate().take(at).skip(start) {
        let text = line
            .strip_prefix("///")
            .unwrap_or("")
            .strip_prefix(' ')
            .unwrap_or("");
        match (text.trim(), open) {
            ("```ignore", None) => open = Some(i + 1),
            ("```", Some(from)) => {
                let code: Vec<&str> = lines[from..i]
                    .iter()
                    .map(|l| {
                        l.strip_prefix("///")
                            .unwrap_or("")
                            .strip_prefix(' ')
                            .unwrap_or("")
                    })
                    .collect();
                blocks.push((from..i, code.join("\n")));
                open = None;
            }
            _ => {}
        }
    }
    blocks
}

fn pretty(code: TokenStream) -> String {
    prettyplease::unparse(&syn::parse2::<syn::File>(code).expect("parses as a file"))
}

/// The "Equivalent code without the macro" of each macro's docs is what the macro really
/// writes for the example above it. `UPDATE_EXPAND=1` rewrites those blocks from the expansion.
#[test]
fn the_docs_show_the_real_expansions() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rewritten: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut stale = Vec::new();
    // Later blocks first, so the line ranges of earlier ones stay valid while rewriting.
    for name in ["derive_state", "before_restart", "hot_main"] {
        let blocks = doc_blocks(&lines, name);
        let (example, (range, shown)) = (&blocks[0].1, blocks.last().unwrap().clone());
        let expanded = match name {
            "hot_main" | "before_restart" => {
                let mut item: syn::ItemFn = syn::parse_str(example).unwrap();
                let attr = item.attrs.remove(0);
                let args = match attr.meta {
                    syn::Meta::List(list) => list.tokens,
                    _ => TokenStream::new(),
                };
                let item = quote!(#item);
                if name == "hot_main" {
                    crate::hot_main::expand(args, item)
                } else {
                    crate::before_restart::expand(
                        args,
                        item,
                        crate::before_restart::When::BeforeRestart,
                    )
                }
            }
            _ => {
                let mut item: syn::DeriveInput = syn::parse_str(example).unwrap();
                item.attrs.retain(|a| !a.path().is_ident("derive"));
                crate::state::derive(quote!(#item))
            }
        };
        let real = pretty(expanded);
        let shown_pretty = pretty(syn::parse_str(&shown).expect("the docs' block parses"));
        if real != shown_pretty {
            stale.push(format!(
                "--- {name}: the docs show\n{shown_pretty}\n--- it expands to\n{real}"
            ));
            let doc: Vec<String> = real
                .lines()
                .map(|l| {
                    if l.is_empty() {
                        "///".to_owned()
                    } else {
                        format!("/// {l}")
                    }
                })
                .collect();
            rewritten.splice(range, doc);
        }
    }
    if std::env::var_os("UPDATE_EXPAND").is_some() {
        std::fs::write(&path, rewritten.join("\n") + "\n").unwrap();
        return;
    }
    assert!(
        stale.is_empty(),
        "the docs' \"equivalent code\" drifted; `UPDATE_EXPAND=1 cargo test -p hotrestart-macros` rewrites it:\n{}",
        stale.join("\n")
    );
}
