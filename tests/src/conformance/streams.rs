//! Change streams, value streams and callbacks.

use std::time::Duration;

use dref::engine::{Op, Write};
use dref::{ChangeKind, Context, ManualId};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{within, Harness, Node};

/// The seed's stream scenario: two sets observed in order, by a subscriber
/// on another node too.
pub async fn change_stream_observes_sets_in_order(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let ra = a
        .ctx
        .make(ManualId::<String>::new("events"), "start".into())
        .await
        .unwrap();
    let rb = b
        .ctx
        .make(ManualId::<String>::new("events"), "start".into())
        .await
        .unwrap();
    let mut local = ra.changes();
    let mut remote = rb.changes();
    ra.set("first".into()).await.unwrap();
    ra.set("second".into()).await.unwrap();
    for stream in [&mut local, &mut remote] {
        let one = within("the first change", stream.next())
            .await
            .unwrap()
            .unwrap();
        let two = within("the second change", stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.kind, ChangeKind::Updated("first".to_string()));
        assert_eq!(two.kind, ChangeKind::Updated("second".to_string()));
        assert!(one.revision < two.revision);
    }
}

/// Deletes and lease expiries are change events too.
pub async fn change_stream_reports_deletes(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<u8>::new("deleted"), 1)
        .await
        .unwrap();
    let mut changes = r.changes();
    r.delete().await.unwrap();
    let change = within("the delete", changes.next()).await.unwrap().unwrap();
    assert_eq!(change.kind, ChangeKind::Deleted);
    assert!(r.set_if_absent(2).await.unwrap());
    let change = within("the re-creation", changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.kind, ChangeKind::Updated(2));

    // Attach the record to a short lease that nobody keeps alive.
    let backend = node.ctx.backend().clone();
    let record = backend.read(r.key().clone()).await.unwrap().unwrap();
    let lease = backend
        .grant_lease(Duration::from_millis(300))
        .await
        .unwrap();
    let fields = record
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.value.clone()))
        .collect();
    let write = Write::new(r.key().clone(), Op::Put(fields)).with_lease(Some(lease));
    backend.write(write).await.unwrap();
    // The re-put changed no field bytes, so it carries no field event: the
    // next change is the expiry.
    let change = within("the expiry", changes.next()).await.unwrap().unwrap();
    assert_eq!(change.kind, ChangeKind::Expired);
    assert_eq!(r.peek(), None);
    assert!(r.get().await.is_err());
}

/// `values()` yields the value after each commit; `on_change` calls back
/// until its handle is dropped.
pub async fn values_stream_and_on_change(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<u32>::new("values"), 0)
        .await
        .unwrap();
    let mut values = r.values();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = r.on_change(move |v| {
        let _ = tx.send(v);
    });
    assert!(subscription.is_active());
    r.set(1).await.unwrap();
    r.update(|n| n + 1).await.unwrap();
    assert_eq!(
        within("value 1", values.next()).await.unwrap().unwrap(),
        Some(1)
    );
    assert_eq!(
        within("value 2", values.next()).await.unwrap().unwrap(),
        Some(2)
    );
    assert_eq!(within("callback 1", rx.recv()).await.unwrap(), Some(1));
    assert_eq!(within("callback 2", rx.recv()).await.unwrap(), Some(2));
    r.delete().await.unwrap();
    assert_eq!(
        within("deleted", values.next()).await.unwrap().unwrap(),
        None
    );
    assert_eq!(within("callback deleted", rx.recv()).await.unwrap(), None);

    drop(subscription);
    // The callback's sender is dropped with the task: the channel closes
    // without another value even though the ref changes again.
    r.set_if_absent(3).await.unwrap();
    assert_eq!(
        within("value 3", values.next()).await.unwrap().unwrap(),
        Some(3)
    );
    assert_eq!(within("the callback to stop", rx.recv()).await, None);
}

/// A subscriber that falls behind its buffer gets an explicit resync, never
/// a silent gap, and ends at the current value.
pub async fn slow_subscriber_is_resynced(h: &dyn Harness) {
    let ctx = Context::builder()
        .backend_arc(h.backend().await)
        .session_ttl(h.session_ttl())
        .change_buffer(4)
        .build();
    let r = ctx.make(ManualId::<u32>::new("slow"), 0).await.unwrap();
    let mut changes = r.changes();
    let mut witness = r.values();
    for i in 1..=60 {
        r.set(i).await.unwrap();
    }
    // Once the witness has seen the last commit, all 60 went through the
    // ref's buffer of 4 while `changes` was not polled.
    while within("the witness", witness.next())
        .await
        .unwrap()
        .unwrap()
        != Some(60)
    {}
    let mut last = 0;
    let mut resynced = false;
    while last != 60 {
        let change = within("the changes", changes.next())
            .await
            .unwrap()
            .unwrap();
        match change.kind {
            ChangeKind::Updated(v) => {
                assert_eq!(v, last + 1, "a change was skipped without a resync");
                last = v;
            }
            ChangeKind::Resync(Some(v)) => {
                assert!(v >= last);
                resynced = true;
                last = v;
            }
            other => panic!("unexpected change {other:?}"),
        }
    }
    assert!(resynced, "60 commits through a buffer of 4 must lag");
}
