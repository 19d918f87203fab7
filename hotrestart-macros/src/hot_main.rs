//! `#[hot_main]`: turns `async fn main(hot: Hot)` into a `fn main` that hands it to the
//! runtime. Parse the arguments into a [`Config`] and the function into a [`Main`], validate
//! both, then expand; on error, still emit a `fn main` so no "main function not found" follows.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ItemFn, LitInt, LitStr, Meta, PatType};

use crate::args;
use crate::errors::Errors;

const READY_TIMEOUT: &str = "ready_timeout";
const DRAIN_TIMEOUT: &str = "drain_timeout";
const SNAPSHOT_TIMEOUT: &str = "snapshot_timeout";
const STATE_FILE: &str = "state_file";
const CONTROL_SOCKET: &str = "control_socket";
const FLAVOR: &str = "flavor";
const WORKER_THREADS: &str = "worker_threads";
const HAND_OVER_CONNECTIONS: &str = "hand_over_connections";
const SUPERVISOR: &str = "supervisor";

const CURRENT_THREAD: &str = "current_thread";
const MULTI_THREAD: &str = "multi_thread";

/// Every argument, with an example of its use, in the order the docs list them.
const KEYS: &[(&str, &str)] = &[
    (READY_TIMEOUT, "ready_timeout = \"30s\""),
    (DRAIN_TIMEOUT, "drain_timeout = \"10s\""),
    (SNAPSHOT_TIMEOUT, "snapshot_timeout = \"1s\""),
    (STATE_FILE, "state_file = \"app.state\""),
    (CONTROL_SOCKET, "control_socket = \"/run/app/control.sock\""),
    (FLAVOR, "flavor = \"multi_thread\""),
    (WORKER_THREADS, "worker_threads = 4"),
    (HAND_OVER_CONNECTIONS, "hand_over_connections = false"),
    (SUPERVISOR, "supervisor = true"),
    (args::CRATE, "crate = \"hotrestart\""),
];

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let config = parse_config(args, &mut errors);
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            // Not a function: keep the tokens as they are, and say where the attribute goes.
            errors.spanned(
                &item,
                "`#[hot_main]` goes on `async fn main(hot: hotrestart::Hot)`",
            );
            let mut out = item;
            out.extend(errors.to_compile_errors());
            return out;
        }
    };
    let main = validate(item, &mut errors);
    let mut out = match main.signature_ok {
        // Arguments alone being wrong still expands with the valid ones: the body is
        // type-checked as usual and no secondary error appears.
        true => generate(&config, &main),
        false => stub(&main),
    };
    out.extend(errors.to_compile_errors());
    out
}

// ---------------------------------------------------------------------------------------------
// Parse: the arguments.

/// The arguments of `#[hot_main(...)]`, each value kept with the token it came from.
#[derive(Default)]
struct Config {
    ready_timeout: Option<Millis>,
    drain_timeout: Option<Millis>,
    snapshot_timeout: Option<Millis>,
    state_file: Option<LitStr>,
    control_socket: Option<LitStr>,
    flavor: Option<(Flavor, LitStr)>,
    worker_threads: Option<(usize, LitInt)>,
    hand_over_connections: Option<syn::LitBool>,
    supervisor: Option<syn::LitBool>,
    krate: Option<TokenStream>,
}

/// A duration parsed at compile time, with the string it was written as.
struct Millis {
    ms: u64,
    lit: LitStr,
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

fn parse_config(args: TokenStream, errors: &mut Errors) -> Config {
    let mut config = Config::default();
    let mut seen: Vec<String> = Vec::new();
    for meta in args::parse(args, errors) {
        let key = args::key(&meta);
        let Some(&(_, example)) = KEYS.iter().find(|(k, _)| *k == key) else {
            errors.spanned(meta.path(), unknown_key(&key));
            continue;
        };
        if seen.contains(&key) {
            errors.spanned(
                meta.path(),
                format_args!("`{key}` is given twice: keep one of them"),
            );
            continue;
        }
        seen.push(key.clone());
        match key.as_str() {
            READY_TIMEOUT => config.ready_timeout = duration(&meta, example, errors),
            DRAIN_TIMEOUT => config.drain_timeout = duration(&meta, example, errors),
            SNAPSHOT_TIMEOUT => config.snapshot_timeout = duration(&meta, example, errors),
            STATE_FILE => config.state_file = path(STATE_FILE, &meta, example, errors),
            CONTROL_SOCKET => config.control_socket = path(CONTROL_SOCKET, &meta, example, errors),
            FLAVOR => config.flavor = flavor(&meta, example, errors),
            WORKER_THREADS => config.worker_threads = worker_threads(&meta, example, errors),
            HAND_OVER_CONNECTIONS => {
                config.hand_over_connections = args::bool_value(&meta, example, errors).cloned()
            }
            SUPERVISOR => config.supervisor = args::bool_value(&meta, example, errors).cloned(),
            _ => config.krate = args::crate_path(&meta, errors),
        }
    }
    if let (Some((Flavor::CurrentThread, flavor)), Some((_, threads))) =
        (&config.flavor, &config.worker_threads)
    {
        errors.spanned(
            threads,
            format_args!(
                "`worker_threads` sizes a multi-thread runtime, but `flavor = {}` runs on one thread: \
                 remove `worker_threads` or use `flavor = \"multi_thread\"`",
                flavor.to_token_stream()
            ),
        );
    }
    config
}

fn unknown_key(key: &str) -> String {
    let valid: Vec<String> = KEYS.iter().map(|(k, _)| format!("`{k}`")).collect();
    let mut message = format!(
        "unknown argument `{key}`: expected one of {}",
        valid.join(", ")
    );
    if key == CURRENT_THREAD || key == MULTI_THREAD {
        message = format!("unknown argument `{key}`: write `flavor = \"{key}\"`");
    }
    message
}

fn duration(meta: &Meta, example: &str, errors: &mut Errors) -> Option<Millis> {
    let lit = args::str_value(meta, example, errors)?;
    match hotrestart_duration::parse_millis(&lit.value()) {
        Ok(ms) => Some(Millis {
            ms,
            lit: lit.clone(),
        }),
        Err(why) => {
            errors.spanned(
                lit,
                format_args!("invalid duration for `{}`: {why}", args::key(meta)),
            );
            None
        }
    }
}

fn path(key: &str, meta: &Meta, example: &str, errors: &mut Errors) -> Option<LitStr> {
    let lit = args::str_value(meta, example, errors)?;
    if lit.value().is_empty() {
        errors.spanned(
            lit,
            format_args!("`{key}` is empty: give a path like {example}, or remove the argument"),
        );
        return None;
    }
    Some(lit.clone())
}

fn flavor(meta: &Meta, example: &str, errors: &mut Errors) -> Option<(Flavor, LitStr)> {
    let lit = args::str_value(meta, example, errors)?;
    let flavor = match lit.value().as_str() {
        CURRENT_THREAD => Flavor::CurrentThread,
        MULTI_THREAD => Flavor::MultiThread,
        other => {
            errors.spanned(
                lit,
                format_args!("unknown flavor \"{other}\": expected \"{CURRENT_THREAD}\" or \"{MULTI_THREAD}\""),
            );
            return None;
        }
    };
    Some((flavor, lit.clone()))
}

fn worker_threads(meta: &Meta, example: &str, errors: &mut Errors) -> Option<(usize, LitInt)> {
    let lit = args::int_value(meta, example, errors)?;
    match lit.base10_parse::<usize>() {
        Ok(0) | Err(_) => {
            errors.spanned(
                lit,
                "`worker_threads` must be a whole number of at least 1, like `worker_threads = 4`",
            );
            None
        }
        Ok(n) => Some((n, lit.clone())),
    }
}

// ---------------------------------------------------------------------------------------------
// Validate: the function.

/// The user's `main`, checked.
struct Main {
    item: ItemFn,
    /// The one parameter, `hot: hotrestart::Hot` as written; `None` when the signature is wrong.
    param: Option<PatType>,
    /// Whether `main` can be expanded; if not, only a stub `fn main` is emitted.
    signature_ok: bool,
}

fn validate(mut item: ItemFn, errors: &mut Errors) -> Main {
    // `#[tokio::main]` below `#[hot_main]` would start a second runtime. Refuse it and drop it,
    // so it expands into no further error; the rest of `main` can still be expanded.
    let (tokio_main, attrs): (Vec<Attribute>, Vec<Attribute>) = std::mem::take(&mut item.attrs)
        .into_iter()
        .partition(is_tokio_main);
    item.attrs = attrs;
    for attr in &tokio_main {
        errors.spanned(
            attr,
            "`#[hot_main]` starts the tokio runtime itself: remove `#[tokio::main]` \
             (its `flavor` and `worker_threads` go in `#[hot_main(...)]`)",
        );
    }

    let sig = &item.sig;
    if sig.asyncness.is_none() && mentions(item.block.to_token_stream(), "block_on") {
        // `#[tokio::main]` above `#[hot_main]` expanded first and made `main` synchronous;
        // the attribute is gone, so point at ours.
        errors.push(syn::Error::new(
            Span::call_site(),
            "`#[hot_main]` sees a `main` that `#[tokio::main]` already expanded: \
             `#[hot_main]` starts the tokio runtime itself, remove `#[tokio::main]`",
        ));
        return Main {
            item,
            param: None,
            signature_ok: false,
        };
    }

    let mut wrong = Errors::default();
    if sig.asyncness.is_none() {
        wrong.spanned(
            sig.fn_token,
            "the `async` keyword is missing from the function declaration: \
             write `async fn main(hot: hotrestart::Hot)`",
        );
    }
    if let Some(constness) = &sig.constness {
        wrong.spanned(constness, "`main` cannot be `const`: remove `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        wrong.spanned(unsafety, "`main` cannot be `unsafe`: remove `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        wrong.spanned(
            abi,
            "`#[hot_main]` writes `fn main` itself: remove the `extern` ABI",
        );
    }
    if sig.ident != "main" {
        wrong.spanned(
            &sig.ident,
            format_args!(
                "`#[hot_main]` goes on `main`, the program's entry point: rename `{}` to `main`",
                sig.ident
            ),
        );
    }
    if !sig.generics.params.is_empty() {
        wrong.spanned(
            &sig.generics,
            "`main` cannot be generic: remove the generic parameters",
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        wrong.spanned(
            where_clause,
            "`main` cannot have a `where` clause: remove it",
        );
    }

    let mut param = None;
    match sig.inputs.first() {
        None => wrong.push(syn::Error::new(
            sig.paren_token.span.join(),
            "`#[hot_main]` gives `main` the restart handle: add the parameter, \
             `async fn main(hot: hotrestart::Hot)`",
        )),
        Some(_) if sig.inputs.len() > 1 => wrong.spanned(
            &sig.inputs,
            "`main` takes exactly one parameter, `hot: hotrestart::Hot`: remove the others",
        ),
        Some(FnArg::Receiver(receiver)) => wrong.spanned(
            receiver,
            "`main` takes `hot: hotrestart::Hot`, not `self`: write `async fn main(hot: hotrestart::Hot)`",
        ),
        Some(FnArg::Typed(typed)) => param = Some(typed.clone()),
    }
    if let Some(variadic) = &sig.variadic {
        wrong.spanned(variadic, "`main` cannot be variadic: remove `...`");
    }

    let signature_ok = wrong.is_empty();
    errors.append(wrong);
    Main {
        item,
        param: param.filter(|_| signature_ok),
        signature_ok,
    }
}

/// `#[tokio::main]` or `#[::tokio::main]`.
fn is_tokio_main(attr: &Attribute) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    segments == ["tokio", "main"]
}

/// Whether `tokens` contain the identifier `name`, at any depth.
fn mentions(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == name,
        TokenTree::Group(group) => mentions(group.stream(), name),
        _ => false,
    })
}

// ---------------------------------------------------------------------------------------------
// Expand.

fn generate(config: &Config, main: &Main) -> TokenStream {
    let krate = config.krate.clone().unwrap_or_else(args::default_crate);
    let item = &main.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let output = &item.sig.output;
    let param = main
        .param
        .as_ref()
        .expect("a valid signature has one typed parameter");

    let mut options = quote!(#krate::__private::MainOptions::new());
    for (method, value) in [
        ("ready_timeout", &config.ready_timeout),
        ("drain_timeout", &config.drain_timeout),
        ("snapshot_timeout", &config.snapshot_timeout),
    ] {
        if let Some(Millis { ms, lit }) = value {
            let method = syn::Ident::new(method, lit.span());
            options.extend(quote!(.#method(::core::time::Duration::from_millis(#ms))));
        }
    }
    if let Some(path) = &config.state_file {
        options.extend(quote!(.state_file(#path)));
    }
    if let Some(path) = &config.control_socket {
        options.extend(quote!(.control_socket(#path)));
    }
    if let Some((Flavor::CurrentThread, _)) = &config.flavor {
        options.extend(quote!(.current_thread()));
    }
    if let Some((threads, _)) = &config.worker_threads {
        options.extend(quote!(.worker_threads(#threads)));
    }
    if let Some(on) = &config.hand_over_connections {
        options.extend(quote!(.hand_over_connections(#on)));
    }
    if let Some(on) = &config.supervisor {
        options.extend(quote!(.supervisor(#on)));
    }

    // The user's function, as written, becomes a local `async fn`: its declared return type
    // is where every `return` and `?` of the body coerces to (a closure's `async` block would
    // take the type of the first `return` instead).
    let user_main = ItemFn {
        attrs: Vec::new(),
        vis: syn::Visibility::Inherited,
        ..item.clone()
    };
    // The closure's parameter is a `Hot`, by `run_main`'s bound; passing it on borrows the span of
    // the parameter's type, so a parameter that is not a `Hot` is reported there.
    let hot = syn::Ident::new("hot", Span::mixed_site().located_at(param.ty.span()));
    let user_ident = &item.sig.ident;
    let call = quote! {
        #krate::__private::run_main(#options, |#hot| #user_ident(#hot))
    };
    quote! {
        #(#attrs)*
        #vis fn main() #output {
            #user_main
            #call
        }
    }
}

/// What is emitted when `main` is wrong: a `fn main` with the same attributes and return type,
/// so the only errors are the macro's.
fn stub(main: &Main) -> TokenStream {
    let item = &main.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let output = &item.sig.output;
    quote! {
        #(#attrs)*
        #vis fn main() #output {
            ::core::unreachable!("`#[hot_main]` reported an error")
        }
    }
}
