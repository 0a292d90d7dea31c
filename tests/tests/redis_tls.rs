//! The Redis backend over TLS, trusting a private CA.

mod support;

use std::path::Path;
use std::process::Command;

use dref::{Context, Error, ManualId};
use dref_backends::redis::RedisConfig;
use dref_tests::scratch::ScratchDir;
use support::redis_server::RedisServer;

/// A throwaway CA and a server certificate for 127.0.0.1, made with the
/// openssl command-line tool.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl tool is needed for the TLS test");
        assert!(status.success(), "openssl {args:?} failed");
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=dref test CA",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "server.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca() {
    let certs = ScratchDir::new("redis-tls");
    make_certificates(&certs);
    let server = RedisServer::start_tls(&certs);
    let url = format!("rediss://127.0.0.1:{}/0", server.port);

    let backend = RedisConfig::new(&url)
        .tls_ca_file(certs.join("ca.crt"))
        .unwrap()
        .prefix("tls:")
        .connect()
        .await
        .unwrap();
    let ctx = Context::builder().backend(backend).build();
    let r = ctx
        .make(ManualId::<String>::new("secret"), "over tls".into())
        .await
        .unwrap();
    let mut values = r.values();
    r.set("still tls".into()).await.unwrap();
    use futures_util::StreamExt;
    let seen = dref_tests::within("a watched change over TLS", values.next()).await;
    assert_eq!(seen.unwrap().unwrap().as_deref(), Some("still tls"));
    ctx.lock("tls-lock", async {}).await.unwrap();

    // Without the CA the server's certificate is not trusted.
    let err = RedisConfig::new(&url)
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Config(_)),
        "{err}"
    );
    let err = RedisConfig::new(&url)
        .tls_ca_file(certs.join("missing.crt"))
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}
