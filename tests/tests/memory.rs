//! The conformance suite on the in-memory backend, reached two ways.

/// Through the `Backend` trait (and the fault-injecting wrapper).
mod through_the_trait {
    dref_tests::conformance_suite!(|| async { dref_tests::MemoryHarness::new() });
}

/// Called directly, as `Context::local()` does (refs skip the boxed
/// `Backend` futures, and single-field updates write in place): every case
/// but those that inject faults through the wrapper.
mod direct {
    dref_tests::conformance_suite!(@no_faults || async { dref_tests::MemoryHarness::direct() });
}
