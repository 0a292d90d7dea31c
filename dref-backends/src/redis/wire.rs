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

/// The largest number the engine script keeps: below 2^53, Lua's numbers
/// (doubles) hold every integer exactly.
const EXACT: u64 = (1 << 53) - 1;

/// A canonical decimal (digits, no sign, no leading zero) up to [`EXACT`]:
/// the only form the engine script writes, and the only one it accepts.
pub(super) fn canonical(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [b'0'] => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.len() < 16 && rest.iter().all(u8::is_ascii_digit) => {
            let n = bytes
                .iter()
                .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
            (n <= EXACT).then_some(n)
        }
        _ => None,
    }
}

/// How to show stored bytes in an error message.
pub(super) fn shown(bytes: &[u8]) -> String {
    const LIMIT: usize = 40;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]);
    let more = if bytes.len() > LIMIT { "..." } else { "" };
    format!("{text:?}{more}")
}

fn number(bytes: &[u8], what: &str) -> Result<u64> {
    canonical(bytes).ok_or_else(|| {
        protocol(format!(
            "{what} is not a canonical number: {}",
            shown(bytes)
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

/// The store revision as stored under the Redis key `key` (missing: 0,
/// nothing committed since the data was lost or the namespace began).
pub(super) fn revision(stored: Option<&[u8]>, key: &dyn std::fmt::Display) -> Result<u64> {
    match stored {
        None => Ok(0),
        Some(bytes) => canonical(bytes).ok_or_else(|| {
            protocol(format!(
                "`{key}` (the store revision) is not a canonical number: {}",
                shown(bytes)
            ))
        }),
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

/// A bulk string that must be UTF-8 text (a key).
pub(super) fn text(value: &Value, what: &str) -> Result<String> {
    let bytes = bulk(value, what)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| protocol(format!("{what} is not UTF-8: {}", shown(&bytes))))
}

/// A record hash as returned by `HGETALL` (an empty array: no record),
/// read from the Redis key `key` (formatted only to name it in errors).
pub(super) fn record(value: &Value, key: &dyn std::fmt::Display) -> Result<Option<Record>> {
    let bad = |message: String| protocol(format!("record `{key}`: {message}"));
    let rename = |e: Error| match e {
        Error::Protocol { message, .. } => bad(message),
        other => other,
    };
    let items = array(value, "record").map_err(&rename)?;
    if items.is_empty() {
        return Ok(None);
    }
    if items.len() % 2 != 0 {
        return Err(bad("the hash reply has an odd number of items".into()));
    }
    let (mut version, mut create, mut modified, mut lease) = (None, None, None, None);
    let mut values: Vec<(FieldName, Bytes)> = Vec::new();
    let mut revisions: Vec<(FieldName, u64)> = Vec::new();
    for pair in items.chunks_exact(2) {
        let name = bulk(&pair[0], "record hash field").map_err(&rename)?;
        let value = bulk(&pair[1], "record hash value").map_err(&rename)?;
        let positive = || {
            canonical(&value).filter(|n| *n > 0).ok_or_else(|| {
                bad(format!(
                    "field {} is not a canonical number: {}",
                    String::from_utf8_lossy(&name),
                    shown(&value)
                ))
            })
        };
        match &name[..] {
            b"m:ver" => version = Some(positive()?),
            b"m:crev" => create = Some(positive()?),
            b"m:mrev" => modified = Some(positive()?),
            b"m:lease" => lease = Some(LeaseId(positive()?)),
            b"m:n" => {
                number(&value, "field m:n").map_err(&rename)?;
            }
            n if n.starts_with(b"f:") => {
                values.push((field_name(&n[2..]).map_err(&rename)?, value))
            }
            n if n.starts_with(b"r:") => {
                revisions.push((field_name(&n[2..]).map_err(&rename)?, positive()?))
            }
            n => {
                return Err(bad(format!(
                    "unexpected hash field {}: not a dref record",
                    shown(n)
                )))
            }
        }
    }
    let missing = |what: &str| bad(format!("the hash lacks {what}: not a dref record"));
    let mut fields = Vec::with_capacity(values.len());
    for (name, value) in values {
        let mod_revision = revisions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| missing(&format!("r:{name}")))?;
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
        let half = Value::Array(vec![Value::BulkString(b"m:ver".to_vec())]);
        assert!(record(&half, &"k").is_err());
        assert!(record(&Value::Int(3), &"k").is_err());
    }

    #[test]
    fn only_canonical_numbers_below_2_53_are_accepted() {
        for good in ["0", "7", "10", "1722222222123456", "9007199254740991"] {
            assert_eq!(canonical(good.as_bytes()), good.parse().ok(), "{good}");
        }
        for bad in [
            "",
            "-1",
            "+1",
            "007",
            "00",
            "1.5",
            "1e3",
            " 7",
            "7 ",
            "12abc",
            "9007199254740992",
            "18446744073709551616",
            "99999999999999999999",
        ] {
            assert_eq!(canonical(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
