//! The test's side of a node process: start it, ask it things, pause,
//! resume and kill it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{oneshot, Mutex};

use super::protocol::{Answer, Command, NodeArgs, Request, Status};
use crate::os::{signal, Signal};

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A running node process.
pub struct NodeProcess {
    /// The node's name ("n1").
    pub name: String,
    args: NodeArgs,
    child: Child,
    pid: u32,
    stdin: Mutex<ChildStdin>,
    pending: Pending,
    next: AtomicU64,
    ready: Option<oneshot::Receiver<Status>>,
}

impl NodeProcess {
    /// Starts `binary` (the `dref-test-node` executable) with `args`; it
    /// dies with the thread that started it.
    pub fn spawn(binary: &str, args: NodeArgs) -> std::io::Result<NodeProcess> {
        Self::spawn_in(&[], binary, args)
    }

    /// [`spawn`](Self::spawn) through a `wrapper` command that execs the
    /// node (such as `ip netns exec <namespace>`), so that the process the
    /// test signals is the node itself.
    pub fn spawn_in(
        wrapper: &[String],
        binary: &str,
        args: NodeArgs,
    ) -> std::io::Result<NodeProcess> {
        let json = serde_json::to_string(&args).map_err(std::io::Error::other)?;
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => tokio::process::Command::new(binary),
        };
        let mut child = command
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the node exited at once"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let pending: Pending = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(read_answers(
            args.name.clone(),
            stdout,
            pending.clone(),
            ready_tx,
        ));
        Ok(NodeProcess {
            name: args.name.clone(),
            args,
            child,
            pid,
            stdin: Mutex::new(stdin),
            pending,
            next: AtomicU64::new(0),
            ready: Some(ready_rx),
        })
    }

    /// The arguments it was started with (to start it again).
    pub fn args(&self) -> &NodeArgs {
        &self.args
    }

    /// Waits until the node has connected to its store.
    pub async fn ready(&mut self, timeout: Duration) -> Result<Status, String> {
        let Some(ready) = self.ready.take() else {
            return self.status().await;
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(_)) => Err(format!("node {} exited before it was ready", self.name)),
            Err(_) => Err(format!("node {} not ready within {timeout:?}", self.name)),
        }
    }

    /// Sends `command` and waits for the answer, at most `timeout`.
    pub async fn ask(&self, command: Command, timeout: Duration) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut line = serde_json::to_vec(&Request { id, command }).map_err(|e| e.to_string())?;
        line.push(b'\n');
        {
            let mut stdin = self.stdin.lock().await;
            stdin
                .write_all(&line)
                .await
                .map_err(|e| format!("node {} is gone: {e}", self.name))?;
            stdin
                .flush()
                .await
                .map_err(|e| format!("node {} is gone: {e}", self.name))?;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("node {} exited before answering", self.name)),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(format!(
                    "node {} did not answer within {timeout:?}",
                    self.name
                ))
            }
        }
    }

    /// [`ask`](Self::ask), decoding the answer.
    pub async fn ask_as<T: DeserializeOwned>(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<T, String> {
        let value = self.ask(command, timeout).await?;
        serde_json::from_value(value)
            .map_err(|e| format!("a malformed answer from {}: {e}", self.name))
    }

    /// The node's view of the cluster.
    pub async fn status(&self) -> Result<Status, String> {
        self.ask_as(Command::Status, Duration::from_secs(10)).await
    }

    /// Sends a signal: pause, resume or kill.
    pub fn signal(&self, which: Signal) -> std::io::Result<()> {
        signal(self.pid, which)
    }

    /// Kills the process and waits for it to be gone.
    pub async fn kill(&mut self) {
        let _ = self.signal(Signal::Kill);
        let _ = self.child.wait().await;
    }

    /// Waits until the process exits, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "node {} did not exit within {timeout:?}",
                self.name
            )),
        }
    }
}

async fn read_answers(
    name: String,
    stdout: tokio::process::ChildStdout,
    pending: Pending,
    ready: oneshot::Sender<Status>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tx) = ready.take() {
            #[derive(serde::Deserialize)]
            struct Ready {
                ready: Status,
            }
            match serde_json::from_str::<Ready>(&line) {
                Ok(r) => {
                    let _ = tx.send(r.ready);
                    continue;
                }
                Err(_) => ready = Some(tx),
            }
        }
        match serde_json::from_str::<Answer>(&line) {
            Ok(answer) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&answer.id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer.result);
                }
            }
            Err(e) => eprintln!("node {name} said something that is not an answer ({e}): {line}"),
        }
    }
}
