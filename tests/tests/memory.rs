//! The conformance suite on the in-memory backend, reached two ways.

/// Answering at once, as `Context::local()` does.
mod at_once {
    dref_tests::conformance_suite!(|| async { dref_tests::MemoryHarness::new() });
}

/// Through the async forms only, where concurrent updates combine.
mod deferred {
    dref_tests::conformance_suite!(|| async { dref_tests::MemoryHarness::deferred() });
}
