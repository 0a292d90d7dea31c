//! Configuration of the Redis backend.

use std::time::Duration;

use dref::{Error, Result};

use super::RedisBackend;

/// Environment variable read by [`RedisConfig::from_env`].
pub const URL_ENV: &str = "DREF_REDIS_URL";

/// Settings of a [`RedisBackend`]. Setters consume and return the config;
/// finish with [`connect`](RedisConfig::connect).
///
/// ```no_run
/// # async fn demo() -> dref::Result<()> {
/// use std::time::Duration;
/// use dref_backends::redis::RedisConfig;
///
/// let backend = RedisConfig::new("redis://:secret@cache.internal:6379/2")
///     .prefix("billing:")
///     .command_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// let ctx = dref::Context::builder().backend(backend).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) sweep_interval: Duration,
    pub(super) batch_writes: bool,
    #[cfg_attr(not(feature = "redis-tls"), allow(dead_code))]
    pub(super) tls_ca: Option<Vec<u8>>,
}

impl RedisConfig {
    /// A config for the server at `url`: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://…` for TLS (feature `redis-tls`), or
    /// `redis+unix:///path/to/socket[?db=N]`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "dref:".to_owned(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            sweep_interval: Duration::from_millis(100),
            batch_writes: true,
            tls_ca: None,
        }
    }

    /// A config from the `DREF_REDIS_URL` environment variable.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var(URL_ENV).map_err(|_| {
            Error::Config(format!(
                "{URL_ENV} is not set (expected e.g. redis://localhost:6379/0)"
            ))
        })?;
        Ok(RedisConfig::new(url))
    }

    /// Prefix of every Redis key this backend uses (default `dref:`), so
    /// that several applications can share one Redis database without
    /// seeing each other's records.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long `connect` waits for the server to accept a connection and
    /// answer (default 5 s): a server that refuses connections or is still
    /// loading its data after a restart (`LOADING`) is retried until then.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for the answer to one command (default 5 s). A
    /// write's wait includes the time it is queued behind the script calls
    /// in flight (see "How it works" in the [module docs](super)).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How often this handle sweeps expired leases when nothing else
    /// touches the store (default 100 ms). Expiry events reach watchers at
    /// most this long after a lease's deadline, plus one round trip.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Whether writes issued concurrently through this handle share script
    /// calls (default on; see "How it works" in the
    /// [module docs](super)). Off, every write makes a call of its own,
    /// pipelined on the command connection with the others: for
    /// comparisons, or where one call per write matters more than the
    /// server's time.
    pub fn batch_writes(mut self, on: bool) -> Self {
        self.batch_writes = on;
        self
    }

    /// Trusts the CA certificates in `pem` (instead of the system's roots)
    /// for a `rediss://` URL.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// Trusts the CA certificates in the PEM file at `path` for a
    /// `rediss://` URL.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            Error::Config(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        Ok(self.tls_ca_pem(pem))
    }

    /// Connects, checking that the server answers and accepts the
    /// credentials.
    pub async fn connect(self) -> Result<RedisBackend> {
        RedisBackend::connect(self).await
    }
}
