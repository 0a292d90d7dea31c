//! The node process: connects to its store, then serves the test's
//! requests from stdin until told to shut down or stdin closes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dref::{Context, LockGuard};
use dref_backends::raft::{RaftBackend, RaftConfig};
use dref_backends::redis::RedisConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use super::protocol::{Answer, Command, NodeArgs, Request, Status, Store};
use super::recorder::Recorder;
use super::workload::{final_reads, Workload};
use crate::poll_then_drop;

struct Node {
    ctx: Context,
    raft: Option<RaftBackend>,
    recorder: Arc<Recorder>,
    workload: Mutex<Option<Workload>>,
    guards: Mutex<HashMap<String, LockGuard>>,
}

/// Runs a node with `args` until it is shut down.
pub async fn run(args: NodeArgs) -> Result<(), String> {
    let recorder = Arc::new(
        Recorder::create(Path::new(&args.history), &args.name)
            .map_err(|e| format!("cannot open the history {}: {e}", args.history))?,
    );
    let ttl = Duration::from_millis(args.session_ttl_ms);
    let (ctx, raft) = match &args.store {
        Store::Redis { url, prefix } => {
            let backend = RedisConfig::new(url)
                .prefix(prefix)
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            let ctx = Context::builder().backend(backend).session_ttl(ttl);
            (ctx.connect().await.map_err(|e| e.to_string())?, None)
        }
        Store::Raft {
            listen,
            peers,
            heartbeat_ms,
            election_ms,
            request_timeout_ms,
            data_dir,
        } => {
            let listen = listen
                .parse()
                .map_err(|e| format!("bad listen address {listen}: {e}"))?;
            let mut config = RaftConfig::new(listen);
            if let Some(dir) = data_dir {
                config = config.data_dir(dir);
            }
            let backend = config
                .peers(peers.iter().cloned())
                .heartbeat(Duration::from_millis(*heartbeat_ms))
                .election_timeout(
                    Duration::from_millis(election_ms.0),
                    Duration::from_millis(election_ms.1),
                )
                .discovery_interval(Duration::from_millis(100))
                .request_timeout(Duration::from_millis(*request_timeout_ms))
                .join_timeout(Duration::from_secs(60))
                .connect()
                .await
                .map_err(|e| format!("cannot start the raft node: {e}"))?;
            let ctx = backend.context_builder().session_ttl(ttl);
            (
                ctx.connect().await.map_err(|e| e.to_string())?,
                Some(backend),
            )
        }
    };
    let node = Arc::new(Node {
        ctx,
        raft,
        recorder,
        workload: Mutex::new(None),
        guards: Mutex::new(HashMap::new()),
    });
    let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
    say(&stdout, &json!({ "ready": node.status() })).await;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: Request = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => return Err(format!("a request that is not JSON: {e}: {line}")),
        };
        let shutdown = matches!(request.command, Command::Shutdown);
        let (node, stdout) = (node.clone(), stdout.clone());
        let serve = async move {
            let result = node.serve(request.command).await;
            let answer = Answer {
                id: request.id,
                result,
            };
            say(&stdout, &answer).await;
        };
        if shutdown {
            serve.await;
            return Ok(());
        }
        tokio::spawn(serve);
    }
    Ok(())
}

async fn say(stdout: &Mutex<tokio::io::Stdout>, message: &impl serde::Serialize) {
    let mut line = match serde_json::to_vec(message) {
        Ok(line) => line,
        Err(e) => panic!("an answer must serialize: {e}"),
    };
    line.push(b'\n');
    let mut out = stdout.lock().await;
    if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
        // The test is gone: so is the reason to live.
        std::process::exit(1);
    }
}

impl Node {
    fn status(&self) -> Status {
        Status {
            node_id: self.ctx.node_id().to_owned(),
            address: self.raft.as_ref().map(|r| r.address().to_owned()),
            leader: self.raft.as_ref().and_then(|r| r.leader()),
            voters: self.raft.as_ref().map(|r| r.voters()).unwrap_or_default(),
            raft_id: self.raft.as_ref().map(|r| r.node_id()),
            voter_ids: self
                .raft
                .as_ref()
                .map(|r| r.voter_ids())
                .unwrap_or_default(),
        }
    }

    fn raft(&self) -> Result<&RaftBackend, String> {
        self.raft
            .as_ref()
            .ok_or_else(|| "not a raft node".to_owned())
    }

    async fn serve(&self, command: Command) -> Result<Value, String> {
        let text = |e: dref::Error| e.to_string();
        match command {
            Command::Status => Ok(json!(self.status())),
            Command::StartWorkload(spec) => {
                let workload = Workload::start(self.ctx.clone(), self.recorder.clone(), *spec)
                    .await
                    .map_err(text)?;
                *self.workload.lock().await = Some(workload);
                Ok(Value::Null)
            }
            Command::StopWorkload => {
                if let Some(workload) = self.workload.lock().await.take() {
                    workload.stop().await;
                }
                Ok(Value::Null)
            }
            Command::FinalReads { counters, process } => {
                let values = final_reads(&self.ctx, &self.recorder, process, &counters)
                    .await
                    .map_err(text)?;
                Ok(json!(values))
            }
            Command::Acquire { lock } => {
                let guard = self.ctx.acquire(&lock).await.map_err(text)?;
                let token = guard.token().0;
                self.guards.lock().await.insert(lock, guard);
                Ok(json!(token))
            }
            Command::Release { lock } => {
                let guard = self.guards.lock().await.remove(&lock);
                let guard = guard.ok_or_else(|| format!("lock {lock} is not held here"))?;
                Ok(match guard.release().await {
                    Ok(()) => json!("ok"),
                    Err(e) => json!(e.to_string()),
                })
            }
            Command::DropAcquire { lock, polls } => {
                let finished = poll_then_drop(self.ctx.acquire(&lock), polls).await;
                Ok(json!(finished.is_some()))
            }
            Command::Cut { peers } => {
                self.raft()?.faults().cut(peers);
                Ok(Value::Null)
            }
            Command::Heal => {
                self.raft()?.faults().heal();
                Ok(Value::Null)
            }
            Command::Shutdown => {
                if let Some(workload) = self.workload.lock().await.take() {
                    workload.stop().await;
                }
                self.guards.lock().await.clear();
                let shutdown = self.ctx.shutdown().await;
                if let Some(raft) = &self.raft {
                    raft.shutdown().await;
                }
                shutdown.map(|()| Value::Null).map_err(text)
            }
        }
    }
}
