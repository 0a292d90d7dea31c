//! The engine contract, checked directly on the `Backend` trait.

use std::time::Duration;

use bytes::Bytes;
use dref::engine::{
    Condition, EventKind, FieldName, Key, Op, Record, WatchItem, Write, WriteOutcome,
};
use futures_util::StreamExt;

use crate::{within, Harness};

fn fields(pairs: &[(&str, &str)]) -> Vec<(FieldName, Bytes)> {
    pairs
        .iter()
        .map(|(n, v)| (FieldName::from(*n), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

fn committed(outcome: WriteOutcome) -> (u64, u64) {
    match outcome {
        WriteOutcome::Committed { revision, version } => (revision, version),
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn rejected(outcome: WriteOutcome) -> Option<Record> {
    match outcome {
        WriteOutcome::Rejected { current } => current,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Conditions hold or reject atomically; a rejection returns the current
/// record; patch and delete of an absent record are rejected.
pub async fn engine_conditions_and_rejections(h: &dyn Harness) {
    let b = h.backend().await;
    let key = Key::new("engine/cond");
    let put = |c: Condition, v: &str| Write::new(key.clone(), Op::Put(fields(&[("a", v)]))).when(c);

    assert_eq!(
        rejected(b.write(put(Condition::Exists, "x")).await.unwrap()),
        None
    );
    assert_eq!(
        rejected(b.write(Write::new(key.clone(), Op::Delete)).await.unwrap()),
        None
    );
    let patch = Write::new(key.clone(), Op::Patch(fields(&[("a", "p")])));
    assert_eq!(rejected(b.write(patch).await.unwrap()), None);

    let (r1, v1) = committed(b.write(put(Condition::Absent, "1")).await.unwrap());
    assert_eq!(v1, 1);
    let current = rejected(b.write(put(Condition::Absent, "2")).await.unwrap()).unwrap();
    assert_eq!(
        (
            current.version,
            current.mod_revision,
            current.create_revision
        ),
        (1, r1, r1)
    );
    assert_eq!(current.field("a").unwrap().value, Bytes::from("1"));

    let stale = rejected(b.write(put(Condition::Version(7), "3")).await.unwrap()).unwrap();
    assert_eq!(stale.version, 1);
    let (r2, v2) = committed(b.write(put(Condition::Version(1), "3")).await.unwrap());
    assert_eq!(v2, 2);
    assert!(r2 > r1);
    rejected(b.write(put(Condition::ModRevision(r1), "4")).await.unwrap()).unwrap();
    let (r3, _) = committed(b.write(put(Condition::ModRevision(r2), "4")).await.unwrap());

    let record = b.read(key.clone()).await.unwrap().unwrap();
    assert_eq!(
        (record.version, record.mod_revision, record.create_revision),
        (3, r3, r1)
    );
    assert_eq!(record.field("a").unwrap().value, Bytes::from("4"));

    committed(b.write(Write::new(key.clone(), Op::Delete)).await.unwrap());
    assert_eq!(b.read(key.clone()).await.unwrap(), None);
    // Re-created: a new create revision and version 1.
    let (r5, v5) = committed(b.write(put(Condition::Absent, "5")).await.unwrap());
    assert_eq!(v5, 1);
    assert_eq!(b.read(key).await.unwrap().unwrap().create_revision, r5);
}

/// Revisions strictly increase across keys, in commit order.
pub async fn engine_revisions_increase(h: &dyn Harness) {
    let b = h.backend().await;
    let mut last = 0;
    for i in 0..20 {
        let key = Key::new(format!("engine/rev/{}", i % 3));
        let (rev, _) = committed(
            b.write(Write::new(key, Op::Put(fields(&[("v", &i.to_string())]))))
                .await
                .unwrap(),
        );
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    }
}

/// A `Put` keeps the revision of unchanged fields and reports only changed,
/// added and removed fields.
pub async fn engine_put_diffs_fields(h: &dyn Harness) {
    let b = h.backend().await;
    let key = Key::new("engine/diff");
    let (r1, _) = committed(
        b.write(Write::new(
            key.clone(),
            Op::Put(fields(&[("a", "1"), ("b", "1"), ("c", "1")])),
        ))
        .await
        .unwrap(),
    );
    let mut watch = b.watch(key.clone(), Some(r1)).await.unwrap();
    let (r2, _) = committed(
        b.write(Write::new(
            key.clone(),
            Op::Put(fields(&[("a", "1"), ("b", "2"), ("d", "1")])),
        ))
        .await
        .unwrap(),
    );
    let item = within("the put event", watch.next())
        .await
        .unwrap()
        .unwrap();
    let WatchItem::Event(event) = item else {
        panic!("expected an event, got {item:?}")
    };
    assert_eq!(event.revision, r2);
    let EventKind::Put {
        version,
        changed,
        removed,
        create_revision,
        ..
    } = event.kind
    else {
        panic!("expected a put, got {:?}", event.kind)
    };
    assert_eq!((version, create_revision), (2, r1));
    let mut names: Vec<&str> = changed.iter().map(|(n, _)| &**n).collect();
    names.sort();
    assert_eq!(names, ["b", "d"]);
    assert_eq!(removed.iter().map(|n| &**n).collect::<Vec<_>>(), ["c"]);

    let record = b.read(key).await.unwrap().unwrap();
    assert_eq!(record.field("a").unwrap().mod_revision, r1);
    assert_eq!(record.field("b").unwrap().mod_revision, r2);
    assert!(record.field("c").is_none());
}

/// `Patch` sets some fields; `FieldModRevision` conditions on one field
/// only, so writers of different fields do not conflict.
pub async fn engine_patch_and_field_condition(h: &dyn Harness) {
    let b = h.backend().await;
    let key = Key::new("engine/patch");
    let (r1, _) = committed(
        b.write(Write::new(
            key.clone(),
            Op::Put(fields(&[("a", "1"), ("b", "1")])),
        ))
        .await
        .unwrap(),
    );
    let patch = |name: &str, v: &str, rev: u64| {
        Write::new(key.clone(), Op::Patch(fields(&[(name, v)]))).when(Condition::FieldModRevision {
            field: FieldName::from(name),
            revision: rev,
        })
    };
    let (r2, v2) = committed(b.write(patch("a", "2", r1)).await.unwrap());
    assert_eq!(v2, 2);
    // `b` was not touched by that write: a patch conditional on it holds.
    let (r3, _) = committed(b.write(patch("b", "2", r1)).await.unwrap());
    let current = rejected(b.write(patch("a", "3", r1)).await.unwrap()).unwrap();
    assert_eq!(current.field("a").unwrap().mod_revision, r2);
    let record = b.read(key).await.unwrap().unwrap();
    assert_eq!(record.version, 3);
    assert_eq!(record.mod_revision, r3);
    assert_eq!(record.field("a").unwrap().value, Bytes::from("2"));
    assert_eq!(record.field("b").unwrap().value, Bytes::from("2"));
}

/// A watch opened with `since` covers commits made after that revision
/// (replayed or summarised by a resync), then streams live events.
pub async fn engine_watch_since_resyncs(h: &dyn Harness) {
    let b = h.backend().await;
    let key = Key::new("engine/since");
    let (r1, _) = committed(
        b.write(Write::new(key.clone(), Op::Put(fields(&[("v", "1")]))))
            .await
            .unwrap(),
    );
    let (r2, _) = committed(
        b.write(Write::new(key.clone(), Op::Put(fields(&[("v", "2")]))))
            .await
            .unwrap(),
    );
    let mut watch = b.watch(key.clone(), Some(r1)).await.unwrap();
    let mut seen: Option<Record> = None;
    // Whatever the backend sends for the missed commit, the state it implies
    // must be the record at r2.
    while seen.as_ref().map(|r| r.mod_revision) != Some(r2) {
        match within("the missed commit", watch.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchItem::Resync(record) => seen = record,
            WatchItem::Event(event) => {
                assert!(event.revision > r1);
                if seen.is_none() {
                    seen = b.read(key.clone()).await.unwrap();
                } else {
                    dref::engine::apply_event(&mut seen, &event);
                }
            }
        }
    }
    assert_eq!(seen.unwrap().field("v").unwrap().value, Bytes::from("2"));
    let (r3, _) = committed(b.write(Write::new(key.clone(), Op::Delete)).await.unwrap());
    let item = within("the delete event", watch.next())
        .await
        .unwrap()
        .unwrap();
    match item {
        WatchItem::Event(e) => assert_eq!((e.revision, e.kind), (r3, EventKind::Deleted)),
        other => panic!("expected the delete event, got {other:?}"),
    }
}

/// A listing is a linearizable read of a prefix: through another handle
/// right after the writes, it holds every record under the prefix (and
/// nothing else), in key order, as `read` returns them, at a revision that
/// covers them; deleted and expired records leave it. Glob characters in a
/// prefix are plain characters.
pub async fn engine_list_reads_a_prefix(h: &dyn Harness) {
    let a = h.backend().await;
    let b = h.backend().await;
    let empty = b.list("list/".into()).await.unwrap();
    assert_eq!(empty.records, []);

    let lease = a.grant_lease(Duration::from_secs(600)).await.unwrap();
    let under = ["list/b", "list/a", "list/a/x", "list/[*?]\\", "list/leased"];
    let elsewhere = ["lisT/a", "other/list/c", "list"];
    let mut last = 0;
    for name in under.iter().chain(&elsewhere) {
        let mut write = Write::new(Key::new(*name), Op::Put(fields(&[("v", name)])));
        if *name == "list/leased" {
            write = write.with_lease(Some(lease));
        }
        last = committed(a.write(write).await.unwrap()).0;
    }

    let listing = b.list("list/".into()).await.unwrap();
    let mut expected: Vec<&str> = under.to_vec();
    expected.sort_unstable();
    let keys: Vec<&str> = listing.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, expected);
    assert!(
        listing.revision >= last,
        "a listing at revision {} after a commit at {last}",
        listing.revision
    );
    for (key, record) in &listing.records {
        assert!(record.mod_revision <= listing.revision, "{key}");
        assert_eq!(Some(record), b.read(key.clone()).await.unwrap().as_ref());
    }
    // A prefix with glob characters matches only itself.
    let globbed = b.list("list/[".into()).await.unwrap();
    let keys: Vec<&str> = globbed.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["list/[*?]\\"]);
    assert_eq!(b.list("list/*".into()).await.unwrap().records, []);
    // The empty prefix lists everything.
    let all = b.list(String::new()).await.unwrap();
    assert_eq!(all.records.len(), under.len() + elsewhere.len());

    // Deleted and expired records are gone from the next listing.
    committed(
        a.write(Write::new(Key::new("list/b"), Op::Delete))
            .await
            .unwrap(),
    );
    a.revoke_lease(lease).await.unwrap();
    let after = b.list("list/".into()).await.unwrap();
    let keys: Vec<&str> = after.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["list/[*?]\\", "list/a", "list/a/x"]);
    assert!(after.revision > listing.revision);
}

/// The state a prefix watcher builds from its stream: the listing of a
/// resync, then each event applied to its key's record.
#[derive(Default)]
struct PrefixModel {
    records: std::collections::BTreeMap<Key, Record>,
    /// The revision of the last item.
    revision: u64,
}

impl PrefixModel {
    fn apply(&mut self, prefix: &str, item: dref::engine::PrefixItem) {
        match item {
            dref::engine::PrefixItem::Resync(listing) => {
                assert!(listing.revision >= self.revision, "a resync went back");
                self.records = listing.records.into_iter().collect();
                self.revision = listing.revision;
            }
            dref::engine::PrefixItem::Event(key, event) => {
                assert!(
                    key.as_str().starts_with(prefix),
                    "a watch of `{prefix}` yielded an event of `{key}`"
                );
                assert!(
                    event.revision > self.revision
                        || event.revision == self.revision && event.kind == EventKind::Expired,
                    "event of `{key}` at {} after {}",
                    event.revision,
                    self.revision
                );
                let mut record = self.records.remove(&key);
                dref::engine::apply_event(&mut record, &event);
                if let Some(record) = record {
                    self.records.insert(key, record);
                }
                self.revision = event.revision;
            }
        }
    }

    fn listing(&self) -> Vec<(Key, Record)> {
        self.records
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }
}

/// A prefix watch yields the commits of every key under its prefix and of
/// no other, in commit order, each with its key (puts, patches, deletes,
/// expiries), so that a watcher that starts from a listing and applies
/// what it is given holds what a listing holds now; from an older
/// revision it covers everything after it; without `since`, only what
/// commits after it was opened.
pub async fn engine_prefix_watch_follows_every_key_under_it(h: &dyn Harness) {
    let a = h.backend().await;
    let b = h.backend().await;
    let prefix = "pw/";
    let put = |key: &str, value: &str| {
        Write::new(
            Key::new(key),
            Op::Put(fields(&[("v", value), ("w", "same")])),
        )
    };
    let (before, _) = committed(a.write(put("pw/early", "0")).await.unwrap());
    let listing = b.list(prefix.into()).await.unwrap();
    let mut model = PrefixModel {
        records: listing.records.into_iter().collect(),
        revision: listing.revision,
    };
    let mut from_listing = b
        .watch_prefix(prefix.into(), Some(listing.revision))
        .await
        .unwrap();
    let mut from_before = b
        .watch_prefix(prefix.into(), Some(before - 1))
        .await
        .unwrap();
    let mut from_now = b.watch_prefix(prefix.into(), None).await.unwrap();

    let lease = a.grant_lease(Duration::from_secs(600)).await.unwrap();
    committed(a.write(put("pw/x", "1")).await.unwrap());
    committed(a.write(put("other/pw/x", "1")).await.unwrap());
    committed(a.write(put("pw", "1")).await.unwrap());
    committed(a.write(put("pw/y", "1")).await.unwrap());
    let patch = Op::Patch(fields(&[("v", "2")]));
    committed(a.write(Write::new(Key::new("pw/x"), patch)).await.unwrap());
    committed(
        a.write(Write::new(Key::new("pw/y"), Op::Delete))
            .await
            .unwrap(),
    );
    committed(
        a.write(put("pw/z", "1").with_lease(Some(lease)))
            .await
            .unwrap(),
    );
    committed(
        a.write(put("pw/z2", "1").with_lease(Some(lease)))
            .await
            .unwrap(),
    );
    committed(a.write(put("pw/x", "3")).await.unwrap());
    a.revoke_lease(lease).await.unwrap();
    let (last, _) = committed(a.write(put("pw/last", "1")).await.unwrap());

    let now = b.list(prefix.into()).await.unwrap();
    assert!(now.revision >= last);
    let keys: Vec<&str> = now.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["pw/early", "pw/last", "pw/x"]);
    // Followed from the listing: every commit comes as an event or in a
    // resync, and the state converges on the listing's.
    let mut events = 0;
    while model.revision < last {
        let item = within("the prefix's events", from_listing.next())
            .await
            .expect("the stream ended")
            .expect("the stream failed");
        events += matches!(item, dref::engine::PrefixItem::Event(..)) as usize;
        model.apply(prefix, item);
    }
    assert_eq!(model.listing(), now.records);
    // Nothing came in a resync on a backend that sent every event: the
    // watch was opened at the listing's revision, with nothing in between.
    assert!(events > 0);

    // From before the first commit: the same state (the first item may be
    // a resync), the early commit included.
    let mut model = PrefixModel {
        revision: before - 1,
        ..PrefixModel::default()
    };
    let mut early_seen = false;
    while model.revision < last {
        let item = within("the prefix's events from before", from_before.next())
            .await
            .expect("the stream ended")
            .expect("the stream failed");
        early_seen |= match &item {
            dref::engine::PrefixItem::Event(key, _) => key.as_str() == "pw/early",
            dref::engine::PrefixItem::Resync(listing) => listing
                .records
                .iter()
                .any(|(k, _)| k.as_str() == "pw/early"),
        };
        model.apply(prefix, item);
    }
    assert!(early_seen, "the watch from before missed the early commit");
    assert_eq!(model.listing(), now.records);

    // Without `since`: the first item is the first commit after opening.
    match within("the first new event", from_now.next())
        .await
        .unwrap()
        .unwrap()
    {
        dref::engine::PrefixItem::Event(key, event) => {
            assert_eq!(key.as_str(), "pw/x");
            assert!(event.revision > before);
        }
        other => panic!("expected the event of pw/x, got {other:?}"),
    }
}
