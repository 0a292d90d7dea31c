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

/// A member whose data directory lacks the cluster id (its join was
/// answered too late to hear, or a crash came between joining and writing
/// the id) learns it from its leader's replication, and keeps it: without
/// it, nodes of another cluster of the same name would take it for one of
/// theirs that is still joining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_the_cluster_id_learns_it_from_its_leader() {
    use std::time::Duration;

    use crate::raft::RaftConfig;

    let dirs = [TempDir::new("learn-a"), TempDir::new("learn-b")];
    let config = |i: usize, listen: std::net::SocketAddr, peers: Vec<String>| {
        RaftConfig::new(listen)
            .peers(peers)
            .heartbeat(Duration::from_millis(50))
            .election_timeout(Duration::from_millis(500), Duration::from_millis(1000))
            .discovery_interval(Duration::from_millis(100))
            .data_dir(dirs[i].path())
    };
    let a = config(0, "127.0.0.1:0".parse().unwrap(), Vec::new())
        .connect()
        .await
        .expect("a one-node cluster");
    let b = config(
        1,
        "127.0.0.1:0".parse().unwrap(),
        vec![a.address().to_owned()],
    )
    .connect()
    .await
    .expect("a second node joins");
    let cluster_id = Identity::load(dirs[0].path()).unwrap().unwrap().cluster_id;
    assert!(cluster_id.is_some());
    let b_addr: std::net::SocketAddr = b.address().parse().unwrap();
    b.kill().await;
    drop(b);

    let mut forgotten = Identity::load(dirs[1].path()).unwrap().unwrap();
    assert_eq!(forgotten.cluster_id, cluster_id);
    forgotten.cluster_id = None;
    forgotten.save(dirs[1].path()).unwrap();
    let b = config(1, b_addr, vec![a.address().to_owned()])
        .connect()
        .await
        .expect("the member restarts");
    let learnt = async {
        while Identity::load(dirs[1].path())
            .unwrap()
            .unwrap()
            .cluster_id
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), learnt)
        .await
        .expect("the member learns the cluster id from its leader");
    assert_eq!(
        Identity::load(dirs[1].path()).unwrap().unwrap().cluster_id,
        cluster_id
    );
    b.kill().await;
    a.kill().await;
}
