//! `DRef<T>`: creation, reads, writes and atomic updates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dref::{AutoId, Codec, Error, ManualId};
use serde::{Deserialize, Serialize};

use crate::{within, Harness, Node};

/// The seed's first scenario: create, set, get.
pub async fn create_set_get(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<String>::new("greeting"), "hello".into())
        .await
        .unwrap();
    assert_eq!(r.get().await.unwrap(), "hello");
    r.set("world".into()).await.unwrap();
    assert_eq!(r.get().await.unwrap(), "world");
    assert_eq!(r.peek().as_deref(), Some("world"));
}

/// The first `make` seeds the value; later ones (on any node) attach.
pub async fn make_attaches_to_existing(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let ra = a.ctx.make(ManualId::<u32>::new("shared"), 1).await.unwrap();
    ra.set(5).await.unwrap();
    let rb = b
        .ctx
        .make(ManualId::<u32>::new("shared"), 99)
        .await
        .unwrap();
    assert_eq!(rb.peek(), Some(5));
    assert_eq!(rb.get().await.unwrap(), 5);
    assert_eq!(ra.key(), rb.key());
}

fn auto_id_here<T>() -> AutoId<T> {
    AutoId::here()
}

/// The same call site names the same ref on every node.
pub async fn auto_ids_match_across_nodes(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    // One call site, used by both nodes (as one binary on two machines).
    let ra = a.ctx.make(auto_id_here::<u64>(), 7).await.unwrap();
    let rb = b.ctx.make(auto_id_here::<u64>(), 8).await.unwrap();
    assert_eq!(ra.key(), rb.key());
    assert_eq!(rb.get().await.unwrap(), 7);
    // Another type at the same site is another ref.
    let rc = b.ctx.make(auto_id_here::<i8>(), 1).await.unwrap();
    assert_ne!(rc.key(), ra.key());
    // `make_here` ids differ per call site.
    let here1 = a.ctx.make_here(1u8).await.unwrap();
    let here2 = a.ctx.make_here(2u8).await.unwrap();
    assert_ne!(here1.key(), here2.key());
}

/// `set_if_absent` only writes a missing record; `delete` removes it and
/// later reads report it missing.
pub async fn set_if_absent_and_delete(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<i32>::new("absent"), 1)
        .await
        .unwrap();
    assert!(!r.set_if_absent(2).await.unwrap());
    assert_eq!(r.get().await.unwrap(), 1);
    assert!(r.delete().await.unwrap());
    assert!(!r.delete().await.unwrap());
    assert!(matches!(r.get().await, Err(Error::Missing { .. })));
    assert!(matches!(
        r.update(|n| n + 1).await,
        Err(Error::Missing { .. })
    ));
    assert_eq!(r.peek(), None);
    assert!(r.set_if_absent(3).await.unwrap());
    assert_eq!(r.get().await.unwrap(), 3);
}

/// `modify`, `update`, `get_and_update` and `update_and_get`.
pub async fn modify_family(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<Vec<u32>>::new("list"), vec![])
        .await
        .unwrap();
    r.update(|mut v| {
        v.push(1);
        v
    })
    .await
    .unwrap();
    let old = r
        .get_and_update(|mut v| {
            v.push(2);
            v
        })
        .await
        .unwrap();
    assert_eq!(old, vec![1]);
    let new = r
        .update_and_get(|mut v| {
            v.push(3);
            v
        })
        .await
        .unwrap();
    assert_eq!(new, vec![1, 2, 3]);
    let len = r.modify(|v| (v.len(), v[1..].to_vec())).await.unwrap();
    assert_eq!(len, 3);
    assert_eq!(r.get().await.unwrap(), vec![2, 3]);
}

/// The async versions may await other work inside the closure.
pub async fn async_modify_family(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<u64>::new("async"), 10)
        .await
        .unwrap();
    let other = node
        .ctx
        .make(ManualId::<u64>::new("async-other"), 5)
        .await
        .unwrap();
    r.update_async(|v| {
        let other = other.clone();
        async move { Ok::<_, Error>(v + other.get().await?) }
    })
    .await
    .unwrap();
    assert_eq!(r.get().await.unwrap(), 15);
    let old = r
        .get_and_update_async(|v| async move { Ok::<_, Error>(v * 2) })
        .await
        .unwrap();
    assert_eq!(old, 15);
    let new = r
        .update_and_get_async(|v| async move { Ok::<_, Error>(v + 1) })
        .await
        .unwrap();
    assert_eq!(new, 31);
    let doubled = r
        .modify_async(|v| async move { Ok::<_, Error>((v * 2, 0)) })
        .await
        .unwrap();
    assert_eq!(doubled, 62);
    assert_eq!(r.get().await.unwrap(), 0);
}

#[derive(Debug)]
enum AppError {
    Refused,
    Dref(Error),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Dref(e)
    }
}

/// A closure that fails aborts the update: its error is returned and the
/// value is unchanged.
pub async fn failing_closure_aborts_update(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<u64>::new("fails"), 1)
        .await
        .unwrap();
    let result = r
        .update_async(|_| async { Err::<u64, _>(AppError::Refused) })
        .await;
    assert!(matches!(result, Err(AppError::Refused)), "{result:?}");
    let result: Result<(), AppError> = r
        .modify_async(|_| async { Err::<((), u64), _>(AppError::Refused) })
        .await;
    assert!(matches!(result, Err(AppError::Refused)), "{result:?}");
    assert_eq!(r.get().await.unwrap(), 1);
    // dref's own errors come through the caller's error type.
    r.delete().await.unwrap();
    let result = r
        .update_async(|v| async move { Ok::<_, AppError>(v + 1) })
        .await;
    assert!(matches!(result, Err(AppError::Dref(Error::Missing { .. }))));
}

/// 8 tasks on two nodes x 500 increments end at exactly 4000.
pub async fn concurrent_updates_are_atomic(h: &dyn Harness) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 500;
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let ra = a
        .ctx
        .make(ManualId::<u64>::new("counter"), 0)
        .await
        .unwrap();
    let rb = b
        .ctx
        .make(ManualId::<u64>::new("counter"), 0)
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let r = if t % 2 == 0 { ra.clone() } else { rb.clone() };
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                r.update(|n| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    n + 1
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        within("the updating tasks", t).await.unwrap();
    }
    assert_eq!(ra.get().await.unwrap(), TASKS * INCREMENTS);
    assert_eq!(rb.get().await.unwrap(), TASKS * INCREMENTS);
    // Retries happened only under contention, and each one re-ran the closure.
    assert!(calls.load(Ordering::Relaxed) >= (TASKS * INCREMENTS) as usize);
}

/// `peek` follows writes made by other nodes without a read.
pub async fn peek_follows_remote_writes(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let ra = a.ctx.make(ManualId::<u64>::new("peeked"), 0).await.unwrap();
    let rb = b.ctx.make(ManualId::<u64>::new("peeked"), 0).await.unwrap();
    let mut values = ra.values();
    rb.set(42).await.unwrap();
    use futures_util::StreamExt;
    while within("the remote write", values.next())
        .await
        .unwrap()
        .unwrap()
        != Some(42)
    {}
    assert_eq!(ra.peek(), Some(42));
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

/// Every codec round-trips values, and nodes with different codecs cannot
/// mistake each other's records.
pub async fn codecs_round_trip(h: &dyn Harness) {
    let profile = Profile {
        name: "ada".into(),
        tags: vec!["a".into(), "b".into()],
        score: Some(1.5),
    };
    for codec in [Codec::Postcard, Codec::MessagePack, Codec::Json] {
        let node = Node::with_codec(h, codec).await;
        let id = ManualId::<Profile>::new(format!("profile-{codec}"));
        let r = node.ctx.make(id, profile.clone()).await.unwrap();
        assert_eq!(r.get().await.unwrap(), profile);
    }
    let json = Node::with_codec(h, Codec::Json).await;
    let err = json
        .ctx
        .make(ManualId::<Profile>::new("profile-postcard"), profile)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
}
