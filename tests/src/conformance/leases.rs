//! Leases, through the engine contract.

use std::time::Duration;

use bytes::Bytes;
use dref::engine::{EventKind, FieldName, Key, Op, WatchItem, Write, WriteOutcome};
use dref::Error;
use futures_util::StreamExt;

use crate::{within, Harness};

fn put(key: &Key, lease: Option<dref::engine::LeaseId>) -> Write {
    let fields = vec![(FieldName::from("v"), Bytes::from_static(b"1"))];
    Write::new(key.clone(), Op::Put(fields)).with_lease(lease)
}

/// Records under a lease that is not kept alive are deleted when it
/// expires, each with an `Expired` event; records without it survive.
pub async fn lease_expiry_deletes_and_notifies(h: &dyn Harness) {
    let b = h.backend().await;
    let lease = b.grant_lease(Duration::from_millis(400)).await.unwrap();
    let (k1, k2, plain) = (
        Key::new("lease/a"),
        Key::new("lease/b"),
        Key::new("lease/plain"),
    );
    for key in [&k1, &k2] {
        assert!(matches!(
            b.write(put(key, Some(lease))).await.unwrap(),
            WriteOutcome::Committed { .. }
        ));
    }
    b.write(put(&plain, None)).await.unwrap();
    let mut w1 = b.watch(k1.clone(), None).await.unwrap();
    let mut w2 = b.watch(k2.clone(), None).await.unwrap();
    let last_write = b.read(plain.clone()).await.unwrap().unwrap().mod_revision;
    let mut expired_at = Vec::new();
    for w in [&mut w1, &mut w2] {
        let item = within("the expiry event", w.next()).await.unwrap().unwrap();
        match item {
            WatchItem::Event(e) => {
                assert_eq!(e.kind, EventKind::Expired);
                // Both may share one revision (one Raft log entry), but it
                // comes after every write before the expiry.
                assert!(e.revision > last_write, "{e:?} after revision {last_write}");
                expired_at.push(e.revision);
            }
            other => panic!("expected an expiry event, got {other:?}"),
        }
    }
    // ...and before every write after it: the expiry is a commit of the
    // store, ordered with the writes.
    let after = match b.write(put(&plain, None)).await.unwrap() {
        WriteOutcome::Committed { revision, .. } => revision,
        other => panic!("an unconditional put must commit, got {other:?}"),
    };
    assert!(
        expired_at.iter().all(|r| *r < after),
        "expiries at {expired_at:?}, a later write at {after}"
    );
    assert_eq!(b.read(k1).await.unwrap(), None);
    assert_eq!(b.read(k2).await.unwrap(), None);
    assert!(b.read(plain).await.unwrap().is_some());
    let err = b.keep_alive(lease).await.unwrap_err();
    assert!(matches!(err, Error::LeaseExpired { .. }), "{err}");
    let err = b
        .write(put(&Key::new("lease/late"), Some(lease)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseExpired { .. }), "{err}");
}

/// Keep-alives hold a lease past its TTL; revoking ends it at once.
pub async fn lease_keep_alive_and_revoke(h: &dyn Harness) {
    let b = h.backend().await;
    let ttl = Duration::from_millis(600);
    let lease = b.grant_lease(ttl).await.unwrap();
    let key = Key::new("lease/kept");
    b.write(put(&key, Some(lease))).await.unwrap();
    assert_eq!(
        b.read(key.clone()).await.unwrap().unwrap().lease,
        Some(lease)
    );
    let mut watch = b.watch(key.clone(), None).await.unwrap();
    // Keep it alive for three TTLs: the record must survive.
    let until = tokio::time::Instant::now() + ttl * 3;
    while tokio::time::Instant::now() < until {
        b.keep_alive(lease).await.unwrap();
        tokio::time::sleep(ttl / 6).await;
    }
    assert!(b.read(key.clone()).await.unwrap().is_some());
    b.revoke_lease(lease).await.unwrap();
    let item = within("the revocation event", watch.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(item, WatchItem::Event(ref e) if e.kind == EventKind::Expired),
        "{item:?}"
    );
    assert_eq!(b.read(key).await.unwrap(), None);
    // Revoking an unknown lease is not an error.
    b.revoke_lease(lease).await.unwrap();
}
