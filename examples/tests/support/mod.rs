//! Helpers shared by the example tests.

use std::path::PathBuf;

/// The built binary of the example `name`.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/run_examples-<hash> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "example binary {} is missing: run the tests with `cargo test --workspace` \
         (or `-p dref-examples`), which builds the examples first",
        path.display()
    );
    path
}
