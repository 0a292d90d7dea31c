//! How a Rust type maps onto the fields of a record.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::shared::RefShared;
use crate::codec::{Codec, CodecError};

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

    /// [`encode_field`](Value::encode_field), appending the same bytes to
    /// `out`, a buffer that refs reuse from one write to the next. The
    /// default copies what `encode_field` returns.
    fn encode_field_into(
        &self,
        index: usize,
        codec: Codec,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.extend_from_slice(&self.encode_field(index, codec)?);
        Ok(())
    }

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
        &[crate::layout::VALUE_FIELD]
    }

    fn encode_field(&self, _index: usize, codec: Codec) -> Result<Vec<u8>, CodecError> {
        codec.encode(self)
    }

    fn encode_field_into(
        &self,
        _index: usize,
        codec: Codec,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        codec.encode_into(self, out)
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

/// What the type of a stored field of a `#[distributed]` struct must be.
///
/// Implemented for every type that is `Serialize + DeserializeOwned + Clone
/// + PartialEq + Send + Sync + 'static`: primitives, strings, collections
/// (`Vec`, `HashMap`, `Option`, ...) and serde structs nested inside.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the type of a stored `#[distributed]` field",
    note = "a stored field's type must be `Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static`; mark a local-only field `#[dref(skip)]`"
)]
pub trait FieldValue:
    Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static
{
}

impl<F> FieldValue for F where
    F: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static
{
}

/// The field handles of a ref whose value has no per-field handles (every
/// type that is not a `#[distributed]` struct): an empty struct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoFields;

/// The shared state of one ref, handed to [`Value::fields`] so that the
/// generated field accessors of a `#[distributed]` struct can build their
/// [`FieldRef`](crate::FieldRef) handles. Cheap to clone.
pub struct RefCore<T: Value> {
    pub(super) shared: Arc<RefShared<T>>,
}

impl<T: Value> Clone for RefCore<T> {
    fn clone(&self) -> Self {
        RefCore {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Value> fmt::Debug for RefCore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefCore")
            .field("key", &self.shared.key)
            .finish()
    }
}
