//! `#[dref::lock]` at run time, on the in-memory backend: free functions,
//! methods, trait methods, the three ways of finding the context, `try`,
//! `timeout`, fencing tokens and lost locks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dref::{current_fencing_token, Context, FencingToken, MemoryBackend};
use dref_tests::within;
use tokio::sync::{mpsc, Notify};

/// An application error type: anything with `From<dref::Error>` works.
#[derive(Debug)]
enum JobError {
    Dref(dref::Error),
    Failed(&'static str),
}

impl From<dref::Error> for JobError {
    fn from(e: dref::Error) -> Self {
        JobError::Dref(e)
    }
}

fn nodes(n: usize) -> Vec<Context> {
    let store = MemoryBackend::new();
    (0..n)
        .map(|i| {
            Context::builder()
                .backend(store.clone())
                .node_id(format!("node-{i}"))
                .build()
        })
        .collect()
}

/// Counts the bodies running at once and remembers the highest count.
#[derive(Default)]
struct Overlap {
    running: AtomicUsize,
    max: AtomicUsize,
}

impl Overlap {
    async fn run(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[dref::lock("report", ctx = ctx)]
async fn report(ctx: Context, overlap: Arc<Overlap>) -> Result<FencingToken, JobError> {
    let _ = &ctx;
    overlap.run().await;
    current_fencing_token().ok_or(JobError::Failed("no fencing token in the body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_fn_excludes_other_nodes_and_sees_its_fencing_token() {
    let overlap = Arc::new(Overlap::default());
    let mut tasks = Vec::new();
    for ctx in nodes(3) {
        for _ in 0..3 {
            let (ctx, overlap) = (ctx.clone(), overlap.clone());
            tasks.push(tokio::spawn(report(ctx, overlap)));
        }
    }
    let mut tokens = Vec::new();
    for task in tasks {
        let token = within("a locked run", task).await.unwrap();
        tokens.push(token.unwrap_or_else(|e| panic!("{e:?}")));
    }
    assert_eq!(overlap.max.load(Ordering::SeqCst), 1, "bodies overlapped");
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 9, "every holding has its own token");
    assert_eq!(current_fencing_token(), None, "only inside the body");
}

struct Reporter {
    ctx: Context,
    runs: AtomicUsize,
}

impl Reporter {
    #[dref::lock("reporter", ctx = self.ctx)]
    async fn run(&self, label: &str) -> Result<String, JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if label.is_empty() {
            // Early returns and `?` work in the body as in any async fn.
            return Err(JobError::Failed("empty label"));
        }
        let token = current_fencing_token().ok_or(JobError::Failed("no token"))?;
        Ok(format!("{label}@{token}"))
    }
}

#[tokio::test]
async fn method_on_self() {
    let reporter = Reporter {
        ctx: Context::local(),
        runs: AtomicUsize::new(0),
    };
    let out = reporter.run("daily").await.unwrap();
    assert!(out.starts_with("daily@"), "{out}");
    assert!(matches!(
        reporter.run("").await,
        Err(JobError::Failed("empty label"))
    ));
    // The lock was released after the failing body too.
    reporter.run("again").await.unwrap();
    assert_eq!(reporter.runs.load(Ordering::SeqCst), 3);
}

trait Job {
    fn context(&self) -> &Context;

    /// A default method under the lock.
    #[dref::lock("trait-job", ctx = self.context())]
    async fn run(&self) -> Result<u32, JobError> {
        Ok(self.step().await + 1)
    }

    async fn step(&self) -> u32;
}

struct Nightly(Context);

impl Job for Nightly {
    fn context(&self) -> &Context {
        &self.0
    }

    async fn step(&self) -> u32 {
        41
    }
}

trait Cleanup {
    async fn clean(&self, ctx: &Context) -> Result<bool, JobError>;
}

impl Cleanup for Nightly {
    /// An impl method under the lock, with the context from a parameter.
    #[dref::lock("cleanup")]
    async fn clean(&self, ctx: &Context) -> Result<bool, JobError> {
        Ok(ctx.node_id() == self.0.node_id() && current_fencing_token().is_some())
    }
}

#[tokio::test]
async fn async_fn_in_traits() {
    let job = Nightly(Context::local());
    assert_eq!(job.run().await.unwrap(), 42);
    assert!(job.clean(&job.0.clone()).await.unwrap());
}

#[dref::lock("param-job")]
async fn with_param(name: &str, ctx: &dref::Context) -> Result<String, JobError> {
    Ok(format!("{name} on {}", ctx.node_id()))
}

#[tokio::test]
async fn context_from_a_parameter() {
    let ctx = Context::builder().node_id("param-node").build();
    assert_eq!(with_param("job", &ctx).await.unwrap(), "job on param-node");
    // The lock was taken through that context: it is free again now.
    ctx.try_acquire("param-job")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[dref::lock("ambient-job")]
async fn ambient_job(started: Arc<Notify>, finish: Arc<Notify>) -> Result<String, JobError> {
    started.notify_one();
    finish.notified().await;
    let ctx = Context::current()?;
    Ok(ctx.node_id().to_owned())
}

#[tokio::test]
async fn context_from_a_scope_and_from_the_default() {
    let [a, b]: [Context; 2] = nodes(2).try_into().unwrap();

    // Scoped: the job runs through node a's context...
    let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let job = tokio::spawn(
        a.clone()
            .scope(ambient_job(started.clone(), finish.clone())),
    );
    within("the scoped job to start", started.notified()).await;
    // ...so the lock is held in the store, as node b sees.
    let busy = b.try_acquire("ambient-job").await.unwrap_err();
    assert!(matches!(busy, dref::Error::LockBusy { .. }), "{busy:?}");
    finish.notify_one();
    let node = within("the scoped job", job).await.unwrap().unwrap();
    assert_eq!(node, "node-0");

    // Process-wide default (the only test in this binary that sets it).
    Context::set_default(b.clone());
    let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    finish.notify_one();
    let node = ambient_job(started, finish).await.unwrap();
    assert_eq!(node, "node-1");
    // A scope wins over the default.
    let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    finish.notify_one();
    let node = a.scope(ambient_job(started, finish)).await.unwrap();
    assert_eq!(node, "node-0");
    Context::clear_default();

    // Neither: a clear error, converted into the function's error type.
    let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    match ambient_job(started, finish).await {
        Err(JobError::Dref(dref::Error::Config(message))) => {
            assert!(message.contains("set_default"), "{message}")
        }
        other => panic!("expected a missing-context error, got {other:?}"),
    }
}

#[dref::lock("busy-job", ctx = ctx, try)]
async fn try_job(ctx: &Context) -> Result<(), JobError> {
    let _ = ctx;
    Ok(())
}

#[dref::lock("busy-job", ctx = ctx, timeout = "150ms")]
async fn patient_job(ctx: &Context) -> Result<(), JobError> {
    let _ = ctx;
    Ok(())
}

#[dref::lock("busy-job", ctx = ctx, timeout = Duration::from_secs(30))]
async fn very_patient_job(ctx: &Context) -> Result<(), JobError> {
    let _ = ctx;
    Ok(())
}

#[tokio::test]
async fn try_and_timeout() {
    let [a, b]: [Context; 2] = nodes(2).try_into().unwrap();
    try_job(&b).await.unwrap();
    patient_job(&b).await.unwrap();

    let held = a.acquire("busy-job").await.unwrap();
    match try_job(&b).await {
        Err(JobError::Dref(dref::Error::LockBusy { name })) => assert_eq!(name, "busy-job"),
        other => panic!("expected LockBusy, got {other:?}"),
    }
    match patient_job(&b).await {
        Err(JobError::Dref(dref::Error::Timeout { after, .. })) => {
            assert_eq!(after, Duration::from_millis(150))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A waiter that is patient enough gets the lock once it is released.
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { very_patient_job(&b).await }
    });
    held.release().await.unwrap();
    within("the waiting job", waiter).await.unwrap().unwrap();
}

#[dref::lock("fragile-job", ctx = ctx)]
async fn fragile_job(ctx: &Context, started: mpsc::Sender<()>) -> Result<(), JobError> {
    let _ = ctx;
    let _ = started.send(()).await;
    // Runs until cancelled by the loss of the lock.
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test]
async fn a_lost_lock_cancels_the_body_and_converts_the_error() {
    let ctx = nodes(1).remove(0);
    let (started_tx, mut started) = mpsc::channel(1);
    let job = tokio::spawn({
        let ctx = ctx.clone();
        async move { fragile_job(&ctx, started_tx).await }
    });
    within("the job to start", started.recv()).await;
    // Ending the session revokes its lease: the lock is lost.
    ctx.shutdown().await.unwrap();
    match within("the job to be cancelled", job).await.unwrap() {
        Err(JobError::Dref(dref::Error::LockLost { name, .. })) => assert_eq!(name, "fragile-job"),
        other => panic!("expected LockLost, got {other:?}"),
    }
}
