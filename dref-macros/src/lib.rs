//! Procedural macros for [dref](https://docs.rs/dref). Use them through the
//! `dref` crate, which re-exports them; generated code names only
//! `::dref::__private` and fully qualified `::core`/`::std` paths.
//!
//! Each macro goes through the same stages: `ast` parses the input,
//! `attr` its attributes, `valid` checks what parsing cannot, and
//! `expand` generates code. Errors of every stage are collected (see
//! `Errors`) so that the user sees each mistake once, spanned on the
//! offending tokens, next to the item re-emitted as it was written.

#![warn(missing_docs)]

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Makes a struct with named fields a distributed value stored field by
/// field. See the documentation of `dref::distributed`.
#[proc_macro_attribute]
pub fn distributed(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed(args.into(), item.into()).into()
}

/// Runs an `async fn` under a cluster-wide lock. See the documentation of
/// `dref::lock`.
#[proc_macro_attribute]
pub fn lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::lock(args.into(), item.into()).into()
}

/// Collects the errors of every stage, to report them all at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// An error spanned on `tokens` (all of them, also on stable Rust).
    pub(crate) fn error(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error at one span.
    pub(crate) fn error_at(&mut self, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn into_compile_error(self) -> proc_macro2::TokenStream {
        self.0.map(|e| e.to_compile_error()).unwrap_or_default()
    }
}
