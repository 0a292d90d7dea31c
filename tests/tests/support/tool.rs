//! The `dref` command-line tool, for tests that run it against a store.

use std::path::PathBuf;

/// The `dref` binary, built by `cargo test --workspace` beside this test.
pub fn dref_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/dref
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join(format!("dref{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the \
         dref-cli binary too",
        path.display()
    );
    path
}
