//! A generated test of the linearizability checker at the size of a run:
//! random histories that are linearizable by construction must pass, in
//! seconds, and the same histories with stale reads planted on a few keys
//! must fail on exactly those keys.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::history::{sort_by_time, Event, Op, Phase};
use super::testing::Rng;
use super::{check_all, CheckOptions, Checker, ViolationKind};

/// How a generated operation completed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Completion {
    Ok,
    Fail,
    Info,
    Never,
}

/// One generated operation, with its linearization point.
#[derive(Clone, Debug)]
struct Generated {
    process: u64,
    node: String,
    invoked: u64,
    returned: u64,
    /// As completed (with results).
    op: Op,
    completion: Completion,
}

impl Generated {
    fn is_determinate(&self) -> bool {
        matches!(self.completion, Completion::Ok | Completion::Fail)
    }

    /// The value a definite, state-changing operation left.
    fn wrote(&self) -> Option<u64> {
        match (&self.op, self.completion) {
            (Op::Write { value, .. }, Completion::Ok) => Some(*value),
            (Op::Cas { to, .. }, Completion::Ok) => Some(*to),
            (Op::Incr { value, .. }, Completion::Ok) => *value,
            _ => None,
        }
    }
}

/// The shape of a generated run.
struct Shape {
    keys: usize,
    ops_per_key: usize,
    processes: u64,
    indeterminate_percent: u64,
}

/// Per key, operations of `processes` clients on a sequential register:
/// each takes effect at a random point of its interval, and its result is
/// what the register gave at that point, so the history is linearizable.
fn generate(seed: u64, shape: &Shape) -> Vec<Vec<Generated>> {
    let mut rng = Rng(seed | 1);
    let mut next_process = 0;
    (0..shape.keys)
        .map(|k| generate_key(&mut rng, &format!("k{k}"), shape, &mut next_process))
        .collect()
}

fn generate_key(rng: &mut Rng, key: &str, shape: &Shape, next_process: &mut u64) -> Vec<Generated> {
    // When each client is next free, and its process id (a client whose
    // operation never completed comes back as a new process).
    let mut free_at: Vec<u64> = (0..shape.processes).map(|_| rng.below(10_000)).collect();
    let mut ids: Vec<u64> = (0..shape.processes)
        .map(|_| {
            *next_process += 1;
            *next_process
        })
        .collect();
    let mut timed = Vec::with_capacity(shape.ops_per_key);
    for _ in 0..shape.ops_per_key {
        let (client, _) = free_at
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .unwrap_or((0, &0));
        let invoked = free_at[client];
        let duration = 1_000 + rng.below(50_000);
        let at = invoked + rng.below(duration);
        let returned = invoked + duration;
        free_at[client] = returned + rng.below(20_000);
        timed.push((client, invoked, at, returned));
    }
    timed.sort_by_key(|&(_, _, at, _)| at);
    let mut state = 0u64;
    let mut fresh = 0u64;
    let mut ops: Vec<Generated> = Vec::with_capacity(timed.len());
    // In order of the linearization points: the register at each is what
    // the operation sees.
    for (client, invoked, _, returned) in timed {
        let indeterminate = rng.percent(shape.indeterminate_percent);
        let takes_effect = !indeterminate || rng.percent(50);
        // Distinct written values, multiples of 1000, so increments
        // (+1 each) never reach another written value.
        let mut fresh_value = || {
            fresh += 1;
            fresh * 1000
        };
        let (op, mut completion) = match rng.below(100) {
            0..40 => (
                Op::Read {
                    key: key.into(),
                    value: Some(state),
                },
                Completion::Ok,
            ),
            40..65 => {
                let value = fresh_value();
                if takes_effect {
                    state = value;
                }
                (
                    Op::Write {
                        key: key.into(),
                        value,
                    },
                    Completion::Ok,
                )
            }
            65..85 => {
                let from = if rng.percent(60) { state } else { state + 1 };
                let to = fresh_value();
                let swaps = from == state;
                if swaps && takes_effect {
                    state = to;
                }
                let completion = if swaps {
                    Completion::Ok
                } else {
                    Completion::Fail
                };
                (
                    Op::Cas {
                        key: key.into(),
                        from,
                        to,
                    },
                    completion,
                )
            }
            _ => {
                if takes_effect {
                    state += 1;
                }
                let value = Some(state);
                (
                    Op::Incr {
                        key: key.into(),
                        value,
                    },
                    Completion::Ok,
                )
            }
        };
        if indeterminate {
            completion = if rng.percent(50) {
                Completion::Info
            } else {
                Completion::Never
            };
        }
        ops.push(Generated {
            process: client as u64,
            node: format!("n{}", client % 3),
            invoked,
            returned,
            op,
            completion,
        });
    }
    // Process ids in time order per client.
    ops.sort_by_key(|g| g.invoked);
    for g in &mut ops {
        let client = g.process as usize;
        g.process = ids[client];
        if g.completion == Completion::Never {
            *next_process += 1;
            ids[client] = *next_process;
        }
    }
    ops
}

/// The events of the generated operations, in time order.
fn events(keys: &[Vec<Generated>]) -> Vec<Event> {
    let mut events = Vec::new();
    for g in keys.iter().flatten() {
        let as_invoked = match &g.op {
            Op::Read { key, .. } => Op::Read {
                key: key.clone(),
                value: None,
            },
            Op::Incr { key, .. } => Op::Incr {
                key: key.clone(),
                value: None,
            },
            op => op.clone(),
        };
        let event = |t, phase, op| Event {
            process: g.process,
            node: g.node.clone(),
            t,
            phase,
            op,
        };
        events.push(event(g.invoked, Phase::Invoke, as_invoked.clone()));
        let phase = match g.completion {
            Completion::Ok => Phase::Ok,
            Completion::Fail => Phase::Fail,
            Completion::Info => Phase::Info,
            Completion::Never => continue,
        };
        let completed = if g.completion == Completion::Info {
            as_invoked
        } else {
            g.op.clone()
        };
        events.push(event(g.returned, phase, completed));
    }
    sort_by_time(&mut events);
    events
}

/// Makes one definite read of the key return a value that was certainly
/// overwritten before the read began: a write W1 returned before another
/// definite write W2 was invoked, and W2 returned before the read was
/// invoked. Returns whether it found such a read.
fn plant_stale_read(ops: &mut [Generated]) -> bool {
    let n = ops.len();
    for r in (n / 2..n).rev() {
        if !matches!(ops[r].op, Op::Read { .. }) || !ops[r].is_determinate() {
            continue;
        }
        let read_invoked = ops[r].invoked;
        let overwrite = ops
            .iter()
            .filter(|w2| w2.wrote().is_some() && w2.returned < read_invoked)
            .map(|w2| w2.invoked)
            .max();
        let Some(overwritten_by) = overwrite else {
            continue;
        };
        let stale = ops.iter().find_map(|w1| match (&w1.op, w1.completion) {
            (Op::Write { value, .. }, Completion::Ok) if w1.returned < overwritten_by => {
                Some(*value)
            }
            _ => None,
        });
        if let (Some(stale), Op::Read { value, .. }) = (stale, &mut ops[r].op) {
            *value = Some(stale);
            return true;
        }
    }
    false
}

#[test]
fn a_generated_history_passes_and_fails_on_exactly_the_keys_with_stale_reads() {
    let shape = Shape {
        keys: 50,
        ops_per_key: 210,
        processes: 10,
        indeterminate_percent: 3,
    };
    let mut keys = generate(0x00d0_f00d, &shape);
    let history = events(&keys);
    let ops = keys.iter().map(Vec::len).sum::<usize>();
    assert!(ops >= 10_000);

    let started = Instant::now();
    let report = check_all(&history, &CheckOptions::default());
    let passed_in = started.elapsed();
    assert!(report.is_ok(), "{report}");
    let register = report.checker(Checker::Register).map(|c| c.counts);
    assert_eq!(register.map(|c| c.subjects), Some(shape.keys));

    let planted: BTreeSet<String> = [3, 11, 19, 27, 41]
        .into_iter()
        .filter(|&k| plant_stale_read(&mut keys[k]))
        .map(|k| format!("k{k}"))
        .collect();
    assert_eq!(
        planted.len(),
        5,
        "a stale read could be planted on every chosen key"
    );
    let started = Instant::now();
    let report = check_all(&events(&keys), &CheckOptions::default());
    let failed_in = started.elapsed();
    let failing: BTreeSet<String> = report
        .failures()
        .map(|v| {
            assert_eq!(v.kind, ViolationKind::NotLinearizable, "{v}");
            v.subject.clone()
        })
        .collect();
    assert_eq!(failing, planted, "{report}");
    let states = report.checker(Checker::Register).map(|c| c.states_explored);
    eprintln!(
        "{ops} ops over {} keys: linearizable in {passed_in:?}; with stale reads on {} keys, \
         refuted in {failed_in:?} ({states:?} configurations)",
        shape.keys,
        planted.len(),
    );
    // Generous for a loaded machine: the point is seconds, not minutes.
    assert!(passed_in + failed_in < Duration::from_secs(60));
}

/// Checker speed on heavier shapes than a run's, for the figures in the
/// docs: `cargo test -p dref-tests --lib checker_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn checker_speed() {
    let shapes = [
        (50, 210, 10, 3),
        (50, 200, 10, 10),
        (50, 200, 10, 20),
        (50, 200, 20, 3),
        (10, 1000, 10, 3),
    ];
    for (keys, ops_per_key, processes, indeterminate_percent) in shapes {
        let shape = Shape {
            keys,
            ops_per_key,
            processes,
            indeterminate_percent,
        };
        let mut generated = generate(7, &shape);
        let started = Instant::now();
        let report = check_all(&events(&generated), &CheckOptions::default());
        let passed_in = started.elapsed();
        let states = report.checker(Checker::Register).map(|c| c.states_explored);
        let planted = (0..keys)
            .step_by(10)
            .filter(|&k| plant_stale_read(&mut generated[k]))
            .count();
        let started = Instant::now();
        let refuted = check_all(&events(&generated), &CheckOptions::default());
        let failed_in = started.elapsed();
        let refuted_states = refuted
            .checker(Checker::Register)
            .map(|c| c.states_explored);
        let figures = refuted.figures();
        eprintln!(
            "{keys} keys x {ops_per_key} ops, {processes} processes, {indeterminate_percent}% indeterminate: \
             ok={} in {passed_in:?} ({states:?} configurations); {planted} stale reads: {} failures, \
             {} inconclusive, in {failed_in:?} ({refuted_states:?} configurations)",
            report.is_ok(),
            figures.failures,
            figures.inconclusive_keys,
        );
    }
}
