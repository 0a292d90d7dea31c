//! Group commit on the leader: commands proposed while earlier ones are
//! being committed wait, and then go to the log together, as one entry.
//!
//! openraft 0.9 gives a leader's log one entry per flush: with one entry
//! per command, concurrent writers would queue behind each other's disk
//! sync and replication round. Gathered into one entry, they share both,
//! so throughput grows with the number of writers instead of staying at
//! one command per sync. A lone writer pays nothing: its command goes out
//! at once.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::node::{stopped, unavailable, Routed};
use super::types::{
    Applied, Command, CommandOp, Proposal, TypeConfig, WireOp, MAX_COMMANDS_PER_ENTRY,
};

/// Entries being committed at once. The next batch gathers while these
/// are on their way (a second one in flight hides the hand-over between
/// batches); more would only queue inside openraft.
const ENTRIES_IN_FLIGHT: usize = 2;

/// Most payload bytes gathered into one entry (writes are limited in size,
/// so a batch stays far below openraft's message limits).
const MAX_ENTRY_BYTES: usize = 4 << 20;

/// What a proposer answers: the command's result, and the log index it
/// was committed at.
pub(super) type Committed = Routed<(Applied, u64)>;

struct Waiting {
    command: Command,
    answer: oneshot::Sender<Committed>,
}

/// The leader's proposer (a node has one; it proposes only while the node
/// leads, and says so otherwise).
pub(super) struct Proposer {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Proposer {
    /// Starts the proposer's task for `raft`; it ends with the proposer.
    pub(super) fn start(raft: Raft<TypeConfig>) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, waiting));
        Proposer { queue }
    }

    /// Commits `command` (with whatever else is proposed meanwhile) and
    /// returns its result once committed and applied here.
    pub(super) async fn commit(&self, command: Command) -> Committed {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Waiting { command, answer }).is_err() {
            return Routed::Done(Err(unavailable("this raft node is stopping")));
        }
        answered
            .await
            .unwrap_or_else(|_| Routed::Done(Err(unavailable("this raft node stopped"))))
    }
}

async fn run(raft: Raft<TypeConfig>, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        // Waiting for a slot lets the batch grow meanwhile.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = size_of(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS_PER_ENTRY && bytes < MAX_ENTRY_BYTES {
            match waiting.try_recv() {
                Ok(next) => {
                    bytes += size_of(&next.command);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit_batch(&raft, batch).await;
            drop(slot);
        });
    }
}

fn size_of(command: &Command) -> usize {
    match &command.op {
        CommandOp::Write(write) => {
            write.key.len()
                + match &write.op {
                    WireOp::Put(fields) | WireOp::Patch(fields) => {
                        fields.iter().map(|(n, v)| n.len() + v.len()).sum()
                    }
                    WireOp::Delete => 0,
                }
        }
        CommandOp::Grant { .. } | CommandOp::Revoke { .. } => 16,
    }
}

async fn commit_batch(raft: &Raft<TypeConfig>, batch: Vec<Waiting>) {
    let (commands, answers): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|w| (w.command, w.answer)).unzip();
    let count = commands.len();
    let outcome = raft.client_write(Proposal { commands }).await;
    let results: Vec<Committed> = match outcome {
        Ok(resp) if resp.data.len() == count => {
            let index = resp.log_id.index;
            resp.data
                .into_iter()
                .map(|applied| Routed::Done(Ok((applied, index))))
                .collect()
        }
        Ok(resp) => {
            let message = format!(
                "an entry of {count} commands was applied with {} results",
                resp.data.len()
            );
            tracing::error!(%message, "raft state machine broke its contract");
            let failed = Routed::Done(Err(dref::Error::Protocol {
                backend: super::node::BACKEND,
                message,
            }));
            vec![failed; count]
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            vec![Routed::Retry(format!("leadership moved: {f}")); count]
        }
        Err(RaftError::APIError(e)) => vec![Routed::Retry(e.to_string()); count],
        Err(RaftError::Fatal(f)) => vec![Routed::Done(Err(stopped(&f))); count],
    };
    for (answer, result) in answers.into_iter().zip(results) {
        // A caller that went away no longer needs its answer; its command
        // was committed (or not) all the same.
        answer.send(result).ok();
    }
}
