//! The data directory: its lock file, atomic file replacement, and the
//! errors that name what was being done to which path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs2::FileExt;
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

/// The name of the lock file in a data directory.
pub(super) const LOCK_FILE: &str = "LOCK";

/// A storage error about `path`: what was being done, and the cause.
pub(super) fn io_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    doing: &str,
    path: &Path,
    cause: &io::Error,
) -> StorageError<u64> {
    let source = AnyError::new(cause).add_context(|| format!("{doing} {}", path.display()));
    StorageIOError::new(subject, verb, source).into()
}

/// A storage error that is not an `io::Error` (bad content, a refusal).
pub(super) fn refusal(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    message: String,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::error(message)).into()
}

/// Makes a directory's entries (files created, renamed or removed in it)
/// durable: a file's own fsync does not cover its name.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file
/// or the new one, never a mix: write a temporary file beside it, fsync it,
/// rename it over `path`, fsync the directory.
pub(super) fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "a file path has no directory")
    })?;
    let tmp = temp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Where `path` is written before it is renamed into place.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The pid written in a lock file by its holder.
fn lock_holder(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// An exclusive lock on a data directory, held for as long as any part of
/// the storage opened from it is alive, so that two processes never write
/// one directory. The lock is `flock(2)` on `LOCK`: the kernel drops it
/// when the process dies, so a crash leaves nothing to clean up.
#[derive(Debug)]
pub(super) struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or says who holds it.
    pub(super) fn acquire(dir: &Path) -> Result<Arc<DirLock>, StorageError<u64>> {
        let store_error = |doing: &str, path: &Path, e: &io::Error| {
            io_error(ErrorSubject::Store, ErrorVerb::Write, doing, path, e)
        };
        fs::create_dir_all(dir).map_err(|e| store_error("create the data directory", dir, &e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| store_error("open the lock file", &path, &e))?;
        // A node of this very process that is still stopping (its
        // replication tasks let go of the log a moment after it stopped)
        // is waited for, briefly; another process is refused at once.
        let patience = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file.try_lock_exclusive().is_err()
            && std::time::Instant::now() < patience
            && lock_holder(&path) == Some(std::process::id())
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Err(e) = file.try_lock_exclusive() {
            let mut holder = String::new();
            // Best effort: the holder wrote its pid when it took the lock.
            let holder = match file.read_to_string(&mut holder) {
                Ok(_) if !holder.trim().is_empty() => format!(" (held by pid {})", holder.trim()),
                _ => String::new(),
            };
            return Err(refusal(
                ErrorSubject::Store,
                ErrorVerb::Write,
                format!(
                    "the data directory {} is in use by another process{holder}: {} is locked ({e})",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        // The pid is only a hint for the message above: the lock itself is
        // what excludes others.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| store_error("write the lock file", &path, &e))?;
        Ok(Arc::new(DirLock { file, path }))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes
        // the release immediate even if a descriptor leaked into a child.
        if let Err(e) = fs2::FileExt::unlock(&self.file) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unlock the data directory");
        }
    }
}
