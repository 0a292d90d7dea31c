//! Checks a nemesis run's histories (placeholder until the checkers land).

use std::path::Path;

/// Reads every history in `dir` and checks it; panics with the report and
/// the path of the failing histories on a violation.
pub fn check_run(dir: &Path) {
    let mut events = 0;
    for entry in std::fs::read_dir(dir).expect("the run directory") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("a history");
        events += text.lines().count();
    }
    eprintln!("{events} events in {}", dir.display());
}
