//! Concurrent histories on one ref are linearizable.

use std::sync::Arc;
use std::time::Instant;

use dref::ManualId;

use crate::history::{check_linearizable, Entry, Recorder, RegisterOp};
use crate::{within, Harness, Node};

/// Clients on three nodes read, write and increment one ref concurrently;
/// the recorded history must be linearizable (reads are `get`, not `peek`).
pub async fn concurrent_history_is_linearizable(h: &dyn Harness) {
    const CLIENTS: usize = 6;
    const OPS: usize = 12;
    let nodes = [Node::new(h).await, Node::new(h).await, Node::new(h).await];
    let mut refs = Vec::new();
    for node in &nodes {
        refs.push(
            node.ctx
                .make(ManualId::<u64>::new("register"), 0)
                .await
                .unwrap(),
        );
    }
    let recorder = Arc::new(Recorder::default());
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let r = refs[client % refs.len()].clone();
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..OPS {
                let invoked = Instant::now();
                let op = match (client + i) % 3 {
                    0 => RegisterOp::Read(r.get().await.unwrap()),
                    1 => {
                        let v = 1000 * (client as u64 + 1) + i as u64;
                        r.set(v).await.unwrap();
                        RegisterOp::Write(v)
                    }
                    _ => RegisterOp::Increment(r.update_and_get(|n| n + 1).await.unwrap()),
                };
                recorder.push(Entry {
                    client,
                    op,
                    invoked,
                    returned: Instant::now(),
                });
            }
        }));
    }
    for t in tasks {
        within("the clients", t).await.unwrap();
    }
    let history = recorder.take();
    assert_eq!(history.len(), CLIENTS * OPS);
    if let Err(prefix) = check_linearizable(0, &history) {
        panic!(
            "history is not linearizable; longest linearizable prefix ({} of {} ops): {prefix:#?}\nfull history: {history:#?}",
            prefix.len(),
            history.len()
        );
    }
}
