//! The faults the nemesis applied, as the other checkers need them.

use std::collections::HashMap;

use super::history::{Op, Phase};
use super::ops::Paired;

/// When each node was killed (the `t` of each completed `kill`), in order.
pub(crate) struct Kills<'a>(HashMap<&'a str, Vec<u64>>);

impl<'a> Kills<'a> {
    pub(crate) fn of(paired: &Paired<'a>) -> Self {
        let mut kills: HashMap<&'a str, Vec<u64>> = HashMap::new();
        for op in &paired.ops {
            let Some(event) = op.completion() else {
                continue;
            };
            if let Op::Nemesis { action, nodes } = &event.op {
                if action == "kill" && event.phase == Phase::Ok {
                    for node in nodes {
                        kills.entry(node).or_default().push(event.t);
                    }
                }
            }
        }
        for times in kills.values_mut() {
            times.sort_unstable();
        }
        Kills(kills)
    }

    /// The first kill of `node` at or after `t`.
    pub(crate) fn first_after(&self, node: &str, t: u64) -> Option<u64> {
        let times = self.0.get(node)?;
        times.get(times.partition_point(|&k| k < t)).copied()
    }
}
