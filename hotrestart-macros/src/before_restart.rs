//! `#[before_restart]`: registers a function to run before this process hands over to its
//! successor. The user's function is emitted as written; next to it, a plain `fn` boxes its
//! future and a `linkme` element adds that `fn` to `HOOKS` (linkme takes no `async fn`).

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Item, ItemFn, LitStr, ReturnType, Type};

use crate::args;
use crate::errors::Errors;

const ACCEPTED: &str = "`fn name(state: &AppState)` or `async fn name()`";

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let krate = parse_args(args, &mut errors);
    let hook = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => validate(function, &mut errors),
        Ok(other) => {
            errors.spanned(
                item_keyword(&other),
                format_args!("`#[before_restart]` goes on a function: {ACCEPTED}"),
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
        Some(hook) if errors.is_empty() => generate(&krate, &hook),
        _ => item,
    };
    out.extend(errors.to_compile_errors());
    out
}

// ---------------------------------------------------------------------------------------------
// Parse.

fn parse_args(args: TokenStream, errors: &mut Errors) -> TokenStream {
    let mut krate = None;
    for meta in args::parse(args, errors) {
        let key = args::key(&meta);
        if key != args::CRATE {
            errors.spanned(
                meta.path(),
                format_args!(
                    "unknown argument `{key}`: `#[before_restart]` takes only `crate = \"...\"`"
                ),
            );
        } else if krate.is_some() {
            errors.spanned(meta.path(), "`crate` is given twice: keep one of them");
        } else {
            krate = Some(args::crate_path(&meta, errors));
        }
    }
    krate.flatten().unwrap_or_else(args::default_crate)
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

/// A checked hook: the user's function and what its one parameter borrows, if it has one.
struct Hook {
    function: ItemFn,
    state: Option<Type>,
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

    let mut state = None;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        None => {}
        Some(FnArg::Receiver(receiver)) => wrong.spanned(
            receiver,
            "a hook is a free function, not a method: move it out of the `impl` block and take `&AppState`",
        ),
        Some(FnArg::Typed(typed)) => state = state_type(&typed.ty, &mut wrong),
    }
    let extra: Vec<&FnArg> = inputs.collect();
    if !extra.is_empty() {
        wrong.spanned(
            quote!(#(#extra),*),
            "a hook takes at most one parameter, the state as `&AppState`: remove the others",
        );
    }

    let ok = wrong.is_empty();
    errors.append(wrong);
    ok.then_some(Hook { function, state })
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
                    "a hook can only be given `&YourState`: take `&{}` or no parameter",
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

fn generate(krate: &TokenStream, hook: &Hook) -> TokenStream {
    let function = &hook.function;
    let ident = &function.sig.ident;
    let name = LitStr::new(&ident.unraw().to_string(), ident.span());
    let cx = format_ident!("__hotrestart_cx");

    let mut call = match &hook.state {
        Some(state) => quote_spanned!(state.span()=> #ident(#cx.state::<#state>()?)),
        None => quote!(#ident()),
    };
    if function.sig.asyncness.is_some() {
        call = quote!(#call.await);
    }
    // A return type that is neither `()` nor a `Result` is reported on that type: the value and
    // the trait's path borrow its span.
    let output = match &function.sig.output {
        ReturnType::Default => quote!(#krate::__private::HookOutput::into_result(#call)),
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

    quote! {
        #function

        const _: () = {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::HOOKS)]
            #[linkme(crate = #krate::__private::linkme)]
            static __HOTRESTART_HOOK: #krate::__private::Hook = #krate::__private::Hook {
                name: ::core::concat!(::core::module_path!(), "::", #name),
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
