//! Code generation. Generated code names only `::dref::__private::…` and
//! `::core`/`::std` paths, so it works whatever the user imported.
//!
//! Bounds on field types are written `for<'__dref> Ty: Trait`: a bound on a
//! concrete type that does not hold would otherwise be an error of its own
//! at every generated impl. Written this way it is checked only where the
//! impl is used, and one spanned assertion per field type (see
//! [`assertions`]) reports the unsatisfied bound once, on the field's type.

use proc_macro2::{Literal, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{DeriveInput, GenericParam, Ident, Type};

use crate::ast::{self, Distributed, Field, Lock, LockFn};
use crate::valid::{self, LockCtx, LockMode, LockPlan};
use crate::{attr, Errors};

/// `#[distributed]`: the struct as written, plus the generated items or the
/// errors.
pub(crate) fn distributed(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = attr::distributed_args(args, &mut errors);
    let input = match syn::parse2::<DeriveInput>(item.clone()) {
        Ok(input) => input,
        Err(_) => {
            errors.error_at(
                attr::attribute_span(),
                "`#[distributed]` goes on a struct with named fields",
            );
            let errors = errors.into_compile_error();
            return quote!(#item #errors);
        }
    };
    let parsed = Distributed::from_input(&input, args, &mut errors);
    if let Some(parsed) = &parsed {
        valid::distributed(parsed, &mut errors);
    }
    let stripped = ast::strip_field_attrs(&input);
    match parsed {
        Some(parsed) if errors.is_empty() => {
            let generated = generate(&parsed, &mut errors);
            let errors = errors.into_compile_error();
            quote!(#stripped #generated #errors)
        }
        _ => {
            let errors = errors.into_compile_error();
            quote!(#stripped #errors)
        }
    }
}

/// Names of the generated types.
struct Names {
    change: Ident,
    fields: Ident,
}

fn generate(input: &Distributed, errors: &mut Errors) -> TokenStream {
    let ident = input.ident;
    let names = Names {
        change: input
            .args
            .change
            .as_ref()
            .and_then(|n| valid::ident_from(n, errors))
            .unwrap_or_else(|| format_ident!("{}Change", ident)),
        fields: input
            .args
            .fields
            .as_ref()
            .and_then(|n| valid::ident_from(n, errors))
            .unwrap_or_else(|| format_ident!("{}Fields", ident)),
    };
    let change_enum = change_enum(input, &names);
    let value_impl = value_impl(input, &names);
    let fields_struct = fields_struct(input, &names);
    let ids = ids(input);
    let assertions = assertions(input);
    quote! {
        #change_enum
        #value_impl
        #fields_struct
        #ids
        #assertions
    }
}

/// The variant of a stored field in the change enum.
fn variant(field: &Field) -> Ident {
    Ident::new(&valid::variant_name(field.ident), field.ident.span())
}

/// The struct's `where` predicates plus `extra`.
fn where_with(input: &Distributed, extra: &[TokenStream]) -> TokenStream {
    let existing = input
        .generics
        .where_clause
        .iter()
        .flat_map(|w| w.predicates.iter());
    quote!(where #(#existing,)* #(#extra,)*)
}

/// `for<'__dref> Ty: bound` for every stored field type.
fn field_bounds(input: &Distributed, bound: TokenStream) -> Vec<TokenStream> {
    input
        .stored()
        .map(|f| {
            let ty = f.ty;
            quote!(for<'__dref> #ty: #bound)
        })
        .collect()
}

/// The bounds under which the struct is a `Value`. Items that need
/// `Struct: Value` repeat these instead of naming that bound, which would
/// hide the impl's associated types from them.
fn value_bounds(input: &Distributed) -> Vec<TokenStream> {
    let self_ty = self_ty(input);
    let mut bounds = field_bounds(input, quote!(::dref::__private::FieldValue));
    bounds.push(quote! {
        for<'__dref> #self_ty: ::core::clone::Clone
            + ::core::marker::Send
            + ::core::marker::Sync
            + 'static
    });
    bounds
}

fn self_ty(input: &Distributed) -> TokenStream {
    let ident = input.ident;
    let (_, ty_generics, _) = input.generics.split_for_impl();
    quote!(#ident #ty_generics)
}

/// Names of the struct's type and const parameters.
fn generic_names<'a>(input: &'a Distributed) -> Vec<&'a Ident> {
    input
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            GenericParam::Type(t) => Some(&t.ident),
            GenericParam::Const(c) => Some(&c.ident),
            GenericParam::Lifetime(_) => None,
        })
        .collect()
}

/// Whether `tokens` mention `ident`.
fn mentions(tokens: TokenStream, ident: &Ident) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == *ident,
        TokenTree::Group(g) => mentions(g.stream(), ident),
        _ => false,
    })
}

fn change_enum(input: &Distributed, names: &Names) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let change = &names.change;
    let generics = input.generics;
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let stored: Vec<&Field> = input.stored().collect();
    let variants: Vec<Ident> = stored.iter().map(|f| variant(f)).collect();
    let tys: Vec<&Type> = stored.iter().map(|f| f.ty).collect();
    let labels: Vec<String> = variants.iter().map(ToString::to_string).collect();
    let variant_docs = stored.iter().map(|f| {
        format!(
            "The field `{}` (stored as `{}`) changed; carries its new value.",
            f.ident,
            f.stored_name()
        )
    });
    let doc = format!(
        "A change to one stored field of [`{ident}`], as delivered by `DRef<{ident}>::changes()`: \
         one event per changed field, carrying the field's new value."
    );

    // Type parameters used only by skipped fields still need a use.
    let unused: Vec<&Ident> = input
        .generics
        .type_params()
        .map(|p| &p.ident)
        .filter(|p| !tys.iter().any(|ty| mentions(ty.to_token_stream(), p)))
        .collect();
    let (phantom, phantom_arm, phantom_pair) = if unused.is_empty() {
        (quote!(), quote!(), quote!())
    } else {
        (
            quote! {
                #[doc(hidden)]
                __Phantom(
                    ::core::marker::PhantomData<fn() -> (#(#unused,)*)>,
                    ::core::convert::Infallible,
                ),
            },
            quote!(Self::__Phantom(_, never) => match *never {},),
            quote!((Self::__Phantom(_, never), _) => match *never {},),
        )
    };

    let bounded = |bound: TokenStream| where_with(input, &field_bounds(input, bound));
    let where_clone = bounded(quote!(::core::clone::Clone));
    let where_eq = bounded(quote!(::core::cmp::PartialEq));
    let where_total_eq = bounded(quote!(::core::cmp::Eq));
    let where_debug = bounded(quote!(::core::fmt::Debug));

    quote! {
        #[doc = #doc]
        #vis enum #change #generics #where_clause {
            #(
                #[doc = #variant_docs]
                #variants(#tys),
            )*
            #phantom
        }

        #[automatically_derived]
        impl #impl_generics ::core::clone::Clone for #change #ty_generics #where_clone {
            fn clone(&self) -> Self {
                match self {
                    #(Self::#variants(value) => Self::#variants(::core::clone::Clone::clone(value)),)*
                    #phantom_arm
                }
            }
        }

        #[automatically_derived]
        impl #impl_generics ::core::cmp::PartialEq for #change #ty_generics #where_eq {
            #[allow(unreachable_patterns)]
            fn eq(&self, other: &Self) -> bool {
                match (self, other) {
                    #((Self::#variants(a), Self::#variants(b)) => ::core::cmp::PartialEq::eq(a, b),)*
                    #phantom_pair
                    _ => false,
                }
            }
        }

        #[automatically_derived]
        impl #impl_generics ::core::cmp::Eq for #change #ty_generics #where_total_eq {}

        #[automatically_derived]
        impl #impl_generics ::core::fmt::Debug for #change #ty_generics #where_debug {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self {
                    #(Self::#variants(value) => f.debug_tuple(#labels).field(value).finish(),)*
                    #phantom_arm
                }
            }
        }
    }
}

fn value_impl(input: &Distributed, names: &Names) -> TokenStream {
    let ident = input.ident;
    let change = &names.change;
    let fields = &names.fields;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let self_ty = self_ty(input);
    let where_value = where_with(input, &value_bounds(input));

    let stored: Vec<&Field> = input.stored().collect();
    let stored_idents: Vec<&Ident> = stored.iter().map(|f| f.ident).collect();
    let stored_names: Vec<String> = stored.iter().map(|f| f.stored_name()).collect();
    let tys: Vec<&Type> = stored.iter().map(|f| f.ty).collect();
    let indices: Vec<Literal> = (0..stored.len()).map(Literal::usize_unsuffixed).collect();
    let variants: Vec<Ident> = stored.iter().map(|f| variant(f)).collect();
    let name_prefixes = stored_names.iter().enumerate().map(|(i, name)| {
        let sep = if i == 0 { "" } else { "," };
        format!("{sep}{name}:")
    });
    let struct_name = format!("{ident}{{");
    let skipped = input.fields.iter().filter(|f| !f.is_stored()).map(|f| {
        let (field, ty) = (f.ident, f.ty);
        let default = quote_spanned!(ty.span()=> <#ty as ::core::default::Default>::default());
        quote!(#field: #default)
    });

    quote! {
        #[automatically_derived]
        impl #impl_generics ::dref::__private::Value for #self_ty #where_value {
            type Change = #change #ty_generics;
            type Fields = #fields #ty_generics;

            fn fingerprint() -> ::dref::__private::Cow<'static, str> {
                let mut fingerprint = ::std::string::String::from(#struct_name);
                #(
                    fingerprint.push_str(#name_prefixes);
                    fingerprint.push_str(::core::any::type_name::<#tys>());
                )*
                fingerprint.push('}');
                ::dref::__private::Cow::Owned(fingerprint)
            }

            fn field_names() -> &'static [&'static str] {
                &[#(#stored_names),*]
            }

            fn encode_field(
                &self,
                index: usize,
                codec: ::dref::__private::Codec,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::dref::__private::CodecError> {
                match index {
                    #(#indices => codec.encode(&self.#stored_idents),)*
                    _ => ::core::result::Result::Err(::dref::__private::no_such_field(index)),
                }
            }

            fn encode_field_into(
                &self,
                index: usize,
                codec: ::dref::__private::Codec,
                out: &mut ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), ::dref::__private::CodecError> {
                match index {
                    #(#indices => codec.encode_into(&self.#stored_idents, out),)*
                    _ => ::core::result::Result::Err(::dref::__private::no_such_field(index)),
                }
            }

            fn decode_fields(
                fields: &[&[u8]],
                codec: ::dref::__private::Codec,
            ) -> ::core::result::Result<Self, (usize, ::dref::__private::CodecError)> {
                ::core::result::Result::Ok(Self {
                    #(#stored_idents: ::dref::__private::decode_field(fields, #indices, codec)?,)*
                    #(#skipped,)*
                })
            }

            fn decode_change(
                index: usize,
                bytes: &[u8],
                codec: ::dref::__private::Codec,
            ) -> ::core::result::Result<Self::Change, ::dref::__private::CodecError> {
                match index {
                    #(#indices => codec.decode(bytes).map(#change::#variants),)*
                    _ => ::core::result::Result::Err(::dref::__private::no_such_field(index)),
                }
            }

            fn fields(core: &::dref::__private::RefCore<Self>) -> Self::Fields {
                #fields {
                    __dref_core: ::core::clone::Clone::clone(core),
                }
            }
        }
    }
}

fn fields_struct(input: &Distributed, names: &Names) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let change = &names.change;
    let fields = &names.fields;
    let generics = input.generics;
    let (impl_generics, ty_generics, _) = generics.split_for_impl();
    let self_ty = self_ty(input);
    let where_struct = where_with(input, &value_bounds(input));
    let where_impl = &where_struct;
    let doc = format!(
        "Per-field handles of a `DRef<{ident}>`, reached through `Deref`: `flags.field()` \
         returns a `dref::FieldRef` that reads, writes and watches that one field."
    );
    let accessors = input.stored().enumerate().map(|(index, f)| {
        let (field, field_vis, ty) = (f.ident, f.vis, f.ty);
        let index = Literal::usize_unsuffixed(index);
        let variant = variant(f);
        let doc = format!(
            "A handle on the field `{}` (stored as `{}`): read, write and watch it alone.",
            f.ident,
            f.stored_name()
        );
        quote! {
            #[doc = #doc]
            #[allow(unreachable_patterns)]
            #field_vis fn #field(&self) -> ::dref::__private::FieldRef<#self_ty, #ty> {
                ::dref::__private::field_ref(
                    &self.__dref_core,
                    #index,
                    |value: &#self_ty| &value.#field,
                    |value: &mut #self_ty| &mut value.#field,
                    |change| match change {
                        #change::#variant(value) => ::core::option::Option::Some(value),
                        _ => ::core::option::Option::None,
                    },
                )
            }
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #fields #generics #where_struct {
            __dref_core: ::dref::__private::RefCore<#self_ty>,
        }

        #[allow(dead_code)]
        impl #impl_generics #fields #ty_generics #where_impl {
            #(#accessors)*
        }
    }
}

/// `Flags::id(name)` and, with `#[distributed(id = "...")]`, `default_id()`.
fn ids(input: &Distributed) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let id_doc = format!(
        "The id of the ref named `name` holding a [`{ident}`], for `Context::make`: every node \
         that makes a ref with the same id shares its record."
    );
    let default_id = input.args.id.as_ref().map(|id| {
        let doc = format!(
            "The id of this type's default ref, named `{}` (from `#[distributed(id = ...)]`).",
            id.value()
        );
        quote! {
            #[doc = #doc]
            #vis fn default_id() -> ::dref::__private::ManualId<Self> {
                ::dref::__private::ManualId::new(#id)
            }
        }
    });
    quote! {
        #[allow(dead_code)]
        impl #impl_generics #ident #ty_generics #where_clause {
            #[doc = #id_doc]
            #vis fn id(
                name: impl ::core::convert::Into<::std::string::String>,
            ) -> ::dref::__private::ManualId<Self> {
                ::dref::__private::ManualId::new(name)
            }

            #default_id
        }
    }
}

/// Compile-time checks that report an unsuitable field type once, on that
/// type, and a struct that is not `Clone + Send + Sync + 'static` on its
/// name. Types that mention the struct's generic parameters are checked
/// where the struct is used with concrete arguments instead.
fn assertions(input: &Distributed) -> TokenStream {
    let generic = generic_names(input);
    let fields = input
        .stored()
        .filter(|f| !generic.iter().any(|g| mentions(f.ty.to_token_stream(), g)))
        .map(|f| {
            let ty = f.ty;
            quote_spanned!(ty.span()=> let _ = ::dref::__private::assert_field_value::<#ty>;)
        });
    let ident = input.ident;
    let whole = input.generics.params.is_empty().then(
        || quote_spanned!(ident.span()=> let _ = ::dref::__private::assert_distributed::<#ident>;),
    );
    quote! {
        const _: () = {
            #(#fields)*
            #whole
        };
    }
}

/// `#[dref::lock]`: the function with its body run under the lock, or the
/// function as written plus the errors.
pub(crate) fn lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let Some(input) = Lock::parse(args, item.clone(), &mut errors) else {
        let errors = errors.into_compile_error();
        return quote!(#item #errors);
    };
    match valid::lock(&input, &mut errors) {
        Some(plan) if errors.is_empty() => locked_fn(&input.item, plan).unwrap_or(item),
        _ => {
            let errors = errors.into_compile_error();
            quote!(#item #errors)
        }
    }
}

fn locked_fn(item: &LockFn, plan: LockPlan) -> Option<TokenStream> {
    let LockFn {
        attrs,
        vis,
        sig,
        body,
        ..
    } = item;
    let body = body.as_ref()?;
    let ctx = match plan.ctx {
        LockCtx::Expr(expr) => {
            quote_spanned!(expr.span()=> ::dref::__private::context_of(&(#expr)))
        }
        LockCtx::Param(param) => quote!(::dref::__private::context_of(#param)),
        LockCtx::Ambient => quote!(::dref::__private::Context::current()),
    };
    let mode = match plan.mode {
        LockMode::Wait => quote!(::dref::__private::LockMode::Wait),
        LockMode::Try => quote!(::dref::__private::LockMode::Try),
        LockMode::Timeout(timeout) => {
            let secs = timeout.as_secs();
            let nanos = timeout.subsec_nanos();
            quote!(::dref::__private::LockMode::Timeout(::core::time::Duration::new(#secs, #nanos)))
        }
        LockMode::TimeoutExpr(expr) => quote!(::dref::__private::LockMode::Timeout(#expr)),
    };
    let name = plan.name;
    // Spanned on the return type: an error type without `From<dref::Error>`
    // is reported there.
    let call = quote_spanned! {plan.return_span=>
        ::dref::__private::locked(#ctx, #name, #mode, async move #body).await
    };
    Some(quote! {
        #(#attrs)*
        #vis #sig {
            #call
        }
    })
}

#[cfg(test)]
mod tests {
    use proc_macro2::{Spacing, TokenStream, TokenTree};
    use quote::quote;

    /// The first segments of every absolute path (`::a::b`) in `tokens`.
    fn absolute_paths(tokens: TokenStream, out: &mut Vec<(String, String)>) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tt) in tokens.iter().enumerate() {
            if let TokenTree::Group(group) = tt {
                absolute_paths(group.stream(), out);
            }
            let before = |back: usize| i.checked_sub(back).and_then(|p| tokens.get(p));
            // `a::b` and `<T as X>::b` continue a path; `-> ::b` starts one.
            let continues = match before(1) {
                Some(TokenTree::Ident(_)) => true,
                Some(TokenTree::Punct(p)) if p.as_char() == '>' => {
                    !matches!(before(2), Some(TokenTree::Punct(q)) if q.as_char() == '-')
                }
                _ => false,
            };
            let leading = match (tt, tokens.get(i + 1)) {
                (TokenTree::Punct(a), Some(TokenTree::Punct(b))) => {
                    a.as_char() == ':'
                        && a.spacing() == Spacing::Joint
                        && b.as_char() == ':'
                        && !continues
                }
                _ => false,
            };
            if leading {
                let first = tokens
                    .get(i + 2)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let second = tokens
                    .get(i + 5)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                out.push((first, second));
            }
        }
    }

    fn assert_hygienic(expanded: TokenStream) {
        let mut paths = Vec::new();
        absolute_paths(expanded.clone(), &mut paths);
        assert!(!paths.is_empty());
        for (first, second) in paths {
            match first.as_str() {
                "core" | "std" => {}
                "dref" => assert_eq!(second, "__private", "in {expanded}"),
                other => panic!("generated code names `::{other}`: {expanded}"),
            }
        }
        assert!(
            !expanded.to_string().contains("compile_error"),
            "unexpected error: {expanded}"
        );
    }

    #[test]
    fn distributed_names_only_private_and_std_paths() {
        let expanded = super::distributed(
            quote!(id = "flags", change = "FlagEvent"),
            quote! {
                #[derive(Clone)]
                pub struct Flags<T: Clone, L = ()> where T: Send {
                    pub beta_feature: bool,
                    #[dref(rename = "pct")]
                    rollout: Vec<T>,
                    #[dref(skip)]
                    local: Option<L>,
                }
            },
        );
        assert_hygienic(expanded.clone());
        let text = expanded.to_string();
        assert!(text.contains("enum FlagEvent"), "{text}");
        assert!(text.contains("struct FlagsFields"), "{text}");
        assert!(text.contains("fn default_id"), "{text}");
        assert!(text.contains("\"pct\""), "{text}");
        assert!(
            !text.contains("# [dref"),
            "field attributes are stripped: {text}"
        );
    }

    #[test]
    fn lock_names_only_private_and_std_paths() {
        let expanded = super::lock(
            quote!("daily-report", timeout = "1m30s"),
            quote! {
                async fn report(&self, n: u32) -> Result<u32, MyError> { Ok(n) }
            },
        );
        assert_hygienic(expanded.clone());
        let text = expanded.to_string();
        assert!(
            text.contains("async fn report (& self , n : u32) -> Result < u32 , MyError >"),
            "the signature is kept: {text}"
        );
        assert!(text.contains("Duration :: new (90u64 , 0u32)"), "{text}");
    }

    #[test]
    fn errors_keep_the_item() {
        let item = quote!(
            fn report() -> Result<(), E> {
                Ok(())
            }
        );
        let expanded = super::lock(quote!("x"), item.clone()).to_string();
        assert!(expanded.starts_with(&item.to_string()), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 1, "{expanded}");
    }
}
