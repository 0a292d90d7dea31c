//! Mutual TLS on the Raft transport: a TLS cluster works end to end
//! (elections, replication, forwarded writes, snapshot transfer); strangers
//! (no certificate, another CA, an expired certificate, another cluster,
//! plain text, garbage) are refused with a typed error and a log line and
//! change nothing; certificates rotate on disk without a restart.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dref::engine::Key;
use dref::{Error, ManualId};
use dref_backends::raft::{RaftBackend, RaftClientConfig, RaftConfig, TlsConfig};
use dref_tests::{eventually, wait_until, within};
use support::pki::{scratch, Ca, Files, Identity};
use support::raft_cluster::{self, leader_of, listeners, test_config, wait_for_voters};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every log line of this test binary at info level and above (kept, not
/// printed).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: OnceLock<()> = OnceLock::new();
    let logs = LOGS.get_or_init(Mutex::default);
    INIT.get_or_init(|| {
        struct Capture;
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let logs = LOGS.get().expect("initialised");
                logs.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| Capture)
            .init();
    });
    logs
}

/// How many captured log lines contain every one of `texts`.
fn logged_all(texts: &[&str]) -> usize {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| texts.iter().all(|t| line.contains(t)))
        .count()
}

/// How many captured log lines contain `text`.
fn logged(text: &str) -> usize {
    logged_all(&[text])
}

/// Lines the node at `addr` logged for refused connections.
fn refusals_at(addr: &str) -> usize {
    logged_all(&["refused a raft connection", &format!("node={addr}")])
}

/// A cluster of `n` TLS nodes, each with a certificate of its own issued
/// by `ca`, written under `dir`.
async fn tls_cluster(
    dir: &std::path::Path,
    ca: &Ca,
    n: usize,
    tune: impl Fn(RaftConfig) -> RaftConfig,
) -> (Vec<RaftBackend>, Vec<String>) {
    let (sockets, addrs) = listeners(n);
    let starts = sockets.into_iter().enumerate().map(|(i, socket)| {
        let files = Files::write(dir, &format!("n{i}"), &ca.issue(&format!("n{i}")), &ca.pem);
        tune(test_config(socket, &addrs).tls(files.config())).connect()
    });
    let nodes: Vec<RaftBackend> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start a TLS node"))
        .collect();
    wait_for_voters(&nodes, n).await;
    (nodes, addrs)
}

/// A node that tries to join `addrs` with `tls` (or in plain text) and
/// must give up within a few seconds.
async fn stranger(what: &str, addrs: &[String], tls: Option<TlsConfig>, cluster: &str) -> Error {
    let (mut sockets, _) = listeners(1);
    let config = test_config(sockets.remove(0), addrs)
        .cluster_name(cluster)
        .join_timeout(Duration::from_secs(4));
    let config = match tls {
        Some(tls) => config.tls(tls),
        None => config,
    };
    match config.connect().await {
        Ok(node) => panic!("{what}: a stranger started, as node {}", node.node_id()),
        Err(e) => e,
    }
}

/// Whether the node at `addr` answers an HTTP/2 connection made over TLS
/// with `client` (its SETTINGS frame), or why not.
async fn h2_answers(addr: &str, client: rustls::ClientConfig) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("an IP name");
    let mut tls = connector
        .connect(name.to_owned(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    read_settings(&mut tls).await
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Sends the HTTP/2 preface and an empty SETTINGS frame, then reads the
/// peer's first frame header: Ok if it is SETTINGS.
async fn read_settings(
    io: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> Result<(), String> {
    io.write_all(PREFACE).await.map_err(|e| e.to_string())?;
    let mut header = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut header)).await {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) if header[3] == 4 => Ok(()),
        Ok(Ok(_)) => Err(format!("an answer that is no SETTINGS frame: {header:?}")),
    }
}

fn client_config(ca_pem: &str, identity: Option<&Identity>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.expect("a CA")).expect("a root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(id.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).expect("a key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("a client identity")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_elects_replicates_forwards_and_sends_snapshots() {
    logs();
    let dir = scratch("cluster");
    let ca = Ca::new("dref test CA");
    let (mut nodes, addrs) = tls_cluster(&dir, &ca, 3, |c| c.snapshot_after(20)).await;
    let contexts = raft_cluster::contexts(&nodes, None).await;
    let leader = leader_of(&nodes);
    let follower = (leader + 1) % 3;

    // Writes through a follower are forwarded to the leader, over TLS.
    let id = ManualId::<u64>::new("tls-counter");
    let counter = eventually("make the counter", || {
        contexts[follower].make(id.clone(), 0)
    })
    .await;
    for _ in 0..60 {
        eventually("an increment", || counter.update(|n| n + 1)).await;
    }
    let on_leader = eventually("open it on the leader", || {
        contexts[leader].make(id.clone(), 0)
    })
    .await;
    assert_eq!(on_leader.get().await.expect("a linearizable read"), 60);

    // A node joining after the log was compacted is sent the snapshot.
    wait_until("the leader to compact its log", || {
        nodes[leader].purged_index().is_some()
    })
    .await;
    let (mut sockets, _) = listeners(1);
    let files = Files::write(&dir, "late", &ca.issue("late"), &ca.pem);
    let late = test_config(sockets.remove(0), &addrs)
        .tls(files.config())
        .connect()
        .await
        .expect("a TLS node joins");
    wait_until("the late node to install the snapshot", || {
        late.snapshot_index().is_some()
    })
    .await;
    let ctx = raft_cluster::context(&late, None).await;
    let counter = eventually("open the counter on the late node", || {
        ctx.make(id.clone(), 0)
    })
    .await;
    assert_eq!(counter.get().await.expect("a read on the late node"), 60);
    nodes.push(late);
    wait_for_voters(&nodes, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_join_vote_append_or_write() {
    logs();
    let dir = scratch("strangers");
    let ca = Ca::new("dref test CA");
    let other = Ca::new("another CA");
    let (nodes, addrs) = tls_cluster(&dir, &ca, 3, |c| c).await;
    let contexts = raft_cluster::contexts(&nodes, None).await;
    let id = ManualId::<u64>::new("sentinel");
    let sentinel = eventually("make the sentinel", || contexts[0].make(id.clone(), 7)).await;
    let voters = nodes[0].voter_ids();

    // At the TLS layer, for every method at once: no certificate, one of
    // another CA, an expired one. A certificate of the cluster CA is
    // answered, which shows the probe can tell.
    let addr = &addrs[0];
    h2_answers(addr, client_config(&ca.pem, Some(&ca.issue("probe"))))
        .await
        .expect("a member's certificate is answered");
    let refused_before = refusals_at(addr);
    for (what, identity) in [
        ("no certificate", None),
        ("another CA's certificate", Some(other.issue("stranger"))),
        ("an expired certificate", Some(ca.issue_expired("stranger"))),
    ] {
        let answer = h2_answers(addr, client_config(&ca.pem, identity.as_ref())).await;
        assert!(answer.is_err(), "{what}: the node answered HTTP/2");
    }
    wait_until("a log line per refused connection", || {
        refusals_at(addr) >= refused_before + 3
    })
    .await;

    // Whole nodes: each start fails with a typed error.
    let write =
        |name: &str, identity: &Identity| Files::write(&dir, name, identity, &ca.pem).config();
    let other_ca = write("other-ca", &other.issue("stranger"));
    let err = stranger("another CA", &addrs, Some(other_ca), "dref").await;
    assert!(matches!(err, Error::Refused { .. }), "another CA: {err}");
    assert!(err.to_string().contains("TLS certificate"), "{err}");

    let expired = write("expired", &ca.issue_expired("stranger"));
    let err = stranger("expired", &addrs, Some(expired), "dref").await;
    assert!(
        matches!(err, Error::Refused { .. }),
        "an expired certificate: {err}"
    );

    let foreign = write("foreign", &ca.issue("foreign"));
    let err = stranger("another cluster", &addrs, Some(foreign), "billing").await;
    assert!(
        matches!(err, Error::Refused { .. }),
        "another cluster: {err}"
    );
    assert!(err.to_string().contains("billing"), "{err}");

    // Plain text reaches nothing, and the node sees that its peers speak
    // TLS (it must not take them for dead and form a cluster of its own).
    let err = stranger("plain text", &addrs, None, "dref").await;
    assert!(matches!(err, Error::Refused { .. }), "plain text: {err}");
    assert!(err.to_string().contains("speaks TLS"), "{err}");

    // Nothing changed, and the cluster still works.
    assert_eq!(nodes[0].voter_ids(), voters, "the membership changed");
    assert!(nodes.iter().all(|n| n.voters().len() == 3));
    assert_eq!(sentinel.get().await.expect("a read"), 7);
    eventually("a write", || sentinel.set(8)).await;
}

/// A client that is not a node (the `dref` tool's) reaches a TLS cluster
/// with a certificate of the cluster's CA, and nothing without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_client_needs_a_certificate_of_the_cluster() {
    let dir = scratch("outside-client");
    let ca = Ca::new("dref test CA");
    let other = Ca::new("another CA");
    let (nodes, addrs) = tls_cluster(&dir, &ca, 3, |c| c).await;
    let contexts = raft_cluster::contexts(&nodes, None).await;
    let id = ManualId::<u64>::new("seen-by-the-tool");
    eventually("make the ref", || contexts[0].make(id.clone(), 7)).await;

    let member = Files::write(&dir, "tool", &ca.issue("tool"), &ca.pem).config();
    let client = RaftClientConfig::new(addrs[1].clone())
        .tls(member)
        .connect()
        .await
        .expect("a client with the cluster's certificate");
    let status = client.status().await.unwrap();
    assert_eq!(status.members.len(), 3);
    assert!(
        status.members.iter().all(|m| m.status.is_ok()),
        "{status:?}"
    );
    let record = client
        .read(&Key::new("ref/seen-by-the-tool"))
        .await
        .unwrap();
    assert!(record.is_some());

    let foreign = Files::write(&dir, "foreign-tool", &other.issue("tool"), &ca.pem).config();
    for (what, config) in [
        ("plain text", RaftClientConfig::new(addrs[1].clone())),
        (
            "another CA's certificate",
            RaftClientConfig::new(addrs[1].clone()).tls(foreign),
        ),
    ] {
        let config = config.timeout(Duration::from_secs(3));
        match config.connect().await {
            Ok(_) => panic!("{what}: the client was answered"),
            Err(e) => assert!(!matches!(e, Error::Protocol { .. }), "{what}: {e}"),
        }
    }
}

/// The `dref` tool reads a TLS cluster with the `DREF_TLS_*` settings of
/// a certificate of the cluster's CA, and says clearly why not with
/// another CA's or without TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_needs_the_clusters_certificate_too() {
    let dir = scratch("tool");
    let ca = Ca::new("dref test CA");
    let other = Ca::new("another CA");
    let (_nodes, addrs) = tls_cluster(&dir, &ca, 3, |c| c).await;
    let member = Files::write(&dir, "tool", &ca.issue("tool"), &ca.pem);
    let foreign = Files::write(&dir, "foreign-tool", &other.issue("tool"), &ca.pem);
    let run = |files: Option<&Files>| {
        let mut command = tokio::process::Command::new(support::tool::dref_binary());
        command
            .args(["--raft", &addrs[0], "--timeout", "5", "status"])
            .env_remove("DREF_TLS_CERT")
            .env_remove("DREF_TLS_KEY")
            .env_remove("DREF_TLS_CA");
        if let Some(files) = files {
            command
                .env("DREF_TLS_CERT", &files.cert)
                .env("DREF_TLS_KEY", &files.key)
                .env("DREF_TLS_CA", &files.ca);
        }
        async move {
            let output = within("the tool", command.output())
                .await
                .expect("the tool ran");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status.code(), stderr)
        }
    };
    let (status, stderr) = run(Some(&member)).await;
    assert_eq!(status, Some(0), "{stderr}");
    for (what, files) in [("another CA", Some(&foreign)), ("plain text", None)] {
        let (status, stderr) = run(files).await;
        assert!(matches!(status, Some(2 | 3)), "{what}: {status:?} {stderr}");
        assert!(stderr.starts_with("dref: "), "{what}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_and_garbage_are_refused_without_harm() {
    logs();
    let dir = scratch("garbage");
    let ca = Ca::new("dref test CA");
    let (nodes, addrs) = tls_cluster(&dir, &ca, 3, |c| c).await;
    let contexts = raft_cluster::contexts(&nodes, None).await;
    let before = refusals_at(&addrs[1]);

    // A plain-text HTTP/2 client gets no HTTP/2 answer.
    let mut tcp = tokio::net::TcpStream::connect(&addrs[1])
        .await
        .expect("connect");
    let answer = read_settings(&mut tcp).await;
    assert!(answer.is_err(), "plain text was answered");

    // Garbage as a TLS hello, and a connection that never says anything
    // (kept open meanwhile: it must not stall the others).
    let mut garbage = tokio::net::TcpStream::connect(&addrs[1])
        .await
        .expect("connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("send garbage");
    garbage.write_all(&[0x42; 4096]).await.ok();
    let _silent = tokio::net::TcpStream::connect(&addrs[1])
        .await
        .expect("connect");
    wait_until("the refusals to be logged", || {
        refusals_at(&addrs[1]) >= before + 2
    })
    .await;

    h2_answers(&addrs[1], client_config(&ca.pem, Some(&ca.issue("probe"))))
        .await
        .expect("a member is answered beside a silent connection");
    let id = ManualId::<u64>::new("after-garbage");
    let r = eventually("make a ref", || contexts[1].make(id.clone(), 1)).await;
    eventually("a write", || r.set(2)).await;
    assert_eq!(r.get().await.expect("a read"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    logs();
    let dir = scratch("rotation");
    let old = Ca::new("old CA");
    let new = Ca::new("new CA");
    let (nodes, addrs) = tls_cluster(&dir, &old, 3, |c| c).await;
    let contexts = raft_cluster::contexts(&nodes, None).await;

    // A node of the new CA only is refused while the cluster trusts the
    // old one alone.
    let newcomer = |name: &str| {
        Files::write(&dir, name, &new.issue(name), &new.pem)
            .config()
            .reload_interval(Duration::from_secs(60))
    };
    let err = stranger("the new CA", &addrs, Some(newcomer("early")), "dref").await;
    assert!(matches!(err, Error::Refused { .. }), "{err}");

    // A change that does not load (a key that does not match the
    // certificate) keeps the current certificates in use.
    let half = old.issue("n0");
    let files = Files::write(&dir, "n0", &half, &old.pem);
    std::fs::write(&files.key, old.issue("n0").key).expect("write a mismatched key");
    wait_until("the bad change to be reported", || {
        logged("do not load; keeping the current certificates") >= 1
    })
    .await;
    h2_answers(
        &addrs[0],
        client_config(&old.pem, Some(&old.issue("probe"))),
    )
    .await
    .expect("the node still serves with its current certificate");

    // Rotate every member on disk: both CAs trusted, certificates of the
    // new one.
    let bundle = format!("{}{}", old.pem, new.pem);
    for i in 0..3 {
        Files::write(
            &dir,
            &format!("n{i}"),
            &new.issue(&format!("n{i}")),
            &bundle,
        );
    }
    // The members now present new certificates, and take them from peers.
    within("the members to load the new certificates", async {
        loop {
            let all = futures_util::future::join_all(
                addrs
                    .iter()
                    .map(|a| h2_answers(a, client_config(&new.pem, Some(&new.issue("probe"))))),
            )
            .await;
            if all.iter().all(Result::is_ok) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (mut sockets, _) = listeners(1);
    let joined = test_config(sockets.remove(0), &addrs)
        .tls(newcomer("late"))
        .connect()
        .await
        .expect("a node of the new CA joins after the rotation");
    let mut all = nodes;
    all.push(joined);
    wait_for_voters(&all, 4).await;

    let id = ManualId::<u64>::new("after-rotation");
    let r = eventually("make a ref", || contexts[0].make(id.clone(), 1)).await;
    eventually("a write", || r.set(5)).await;
    let ctx = raft_cluster::context(&all[3], None).await;
    let seen = eventually("open it on the new node", || ctx.make(id.clone(), 0)).await;
    assert_eq!(seen.get().await.expect("a read"), 5);
    assert!(logged("raft TLS certificates changed on disk") >= 3);
}

/// The certificates `scripts/make-certs` makes (openssl, as an operator
/// would) form a TLS cluster, checked by address and by the shared name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_script_form_a_cluster() {
    let dir = scratch("script");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs");
    let status = std::process::Command::new(script)
        .args(["--dir"])
        .arg(dir.path())
        .args(["n0", "n1", "n2"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/make-certs (it needs openssl)");
    assert!(status.success(), "scripts/make-certs failed");
    let (sockets, addrs) = listeners(3);
    let starts = sockets.into_iter().enumerate().map(|(i, socket)| {
        let tls = TlsConfig::from_files(
            dir.join(format!("n{i}.pem")),
            dir.join(format!("n{i}.key")),
            dir.join("ca.pem"),
        );
        // One node checks its peers by the shared name, as under Compose.
        let tls = if i == 0 {
            tls.peer_name("dref-example")
        } else {
            tls
        };
        test_config(socket, &addrs).tls(tls).connect()
    });
    let nodes: Vec<RaftBackend> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start a node with the script's certificates"))
        .collect();
    wait_for_voters(&nodes, 3).await;
    let contexts = raft_cluster::contexts(&nodes, None).await;
    let id = ManualId::<u64>::new("scripted");
    let r = eventually("make a ref", || contexts[0].make(id.clone(), 1)).await;
    eventually("a write", || r.set(3)).await;
    let seen = eventually("open it elsewhere", || contexts[2].make(id.clone(), 0)).await;
    assert_eq!(seen.get().await.expect("a read"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_the_node_at_start() {
    let dir = scratch("settings");
    let ca = Ca::new("dref test CA");
    let good = Files::write(&dir, "good", &ca.issue("good"), &ca.pem);
    let start = |tls: Option<TlsConfig>, required: bool| {
        let (mut sockets, _) = listeners(1);
        let config = test_config(sockets.remove(0), &[]).tls_required(required);
        let config = match tls {
            Some(tls) => config.tls(tls),
            None => config,
        };
        config.connect()
    };
    let config_error = |what: &str, result: dref::Result<RaftBackend>, names: &str| match result {
        Err(Error::Config(message)) => assert!(message.contains(names), "{what}: {message}"),
        Err(other) => panic!("{what}: not a configuration error: {other}"),
        Ok(_) => panic!("{what}: the node started"),
    };

    let missing = TlsConfig::from_files(dir.join("none.pem"), &good.key, &good.ca);
    config_error(
        "a missing certificate",
        start(Some(missing), false).await,
        "none.pem",
    );
    let unreadable = TlsConfig::from_files(&good.cert, dir.join("none.key"), &good.ca);
    config_error(
        "a missing key",
        start(Some(unreadable), false).await,
        "none.key",
    );
    let pem = |cert: &str, key: &str, ca: &str| {
        TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca.as_bytes())
    };
    let id = ca.issue("a");
    config_error(
        "garbage as the key",
        start(Some(pem(&id.cert, "not a key", &ca.pem)), false).await,
        "private key",
    );
    config_error(
        "a key of another certificate",
        start(Some(pem(&id.cert, &ca.issue("b").key, &ca.pem)), false).await,
        "do not make",
    );
    config_error(
        "no CA",
        start(Some(pem(&id.cert, &id.key, "")), false).await,
        "CA file holds no certificate",
    );
    config_error(
        "an invalid peer name",
        start(Some(good.config().peer_name("not a name!")), false).await,
        "peer name",
    );
    config_error(
        "TLS required but not set",
        start(None, true).await,
        "TLS is required",
    );
}
