//! `dref`: reads, writes and watches dref's records, locks and leaders in
//! a Redis store, as `etcdctl` and `redis-cli` do for theirs.
//!
//! ```text
//! dref --redis redis://localhost:6379/0 get ref/counter
//! dref set ref/counter 42            # DREF_REDIS_URL names the server
//! dref watch --prefix ref/           # one line per change
//! dref locks                         # held locks: holder, token, session, age
//! dref leader scheduler
//! dref status --json
//! ```
//!
//! Exit status: 0 on success; 1 when what was asked for is not there (no
//! record, no leader); 2 for a usage or configuration error (the store
//! refused the tool's cluster or credentials included); 3 when the store
//! failed (unreachable, or data it holds is malformed).

mod commands;
mod render;
mod store;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dref::Error;
use dref_backends::raft::{RaftClientConfig, CLUSTER_NAME_ENV};
use dref_backends::redis::{RedisConfig, URL_ENV};
use store::Store;

/// Reads, writes and watches dref's records, locks and leaders.
#[derive(Parser)]
#[command(name = "dref", version, about, after_help = EXIT_STATUS)]
struct Cli {
    /// The Redis server, as a `redis://` or `rediss://` URL.
    #[arg(long, global = true, env = URL_ENV, value_name = "URL", conflicts_with = "raft")]
    redis: Option<String>,
    /// A node of a Raft cluster, as `host:port`: the tool is a client of
    /// the cluster, never a member (over TLS with the DREF_TLS_* settings
    /// when they are set).
    #[arg(long, global = true, env = "DREF_RAFT_NODE", value_name = "HOST:PORT")]
    raft: Option<String>,
    /// The Raft cluster's name.
    #[arg(long, global = true, default_value = "dref", env = CLUSTER_NAME_ENV)]
    cluster: String,
    /// The namespace (key prefix) of the dref store on a Redis server.
    #[arg(
        long,
        global = true,
        default_value = "dref:",
        env = "DREF_REDIS_PREFIX"
    )]
    namespace: String,
    /// How long to wait for the server, in seconds.
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECONDS")]
    timeout: f64,
    /// Print JSON (one object per line for `watch`) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_STATUS: &str = "Exit status: 0 on success; 1 when what was asked for is not there \
(no record, no leader); 2 for a usage or configuration error; 3 when the store failed \
(unreachable, or data it holds is malformed).";

#[derive(Subcommand)]
enum Command {
    /// Prints the value of the record under KEY (`ref/<id>` for a ref).
    Get {
        /// The record's key.
        key: String,
    },
    /// Writes VALUE, as JSON, into the ref under KEY. The ref must exist
    /// and use the JSON codec; for a `#[distributed]` struct, VALUE is an
    /// object with every field.
    Set {
        /// The ref's key (`ref/<id>`).
        key: String,
        /// The new value, as JSON.
        value: String,
    },
    /// Lists the records under PREFIX (every record for ""): key, version
    /// and the revision of their last change.
    List {
        /// The key prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Prints a line for every change of KEY (or of every key under it,
    /// with --prefix) until interrupted.
    Watch {
        /// The key, or with --prefix the key prefix.
        key: String,
        /// Follow every key under KEY.
        #[arg(long)]
        prefix: bool,
    },
    /// Lists the held locks: name, holder node, fencing token, session,
    /// age.
    Locks,
    /// Prints the leader of the election NAME: node, fencing token, age.
    Leader {
        /// The election's name.
        name: String,
    },
    /// Prints the server's version, the namespace and its revision.
    Status,
}

/// A failure and the exit status it ends the program with.
pub struct Failure {
    /// The exit status.
    pub status: u8,
    /// What to tell the user (nothing when empty).
    pub message: String,
}

impl Failure {
    /// What was asked for is not there.
    pub fn missing(message: impl Into<String>) -> Failure {
        Failure {
            status: 1,
            message: message.into(),
        }
    }

    /// A request the tool cannot carry out as given.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: 2,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let status = match error {
            // Settings that will not work when tried again.
            Error::Config(_) | Error::Refused { .. } => 2,
            _ => 3,
        };
        Failure {
            status,
            message: error.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dref: cannot start: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("dref: {}", failure.message);
            }
            ExitCode::from(failure.status)
        }
    }
}

async fn connect(cli: &Cli, timeout: Duration) -> Result<Store, Failure> {
    if let Some(node) = &cli.raft {
        let client = RaftClientConfig::new(node.clone())
            .cluster_name(cli.cluster.clone())
            .timeout(timeout)
            .tls_from_env()?
            .connect()
            .await?;
        return Ok(Store::Raft(client));
    }
    let url = cli.redis.clone().ok_or_else(|| {
        Failure::usage(format!(
            "no store given: pass --redis URL (or set {URL_ENV}) or --raft HOST:PORT"
        ))
    })?;
    let backend = RedisConfig::new(url)
        .prefix(cli.namespace.clone())
        .connect_timeout(timeout)
        .command_timeout(timeout)
        .connect()
        .await?;
    Ok(Store::Redis(backend))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            Failure::usage(format!(
                "--timeout {} is not a positive number of seconds",
                cli.timeout
            ))
        })?;
    let store = connect(&cli, timeout).await?;
    let backend = &store;
    let out = commands::Output { json: cli.json };
    match cli.command {
        Command::Get { key } => commands::get(backend, &out, &key).await,
        Command::Set { key, value } => commands::set(backend, &out, &key, &value).await,
        Command::List { prefix } => commands::list(backend, &out, &prefix).await,
        Command::Watch { key, prefix } => commands::watch(backend, &out, &key, prefix).await,
        Command::Locks => commands::locks(backend, &out).await,
        Command::Leader { name } => commands::leader(backend, &out, &name).await,
        Command::Status => commands::status(backend, &out).await,
    }
}
