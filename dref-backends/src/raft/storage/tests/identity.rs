//! The node identity file.

use std::fs;

use super::TempDir;
use crate::raft::storage::{Identity, IDENTITY_FILE};

fn node(node_id: u64) -> Identity {
    Identity {
        node_id,
        cluster: "orders".into(),
        cluster_id: None,
    }
}

#[test]
fn the_cluster_id_is_kept_once_known() {
    let dir = TempDir::new("identity-id");
    let mut identity = Identity::load_or_create(dir.path(), || node(3)).unwrap();
    assert_eq!(identity.cluster_id, None);
    identity.cluster_id = Some(0x5eed);
    identity.save(dir.path()).unwrap();
    assert_eq!(Identity::load(dir.path()).unwrap(), Some(identity));
}

#[test]
fn an_identity_is_created_once_and_then_read_back() {
    let dir = TempDir::new("identity");
    let first = Identity::load_or_create(dir.path(), || node(11)).unwrap();
    assert_eq!(first, node(11));
    let again =
        Identity::load_or_create(dir.path(), || panic!("must not make a second identity")).unwrap();
    assert_eq!(again, first);
    // Written through a temporary file, which is gone.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [IDENTITY_FILE]);
}

#[test]
fn another_cluster_is_refused_with_a_clear_error() {
    let dir = TempDir::new("identity-cluster");
    let identity = Identity::load_or_create(dir.path(), || node(5)).unwrap();
    identity.check_cluster("orders").unwrap();
    let err = identity.check_cluster("payments").unwrap_err().to_string();
    assert!(
        err.contains("\"orders\"") && err.contains("\"payments\""),
        "{err}"
    );
}

#[test]
fn a_damaged_identity_is_an_error_not_a_new_node() {
    let dir = TempDir::new("identity-bad");
    node(9).save(dir.path()).unwrap();
    let path = dir.path().join(IDENTITY_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = Identity::load_or_create(dir.path(), || node(10))
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum"), "{err}");
    fs::write(&path, &bytes[..5]).unwrap();
    let err = Identity::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
}
