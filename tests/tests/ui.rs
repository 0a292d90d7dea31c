//! Compile-time behaviour of `#[distributed]` and `#[dref::lock]`: every
//! misuse in `tests/ui/` fails with one precise, spanned error (its
//! `.stderr` beside it), and the programs in `tests/ui/pass/` compile.
//!
//! After a deliberate change of a message, regenerate the `.stderr` files
//! with `TRYBUILD=overwrite cargo test -p dref-tests --test ui` and review
//! every diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/*.rs");
}
