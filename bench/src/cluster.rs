//! A three-node Raft cluster on loopback for the benchmarks, and the
//! machine's load.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use dref_backends::raft::{RaftBackend, RaftConfig, TlsConfig};

/// Nodes of a benchmark cluster.
pub const NODES: usize = 3;

/// Three loopback listeners, bound before any node starts so that every
/// node knows every address.
fn listeners() -> (Vec<TcpListener>, Vec<String>) {
    let listeners: Vec<TcpListener> = (0..NODES)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for a raft node"))
        .collect();
    let addrs = listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("address of a bound listener")
                .to_string()
        })
        .collect();
    (listeners, addrs)
}

/// Starts the three Raft nodes and waits until all see three voters and
/// one common leader.
pub async fn start_raft(data: Option<&Path>, tls: Option<&TlsConfig>) -> Vec<RaftBackend> {
    let (listeners, addrs) = listeners();
    let starts: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let addr = listener.local_addr().expect("address of a bound listener");
            let mut config = RaftConfig::new(addr)
                .listener(listener)
                .peers(addrs.clone());
            if let Some(data) = data {
                config = config.data_dir(data.join(format!("n{i}")));
            }
            if let Some(tls) = tls {
                config = config.tls(tls.clone());
            }
            tokio::spawn(config.connect())
        })
        .collect();
    let mut nodes = Vec::with_capacity(NODES);
    for start in starts {
        nodes.push(
            start
                .await
                .expect("a raft start-up task panicked")
                .expect("start a raft node"),
        );
    }
    let settle = async {
        loop {
            let leaders: Vec<Option<String>> = nodes.iter().map(RaftBackend::leader).collect();
            if leaders[0].is_some()
                && leaders.iter().all(|l| *l == leaders[0])
                && nodes.iter().all(|n| n.voters().len() == NODES)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settle)
        .await
        .expect("the raft cluster did not settle on 3 voters and one leader within 30 s");
    nodes
}

/// The load averages of the machine (1, 5 and 15 minutes).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
