//! Decoding what the server sends: record hashes, script replies and event
//! messages. Everything here is untrusted input: malformed data is a
//! [`Error::Protocol`], never a panic.

use bytes::Bytes;
use dref::engine::{Event, EventKind, Field, FieldName, LeaseId, Record};
use dref::{Error, Result};
use redis::Value;

pub(super) fn protocol(message: impl Into<String>) -> Error {
    Error::Protocol {
        backend: "redis",
        message: message.into(),
    }
}

fn number(bytes: &[u8], what: &str) -> Result<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            protocol(format!(
                "{what} is not a number: {:?}",
                String::from_utf8_lossy(bytes)
            ))
        })
}

fn bulk(value: &Value, what: &str) -> Result<Bytes> {
    match value {
        Value::BulkString(b) => Ok(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Ok(Bytes::copy_from_slice(s.as_bytes())),
        Value::Int(i) => Ok(Bytes::from(i.to_string())),
        other => Err(protocol(format!(
            "{what}: expected a string, got {other:?}"
        ))),
    }
}

pub(super) fn int(value: &Value, what: &str) -> Result<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).map_err(|_| protocol(format!("{what} is negative"))),
        other => number(&bulk(other, what)?, what),
    }
}

pub(super) fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value]> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(protocol(format!(
            "{what}: expected an array, got {other:?}"
        ))),
    }
}

/// A record hash as returned by `HGETALL` (an empty array: no record).
pub(super) fn record(value: &Value) -> Result<Option<Record>> {
    let items = array(value, "record")?;
    if items.is_empty() {
        return Ok(None);
    }
    if items.len() % 2 != 0 {
        return Err(protocol("record hash reply has an odd number of items"));
    }
    let (mut version, mut create, mut modified, mut lease) = (None, None, None, None);
    let mut values: Vec<(FieldName, Bytes)> = Vec::new();
    let mut revisions: Vec<(FieldName, u64)> = Vec::new();
    for pair in items.chunks_exact(2) {
        let name = bulk(&pair[0], "record hash field")?;
        let value = bulk(&pair[1], "record hash value")?;
        match &name[..] {
            b"m:ver" => version = Some(number(&value, "m:ver")?),
            b"m:crev" => create = Some(number(&value, "m:crev")?),
            b"m:mrev" => modified = Some(number(&value, "m:mrev")?),
            b"m:lease" => lease = Some(LeaseId(number(&value, "m:lease")?)),
            b"m:n" => {
                number(&value, "m:n")?;
            }
            n if n.starts_with(b"f:") => values.push((field_name(&n[2..])?, value)),
            n if n.starts_with(b"r:") => {
                revisions.push((field_name(&n[2..])?, number(&value, "field revision")?))
            }
            n => {
                return Err(protocol(format!(
                    "unexpected hash field {:?} in a dref record",
                    String::from_utf8_lossy(n)
                )))
            }
        }
    }
    let missing = |what: &str| protocol(format!("record hash lacks {what}: not a dref record"));
    let mut fields = Vec::with_capacity(values.len());
    for (name, value) in values {
        let mod_revision = revisions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| missing(&format!("the revision of field `{name}`")))?;
        fields.push(Field {
            name,
            value,
            mod_revision,
        });
    }
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(Record {
        fields,
        version: version.ok_or_else(|| missing("m:ver"))?,
        create_revision: create.ok_or_else(|| missing("m:crev"))?,
        mod_revision: modified.ok_or_else(|| missing("m:mrev"))?,
        lease,
    }))
}

fn field_name(bytes: &[u8]) -> Result<FieldName> {
    std::str::from_utf8(bytes)
        .map(FieldName::from)
        .map_err(|_| protocol("a field name is not UTF-8"))
}

/// Splits the first `limit` netstring frames (`<len>:<bytes>`) off an
/// event message.
fn netstrings(mut message: &[u8], limit: usize) -> Result<Vec<&[u8]>> {
    let mut parts = Vec::new();
    while !message.is_empty() && parts.len() < limit {
        let colon = message
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| protocol("event frame without a length"))?;
        let len = number(&message[..colon], "event frame length")? as usize;
        let rest = &message[colon + 1..];
        if rest.len() < len {
            return Err(protocol("event frame longer than the message"));
        }
        parts.push(&rest[..len]);
        message = &rest[len..];
    }
    Ok(parts)
}

/// The revision of an event message, without decoding the rest.
pub(super) fn event_revision(message: &[u8]) -> Result<u64> {
    match netstrings(message, 2)?.as_slice() {
        [_, revision] => number(revision, "event revision"),
        _ => Err(protocol("event lacks a revision")),
    }
}

/// Decodes an event message published by the engine script.
pub(super) fn event(message: &[u8]) -> Result<Event> {
    let parts = netstrings(message, usize::MAX)?;
    let mut it = parts.into_iter();
    let mut next = |what: &str| {
        it.next()
            .ok_or_else(|| protocol(format!("event lacks {what}")))
    };
    let kind = next("its kind")?;
    let revision = number(next("a revision")?, "event revision")?;
    let kind = match kind {
        b"deleted" => EventKind::Deleted,
        b"expired" => EventKind::Expired,
        b"put" => {
            let version = number(next("a version")?, "event version")?;
            let create_revision = number(next("a create revision")?, "create revision")?;
            let lease = match next("a lease")? {
                b"" => None,
                l => Some(LeaseId(number(l, "event lease")?)),
            };
            let changed_count = number(next("a field count")?, "field count")?;
            let mut changed = Vec::new();
            for _ in 0..changed_count {
                let name = field_name(next("a field name")?)?;
                let value = Bytes::copy_from_slice(next("a field value")?);
                changed.push((name, value));
            }
            let removed_count = number(next("a removed count")?, "removed count")?;
            let mut removed = Vec::new();
            for _ in 0..removed_count {
                removed.push(field_name(next("a removed field")?)?);
            }
            EventKind::Put {
                version,
                create_revision,
                changed,
                removed,
                lease,
            }
        }
        other => {
            return Err(protocol(format!(
                "unknown event kind {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    Ok(Event { revision, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_netstrings() {
        let msg = b"3:put1:72:151:55:lease3:ignored1:15:value3:\x00:\xff1:0";
        // "lease" is not a number: a protocol error, not a panic.
        assert!(event(msg).is_err());
        let msg = b"3:put1:72:151:50:1:15:value3:\x00:\xff1:0";
        let e = event(msg).unwrap();
        assert_eq!(e.revision, 7);
        let EventKind::Put { changed, .. } = e.kind else {
            panic!()
        };
        assert_eq!(&changed[0].1[..], b"\x00:\xff");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for garbage in [
            &b"x"[..],
            b"99:short",
            b"3:bad1:1",
            b"7:deleted",
            b"3:put1:1",
        ] {
            assert!(event(garbage).is_err(), "{garbage:?}");
        }
        assert!(record(&Value::Array(vec![Value::BulkString(b"m:ver".to_vec())])).is_err());
        assert!(record(&Value::Int(3)).is_err());
    }
}
