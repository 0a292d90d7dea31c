//! dref records its metrics through the `metrics` facade: a recorder
//! installed by the application sees every name of the table in
//! `dref::metrics`, with the figures the operations imply.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dref::engine::{Backend, FieldName, Op, Write};
use dref::{Context, Error, ManualId, MemoryBackend};
use dref_tests::{wait_until, within, MemoryHarness, Node};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One metric (with its labels): a counter's total, a gauge's value, or a
/// histogram's number of records.
#[derive(Default)]
struct Cell {
    value: Mutex<f64>,
    records: AtomicU64,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.value.lock().unwrap() += value as f64;
    }
    fn absolute(&self, value: u64) {
        *self.value.lock().unwrap() = value as f64;
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.value.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.value.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.value.lock().unwrap() = value;
    }
}

impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.records.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Tally {
    cells: Mutex<HashMap<String, Arc<Cell>>>,
    described: Mutex<Vec<String>>,
}

impl Tally {
    fn cell(&self, key: &metrics::Key) -> Arc<Cell> {
        let mut name = key.name().to_owned();
        for label in key.labels() {
            name.push_str(&format!(",{}={}", label.key(), label.value()));
        }
        self.cells.lock().unwrap().entry(name).or_default().clone()
    }

    /// A counter's or gauge's value, summed over the label sets whose
    /// rendering contains every one of `labels`.
    fn value(&self, name: &str, labels: &[&str]) -> f64 {
        self.matching(name, labels)
            .map(|c| *c.value.lock().unwrap())
            .sum()
    }

    /// A histogram's number of records.
    fn records(&self, name: &str) -> u64 {
        self.matching(name, &[])
            .map(|c| c.records.load(Ordering::Relaxed))
            .sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [&str],
    ) -> impl Iterator<Item = Arc<Cell>> + 'a {
        let cells = self.cells.lock().unwrap();
        let found: Vec<_> = cells
            .iter()
            .filter(|(k, _)| k.split(',').next() == Some(name))
            .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
            .map(|(_, c)| c.clone())
            .collect();
        found.into_iter()
    }
}

impl Recorder for &'static Tally {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn register_counter(&self, key: &metrics::Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &metrics::Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

const NAMES: [&str; 11] = [
    "dref_ref_writes_total",
    "dref_update_retries_total",
    "dref_update_rounds_total",
    "dref_update_round_size",
    "dref_watch_resyncs_total",
    "dref_watch_errors_total",
    "dref_locks_acquired_total",
    "dref_lock_wait_seconds",
    "dref_locks_lost_total",
    "dref_sessions_alive",
    "dref_session_renewals_late_total",
];

/// The Raft backend's, recorded by its nodes (and described too).
const RAFT_NAMES: [&str; 11] = [
    "dref_raft_leader",
    "dref_raft_term",
    "dref_raft_last_log_index",
    "dref_raft_applied_index",
    "dref_raft_apply_lag",
    "dref_raft_voters",
    "dref_raft_replication_lag",
    "dref_raft_leader_changes_total",
    "dref_raft_snapshot_bytes",
    "dref_raft_snapshot_seconds",
    "dref_raft_request_seconds",
];

// One thread: the raw writes below run without the watcher in between.
#[tokio::test(flavor = "current_thread")]
async fn every_metric_of_the_table_is_recorded() {
    let tally: &'static Tally = Box::leak(Box::default());
    metrics::set_global_recorder(tally).expect("the only recorder of this test binary");
    dref::metrics::describe();
    let mut described = tally.described.lock().unwrap().clone();
    described.sort();
    let mut names: Vec<String> = NAMES
        .iter()
        .chain(&RAFT_NAMES)
        .map(|n| n.to_string())
        .collect();
    names.sort();
    assert_eq!(described, names);

    // Updates through the async forms of a store, so that they combine.
    let harness = MemoryHarness::deferred();
    let node = Node::new(&harness).await;
    let other = Node::new(&harness).await;
    let id = ManualId::<u64>::new("counted");
    let counter = node.ctx.make(id.clone(), 0).await.unwrap();
    let theirs = other.ctx.make(id, 0).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move { counter.update(|n| n + 1).await })
        })
        .collect();
    for task in tasks {
        within("the updates", task).await.unwrap().unwrap();
    }
    assert!(tally.value("dref_update_rounds_total", &[]) >= 1.0);
    assert!(tally.records("dref_update_round_size") >= 1);
    // An update whose first run lets another node write first: rejected
    // once, retried.
    let mut runs = 0;
    counter
        .update_async(|n| {
            runs += 1;
            let first = (runs == 1).then(|| theirs.clone());
            async move {
                if let Some(theirs) = first {
                    theirs.set(100).await?;
                }
                Ok::<_, Error>(n + 1)
            }
        })
        .await
        .unwrap();
    assert_eq!(runs, 2);
    assert!(tally.value("dref_update_retries_total", &[]) >= 1.0);
    // Fewer writes than updates: they combined.
    let committed = tally.value(
        "dref_ref_writes_total",
        &["backend=memory (deferred)", "outcome=committed"],
    );
    assert!((3.0..17.0).contains(&committed), "{committed}");
    assert!(tally.value("dref_ref_writes_total", &["outcome=rejected"]) >= 1.0);

    // A lock: acquired (after a wait), its session alive, then lost.
    let guard = node.ctx.acquire("counted-lock").await.unwrap();
    assert_eq!(tally.value("dref_locks_acquired_total", &[]), 1.0);
    assert_eq!(tally.records("dref_lock_wait_seconds"), 1);
    assert_eq!(tally.value("dref_sessions_alive", &[]), 1.0);
    node.ctx.shutdown().await.unwrap();
    let released = guard.release().await;
    assert!(
        matches!(released, Err(Error::LockLost { .. })),
        "{released:?}"
    );
    assert_eq!(tally.value("dref_locks_lost_total", &[]), 1.0);
    wait_until("the session to be counted out", || {
        tally.value("dref_sessions_alive", &[]) == 0.0
    })
    .await;

    // More raw writes at once than a watch buffers (synchronous ones, on
    // a store that answers at once): the ref's watcher is resynced. Then
    // garbage where the value belongs: it cannot decode it.
    let store = MemoryBackend::new();
    let ctx = Context::builder().backend(store.clone()).build();
    let watched = ctx.make(ManualId::<u64>::new("watched"), 0).await.unwrap();
    let key = watched.key().clone();
    let stored = store.read(key.clone()).await.unwrap().unwrap();
    let fields: Vec<(FieldName, Bytes)> = stored
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.value.clone()))
        .collect();
    for n in 0..300u64 {
        let mut fields = fields.clone();
        fields.push((FieldName::from("filler"), Bytes::from(n.to_string())));
        let mut write = Write::new(key.clone(), Op::Put(fields));
        assert!(matches!(store.try_write(&mut write), Some(Ok(_))));
    }
    wait_until("a resync of the ref's watch", || {
        tally.value("dref_watch_resyncs_total", &[]) >= 1.0
    })
    .await;
    let backend = store;
    let garbage = vec![(FieldName::from("value"), Bytes::from_static(&[0xff; 12]))];
    backend
        .write(Write::new(key, Op::Patch(garbage)))
        .await
        .unwrap();
    wait_until("the undecodable commit to be counted", || {
        tally.value("dref_watch_errors_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(tally.value("dref_session_renewals_late_total", &[]), 0.0);

    // Raft: two nodes (one follower to replicate to), a write, a read and
    // a snapshot.
    let nodes = support::raft_cluster::start(2, |c| c).await;
    support::raft_cluster::wait_for_voters(&nodes, 2).await;
    let leader = &nodes[support::raft_cluster::leader_of(&nodes)];
    let ctx = support::raft_cluster::context(leader, None).await;
    let r = ctx
        .make(ManualId::<u64>::new("raft-counted"), 0)
        .await
        .unwrap();
    r.update(|n| n + 1).await.unwrap();
    assert_eq!(r.get().await.unwrap(), 1);
    leader.snapshot_now().await.unwrap();
    let node = format!("node={}", leader.node_id());
    wait_until("the raft gauges", || {
        tally.value("dref_raft_leader", &[&node]) == 1.0
            && tally.value("dref_raft_voters", &[&node]) == 2.0
            && tally.value("dref_raft_term", &[&node]) >= 1.0
            && tally.value("dref_raft_applied_index", &[&node]) >= 3.0
            && tally.value("dref_raft_last_log_index", &[&node]) >= 3.0
            && tally.value("dref_raft_leader_changes_total", &[&node]) >= 1.0
            && !tally
                .matching("dref_raft_apply_lag", &[&node])
                .collect::<Vec<_>>()
                .is_empty()
            && !tally
                .matching("dref_raft_replication_lag", &[&node])
                .collect::<Vec<_>>()
                .is_empty()
    })
    .await;
    assert!(tally.records("dref_raft_request_seconds") >= 2);
    wait_until("the snapshot's metrics", || {
        tally.records("dref_raft_snapshot_seconds") >= 1
            && tally.value("dref_raft_snapshot_bytes", &[]) > 0.0
    })
    .await;
}
