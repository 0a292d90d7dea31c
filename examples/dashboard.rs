//! A live dashboard of a dref store: its refs with their values, the held
//! locks with their holders and fencing tokens, the elections' leaders
//! and, on Raft, the cluster's members, updating live in the browser
//! (server-sent events fed by one prefix watch of the whole store), with
//! the process's metrics for Prometheus at `/metrics`.
//!
//! ```text
//! cargo run -p dref-examples --example dashboard                 # an in-memory demo
//! DREF_REDIS_URL=redis://localhost:6379/0 cargo run -p dref-examples --example dashboard
//! DASHBOARD_RAFT=3 cargo run -p dref-examples --example dashboard  # a 3-node Raft demo
//! ```
//!
//! It listens on `DASHBOARD_ADDR` (default `127.0.0.1:8080`) and prints
//! `dashboard on http://<addr>/` once it serves. The in-memory and Raft
//! demos (and `DASHBOARD_DEMO=1` on Redis) run a small workload of their
//! own: a counter, a lock and an election. Routes: `/` (the page),
//! `/events` (the state as server-sent events, one JSON object per
//! change), `/state` (the state now), `/metrics`; `/seen` keeps what a
//! page opened with `?report` last showed (the browser test reads it).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use dref::engine::{apply_event, Backend, Key, PrefixItem, Record};
use dref::layout::{value_json, Holding, ELECTION_PREFIX, LOCK_PREFIX, REF_PREFIX};
use dref::{Codec, Context, ManualId, MemoryBackend};
use dref_backends::raft::{RaftBackend, RaftClientConfig, RaftConfig};
use dref_backends::redis::{RedisConfig, URL_ENV};
use futures_util::{Stream, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the page shows, rebuilt at every change.
#[derive(Default)]
struct Shown {
    revision: u64,
    records: BTreeMap<Key, Record>,
    /// On Raft: the members as the cluster tells them.
    members: Option<Value>,
}

impl Shown {
    fn to_json(&self) -> Value {
        let under = |prefix: &'static str| {
            self.records
                .iter()
                .filter(move |(key, _)| key.as_str().starts_with(prefix))
        };
        let refs: Vec<Value> = under(REF_PREFIX)
            .map(|(key, record)| {
                json!({"key": key.as_str(), "version": record.version, "value": value_json(record)})
            })
            .collect();
        let holdings = |prefix| -> Vec<Value> {
            under(prefix)
                .filter_map(|(key, record)| Holding::from_record(key, record).ok())
                .map(|h| {
                    let since_ms = h
                        .since
                        .and_then(|s| s.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64);
                    json!({
                        "name": h.name, "holder": h.holder, "token": h.token.0,
                        "session": h.session.map(|l| l.0), "since_ms": since_ms,
                    })
                })
                .collect()
        };
        json!({
            "revision": self.revision,
            "refs": refs,
            "locks": holdings(LOCK_PREFIX),
            "leaders": holdings(ELECTION_PREFIX),
            "members": self.members,
        })
    }
}

/// The dashboard's shared state.
struct App {
    shown: Mutex<Shown>,
    /// The latest state, as sent to the pages.
    state: watch::Sender<Arc<String>>,
    metrics: PrometheusHandle,
    /// What a page opened with `?report` last showed.
    seen: Mutex<String>,
}

impl App {
    fn change(&self, change: impl FnOnce(&mut Shown)) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut shown);
        self.state
            .send_replace(Arc::new(shown.to_json().to_string()));
    }
}

/// Follows every record of the store: a listing, then the watch of every
/// key from its revision; after a failure, again from a new listing.
async fn follow(backend: Arc<dyn Backend>, app: Arc<App>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let listing = match backend.list(String::new()).await {
            Ok(listing) => listing,
            Err(e) => {
                eprintln!("dashboard: listing the store failed: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let revision = listing.revision;
        app.change(|shown| {
            shown.revision = revision;
            shown.records = listing.records.into_iter().collect();
        });
        let mut stream = match backend.watch_prefix(String::new(), Some(revision)).await {
            Ok(stream) => stream,
            Err(e) => {
                // (Backed off as a failed listing is: a store that lists
                // but cannot watch must not be asked in a busy loop.)
                eprintln!("dashboard: watching the store failed: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        while let Some(item) = stream.next().await {
            match item {
                Ok(PrefixItem::Event(key, event)) => app.change(|shown| {
                    let mut record = shown.records.remove(&key);
                    apply_event(&mut record, &event);
                    if let Some(record) = record {
                        shown.records.insert(key, record);
                    }
                    shown.revision = event.revision;
                }),
                Ok(PrefixItem::Resync(listing)) => app.change(|shown| {
                    shown.revision = listing.revision;
                    shown.records = listing.records.into_iter().collect();
                }),
                Err(e) => {
                    eprintln!("dashboard: the watch failed: {e}");
                    break;
                }
            }
        }
    }
}

/// On Raft: the members' state, asked of the cluster every second (it is
/// not a change stream).
async fn follow_members(addr: String, app: Arc<App>) {
    let client = loop {
        match RaftClientConfig::new(addr.clone()).connect().await {
            Ok(client) => break client,
            Err(e) => {
                eprintln!("dashboard: cannot reach the raft node {addr}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let members = match client.status().await {
            Ok(status) => {
                let lag = |applied: u64| status.last_log_index.saturating_sub(applied);
                let members: Vec<Value> = status
                    .members
                    .iter()
                    .map(|m| match &m.status {
                        // (Node ids as text: they exceed what a JSON
                        // number keeps exact in JavaScript.)
                        Ok(s) => json!({
                            "id": m.id.to_string(), "addr": m.addr, "voter": m.voter,
                            "state": s.state, "applied_index": s.applied_index,
                            "lag": lag(s.applied_index),
                        }),
                        Err(why) => json!({
                            "id": m.id.to_string(), "addr": m.addr, "voter": m.voter, "error": why,
                        }),
                    })
                    .collect();
                let leader = status.leader.map(|l| l.to_string());
                json!({"leader": leader, "term": status.term, "nodes": members})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        app.change(|shown| shown.members = Some(members));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The demo workload: a counter, a lock held now and then, an election.
async fn demo(ctx: Context) -> dref::Result<()> {
    let visits = ctx.make(ManualId::<u64>::new("visits"), 0).await?;
    let _leadership = ctx.campaign("scheduler").await?;
    let mut round = 0u64;
    loop {
        visits.update(|n| n + 1).await?;
        if round.is_multiple_of(4) {
            let guard = ctx.acquire("nightly-report").await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            guard.release().await?;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn serve_page() -> Html<&'static str> {
    Html(PAGE)
}

async fn serve_state(State(app): State<Arc<App>>) -> impl IntoResponse {
    let body = app.state.borrow().as_str().to_owned();
    ([("content-type", "application/json")], body)
}

async fn serve_events(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut rx = app.state.subscribe();
    // The state now, then every change (a page that falls behind gets the
    // latest state, which is all it shows).
    let stream = async_stream(move |tx| async move {
        loop {
            let state = rx.borrow_and_update().clone();
            if tx
                .send(SseEvent::default().data(state.as_str()))
                .await
                .is_err()
            {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream.map(Ok)).keep_alive(KeepAlive::default())
}

/// A stream fed by `produce` through a small channel.
fn async_stream<T, F, Fut>(produce: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn serve_metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn serve_seen(State(app): State<Arc<App>>) -> String {
    app.seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

async fn take_report(State(app): State<Arc<App>>, body: String) {
    *app.seen.lock().unwrap_or_else(PoisonError::into_inner) = body;
}

/// The store to show: Redis with `DREF_REDIS_URL`, a Raft cluster of
/// `DASHBOARD_RAFT` in-process nodes, else an in-memory one. Returns the
/// backend, a context for the demo workload when one runs, and on Raft a
/// node's address and the nodes (kept running).
async fn store() -> dref::Result<(
    Arc<dyn Backend>,
    Option<Context>,
    Option<(String, Vec<RaftBackend>)>,
)> {
    let demo = std::env::var("DASHBOARD_DEMO").is_ok_and(|v| v == "1");
    if let Ok(url) = std::env::var(URL_ENV) {
        let backend = RedisConfig::new(url).connect().await?;
        let ctx = demo.then(|| demo_context(Context::builder().backend(backend.clone())));
        return Ok((Arc::new(backend), ctx, None));
    }
    if let Ok(n) = std::env::var("DASHBOARD_RAFT") {
        let n: usize = n
            .parse()
            .map_err(|_| dref::Error::Config(format!("DASHBOARD_RAFT={n} is not a number")))?;
        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| dref::Error::Config(format!("cannot bind a loopback port: {e}")))?;
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()
            .map_err(|e| dref::Error::Config(format!("cannot read a port: {e}")))?;
        let peers: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        drop(listeners);
        let starts = addrs
            .iter()
            .map(|addr| RaftConfig::new(*addr).peers(peers.clone()).connect());
        let nodes: Vec<RaftBackend> = futures_util::future::try_join_all(starts).await?;
        let ctx = demo_context(nodes[0].context_builder());
        let addr = nodes[0].address().to_owned();
        return Ok((Arc::new(nodes[0].clone()), Some(ctx), Some((addr, nodes))));
    }
    let store = MemoryBackend::new();
    let ctx = demo_context(Context::builder().backend(store.clone()));
    Ok((Arc::new(store), Some(ctx), None))
}

fn demo_context(builder: dref::ContextBuilder) -> Context {
    builder.codec(Codec::Json).node_id("dashboard-demo").build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first: dref registers its handles when contexts are
    // built.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    dref::metrics::describe();
    let (backend, demo_ctx, raft) = store().await?;
    let (state, _) = watch::channel(Arc::new(String::from("{}")));
    let app = Arc::new(App {
        shown: Mutex::new(Shown::default()),
        state,
        metrics,
        seen: Mutex::new(String::new()),
    });
    tokio::spawn(follow(backend, app.clone()));
    let _nodes = match raft {
        Some((addr, nodes)) => {
            tokio::spawn(follow_members(addr, app.clone()));
            Some(nodes)
        }
        None => None,
    };
    if let Some(ctx) = demo_ctx {
        tokio::spawn(async move {
            if let Err(e) = demo(ctx).await {
                eprintln!("dashboard: the demo workload stopped: {e}");
            }
        });
    }
    let router = Router::new()
        .route("/", get(serve_page))
        .route("/state", get(serve_state))
        .route("/events", get(serve_events))
        .route("/metrics", get(serve_metrics))
        .route("/seen", get(serve_seen).post(take_report))
        .with_state(app);
    let addr = std::env::var("DASHBOARD_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("dashboard on http://{}/", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

/// The page: plain HTML and a script that renders each state it is sent.
const PAGE: &str = include_str!("dashboard.html");
