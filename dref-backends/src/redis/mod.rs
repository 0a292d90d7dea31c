//! The Redis backend (feature `redis`): the engine contract on an existing
//! Redis (6.2 or later, single instance or a primary with replicas; not
//! Redis Cluster).
//!
//! ```no_run
//! # async fn demo() -> dref::Result<()> {
//! use dref_backends::redis::RedisConfig;
//!
//! let backend = RedisConfig::from_env()?.connect().await?; // DREF_REDIS_URL
//! let ctx = dref::Context::builder().backend(backend).connect().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//! Every operation is one Lua script run with `EVALSHA` (re-sent when the
//! server answers `NOSCRIPT`, e.g. after a restart): the condition check,
//! the field update, the version and revision increments, lease bookkeeping
//! and the `PUBLISH` of the change event are one atomic step. An
//! uncontended update is one round trip.
//!
//! Writes issued concurrently through one handle share script calls: a
//! handle keeps at most two calls in flight, and writes issued while both
//! are taken wait for the next, which carries up to 64 of them (at most
//! 1 MiB of arguments). The script runs them in order, each with its own
//! condition check, revision, event and reply, as if each were a call of
//! its own, so a busy handle pays the call's cost (the `EVALSHA`, the
//! script's set-up, the socket reads and writes) once per batch rather than
//! once per write. A write that finds a call free (and no write queued)
//! makes its call itself, at once: nothing waits for others to gather. A
//! queued write whose future is dropped before its call is made is not
//! sent. [`RedisConfig::batch_writes`] turns batching off.
//!
//! A listing ([`Backend::list`]) is one script call, so one consistent cut
//! of the store: it finds the records with `KEYS` on the prefix's pattern
//! (glob characters in the prefix are escaped), which walks every key of
//! the database and blocks the server meanwhile; list from tools and
//! occasional scans, not on hot paths.
//!
//! Watches share one pub/sub connection per backend handle, separate from
//! the command connection, subscribed once to the pattern of the
//! namespace's event channels. A watch that asks for the commits after a
//! revision costs no round trip when the handle has seen nothing newer for
//! the key (otherwise one read, and the watcher starts with a `Resync`); a
//! watch of what commits from now on reads the store revision once, and
//! yields only events above it (an earlier commit's message may still be on
//! its way). After the pub/sub connection is re-established every watcher
//! gets a `Resync` with the current record. Every handle receives the
//! events of its whole namespace: give applications that share a Redis
//! their own prefixes.
//!
//! Leases live in the database, with deadlines from the server's clock.
//! Expired leases are swept by every lease operation and by a background
//! sweep of each handle (every 100 ms by default, see
//! [`RedisConfig::sweep_interval`]), so expiry needs no
//! `notify-keyspace-events` setting: `Expired` events reach watchers at most
//! one sweep interval plus one round trip after the deadline.
//!
//! The store revision and the lease id sequence live in the database too.
//! Run Redis with persistence (AOF or RDB) if refs must survive a server
//! restart. A Redis that loses its data (a restart without persistence, a
//! flush) loses the records, but does not send revisions or lease ids
//! backwards: a missing counter starts again from the server's clock in
//! microseconds since the epoch, above any value it can have had (it never
//! grows by more than one per microsecond), so fencing tokens keep
//! increasing and a stale client's lease id cannot name a new lease. This
//! assumes the server's clock does not step back across the loss, and it
//! does not cover a loss that keeps an older counter (a failover to a
//! replica that lagged, a restore from an older backup): there the counters
//! go on from the older value. A handle that finds the store revision
//! below one it has seen (either kind of loss) resyncs every watcher, old
//! and new.
//!
//! # Errors
//! An unreachable server, a timeout or a server that cannot serve
//! (loading, out of memory, read-only replica) is
//! [`Error::Unavailable`] (transient); a failed call fails every write it
//! carried so. A write's wait for its answer, queued and in flight, is
//! bounded by [`RedisConfig::command_timeout`]. A write whose connection
//! fails after it was sent may or may not have committed: it is reported
//! as `Unavailable` and never sent again (no command is re-sent
//! automatically: an optimistic update that resent its conditional write
//! would be rejected by its own commit and apply its closure twice).
//! Refused credentials and a missing ACL permission are
//! [`Error::Refused`]; an invalid URL is [`Error::Config`]. Data under the
//! namespace that dref did not write in its layout (a counter or record
//! field that is not a canonical number, another Redis type under a dref
//! key) is [`Error::Protocol`], naming the key and field: the script
//! checks what a write relies on before it changes anything, so such a
//! write changes nothing (a write checks the record's metadata and the
//! fields it names; a read checks the whole record), and the other writes
//! of its call go on. Errors are sorted by the Redis error's kind and
//! code, never by its text; `dref::Error` has no slot for a cause, so the
//! Redis error's text is kept in the message.
//!
//! # Storage layout
//! With the default prefix `dref:` (see [`RedisConfig::prefix`]), for a ref
//! named `flags` (store key `ref/flags`):
//!
//! | Redis key | type | contents |
//! |---|---|---|
//! | `dref:rev` | string | store revision, incremented by every commit; when missing, the next commit seeds it from the server clock (microseconds since the epoch) |
//! | `dref:r:ref/flags` | hash | the record: `m:ver` (version), `m:crev` (create revision), `m:mrev` (mod revision), `m:lease` (lease id, if any), `m:n` (number of fields), and per field `f:<name>` (encoded bytes) and `r:<name>` (the field's mod revision) |
//! | `dref:c:ref/flags` | channel | change events of the key |
//! | `dref:lseq` | string | lease id sequence; seeded from the server clock like `dref:rev` |
//! | `dref:l:<id>` | hash | lease: `ttl` in milliseconds |
//! | `dref:lk:<id>` | set | keys attached to the lease |
//! | `dref:leases` | sorted set | lease ids scored by deadline (ms since the epoch, server clock) |
//!
//! Every number stored is a canonical decimal (ASCII digits, no sign, no
//! leading zero) below 2^53 (the script computes with Lua's doubles). A
//! ref's value fields are named after the value: `value` for plain
//! types, the (renamed) struct field names for `#[distributed]` structs,
//! encoded with the context's codec (choose MessagePack or JSON to share
//! records with other languages); the field `$type` holds the type
//! fingerprint. Events are netstrings (`<len>:<bytes>`): `put`, revision,
//! version, create revision, lease (empty if none), changed-field count,
//! then name and value per changed field, removed-field count and names;
//! or `deleted`/`expired` followed by the revision. Other clients that write
//! records must bump `dref:rev` and publish these events in the same
//! transaction, as the script in `engine.lua` does.
//!
//! The script answers malformed data with an error reply whose code is
//! `DREFDATA` (then the Redis key and what is wrong with it; for a write,
//! as that write's item of the call's reply), and a request it does not
//! understand with `DREFARG` (a client and script of different versions):
//! both are `Protocol` errors.

mod batch;
mod config;
mod watch;
mod wire;

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dref::engine::{
    Backend, Condition, Key, LeaseId, Listing, Op, PrefixItem, PrefixStream, Record, WatchItem,
    WatchStream, Write, WriteOutcome,
};
use dref::{Error, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use batch::{Args, Batcher, Failure};
pub use config::{RedisConfig, URL_ENV};
use watch::{Notice, PrefixNotice, PrefixSubscription, Start, Subscription, Watches};
use wire::protocol;

const SCRIPT: &str = include_str!("engine.lua");

/// Error code of the script's answer to malformed data in the store.
const MALFORMED_DATA: &str = "DREFDATA";
/// Error code of the script's answer to a request it does not understand.
const BAD_REQUEST: &str = "DREFARG";

/// A handle on a Redis store. Cheap to clone; clones share the command
/// connection, the pub/sub connection and the lease sweeper.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    commands: ConnectionManager,
    script: redis::Script,
    prefix: String,
    command_timeout: Duration,
    watches: Arc<Watches>,
    /// Sends the handle's writes, several to a call when they are issued
    /// concurrently.
    batcher: Batcher,
    sweeper: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Sorts a Redis error by its kind and code (never by its text); `doing`
/// says what failed, for the message.
fn redis_error(e: &redis::RedisError, doing: &str) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let detail = || e.detail().unwrap_or_default().to_owned();
    match (e.kind(), e.code()) {
        (_, Some(MALFORMED_DATA)) => protocol(format!(
            "{doing}: malformed data in the store: {}",
            detail()
        )),
        (_, Some(BAD_REQUEST)) => protocol(format!(
            "{doing}: the engine script refused the request: {}",
            detail()
        )),
        (_, Some("WRONGTYPE")) => protocol(format!(
            "{doing}: a key of the namespace holds another Redis type than dref keeps there: {e}"
        )),
        (ErrorKind::AuthenticationFailed, _) | (_, Some("NOAUTH" | "WRONGPASS")) => refused(
            format!("Redis refused the credentials (check the user and password in the URL): {e}"),
        ),
        (ErrorKind::Server(ServerErrorKind::NoPerm), _) => refused(format!(
            "the Redis user lacks a permission dref needs ({doing}): {e}"
        )),
        (ErrorKind::InvalidClientConfig, _) => Error::Config(format!("invalid Redis URL: {e}")),
        (ErrorKind::Parse | ErrorKind::UnexpectedReturnType, _) => {
            protocol(format!("{doing}: unexpected answer from the server: {e}"))
        }
        _ => Error::Unavailable {
            backend: "redis",
            message: format!("{doing}: {e}"),
        },
    }
}

/// The server's refusal of this client (see [`Error::Refused`]).
fn refused(message: String) -> Error {
    Error::Refused {
        backend: "redis",
        message,
    }
}

/// The Redis key `<prefix><kind><name>`, formatted only when an error
/// message names it.
struct RedisKey<'a>(&'a str, &'a str, &'a str);

impl std::fmt::Display for RedisKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.0, self.1, self.2)
    }
}

/// The answer to a command that got no answer in time. (The command may
/// have run: it is not sent again.)
fn no_answer(doing: &str, after: Duration) -> Error {
    Error::Unavailable {
        backend: "redis",
        message: format!("{doing}: no answer within {after:?}"),
    }
}

/// The error of a write that got no reply of its own.
fn failed(failure: Failure, doing: &str) -> Error {
    match failure {
        Failure::Redis(e) => redis_error(&e, doing),
        Failure::Timeout(after) => no_answer(doing, after),
        Failure::Malformed(message) => protocol(format!("{doing}: {message}")),
        Failure::Stopped => Error::Unavailable {
            backend: "redis",
            message: format!(
                "{doing}: the handle's write task has stopped (its runtime is shutting down)"
            ),
        },
    }
}

/// The engine script's arguments for `write` (see the `write` operation in
/// `engine.lua`).
fn write_args(write: &Write) -> Result<Args> {
    let fields: &[(dref::engine::FieldName, Bytes)] = match &write.op {
        Op::Put(fields) | Op::Patch(fields) => fields,
        Op::Delete => &[],
        other => return Err(Error::Config(format!("unsupported operation {other:?}"))),
    };
    let bytes = write.key.as_str().len()
        + fields
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
        + 64;
    let mut args = Args::with_capacity(8 + 2 * fields.len(), bytes);
    args.push(write.key.as_str().as_bytes());
    let (cond, carg, cfield): (&[u8], Option<u64>, &[u8]) = match &write.condition {
        Condition::Any => (b"any", None, b""),
        Condition::Absent => (b"absent", None, b""),
        Condition::Exists => (b"exists", None, b""),
        Condition::Version(v) => (b"ver", Some(*v), b""),
        Condition::ModRevision(r) => (b"mrev", Some(*r), b""),
        Condition::FieldModRevision { field, revision } => {
            (b"frev", Some(*revision), field.as_bytes())
        }
        other => return Err(Error::Config(format!("unsupported condition {other:?}"))),
    };
    args.push(cond);
    match carg {
        Some(n) => args.push_number(n),
        None => args.push(b""),
    }
    args.push(cfield);
    args.push(match &write.op {
        Op::Put(_) => b"put",
        Op::Patch(_) => b"patch",
        _ => b"del",
    });
    match write.lease {
        Some(lease) => args.push_number(lease.0),
        None => args.push(b""),
    }
    args.push_number(fields.len() as u64);
    for (name, value) in fields {
        args.push(name.as_bytes());
        args.push(value);
    }
    match write.max_record_bytes {
        Some(limit) => args.push_number(limit as u64),
        None => args.push(b""),
    }
    Ok(args)
}

impl RedisBackend {
    /// Connects with `config` (see [`RedisConfig`]).
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        /// Pause between attempts of a connect that the server is not
        /// ready for.
        const CONNECT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
        let client = client(&config)?;
        // The retries are of connection attempts only: the manager never
        // sends a command twice (see "Errors" in the module docs).
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(2);
        let doing = format!("connecting to {}", redact(&config.url));
        // A server that is not up yet (refusing connections, or loading
        // its data after a restart) is waited for within the connect
        // timeout, so that a service started beside its Redis does not
        // fail for being early.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let retry =
            |e: &Error| e.is_transient() && tokio::time::Instant::now() + CONNECT_RETRY < deadline;
        let commands = loop {
            let connecting =
                ConnectionManager::new_with_config(client.clone(), manager_config.clone());
            let e = match tokio::time::timeout_at(deadline, connecting).await {
                Ok(Ok(commands)) => break commands,
                Ok(Err(e)) => redis_error(&e, &doing),
                Err(_) => Error::Unavailable {
                    backend: "redis",
                    message: format!("{doing} timed out after {:?}", config.connect_timeout),
                },
            };
            if !retry(&e) {
                return Err(e);
            }
            tracing::debug!(error = %e, "the Redis server is not up yet; retrying");
            tokio::time::sleep(CONNECT_RETRY).await;
        };
        let watches = Watches::start(
            client,
            commands.clone(),
            config.prefix.clone(),
            config.connect_timeout,
        );
        let script = redis::Script::new(SCRIPT);
        let batcher = Batcher::start(
            commands.clone(),
            script.clone(),
            config.prefix.clone(),
            config.command_timeout,
            config.batch_writes,
        );
        let inner = Arc::new_cyclic(|weak| Inner {
            commands,
            script,
            prefix: config.prefix,
            command_timeout: config.command_timeout,
            watches,
            batcher,
            sweeper: tokio::spawn(sweep(weak.clone(), config.sweep_interval)).abort_handle(),
        });
        let backend = RedisBackend { inner };
        // Proves the server answers, accepts us and runs scripts, and that
        // watches can start without a round trip. A server that has just
        // restarted answers LOADING until it has read its data back.
        loop {
            match backend.run("sweep", &[]).await {
                Ok(_) => break,
                Err(e) if retry(&e) => {
                    tracing::debug!(error = %e, "the Redis server is not ready yet; retrying");
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
        backend
            .inner
            .watches
            .wait_live(config.connect_timeout)
            .await?;
        Ok(backend)
    }

    /// The key prefix (namespace) of this handle.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// What an operator asks of the store first: the server's version, this
    /// handle's namespace and the namespace's revision now.
    pub async fn status(&self) -> Result<RedisStatus> {
        let revision = self.revision().await?;
        let mut connection = self.inner.commands.clone();
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let call = info.query_async::<String>(&mut connection);
        let doing = "asking the server for its version (INFO server)";
        let info = match tokio::time::timeout(self.inner.command_timeout, call).await {
            Ok(result) => result.map_err(|e| redis_error(&e, doing))?,
            Err(_) => return Err(no_answer(doing, self.inner.command_timeout)),
        };
        let server_version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| protocol("INFO server did not name the server's version"))?;
        Ok(RedisStatus {
            server_version,
            namespace: self.inner.prefix.clone(),
            revision,
        })
    }

    /// Runs the engine script's operation `op` with `args` after the
    /// prefix. Sent once: a failure after sending is reported, never
    /// retried.
    async fn run(&self, op: &str, args: &[&[u8]]) -> Result<Value> {
        let mut invocation = self.inner.script.prepare_invoke();
        invocation.arg(op).arg(self.inner.prefix.as_str());
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.inner.commands.clone();
        let call = invocation.invoke_async::<Value>(&mut connection);
        let doing = || {
            let subject = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
            match op {
                "read" => format!("reading `{subject}`"),
                "list" => format!("listing the keys under `{subject}`"),
                "grant" => "granting a lease".to_owned(),
                "keepalive" => format!("keeping lease #{subject} alive"),
                "revoke" => format!("revoking lease #{subject}"),
                "sweep" => "sweeping expired leases".to_owned(),
                other => other.to_owned(),
            }
        };
        match tokio::time::timeout(self.inner.command_timeout, call).await {
            Ok(result) => result.map_err(|e| redis_error(&e, &doing())),
            Err(_) => Err(no_answer(&doing(), self.inner.command_timeout)),
        }
    }

    /// The store revision now (one `GET`).
    async fn revision(&self) -> Result<u64> {
        let key = RedisKey(&self.inner.prefix, "rev", "");
        let mut connection = self.inner.commands.clone();
        let mut get = redis::cmd("GET");
        get.arg(key.to_string());
        let call = get.query_async::<Option<Vec<u8>>>(&mut connection);
        let doing = || format!("reading `{key}`");
        let stored = match tokio::time::timeout(self.inner.command_timeout, call).await {
            Ok(result) => result.map_err(|e| redis_error(&e, &doing()))?,
            Err(_) => return Err(no_answer(&doing(), self.inner.command_timeout)),
        };
        let revision = wire::revision(stored.as_deref(), &key)?;
        self.inner.watches.observe(revision);
        Ok(revision)
    }

    /// The record under `key` and the store revision it is current at.
    async fn read_at(&self, key: &Key) -> Result<(u64, Option<Record>)> {
        let reply = self.run("read", &[key.as_str().as_bytes()]).await?;
        let items = wire::array(&reply, "read reply")?;
        match items {
            [revision, record] => {
                let revision = self.revision_in(revision)?;
                let record =
                    wire::record(record, &RedisKey(&self.inner.prefix, "r:", key.as_str()))?;
                self.inner.watches.observe(revision);
                Ok((revision, record))
            }
            _ => Err(protocol("read reply must have two items")),
        }
    }

    /// The store revision in a script's reply (the value of `rev`, or 0
    /// for a store that has no revision yet).
    fn revision_in(&self, value: &Value) -> Result<u64> {
        match value {
            Value::BulkString(b) => {
                wire::revision(Some(b), &RedisKey(&self.inner.prefix, "rev", ""))
            }
            other => wire::int(other, "revision"),
        }
    }

    async fn list_now(&self, prefix: String) -> Result<Listing> {
        let reply = self.run("list", &[prefix.as_bytes()]).await?;
        let [revision, listed] = wire::array(&reply, "list reply")? else {
            return Err(protocol("list reply must have two items"));
        };
        let revision = self.revision_in(revision)?;
        let listed = wire::array(listed, "listed records")?;
        if listed.len() % 2 != 0 {
            return Err(protocol("the listed records have an odd number of items"));
        }
        let mut records = Vec::with_capacity(listed.len() / 2);
        for pair in listed.chunks_exact(2) {
            let key = wire::text(&pair[0], "listed key")?;
            if !key.starts_with(&prefix) {
                return Err(protocol(format!(
                    "listing `{prefix}` returned the key `{key}`, which is not under it"
                )));
            }
            let redis_key = RedisKey(&self.inner.prefix, "r:", &key);
            if let Some(record) = wire::record(&pair[1], &redis_key)? {
                records.push((Key::new(key), record));
            }
        }
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.inner.watches.observe(revision);
        Ok(Listing { revision, records })
    }

    async fn write_now(&self, write: Write) -> Result<WriteOutcome> {
        let args = write_args(&write)?;
        let doing = || format!("writing `{}`", write.key.as_str());
        let reply = match self.inner.batcher.write(args).await {
            Ok(reply) => reply,
            Err(failure) => return Err(failed(failure, &doing())),
        };
        let items = match &reply {
            Value::ServerError(e) => return Err(redis_error(&e.clone().into(), &doing())),
            reply => wire::array(reply, "write reply")?,
        };
        match items {
            [status, revision, version] if wire::int(status, "status")? == 1 => {
                let revision = wire::int(revision, "revision")?;
                self.inner.watches.observe(revision);
                Ok(WriteOutcome::Committed {
                    revision,
                    version: wire::int(version, "version")?,
                })
            }
            [status, record] if wire::int(status, "status")? == 0 => {
                let record_key = RedisKey(&self.inner.prefix, "r:", write.key.as_str());
                Ok(WriteOutcome::Rejected {
                    current: wire::record(record, &record_key)?,
                })
            }
            [status] if wire::int(status, "status")? == 2 => Err(Error::LeaseExpired {
                lease: write.lease.unwrap_or(LeaseId(0)),
            }),
            [status, size] if wire::int(status, "status")? == 3 => Err(Error::ValueTooLarge {
                key: write.key.clone(),
                size: usize::try_from(wire::int(size, "record size")?).unwrap_or(usize::MAX),
                limit: write.max_record_bytes.unwrap_or(0),
            }),
            _ => Err(protocol(format!("unexpected write reply {reply:?}"))),
        }
    }

    async fn watch_now(&self, key: Key, since: Option<u64>) -> Result<WatchStream> {
        let (subscription, start) = self.inner.watches.subscribe(&key, since);
        // Registered first, read second: every commit after the read is
        // delivered, every commit before it is in the snapshot (or, for a
        // watch of what commits from now on, left out: an earlier commit's
        // message may still be on its way to the pub/sub connection).
        let (initial, floor) = match (start, since) {
            (Start::Resync, Some(since)) => {
                let (revision, record) = self.read_at(&key).await?;
                if record.as_ref().is_none_or(|r| r.mod_revision > since) {
                    (Some(WatchItem::Resync(record)), revision)
                } else {
                    (None, since)
                }
            }
            (Start::Live, Some(since)) => (None, since),
            (_, None) => (None, self.revision().await?),
        };
        let state = RedisWatch {
            subscription,
            progress: Progress::from(floor),
            initial,
            backend: Arc::downgrade(&self.inner),
            key,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            RedisWatch::next,
        )))
    }

    async fn watch_prefix_now(&self, prefix: String, since: Option<u64>) -> Result<PrefixStream> {
        let (subscription, start) = self.inner.watches.subscribe_prefix(&prefix, since);
        // Registered first, listed second, as for one key. Deletions leave
        // nothing in a listing to compare `since` with: a watch that may
        // have missed something starts with the listing.
        let (initial, floor) = match (start, since) {
            (Start::Resync, Some(_)) => {
                let listing = self.list_now(prefix.clone()).await?;
                let revision = listing.revision;
                (Some(PrefixItem::Resync(listing)), revision)
            }
            (Start::Live, Some(since)) => (None, since),
            (_, None) => (None, self.revision().await?),
        };
        let state = RedisPrefixWatch {
            subscription,
            progress: Progress::from(floor),
            initial,
            backend: Arc::downgrade(&self.inner),
            prefix,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            RedisPrefixWatch::next,
        )))
    }
}

/// A Redis store's state, from [`RedisBackend::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStatus {
    /// The server's version (`redis_version` of `INFO server`).
    pub server_version: String,
    /// The handle's namespace (its key prefix).
    pub namespace: String,
    /// The namespace's store revision: the revision of its last commit.
    pub revision: u64,
}

/// The redis client for `config`: plain, or TLS with a custom CA.
fn client(config: &RedisConfig) -> Result<redis::Client> {
    let invalid = |e: redis::RedisError| {
        Error::Config(format!("invalid Redis URL `{}`: {e}", redact(&config.url)))
    };
    let tls = config.url.starts_with("rediss://");
    #[cfg(feature = "redis-tls")]
    if tls {
        // rustls needs a process-wide crypto provider; another library
        // may have installed one already, which is fine.
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a rustls crypto provider is already installed; Redis TLS uses it");
        }
        if let Some(ca) = &config.tls_ca {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            };
            return redis::Client::build_with_tls(config.url.as_str(), certificates)
                .map_err(invalid);
        }
    }
    #[cfg(not(feature = "redis-tls"))]
    if tls {
        return Err(Error::Config(
            "a rediss:// URL needs dref-backends' `redis-tls` feature".into(),
        ));
    }
    redis::Client::open(config.url.as_str()).map_err(invalid)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Sweeps expired leases periodically so that their records are deleted
/// (and `Expired` events sent) even when nothing else touches the store.
async fn sweep(inner: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let backend = RedisBackend { inner };
        // A failed sweep is retried at the next tick; the next lease
        // operation sweeps too. An outage is logged quietly (every tick
        // would fail); malformed data stops expiry until it is repaired.
        match backend.run("sweep", &[]).await {
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                tracing::debug!(prefix = %backend.inner.prefix, error = %e, "lease sweep failed");
            }
            Err(e) => {
                tracing::warn!(prefix = %backend.inner.prefix, error = %e, "lease sweep failed");
            }
        }
    }
}

/// The first pause before a failed resync read is tried again, and the
/// longest.
const RESYNC_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

struct RedisWatch {
    subscription: Subscription,
    progress: Progress,
    initial: Option<WatchItem>,
    backend: Weak<Inner>,
    key: Key,
}

impl RedisWatch {
    async fn next(mut self) -> Option<(Result<WatchItem>, Self)> {
        if self.progress.done {
            return None;
        }
        if let Some(item) = self.initial.take() {
            return Some((Ok(item), self));
        }
        loop {
            if let Some(failures) = self.progress.resync {
                if failures > 0 {
                    tokio::time::sleep(resync_pause(failures)).await;
                }
                let backend = RedisBackend {
                    inner: self.backend.upgrade()?,
                };
                let read = backend.read_at(&self.key).await;
                let item = self.progress.resynced(failures, read);
                return Some((item.map(WatchItem::Resync), self));
            }
            let notice = match self.subscription.rx.recv().await {
                Ok(notice) => notice,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.subscription.rx = self.subscription.rx.resubscribe();
                    Notice::Reconnected
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            match notice {
                Notice::Event(event) if event.revision <= self.progress.floor => continue,
                Notice::Event(event) => {
                    self.progress.floor = event.revision;
                    return Some((Ok(WatchItem::Event(event)), self));
                }
                Notice::Reconnected => self.progress.resync = Some(0),
                Notice::Malformed(message) => {
                    self.progress.done = true;
                    return Some((Err(protocol(message)), self));
                }
            }
        }
    }
}

/// Where a watch stands, whatever it follows (one key or a prefix).
struct Progress {
    /// Events at or below this revision are reflected in what the stream
    /// has delivered.
    floor: u64,
    /// A resync is owed (events may have been missed), and its read has
    /// failed this many times.
    resync: Option<u32>,
    /// The stream has ended (after an error that will not go away).
    done: bool,
}

impl From<u64> for Progress {
    fn from(floor: u64) -> Self {
        Progress {
            floor,
            resync: None,
            done: false,
        }
    }
}

impl Progress {
    /// Takes the answer to a resync's read, made after `failures` failed
    /// ones: the state it read and the store revision it is current at.
    fn resynced<T>(&mut self, failures: u32, answer: Result<(u64, T)>) -> Result<T> {
        match answer {
            Ok((revision, state)) => {
                // Authoritative: everything above it is new, even if the
                // store lost data and counts from lower.
                self.floor = revision;
                self.resync = None;
                Ok(state)
            }
            // Reported, and tried again at the next poll.
            Err(e) if e.is_transient() => {
                self.resync = Some(failures.saturating_add(1));
                Err(e)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

/// The pause before the resync read (or listing) of a watch that failed
/// `failures` times in a row.
fn resync_pause(failures: u32) -> Duration {
    let (first, longest) = RESYNC_BACKOFF;
    first.saturating_mul(1 << failures.min(6)).min(longest)
}

/// A watch of every key under a prefix: [`RedisWatch`]'s rules, with a
/// listing for a resync.
struct RedisPrefixWatch {
    subscription: PrefixSubscription,
    progress: Progress,
    initial: Option<PrefixItem>,
    backend: Weak<Inner>,
    prefix: String,
}

impl RedisPrefixWatch {
    async fn next(mut self) -> Option<(Result<PrefixItem>, Self)> {
        if self.progress.done {
            return None;
        }
        if let Some(item) = self.initial.take() {
            return Some((Ok(item), self));
        }
        loop {
            if let Some(failures) = self.progress.resync {
                if failures > 0 {
                    tokio::time::sleep(resync_pause(failures)).await;
                }
                let backend = RedisBackend {
                    inner: self.backend.upgrade()?,
                };
                let listed = backend.list_now(self.prefix.clone()).await;
                let listed = listed.map(|listing| (listing.revision, listing));
                let item = self.progress.resynced(failures, listed);
                return Some((item.map(PrefixItem::Resync), self));
            }
            let notice = match self.subscription.rx.recv().await {
                Ok(notice) => notice,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.subscription.rx = self.subscription.rx.resubscribe();
                    PrefixNotice::Reconnected
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            match notice {
                // (The floor stays: the records one lease expiry deletes
                // may share a revision on other backends; here they do not,
                // and events come in commit order.)
                PrefixNotice::Event(_, event) if event.revision <= self.progress.floor => continue,
                PrefixNotice::Event(key, event) => {
                    return Some((Ok(PrefixItem::Event(key, event)), self));
                }
                PrefixNotice::Reconnected => self.progress.resync = Some(0),
                PrefixNotice::Malformed(message) => {
                    self.progress.done = true;
                    return Some((Err(protocol(message)), self));
                }
            }
        }
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn read(&self, key: Key) -> BoxFuture<'_, Result<Option<Record>>> {
        async move { self.read_at(&key).await.map(|(_, record)| record) }.boxed()
    }

    fn list(&self, prefix: String) -> BoxFuture<'_, Result<Listing>> {
        self.list_now(prefix).boxed()
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome>> {
        self.write_now(write).boxed()
    }

    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, Result<WatchStream>> {
        self.watch_now(key, since).boxed()
    }

    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<PrefixStream>> {
        self.watch_prefix_now(prefix, since).boxed()
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        async move {
            let millis = ttl.as_millis().max(1).to_string();
            let reply = self.run("grant", &[millis.as_bytes()]).await?;
            Ok(LeaseId(wire::int(&reply, "lease id")?))
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        async move {
            let id = lease.0.to_string();
            let reply = self.run("keepalive", &[id.as_bytes()]).await?;
            match wire::int(&reply, "keep-alive reply")? {
                1 => Ok(()),
                _ => Err(Error::LeaseExpired { lease }),
            }
        }
        .boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        async move {
            let id = lease.0.to_string();
            self.run("revoke", &[id.as_bytes()]).await.map(|_| ())
        }
        .boxed()
    }
}
