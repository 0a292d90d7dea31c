//! The conformance suite on the in-memory backend.

dref_tests::conformance_suite!(|| async { dref_tests::MemoryHarness::new() });
