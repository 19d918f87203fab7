//! Reading `key = value` attribute arguments, shared by the attributes and the derive.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitBool, LitInt, LitStr, Meta, Token};

use crate::errors::Errors;

/// The key spelled once, for `crate = "..."` on every macro.
pub(crate) const CRATE: &str = "crate";

/// Parses `key = value, ...`; a syntax error is recorded and yields no argument.
pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> Vec<Meta> {
    match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    }
}

/// The key of an argument as written: `ready_timeout`, `crate`, `a::b`.
pub(crate) fn key(meta: &Meta) -> String {
    let path = meta.path();
    match path.get_ident() {
        Some(ident) => ident.to_string(),
        None => path.to_token_stream().to_string().replace(' ', ""),
    }
}

/// The value of `key = value`, or an error showing `example`.
fn value<'a>(meta: &'a Meta, example: &str, errors: &mut Errors) -> Option<&'a Expr> {
    match meta {
        Meta::NameValue(nv) => Some(&nv.value),
        Meta::Path(path) => {
            errors.spanned(
                path,
                format_args!("`{}` needs a value: write `{example}`", key(meta)),
            );
            None
        }
        Meta::List(list) => {
            errors.spanned(
                list,
                format_args!("expected `key = value`: write `{example}`"),
            );
            None
        }
    }
}

/// The string of `key = "..."`.
pub(crate) fn str_value<'a>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
) -> Option<&'a LitStr> {
    match value(meta, example, errors)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit),
        other => {
            errors.spanned(
                other,
                format_args!("`{}` takes a string: write `{example}`", key(meta)),
            );
            None
        }
    }
}

/// The integer of `key = 4`.
pub(crate) fn int_value<'a>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
) -> Option<&'a LitInt> {
    match value(meta, example, errors)? {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => Some(lit),
        other => {
            errors.spanned(
                other,
                format_args!("`{}` takes a whole number: write `{example}`", key(meta)),
            );
            None
        }
    }
}

/// The boolean of `key = false`.
pub(crate) fn bool_value<'a>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
) -> Option<&'a LitBool> {
    match value(meta, example, errors)? {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Some(lit),
        other => {
            errors.spanned(
                other,
                format_args!("`{}` takes `true` or `false`: write `{example}`", key(meta)),
            );
            None
        }
    }
}

/// The path of `crate = "my_hotrestart"`, spanned on the string so errors land on it.
pub(crate) fn crate_path(meta: &Meta, errors: &mut Errors) -> Option<TokenStream> {
    const EXAMPLE: &str = "crate = \"hotrestart\"";
    let lit = str_value(meta, EXAMPLE, errors)?;
    match lit.parse_with(syn::Path::parse_mod_style) {
        Ok(mut path) => {
            for segment in &mut path.segments {
                segment.ident.set_span(lit.span());
            }
            Some(path.into_token_stream())
        }
        Err(_) => {
            errors.spanned(
                lit,
                format_args!(
                    "`crate` takes the path of the hotrestart crate, like `{EXAMPLE}` or `crate = \"::renamed\"`, got `{}`",
                    lit.value()
                ),
            );
            None
        }
    }
}

/// The path generated code uses to reach the runtime when no `crate = "..."` is given.
pub(crate) fn default_crate() -> TokenStream {
    quote!(::hotrestart)
}

/// `tokens` with every span set to `span`: a path such as `::hotrestart::__private::f` then
/// reports its errors at `span` (a user's token) rather than at the attribute.
pub(crate) fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner = Group::new(group.delimiter(), respan(&group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            }
            tree.set_span(span);
            tree
        })
        .collect()
}
