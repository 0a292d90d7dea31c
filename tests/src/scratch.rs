//! Scratch directories for tests: one per use, removed when the test
//! passes, kept when it fails.
//!
//! A failing test's files (histories, certificates, data directories) are
//! its evidence, so a directory dropped while its thread panics stays, and
//! its path is printed. Set `DREF_KEEP_SCRATCH=1` to keep every directory,
//! as `scripts/nemesis` does for the histories of its long runs.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system's temporary directory (`TMPDIR`
/// picks the disk), named `dref-<name>-<pid>-<n>`; see the module docs for
/// when it is removed.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates the directory, empty (a leftover of an earlier process with
    /// the same pid is removed first).
    ///
    /// # Panics
    /// When the directory cannot be made: a test cannot go on without it.
    pub fn new(name: &str) -> ScratchDir {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dref-{name}-{}-{n}", std::process::id()));
        if let Err(e) = std::fs::remove_dir_all(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                panic!("cannot clear the scratch directory {}: {e}", path.display());
            }
        }
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot make the scratch directory {}: {e}", path.display());
        }
        ScratchDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.path.display());
            return;
        }
        if std::env::var_os("DREF_KEEP_SCRATCH").is_some_and(|v| v == "1") {
            eprintln!("kept {} (DREF_KEEP_SCRATCH=1)", self.path.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_use_removes_its_directory() {
        let dir = ScratchDir::new("scratch-pass");
        std::fs::write(dir.join("file"), "x").unwrap();
        let path = dir.to_path_buf();
        assert!(path.join("file").exists());
        drop(dir);
        assert!(!path.exists(), "{} is still there", path.display());
    }

    #[test]
    fn a_failing_use_keeps_its_directory() {
        let kept = std::thread::spawn(|| {
            let dir = ScratchDir::new("scratch-fail");
            std::fs::write(dir.join("evidence"), "x").unwrap();
            let path = dir.to_path_buf();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _dir = dir;
                panic!("the test fails");
            }))
            .expect_err("it panicked");
            path
        })
        .join()
        .unwrap();
        assert!(
            kept.join("evidence").exists(),
            "{} was removed",
            kept.display()
        );
        std::fs::remove_dir_all(&kept).unwrap();
    }

    #[test]
    fn two_uses_with_one_name_get_two_directories() {
        let (a, b) = (
            ScratchDir::new("scratch-twice"),
            ScratchDir::new("scratch-twice"),
        );
        assert_ne!(a.path(), b.path());
    }
}
