//! How dref lays out its records in a store, for tools that read a store
//! directly (the `dref` command-line tool, dashboards) and for code in
//! other languages that shares one.
//!
//! | key | holds | fields |
//! |-----|-------|--------|
//! | `ref/<id>` | a ref made with a [`ManualId`](crate::ManualId) | `$type`, then the value's fields |
//! | `ref/auto/<file>:<line>:<column>/<type>` | a ref made with an [`AutoId`](crate::AutoId) | as above |
//! | `lock/<name>` | a held lock | `holder`, `claim`, `since` |
//! | `election/<name>` | an election's leader | as a lock |
//!
//! - `$type` is `<codec>:<fingerprint>`: the codec's name (`postcard`,
//!   `msgpack` or `json`, see [`Codec`](crate::Codec)) and a fingerprint
//!   of the Rust type. A plain type's value is one field, `value`; a
//!   `#[distributed]` struct's fields are stored one per field, in
//!   declaration order, and its fingerprint ends with `}`. Each field holds
//!   the value encoded with the codec.
//! - A lock or leader record is attached to its holder's session lease
//!   (it is deleted when the session ends). `holder` is the holder's node
//!   id ([`Context::node_id`](crate::Context::node_id)); `claim` is 128
//!   random bits in hexadecimal, new for every acquisition; `since` is when
//!   it was acquired, in milliseconds since the Unix epoch by the holder's
//!   clock (for display: clocks of different nodes differ). The fencing
//!   token is the record's `create_revision`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::{Key, LeaseId, Record};
use crate::lock::FencingToken;
use crate::{Error, Result};

/// The key prefix of every ref.
pub const REF_PREFIX: &str = "ref/";
/// The key prefix of every held lock.
pub const LOCK_PREFIX: &str = "lock/";
/// The key prefix of every election's leader record.
pub const ELECTION_PREFIX: &str = "election/";
/// The field of a ref's record naming its codec and type.
pub const TYPE_FIELD: &str = "$type";
/// The field of a plain type's value.
pub const VALUE_FIELD: &str = "value";
/// The field of a lock or leader record naming the holder's node.
pub const HOLDER_FIELD: &str = "holder";
/// The field of a lock or leader record telling one acquisition from
/// every other.
pub const CLAIM_FIELD: &str = "claim";
/// The field of a lock or leader record holding when it was acquired.
pub const SINCE_FIELD: &str = "since";

/// A lock or an election's leadership, read from its record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holding {
    /// The lock's or election's name.
    pub name: String,
    /// The holder's node id.
    pub holder: String,
    /// The fencing token of this holding.
    pub token: FencingToken,
    /// The holder's session lease.
    pub session: Option<LeaseId>,
    /// When it was acquired, by the holder's clock (`None` for a record
    /// written by a version of dref that did not say).
    pub since: Option<SystemTime>,
}

impl Holding {
    /// Reads the record `record` stored under `key` (`lock/<name>` or
    /// `election/<name>`). A record that is not a lock's is a
    /// [`Error::Protocol`] error.
    pub fn from_record(key: &Key, record: &Record) -> Result<Holding> {
        let bad = |message: String| Error::Protocol {
            backend: "layout",
            message: format!("`{key}`: {message}"),
        };
        let name = [LOCK_PREFIX, ELECTION_PREFIX]
            .iter()
            .find_map(|prefix| key.as_str().strip_prefix(prefix))
            .ok_or_else(|| bad("not a lock's or an election's key".into()))?;
        let text = |field: &str| -> Result<Option<&str>> {
            record
                .field(field)
                .map(|f| std::str::from_utf8(&f.value))
                .transpose()
                .map_err(|_| bad(format!("the `{field}` field is not UTF-8")))
        };
        let holder = text(HOLDER_FIELD)?
            .ok_or_else(|| bad(format!("no `{HOLDER_FIELD}` field: not a lock record")))?;
        let since = match text(SINCE_FIELD)? {
            None => None,
            Some(ms) => {
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| bad(format!("the `{SINCE_FIELD}` field is not a number")))?;
                Some(UNIX_EPOCH + Duration::from_millis(ms))
            }
        };
        Ok(Holding {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token: FencingToken(record.create_revision),
            session: record.lease,
            since,
        })
    }
}

/// How a ref's record says its value is stored (its `$type` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefType<'a> {
    /// The codec's name (`json`, `msgpack`, `postcard`).
    pub codec: &'a str,
    /// The Rust type's fingerprint.
    pub fingerprint: &'a str,
}

impl RefType<'_> {
    /// The type of a ref's record; `None` for a record that is not a
    /// ref's.
    pub fn of(record: &Record) -> Option<RefType<'_>> {
        let text = std::str::from_utf8(&record.field(TYPE_FIELD)?.value).ok()?;
        let (codec, fingerprint) = text.split_once(':')?;
        Some(RefType { codec, fingerprint })
    }

    /// Whether the value is a `#[distributed]` struct (one stored field
    /// per struct field) rather than a plain type (one `value` field).
    pub fn is_struct(&self) -> bool {
        self.fingerprint.ends_with('}')
    }
}

/// The value a record holds, as JSON, for tools that show records
/// without knowing their Rust types (feature `json`): a ref's value
/// decoded with its codec when the codec describes itself (JSON, and
/// MessagePack with the `msgpack` feature), a struct as an object of its
/// fields; other bytes, and fields that do not decode, as
/// `{"$bytes": "<hex>"}`; a record that is not a ref's (a lock's) as an
/// object of its fields' text.
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub fn value_json(record: &Record) -> serde_json::Value {
    use serde_json::{json, Value};

    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let decode = |codec: &str, bytes: &[u8]| -> Value {
        let decoded = match codec {
            "json" => serde_json::from_slice(bytes).ok(),
            #[cfg(feature = "msgpack")]
            "msgpack" => rmp_serde::from_slice(bytes).ok(),
            _ => None,
        };
        decoded.unwrap_or_else(|| json!({ "$bytes": hex(bytes) }))
    };
    if let Some(ty) = RefType::of(record) {
        if !ty.is_struct() {
            if let Some(field) = record.field(VALUE_FIELD) {
                return decode(ty.codec, &field.value);
            }
        }
        let fields = record
            .fields
            .iter()
            .filter(|f| &*f.name != TYPE_FIELD)
            .map(|f| (f.name.to_string(), decode(ty.codec, &f.value)));
        return Value::Object(fields.collect());
    }
    let fields = record.fields.iter().map(|f| {
        let shown = match std::str::from_utf8(&f.value) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => json!({ "$bytes": hex(&f.value) }),
        };
        (f.name.to_string(), shown)
    });
    Value::Object(fields.collect())
}

/// The `since` field's value for an acquisition now.
pub(crate) fn since_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    ms.to_string()
}

#[cfg(all(test, feature = "json", feature = "msgpack"))]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::engine::{Field, FieldName};

    fn record(fields: &[(&str, &[u8])]) -> Record {
        Record {
            fields: fields
                .iter()
                .map(|(name, value)| Field {
                    name: FieldName::from(*name),
                    value: Bytes::copy_from_slice(value),
                    mod_revision: 1,
                })
                .collect(),
            version: 1,
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        }
    }

    #[test]
    fn values_are_decoded_by_their_codec_and_shown_as_bytes_otherwise() {
        let plain = record(&[("$type", b"json:u64"), ("value", b"42")]);
        assert_eq!(value_json(&plain), json!(42));
        let point = record(&[
            ("$type", b"json:Point{x:i32,y:i32}"),
            ("x", b"1"),
            ("y", b"-2"),
        ]);
        assert_eq!(value_json(&point), json!({"x": 1, "y": -2}));
        let packed = rmp_serde::to_vec(&vec!["a", "b"]).unwrap();
        let msgpack = record(&[("$type", b"msgpack:Vec<String>"), ("value", &packed)]);
        assert_eq!(value_json(&msgpack), json!(["a", "b"]));
        let postcard = record(&[("$type", b"postcard:u8"), ("value", &[7, 255])]);
        assert_eq!(value_json(&postcard), json!({"$bytes": "07ff"}));
        // Bytes that are not what the codec says are shown, not dropped.
        let broken = record(&[("$type", b"json:u64"), ("value", b"\xff")]);
        assert_eq!(value_json(&broken), json!({"$bytes": "ff"}));
        // Not a ref: fields as text.
        let lock = record(&[("holder", b"node-1"), ("claim", b"\xff")]);
        assert_eq!(
            value_json(&lock),
            json!({"holder": "node-1", "claim": {"$bytes": "ff"}})
        );
    }
}
