//! How the durable log encodes what it stores, inside `raft-log`'s records.
//!
//! `raft-log` frames every record as a 4-byte type, our value, and a CRC32
//! over both. Our values each start with a format version byte, so that the
//! format can change later without guessing. Fixed-size values (log ids,
//! votes) need nothing more. An entry payload is variable-sized, and its
//! length decides where the record ends: a length damaged in the middle of
//! the log must not read as "the file ends here" (which the library treats
//! as a torn tail and truncates), so the length carries its own CRC32, and
//! any damage that is not a short file reads as `InvalidData`.

use std::io::{self, Read, Write};

use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use raft_log::codeq::{Decode, Encode};

use crate::raft::types::{CommandOp, TypeConfig, WireOp};

/// The format version of every value this module writes.
const VERSION: u8 = 1;

/// No payload is this large: openraft entries are single commands, limited
/// by the node's `max_write_bytes` far below this. A larger length can only
/// come from damage.
const MAX_PAYLOAD_BYTES: u32 = 256 << 20;

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn write_u64(w: &mut impl Write, v: u64) -> io::Result<()> {
    w.write_all(&v.to_be_bytes())
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_version(r: &mut impl Read, what: &str) -> io::Result<()> {
    let mut v = [0; 1];
    r.read_exact(&mut v)?;
    if v[0] != VERSION {
        return Err(invalid(format!(
            "{what} has format version {}, this build reads version {VERSION}",
            v[0]
        )));
    }
    Ok(())
}

/// An openraft log id as stored: version, term, node, index (25 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct StoredLogId(pub LogId<u64>);

impl Encode for StoredLogId {
    fn encode<W: Write>(&self, mut w: W) -> io::Result<usize> {
        w.write_all(&[VERSION])?;
        write_u64(&mut w, self.0.leader_id.term)?;
        write_u64(&mut w, self.0.leader_id.node_id)?;
        write_u64(&mut w, self.0.index)?;
        Ok(25)
    }
}

impl Decode for StoredLogId {
    fn decode<R: Read>(mut r: R) -> io::Result<Self> {
        read_version(&mut r, "a log id")?;
        let term = read_u64(&mut r)?;
        let node_id = read_u64(&mut r)?;
        let index = read_u64(&mut r)?;
        Ok(StoredLogId(LogId::new(
            CommittedLeaderId::new(term, node_id),
            index,
        )))
    }
}

/// An openraft vote as stored: version, term, node, committed (18 bytes).
/// Ordered as openraft orders votes, which the log relies on to refuse a
/// vote that goes backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub(super) struct StoredVote(pub Vote<u64>);

impl Encode for StoredVote {
    fn encode<W: Write>(&self, mut w: W) -> io::Result<usize> {
        w.write_all(&[VERSION])?;
        write_u64(&mut w, self.0.leader_id.term)?;
        write_u64(&mut w, self.0.leader_id.node_id)?;
        w.write_all(&[u8::from(self.0.committed)])?;
        Ok(18)
    }
}

impl Decode for StoredVote {
    fn decode<R: Read>(mut r: R) -> io::Result<Self> {
        read_version(&mut r, "a vote")?;
        let term = read_u64(&mut r)?;
        let node_id = read_u64(&mut r)?;
        let mut committed = [0; 1];
        r.read_exact(&mut committed)?;
        let mut vote = Vote::new(term, node_id);
        vote.committed = match committed[0] {
            0 => false,
            1 => true,
            other => return Err(invalid(format!("a vote has committed flag {other}"))),
        };
        Ok(StoredVote(vote))
    }
}

/// An entry's payload as stored: version, length, CRC32 of those five
/// bytes, then the payload in postcard (the wire format of `types.rs`).
#[derive(Clone, Debug)]
pub(super) struct StoredPayload(pub EntryPayload<TypeConfig>);

impl Encode for StoredPayload {
    fn encode<W: Write>(&self, mut w: W) -> io::Result<usize> {
        let body = postcard::to_allocvec(&self.0)
            .map_err(|e| io::Error::other(format!("cannot encode a log entry: {e}")))?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|l| *l <= MAX_PAYLOAD_BYTES)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a log entry of {} bytes is too large", body.len()),
                )
            })?;
        let mut head = [0; 5];
        head[0] = VERSION;
        head[1..].copy_from_slice(&len.to_be_bytes());
        w.write_all(&head)?;
        w.write_all(&crc32fast::hash(&head).to_be_bytes())?;
        w.write_all(&body)?;
        Ok(9 + body.len())
    }
}

impl Decode for StoredPayload {
    fn decode<R: Read>(mut r: R) -> io::Result<Self> {
        let mut head = [0; 9];
        r.read_exact(&mut head)?;
        let (prefix, crc) = head.split_at(5);
        if crc32fast::hash(prefix).to_be_bytes() != crc {
            return Err(invalid("a log entry header fails its checksum"));
        }
        if prefix[0] != VERSION {
            return Err(invalid(format!(
                "a log entry has format version {}, this build reads version {VERSION}",
                prefix[0]
            )));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        if len > MAX_PAYLOAD_BYTES {
            return Err(invalid(format!("a log entry claims {len} bytes")));
        }
        // A short read here is a record cut off by a crash: the library
        // truncates that, and only that, at the end of the log.
        let mut body = vec![0; len as usize];
        r.read_exact(&mut body)?;
        let payload = postcard::from_bytes(&body)
            .map_err(|e| invalid(format!("a log entry does not decode: {e}")))?;
        Ok(StoredPayload(payload))
    }
}

/// A rough size of a payload in memory, for the log's cache budget.
pub(super) fn payload_size(payload: &EntryPayload<TypeConfig>) -> u64 {
    let bytes = match payload {
        EntryPayload::Blank => 16,
        EntryPayload::Membership(m) => 64 * (m.nodes().count() + 1),
        EntryPayload::Normal(proposal) => proposal
            .commands
            .iter()
            .map(|command| {
                48 + match &command.op {
                    CommandOp::Write(write) => {
                        let fields = match &write.op {
                            WireOp::Put(fields) | WireOp::Patch(fields) => fields
                                .iter()
                                .map(|(name, value)| name.len() + value.len() + 16)
                                .sum(),
                            WireOp::Delete => 0,
                        };
                        write.key.len() + fields
                    }
                    CommandOp::Grant { .. } | CommandOp::Revoke { .. } => 16,
                }
            })
            .sum::<usize>(),
    };
    bytes as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_bytes() -> Vec<u8> {
        let mut out = Vec::new();
        StoredPayload(EntryPayload::Blank)
            .encode(&mut out)
            .expect("encodes");
        out
    }

    #[test]
    fn values_round_trip() {
        let id = StoredLogId(LogId::new(CommittedLeaderId::new(7, 3), 42));
        let mut buf = Vec::new();
        assert_eq!(id.encode(&mut buf).unwrap(), buf.len());
        assert_eq!(StoredLogId::decode(&buf[..]).unwrap(), id);

        let mut vote = Vote::new(9, 2);
        vote.commit();
        let mut buf = Vec::new();
        assert_eq!(StoredVote(vote).encode(&mut buf).unwrap(), buf.len());
        assert_eq!(StoredVote::decode(&buf[..]).unwrap(), StoredVote(vote));

        let buf = payload_bytes();
        assert!(matches!(
            StoredPayload::decode(&buf[..]).unwrap().0,
            EntryPayload::Blank
        ));
    }

    #[test]
    fn a_short_payload_is_a_torn_tail_and_damage_is_invalid_data() {
        let buf = payload_bytes();
        for cut in 0..buf.len() {
            let err = StoredPayload::decode(&buf[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        // A flipped bit anywhere in the header, length included, is damage,
        // never "the file ends early".
        for at in 0..9 {
            let mut bad = buf.clone();
            bad[at] ^= 0x40;
            let err = StoredPayload::decode(&bad[..]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "flip at {at}");
        }
    }

    #[test]
    fn another_version_is_refused() {
        let mut buf = Vec::new();
        StoredLogId(LogId::new(CommittedLeaderId::new(1, 1), 1))
            .encode(&mut buf)
            .unwrap();
        buf[0] = 2;
        let err = StoredLogId::decode(&buf[..]).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
