//! Records as JSON for `--json` output, through the documented layout
//! (`dref::layout`).

use dref::engine::{Key, Record};
use dref::layout::{value_json, RefType};
use serde_json::{json, Value};

/// The value a record holds, as JSON (see [`value_json`]).
pub fn value(record: &Record) -> Value {
    value_json(record)
}

/// A record with its key and metadata.
pub fn record(key: &Key, record: &Record) -> Value {
    json!({
        "key": key.as_str(),
        "type": RefType::of(record).map(|t| format!("{}:{}", t.codec, t.fingerprint)),
        "version": record.version,
        "create_revision": record.create_revision,
        "mod_revision": record.mod_revision,
        "lease": record.lease.map(|l| l.0),
        "value": value(record),
    })
}
