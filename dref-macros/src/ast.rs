//! Parsing: the struct under `#[distributed]` and the function under
//! `#[dref::lock]`, with their attributes.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Block, Data, DeriveInput, Fields, Generics, Ident, Token, Type, Visibility};

use crate::attr::{self, DistributedArgs, FieldAttrs, LockArgs};
use crate::Errors;

/// A struct under `#[distributed]`.
pub(crate) struct Distributed<'a> {
    pub(crate) input: &'a DeriveInput,
    pub(crate) args: DistributedArgs,
    pub(crate) ident: &'a Ident,
    pub(crate) vis: &'a Visibility,
    pub(crate) generics: &'a Generics,
    /// Every field, stored or skipped, in declaration order.
    pub(crate) fields: Vec<Field<'a>>,
}

/// One named field of a `#[distributed]` struct.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) vis: &'a Visibility,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: FieldAttrs,
}

impl Field<'_> {
    /// The name the field is stored under.
    pub(crate) fn stored_name(&self) -> String {
        match &self.attrs.rename {
            Some(name) => name.value(),
            None => self.ident.unraw().to_string(),
        }
    }

    pub(crate) fn is_stored(&self) -> bool {
        self.attrs.skip.is_none()
    }
}

impl<'a> Distributed<'a> {
    /// Parses the struct; `None` (with an error) for enums, unions, tuple
    /// and unit structs.
    pub(crate) fn from_input(
        input: &'a DeriveInput,
        args: DistributedArgs,
        errors: &mut Errors,
    ) -> Option<Self> {
        let named = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(unnamed) => {
                    errors.error(
                        unnamed,
                        "`#[distributed]` needs named fields: each field is stored under its \
                         name, and a tuple struct's fields have none",
                    );
                    return None;
                }
                Fields::Unit => {
                    errors.error(
                        &input.ident,
                        "`#[distributed]` needs a struct with named fields, stored one by one; \
                         a unit struct has nothing to store",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                errors.error(
                    data.enum_token.to_owned(),
                    "`#[distributed]` supports structs with named fields only, not enums; \
                     to share an enum, derive `Serialize` and `Deserialize` on it and store it \
                     as one value",
                );
                return None;
            }
            Data::Union(data) => {
                errors.error(
                    data.union_token.to_owned(),
                    "`#[distributed]` supports structs with named fields only, not unions",
                );
                return None;
            }
        };
        let fields = named
            .named
            .iter()
            .filter_map(|field| {
                let attrs = attr::field_attrs(&field.attrs, errors);
                Some(Field {
                    ident: field.ident.as_ref()?,
                    vis: &field.vis,
                    ty: &field.ty,
                    attrs,
                })
            })
            .collect();
        Some(Distributed {
            input,
            args,
            ident: &input.ident,
            vis: &input.vis,
            generics: &input.generics,
            fields,
        })
    }

    /// The stored fields, in declaration order (their index is the stored
    /// field index).
    pub(crate) fn stored(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter().filter(|f| f.is_stored())
    }
}

/// The item re-emitted for a `#[distributed]` struct: as written, minus the
/// `#[dref(...)]` field attributes (which are only meaningful to the macro).
pub(crate) fn strip_field_attrs(input: &DeriveInput) -> DeriveInput {
    let mut input = input.clone();
    if let Data::Struct(data) = &mut input.data {
        for field in data.fields.iter_mut() {
            field.attrs.retain(|a| !attr::is_dref_attr(a));
        }
    }
    input
}

/// A function under `#[dref::lock]`: a free function, a method, or a trait
/// method (with or without a default body).
pub(crate) struct LockFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: syn::Signature,
    pub(crate) body: Option<Block>,
    pub(crate) semi: Option<Token![;]>,
}

impl Parse for LockFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let (body, semi) = if input.peek(Token![;]) {
            (None, Some(input.parse()?))
        } else {
            (Some(input.parse()?), None)
        };
        Ok(LockFn {
            attrs,
            vis,
            sig,
            body,
            semi,
        })
    }
}

/// `#[dref::lock]`'s input: its arguments and the function.
pub(crate) struct Lock {
    pub(crate) args: LockArgs,
    pub(crate) item: LockFn,
}

impl Lock {
    pub(crate) fn parse(args: TokenStream, item: TokenStream, errors: &mut Errors) -> Option<Self> {
        let args = attr::lock_args(args, errors);
        match syn::parse2::<LockFn>(item) {
            Ok(item) => Some(Lock { args, item }),
            Err(e) => {
                errors.push(syn::Error::new(
                    e.span(),
                    format!("`#[dref::lock]` goes on an `async fn`: {e}"),
                ));
                None
            }
        }
    }
}
