//! Redis-specific behaviour: restarts, lost connections, namespaces,
//! authentication, foreign data, and the storage layout seen by other
//! clients. Each test runs its own private redis-server.

mod support;

use std::time::Duration;

use bytes::Bytes;
use dref::engine::{
    Backend, Condition, FieldName, Key, LeaseId, Op, PrefixItem, WatchItem, Write, WriteOutcome,
};
use dref::{ChangeKind, Codec, Context, Error, ManualId};
use dref_backends::redis::{RedisBackend, RedisConfig};
use dref_tests::{eventually, within};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use support::proxy::Proxy;
use support::redis_server::RedisServer;

async fn backend(url: &str, prefix: &str) -> RedisBackend {
    RedisConfig::new(url)
        .prefix(prefix)
        .connect_timeout(Duration::from_secs(1))
        .command_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect")
}

fn context(backend: RedisBackend, node: &str) -> Context {
    support::log_from_env();
    Context::builder()
        .backend(backend)
        .node_id(node)
        .session_ttl(Duration::from_millis(1500))
        .build()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_resyncs_watchers_and_updates_resume() {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let a = context(backend(&server.url(), "app:").await, "a");
    let r = a.make(ManualId::<u64>::new("counter"), 0).await.unwrap();
    let mut changes = r.changes();
    r.set(1).await.unwrap();
    let first = within("the first change", changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.kind, ChangeKind::Updated(1));

    server.kill();
    let err = r.update(|n| n + 1).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    server.launch();

    // Another node writes after the restart; the watcher, whose pub/sub
    // connection was lost, must be resynced and reach the new value.
    let b = context(backend(&server.url(), "app:").await, "b");
    let rb = b.make(ManualId::<u64>::new("counter"), 0).await.unwrap();
    assert_eq!(
        rb.get().await.unwrap(),
        1,
        "the record survived the restart"
    );
    rb.set(10).await.unwrap();
    let mut resynced = false;
    loop {
        let change = within("the change after the restart", changes.next()).await;
        match change.unwrap() {
            Ok(c) => match c.kind {
                ChangeKind::Resync(v) => {
                    resynced = true;
                    if v == Some(10) {
                        break;
                    }
                }
                ChangeKind::Updated(10) => break,
                other => panic!("unexpected change {other:?}"),
            },
            // Errors while the server was away are reported, not hidden.
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }
    assert!(
        resynced,
        "a reconnected watcher must get an explicit resync"
    );
    eventually("an update after the restart", || r.update(|n| n + 1)).await;
    assert_eq!(rb.get().await.unwrap(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_longer_than_its_ttl_loses_the_lock() {
    let server = RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let cut_off = format!("redis://127.0.0.1:{}/0", proxy.port);
    let a = context(backend(&cut_off, "locks:").await, "a");
    let b = context(backend(&server.url(), "locks:").await, "b");
    let held = a.acquire("report").await.unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("report").await })
    };
    proxy.cut();
    let taken = within("the waiter", waiter).await.unwrap().unwrap();
    assert!(
        held.is_lost(),
        "the lock changed hands before its holder knew"
    );
    let err = held.lost().await;
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    assert!(taken.token() > held.token());
    drop(held);

    proxy.heal();
    let taken_token = taken.token();
    taken.release().await.unwrap();
    let again = eventually("the healed node's lock", || a.acquire("report")).await;
    assert!(again.token() > taken_token);
    again.release().await.unwrap();
}

/// A prefix watch whose pub/sub connection is lost (the server restarted)
/// resyncs with a listing, then follows the commits after it; garbage
/// published on the channel of a key under the prefix is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_resyncs_after_a_restart_and_reports_garbage() {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let b = backend(&server.url(), "pw:").await;
    let first = committed(b.write(put(&Key::new("ref/a"), "1")).await.unwrap());
    let mut watch = b.watch_prefix("ref/".into(), Some(first)).await.unwrap();
    let second = committed(b.write(put(&Key::new("ref/b"), "1")).await.unwrap());
    match within("the event before the restart", watch.next()).await {
        Some(Ok(PrefixItem::Event(key, event))) => {
            assert_eq!((key.as_str(), event.revision), ("ref/b", second));
        }
        other => panic!("expected the event of ref/b, got {other:?}"),
    }

    server.kill();
    server.launch();
    let other = backend(&server.url(), "pw:").await;
    let third = committed(other.write(put(&Key::new("ref/c"), "1")).await.unwrap());
    // The resync's listing holds what the restart kept and what was
    // written since; errors while the server was away are reported.
    let listing = loop {
        match within("the resync after the restart", watch.next()).await {
            Some(Ok(PrefixItem::Resync(listing))) => break listing,
            Some(Err(e)) => assert!(e.is_transient(), "{e}"),
            other => panic!("expected a resync, got {other:?}"),
        }
    };
    let keys: Vec<&str> = listing.records.iter().map(|(k, _)| k.as_str()).collect();
    if listing.revision >= third {
        assert_eq!(keys, ["ref/a", "ref/b", "ref/c"]);
    } else {
        assert_eq!(keys, ["ref/a", "ref/b"]);
    }
    let fourth = committed(other.write(put(&Key::new("ref/d"), "1")).await.unwrap());
    loop {
        match within("the event after the resync", watch.next()).await {
            Some(Ok(PrefixItem::Event(key, event))) if event.revision == fourth => {
                assert_eq!(key.as_str(), "ref/d");
                break;
            }
            Some(Ok(PrefixItem::Event(key, event))) => {
                assert!(event.revision > listing.revision, "{key}: {event:?}");
            }
            other => panic!("expected the event of ref/d, got {other:?}"),
        }
    }

    let mut conn = raw(&server).await;
    let _: () = conn
        .publish("pw:c:ref/e", b"\x00garbage".as_slice())
        .await
        .unwrap();
    match within("the garbage report", watch.next()).await {
        Some(Err(e)) => {
            assert!(matches!(e, Error::Protocol { .. }), "{e}");
            assert!(e.to_string().contains("ref/e"), "{e}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(within("the end of the stream", watch.next())
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_do_not_see_each_other() {
    let server = RedisServer::start(&[]);
    let one = context(backend(&server.url(), "one:").await, "1");
    let two = context(backend(&server.url(), "two:").await, "2");
    let r1 = one
        .make(ManualId::<String>::new("shared"), "one".into())
        .await
        .unwrap();
    let r2 = two
        .make(ManualId::<String>::new("shared"), "two".into())
        .await
        .unwrap();
    r1.set("uno".into()).await.unwrap();
    assert_eq!(r2.get().await.unwrap(), "two");
    let _lock = one.acquire("job").await.unwrap();
    two.try_acquire("job")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let keys: Vec<String> = conn.keys("*r:ref/shared").await.unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["one:r:ref/shared", "two:r:ref/shared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_dead_servers_are_typed_errors() {
    let server = RedisServer::start(&["--requirepass", "s3cret"]);
    let wrong = format!("redis://:nope@127.0.0.1:{}/0", server.port);
    let err = RedisConfig::new(wrong).connect().await.unwrap_err();
    assert!(
        matches!(err, Error::Refused { ref message, .. } if message.contains("credentials")),
        "{err}"
    );
    assert!(
        !err.to_string().contains("nope"),
        "the password leaked into: {err}"
    );
    let right = format!("redis://:s3cret@127.0.0.1:{}/0", server.port);
    RedisConfig::new(right).connect().await.unwrap();

    let err = RedisConfig::new("redis://127.0.0.1:1/0")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let err = RedisConfig::new("http://nowhere")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    std::env::remove_var(dref_backends::redis::URL_ENV);
    let err = RedisConfig::from_env().unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("DREF_REDIS_URL")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_under_our_keys_is_reported() {
    let server = RedisServer::start(&[]);
    let ctx = context(backend(&server.url(), "x:").await, "a");
    let mut conn = raw(&server).await;

    // Garbage bytes in a field: a decode error, state untouched.
    let r = ctx
        .make(ManualId::<Vec<String>>::new("list"), vec!["a".into()])
        .await
        .unwrap();
    let _: () = conn
        .hset("x:r:ref/list", "f:value", b"\xff\xfe\xfd".as_slice())
        .await
        .unwrap();
    let err = r.get().await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");

    // Another data type under a record key: a protocol error.
    let _: () = conn.set("x:r:ref/text", "just a string").await.unwrap();
    let err = ctx.make(ManualId::<u8>::new("text"), 1).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    let lister = backend(&server.url(), "x:").await;
    let err = lister.list("ref/".into()).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("x:r:ref/text"), "{err}");

    // A hash that is not a dref record.
    let _: () = conn.hset("x:r:ref/hash", "colour", "blue").await.unwrap();
    let err = ctx.make(ManualId::<u8>::new("hash"), 1).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");

    // Garbage published on a watched key's channel: the stream reports it,
    // and the ref keeps following the key afterwards.
    let counter = ctx.make(ManualId::<u32>::new("n"), 0).await.unwrap();
    let mut values = counter.values();
    let _: () = conn
        .publish("x:c:ref/n", b"\x00garbage".as_slice())
        .await
        .unwrap();
    let item = within("the garbage report", values.next()).await.unwrap();
    assert!(matches!(item, Err(Error::Protocol { .. })), "{item:?}");
    counter.set(5).await.unwrap();
    loop {
        match within("the value after garbage", values.next())
            .await
            .unwrap()
        {
            Ok(Some(5)) => break,
            Ok(other) => panic!("unexpected value {other:?}"),
            // The watch is re-opened after the malformed message.
            Err(e) => assert!(matches!(e, Error::Protocol { .. }), "{e}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    level: u8,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_are_readable_with_plain_commands() {
    let server = RedisServer::start(&[]);
    let backend = backend(&server.url(), "shop:").await;
    let ctx = Context::builder()
        .backend(backend)
        .codec(Codec::Json)
        .build();
    let profile = Profile {
        name: "ada".into(),
        level: 3,
    };
    let r = ctx
        .make(ManualId::<Profile>::new("profile"), profile.clone())
        .await
        .unwrap();
    r.update(|mut p| {
        p.level += 1;
        p
    })
    .await
    .unwrap();
    let mut conn = raw(&server).await;
    let hash: std::collections::HashMap<String, Vec<u8>> =
        conn.hgetall("shop:r:ref/profile").await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(&hash["f:value"]).unwrap();
    assert_eq!(value, serde_json::json!({"name": "ada", "level": 4}));
    assert_eq!(hash["m:ver"], b"2");
    let fingerprint = String::from_utf8(hash["f:$type"].clone()).unwrap();
    assert!(
        fingerprint.starts_with("json:") && fingerprint.ends_with("Profile"),
        "{fingerprint}"
    );
    let revision: u64 = conn.get("shop:rev").await.unwrap();
    let mod_revision: u64 = String::from_utf8(hash["m:mrev"].clone())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(revision, mod_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_reloaded() {
    let server = RedisServer::start(&[]);
    let ctx = context(backend(&server.url(), "s:").await, "a");
    let r = ctx.make(ManualId::<u64>::new("n"), 0).await.unwrap();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The next EVALSHA gets NOSCRIPT; the script is sent again.
    r.update(|n| n + 1).await.unwrap();
    assert_eq!(r.get().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_with_their_own_database() {
    let server = RedisServer::start(&[]);
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://app:app-pass@127.0.0.1:{}/3", server.port);
    let ctx = context(backend(&url, "acl:").await, "a");
    ctx.make(ManualId::<String>::new("who"), "app".into())
        .await
        .unwrap();
    // The record is in database 3, not 0.
    let in_db0: bool = conn.exists("acl:r:ref/who").await.unwrap();
    assert!(!in_db0);
    let mut db3 = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let in_db3: bool = db3.exists("acl:r:ref/who").await.unwrap();
    assert!(in_db3);
    let wrong = format!("redis://app:wrong@127.0.0.1:{}/3", server.port);
    let err = RedisConfig::new(wrong).connect().await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(!err.is_transient(), "{err}");

    // A user the server lets in, without the scripts dref's engine runs:
    // refused, not unavailable (retrying cannot help).
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "noscripts",
            "on",
            ">pass",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://noscripts:pass@127.0.0.1:{}/0", server.port);
    let err = match RedisConfig::new(url).connect().await {
        Err(err) => err,
        Ok(backend) => context(backend, "b")
            .make(ManualId::<u64>::new("n"), 0)
            .await
            .map(drop)
            .unwrap_err(),
    };
    assert!(
        matches!(err, Error::Refused { ref message, .. } if message.contains("permission")),
        "{err}"
    );
}

/// Stalls the server for `seconds` (`DEBUG SLEEP` on a connection of its
/// own; the server needs `--enable-debug-command yes`), and returns once it
/// is seen stalled: a `PING` goes unanswered. The task ends with the stall.
async fn stall(server: &RedisServer, seconds: f64) -> tokio::task::JoinHandle<()> {
    let mut conn = raw(server).await;
    let mut probe = raw(server).await;
    let stall = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(seconds)
            .query_async(&mut conn)
            .await;
    });
    within("the server to stall", async {
        loop {
            let ping_cmd = redis::cmd("PING");
            let ping = ping_cmd.query_async::<String>(&mut probe);
            if tokio::time::timeout(Duration::from_millis(100), ping)
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    stall
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_times_out_with_a_typed_error() {
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let backend = RedisConfig::new(server.url())
        .command_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let ctx = context(backend, "a");
    let r = ctx.make(ManualId::<u64>::new("n"), 0).await.unwrap();
    let stall = stall(&server, 3.0).await;
    let started = std::time::Instant::now();
    let err = r.update(|n| n + 1).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    stall.await.unwrap();
    eventually("an update after the stall", || r.update(|n| n + 1)).await;
}

// ---------------------------------------------------------------------
// Safety: watches, malformed data, data loss and lost replies.

fn put(key: &Key, value: &str) -> Write {
    let fields = vec![(
        FieldName::from("v"),
        Bytes::copy_from_slice(value.as_bytes()),
    )];
    Write::new(key.clone(), Op::Put(fields))
}

fn committed(outcome: WriteOutcome) -> u64 {
    match outcome {
        WriteOutcome::Committed { revision, .. } => revision,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Every key under `prefix` with its `DUMP`: any change to the namespace
/// (a counter, a record field, a lease deadline) changes this.
async fn namespace(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    let mut dump = std::collections::BTreeMap::new();
    for key in keys {
        let bytes: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        dump.insert(key, bytes);
    }
    dump
}

/// A malformed-data error: `Protocol`, not transient, naming the Redis
/// key and the field.
fn assert_malformed(err: &Error, key: &str, field: &str, case: &str) {
    assert!(matches!(err, Error::Protocol { .. }), "{case}: {err}");
    assert!(!err.is_transient(), "{case}: {err}");
    let text = err.to_string();
    assert!(
        text.contains(key) && text.contains(field),
        "{case}: the error should name `{key}` and `{field}`: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_watch_never_yields_a_commit_made_before_it() {
    let server = RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let b = backend(&format!("redis://127.0.0.1:{}/0", proxy.port), "w:").await;
    let key = Key::new("ref/early");
    // The event of this commit is still on its way to the handle's pub/sub
    // connection when the watch is opened.
    proxy.hold_subscribers(true);
    let early = committed(b.write(put(&key, "1")).await.unwrap());
    let mut watch = b.watch(key.clone(), None).await.unwrap();
    proxy.hold_subscribers(false);
    let late = committed(b.write(put(&key, "2")).await.unwrap());
    match within("the first event", watch.next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchItem::Event(e) => assert_eq!(
            e.revision, late,
            "the watch yielded {e:?}, but the commit at {early} was made before it was opened"
        ),
        other => panic!("expected the event of the later commit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_protocol_errors_and_writes_change_nothing() {
    let server = RedisServer::start(&[]);
    let b = backend(&server.url(), "m:").await;
    let mut conn = raw(&server).await;
    let lease = b.grant_lease(Duration::from_secs(600)).await.unwrap();
    let garbage = [
        "garbage",
        "12abc",
        "1.5",
        "-3",
        "007",
        "",
        "9007199254740993",
    ];
    for field in ["m:ver", "m:crev", "m:mrev", "m:n", "m:lease", "r:v"] {
        for bad in garbage {
            let key = Key::new(format!("ref/{field}/{bad}"));
            let rkey = format!("m:r:{}", key.as_str());
            let revision = committed(
                b.write(put(&key, "1").with_lease(Some(lease)))
                    .await
                    .unwrap(),
            );
            let _: () = conn.hset(&rkey, field, bad).await.unwrap();
            let before = namespace(&mut conn, "m:").await;
            let mut writes = vec![
                ("put", put(&key, "2")),
                ("unchanged put", put(&key, "1").with_lease(Some(lease))),
                ("put without the lease", put(&key, "2")),
                ("versioned put", put(&key, "2").when(Condition::Version(1))),
                (
                    "field-revision put",
                    put(&key, "2").when(Condition::FieldModRevision {
                        field: FieldName::from("v"),
                        revision,
                    }),
                ),
                (
                    "patch",
                    Write::new(
                        key.clone(),
                        Op::Patch(vec![(FieldName::from("v"), Bytes::from_static(b"3"))]),
                    ),
                ),
                ("absent put", put(&key, "2").when(Condition::Absent)),
            ];
            // A delete reads the record's metadata, not its fields.
            if field.starts_with("m:") {
                writes.push(("delete", Write::new(key.clone(), Op::Delete)));
            }
            for (what, write) in writes {
                let case = format!("{what} on {field} = {bad:?}");
                let err = b.write(write).await.unwrap_err();
                assert_malformed(&err, &rkey, field, &case);
                assert_eq!(
                    namespace(&mut conn, "m:").await,
                    before,
                    "{case} changed the store"
                );
            }
            let err = b.read(key.clone()).await.unwrap_err();
            assert_malformed(&err, &rkey, field, &format!("read of {field} = {bad:?}"));
            // A listing meets every record under its prefix: the keys made
            // malformed before this one too.
            let err = b.list(key.as_str().to_owned()).await.unwrap_err();
            let under = format!("m:r:ref/{field}/");
            assert_malformed(
                &err,
                &under,
                field,
                &format!("listing of {field} = {bad:?}"),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_counters_and_leases_are_protocol_errors_and_change_nothing() {
    let server = RedisServer::start(&[]);
    let b = backend(&server.url(), "c:").await;
    let mut conn = raw(&server).await;
    let key = Key::new("ref/n");
    let lease = b.grant_lease(Duration::from_secs(600)).await.unwrap();
    committed(
        b.write(put(&key, "1").with_lease(Some(lease)))
            .await
            .unwrap(),
    );
    let garbage = [
        "garbage",
        "12abc",
        "1.5",
        "-3",
        "007",
        "",
        "9007199254740993",
    ];

    // The store revision: writes (also those that change a lease's set of
    // keys first), and a revoke (which deletes a record).
    let good: String = conn.get("c:rev").await.unwrap();
    for bad in garbage {
        let _: () = conn.set("c:rev", bad).await.unwrap();
        let before = namespace(&mut conn, "c:").await;
        let case = format!("c:rev = {bad:?}");
        let leased = put(&Key::new("ref/leased"), "1").with_lease(Some(lease));
        let writes = [
            put(&key, "2"),
            leased,
            put(&key, "1"),
            Write::new(key.clone(), Op::Delete),
        ];
        for write in writes {
            let err = b.write(write).await.unwrap_err();
            assert_malformed(&err, "c:rev", "c:rev", &format!("write with {case}"));
        }
        let err = b.revoke_lease(lease).await.unwrap_err();
        assert_malformed(&err, "c:rev", "c:rev", &format!("revoke with {case}"));
        let err = b.read(key.clone()).await.unwrap_err();
        assert_malformed(&err, "c:rev", "c:rev", &format!("read with {case}"));
        assert_eq!(namespace(&mut conn, "c:").await, before, "{case}");
    }
    let _: () = conn.set("c:rev", &good).await.unwrap();

    // A lease's set of keys.
    let lk = format!("c:lk:{}", lease.0);
    let members: Vec<String> = conn.smembers(&lk).await.unwrap();
    let _: () = conn.del(&lk).await.unwrap();
    let _: () = conn.set(&lk, "garbage").await.unwrap();
    let before = namespace(&mut conn, "c:").await;
    let leased = put(&Key::new("ref/leased"), "1").with_lease(Some(lease));
    for (what, write) in [
        ("a write under the lease", leased),
        ("a write leaving the lease", put(&key, "2")),
        ("a delete", Write::new(key.clone(), Op::Delete)),
    ] {
        let err = b.write(write).await.unwrap_err();
        assert_malformed(&err, &lk, "not a set", what);
        assert_eq!(namespace(&mut conn, "c:").await, before, "{what}");
    }
    let _: () = conn.del(&lk).await.unwrap();
    let _: () = conn.sadd(&lk, &members).await.unwrap();

    // The lease id sequence.
    let good: String = conn.get("c:lseq").await.unwrap();
    for bad in garbage {
        let _: () = conn.set("c:lseq", bad).await.unwrap();
        let before = namespace(&mut conn, "c:").await;
        let err = b.grant_lease(Duration::from_secs(5)).await.unwrap_err();
        assert_malformed(&err, "c:lseq", "c:lseq", &format!("grant with {bad:?}"));
        assert_eq!(namespace(&mut conn, "c:").await, before, "lseq {bad:?}");
    }
    let _: () = conn.set("c:lseq", &good).await.unwrap();

    // A lease's TTL.
    let lkey = format!("c:l:{}", lease.0);
    for bad in garbage {
        let _: () = conn.hset(&lkey, "ttl", bad).await.unwrap();
        let before = namespace(&mut conn, "c:").await;
        let err = b.keep_alive(lease).await.unwrap_err();
        assert_malformed(&err, &lkey, "ttl", &format!("keep-alive with ttl {bad:?}"));
        assert_eq!(namespace(&mut conn, "c:").await, before, "ttl {bad:?}");
    }

    // With the data repaired, everything works again.
    let _: () = conn.hset(&lkey, "ttl", "600000").await.unwrap();
    b.keep_alive(lease).await.unwrap();
    committed(b.write(put(&key, "2")).await.unwrap());
    b.grant_lease(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_loses_data_moves_no_counter_backwards() {
    let mut server = RedisServer::start(&[]);
    let b = backend(&server.url(), "loss:").await;
    let ctx = context(b.clone(), "a");
    let key = Key::new("raw/n");
    let mut revision = 0;
    for i in 0..5 {
        revision = committed(b.write(put(&key, &i.to_string())).await.unwrap());
    }
    let mut lease = LeaseId(0);
    for _ in 0..3 {
        lease = b.grant_lease(Duration::from_secs(600)).await.unwrap();
    }
    let lock = ctx.acquire("job").await.unwrap();
    let token = lock.token();
    lock.release().await.unwrap();

    server.kill();
    server.launch();

    let after =
        committed(eventually("a write after the restart", || b.write(put(&key, "x"))).await);
    assert!(
        after > revision && after > token.0,
        "the revision went back from {revision} (and token {token}) to {after}"
    );
    let lease_after = eventually("a lease after the restart", || {
        b.grant_lease(Duration::from_secs(600))
    })
    .await;
    assert!(
        lease_after.0 > lease.0,
        "lease ids went back from {lease} to {lease_after}"
    );
    let lock = eventually("a lock after the restart", || ctx.acquire("job")).await;
    assert!(
        lock.token() > token && lock.token().0 > after,
        "the fencing token went back from {token} to {}",
        lock.token()
    );
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_recover_from_a_restart_that_loses_data() {
    let mut server = RedisServer::start(&[]);
    let a = backend(&server.url(), "loss:").await;
    let ctx = context(a.clone(), "a");
    let r = ctx.make(ManualId::<u64>::new("n"), 0).await.unwrap();
    for i in 1..=5 {
        r.set(i).await.unwrap();
    }
    let key = Key::new("raw/w");
    let before = committed(a.write(put(&key, "1")).await.unwrap());
    let mut changes = r.changes();
    let mut watch = a.watch(key.clone(), None).await.unwrap();

    server.kill();
    server.launch();

    // Another node, connected after the restart, writes both keys.
    let b = context(backend(&server.url(), "loss:").await, "b");
    let rb = b.make(ManualId::<u64>::new("n"), 100).await.unwrap();
    rb.set(101).await.unwrap();
    let bb = backend(&server.url(), "loss:").await;
    let first = committed(bb.write(put(&key, "2")).await.unwrap());
    assert!(first > before, "{first} after {before}");

    // The raw watch resyncs, then delivers live events above the new
    // revisions.
    within("the raw watch to catch up", async {
        loop {
            match watch.next().await.expect("the watch goes on") {
                Ok(WatchItem::Event(e)) if e.revision >= first => return,
                Ok(WatchItem::Event(e)) => panic!("an event from before the restart: {e:?}"),
                Ok(WatchItem::Resync(Some(record))) if record.mod_revision >= first => return,
                Ok(WatchItem::Resync(_)) => {}
                Err(e) => assert!(e.is_transient(), "{e}"),
            }
        }
    })
    .await;
    let second = committed(bb.write(put(&key, "3")).await.unwrap());
    match within("a live event", watch.next()).await.unwrap() {
        Ok(WatchItem::Event(e)) => assert_eq!(e.revision, second),
        other => panic!("expected the event at {second}, got {other:?}"),
    }

    // The change stream reaches the new value, then follows live writes.
    within("the change stream to catch up", async {
        loop {
            match changes.next().await.expect("the change stream goes on") {
                Ok(c) => match c.kind {
                    ChangeKind::Updated(101) | ChangeKind::Resync(Some(101)) => return,
                    _ => {}
                },
                Err(e) => assert!(e.is_transient(), "{e}"),
            }
        }
    })
    .await;
    rb.set(102).await.unwrap();
    within("a live change", async {
        loop {
            match changes.next().await.expect("the change stream goes on") {
                Ok(c) => match c.kind {
                    ChangeKind::Updated(102) => return,
                    ChangeKind::Updated(101) | ChangeKind::Resync(Some(101)) => {}
                    other => panic!("unexpected change {other:?}"),
                },
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert_eq!(r.get().await.unwrap(), 102);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reopened_after_data_loss_resyncs() {
    let mut server = RedisServer::start(&[]);
    let a = backend(&server.url(), "loss:").await;
    let key = Key::new("raw/gone");
    let old = committed(a.write(put(&key, "1")).await.unwrap());
    let mut open = a.watch(Key::new("raw/other"), None).await.unwrap();

    server.kill();
    server.launch();

    // The open watch hears of the reconnect once the handle's pub/sub
    // connection is back: nothing was written since.
    within("the reconnect", open.next()).await.unwrap().ok();
    // A watcher that saw revision `old` asks for what came after it: the
    // record is gone, with no event to say so.
    let mut watch = eventually("a watch after the restart", || {
        a.watch(key.clone(), Some(old))
    })
    .await;
    let other = backend(&server.url(), "loss:").await;
    committed(other.write(put(&key, "2")).await.unwrap());
    match within("the first item", watch.next()).await.unwrap() {
        Ok(WatchItem::Resync(_)) => {}
        other => panic!("the watch must resync after the data loss, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_is_lost_is_applied_once() {
    let server = RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    // No sweeps and no session: the update's write is the only command.
    let through_proxy = RedisConfig::new(format!("redis://127.0.0.1:{}/0", proxy.port))
        .prefix("once:")
        .command_timeout(Duration::from_secs(2))
        .sweep_interval(Duration::from_secs(3600))
        .connect()
        .await
        .unwrap();
    let ctx = context(through_proxy, "a");
    let r = ctx.make(ManualId::<u64>::new("n"), 0).await.unwrap();
    let check = context(backend(&server.url(), "once:").await, "check");
    let truth = check.make(ManualId::<u64>::new("n"), 0).await.unwrap();
    let mut unanswered = 0;
    for round in 1..=20u64 {
        let before = truth.get().await.unwrap();
        // The server executes the write; its reply never arrives.
        proxy.lose_reply_to(b"\r\nwrite\r\n");
        let outcome = r.update(|n| n + 1).await;
        assert_eq!(proxy.replies_lost(), round, "the fault hit the write");
        let after = truth.get().await.unwrap();
        assert!(
            after <= before + 1,
            "round {round}: one update added {} ({outcome:?})",
            after - before
        );
        match outcome {
            // Only a second attempt could have been answered.
            Ok(_) => assert_eq!(after, before + 1, "round {round}"),
            // The outcome is unknown to the caller; here the write ran.
            Err(Error::Unavailable { .. }) if after == before + 1 => unanswered += 1,
            Err(Error::Unavailable { .. }) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
        // The next update, without a fault, adds exactly one.
        eventually("an update after the fault", || r.update(|n| n + 1)).await;
        assert_eq!(truth.get().await.unwrap(), after + 1, "round {round}");
    }
    assert!(unanswered > 0, "no write was executed and left unanswered");
}

/// Lock waiters survive a restart that loses the data. A waiter queued
/// before it, whose pub/sub connection comes back only after another node
/// has taken the (now free) lock, resyncs to that node's record, waits for
/// it, and gets the lock when it is released. (The waiter once ignored the
/// resync that showed a new holder and kept waiting for the lost record,
/// while others took the lock dozens of times.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiters_are_granted_after_a_restart_that_loses_data() {
    let mut server = RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let proxied = format!("redis://127.0.0.1:{}/0", proxy.port);
    let holder = context(backend(&server.url(), "waiters:").await, "holder");
    let waiter = context(backend(&proxied, "waiters:").await, "waiter");
    // Commits before the lock, so that the revisions after a restart that
    // counted from 1 again would be below the holder's.
    let r = holder
        .make(ManualId::<u64>::new("before"), 0)
        .await
        .unwrap();
    for i in 1..=10 {
        r.set(i).await.unwrap();
    }
    let guard = holder.acquire("job").await.unwrap();
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire("job").await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());

    // The waiter's pub/sub connection will not hear from the server until
    // the third node holds the lock.
    proxy.hold_subscribers(true);
    server.kill();
    server.launch();
    let third = context(backend(&server.url(), "waiters:").await, "third");
    let taken = eventually("the lock after the restart", || third.acquire("job")).await;
    proxy.hold_subscribers(false);
    // Held for a while (time is the point here): the waiter reconnects and
    // resyncs to the third node's record meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    taken.release().await.unwrap();
    let granted = within("the waiter to be granted the lock", waiting)
        .await
        .expect("the waiter task panicked")
        .expect("the waiter acquires");
    assert!(granted.token() > guard.token());
    granted.release().await.unwrap();
    drop(guard);
}

/// A server that has just restarted answers LOADING until it has read its
/// data set back: `connect` waits that out (within its timeout) instead of
/// failing, and then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_while_the_server_loads_its_data() {
    let server = RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    proxy.answer_loading(3);
    let url = format!("redis://127.0.0.1:{}/0", proxy.port);
    let backend = RedisConfig::new(url)
        .prefix("loading:")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect waits while the server loads");
    assert_eq!(
        proxy.loading_left(),
        0,
        "the server was not asked while loading"
    );
    let ctx = context(backend, "loading");
    let r = ctx
        .make(ManualId::<u64>::new("after-loading"), 1)
        .await
        .expect("a ref after loading");
    r.set(2).await.expect("a write after loading");
    assert_eq!(r.get().await.expect("a read"), 2);
}

// ---------------------------------------------------------------------
// Batched writes: writes issued concurrently through one handle share
// script calls, each with its own condition, outcome and event.

/// A handle for the batching tests: no periodic sweeps (so that the only
/// script calls are the test's writes), and a command timeout longer than
/// the stalls below.
async fn batching_backend(server: &RedisServer, prefix: &str) -> RedisBackend {
    RedisConfig::new(server.url())
        .prefix(prefix)
        .command_timeout(Duration::from_secs(20))
        .sweep_interval(Duration::from_secs(3600))
        .connect()
        .await
        .expect("connect")
}

/// How many script calls (`EVALSHA`) the server has run since its
/// statistics were reset.
async fn script_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

/// The number of writes each call of the script's `write` operation
/// carried, oldest first, from the slow log (a server started with
/// `--slowlog-log-slower-than 0` logs every command, with its first
/// arguments: the count of writes is the sixth).
async fn write_calls(conn: &mut redis::aio::MultiplexedConnection) -> Vec<usize> {
    type Entry = (u64, u64, u64, Vec<Vec<u8>>, String, String);
    let entries: Vec<Entry> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let mut calls: Vec<(u64, usize)> = entries
        .into_iter()
        .filter(|(_, _, _, args, _, _)| {
            args.len() > 5 && args[0].eq_ignore_ascii_case(b"EVALSHA") && args[3] == b"write"
        })
        .filter_map(|(id, _, _, args, _, _)| {
            let count = std::str::from_utf8(&args[5]).ok()?.parse().ok()?;
            Some((id, count))
        })
        .collect();
    calls.sort_unstable();
    calls.into_iter().map(|(_, count)| count).collect()
}

/// Polls `fut` once, so that a write is sent or queued; it must not be
/// done yet.
async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) {
    let polled =
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx)))
            .await;
    assert!(polled.is_pending(), "a write finished at its first poll");
}

/// How many writes [`fill_calls`] issues.
const FILLERS: usize = 4;

/// Issues writes one by one, each left time to take a call of its own,
/// until every call the handle keeps in flight is taken (the first write
/// makes its own call, the next two take the two calls of its batching
/// task; the fourth queues): while the server sleeps, every later write of
/// the handle waits in its queue. Returns the writes, to be awaited.
async fn fill_calls(b: &RedisBackend) -> Vec<BoxFuture<'_, dref::Result<WriteOutcome>>> {
    let mut fillers = Vec::new();
    for i in 0..FILLERS {
        let mut write = b.write(put(&Key::new(format!("ref/filler{i}")), "f"));
        poll_once(&mut write).await;
        fillers.push(write);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fillers
}

fn put_event(item: Option<dref::Result<WatchItem>>) -> (u64, u64, Vec<(FieldName, Bytes)>) {
    match item {
        Some(Ok(WatchItem::Event(dref::engine::Event {
            revision,
            kind: dref::engine::EventKind::Put {
                version, changed, ..
            },
        }))) => (revision, version, changed),
        other => panic!("expected a put event, got {other:?}"),
    }
}

fn field(value: &str) -> Vec<(FieldName, Bytes)> {
    vec![(
        FieldName::from("v"),
        Bytes::copy_from_slice(value.as_bytes()),
    )]
}

/// Writes to one key issued concurrently through one handle, while the
/// server is busy (so that they queue behind the call in flight), take far
/// fewer script calls than writes; each gets its own outcome and event, in
/// the order the writes were issued, and each versioned write is checked
/// against the record the writes before it in the same call made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_key_share_script_calls() {
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let b = batching_backend(&server, "b1:").await;
    let mut conn = raw(&server).await;
    let key = Key::new("ref/one");
    let created = committed(b.write(put(&key, "start")).await.unwrap());
    let mut watch = b.watch(key.clone(), Some(created)).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    let stalled = stall(&server, 1.0).await;
    let values: Vec<String> = (0..64).map(|i| format!("value {i}")).collect();
    let writes = values.iter().map(|v| b.write(put(&key, v)));
    let outcomes = futures_util::future::join_all(writes).await;
    stalled.await.unwrap();
    // Unbatched, each write is a call. Batched: the calls in flight when
    // the server stalled (at most two made by writes themselves and two by
    // the handle's batching task), then one with the rest.
    let calls = script_calls(&mut conn).await;
    assert!(calls <= 5, "64 concurrent writes took {calls} script calls");
    let mut last = created;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let WriteOutcome::Committed { revision, version } = outcome.unwrap() else {
            panic!("write {i} was rejected")
        };
        assert!(
            revision > last,
            "write {i} committed at {revision}, after {last}"
        );
        assert_eq!(version, i as u64 + 2, "write {i}");
        last = revision;
        let event = put_event(within("the write's event", watch.next()).await);
        assert_eq!(event, (revision, version, field(&values[i])), "write {i}");
    }

    // Versioned writes, all on the version the record has now: the first
    // commits, and each of the others is rejected with the record the
    // first made.
    let stalled = stall(&server, 1.0).await;
    let writes =
        (0..16).map(|i| b.write(put(&key, &format!("cas {i}")).when(Condition::Version(65))));
    let mut outcomes = futures_util::future::join_all(writes).await.into_iter();
    stalled.await.unwrap();
    let first = outcomes.next().unwrap().unwrap();
    let WriteOutcome::Committed { revision, version } = first else {
        panic!("the first versioned write was rejected: {first:?}")
    };
    assert_eq!(version, 66);
    for (i, outcome) in outcomes.enumerate() {
        match outcome.unwrap() {
            WriteOutcome::Rejected {
                current: Some(record),
            } => {
                assert_eq!(
                    (record.version, record.mod_revision),
                    (66, revision),
                    "write {}",
                    i + 1
                );
                assert_eq!(&record.field("v").unwrap().value[..], b"cas 0");
            }
            other => panic!("versioned write {} on a changed record: {other:?}", i + 1),
        }
    }
    let event = put_event(within("the versioned write's event", watch.next()).await);
    assert_eq!(event, (revision, 66, field("cas 0")));
}

/// With batching off, concurrent writes each make a call of their own (on
/// the pipelined command connection), as before writes shared calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_batching_every_write_makes_its_own_call() {
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let b = RedisConfig::new(server.url())
        .prefix("b6:")
        .command_timeout(Duration::from_secs(20))
        .sweep_interval(Duration::from_secs(3600))
        .batch_writes(false)
        .connect()
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stalled = stall(&server, 1.0).await;
    let writes = (0..16).map(|i| b.write(put(&Key::new(format!("ref/own{i}")), "1")));
    for outcome in futures_util::future::join_all(writes).await {
        committed(outcome.unwrap());
    }
    stalled.await.unwrap();
    assert_eq!(script_calls(&mut conn).await, 16);
}

/// Writes to many keys issued concurrently through one handle share calls
/// too, and a write that fails does so alone: in a call with others, a
/// write that meets malformed data gets `Protocol` naming the key and
/// field, one under a lease that is gone `LeaseExpired`, one above its size
/// limit `ValueTooLarge`; none changes anything (nor takes a revision),
/// while the writes before and after them in the same call commit, with
/// consecutive revisions and their events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_malformed_data_fails_alone_in_its_call() {
    let server = RedisServer::start(&[
        "--enable-debug-command",
        "yes",
        "--slowlog-log-slower-than",
        "0",
        "--slowlog-max-len",
        "10000",
    ]);
    let b = batching_backend(&server, "b2:").await;
    let mut conn = raw(&server).await;
    let keys: Vec<Key> = (0..33).map(|i| Key::new(format!("ref/k{i}"))).collect();
    let (gone, bad, big) = (8, 16, 24);
    let lease = b.grant_lease(Duration::from_secs(600)).await.unwrap();
    b.revoke_lease(lease).await.unwrap();
    let mut watches = Vec::new();
    for key in &keys {
        let revision = committed(b.write(put(key, "0")).await.unwrap());
        watches.push(b.watch(key.clone(), Some(revision)).await.unwrap());
    }
    let bad_key = format!("b2:r:{}", keys[bad].as_str());
    let _: () = conn.hset(&bad_key, "m:ver", "garbage").await.unwrap();
    let bad_before: std::collections::HashMap<String, Vec<u8>> =
        conn.hgetall(&bad_key).await.unwrap();
    let revision_before: u64 = conn.get("b2:rev").await.unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();

    let stalled = stall(&server, 1.0).await;
    // Writes that take every call the handle makes while the server sleeps
    // (one the write makes itself, two of its batching task), issued one by
    // one so that each takes a call: the writes below queue behind them.
    let fillers = fill_calls(&b).await;
    let writes = keys.iter().enumerate().map(|(i, key)| {
        let write = put(key, "1").when(Condition::Version(1));
        b.write(match i {
            _ if i == gone => write.with_lease(Some(lease)),
            _ if i == big => write.with_max_record_bytes(0),
            _ => write,
        })
    });
    let (outcomes, fillers) = futures_util::future::join(
        futures_util::future::join_all(writes),
        futures_util::future::join_all(fillers),
    )
    .await;
    stalled.await.unwrap();
    for outcome in fillers {
        committed(outcome.unwrap());
    }

    // Each call takes the writes at the head of the queue, in the order
    // they were issued (the fillers first): the calls that carried the
    // failing ones follow from the counts.
    let calls = write_calls(&mut conn).await;
    assert_eq!(
        calls.iter().sum::<usize>(),
        FILLERS + keys.len(),
        "{calls:?}"
    );
    assert!(
        calls.len() <= 5,
        "33 concurrent writes took calls {calls:?}"
    );
    for failing in [gone, bad, big] {
        let mut end = 0;
        let carrier = calls.iter().find(|n| {
            end += **n;
            end > FILLERS + failing
        });
        assert!(
            carrier.is_some_and(|n| *n > 1),
            "write {failing} went alone: {calls:?}"
        );
    }
    let mut revision = revision_before + FILLERS as u64;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match i {
            _ if i == bad => {
                let err = outcome.unwrap_err();
                assert_malformed(&err, &bad_key, "m:ver", "the write on malformed data");
                continue;
            }
            _ if i == gone => {
                let err = outcome.unwrap_err();
                assert!(
                    matches!(err, Error::LeaseExpired { lease: l } if l == lease),
                    "{err}"
                );
                continue;
            }
            _ if i == big => {
                let err = outcome.unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::ValueTooLarge {
                            size: 1,
                            limit: 0,
                            ..
                        }
                    ),
                    "{err}"
                );
                continue;
            }
            _ => {}
        }
        revision += 1;
        let expected = WriteOutcome::Committed {
            revision,
            version: 2,
        };
        assert_eq!(outcome.unwrap(), expected, "write {i}");
        let event = put_event(within("the write's event", watches[i].next()).await);
        assert_eq!(event, (revision, 2, field("1")), "write {i}");
    }
    let bad_after: std::collections::HashMap<String, Vec<u8>> =
        conn.hgetall(&bad_key).await.unwrap();
    assert_eq!(bad_after, bad_before, "the malformed record changed");
    let revision_after: u64 = conn.get("b2:rev").await.unwrap();
    assert_eq!(revision_after, revision);
}

/// A write whose future is dropped while it waits for its call is not
/// sent, and the writes queued around it get their own outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_is_not_sent_and_disturbs_no_other() {
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let b = batching_backend(&server, "b3:").await;
    let mut conn = raw(&server).await;
    let stalled = stall(&server, 1.5).await;
    // Writes that take every call the handle makes while the server
    // sleeps: the writes below wait in its queue.
    let fillers = fill_calls(&b).await;
    let mut kept = Vec::new();
    for i in 0..16 {
        let dropped = Key::new(format!("ref/dropped{i}"));
        let mut write = b.write(put(&dropped, "d"));
        poll_once(&mut write).await;
        drop(write);
        let key = Key::new(format!("ref/kept{i}"));
        let mut write = b.write(put(&key, &i.to_string()));
        poll_once(&mut write).await;
        kept.push((key, write));
    }
    let (keys, writes): (Vec<Key>, Vec<_>) = kept.into_iter().unzip();
    let (outcomes, fillers) = futures_util::future::join(
        futures_util::future::join_all(writes),
        futures_util::future::join_all(fillers),
    )
    .await;
    for outcome in fillers {
        committed(outcome.unwrap());
    }
    stalled.await.unwrap();
    for (i, (key, outcome)) in keys.iter().zip(outcomes).enumerate() {
        let revision = committed(outcome.unwrap());
        let record = b
            .read(key.clone())
            .await
            .unwrap()
            .expect("a kept write's record");
        assert_eq!(record.mod_revision, revision, "{key}");
        assert_eq!(
            &record.field("v").unwrap().value[..],
            i.to_string().as_bytes()
        );
    }
    let sent: Vec<String> = conn.keys("b3:r:ref/dropped*").await.unwrap();
    assert!(sent.is_empty(), "dropped writes were sent: {sent:?}");
}

/// Writes whose futures are polled once and then left alone hold up no
/// other write of the handle: neither the first, which makes its own call,
/// nor those queued behind it, whose calls the handle's batching task
/// makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_left_unpolled_hold_up_no_other() {
    let server = RedisServer::start(&[]);
    let b = batching_backend(&server, "b4:").await;
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut write = b.write(put(&Key::new(format!("ref/idle{i}")), "1"));
        // (On a loaded machine the answer may come back within the first
        // poll: then that write holds nothing.)
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
        })
        .await;
        match polled {
            std::task::Poll::Ready(outcome) => {
                committed(outcome.unwrap());
            }
            std::task::Poll::Pending => idle.push(write),
        }
    }
    let writes = (0..64).map(|i| b.write(put(&Key::new(format!("ref/busy{i}")), "1")));
    for outcome in within("the other writes", futures_util::future::join_all(writes)).await {
        committed(outcome.unwrap());
    }
    for outcome in futures_util::future::join_all(idle).await {
        committed(outcome.unwrap());
    }
}

/// A write queued behind a call to a stalled server gets `Unavailable`
/// within the command timeout of its start, as a lone write does: the
/// time it waits for a call counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_behind_a_stalled_call_times_out_on_time() {
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let timeout = Duration::from_secs(1);
    let b = RedisConfig::new(server.url())
        .command_timeout(timeout)
        .connect()
        .await
        .unwrap();
    let stalled = stall(&server, 5.0).await;
    let started = std::time::Instant::now();
    // More than fit in the calls in flight: the last ones queue.
    let writes = (0..16).map(|i| {
        let b = b.clone();
        async move {
            let outcome = b.write(put(&Key::new(format!("ref/q{i}")), "1")).await;
            (outcome, started.elapsed())
        }
    });
    for (outcome, elapsed) in futures_util::future::join_all(writes).await {
        let err = outcome.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        // A queued write that waited for the calls before it to time out
        // and then for its own would take two timeouts.
        assert!(elapsed < timeout * 8 / 5, "answered after {elapsed:?}");
    }
    stalled.await.unwrap();
}

/// A server restart while calls carrying many writes are in flight: every
/// write of a lost call gets `Unavailable` and no other error, none gets a
/// wrong outcome (each counter ends between the updates acknowledged and
/// those attempted), and the writes go on after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_call_fails_its_writes_as_unavailable() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let b = RedisConfig::new(server.url())
        .prefix("b5:")
        .command_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let ctx = context(b, "a");
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let r = ctx
            .make(ManualId::<u64>::new(format!("n{t}")), 0)
            .await
            .unwrap();
        let (stop, restarted) = (stop.clone(), restarted.clone());
        tasks.push(tokio::spawn(async move {
            // Updates acknowledged (and since the restart), updates whose
            // outcome is unknown, and the last value an acknowledged update
            // made.
            let (mut acknowledged, mut since, mut unknown, mut last) = (0u64, 0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match r.update_and_get(|n| n + 1).await {
                    Ok(n) => {
                        acknowledged += 1;
                        since += u64::from(restarted.load(Ordering::Relaxed));
                        // Only this task writes the key.
                        assert!(
                            n > last && n <= acknowledged + unknown,
                            "task {t}: {n} after {last}, {acknowledged} acknowledged, {unknown} unknown"
                        );
                        last = n;
                    }
                    Err(Error::Unavailable { .. }) => {
                        unknown += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("task {t}: {e}"),
                }
            }
            (r, acknowledged, since, unknown, last)
        }));
    }
    // Every task writes in a loop: the handle has calls in flight nearly
    // all the time, each carrying several writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    server.launch();
    restarted.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut failed, mut after) = (0, 0);
    for task in tasks {
        let (r, acknowledged, since, unknown, last) = within("a writer", task).await.unwrap();
        let stored = eventually("the stored count", || r.get()).await;
        assert!(
            last <= stored && acknowledged <= stored && stored <= acknowledged + unknown,
            "{acknowledged} acknowledged and {unknown} unknown updates left {stored} (last {last})"
        );
        failed += unknown;
        after += since;
    }
    assert!(failed > 0, "the restart failed no write");
    assert!(after > 0, "no write committed after the restart");
}
