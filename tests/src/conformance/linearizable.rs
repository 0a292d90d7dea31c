//! Concurrent histories on one ref are linearizable.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dref::ManualId;

use crate::check::{check_all, CheckOptions, Event, Op, Phase};
use crate::{within, Harness, Node};

/// Clients on three nodes read, write and increment one ref concurrently;
/// the recorded history must be linearizable (reads are `get`, not `peek`).
pub async fn concurrent_history_is_linearizable(h: &dyn Harness) {
    const CLIENTS: u64 = 6;
    const OPS: u64 = 12;
    const KEY: &str = "register";
    let nodes = [Node::new(h).await, Node::new(h).await, Node::new(h).await];
    let mut refs = Vec::new();
    for node in &nodes {
        refs.push(node.ctx.make(ManualId::<u64>::new(KEY), 0).await.unwrap());
    }
    let recorder = Arc::new(Recorder {
        start: Instant::now(),
        events: Mutex::default(),
    });
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let node = client as usize % refs.len();
        let r = refs[node].clone();
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            let record = |phase, op| recorder.record(client, node, phase, op);
            let key = || KEY.to_string();
            for i in 0..OPS {
                match (client + i) % 3 {
                    0 => {
                        record(
                            Phase::Invoke,
                            Op::Read {
                                key: key(),
                                value: None,
                            },
                        );
                        let value = Some(r.get().await.unwrap());
                        record(Phase::Ok, Op::Read { key: key(), value });
                    }
                    1 => {
                        let value = 1000 * (client + 1) + i;
                        record(Phase::Invoke, Op::Write { key: key(), value });
                        r.set(value).await.unwrap();
                        record(Phase::Ok, Op::Write { key: key(), value });
                    }
                    _ => {
                        record(
                            Phase::Invoke,
                            Op::Incr {
                                key: key(),
                                value: None,
                            },
                        );
                        let value = Some(r.update_and_get(|n| n + 1).await.unwrap());
                        record(Phase::Ok, Op::Incr { key: key(), value });
                    }
                }
            }
        }));
    }
    for t in tasks {
        within("the clients", t).await.unwrap();
    }
    let history = recorder.take();
    assert_eq!(history.len() as u64, 2 * CLIENTS * OPS);
    let report = check_all(&history, &CheckOptions::default());
    assert!(report.is_ok(), "{report}");
}

/// Collects the events of the clients of one test process. `t` counts
/// from one shared `Instant` (monotonic), so the clients' times compare;
/// the checker pairs events by `t`, so the order of the list is free.
struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn record(&self, process: u64, node: usize, phase: Phase, op: Op) {
        let t = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = Event {
            process,
            node: format!("n{node}"),
            t,
            phase,
            op,
        };
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
