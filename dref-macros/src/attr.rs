//! Arguments of `#[distributed(...)]`, `#[dref(...)]` field attributes and
//! `#[dref::lock(...)]`. Unknown and duplicate keys are reported here, each
//! spanned on its key, and parsing goes on so that every mistake is seen.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, LitStr, Token};

use crate::Errors;

/// `#[distributed(id = "...", change = "...", fields = "...")]`.
#[derive(Default)]
pub(crate) struct DistributedArgs {
    /// Default ref name: generates `default_id()`.
    pub(crate) id: Option<LitStr>,
    /// Name of the change enum.
    pub(crate) change: Option<LitStr>,
    /// Name of the field accessor struct.
    pub(crate) fields: Option<LitStr>,
}

pub(crate) fn distributed_args(args: TokenStream, errors: &mut Errors) -> DistributedArgs {
    let mut out = DistributedArgs::default();
    let parser = syn::meta::parser(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let slot = match key.as_str() {
            "id" => &mut out.id,
            "change" => &mut out.change,
            "fields" => &mut out.fields,
            _ => {
                errors.error(
                    &meta.path,
                    format!(
                        "unknown `#[distributed]` argument `{}`; expected `id = \"...\"`, \
                         `change = \"...\"` or `fields = \"...\"`",
                        path_string(&meta.path)
                    ),
                );
                skip_value(meta.input)?;
                return Ok(());
            }
        };
        let value: LitStr = meta.value()?.parse()?;
        if slot.is_some() {
            errors.error(
                &meta.path,
                format!("duplicate `#[distributed]` argument `{key}`"),
            );
        } else {
            *slot = Some(value);
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(args) {
        errors.push(e);
    }
    out
}

/// `#[dref(skip)]` and `#[dref(rename = "...")]` on a field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// The `skip` key, if present.
    pub(crate) skip: Option<Ident>,
    /// The stored name, if renamed.
    pub(crate) rename: Option<LitStr>,
}

/// Whether `attr` is a `#[dref(...)]` field attribute.
pub(crate) fn is_dref_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("dref")
}

pub(crate) fn field_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| is_dref_attr(a)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                if out.skip.is_some() {
                    errors.error(&meta.path, "duplicate `#[dref]` argument `skip`");
                } else {
                    out.skip = meta.path.get_ident().cloned();
                }
            } else if meta.path.is_ident("rename") {
                let value: LitStr = meta.value()?.parse()?;
                if out.rename.is_some() {
                    errors.error(&meta.path, "duplicate `#[dref]` argument `rename`");
                } else {
                    out.rename = Some(value);
                }
            } else {
                errors.error(
                    &meta.path,
                    format!(
                        "unknown `#[dref]` field argument `{}`; expected `skip` or \
                         `rename = \"...\"`",
                        path_string(&meta.path)
                    ),
                );
                skip_value(meta.input)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

/// The arguments of `#[dref::lock(...)]`.
#[derive(Default)]
pub(crate) struct LockArgs {
    /// The lock's name.
    pub(crate) name: Option<LitStr>,
    /// `ctx = expr`.
    pub(crate) ctx: Option<(Ident, Expr)>,
    /// `timeout = "5s"` or `timeout = <Duration expression>`.
    pub(crate) timeout: Option<(Ident, Expr)>,
    /// The `try` flag.
    pub(crate) try_: Option<Ident>,
}

enum LockArg {
    Name(LitStr),
    KeyValue(Ident, Expr),
    Flag(Ident),
}

fn parse_lock_arg(input: ParseStream) -> syn::Result<LockArg> {
    if input.peek(LitStr) {
        return input.parse().map(LockArg::Name);
    }
    let key = Ident::parse_any(input)?;
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Ok(LockArg::KeyValue(key, input.parse()?))
    } else {
        Ok(LockArg::Flag(key))
    }
}

pub(crate) fn lock_args(args: TokenStream, errors: &mut Errors) -> LockArgs {
    let mut out = LockArgs::default();
    let parser = |input: ParseStream| {
        Punctuated::<LockArg, Token![,]>::parse_terminated_with(input, parse_lock_arg)
    };
    let parsed = match parser.parse2(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(e);
            return out;
        }
    };
    for arg in parsed {
        match arg {
            LockArg::Name(name) if out.name.is_some() => {
                errors.error(&name, "duplicate lock name: `#[dref::lock]` takes one name");
            }
            LockArg::Name(name) => out.name = Some(name),
            LockArg::KeyValue(key, value) => {
                let slot = match key.to_string().as_str() {
                    "ctx" => &mut out.ctx,
                    "timeout" => &mut out.timeout,
                    _ => {
                        errors.error(&key, unknown_lock_option(&key));
                        continue;
                    }
                };
                if slot.is_some() {
                    errors.error(&key, format!("duplicate `#[dref::lock]` option `{key}`"));
                } else {
                    *slot = Some((key, value));
                }
            }
            LockArg::Flag(flag) if flag == "try" => {
                if out.try_.is_some() {
                    errors.error(&flag, "duplicate `#[dref::lock]` option `try`");
                } else {
                    out.try_ = Some(flag);
                }
            }
            LockArg::Flag(flag) if flag == "ctx" || flag == "timeout" => {
                errors.error(&flag, format!("`{flag}` needs a value: `{flag} = ...`"));
            }
            LockArg::Flag(flag) => errors.error(&flag, unknown_lock_option(&flag)),
        }
    }
    out
}

fn unknown_lock_option(key: &Ident) -> String {
    format!(
        "unknown `#[dref::lock]` option `{key}`; expected `ctx = ...`, `timeout = \"...\"` or \
         `try` (the lock name is a string literal: `#[dref::lock(\"name\")]`)"
    )
}

/// Skips `= value` after an unknown key, so that parsing can go on.
fn skip_value(input: ParseStream) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse::<Expr>()?;
    } else if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

fn path_string(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.unraw().to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// A span for errors about a missing argument: the attribute itself.
pub(crate) fn attribute_span() -> Span {
    Span::call_site()
}
