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
