//! Benchmark helpers.
//!
//! - [`rates`]: operations per second of task loops, compared in alternating
//!   rounds.
//! - [`cluster`]: a three-node Raft cluster on loopback, and the load average.
//! - [`etcd`]: the etcd baseline, a local etcd cluster of child processes and a
//!   minimal etcd v3 client (run by hand; needs Debian's `etcd-server`, which it
//!   installs with `apt-get` when missing).

pub mod cluster;
pub mod etcd;
pub mod rates;
