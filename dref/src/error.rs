//! The one error type of the `dref` crate.

use std::time::Duration;

use crate::engine::{Key, LeaseId};

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in dref.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a
/// catch-all arm.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value could not be encoded with the context's codec.
    #[error("cannot encode the value of `{key}` with {codec}: {message}")]
    Encode {
        /// Key of the record being written.
        key: Key,
        /// Codec name.
        codec: &'static str,
        /// What the codec reported.
        message: String,
    },
    /// Stored bytes could not be decoded into the expected type.
    #[error("cannot decode field `{field}` of `{key}` with {codec}: {message}")]
    Decode {
        /// Key of the record being read.
        key: Key,
        /// Stored field name.
        field: String,
        /// Codec name.
        codec: &'static str,
        /// What the codec reported.
        message: String,
    },
    /// The record under a key was written for another value type or codec.
    #[error("`{key}` holds a `{stored}` but this ref expects a `{expected}`")]
    TypeMismatch {
        /// Key of the record.
        key: Key,
        /// Type fingerprint stored with the record.
        stored: String,
        /// Type fingerprint of the ref that tried to use it.
        expected: String,
    },
    /// An encoded value exceeds the size limit of the context or backend.
    #[error("value of `{key}` is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// Key of the record being written.
        key: Key,
        /// Encoded size in bytes.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The ref's record was deleted (or expired) and has no value.
    #[error("`{key}` has no value: it was deleted or expired")]
    Missing {
        /// Key of the record.
        key: Key,
    },
    /// A lock (or leadership) held by this context was lost: its record was
    /// changed or deleted by someone else, or the session lease could not be
    /// proven alive. The protected body was cancelled.
    #[error("lock `{name}` was lost while held: {reason}")]
    LockLost {
        /// Lock name.
        name: String,
        /// Why the lock is considered lost.
        reason: String,
    },
    /// A `try` lock or campaign found the lock held by someone else.
    #[error("lock `{name}` is held by another session")]
    LockBusy {
        /// Lock name.
        name: String,
    },
    /// An operation with a deadline did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// A lease is unknown to the backend: it expired or was revoked.
    #[error("lease {lease} has expired or was revoked")]
    LeaseExpired {
        /// The lease.
        lease: LeaseId,
    },
    /// The backend cannot be reached or failed the request.
    #[error("{backend} backend unavailable: {message}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The backend answered something that breaks the engine contract
    /// (garbage bytes, an unknown reply, a malformed record).
    #[error("{backend} backend protocol error: {message}")]
    Protocol {
        /// Backend name.
        backend: &'static str,
        /// What was wrong with the answer.
        message: String,
    },
    /// The backend refused this client or node: its TLS certificate, its
    /// credentials or its cluster were not accepted, or its user lacks a
    /// permission the operation needs. Retrying with the same settings
    /// fails again.
    #[error("{backend} backend refused this node: {message}")]
    Refused {
        /// Backend name.
        backend: &'static str,
        /// Who refused, and why.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The context (or a stream) was shut down.
    #[error("the dref context was shut down")]
    Closed,
}

impl Error {
    /// Whether retrying the same operation later may succeed (the backend was
    /// unreachable or slow), as opposed to errors that will repeat.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    pub(crate) fn lock_lost(name: &str, reason: impl Into<String>) -> Self {
        Error::LockLost {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}
