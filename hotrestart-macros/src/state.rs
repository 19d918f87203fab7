//! `#[derive(State)]`: saves and restores the fields marked `#[persist]`, keyed by field name.
//! Parse the struct into its persisted fields, validate the attributes, then expand; on error
//! a stub impl is still emitted so that code using the state reports nothing more.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, LitStr, Meta, Type};

use crate::args;
use crate::errors::Errors;

/// The helper attribute marking a field that survives restarts.
const PERSIST: &str = "persist";
/// The container attribute: `#[state(crate = "...")]`.
const STATE: &str = "state";

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    let krate = container_attrs(&input.attrs, &mut errors);
    let fields = persisted_fields(&input, &mut errors);
    let mut out = match errors.is_empty() {
        true => generate(&krate, &input, &fields),
        false => stub(&krate, &input),
    };
    out.extend(errors.to_compile_errors());
    out
}

// ---------------------------------------------------------------------------------------------
// Parse and validate.

/// A `#[persist]` field.
struct Persisted<'a> {
    ident: &'a Ident,
    ty: &'a Type,
}

/// `#[state(crate = "...")]`, and no misplaced `#[persist]` on the struct.
fn container_attrs(attrs: &[Attribute], errors: &mut Errors) -> TokenStream {
    let mut krate = None;
    for attr in attrs {
        if attr.path().is_ident(PERSIST) {
            errors.spanned(
                attr,
                "`#[persist]` goes on a field, to mark it as kept across restarts",
            );
        }
        if !attr.path().is_ident(STATE) {
            continue;
        }
        let Meta::List(list) = &attr.meta else {
            errors.spanned(attr, "expected `#[state(crate = \"hotrestart\")]`");
            continue;
        };
        for meta in args::parse(list.tokens.clone(), errors) {
            let key = args::key(&meta);
            if key != args::CRATE {
                errors.spanned(
                    meta.path(),
                    format_args!(
                        "unknown argument `{key}`: `#[state(...)]` takes only `crate = \"...\"`"
                    ),
                );
            } else if krate.is_some() {
                errors.spanned(meta.path(), "`crate` is given twice: keep one of them");
            } else {
                krate = Some(args::crate_path(&meta, errors));
            }
        }
    }
    krate.flatten().unwrap_or_else(args::default_crate)
}

fn persisted_fields<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Vec<Persisted<'a>> {
    const NAMED: &str = "the snapshot keys each `#[persist]` field by its name";
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => {
            errors.spanned(
                data.enum_token,
                format_args!(
                    "`#[derive(State)]` needs a struct with named fields ({NAMED}): \
                     put the enum in a field, `struct App {{ #[persist] mode: {} }}`",
                    input.ident
                ),
            );
            return Vec::new();
        }
        Data::Union(data) => {
            errors.spanned(
                data.union_token,
                format_args!(
                    "`#[derive(State)]` needs a struct with named fields ({NAMED}): use a struct"
                ),
            );
            return Vec::new();
        }
    };
    let named = match fields {
        Fields::Named(named) => named,
        Fields::Unit => return Vec::new(),
        Fields::Unnamed(unnamed) => {
            errors.spanned(
                unnamed,
                format_args!(
                    "`#[derive(State)]` needs named fields ({NAMED}): write `struct {} {{ name: Type }}`",
                    input.ident
                ),
            );
            return Vec::new();
        }
    };

    let mut persisted = Vec::new();
    for field in &named.named {
        let ident = field.ident.as_ref().expect("named fields have names");
        let mut marked = false;
        for attr in &field.attrs {
            if attr.path().is_ident(STATE) {
                errors.spanned(
                    attr,
                    "`#[state(...)]` goes on the struct; mark fields with `#[persist]`",
                );
                continue;
            }
            if !attr.path().is_ident(PERSIST) {
                continue;
            }
            match &attr.meta {
                Meta::Path(_) => {}
                Meta::List(list) => errors.push(syn::Error::new(
                    list.delimiter.span().join(),
                    "`#[persist]` takes no arguments: write `#[persist]`",
                )),
                Meta::NameValue(nv) => {
                    let (eq, value) = (&nv.eq_token, &nv.value);
                    errors.spanned(
                        quote!(#eq #value),
                        "`#[persist]` takes no arguments: write `#[persist]`",
                    );
                }
            }
            if marked {
                errors.spanned(
                    attr,
                    format_args!("`{ident}` is marked `#[persist]` twice: remove one"),
                );
            }
            marked = true;
        }
        if marked {
            persisted.push(Persisted {
                ident,
                ty: &field.ty,
            });
        }
    }
    persisted
}

// ---------------------------------------------------------------------------------------------
// Expand.

fn generate(krate: &TokenStream, input: &DeriveInput, fields: &[Persisted]) -> TokenStream {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let w = format_ident!("__hotrestart_w");
    let r = format_ident!("__hotrestart_r");

    // Each check and call borrows the field type's span: a type that cannot persist is
    // reported on the field, not on the derive. `(&&&&Field::<T>::NEW).method()` picks, by
    // autoref depth, serde, a lock around a serde type, or the one error (see `__private`).
    let via =
        |ty: &syn::Type| quote_spanned!(ty.span()=> (&&&&#krate::__private::Field::<#ty>::NEW));
    // The check has one level more: a tracked container behind a lock is refused first.
    let asserts = fields.iter().map(|Persisted { ty, .. }| {
        quote_spanned!(ty.span()=> (&&&&&#krate::__private::Field::<#ty>::NEW).persist_check();)
    });
    let saves = fields.iter().map(|Persisted { ident, ty }| {
        let key = key(ident);
        let via = via(ty);
        quote_spanned!(ty.span()=> #via.persist_save(#w, #key, &self.#ident)?;)
    });
    let visit = format_ident!("__hotrestart_visit");
    let tracked = fields.iter().map(|Persisted { ident, ty }| {
        let key = key(ident);
        let via = via(ty);
        quote_spanned!(ty.span()=> #via.persist_tracked(#visit, #key, &self.#ident);)
    });
    let locals: Vec<Ident> = fields
        .iter()
        .map(|f| format_ident!("__hotrestart_{}", f.ident.unraw()))
        .collect();
    let takes = fields
        .iter()
        .zip(&locals)
        .map(|(Persisted { ident, ty }, local)| {
            let key = key(ident);
            let via = via(ty);
            quote_spanned!(ty.span()=> let #local = #via.persist_take(#r, #key)?;)
        });
    let assigns = fields
        .iter()
        .zip(&locals)
        .map(|(Persisted { ident, .. }, local)| {
            quote! {
                if let ::core::option::Option::Some(__hotrestart_value) = #local {
                    self.#ident = __hotrestart_value;
                }
            }
        });

    quote! {
        const _: () = {
            #[allow(unused_imports)]
            use #krate::__private::{
                NotTracked as _, TrackedBehindALock as _, Unsupported as _, ViaLock as _,
                ViaSerde as _, ViaTracked as _,
            };

            fn __hotrestart_assert_persist #impl_generics () #where_clause {
                #(#asserts)*
            }

            #[automatically_derived]
            impl #impl_generics #krate::__private::State for #name #ty_generics #where_clause {
                fn save<'__hotrestart_a>(
                    &'__hotrestart_a self,
                    #w: &mut #krate::__private::SnapshotWriter<'__hotrestart_a>,
                ) -> ::core::result::Result<(), #krate::__private::Error> {
                    #(#saves)*
                    ::core::result::Result::Ok(())
                }

                fn restore(
                    &mut self,
                    #r: &mut #krate::__private::SnapshotReader,
                ) -> ::core::result::Result<(), #krate::__private::Error> {
                    // Take every field first, then assign: an error leaves the state untouched.
                    #(#takes)*
                    #(#assigns)*
                    ::core::result::Result::Ok(())
                }

                fn tracked<'__hotrestart_a>(
                    &'__hotrestart_a self,
                    #visit: &mut dyn ::core::ops::FnMut(
                        &'static str,
                        &'__hotrestart_a dyn #krate::__private::Tracked,
                    ),
                ) {
                    let _ = &#visit;
                    #(#tracked)*
                }
            }
        };
    }
}

/// The snapshot key of a field: its name, without `r#`.
fn key(ident: &Ident) -> LitStr {
    LitStr::new(&ident.unraw().to_string(), ident.span())
}

/// An impl that compiles whatever the input, emitted next to the errors so that code using
/// the state as a `State` reports nothing more.
fn stub(krate: &TokenStream, input: &DeriveInput) -> TokenStream {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::__private::State for #name #ty_generics #where_clause {
                fn save<'__hotrestart_a>(
                    &'__hotrestart_a self,
                    _: &mut #krate::__private::SnapshotWriter<'__hotrestart_a>,
                ) -> ::core::result::Result<(), #krate::__private::Error> {
                    ::core::unreachable!("`#[derive(State)]` reported an error")
                }

                fn restore(
                    &mut self,
                    _: &mut #krate::__private::SnapshotReader,
                ) -> ::core::result::Result<(), #krate::__private::Error> {
                    ::core::unreachable!("`#[derive(State)]` reported an error")
                }
            }
        };
    }
}
