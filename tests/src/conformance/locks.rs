//! Cluster-wide locks and fencing tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dref::engine::{FieldName, Op, Write};
use dref::{current_fencing_token, Error, FencingToken};
use tokio::sync::oneshot;

use crate::{within, Harness, Node};

/// The seed's lock scenario: two tasks on two nodes contend for one lock;
/// the second enters only after the first leaves.
pub async fn lock_contention_serializes(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let inside = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = oneshot::channel();
    let (leave_tx, leave_rx) = oneshot::channel::<()>();
    let first = {
        let inside = inside.clone();
        let ctx = a.ctx.clone();
        tokio::spawn(async move {
            ctx.lock("report", async {
                inside.store(true, Ordering::SeqCst);
                let _ = entered_tx.send(());
                let _ = leave_rx.await;
                inside.store(false, Ordering::SeqCst);
            })
            .await
        })
    };
    within("the first holder", entered_rx).await.unwrap();
    let second = {
        let inside = inside.clone();
        let ctx = b.ctx.clone();
        tokio::spawn(async move {
            ctx.lock("report", async move {
                assert!(
                    !inside.load(Ordering::SeqCst),
                    "both holders inside the lock"
                );
            })
            .await
        })
    };
    // The second waits (it cannot finish while the first is inside)...
    tokio::task::yield_now().await;
    assert!(!second.is_finished());
    leave_tx.send(()).unwrap();
    within("the first holder to leave", first)
        .await
        .unwrap()
        .unwrap();
    within("the second holder", second).await.unwrap().unwrap();
}

/// Fencing tokens of successive holders strictly increase, and the body
/// can read its token.
pub async fn fencing_tokens_increase(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    assert_eq!(current_fencing_token(), None);
    let mut last = FencingToken(0);
    for i in 0..6 {
        let ctx = if i % 2 == 0 { &a.ctx } else { &b.ctx };
        let token = ctx
            .lock("fenced", async { current_fencing_token().unwrap() })
            .await
            .unwrap();
        assert!(token > last, "token {token} after {last}");
        last = token;
        let guard = ctx.acquire("fenced").await.unwrap();
        assert!(guard.token() > last);
        last = guard.token();
        guard.release().await.unwrap();
    }
}

/// The try form fails fast and the timeout form gives up in time.
pub async fn try_lock_and_timeout(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let guard = a.ctx.acquire("busy").await.unwrap();
    let err = b.ctx.try_lock("busy", async {}).await.unwrap_err();
    assert!(matches!(err, Error::LockBusy { .. }), "{err}");
    let err = b.ctx.try_acquire("busy").await.unwrap_err();
    assert!(matches!(err, Error::LockBusy { .. }), "{err}");
    let err = b
        .ctx
        .lock_timeout("busy", Duration::from_millis(200), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    guard.release().await.unwrap();
    b.ctx.try_lock("busy", async {}).await.unwrap();
    b.ctx
        .lock_timeout("busy", Duration::from_secs(5), async {})
        .await
        .unwrap();
}

/// The seed's stolen-lock scenario: someone overwrites the lock record; the
/// holder's body is cancelled with `LockLost`, and its release does not
/// delete the thief's record.
pub async fn stolen_lock_fails_holder(h: &dyn Harness) {
    let a = Node::new(h).await;
    let thief = Node::new(h).await;
    let (entered_tx, entered_rx) = oneshot::channel();
    let holder = {
        let ctx = a.ctx.clone();
        tokio::spawn(async move {
            ctx.lock("stolen", async {
                let _ = entered_tx.send(());
                std::future::pending::<()>().await
            })
            .await
        })
    };
    within("the holder", entered_rx).await.unwrap();
    let key = dref::engine::Key::new("lock/stolen");
    let fields = vec![(FieldName::from("holder"), Bytes::from_static(b"thief"))];
    thief
        .ctx
        .backend()
        .write(Write::new(key.clone(), Op::Put(fields)))
        .await
        .unwrap();
    let err = within("the holder to notice", holder)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    // The thief's record is still there.
    let record = within("the stolen record", async {
        thief.ctx.backend().read(key).await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        record.field("holder").unwrap().value,
        Bytes::from_static(b"thief")
    );
}

/// A holder that can no longer prove its session alive is cancelled with
/// `LockLost` before the store hands the lock to a waiter, whose token is
/// larger.
pub async fn lost_session_fails_holder_and_frees_lock(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let guard = a.ctx.acquire("session").await.unwrap();
    let first = guard.token();
    let waiter = {
        let ctx = b.ctx.clone();
        tokio::spawn(async move { ctx.acquire("session").await })
    };
    a.faults.fail_keep_alives(true);
    let second = within("the waiter", waiter).await.unwrap().unwrap();
    assert!(second.token() > first);
    // The holder was told before the store could hand the lock over.
    assert!(
        guard.is_lost(),
        "the waiter got the lock before the holder knew"
    );
    let err = guard.lost().await;
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    second.release().await.unwrap();
}

/// `release` frees the lock at once; dropping a guard frees it too.
pub async fn guard_release_and_drop(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let guard = a.ctx.acquire("dropped").await.unwrap();
    assert!(!guard.is_lost());
    drop(guard);
    let again = within("the dropped lock", b.ctx.acquire("dropped"))
        .await
        .unwrap();
    again.release().await.unwrap();
    // A context shut down releases its locks at once.
    let _held = a.ctx.acquire("dropped").await.unwrap();
    a.ctx.shutdown().await.unwrap();
    let after = within("the shut-down lock", b.ctx.acquire("dropped"))
        .await
        .unwrap();
    after.release().await.unwrap();
}

/// Tasks on three nodes contend for one lock: never two inside at once,
/// and a fenced resource that remembers the highest token it has seen
/// never sees a token go backwards.
pub async fn lock_contention_is_fenced(h: &dyn Harness) {
    use std::sync::atomic::AtomicU64;
    const ROUNDS: usize = 8;
    let nodes = [Node::new(h).await, Node::new(h).await, Node::new(h).await];
    let inside = Arc::new(AtomicBool::new(false));
    let fence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..2 {
            let (ctx, inside, fence) = (node.ctx.clone(), inside.clone(), fence.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    ctx.lock("fenced-resource", async {
                        assert!(
                            !inside.swap(true, Ordering::SeqCst),
                            "two holders inside (node {i})"
                        );
                        let token = current_fencing_token().unwrap().0;
                        let previous = fence.fetch_max(token, Ordering::SeqCst);
                        assert!(token > previous, "stale token {token} after {previous}");
                        tokio::task::yield_now().await;
                        inside.store(false, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        within("the contending tasks", t).await.unwrap();
    }
}

/// A holder whose whole node stalls (a SIGSTOP, a long GC-like pause) for
/// longer than its session TTL, while another node takes the lock, is told
/// `LockLost` when it resumes: by `lock` when its body returns, and by
/// `LockGuard::release`, even though the body finished in the same poll
/// that ended the stall, before anything else on the node could run.
pub async fn paused_holder_is_told_lock_lost(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let stall = h.session_ttl() * 5 / 2;
    // B's session, and whatever the store runs in the background, live on
    // this runtime, which keeps running while A's stalls.
    b.ctx.try_lock("warm-up", async {}).await.unwrap();

    let (entered_tx, entered_rx) = oneshot::channel();
    let (guarded_tx, guarded_rx) = oneshot::channel();
    let ctx = a.ctx.clone();
    // A runs on a runtime of its own, on one thread: blocking that thread
    // stalls everything of A (its keep-alives, its lock monitor, the body).
    let paused = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the paused node");
        runtime.block_on(async move {
            let by_lock = ctx
                .lock("paused", async {
                    let _ = entered_tx.send(());
                    std::thread::sleep(stall);
                })
                .await;
            let guard = ctx.acquire("paused-guard").await.expect("acquire");
            let _ = guarded_tx.send(());
            std::thread::sleep(stall);
            let by_guard = guard.release().await;
            (by_lock, by_guard)
        })
    });

    within("the paused holder to enter", entered_rx)
        .await
        .unwrap();
    let token = within(
        "another node to take the lock of the stalled holder",
        b.ctx.lock("paused", async { current_fencing_token() }),
    )
    .await
    .unwrap();
    assert!(token.is_some());
    within("the second stall to begin", guarded_rx)
        .await
        .unwrap();
    within(
        "another node to take the stalled guard's lock",
        b.ctx.lock("paused-guard", async {}),
    )
    .await
    .unwrap();
    let (by_lock, by_guard) = within(
        "the paused node to resume",
        tokio::task::spawn_blocking(move || paused.join()),
    )
    .await
    .unwrap()
    .expect("the paused node's thread panicked");
    assert!(
        matches!(by_lock, Err(Error::LockLost { .. })),
        "a holder paused past its lease must be told LockLost by lock(), got {by_lock:?}"
    );
    assert!(
        matches!(by_guard, Err(Error::LockLost { .. })),
        "a holder paused past its lease must be told LockLost by release(), got {by_guard:?}"
    );
}

/// A grant that comes back only after the session could no longer be
/// trusted (the answer to the lock's write was late, and keep-alives failed
/// meanwhile, so the store may have expired the record and handed the lock
/// on) is not used: not one step of the body runs under it. The lock is
/// acquired again, and the body runs once, under a lock the node holds.
pub async fn a_grant_that_arrives_too_late_is_not_used(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    // Both sessions exist before the faults.
    a.ctx.try_lock("warm-up", async {}).await.unwrap();
    let late = h.session_ttl() * 2;
    a.faults.fail_keep_alives_for(late);
    a.faults
        .delay_next_answer(late + Duration::from_millis(200));
    let entered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = {
        let entered = entered.clone();
        async move {
            entered.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            current_fencing_token()
        }
    };
    let outcome = within("the lock through a late grant", a.ctx.lock("late", body)).await;
    let token = outcome.expect("the lock is acquired again and the body runs under it");
    assert_eq!(
        entered.load(Ordering::SeqCst),
        1,
        "the body ran under a stale grant"
    );
    // Meanwhile the late grant's record expired: tokens went on increasing.
    let next = b
        .ctx
        .lock("late", async { current_fencing_token() })
        .await
        .unwrap();
    assert!(next > token);
}

/// A held lock and an election's leader are records of the documented
/// layout (`dref::layout`): listed under their prefixes, each names its
/// holder, its fencing token, its session and when it was acquired.
pub async fn lock_records_follow_the_documented_layout(h: &dyn Harness) {
    use dref::layout::{Holding, ELECTION_PREFIX, LOCK_PREFIX};

    let a = Node::new(h).await;
    let backend = h.backend().await;
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let guard = a.ctx.acquire("layout").await.unwrap();
    let leadership = a.ctx.campaign("layout-election").await.unwrap();
    let after = std::time::SystemTime::now() + Duration::from_secs(1);

    for (prefix, name, token) in [
        (LOCK_PREFIX, "layout", guard.token()),
        (ELECTION_PREFIX, "layout-election", leadership.token()),
    ] {
        let listing = backend.list(prefix.into()).await.unwrap();
        let [(key, record)] = &listing.records[..] else {
            panic!("expected one record under {prefix}: {:?}", listing.records);
        };
        let holding = Holding::from_record(key, record).unwrap();
        assert_eq!(holding.name, name);
        assert_eq!(holding.holder, a.ctx.node_id());
        assert_eq!(holding.token, token);
        assert!(holding.session.is_some(), "{holding:?}");
        let since = holding.since.expect("an acquisition time");
        assert!(before <= since && since <= after, "{holding:?}");
    }
    // A record that is not a lock's is reported as such.
    let other = dref::engine::Key::new("ref/not-a-lock");
    let record = dref::engine::Record {
        fields: Vec::new(),
        version: 1,
        create_revision: 1,
        mod_revision: 1,
        lease: None,
    };
    let err = Holding::from_record(&other, &record).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    leadership.resign().await.unwrap();
    guard.release().await.unwrap();
    assert_eq!(backend.list(LOCK_PREFIX.into()).await.unwrap().records, []);
}
