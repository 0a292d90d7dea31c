//! A dref node as an OS process, for the nemesis tests: its only argument
//! is its [`NodeArgs`](dref_tests::nemesis::NodeArgs) as JSON; it then
//! serves the test's requests on stdin (see `dref_tests::nemesis`).

fn main() {
    dref_tests::os::die_with_parent();
    let Some(json) = std::env::args().nth(1) else {
        eprintln!("usage: dref-test-node '<NodeArgs as JSON>'");
        std::process::exit(2);
    };
    let args: dref_tests::nemesis::NodeArgs = match serde_json::from_str(&json) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dref-test-node: bad arguments: {e}");
            std::process::exit(2);
        }
    };
    log_to(&args.history);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(dref_tests::nemesis::run_node(args)) {
        eprintln!("dref-test-node: {e}");
        std::process::exit(1);
    }
}

/// Logs dref's events (debug and up) and openraft's (info and up) to the
/// file beside the history (`<history>.log`), for reading after a run.
fn log_to(history: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let path = format!("{}.log", history.trim_end_matches(".jsonl"));
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) => {
            eprintln!("dref-test-node: cannot open the log {path}: {e}");
            return;
        }
    };
    let filter = Targets::new()
        .with_target("dref", LevelFilter::DEBUG)
        .with_target("dref_backends", LevelFilter::DEBUG)
        .with_target("openraft", LevelFilter::INFO)
        .with_default(LevelFilter::WARN);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false);
    tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .init();
}
