//! Nemesis runs: dref nodes as OS processes (the `dref-test-node` binary)
//! under faults, each recording a history that [`crate::check`] verifies.
//!
//! A test starts node processes with [`NodeProcess::spawn`], drives them
//! with [`Command`]s over their stdin, applies faults (SIGKILL, SIGSTOP and
//! SIGCONT, cut links, server restarts), then collects every node's
//! history file.

mod in_process;
mod node;
mod process;
mod protocol;
mod recorder;
mod workload;

pub use in_process::InProcessNode;
pub use node::run as run_node;
pub use process::NodeProcess;
pub use protocol::{Command, NodeArgs, Status, Store};
pub use recorder::Recorder;
pub use workload::{fence_of, final_reads, Rng, Workload, WorkloadSpec};
