//! The conformance suite on the Redis backend, against a private
//! redis-server started by this test binary. Every test gets its own key
//! prefix, and every node its own backend handle (connections, pub/sub and
//! sweeper), as separate processes would.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dref::engine::Backend;
use dref_backends::redis::RedisConfig;
use dref_tests::Harness;
use futures_util::future::BoxFuture;
use support::redis_server::RedisServer;

fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start(&[]))
}

struct RedisHarness {
    url: String,
    prefix: String,
}

impl RedisHarness {
    async fn new() -> Self {
        static TESTS: AtomicU64 = AtomicU64::new(0);
        RedisHarness {
            url: server().url(),
            prefix: format!("t{}:", TESTS.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

impl Harness for RedisHarness {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        Box::pin(async move {
            let backend = RedisConfig::new(&self.url)
                .prefix(&self.prefix)
                .connect()
                .await
                .expect("connect to the test redis-server");
            Arc::new(backend) as Arc<dyn Backend>
        })
    }
}

dref_tests::conformance_suite!(RedisHarness::new);
