//! Records as JSON, read through the documented layout (`dref::layout`):
//! a ref's value decoded with its codec where the codec says what it
//! holds (JSON, MessagePack), other bytes shown as hexadecimal.

use dref::engine::{Key, Record};
use dref::layout::{TYPE_FIELD, VALUE_FIELD};
use serde_json::{json, Map, Value};

/// How a ref's record says its value is stored.
pub struct RefType<'a> {
    /// The codec's name (`json`, `msgpack`, `postcard`).
    pub codec: &'a str,
    /// The Rust type's fingerprint.
    pub fingerprint: &'a str,
}

impl RefType<'_> {
    /// Whether the value is a `#[distributed]` struct (one stored field
    /// per struct field) rather than a plain type (one `value` field).
    pub fn is_struct(&self) -> bool {
        self.fingerprint.ends_with('}')
    }
}

/// The type of a ref's record; `None` for a record that is not a ref's.
pub fn ref_type(record: &Record) -> Option<RefType<'_>> {
    let text = std::str::from_utf8(&record.field(TYPE_FIELD)?.value).ok()?;
    let (codec, fingerprint) = text.split_once(':')?;
    Some(RefType { codec, fingerprint })
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One field's bytes as JSON: decoded when the codec describes itself,
/// else `{"$bytes": "<hex>"}`.
fn decode(codec: &str, bytes: &[u8]) -> Value {
    let decoded = match codec {
        "json" => serde_json::from_slice(bytes).ok(),
        "msgpack" => rmp_serde::from_slice(bytes).ok(),
        _ => None,
    };
    decoded.unwrap_or_else(|| json!({ "$bytes": hex(bytes) }))
}

/// The value a record holds, as JSON: a ref's value decoded (a struct as
/// an object of its fields), any other record's fields as an object of
/// their text (or `{"$bytes": ...}` when not UTF-8).
pub fn value(record: &Record) -> Value {
    if let Some(ty) = ref_type(record) {
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
    Value::Object(fields.collect::<Map<_, _>>())
}

/// A record with its key and metadata, for `--json` output.
pub fn record(key: &Key, record: &Record) -> Value {
    json!({
        "key": key.as_str(),
        "type": ref_type(record).map(|t| format!("{}:{}", t.codec, t.fingerprint)),
        "version": record.version,
        "create_revision": record.create_revision,
        "mod_revision": record.mod_revision,
        "lease": record.lease.map(|l| l.0),
        "value": value(record),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use dref::engine::{Field, FieldName};

    use super::*;

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
        assert_eq!(value(&plain), json!(42));
        let point = record(&[
            ("$type", b"json:Point{x:i32,y:i32}"),
            ("x", b"1"),
            ("y", b"-2"),
        ]);
        assert_eq!(value(&point), json!({"x": 1, "y": -2}));
        let packed = rmp_serde::to_vec(&vec!["a", "b"]).unwrap();
        let msgpack = record(&[("$type", b"msgpack:Vec<String>"), ("value", &packed)]);
        assert_eq!(value(&msgpack), json!(["a", "b"]));
        let postcard = record(&[("$type", b"postcard:u8"), ("value", &[7, 255])]);
        assert_eq!(value(&postcard), json!({"$bytes": "07ff"}));
        // Bytes that are not what the codec says are shown, not dropped.
        let broken = record(&[("$type", b"json:u64"), ("value", b"\xff")]);
        assert_eq!(value(&broken), json!({"$bytes": "ff"}));
        // Not a ref: fields as text.
        let lock = record(&[("holder", b"node-1"), ("claim", b"\xff")]);
        assert_eq!(
            value(&lock),
            json!({"holder": "node-1", "claim": {"$bytes": "ff"}})
        );
    }
}
