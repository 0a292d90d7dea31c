//! The commands, on the store the tool talks to.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::SystemTime;

use bytes::Bytes;
use dref::engine::{
    apply_event, Condition, EventKind, FieldName, Key, Op, PrefixItem, Record, Write, WriteOutcome,
};
use dref::layout::{Holding, RefType, ELECTION_PREFIX, LOCK_PREFIX, TYPE_FIELD, VALUE_FIELD};
use futures_util::StreamExt;
use serde_json::{json, Value};

use dref_backends::raft::RaftClient;
use dref_backends::redis::RedisBackend;

use crate::render;
use crate::store::Store;
use crate::Failure;

/// Where results go: text for people, or JSON for scripts.
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints one line; a reader that went away (`dref watch | head`)
    /// ends the program quietly.
    fn line(&self, text: impl std::fmt::Display) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure {
                status: 0,
                message: String::new(),
            }),
            Err(e) => Err(Failure {
                status: 3,
                message: format!("cannot write the output: {e}"),
            }),
        }
    }
}

pub async fn get(store: &Store, out: &Output, key: &str) -> Result<(), Failure> {
    let key = Key::new(key);
    let record = store
        .read(&key)
        .await?
        .ok_or_else(|| Failure::missing(format!("no record under `{key}`")))?;
    match out.json {
        true => out.line(render::record(&key, &record)),
        false => out.line(render::value(&record)),
    }
}

/// The fields of a `Put` of `value` into the JSON-codec ref `record`.
fn json_fields(
    key: &Key,
    record: &Record,
    value: &str,
) -> Result<Vec<(FieldName, Bytes)>, Failure> {
    let ty = RefType::of(record).ok_or_else(|| {
        Failure::usage(format!(
            "`{key}` is not a ref's record (it has no {TYPE_FIELD} field)"
        ))
    })?;
    if ty.codec != "json" {
        return Err(Failure::usage(format!(
            "`{key}` holds a {}-encoded value: `set` writes refs of the JSON codec only",
            ty.codec
        )));
    }
    let value: Value = serde_json::from_str(value)
        .map_err(|e| Failure::usage(format!("the value is not JSON: {e}")))?;
    let type_field = record
        .field(TYPE_FIELD)
        .map(|f| f.value.clone())
        .unwrap_or_default();
    let mut fields = vec![(FieldName::from(TYPE_FIELD), type_field)];
    let encode = |v: &Value| Bytes::from(v.to_string());
    if !ty.is_struct() {
        fields.push((FieldName::from(VALUE_FIELD), encode(&value)));
        return Ok(fields);
    }
    let Value::Object(mut given) = value else {
        return Err(Failure::usage(format!(
            "`{key}` holds a struct ({}): give an object with every field",
            ty.fingerprint
        )));
    };
    for field in record.fields.iter().filter(|f| &*f.name != TYPE_FIELD) {
        let v = given.remove(&*field.name).ok_or_else(|| {
            Failure::usage(format!(
                "the value lacks the field `{}` of `{key}`",
                field.name
            ))
        })?;
        fields.push((field.name.clone(), encode(&v)));
    }
    if let Some(extra) = given.keys().next() {
        return Err(Failure::usage(format!("`{key}` has no field `{extra}`")));
    }
    Ok(fields)
}

pub async fn set(store: &Store, out: &Output, key: &str, value: &str) -> Result<(), Failure> {
    let key = Key::new(key);
    let mut current = store.read(&key).await?;
    loop {
        let record = current.ok_or_else(|| {
            Failure::missing(format!(
                "no record under `{key}`: `set` writes existing refs (their type is in the record)"
            ))
        })?;
        let fields = json_fields(&key, &record, value)?;
        // Conditional on the record read, so that a concurrent change of
        // the ref's type (or a delete) is not overwritten blindly.
        let write = Write::new(key.clone(), Op::Put(fields))
            .when(Condition::ModRevision(record.mod_revision))
            .with_lease(record.lease);
        match store.write(write).await? {
            WriteOutcome::Committed { revision, version } => {
                return match out.json {
                    true => out.line(
                        json!({"key": key.as_str(), "revision": revision, "version": version}),
                    ),
                    false => out.line(format!("{key} set at revision {revision}")),
                };
            }
            WriteOutcome::Rejected { current: now } => current = now,
        }
    }
}

pub async fn list(store: &Store, out: &Output, prefix: &str) -> Result<(), Failure> {
    let listing = store.list(prefix).await?;
    if out.json {
        let records: Vec<Value> = listing
            .records
            .iter()
            .map(|(key, record)| render::record(key, record))
            .collect();
        return out.line(json!({"revision": listing.revision, "records": records}));
    }
    for (key, record) in &listing.records {
        out.line(format!(
            "{key}  version {}  revision {}",
            record.version, record.mod_revision
        ))?;
    }
    Ok(())
}

/// The records a watch has seen, to show whole values of partial events.
type Seen = BTreeMap<Key, Record>;

/// Prints one change: `<revision> <put|delete|expire> <key> [<value>]`.
fn print_change(
    out: &Output,
    revision: u64,
    kind: &str,
    key: &Key,
    record: Option<&Record>,
) -> Result<(), Failure> {
    match (out.json, record) {
        (true, Some(record)) => out.line(json!({
            "revision": revision, "event": kind, "key": key.as_str(),
            "version": record.version, "value": render::value(record),
        })),
        (true, None) => out.line(json!({"revision": revision, "event": kind, "key": key.as_str()})),
        (false, Some(record)) => {
            out.line(format!("{revision} {kind} {key} {}", render::value(record)))
        }
        (false, None) => out.line(format!("{revision} {kind} {key}")),
    }
}

/// Applies one event of `key` to what was seen, and prints it.
fn show_event(
    out: &Output,
    seen: &mut Seen,
    key: Key,
    event: &dref::engine::Event,
) -> Result<(), Failure> {
    let mut record = seen.remove(&key);
    apply_event(&mut record, event);
    let kind = match event.kind {
        EventKind::Put { .. } => "put",
        EventKind::Deleted => "delete",
        EventKind::Expired => "expire",
        _ => "change",
    };
    print_change(out, event.revision, kind, &key, record.as_ref())?;
    if let Some(record) = record {
        seen.insert(key, record);
    }
    Ok(())
}

/// Replaces what was seen by a resync's state, printing what differs.
fn show_resync(out: &Output, seen: &mut Seen, revision: u64, now: Seen) -> Result<(), Failure> {
    for key in seen.keys().filter(|k| !now.contains_key(*k)) {
        print_change(out, revision, "delete", key, None)?;
    }
    for (key, record) in &now {
        if seen.get(key) != Some(record) {
            print_change(out, revision, "put", key, Some(record))?;
        }
    }
    *seen = now;
    Ok(())
}

pub async fn watch(store: &Store, out: &Output, key: &str, prefix: bool) -> Result<(), Failure> {
    // One key is the prefix watch of its name, narrowed to the key itself.
    let one = (!prefix).then(|| Key::new(key));
    let wanted = |k: &Key| one.as_ref().is_none_or(|one| k == one);
    // What is there now, then every change after it (no gap: the watch
    // starts after the revision the listing reflects).
    let listing = store.list(key).await?;
    let mut seen: Seen = listing
        .records
        .into_iter()
        .filter(|(k, _)| wanted(k))
        .collect();
    let mut stream = store.watch_prefix(key.to_owned(), listing.revision).await?;
    while let Some(item) = stream.next().await {
        match item? {
            PrefixItem::Event(key, event) if wanted(&key) => {
                show_event(out, &mut seen, key, &event)?
            }
            PrefixItem::Event(..) => {}
            PrefixItem::Resync(listing) => {
                let now = listing
                    .records
                    .into_iter()
                    .filter(|(k, _)| wanted(k))
                    .collect();
                show_resync(out, &mut seen, listing.revision, now)?
            }
        }
    }
    Err(Failure {
        status: 3,
        message: "the watch ended: the store went away".into(),
    })
}

/// How long ago `since` was, for people (`3s`, `2m5s`, `1h2m`).
fn age(since: Option<SystemTime>) -> String {
    let Some(elapsed) = since.and_then(|s| SystemTime::now().duration_since(s).ok()) else {
        return "-".into();
    };
    let secs = elapsed.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

fn holding_json(holding: &Holding) -> Value {
    let since_ms = holding
        .since
        .and_then(|s| s.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    let age_ms = holding
        .since
        .and_then(|s| SystemTime::now().duration_since(s).ok())
        .map(|d| d.as_millis() as u64);
    json!({
        "name": holding.name,
        "holder": holding.holder,
        "token": holding.token.0,
        "session": holding.session.map(|l| l.0),
        "since_ms": since_ms,
        "age_ms": age_ms,
    })
}

fn holding_line(holding: &Holding) -> String {
    format!(
        "{}  holder {}  token {}  session {}  age {}",
        holding.name,
        holding.holder,
        holding.token,
        holding.session.map_or("-".to_owned(), |l| l.to_string()),
        age(holding.since)
    )
}

pub async fn locks(store: &Store, out: &Output) -> Result<(), Failure> {
    let listing = store.list(LOCK_PREFIX).await?;
    let holdings = listing
        .records
        .iter()
        .map(|(key, record)| Holding::from_record(key, record))
        .collect::<Result<Vec<_>, _>>()?;
    if out.json {
        let locks: Vec<Value> = holdings.iter().map(holding_json).collect();
        return out.line(json!({"revision": listing.revision, "locks": locks}));
    }
    for holding in &holdings {
        out.line(holding_line(holding))?;
    }
    Ok(())
}

pub async fn leader(store: &Store, out: &Output, name: &str) -> Result<(), Failure> {
    let key = Key::new(format!("{ELECTION_PREFIX}{name}"));
    let record = store
        .read(&key)
        .await?
        .ok_or_else(|| Failure::missing(format!("the election `{name}` has no leader")))?;
    let holding = Holding::from_record(&key, &record)?;
    match out.json {
        true => out.line(holding_json(&holding)),
        false => out.line(holding_line(&holding)),
    }
}

pub async fn status(store: &Store, out: &Output) -> Result<(), Failure> {
    match store {
        Store::Redis(redis) => redis_status(redis, out).await,
        Store::Raft(raft) => raft_status(raft, out).await,
    }
}

async fn redis_status(backend: &RedisBackend, out: &Output) -> Result<(), Failure> {
    let status = backend.status().await?;
    match out.json {
        true => out.line(json!({
            "backend": "redis",
            "server_version": status.server_version,
            "namespace": status.namespace,
            "revision": status.revision,
        })),
        false => out.line(format!(
            "redis {}  namespace {}  revision {}",
            status.server_version, status.namespace, status.revision
        )),
    }
}

async fn raft_status(client: &RaftClient, out: &Output) -> Result<(), Failure> {
    let status = client.status().await?;
    let lag = |applied: u64| status.last_log_index.saturating_sub(applied);
    if out.json {
        let members: Vec<Value> = status
            .members
            .iter()
            // Node ids as text: they exceed what a JSON number keeps exact
            // in most JSON tools.
            .map(|m| match &m.status {
                Ok(s) => json!({
                    "id": m.id.to_string(), "addr": m.addr, "voter": m.voter, "state": s.state,
                    "term": s.term, "applied_index": s.applied_index,
                    "lag": lag(s.applied_index),
                }),
                Err(why) => json!({
                    "id": m.id.to_string(), "addr": m.addr, "voter": m.voter, "error": why,
                }),
            })
            .collect();
        return out.line(json!({
            "backend": "raft",
            "leader": status.leader.map(|l| l.to_string()),
            "term": status.term,
            "last_log_index": status.last_log_index,
            "members": members,
        }));
    }
    let leader = status.leader.map_or("none".to_owned(), |l| l.to_string());
    out.line(format!(
        "raft  leader {leader}  term {}  last log index {}",
        status.term, status.last_log_index
    ))?;
    for m in &status.members {
        let role = if m.voter { "voter" } else { "learner" };
        match &m.status {
            Ok(s) => out.line(format!(
                "{}  {}  {role}  {}  applied {}  lag {}",
                m.id,
                m.addr,
                s.state,
                s.applied_index,
                lag(s.applied_index)
            ))?,
            Err(why) => out.line(format!("{}  {}  {role}  unreachable: {why}", m.id, m.addr))?,
        }
    }
    Ok(())
}
