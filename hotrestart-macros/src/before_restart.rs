//! `#[before_restart]` and `#[on_rollback]`: register a function to run before this process
//! hands over to its successor (or exits), or when a restart it prepared for fails. The user's
//! function is emitted as written; next to it, a plain `fn` boxes its future and a `linkme`
//! element adds that `fn` to `HOOKS` (linkme takes no `async fn`).

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Item, ItemFn, LitStr, ReturnType, Type};

use crate::args;
use crate::errors::Errors;

const ACCEPTED: &str = "`fn name(state: &AppState)` or `async fn name()`";

/// Which attribute: when its hooks run.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum When {
    BeforeRestart,
    OnRollback,
}

impl When {
    fn attr(self) -> &'static str {
        match self {
            When::BeforeRestart => "#[before_restart]",
            When::OnRollback => "#[on_rollback]",
        }
    }
}

/// The arguments: the path to the crate, the order, the time limit.
struct Args {
    krate: TokenStream,
    order: i32,
    timeout_ms: Option<u64>,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream, when: When) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(args, when, &mut errors);
    let hook = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => validate(function, &mut errors),
        Ok(other) => {
            errors.spanned(
                item_keyword(&other),
                format_args!("`{}` goes on a function: {ACCEPTED}", when.attr()),
            );
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    // On error, the user's item alone: no registration that would fail in turn.
    let mut out = match hook {
        Some(hook) if errors.is_empty() => generate(&args, when, &hook),
        _ => item,
    };
    out.extend(errors.to_compile_errors());
    out
}

// ---------------------------------------------------------------------------------------------
// Parse.

fn parse_args(args: TokenStream, when: When, errors: &mut Errors) -> Args {
    let mut krate = None;
    let (mut order, mut timeout_ms) = (0, None);
    let mut seen: Vec<String> = Vec::new();
    for meta in args::parse(args, errors) {
        let key = args::key(&meta);
        if seen.contains(&key) {
            errors.spanned(
                meta.path(),
                format_args!("`{key}` is given twice: keep one of them"),
            );
            continue;
        }
        seen.push(key.clone());
        match key.as_str() {
            args::CRATE => krate = Some(args::crate_path(&meta, errors)),
            "order" => order = order_value(&meta, errors).unwrap_or(0),
            "timeout" => {
                timeout_ms = args::str_value(&meta, "timeout = \"2s\"", errors).and_then(|lit| {
                    match hotrestart_duration::parse_millis(&lit.value()) {
                        Ok(ms) => Some(ms),
                        Err(why) => {
                            errors.spanned(lit, format_args!("invalid duration for `timeout`: {why}"));
                            None
                        }
                    }
                })
            }
            _ => errors.spanned(
                meta.path(),
                format_args!(
                    "unknown argument `{key}`: `{}` takes `order = 10`, `timeout = \"2s\"` and `crate = \"...\"`",
                    when.attr()
                ),
            ),
        }
    }
    Args {
        krate: krate.flatten().unwrap_or_else(args::default_crate),
        order,
        timeout_ms,
    }
}

/// `order = 10` or `order = -1`: an `i32`.
fn order_value(meta: &syn::Meta, errors: &mut Errors) -> Option<i32> {
    const ADVICE: &str =
        "`order` is a whole number (an `i32`): `order = 10` runs after `order = 0`, the default, and `order = -1` before";
    let syn::Meta::NameValue(nv) = meta else {
        errors.spanned(meta, ADVICE);
        return None;
    };
    let (negative, lit) = match &nv.value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(n),
            ..
        }) => (false, n),
        syn::Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(n),
                ..
            }) => (true, n),
            _ => {
                errors.spanned(&nv.value, ADVICE);
                return None;
            }
        },
        other => {
            errors.spanned(other, ADVICE);
            return None;
        }
    };
    let parsed = lit
        .base10_parse::<i64>()
        .ok()
        .map(|n| if negative { -n } else { n })
        .and_then(|n| i32::try_from(n).ok());
    if parsed.is_none() {
        errors.spanned(lit, ADVICE);
    }
    parsed
}

/// The token naming what an item is (`struct`, `impl`, ...), to point at.
fn item_keyword(item: &Item) -> TokenStream {
    match item {
        Item::Struct(s) => s.struct_token.to_token_stream(),
        Item::Enum(e) => e.enum_token.to_token_stream(),
        Item::Impl(i) => i.impl_token.to_token_stream(),
        Item::Static(s) => s.static_token.to_token_stream(),
        Item::Const(c) => c.const_token.to_token_stream(),
        Item::Mod(m) => m.mod_token.to_token_stream(),
        Item::Trait(t) => t.trait_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}

// ---------------------------------------------------------------------------------------------
// Validate.

/// A checked hook: the user's function and what each of its parameters is given.
struct Hook {
    function: ItemFn,
    params: Vec<Param>,
}

/// What one parameter of a hook is given.
enum Param {
    /// The state `T`: as `&T`, `&Arc<T>` or `Arc<T>`.
    State { ty: Type, by: By },
    /// `HookReason`: why the hook runs.
    Reason(Type),
}

#[derive(Clone, Copy, PartialEq)]
enum By {
    Ref,
    ArcRef,
    Arc,
}

/// `T` from `Arc<T>` (any path ending in `Arc` with one type argument).
fn arc_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Arc" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (1, Some(syn::GenericArgument::Type(inner))) => Some(inner),
        _ => None,
    }
}

/// Whether `ty` names `HookReason` (`hotrestart::HookReason`, or imported).
fn is_reason(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "HookReason" && s.arguments.is_empty()))
}

fn validate(function: ItemFn, errors: &mut Errors) -> Option<Hook> {
    let sig = &function.sig;
    let mut wrong = Errors::default();
    if let Some(constness) = &sig.constness {
        wrong.spanned(constness, "a hook cannot be a `const fn`: remove `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        wrong.spanned(
            unsafety,
            "a hook cannot be an `unsafe fn`: remove `unsafe`, and use an `unsafe` block inside",
        );
    }
    if let Some(abi) = &sig.abi {
        wrong.spanned(abi, "a hook is called from Rust: remove the `extern` ABI");
    }
    if !sig.generics.params.is_empty() {
        wrong.spanned(
            &sig.generics,
            "a hook cannot be generic: remove the generic parameters and name the state type, `&AppState`",
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        wrong.spanned(
            where_clause,
            "a hook cannot have a `where` clause: remove it",
        );
    }
    if let Some(variadic) = &sig.variadic {
        wrong.spanned(variadic, "a hook cannot be variadic: remove `...`");
    }

    let mut params = Vec::new();
    let (mut states, mut reasons) = (0, 0);
    for input in sig.inputs.iter() {
        match input {
            FnArg::Receiver(receiver) => wrong.spanned(
                receiver,
                "a hook is a free function, not a method: move it out of the `impl` block and take `&AppState`",
            ),
            FnArg::Typed(typed) if is_reason(&typed.ty) => {
                reasons += 1;
                if reasons > 1 {
                    wrong.spanned(&typed.ty, "`HookReason` is given once: remove this parameter");
                }
                params.push(Param::Reason((*typed.ty).clone()));
            }
            FnArg::Typed(typed) => {
                states += 1;
                if states > 1 {
                    wrong.spanned(
                        typed,
                        "a hook takes the state once (`&AppState`, `&Arc<AppState>` or `Arc<AppState>`) and, if it wants, `hotrestart::HookReason`: remove this parameter",
                    );
                } else if let Some(param) = state_param(&typed.ty, &mut wrong) {
                    params.push(param);
                }
            }
        }
    }

    let ok = wrong.is_empty();
    errors.append(wrong);
    ok.then_some(Hook { function, params })
}

/// The state parameter: `&T`, `&Arc<T>`, or `Arc<T>` by value (a clone of the `Arc`).
fn state_param(ty: &Type, errors: &mut Errors) -> Option<Param> {
    if let Some(inner) = arc_inner(ty) {
        return Some(Param::State {
            ty: inner.clone(),
            by: By::Arc,
        });
    }
    let ty = state_type(ty, errors)?;
    Some(match arc_inner(&ty) {
        Some(inner) => Param::State {
            ty: inner.clone(),
            by: By::ArcRef,
        },
        None => Param::State { ty, by: By::Ref },
    })
}

/// `T` from the parameter's `&T`, or an error on the type.
fn state_type(ty: &Type, errors: &mut Errors) -> Option<Type> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => {
            if let Some(impl_trait) = find_impl_trait(&reference.elem) {
                errors.spanned(
                    impl_trait,
                    "a hook is given the state as a concrete type: write `&AppState`, not `impl Trait`",
                );
                return None;
            }
            Some((*reference.elem).clone())
        }
        Type::Reference(reference) => {
            let elem = &reference.elem;
            errors.spanned(
                ty,
                format_args!(
                    "a hook can only be given `&YourState`: take `&{}` or no parameter, \
                     and change the state through its `Mutex` or atomic fields",
                    elem.to_token_stream()
                ),
            );
            None
        }
        Type::Paren(paren) => state_type(&paren.elem, errors),
        Type::ImplTrait(_) => {
            errors.spanned(ty, "a hook can only be given `&YourState`: take `&AppState` or no parameter, not `impl Trait`");
            None
        }
        other => {
            errors.spanned(
                other,
                format_args!(
                    "a hook is given the state as `&{0}`, `&Arc<{0}>` or `Arc<{0}>` (the type given to `hot.ready`), or no parameter",
                    other.to_token_stream()
                ),
            );
            None
        }
    }
}

/// The first `impl Trait` inside `ty`, if any.
fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Paren(inner) => find_impl_trait(&inner.elem),
        Type::Group(inner) => find_impl_trait(&inner.elem),
        Type::Reference(inner) => find_impl_trait(&inner.elem),
        Type::Ptr(inner) => find_impl_trait(&inner.elem),
        Type::Slice(inner) => find_impl_trait(&inner.elem),
        Type::Array(inner) => find_impl_trait(&inner.elem),
        Type::Tuple(tuple) => tuple.elems.iter().find_map(find_impl_trait),
        Type::Path(path) => {
            path.path
                .segments
                .iter()
                .find_map(|segment| match &segment.arguments {
                    syn::PathArguments::AngleBracketed(args) => {
                        args.args.iter().find_map(|arg| match arg {
                            syn::GenericArgument::Type(ty) => find_impl_trait(ty),
                            _ => None,
                        })
                    }
                    _ => None,
                })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Expand.

fn generate(args: &Args, when: When, hook: &Hook) -> TokenStream {
    let krate = &args.krate;
    let function = &hook.function;
    let ident = &function.sig.ident;
    let name = LitStr::new(&ident.unraw().to_string(), ident.span());
    let cx = format_ident!("__hotrestart_cx");

    // Each argument, taken from the context: the state (as the parameter asks for it) or why.
    // A plain `fn` runs on a blocking thread (so that its time limit holds even if it blocks):
    // it is given what it borrows from an `Arc` moved there.
    let blocking = function.sig.asyncness.is_none();
    let mut takes = quote!(::core::option::Option::None);
    let mut lets = Vec::new();
    let mut call_args = Vec::new();
    for (i, param) in hook.params.iter().enumerate() {
        let local = format_ident!("__hotrestart_arg{}", i);
        match param {
            Param::State { ty, by } => {
                takes = quote_spanned! {ty.span()=>
                    ::core::option::Option::Some(|| (
                        ::core::any::TypeId::of::<#ty>(),
                        ::core::any::type_name::<#ty>(),
                    ))
                };
                match by {
                    By::Ref if blocking => {
                        lets.push(
                            quote_spanned!(ty.span()=> let #local = #cx.state_arc::<#ty>()?;),
                        );
                        call_args.push(quote!(&*#local));
                    }
                    By::Ref => {
                        lets.push(quote_spanned!(ty.span()=> let #local = #cx.state::<#ty>()?;));
                        call_args.push(quote!(#local));
                    }
                    By::ArcRef => {
                        lets.push(
                            quote_spanned!(ty.span()=> let #local = #cx.state_arc::<#ty>()?;),
                        );
                        call_args.push(quote!(&#local));
                    }
                    By::Arc => {
                        lets.push(
                            quote_spanned!(ty.span()=> let #local = #cx.state_arc::<#ty>()?;),
                        );
                        call_args.push(quote!(#local));
                    }
                }
            }
            Param::Reason(ty) => {
                lets.push(quote_spanned!(ty.span()=> let #local: #ty = #cx.reason();));
                call_args.push(quote!(#local));
            }
        }
    }
    let mut call = quote!(#ident(#(#call_args),*));
    if function.sig.asyncness.is_some() {
        call = quote!(#call.await);
    }
    let when = match when {
        When::BeforeRestart => quote!(#krate::__private::HookWhen::BeforeRestart),
        When::OnRollback => quote!(#krate::__private::HookWhen::OnRollback),
    };
    let order = proc_macro2::Literal::i32_unsuffixed(args.order);
    let timeout = match args.timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    // A return type that is neither `()` nor a `Result` is reported on that type: the value and
    // the trait's path borrow its span.
    let convert = match &function.sig.output {
        ReturnType::Default => quote! {
            #krate::__private::HookOutput::into_result(#call)
        },
        ReturnType::Type(_, ty) => {
            let span = Span::mixed_site().located_at(ty.span());
            let out = Ident::new("__hotrestart_out", span);
            let krate = args::respan(krate, span);
            quote_spanned! {span=>
                let #out = #call;
                #krate::__private::HookOutput::into_result(#out)
            }
        }
    };
    let output = if blocking {
        quote! {
            #(#lets)*
            #krate::__private::run_blocking(move || { #convert }).await
        }
    } else {
        quote! {
            #(#lets)*
            #convert
        }
    };

    quote! {
        #function

        const _: () = {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::HOOKS)]
            #[linkme(crate = #krate::__private::linkme)]
            static __HOTRESTART_HOOK: #krate::__private::Hook = #krate::__private::Hook {
                name: ::core::concat!(::core::module_path!(), "::", #name),
                when: #when,
                order: #order,
                timeout_ms: #timeout,
                takes: #takes,
                run: __hotrestart_run,
            };

            fn __hotrestart_run<'a>(
                #cx: &'a #krate::__private::HookContext,
            ) -> #krate::__private::BoxFuture<'a, ::core::result::Result<(), ::std::string::String>> {
                ::std::boxed::Box::pin(async move { #output })
            }
        };
    }
}
