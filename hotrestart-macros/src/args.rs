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

/// The literal of `key = <literal>` that `pick` accepts, or an error saying the key `takes`
/// something else.
fn lit_value<'a, T>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
    takes: &str,
    pick: fn(&'a Lit) -> Option<&'a T>,
) -> Option<&'a T> {
    let expr = value(meta, example, errors)?;
    if let Expr::Lit(ExprLit { lit, .. }) = expr {
        if let Some(found) = pick(lit) {
            return Some(found);
        }
    }
    errors.spanned(
        expr,
        format_args!("`{}` takes {takes}: write `{example}`", key(meta)),
    );
    None
}

/// The string of `key = "..."`.
pub(crate) fn str_value<'a>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
) -> Option<&'a LitStr> {
    lit_value(meta, example, errors, "a string", |lit| match lit {
        Lit::Str(s) => Some(s),
        _ => None,
    })
}

/// The integer of `key = 4`.
pub(crate) fn int_value<'a>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
) -> Option<&'a LitInt> {
    lit_value(meta, example, errors, "a whole number", |lit| match lit {
        Lit::Int(n) => Some(n),
        _ => None,
    })
}

/// The boolean of `key = false`.
pub(crate) fn bool_value<'a>(
    meta: &'a Meta,
    example: &str,
    errors: &mut Errors,
) -> Option<&'a LitBool> {
    lit_value(
        meta,
        example,
        errors,
        "`true` or `false`",
        |lit| match lit {
            Lit::Bool(b) => Some(b),
            _ => None,
        },
    )
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
