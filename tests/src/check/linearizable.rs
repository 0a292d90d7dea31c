//! Linearizability of registers and fenced registers, key by key.
//!
//! A history is linearizable if and only if each key's sub-history is (the
//! P-compositionality of linearizability), so each key is searched alone
//! and keys are spread over threads. The search is exponential in the
//! number of operations concurrent on one key, not in the length of the
//! history: keep per-key histories to a few hundred operations and use
//! many keys.
//!
//! Speed, debug build (`cargo test`), two search threads on the shared
//! 2-core machine, histories from `random_history.rs` (operations of 10
//! clients per key with 1–51 µs intervals and 0–20 µs pauses, so about 7
//! are concurrent on a key at any time; 40% reads, 25% writes, 20%
//! compare-and-sets, 15% increments):
//!
//! | keys × ops | indeterminate | linearizable | 5 keys with one stale read each |
//! |------------|---------------|--------------|---------------------------------|
//! | 50 × 210 (10 500) | 3% | 0.15–0.2 s, 160 000 configurations | 0.15–0.3 s, 200 000 |
//! | 50 × 200 | 10% | 0.2 s | 0.5 s, 360 000 |
//! | 50 × 200 | 20% | 0.5 s | 4.2 s, 1.4 million |
//! | 10 × 1000 | 3% | 0.4 s | 1.7 s (one key), 725 000 |
//! | 50 × 200, 20 clients per key | 3% | 6.7 s, 8.7 million | 8.1 s, 10 million |
//!
//! About 1–2 µs per configuration and thread: concurrency per key is what costs. The
//! debug build is fast enough, so there is no opt-level override.
//! (`cargo test -p dref-tests --lib checker_speed -- --ignored --nocapture`
//! measures again.)
//!
//! How each recorded operation enters the search:
//!
//! | operation | ok | fail | info / no completion |
//! |-----------|----|------|----------------------|
//! | read      | reads `value` | dropped | dropped |
//! | write     | writes | dropped (never happened) | optional write |
//! | cas       | swaps `from` → `to` | reads "not `from`" | optional: swaps if `from` |
//! | incr      | +1, new value `value` | dropped | optional +1 |
//! | fenced    | accepted: `token` ≥ state, state := `token` | rejected: `token` < state | optional accept |
//!
//! An optional operation may take effect at any point after its
//! invocation, or never.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::history::Op;
use super::ops::{Operation, Outcome, Paired, Secs};
use super::report::{Checker, CheckerReport, ViolationKind};
use super::search::{search, Call, Model, Searched, Verdict};
use super::CheckOptions;

/// A u64 register, initially 0.
///
/// Values no operation of the key can tell apart are one state: a value
/// is *relevant* if some operation tests for it (a read of it, a
/// compare-and-set from it, an increment to one above it) or a run of at
/// most as many increments as the key has can bring it to one tested. Every
/// other value behaves alike under every operation, so all of them are
/// [`IRRELEVANT`]: writes of values nobody reads then lead to one state,
/// and an indeterminate write of such a value onto such a state has no
/// effect, which keeps blind writes from multiplying the search.
pub(crate) struct Register {
    /// Relevant values as sorted disjoint ranges; None if the stand-in
    /// value is itself relevant (then no values are merged).
    relevant: Option<Vec<(u64, u64)>>,
}

/// The state standing for every irrelevant value.
const IRRELEVANT: u64 = u64::MAX;

impl Register {
    /// The register model for these operations of one key.
    pub(crate) fn for_ops<'o>(ops: impl IntoIterator<Item = &'o RegisterOp> + Clone) -> Self {
        let increments = ops
            .clone()
            .into_iter()
            .filter(|op| matches!(op, RegisterOp::Increment | RegisterOp::IncrementedTo(_)))
            .count() as u64;
        let mut ranges: Vec<(u64, u64)> = ops
            .into_iter()
            .filter_map(|op| match *op {
                RegisterOp::Read(v) => Some(v),
                RegisterOp::Cas { from, .. } | RegisterOp::CasFailed { from } => Some(from),
                RegisterOp::IncrementedTo(v) => v.checked_sub(1),
                RegisterOp::Write(_) | RegisterOp::Increment => None,
            })
            .map(|tested| (tested.saturating_sub(increments), tested))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let stand_in_relevant = merged.last().is_some_and(|&(_, hi)| hi == IRRELEVANT);
        Register {
            relevant: (!stand_in_relevant).then_some(merged),
        }
    }

    /// A register that merges no values.
    #[cfg(test)]
    pub(crate) fn exact() -> Self {
        Register { relevant: None }
    }

    /// The state for value `v`.
    fn canonical(&self, v: u64) -> u64 {
        let Some(relevant) = &self.relevant else {
            return v;
        };
        let i = relevant.partition_point(|&(_, hi)| hi < v);
        match relevant.get(i) {
            Some(&(lo, _)) if lo <= v => v,
            _ => IRRELEVANT,
        }
    }
}

/// An operation on a [`Register`], with its recorded result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RegisterOp {
    /// Read this value.
    Read(u64),
    /// Wrote this value.
    Write(u64),
    /// Swapped `from` for `to`.
    Cas { from: u64, to: u64 },
    /// Found another value than `from`.
    CasFailed { from: u64 },
    /// Incremented, to this value.
    IncrementedTo(u64),
    /// Incremented, result unknown.
    Increment,
}

impl Model for Register {
    type State = u64;
    type Op = RegisterOp;

    fn initial(&self) -> u64 {
        self.canonical(0)
    }

    fn step(&self, state: u64, op: &RegisterOp) -> Option<u64> {
        let merged = self.relevant.is_some() && state == IRRELEVANT;
        let next = match *op {
            RegisterOp::Read(v) => (state == v).then_some(state),
            RegisterOp::Write(v) => Some(v),
            RegisterOp::Cas { from, to } => (state == from).then_some(to),
            RegisterOp::CasFailed { from } => (state != from).then_some(state),
            RegisterOp::IncrementedTo(v) => (state.checked_add(1) == Some(v)).then_some(v),
            // An irrelevant value stays irrelevant through the increments left.
            RegisterOp::Increment if merged => Some(IRRELEVANT),
            RegisterOp::Increment => state.checked_add(1),
        };
        next.map(|v| self.canonical(v))
    }

    fn describe(&self, state: u64) -> String {
        if self.relevant.is_some() && state == IRRELEVANT {
            "<a value no operation tests>".into()
        } else {
            state.to_string()
        }
    }
}

/// A fenced register: its state is the highest token it accepted
/// (initially 0); it must reject every token below it.
pub(crate) struct Fenced;

/// A write through a [`Fenced`] register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FencedOp {
    /// The token was accepted.
    Accepted(u64),
    /// The token was rejected as stale.
    Rejected(u64),
}

impl Model for Fenced {
    type State = u64;
    type Op = FencedOp;

    fn initial(&self) -> u64 {
        0
    }

    fn step(&self, state: u64, op: &FencedOp) -> Option<u64> {
        match *op {
            FencedOp::Accepted(token) => (token >= state).then_some(token),
            FencedOp::Rejected(token) => (token < state).then_some(state),
        }
    }
}

/// How an operation enters the register search, if it does.
fn register_op(op: &Operation<'_>) -> Option<RegisterOp> {
    let outcome = op.outcome();
    Some(match (op.call(), outcome) {
        (Op::Read { .. }, Outcome::Ok) => match op.result() {
            Some(Op::Read { value: Some(v), .. }) => RegisterOp::Read(*v),
            _ => return None,
        },
        (Op::Write { value, .. }, Outcome::Ok) => RegisterOp::Write(*value),
        (Op::Write { value, .. }, o) if o.is_indeterminate() => RegisterOp::Write(*value),
        (Op::Cas { from, to, .. }, Outcome::Ok) => RegisterOp::Cas {
            from: *from,
            to: *to,
        },
        (Op::Cas { from, to, .. }, o) if o.is_indeterminate() => RegisterOp::Cas {
            from: *from,
            to: *to,
        },
        (Op::Cas { from, .. }, Outcome::Fail) => RegisterOp::CasFailed { from: *from },
        (Op::Incr { .. }, Outcome::Ok) => match op.result() {
            Some(Op::Incr { value: Some(v), .. }) => RegisterOp::IncrementedTo(*v),
            _ => return None,
        },
        (Op::Incr { .. }, o) if o.is_indeterminate() => RegisterOp::Increment,
        _ => return None,
    })
}

/// How an operation enters the fenced search, if it does.
fn fenced_op(op: &Operation<'_>) -> Option<FencedOp> {
    match (op.call(), op.outcome()) {
        (Op::Fenced { token, .. }, Outcome::Fail) => Some(FencedOp::Rejected(*token)),
        (Op::Fenced { token, .. }, _) => Some(FencedOp::Accepted(*token)),
        _ => None,
    }
}

/// One key's search problem.
struct Job<'p, 'a, O> {
    key: &'a str,
    /// The operations of the key that enter the search, with `calls`.
    ops: Vec<&'p Operation<'a>>,
    calls: Vec<Call<O>>,
}

/// Checks every register key and every fenced key of the history; the
/// reports of the two models.
pub(crate) fn check(paired: &Paired<'_>, options: &CheckOptions) -> [CheckerReport; 2] {
    [
        check_model(paired, options, Checker::Register, register_op, |calls| {
            Register::for_ops(calls.iter().map(|c| &c.op))
        }),
        check_model(paired, options, Checker::Fenced, fenced_op, |_| Fenced),
    ]
}

fn check_model<M>(
    paired: &Paired<'_>,
    options: &CheckOptions,
    checker: Checker,
    convert: fn(&Operation<'_>) -> Option<M::Op>,
    model_for: fn(&[Call<M::Op>]) -> M,
) -> CheckerReport
where
    M: Model,
    M::Op: Send + Sync + Copy,
{
    let started = Instant::now();
    let mut report = CheckerReport::new(checker);
    let mut jobs: BTreeMap<&str, Job<'_, '_, M::Op>> = BTreeMap::new();
    for op in paired.ops.iter().filter(|op| checker.covers(op.call())) {
        report.counts.count(op.outcome());
        let Some(converted) = convert(op) else {
            continue;
        };
        let key = op.call().subject();
        let job = jobs.entry(key).or_insert_with(|| Job {
            key,
            ops: Vec::new(),
            calls: Vec::new(),
        });
        job.ops.push(op);
        job.calls.push(Call {
            op: converted,
            invoked: op.invoked(),
            returned: op.completed().filter(|_| !op.outcome().is_indeterminate()),
        });
    }
    report.counts.subjects = jobs.len();
    let mut jobs: Vec<_> = jobs.into_values().collect();
    // The biggest first, so one long key does not start last.
    jobs.sort_by_key(|job| std::cmp::Reverse(job.calls.len()));
    let results = run_parallel(&jobs, options.threads, |job| {
        let model = model_for(&job.calls);
        let searched = search(&model, &job.calls, options.state_budget);
        let message = match searched.verdict {
            Verdict::Linearizable => String::new(),
            _ => explain(&model, job, &searched),
        };
        (searched, message)
    });
    for (job, result) in jobs.iter().zip(results) {
        let Some((searched, message)) = result else {
            let message = format!("key {:?}: the search thread panicked", job.key);
            report.violation(job.key, ViolationKind::Inconclusive, message, Vec::new());
            continue;
        };
        report.states_explored += searched.states as u64;
        let kind = match searched.verdict {
            Verdict::Linearizable => continue,
            Verdict::NotLinearizable => ViolationKind::NotLinearizable,
            Verdict::Inconclusive => ViolationKind::Inconclusive,
        };
        let events = job.ops.iter().flat_map(|op| op.events()).cloned().collect();
        report.violation(job.key, kind, message, events);
    }
    report.elapsed = started.elapsed();
    report
}

/// Runs `work` on every job over `threads` threads; None for a job whose
/// thread panicked.
fn run_parallel<J: Sync, R: Send>(
    jobs: &[J],
    threads: usize,
    work: impl Fn(&J) -> R + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, jobs.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else {
                            return done;
                        };
                        done.push((i, work(job)));
                    }
                })
            })
            .collect();
        for worker in workers {
            // A panicked worker loses its results: those jobs stay None.
            for (i, result) in worker.join().unwrap_or_default() {
                results[i] = Some(result);
            }
        }
    });
    results
}

/// The failure message: how far a linearization got, and which operations
/// could not be placed next.
fn explain<M: Model>(model: &M, job: &Job<'_, '_, M::Op>, searched: &Searched) -> String {
    let required = job.calls.iter().filter(|c| c.returned.is_some()).count();
    let mut message = String::new();
    let verdict = match searched.verdict {
        Verdict::Inconclusive => "inconclusive (search budget exhausted)",
        _ => "not linearizable",
    };
    let _ = writeln!(
        message,
        "key {:?}: {verdict} ({} operations, {} indeterminate; {} configurations searched).",
        job.key,
        job.calls.len(),
        job.calls.len() - required,
        searched.states,
    );
    let mut state = model.initial();
    let mut placed = vec![false; job.calls.len()];
    for &i in &searched.longest {
        if let Some(next) = model.step(state, &job.calls[i].op) {
            state = next;
        }
        placed[i] = true;
    }
    let placed_required = searched
        .longest
        .iter()
        .filter(|&&i| job.calls[i].returned.is_some())
        .count();
    let _ = writeln!(
        message,
        "Longest linearizable prefix: {placed_required} of {required} determinate operations, ending in state {}:",
        model.describe(state)
    );
    const TAIL: usize = 8;
    let skip = searched.longest.len().saturating_sub(TAIL);
    if skip > 0 {
        let _ = writeln!(message, "  ... {skip} earlier operations");
    }
    for &i in &searched.longest[skip..] {
        let _ = writeln!(message, "  {}", job.ops[i]);
    }
    // The unplaced required operation that returned first had to be next
    // (or be preceded only by operations invoked before it returned).
    let deadline = job
        .calls
        .iter()
        .enumerate()
        .filter(|(i, c)| !placed[*i] && c.returned.is_some())
        .min_by_key(|(_, c)| c.returned);
    if let Some((first, call)) = deadline {
        let by = call.returned.unwrap_or(u64::MAX);
        let _ = writeln!(
            message,
            "Next, one of these had to be placed by {} (when {} returned):",
            Secs(by),
            job.ops[first]
        );
        for (i, call) in job.calls.iter().enumerate() {
            if placed[i] || call.invoked > by {
                continue;
            }
            let fits = if model.step(state, &call.op).is_some() {
                "fits the state, but no linearization followed"
            } else {
                "impossible from the state"
            };
            let _ = writeln!(message, "  {} — {fits}", job.ops[i]);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ops::pair;
    use crate::check::testing::*;

    fn verdicts(events: &[crate::check::Event]) -> Vec<(String, ViolationKind)> {
        let paired = pair(events);
        assert!(paired.malformed.is_empty(), "{:?}", paired.malformed);
        check(&paired, &CheckOptions::default())
            .into_iter()
            .flat_map(|r| r.violations)
            .map(|v| (v.subject, v.kind))
            .collect()
    }

    fn assert_linearizable(events: &[crate::check::Event]) {
        assert_eq!(verdicts(events), []);
    }

    fn assert_not_linearizable(events: &[crate::check::Event], key: &str) {
        assert_eq!(
            verdicts(events),
            [(key.to_string(), ViolationKind::NotLinearizable)]
        );
    }

    #[test]
    fn overlapping_operations_linearize_in_either_order() {
        assert_linearizable(&[
            invoke(1, 0, write("k", 1)),
            invoke(2, 1, read("k", None)),
            invoke(3, 2, read("k", None)),
            ok(3, 6, read("k", Some(1))),
            ok(2, 7, read("k", Some(0))),
            ok(1, 10, write("k", 1)),
            invoke(1, 11, incr("k", None)),
            ok(1, 12, incr("k", Some(2))),
        ]);
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_rejected() {
        assert_not_linearizable(
            &[
                invoke(1, 0, write("k", 1)),
                ok(1, 1, write("k", 1)),
                invoke(2, 2, read("k", None)),
                ok(2, 3, read("k", Some(0))),
            ],
            "k",
        );
    }

    #[test]
    fn a_lost_increment_is_rejected() {
        assert_not_linearizable(
            &[
                invoke(1, 0, incr("k", None)),
                invoke(2, 1, incr("k", None)),
                ok(1, 5, incr("k", Some(1))),
                ok(2, 6, incr("k", Some(1))),
            ],
            "k",
        );
    }

    #[test]
    fn an_indeterminate_write_may_or_may_not_apply() {
        let applied = [
            invoke(1, 0, write("k", 5)),
            info(1, 3, write("k", 5)),
            invoke(2, 10, read("k", None)),
            ok(2, 11, read("k", Some(5))),
        ];
        assert_linearizable(&applied);
        let not_applied = [
            invoke(1, 0, write("k", 5)),
            invoke(2, 10, read("k", None)),
            ok(2, 11, read("k", Some(0))),
            invoke(2, 12, read("k", None)),
            ok(2, 13, read("k", Some(5))),
        ];
        assert_linearizable(&not_applied);
        let applied_twice = [
            invoke(1, 0, write("k", 5)),
            invoke(2, 10, read("k", None)),
            ok(2, 11, read("k", Some(5))),
            invoke(2, 12, read("k", None)),
            ok(2, 13, read("k", Some(0))),
        ];
        assert_not_linearizable(&applied_twice, "k");
    }

    #[test]
    fn a_failed_write_never_happened() {
        assert_not_linearizable(
            &[
                invoke(1, 0, write("k", 5)),
                fail(1, 3, write("k", 5)),
                invoke(2, 10, read("k", None)),
                ok(2, 11, read("k", Some(5))),
            ],
            "k",
        );
    }

    #[test]
    fn a_failed_cas_is_a_read_of_another_value() {
        let saw_another = [
            invoke(1, 0, write("k", 3)),
            ok(1, 1, write("k", 3)),
            invoke(2, 2, cas("k", 0, 9)),
            fail(2, 3, cas("k", 0, 9)),
        ];
        assert_linearizable(&saw_another);
        let but_it_held_it = [invoke(2, 2, cas("k", 0, 9)), fail(2, 3, cas("k", 0, 9))];
        assert_not_linearizable(&but_it_held_it, "k");
    }

    #[test]
    fn an_indeterminate_cas_swaps_only_from_its_expected_value() {
        let swapped = [
            invoke(1, 0, cas("k", 0, 4)),
            invoke(2, 10, read("k", None)),
            ok(2, 11, read("k", Some(4))),
        ];
        assert_linearizable(&swapped);
        let could_not_swap = [
            invoke(1, 0, write("k", 1)),
            ok(1, 1, write("k", 1)),
            invoke(3, 2, cas("k", 0, 4)),
            info(3, 3, cas("k", 0, 4)),
            invoke(2, 10, read("k", None)),
            ok(2, 11, read("k", Some(4))),
        ];
        assert_not_linearizable(&could_not_swap, "k");
    }

    #[test]
    fn keys_are_checked_apart() {
        assert_not_linearizable(
            &[
                invoke(1, 0, write("a", 1)),
                ok(1, 1, write("a", 1)),
                invoke(2, 2, read("b", None)),
                ok(2, 3, read("b", Some(0))),
                invoke(3, 4, read("a", None)),
                ok(3, 5, read("a", Some(1))),
                invoke(4, 4, read("b", None)),
                ok(4, 5, read("b", Some(1))),
            ],
            "b",
        );
    }

    #[test]
    fn a_stale_token_accepted_by_the_fenced_register_is_rejected() {
        let fenced_properly = [
            invoke(1, 0, fenced("f", 5)),
            ok(1, 1, fenced("f", 5)),
            invoke(2, 2, fenced("f", 3)),
            fail(2, 3, fenced("f", 3)),
            invoke(3, 4, fenced("f", 6)),
            ok(3, 5, fenced("f", 6)),
        ];
        assert_linearizable(&fenced_properly);
        let stale_accepted = [
            invoke(1, 0, fenced("f", 5)),
            ok(1, 1, fenced("f", 5)),
            invoke(2, 2, fenced("f", 3)),
            ok(2, 3, fenced("f", 3)),
        ];
        assert_eq!(
            verdicts(&stale_accepted),
            [("f".to_string(), ViolationKind::NotLinearizable)]
        );
        let fresh_rejected = [
            invoke(1, 0, fenced("f", 5)),
            info(1, 1, fenced("f", 5)),
            invoke(2, 2, fenced("f", 7)),
            fail(2, 3, fenced("f", 7)),
        ];
        assert_eq!(verdicts(&fresh_rejected).len(), 1);
    }

    #[test]
    fn the_failure_message_names_the_key_the_prefix_and_the_unplaced_operations() {
        let events = [
            invoke(1, 0, write("k", 1)),
            ok(1, 1_000_000_000, write("k", 1)),
            invoke(2, 2_000_000_000, read("k", None)),
            ok(2, 3_000_000_000, read("k", Some(0))),
        ];
        let paired = pair(&events);
        let [register, _] = check(&paired, &CheckOptions::default());
        let message = &register.violations[0].message;
        assert!(
            message.contains(r#"key "k": not linearizable"#),
            "{message}"
        );
        assert!(message.contains("1 of 2 determinate"), "{message}");
        assert!(
            message.contains("write(k, 1) ok [0.000000000s, 1.000000000s]"),
            "{message}"
        );
        assert!(
            message.contains("read(k) -> 0 ok [2.000000000s, 3.000000000s] — impossible"),
            "{message}"
        );
        assert_eq!(register.violations[0].events.len(), 4);
    }
}
