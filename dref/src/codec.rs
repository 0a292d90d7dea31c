//! Value codecs, chosen per context.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How values are turned into bytes. Every node that shares a record must
/// use the same codec; the codec's name is part of the type fingerprint
/// stored with each record, so a mismatch is reported as
/// [`Error::TypeMismatch`](crate::Error::TypeMismatch) instead of garbage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[non_exhaustive]
pub enum Codec {
    /// [postcard](https://docs.rs/postcard): compact and fast. The default.
    #[default]
    Postcard,
    /// MessagePack with named struct fields (feature `msgpack`).
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    MessagePack,
    /// JSON (feature `json`).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    Json,
}

/// An encoding or decoding failure, before it is tied to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl Codec {
    /// The codec's name, as stored in type fingerprints.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Postcard => "postcard",
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => "msgpack",
            #[cfg(feature = "json")]
            Codec::Json => "json",
        }
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Postcard => postcard::to_stdvec(value).map_err(|e| CodecError(e.to_string())),
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => {
                rmp_serde::to_vec_named(value).map_err(|e| CodecError(e.to_string()))
            }
            #[cfg(feature = "json")]
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError(e.to_string())),
        }
    }

    /// [`encode`](Codec::encode), appending the same bytes to `out`: for
    /// callers that encode into one buffer again and again. On failure,
    /// `out` may hold part of the encoding.
    pub fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            Codec::Postcard => postcard::to_io(value, out)
                .map(drop)
                .map_err(|e| CodecError(e.to_string())),
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => {
                rmp_serde::encode::write_named(out, value).map_err(|e| CodecError(e.to_string()))
            }
            #[cfg(feature = "json")]
            Codec::Json => serde_json::to_writer(out, value).map_err(|e| CodecError(e.to_string())),
        }
    }

    /// Decodes a value. Trailing bytes are an error: they mean the bytes
    /// were written for another type.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Postcard => match postcard::take_from_bytes(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(CodecError(format!(
                    "{} trailing bytes after the value",
                    rest.len()
                ))),
                Err(e) => Err(CodecError(e.to_string())),
            },
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::new(bytes);
                let value = T::deserialize(&mut de).map_err(|e| CodecError(e.to_string()))?;
                let rest = de.into_inner().len();
                if rest == 0 {
                    Ok(value)
                } else {
                    Err(CodecError(format!("{rest} trailing bytes after the value")))
                }
            }
            #[cfg(feature = "json")]
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string())),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Codec> {
        vec![
            Codec::Postcard,
            #[cfg(feature = "msgpack")]
            Codec::MessagePack,
            #[cfg(feature = "json")]
            Codec::Json,
        ]
    }

    #[test]
    fn round_trips() {
        for codec in all() {
            let value = (7u64, "seven".to_string(), vec![Some(1.5f64), None]);
            let bytes = codec.encode(&value).unwrap();
            assert_eq!(
                codec
                    .decode::<(u64, String, Vec<Option<f64>>)>(&bytes)
                    .unwrap(),
                value
            );
        }
    }

    #[test]
    fn encoding_into_a_buffer_gives_the_same_bytes() {
        for codec in all() {
            let value = (7u64, "seven".to_string(), vec![Some(1.5f64), None]);
            let mut out = b"kept".to_vec();
            codec.encode_into(&value, &mut out).unwrap();
            assert_eq!(&out[..4], b"kept");
            assert_eq!(out[4..], codec.encode(&value).unwrap()[..], "{codec}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in all() {
            for garbage in [&b""[..], &[0xff; 3], &[0xc1, 0x00, 0xff, 0x80]] {
                assert!(
                    codec.decode::<String>(garbage).is_err(),
                    "{codec} {garbage:?}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        for codec in all() {
            let mut bytes = codec.encode(&1u8).unwrap();
            bytes.extend_from_slice(&codec.encode("x").unwrap());
            let err = codec.decode::<u8>(&bytes).unwrap_err();
            assert!(
                err.0.contains("trailing") || err.0.contains("trailing characters"),
                "{codec}: {err}"
            );
        }
    }
}
