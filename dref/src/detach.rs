//! Work that must outlive the call or value that started it: a release
//! after a guard was dropped, the clean-up of a cancelled acquisition, a
//! revocation at shutdown. One place runs it, and says when it fails.

use std::future::Future;

use crate::Result;

/// Runs `work` in the background on the current Tokio runtime. A failure
/// is logged with `what`, since nobody is left to return it to. Without a
/// runtime (a value dropped outside one) nothing can run: that is logged
/// too, and the store's lease expiry is left to tidy up.
pub(crate) fn detach<F>(what: &'static str, work: F)
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(error) = work.await {
                    tracing::warn!(%error, "{what} failed");
                }
            });
        }
        Err(_) => tracing::warn!("{what} skipped: no Tokio runtime to run it on"),
    }
}
