//! The node identity file: which node of which cluster a data directory
//! belongs to, so that a restarted replica comes back as itself.

use std::fs;
use std::io;
use std::path::Path;

use openraft::{ErrorSubject, ErrorVerb, StorageError};

use super::dir::{io_error, refusal, replace_file};

/// The file name of the identity in a data directory.
pub const IDENTITY_FILE: &str = "identity";

const MAGIC: &[u8; 8] = b"DREFNODE";
const VERSION: u8 = 1;
/// A cluster name longer than this is not a name.
const MAX_CLUSTER_BYTES: usize = 4096;

/// Who this data directory belongs to: a node id within a cluster. Written
/// once, when the directory is first used, and read at every start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The node's Raft id.
    pub node_id: u64,
    /// The name of the cluster the node belongs to.
    pub cluster: String,
    /// The id the cluster's first node drew when it formed the cluster,
    /// once this node knows it (it formed or joined the cluster): two
    /// clusters of one name are told apart by it.
    pub cluster_id: Option<u64>,
}

impl Identity {
    /// Reads the identity of `dir`, or `None` if it has none yet. A file
    /// that is damaged or of an unknown format is an error, never a new
    /// identity: guessing would make this node someone else.
    pub fn load(dir: &Path) -> Result<Option<Identity>, StorageError<u64>> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io_error(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    "read the node identity",
                    &path,
                    &e,
                ))
            }
        };
        decode(&bytes).map(Some).map_err(|why| {
            refusal(
                ErrorSubject::Store,
                ErrorVerb::Read,
                format!("the node identity {} is unusable: {why}", path.display()),
            )
        })
    }

    /// Writes this identity into `dir`, replacing any other atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StorageError<u64>> {
        let path = dir.join(IDENTITY_FILE);
        if self.cluster.len() > MAX_CLUSTER_BYTES {
            return Err(refusal(
                ErrorSubject::Store,
                ErrorVerb::Write,
                format!("a cluster name of {} bytes is too long", self.cluster.len()),
            ));
        }
        replace_file(&path, &encode(self)).map_err(|e| {
            io_error(
                ErrorSubject::Store,
                ErrorVerb::Write,
                "write the node identity",
                &path,
                &e,
            )
        })
    }

    /// The identity of `dir`: the one stored there, or else `fresh()`,
    /// stored before it is returned (so a crash right after cannot give
    /// the directory a second identity). Call it while holding the
    /// directory's [`Storage`](super::Storage), whose lock keeps other
    /// processes out.
    pub fn load_or_create(
        dir: &Path,
        fresh: impl FnOnce() -> Identity,
    ) -> Result<Identity, StorageError<u64>> {
        if let Some(identity) = Identity::load(dir)? {
            return Ok(identity);
        }
        let identity = fresh();
        identity.save(dir)?;
        Ok(identity)
    }

    /// Refuses an identity of another cluster: a data directory copied or
    /// mounted into the wrong cluster must not join it with a foreign log.
    pub fn check_cluster(&self, cluster: &str) -> Result<(), StorageError<u64>> {
        if self.cluster == cluster {
            return Ok(());
        }
        Err(refusal(
            ErrorSubject::Store,
            ErrorVerb::Read,
            format!(
                "this data directory belongs to node {} of cluster {:?}, not of cluster {cluster:?}; \
                 use another directory, or empty this one to join as a new node",
                self.node_id, self.cluster
            ),
        ))
    }
}

/// magic, version, node id (LE u64), cluster id (LE u64, 0 for none),
/// cluster name length (LE u32), name bytes, CRC32 of everything before
/// it (LE u32).
fn encode(identity: &Identity) -> Vec<u8> {
    let mut out = Vec::with_capacity(33 + identity.cluster.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&identity.node_id.to_le_bytes());
    out.extend_from_slice(&identity.cluster_id.unwrap_or(0).to_le_bytes());
    // Bounded by MAX_CLUSTER_BYTES in `save`.
    out.extend_from_slice(&(identity.cluster.len() as u32).to_le_bytes());
    out.extend_from_slice(identity.cluster.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<Identity, String> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .filter(|l| *l >= 29)
        .ok_or_else(|| format!("{} bytes is too short", bytes.len()))?;
    let (body, crc) = bytes.split_at(body_len);
    if &body[..8] != MAGIC {
        return Err("it is not a dref node identity".into());
    }
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("it fails its checksum".into());
    }
    if body[8] != VERSION {
        return Err(format!(
            "it has format version {}, this build reads version {VERSION}",
            body[8]
        ));
    }
    let mut node_id = [0; 8];
    node_id.copy_from_slice(&body[9..17]);
    let mut cluster_id = [0; 8];
    cluster_id.copy_from_slice(&body[17..25]);
    let mut len = [0; 4];
    len.copy_from_slice(&body[25..29]);
    let cluster = &body[29..];
    if cluster.len() != u32::from_le_bytes(len) as usize {
        return Err("its length fields disagree".into());
    }
    let cluster = std::str::from_utf8(cluster)
        .map_err(|_| "its cluster name is not UTF-8".to_string())?
        .to_owned();
    Ok(Identity {
        node_id: u64::from_le_bytes(node_id),
        cluster,
        cluster_id: Some(u64::from_le_bytes(cluster_id)).filter(|id| *id != 0),
    })
}
