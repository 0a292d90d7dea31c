//! Futures dropped part-way: a `select!` or a timeout around any call
//! may drop it at any await point, including between sending a write and
//! reading its answer.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use dref::{Error, ManualId};

use crate::{within, Harness, Node};

/// Polls `fut` up to `polls` times, yielding to the runtime between polls
/// (so that what it sent makes progress), then drops it. Returns its
/// output if it finished first.
pub async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(output) = polled {
            return Some(output);
        }
        tokio::task::yield_now().await;
    }
    None
}

/// Acquisitions dropped at every point, of a held lock and of a free one:
/// the holder keeps its lock, and nothing dropped is left holding a lock
/// for longer than a session TTL.
pub async fn cancelled_acquisitions_leave_no_lock_behind(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let c = Node::new(h).await;
    let holder = a.ctx.acquire("held").await.unwrap();
    for polls in 1..=24 {
        let dropped = poll_then_drop(b.ctx.acquire("held"), polls).await;
        assert!(dropped.is_none(), "a held lock was acquired");
        let dropped = poll_then_drop(b.ctx.campaign("held-election"), polls).await;
        if let Some(leadership) = dropped {
            drop(leadership.unwrap());
        }
        let dropped = poll_then_drop(b.ctx.lock("free", async {}), polls).await;
        if let Some(outcome) = dropped {
            outcome.unwrap();
        }
        let dropped = poll_then_drop(b.ctx.acquire("free"), polls).await;
        if let Some(guard) = dropped {
            drop(guard.unwrap());
        }
    }
    assert!(
        !holder.is_lost(),
        "a cancelled acquisition broke the holder's lock"
    );
    let record = a.ctx.backend().read("lock/held".into()).await.unwrap();
    assert_eq!(
        record.map(|r| r.create_revision),
        Some(holder.token().0),
        "the holder's lock record was touched"
    );
    holder.release().await.unwrap();
    // Whatever the dropped acquisitions wrote is gone within a session TTL
    // (cleaned up, or its retired session revoked).
    let bound = h.session_ttl() * 3;
    for name in ["held", "free"] {
        match tokio::time::timeout(bound, c.ctx.acquire(name)).await {
            Ok(guard) => guard.unwrap().release().await.unwrap(),
            Err(_) => {
                panic!("lock `{name}` still held {bound:?} after its acquisitions were dropped")
            }
        }
    }
    let leadership = tokio::time::timeout(bound, c.ctx.campaign("held-election"))
        .await
        .expect("an election left led by a dropped campaign")
        .unwrap();
    leadership.resign().await.unwrap();
}

/// Updates dropped at every point are applied once or not at all, and
/// never disturb the others.
pub async fn cancelled_updates_apply_at_most_once(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let id = ManualId::<Vec<u32>>::new("cancelled-updates");
    let mine = a.ctx.make(id.clone(), Vec::new()).await.unwrap();
    let theirs = b.ctx.make(id, Vec::new()).await.unwrap();
    let mut completed = Vec::new();
    let mut attempted = 0u32;
    for polls in 1..=16 {
        for r in [&mine, &theirs] {
            attempted += 1;
            let n = attempted;
            let update = r.update(move |mut v| {
                v.push(n);
                v
            });
            if let Some(outcome) = poll_then_drop(update, polls).await {
                outcome.unwrap();
                completed.push(n);
            }
            // A concurrent, completed update beside the dropped ones.
            attempted += 1;
            let m = attempted;
            within(
                "an update beside dropped ones",
                r.update(move |mut v| {
                    v.push(m);
                    v
                }),
            )
            .await
            .unwrap();
            completed.push(m);
        }
    }
    let last = attempted + 1;
    // Through the other node, after everything settled.
    within(
        "a final update",
        mine.update(move |mut v| {
            v.push(last);
            v
        }),
    )
    .await
    .unwrap();
    let stored = theirs.get().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for n in &stored {
        assert!(seen.insert(*n), "update {n} was applied twice: {stored:?}");
    }
    for n in completed {
        assert!(
            seen.contains(&n),
            "completed update {n} is missing: {stored:?}"
        );
    }
    assert_eq!(stored.last(), Some(&last));
    assert!(!matches!(theirs.get().await, Err(Error::Missing { .. })));
}

#[dref::distributed]
#[derive(Clone, Debug, PartialEq)]
struct Tallies {
    mine: Vec<u32>,
    theirs: Vec<u32>,
}

/// Field writes dropped at every point are applied once or not at all,
/// and leave the other field alone.
pub async fn cancelled_field_writes_apply_at_most_once(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let initial = Tallies {
        mine: Vec::new(),
        theirs: Vec::new(),
    };
    let here = a
        .ctx
        .make(Tallies::id("tallies"), initial.clone())
        .await
        .unwrap();
    let there = b.ctx.make(Tallies::id("tallies"), initial).await.unwrap();
    let (mine, theirs) = (here.mine(), there.theirs());
    let mut completed = Vec::new();
    let mut attempted = 0u32;
    for polls in 1..=16 {
        attempted += 1;
        let n = attempted;
        let update = mine.update(move |mut v| {
            v.push(n);
            v
        });
        if let Some(outcome) = poll_then_drop(update, polls).await {
            outcome.unwrap();
            completed.push(n);
        }
        // The other field, written meanwhile through the other node.
        within(
            "a write of the other field",
            theirs.update(move |mut v| {
                v.push(n);
                v
            }),
        )
        .await
        .unwrap();
    }
    let stored = there.get().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for n in &stored.mine {
        assert!(
            seen.insert(*n),
            "field write {n} was applied twice: {stored:?}"
        );
    }
    for n in completed {
        assert!(
            seen.contains(&n),
            "completed field write {n} is missing: {stored:?}"
        );
    }
    assert_eq!(stored.theirs, (1..=attempted).collect::<Vec<_>>());
}

/// A release dropped before its delete reached the store (a `select!` or a
/// timeout around `release`, a slow network) still frees the lock.
pub async fn a_dropped_release_still_frees_the_lock(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let guard = a.ctx.acquire("released").await.unwrap();
    a.faults.delay_next_send(Duration::from_millis(200));
    assert!(poll_then_drop(guard.release(), 2).await.is_none());
    // The session lives on, so only the delete can free the lock.
    let bound = h.session_ttl() / 2;
    match tokio::time::timeout(bound, b.ctx.acquire("released")).await {
        Ok(guard) => guard.unwrap().release().await.unwrap(),
        Err(_) => panic!("the lock is still held {bound:?} after its release was dropped"),
    }
}
