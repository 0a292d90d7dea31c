//! Checks that parsing cannot express: conflicts between fields, names
//! that must be identifiers, attribute combinations, function shapes.

use std::collections::BTreeMap;
use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Expr, ExprLit, FnArg, GenericParam, Ident, Lit, LitStr, Pat, ReturnType, Type};

use crate::ast::{Distributed, Lock};
use crate::attr::attribute_span;
use crate::Errors;

/// Names of the serde derives that conflict with `#[distributed]`.
const SERDE_DERIVES: [&str; 2] = ["Serialize", "Deserialize"];

pub(crate) fn distributed(input: &Distributed, errors: &mut Errors) {
    serde_derive(input, errors);
    for param in &input.generics.params {
        if let GenericParam::Lifetime(lifetime) = param {
            errors.error(
                &lifetime.lifetime,
                "`#[distributed]` structs cannot have lifetime parameters: distributed values \
                 are owned (`'static`) and travel between nodes",
            );
        }
    }
    if let Some(id) = &input.args.id {
        if id.value().is_empty() {
            errors.error(id, "the default id must not be empty");
        }
    }
    for name in [&input.args.change, &input.args.fields]
        .into_iter()
        .flatten()
    {
        ident_from(name, errors);
    }

    let mut stored: BTreeMap<String, &Ident> = BTreeMap::new();
    let mut variants: BTreeMap<String, &Ident> = BTreeMap::new();
    for field in &input.fields {
        if let (Some(skip), Some(rename)) = (&field.attrs.skip, &field.attrs.rename) {
            errors.error(
                rename,
                format!(
                    "`{skip}` and `rename` cannot be combined: a skipped field is not stored, so \
                     it has no stored name"
                ),
            );
            continue;
        }
        if !field.is_stored() {
            continue;
        }
        let name = field.stored_name();
        let name_tokens: &dyn quote::ToTokens = match &field.attrs.rename {
            Some(rename) => rename,
            None => field.ident,
        };
        if name.is_empty() {
            errors.error(name_tokens, "a stored field name must not be empty");
        } else if name.starts_with('$') {
            errors.error(
                name_tokens,
                "stored field names starting with `$` are reserved for dref's own fields",
            );
        } else if let Some(first) = stored.get(&name) {
            errors.error(
                name_tokens,
                format!(
                    "two fields are stored as `{name}` (`{first}` and `{}`): rename one with \
                     `#[dref(rename = \"...\")]`",
                    field.ident.unraw()
                ),
            );
        } else {
            stored.insert(name, field.ident);
        }
        let variant = variant_name(field.ident);
        if !variant.starts_with(|c: char| c.is_alphabetic()) {
            errors.error(
                field.ident,
                format!(
                    "cannot name a change variant after the field `{}`: give the field a name \
                     that starts with a letter",
                    field.ident.unraw()
                ),
            );
        } else if let Some(first) = variants.get(&variant) {
            errors.error(
                field.ident,
                format!(
                    "fields `{first}` and `{}` would both be reported as the change variant \
                     `{variant}`; rename one of them",
                    field.ident.unraw()
                ),
            );
        } else {
            variants.insert(variant, field.ident);
        }
    }
    if stored.is_empty() && errors.is_empty() {
        errors.error(
            input.ident,
            "a `#[distributed]` struct needs at least one stored field (one not marked \
             `#[dref(skip)]`)",
        );
    }
}

/// `#[derive(Serialize)]` or `#[derive(Deserialize)]` on the struct: one
/// error on the first such derive.
fn serde_derive(input: &Distributed, errors: &mut Errors) {
    for attr in input
        .input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
    {
        let Ok(paths) = attr.parse_args_with(
            syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
        ) else {
            continue;
        };
        for path in paths {
            let Some(last) = path.segments.last() else {
                continue;
            };
            if SERDE_DERIVES.iter().any(|d| last.ident == d) {
                errors.error(
                    &path,
                    format!(
                        "a `#[distributed]` struct must not derive `{}`: dref stores it field by \
                         field through its own `dref::Value` implementation, which would conflict \
                         with the one every serde type gets (one field holding the whole value); \
                         remove this derive, or remove `#[distributed]` to store the struct as \
                         one value",
                        last.ident
                    ),
                );
                return;
            }
        }
    }
}

/// An identifier given as a string (`change = "FlagEvent"`).
pub(crate) fn ident_from(name: &LitStr, errors: &mut Errors) -> Option<Ident> {
    match syn::parse_str::<Ident>(&name.value()) {
        Ok(ident) => Some(Ident::new(&ident.to_string(), name.span())),
        Err(_) => {
            errors.error(name, format!("`{}` is not a valid type name", name.value()));
            None
        }
    }
}

/// The change enum variant of a field: `beta_feature` -> `BetaFeature`.
pub(crate) fn variant_name(field: &Ident) -> String {
    field
        .unraw()
        .to_string()
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// What `#[dref::lock]` resolved from its arguments and the function.
pub(crate) struct LockPlan {
    pub(crate) name: LitStr,
    pub(crate) ctx: LockCtx,
    pub(crate) mode: LockMode,
    /// Span of the declared return type, for the `From<dref::Error>` bound.
    pub(crate) return_span: Span,
}

pub(crate) enum LockCtx {
    /// `ctx = expr`.
    Expr(Expr),
    /// A `&Context` parameter.
    Param(Ident),
    /// `Context::current()`.
    Ambient,
}

pub(crate) enum LockMode {
    Wait,
    Try,
    /// A timeout given as a string literal, parsed here.
    Timeout(Duration),
    /// A timeout given as a `Duration` expression.
    TimeoutExpr(Expr),
}

pub(crate) fn lock(input: &Lock, errors: &mut Errors) -> Option<LockPlan> {
    let sig = &input.item.sig;
    let name = match &input.args.name {
        Some(name) if name.value().is_empty() => {
            errors.error(name, "the lock name must not be empty");
            None
        }
        Some(name) => Some(name.clone()),
        None => {
            errors.error_at(
                attribute_span(),
                "`#[dref::lock]` needs the lock's name: `#[dref::lock(\"name\")]`",
            );
            None
        }
    };
    if sig.asyncness.is_none() {
        errors.error(
            sig.fn_token,
            "`#[dref::lock]` requires an `async fn`: the lock is held while the body awaits",
        );
    }
    if let Some(semi) = &input.item.semi {
        errors.error(
            semi,
            "`#[dref::lock]` needs a function body to run under the lock",
        );
    }
    let return_span = match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => Some(syn::spanned::Spanned::span(ty)),
        ReturnType::Type(_, ty) => {
            errors.error(
                ty,
                "`#[dref::lock]` requires the function to return `Result<T, E>` with \
                 `E: From<dref::Error>`, to report a busy, timed out or lost lock",
            );
            None
        }
        ReturnType::Default => {
            errors.error(
                &sig.ident,
                "`#[dref::lock]` requires the function to return `Result<T, E>` with \
                 `E: From<dref::Error>`, to report a busy, timed out or lost lock",
            );
            None
        }
    };
    let mode = match (&input.args.try_, &input.args.timeout) {
        (Some(flag), Some(_)) => {
            errors.error(
                flag,
                "`try` and `timeout` cannot be combined: `try` does not wait at all",
            );
            None
        }
        (Some(_), None) => Some(LockMode::Try),
        (
            None,
            Some((
                _,
                Expr::Lit(ExprLit {
                    lit: Lit::Str(text),
                    ..
                }),
            )),
        ) => match parse_duration(&text.value()) {
            Ok(timeout) => Some(LockMode::Timeout(timeout)),
            Err(message) => {
                errors.error(text, message);
                None
            }
        },
        (None, Some((_, expr))) => Some(LockMode::TimeoutExpr(expr.clone())),
        (None, None) => Some(LockMode::Wait),
    };
    let ctx = match &input.args.ctx {
        Some((_, expr)) => Some(LockCtx::Expr(expr.clone())),
        None => context_param(sig, errors),
    };
    Some(LockPlan {
        name: name?,
        ctx: ctx?,
        mode: mode?,
        return_span: return_span?,
    })
}

/// Whether a return type is a `Result` (any path ending in `Result`, such
/// as `dref::Result<T>` or `std::io::Result<T>`).
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Result"),
        Type::Group(group) => returns_result(&group.elem),
        Type::Paren(paren) => returns_result(&paren.elem),
        _ => false,
    }
}

/// The `&Context` parameter to take the lock through, if there is exactly
/// one; else the ambient context.
fn context_param(sig: &syn::Signature, errors: &mut Errors) -> Option<LockCtx> {
    let mut found: Option<Ident> = None;
    for arg in &sig.inputs {
        let FnArg::Typed(arg) = arg else { continue };
        let Type::Reference(reference) = &*arg.ty else {
            continue;
        };
        let Type::Path(path) = &*reference.elem else {
            continue;
        };
        if path
            .path
            .segments
            .last()
            .is_none_or(|s| s.ident != "Context")
        {
            continue;
        }
        let Pat::Ident(pat) = &*arg.pat else {
            continue;
        };
        if found.is_some() {
            errors.error(
                &pat.ident,
                "several `&Context` parameters: choose the one to lock through with \
                 `#[dref::lock(\"name\", ctx = ...)]`",
            );
            return None;
        }
        found = Some(pat.ident.clone());
    }
    Some(found.map_or(LockCtx::Ambient, LockCtx::Param))
}

/// Parses a duration such as `"5s"`, `"250ms"`, `"1m30s"` or `"2h"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid timeout `{text}`: expected a number with a unit (`ms`, `s`, `m` or `h`), \
             such as \"500ms\", \"5s\" or \"1m30s\""
        )
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5 s", "5sec", "-5s", "1.5s", "5s5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn variant_names() {
        let name = |s: &str| variant_name(&syn::parse_str::<Ident>(s).unwrap());
        assert_eq!(name("beta_feature"), "BetaFeature");
        assert_eq!(name("rollout"), "Rollout");
        assert_eq!(name("r#type"), "Type");
        assert_eq!(name("_private"), "Private");
        assert_eq!(name("a__b"), "AB");
        assert_eq!(name("http2_port"), "Http2Port");
    }
}
