//! Real network partitions: every node process in a network namespace of
//! its own, wired to one bridge, with links cut by `iptables` rules that
//! drop packets (no resets: connections hang, as across a broken switch).
//! Needs root, `ip` and `iptables` (`scripts/ensure-iptables`).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether namespaces can be made here; `Err` says why not.
pub fn available() -> Result<(), String> {
    let unshare = Command::new("unshare").args(["-n", "true"]).status();
    if !unshare.is_ok_and(|s| s.success()) {
        return Err(
            "`unshare -n true` fails: this machine cannot make network namespaces \
                    (not root, or no CAP_SYS_ADMIN)"
                .into(),
        );
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "`{tool}` is missing: run scripts/ensure-iptables (scripts/test does)"
            ));
        }
    }
    Ok(())
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// A bridge and one namespace per node; removed on drop.
pub struct Network {
    bridge: String,
    namespaces: Vec<String>,
    subnet: u32,
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// Makes `n` namespaces on a fresh bridge and subnet.
    pub fn create(n: usize) -> Network {
        let run_id =
            std::process::id() % 10_000 * 10 + NETWORKS.fetch_add(1, Ordering::Relaxed) % 10;
        // 10.x.y.0/24, x.y from the run, away from common networks.
        let subnet = 10 << 24 | (100 + run_id / 250 % 100) << 16 | (run_id % 250) << 8;
        let bridge = format!("drefbr{run_id}");
        let network = Network {
            bridge: bridge.clone(),
            namespaces: (0..n).map(|i| format!("dref{run_id}n{i}")).collect(),
            subnet,
        };
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", network.ip(250)),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        for (i, ns) in network.namespaces.iter().enumerate() {
            let (outside, inside) = (format!("drefv{run_id}a{i}"), format!("drefv{run_id}b{i}"));
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            run(&["ip", "link", "set", &inside, "netns", ns]);
            run(&["ip", "link", "set", &outside, "master", &bridge]);
            run(&["ip", "link", "set", &outside, "up"]);
            let address = format!("{}/24", network.ip(i as u32 + 1));
            run(&[
                "ip", "netns", "exec", ns, "ip", "addr", "add", &address, "dev", &inside,
            ]);
            run(&[
                "ip", "netns", "exec", ns, "ip", "link", "set", &inside, "up",
            ]);
            run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        }
        network
    }

    fn ip(&self, host: u32) -> String {
        let a = self.subnet | host;
        format!("{}.{}.{}.{}", a >> 24, a >> 16 & 255, a >> 8 & 255, a & 255)
    }

    /// Node `i`'s address in the network.
    pub fn address(&self, i: usize) -> String {
        self.ip(i as u32 + 1)
    }

    /// The command that runs a program inside node `i`'s namespace.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespaces[i].clone(),
        ]
    }

    /// Drops every packet between node `i` and the nodes `others`, both
    /// ways (rules on both sides, as a broken link would).
    pub fn cut(&self, i: usize, others: &[usize]) {
        for j in others {
            for (from, to) in [(i, *j), (*j, i)] {
                let ns = &self.namespaces[from];
                let peer = self.address(to);
                run(&[
                    "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP",
                ]);
                run(&[
                    "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", &peer, "-j",
                    "DROP",
                ]);
            }
        }
    }

    /// Removes every rule: all links work again.
    pub fn heal(&self) {
        for ns in &self.namespaces {
            run(&["ip", "netns", "exec", ns, "iptables", "-F"]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
