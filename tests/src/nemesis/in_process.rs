//! A node inside the test process: a runtime of its own on one thread, so
//! that blocking the thread stalls everything of that node (its session
//! keep-alives, lock monitors, lock bodies), as SIGSTOP stalls a process,
//! while the store and the other nodes run on. For the in-memory backend,
//! which has no processes.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;

/// A node on its own single-threaded runtime.
pub struct InProcessNode {
    /// The node's name in histories.
    pub name: String,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessNode {
    /// Starts the node's thread and runtime.
    pub fn start(name: &str) -> InProcessNode {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for an in-process node");
                let _ = handle_tx.send(runtime.handle().clone());
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .expect("a thread for an in-process node");
        let runtime = handle_rx.recv().expect("the node's runtime");
        InProcessNode {
            name: name.to_owned(),
            runtime,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Runs `work` on the node's runtime and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        match self.runtime.spawn(work).await {
            Ok(output) => output,
            Err(e) => panic!("work on node {} failed: {e}", self.name),
        }
    }

    /// Blocks the node's thread for `length`: nothing of the node runs.
    pub fn stall(&self, length: Duration) {
        self.runtime
            .spawn(async move { std::thread::sleep(length) });
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
