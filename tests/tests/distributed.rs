//! Runtime behaviour of the code `#[distributed]` generates, on the
//! in-memory backend: field-level writes and events, field-conditional
//! updates, skip/rename, generic structs and collection fields.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dref::engine::{Backend, Key, LeaseId, Record, WatchStream, Write, WriteOutcome};
use dref::{distributed, ChangeKind, Context, MemoryBackend, Value};
use dref_tests::within;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

#[distributed]
#[derive(Clone, Debug, PartialEq)]
struct Flags {
    beta_feature: bool,
    rollout: u8,
}

#[distributed(id = "settings", change = "SettingsEvent", fields = "SettingsHandles")]
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    #[dref(rename = "max_conn")]
    max_connections: u32,
    region: String,
    /// Local-only: never stored, restored with `Default`.
    #[dref(skip)]
    local_hits: u64,
}

#[distributed]
#[derive(Clone, Debug, PartialEq)]
struct Pair<T> {
    left: T,
    right: T,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Address {
    city: String,
    zip: Option<String>,
}

#[distributed]
#[derive(Clone, Debug, PartialEq)]
struct Inventory {
    items: Vec<String>,
    counts: HashMap<String, u32>,
    sorted: BTreeMap<u32, Vec<u8>>,
    note: Option<String>,
    address: Address,
}

/// A backend handle that counts committed and rejected writes, and reads.
#[derive(Clone)]
struct Counting {
    inner: MemoryBackend,
    committed: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

impl Counting {
    fn new(inner: MemoryBackend) -> Self {
        Counting {
            inner,
            committed: Arc::default(),
            rejected: Arc::default(),
            reads: Arc::default(),
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.committed.load(Ordering::SeqCst),
            self.rejected.load(Ordering::SeqCst),
        )
    }
}

impl Backend for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn read(&self, key: Key) -> BoxFuture<'_, dref::Result<Option<Record>>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(key)
    }

    fn list(&self, prefix: String) -> BoxFuture<'_, dref::Result<dref::engine::Listing>> {
        self.inner.list(prefix)
    }

    fn write(&self, write: Write) -> BoxFuture<'_, dref::Result<WriteOutcome>> {
        async move {
            let outcome = self.inner.write(write).await?;
            let counter = match outcome {
                WriteOutcome::Committed { .. } => &self.committed,
                WriteOutcome::Rejected { .. } => &self.rejected,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(outcome)
        }
        .boxed()
    }

    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, dref::Result<WatchStream>> {
        self.inner.watch(key, since)
    }

    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, dref::Result<dref::engine::PrefixStream>> {
        self.inner.watch_prefix(prefix, since)
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, dref::Result<LeaseId>> {
        self.inner.grant_lease(ttl)
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, dref::Result<()>> {
        self.inner.keep_alive(lease)
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, dref::Result<()>> {
        self.inner.revoke_lease(lease)
    }
}

/// Two nodes on one store, each counting its writes.
fn two_nodes() -> ((Context, Counting), (Context, Counting)) {
    let store = MemoryBackend::new();
    let node = |id: &str| {
        let counting = Counting::new(store.clone());
        let ctx = Context::builder()
            .backend(counting.clone())
            .node_id(id)
            .build();
        (ctx, counting)
    };
    (node("a"), node("b"))
}

/// The next item of a change stream, which must come and be decodable.
async fn next_change<S, T>(changes: &mut S) -> T
where
    S: futures_util::Stream<Item = dref::Result<T>> + Unpin,
{
    within("a change", changes.next())
        .await
        .expect("the stream is open")
        .expect("a decodable change")
}

const OFF: Flags = Flags {
    beta_feature: false,
    rollout: 0,
};

#[tokio::test]
async fn stored_shape_is_one_field_per_struct_field() {
    assert_eq!(Flags::field_names(), &["beta_feature", "rollout"]);
    assert_eq!(Settings::field_names(), &["max_conn", "region"]);
    let fingerprint = Flags::fingerprint();
    assert!(fingerprint.starts_with("Flags{beta_feature:bool,rollout:u8}"));
    assert_ne!(Pair::<u8>::fingerprint(), Pair::<u16>::fingerprint());

    let ctx = Context::local();
    let flags = ctx.make(Flags::id("shape"), OFF).await.unwrap();
    let record = ctx
        .backend()
        .read(flags.key().clone())
        .await
        .unwrap()
        .unwrap();
    assert!(record.field("beta_feature").is_some());
    assert!(record.field("rollout").is_some());
    assert!(record.field("value").is_none());
}

#[tokio::test]
async fn a_set_changing_two_fields_yields_exactly_those_two_events() {
    let ctx = Context::local();
    let flags = ctx
        .make(
            Flags::id("events"),
            Flags {
                beta_feature: false,
                rollout: 1,
            },
        )
        .await
        .unwrap();
    let mut changes = flags.changes();

    // Both fields change: two events of one commit.
    flags
        .set(Flags {
            beta_feature: true,
            rollout: 5,
        })
        .await
        .unwrap();
    // Only `rollout` changes: one event.
    flags
        .set(Flags {
            beta_feature: true,
            rollout: 6,
        })
        .await
        .unwrap();
    // Nothing changes: no event. Then a field write, as a marker.
    flags
        .set(Flags {
            beta_feature: true,
            rollout: 6,
        })
        .await
        .unwrap();
    flags.beta_feature().set(false).await.unwrap();

    let first = next_change(&mut changes).await;
    let second = next_change(&mut changes).await;
    assert_eq!(first.revision, second.revision, "one commit");
    assert_eq!(
        first.kind,
        ChangeKind::Updated(FlagsChange::BetaFeature(true))
    );
    assert_eq!(second.kind, ChangeKind::Updated(FlagsChange::Rollout(5)));
    let third = next_change(&mut changes).await;
    assert!(third.revision > second.revision);
    assert_eq!(third.kind, ChangeKind::Updated(FlagsChange::Rollout(6)));
    let marker = next_change(&mut changes).await;
    assert_eq!(
        marker.kind,
        ChangeKind::Updated(FlagsChange::BetaFeature(false))
    );
}

#[tokio::test]
async fn field_handles_read_write_and_watch_one_field() {
    let ((a, _), (b, _)) = two_nodes();
    let flags_a = a.make(Flags::id("handles"), OFF).await.unwrap();
    let flags_b = b.make(Flags::id("handles"), OFF).await.unwrap();
    let mut rollouts = flags_b.rollout().changes();
    let mut all = flags_b.changes();

    flags_a.rollout().set(5).await.unwrap();
    assert_eq!(flags_a.rollout().peek(), Some(5), "read your writes");
    assert_eq!(flags_b.rollout().get().await.unwrap(), 5);
    assert_eq!(
        flags_a.rollout().update_and_get(|r| r * 2).await.unwrap(),
        10
    );
    assert_eq!(
        flags_a.rollout().get_and_update(|r| r + 1).await.unwrap(),
        10
    );
    let doubled = flags_a
        .beta_feature()
        .modify(|b| (format!("was {b}"), !b))
        .await
        .unwrap();
    assert_eq!(doubled, "was false");
    assert_eq!(
        flags_b.get().await.unwrap(),
        Flags {
            beta_feature: true,
            rollout: 11,
        }
    );
    assert_eq!(flags_a.rollout().name(), "rollout");

    // The field stream sees the three rollout writes and not the other field.
    for expected in [5, 10, 11] {
        let change = next_change(&mut rollouts).await;
        assert_eq!(change.kind, ChangeKind::Updated(expected));
    }
    // The whole-value stream sees one event per field write.
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let change = next_change(&mut all).await;
        kinds.push(change.kind);
    }
    assert_eq!(
        kinds,
        [
            ChangeKind::Updated(FlagsChange::Rollout(5)),
            ChangeKind::Updated(FlagsChange::Rollout(10)),
            ChangeKind::Updated(FlagsChange::Rollout(11)),
            ChangeKind::Updated(FlagsChange::BetaFeature(true)),
        ]
    );

    // Node b's cache follows node a's field writes.
    within("b's cache to follow", async {
        let mut values = flags_b.values();
        while flags_b
            .peek()
            .is_none_or(|f| f.rollout != 11 || !f.beta_feature)
        {
            values.next().await;
        }
    })
    .await;

    flags_a.delete().await.unwrap();
    let missing = flags_a.rollout().set(1).await.unwrap_err();
    assert!(
        matches!(missing, dref::Error::Missing { .. }),
        "{missing:?}"
    );
    let missing = flags_b.rollout().update(|r| r + 1).await.unwrap_err();
    assert!(
        matches!(missing, dref::Error::Missing { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_field_update_is_conditional_on_that_field_only() {
    let ((a, count_a), (b, _)) = two_nodes();
    let flags_a = a.make(Flags::id("conditional"), OFF).await.unwrap();
    let flags_b = b.make(Flags::id("conditional"), OFF).await.unwrap();

    // Another node writes a *different* field while node a computes: node
    // a's write still commits on the first try.
    let calls = AtomicUsize::new(0);
    let before = count_a.counts();
    flags_a
        .rollout()
        .update_async(|r| {
            calls.fetch_add(1, Ordering::SeqCst);
            let flags_b = flags_b.clone();
            async move {
                flags_b.beta_feature().set(true).await?;
                Ok::<_, dref::Error>(r + 1)
            }
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let after = count_a.counts();
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0));

    // Another node writes the *same* field while node a computes: node a's
    // first write is rejected and retried on the value node b wrote.
    let calls = AtomicUsize::new(0);
    let before = count_a.counts();
    flags_a
        .rollout()
        .update_async(|r| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let flags_b = flags_b.clone();
            async move {
                if first {
                    flags_b.rollout().set(40).await?;
                }
                Ok::<_, dref::Error>(r + 2)
            }
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let after = count_a.counts();
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
    assert_eq!(
        flags_b.get().await.unwrap(),
        Flags {
            beta_feature: true,
            rollout: 42,
        }
    );

    // A whole-struct update stays conditional on the whole record: a
    // concurrent write to another field makes it retry, and it keeps that
    // write.
    let calls = AtomicUsize::new(0);
    let before = count_a.counts();
    flags_a
        .update_async(|mut flags| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let flags_b = flags_b.clone();
            async move {
                if first {
                    flags_b.beta_feature().set(false).await?;
                }
                flags.rollout += 1;
                Ok::<_, dref::Error>(flags)
            }
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let after = count_a.counts();
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
    assert_eq!(
        flags_a.get().await.unwrap(),
        Flags {
            beta_feature: false,
            rollout: 43,
        }
    );
}

/// Whole-value writes keep each field's revision in the cache (a field
/// keeps its revision when a write leaves its bytes as they were), so that
/// a field update after them needs no read and is not rejected.
#[tokio::test]
async fn field_updates_after_whole_value_writes_need_no_read() {
    let ((a, count_a), _) = two_nodes();
    let flags = a.make(Flags::id("whole-then-field"), OFF).await.unwrap();
    flags
        .set(Flags {
            beta_feature: false,
            rollout: 7,
        })
        .await
        .unwrap();
    flags
        .update(|f| Flags {
            rollout: f.rollout + 1,
            ..f
        })
        .await
        .unwrap();
    let (reads, before) = (count_a.reads(), count_a.counts());

    flags.beta_feature().update(|b| !b).await.unwrap();
    flags.rollout().update(|r| r + 1).await.unwrap();

    let after = count_a.counts();
    assert_eq!(count_a.reads() - reads, 0, "reads for the field updates");
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2, 0),
        "committed and rejected field writes"
    );
    assert_eq!(
        flags.get().await.unwrap(),
        Flags {
            beta_feature: true,
            rollout: 9,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_fields_never_retry() {
    const ROUNDS: u8 = 50;
    let ((a, count_a), (b, count_b)) = two_nodes();
    let flags_a = a.make(Flags::id("concurrent"), OFF).await.unwrap();
    let flags_b = b.make(Flags::id("concurrent"), OFF).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let (before_a, before_b) = (count_a.counts(), count_b.counts());

    let rollouts = {
        let (flags, barrier) = (flags_a.clone(), barrier.clone());
        tokio::spawn(async move {
            for _ in 0..ROUNDS {
                barrier.wait().await;
                flags.rollout().update(|r| r + 1).await?;
            }
            Ok::<(), dref::Error>(())
        })
    };
    let toggles = {
        let (flags, barrier) = (flags_b.clone(), barrier.clone());
        tokio::spawn(async move {
            for _ in 0..ROUNDS {
                barrier.wait().await;
                flags.beta_feature().update(|b| !b).await?;
            }
            Ok::<(), dref::Error>(())
        })
    };
    within("the updates", async {
        rollouts.await.unwrap().unwrap();
        toggles.await.unwrap().unwrap();
    })
    .await;

    let rounds = usize::from(ROUNDS);
    let (after_a, after_b) = (count_a.counts(), count_b.counts());
    assert_eq!(
        (after_a.0 - before_a.0, after_a.1 - before_a.1),
        (rounds, 0),
        "node a: committed and rejected writes"
    );
    assert_eq!(
        (after_b.0 - before_b.0, after_b.1 - before_b.1),
        (rounds, 0),
        "node b: committed and rejected writes"
    );
    assert_eq!(
        flags_a.get().await.unwrap(),
        Flags {
            beta_feature: ROUNDS % 2 == 1,
            rollout: ROUNDS,
        }
    );
}

#[tokio::test]
async fn field_writes_never_leave_a_stale_view_of_other_fields() {
    // Node a's cache may not have seen node b's write to `beta_feature`
    // when node a patches `rollout`; its cache must not then claim the old
    // `beta_feature` at node a's revision (a whole-struct update would
    // write it back).
    let ((a, _), (b, _)) = two_nodes();
    let flags_a = a.make(Flags::id("stale"), OFF).await.unwrap();
    let flags_b = b.make(Flags::id("stale"), OFF).await.unwrap();
    for round in 1..=20u8 {
        flags_b.beta_feature().set(round % 2 == 1).await.unwrap();
        flags_a.rollout().set(round).await.unwrap();
        flags_a.update(|f| f).await.unwrap();
        assert_eq!(
            flags_b.get().await.unwrap(),
            Flags {
                beta_feature: round % 2 == 1,
                rollout: round,
            }
        );
    }
}

#[tokio::test]
async fn skip_and_rename() {
    let ((a, _), (b, _)) = two_nodes();
    let initial = Settings {
        max_connections: 10,
        region: "eu".into(),
        local_hits: 7,
    };
    assert_eq!(Settings::default_id().name(), "settings");
    let settings_a = a
        .make(Settings::default_id(), initial.clone())
        .await
        .unwrap();
    let settings_b = b
        .make(Settings::default_id(), initial.clone())
        .await
        .unwrap();

    // The skipped field is local: node a keeps what it set, node b reads
    // the default.
    assert_eq!(settings_a.peek().unwrap().local_hits, 7);
    assert_eq!(settings_b.get().await.unwrap().local_hits, 0);

    let record = a
        .backend()
        .read(settings_a.key().clone())
        .await
        .unwrap()
        .unwrap();
    assert!(record.field("max_conn").is_some());
    assert!(record.field("max_connections").is_none());
    assert!(record.field("local_hits").is_none());

    let mut events = settings_b.changes();
    let handles: &SettingsHandles = settings_a.fields();
    handles.max_connections().set(20).await.unwrap();
    let change = next_change(&mut events).await;
    assert_eq!(
        change.kind,
        ChangeKind::Updated(SettingsEvent::MaxConnections(20))
    );
    assert_eq!(settings_a.max_connections().name(), "max_conn");
    assert_eq!(settings_b.max_connections().get().await.unwrap(), 20);
}

#[tokio::test]
async fn generic_structs() {
    let ctx = Context::local();
    let pair = ctx
        .make(
            Pair::id("pair"),
            Pair {
                left: "l".to_owned(),
                right: "r".to_owned(),
            },
        )
        .await
        .unwrap();
    let mut events = pair.changes();
    pair.right().update(|r| r + "!").await.unwrap();
    assert_eq!(
        pair.get().await.unwrap(),
        Pair {
            left: "l".to_owned(),
            right: "r!".to_owned(),
        }
    );
    let change = next_change(&mut events).await;
    assert_eq!(
        change.kind,
        ChangeKind::Updated(PairChange::Right("r!".to_owned()))
    );

    // Another instantiation is another type: opening the same record as
    // `Pair<u32>` fails clearly.
    let wrong = ctx
        .make(
            Pair::id("pair"),
            Pair {
                left: 1u32,
                right: 2,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, dref::Error::TypeMismatch { .. }),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn collection_fields() {
    let ((a, _), (b, _)) = two_nodes();
    let empty = Inventory {
        items: Vec::new(),
        counts: HashMap::new(),
        sorted: BTreeMap::new(),
        note: None,
        address: Address {
            city: "Turin".into(),
            zip: None,
        },
    };
    let inv_a = a
        .make(Inventory::id("inventory"), empty.clone())
        .await
        .unwrap();
    let inv_b = b.make(Inventory::id("inventory"), empty).await.unwrap();
    let mut events = inv_b.changes();

    inv_a
        .items()
        .update(|mut items| {
            items.push("apple".into());
            items
        })
        .await
        .unwrap();
    inv_a
        .counts()
        .update(|mut counts| {
            *counts.entry("apple".into()).or_default() += 3;
            counts
        })
        .await
        .unwrap();
    inv_a
        .sorted()
        .set(BTreeMap::from([(1, vec![1, 2])]))
        .await
        .unwrap();
    inv_a.note().set(Some("fresh".into())).await.unwrap();
    inv_a
        .address()
        .update(|mut address| {
            address.zip = Some("10100".into());
            address
        })
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..5 {
        let change = next_change(&mut events).await;
        let ChangeKind::Updated(change) = change.kind else {
            panic!("unexpected {:?}", change.kind);
        };
        seen.push(change);
    }
    assert_eq!(
        seen,
        [
            InventoryChange::Items(vec!["apple".into()]),
            InventoryChange::Counts(HashMap::from([("apple".into(), 3)])),
            InventoryChange::Sorted(BTreeMap::from([(1, vec![1, 2])])),
            InventoryChange::Note(Some("fresh".into())),
            InventoryChange::Address(Address {
                city: "Turin".into(),
                zip: Some("10100".into()),
            }),
        ]
    );
    let inventory = inv_b.get().await.unwrap();
    assert_eq!(inventory.items, ["apple"]);
    assert_eq!(inventory.address.zip.as_deref(), Some("10100"));
}

/// The generated `encode_field_into` appends exactly what
/// `encode_field` returns, for every field and codec (refs encode their
/// updates through it).
#[test]
fn fields_encode_into_a_buffer_as_they_encode_alone() {
    let inventory = Inventory {
        items: vec!["a".into(), "bb".into()],
        counts: HashMap::from([("x".to_string(), 7)]),
        sorted: BTreeMap::from([(3, vec![1, 2, 3])]),
        note: None,
        address: Address {
            city: "Lyon".into(),
            zip: Some("69001".into()),
        },
    };
    for codec in [
        dref::Codec::Postcard,
        dref::Codec::MessagePack,
        dref::Codec::Json,
    ] {
        for index in 0..Inventory::field_names().len() {
            let mut out = b"kept".to_vec();
            inventory.encode_field_into(index, codec, &mut out).unwrap();
            let alone = inventory.encode_field(index, codec).unwrap();
            assert_eq!(
                (&out[..4], &out[4..]),
                (&b"kept"[..], &alone[..]),
                "{codec} #{index}"
            );
        }
        let mut out = Vec::new();
        assert!(inventory.encode_field_into(99, codec, &mut out).is_err());
    }
}

#[tokio::test]
async fn plain_values_have_no_field_handles() {
    let ctx = Context::local();
    let counter = ctx
        .make(dref::ManualId::<i64>::new("plain"), 0)
        .await
        .unwrap();
    let _: &dref::NoFields = counter.fields();
    counter.update(|n| n + 1).await.unwrap();
    assert_eq!(counter.get().await.unwrap(), 1);
}
