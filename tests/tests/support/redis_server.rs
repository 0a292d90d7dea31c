//! Private redis-server processes for tests: each on a free loopback port,
//! without persistence unless asked, and killed when the test process exits.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A redis-server child process.
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

static SERVERS: AtomicU64 = AtomicU64::new(0);

impl RedisServer {
    /// Starts a server with `extra` arguments (e.g. `--requirepass x`).
    pub fn start(extra: &[&str]) -> RedisServer {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dref-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.launch();
        server
    }

    /// Starts a server that speaks only TLS on its port, with the
    /// certificate and key in `certs` (`server.crt`, `server.key`, `ca.crt`).
    pub fn start_tls(certs: &std::path::Path) -> RedisServer {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dref-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let port = free_port();
        let file = |name: &str| certs.join(name).display().to_string();
        let mut server = RedisServer {
            port,
            dir,
            args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                file("server.crt"),
                "--tls-key-file".into(),
                file("server.key"),
                "--tls-ca-cert-file".into(),
                file("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            child: None,
        };
        server.launch();
        server
    }

    /// Starts the process (again, after [`kill`](Self::kill)) on the same
    /// port and directory.
    pub fn launch(&mut self) {
        which_redis();
        let mut args = vec![
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--save".into(),
            "".into(),
        ];
        if !self.args.iter().any(|a| a == "--appendonly") {
            args.extend(["--appendonly".into(), "no".into()]);
        }
        args.extend(self.args.iter().cloned());
        // A watchdog shell kills the server when this test process exits,
        // even if it dies without running destructors (a server in a
        // `static` never drops), and then removes the data directory.
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "redis-server {args} & r=$!; trap 'kill $r 2>/dev/null; wait $r; exit 0' TERM; \
             while kill -0 {me} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; kill $r 2>/dev/null; wait $r; \
             if ! kill -0 {me} 2>/dev/null; then rm -rf '{dir}'; fi",
            args = quoted.join(" "),
            me = std::process::id(),
            dir = self.dir.display(),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server (SIGTERM to the watchdog, which kills the server).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails loudly when redis-server is missing: Redis tests never skip.
fn which_redis() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "redis-server is not installed: run scripts/ensure-redis (scripts/test does) \
         — the Redis tests need a real server and never skip"
    );
}
