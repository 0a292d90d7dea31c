//! How a Rust type maps onto the fields of a record.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, CodecError};
use crate::field::{NoFields, RefCore};

/// A type that can live in a [`DRef`](crate::DRef).
///
/// Every `Serialize + DeserializeOwned + Clone + Send + Sync + 'static` type
/// is a `Value` stored as one field named `value`, whose change events carry
/// the whole new value. Structs marked `#[distributed]` implement it with one
/// field per struct field, so that writes and change events are per field.
///
/// Implementing `Value` by hand is possible but rarely needed: the contract
/// is that `decode_fields(encode_field(0..n))` restores the value and that
/// `decode_change(i, encode_field(i))` describes field `i`.
pub trait Value: Clone + Send + Sync + 'static {
    /// A change to one field (for single-field values: the new value).
    type Change: Clone + Send + Sync + 'static;

    /// The per-field handles of a ref holding this type, reached through
    /// `Deref` on [`DRef<Self>`](crate::DRef) (`flags.rollout()`): the
    /// generated `…Fields` struct for `#[distributed]` structs,
    /// [`NoFields`] otherwise.
    type Fields: Send + Sync + 'static;

    /// Builds the per-field handles of one ref.
    fn fields(core: &RefCore<Self>) -> Self::Fields;

    /// A fingerprint of the type's stored shape, stored with every record
    /// so that opening a record with another type fails clearly.
    fn fingerprint() -> Cow<'static, str>;

    /// Stored field names, in declaration order.
    fn field_names() -> &'static [&'static str];

    /// Encodes field `index` (an index into [`field_names`](Value::field_names)).
    fn encode_field(&self, index: usize, codec: Codec) -> Result<Vec<u8>, CodecError>;

    /// Decodes a whole value from its encoded fields, given in
    /// [`field_names`](Value::field_names) order. On failure, returns the
    /// index of the field that could not be decoded.
    fn decode_fields(fields: &[&[u8]], codec: Codec) -> Result<Self, (usize, CodecError)>;

    /// Decodes the new contents of field `index` as a change event.
    fn decode_change(index: usize, bytes: &[u8], codec: Codec) -> Result<Self::Change, CodecError>;
}

impl<T> Value for T
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Change = T;
    type Fields = NoFields;

    fn fields(_core: &RefCore<Self>) -> NoFields {
        NoFields
    }

    fn fingerprint() -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<T>())
    }

    fn field_names() -> &'static [&'static str] {
        &["value"]
    }

    fn encode_field(&self, _index: usize, codec: Codec) -> Result<Vec<u8>, CodecError> {
        codec.encode(self)
    }

    fn decode_fields(fields: &[&[u8]], codec: Codec) -> Result<Self, (usize, CodecError)> {
        let bytes = fields
            .first()
            .ok_or_else(|| (0, CodecError("the field is missing".into())))?;
        codec.decode(bytes).map_err(|e| (0, e))
    }

    fn decode_change(_index: usize, bytes: &[u8], codec: Codec) -> Result<T, CodecError> {
        codec.decode(bytes)
    }
}
