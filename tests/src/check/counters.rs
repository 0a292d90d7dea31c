//! Counters: the final value keeps every acknowledged increment, and no
//! more than every increment that may have happened.

use std::collections::BTreeMap;
use std::time::Instant;

use super::history::Op;
use super::ops::{Operation, Outcome, Paired};
use super::report::{Checker, CheckerReport, Counts, ViolationKind};

#[derive(Default)]
struct CounterOps<'p, 'a> {
    increments: Counts,
    final_reads: Vec<&'p Operation<'a>>,
    /// Writes or compare-and-sets on the key: it is no plain counter.
    overwritten: bool,
}

/// Checks every counter: a key with increments and a final read, and no
/// writes or compare-and-sets (those keys are left to the linearizability
/// check). Starting from 0, its lowest final read must be at least the
/// increments acknowledged ok, and its highest at most those plus the
/// indeterminate ones.
pub(crate) fn check(paired: &Paired<'_>) -> CheckerReport {
    let started = Instant::now();
    let mut report = CheckerReport::new(Checker::Counters);
    let mut keys: BTreeMap<&str, CounterOps<'_, '_>> = BTreeMap::new();
    for op in &paired.ops {
        match op.call() {
            Op::Incr { key, .. } => keys.entry(key).or_default().increments.count(op.outcome()),
            Op::FinalRead { key, .. } if op.outcome() == Outcome::Ok => {
                keys.entry(key).or_default().final_reads.push(op)
            }
            Op::Write { key, .. } | Op::Cas { key, .. } => {
                keys.entry(key).or_default().overwritten = true
            }
            _ => {}
        }
    }
    for (key, ops) in &keys {
        let counts = ops.increments;
        let values = ops.final_reads.iter().filter_map(|op| match op.call() {
            Op::FinalRead { value, .. } => Some((*value, *op)),
            _ => None,
        });
        let (Some(lowest), Some(highest)) = (
            values.clone().min_by_key(|(v, _)| *v),
            values.max_by_key(|(v, _)| *v),
        ) else {
            continue;
        };
        if ops.overwritten || counts.ok + counts.failed + counts.indeterminate == 0 {
            continue;
        }
        report.counts.subjects += 1;
        report.counts.ok += counts.ok;
        report.counts.failed += counts.failed;
        report.counts.indeterminate += counts.indeterminate;
        let acknowledged = counts.ok as u64;
        let possible = acknowledged + counts.indeterminate as u64;
        let figures = format!(
            "{} acknowledged, {} indeterminate, {} failed increments",
            counts.ok, counts.indeterminate, counts.failed
        );
        let (value, op) = lowest;
        if value < acknowledged {
            let lost = acknowledged - value;
            let message = format!(
                "{key:?}: final value {value} lost {lost} acknowledged increments ({figures}):\n  {op}"
            );
            let events = op.events().cloned().collect();
            report.violation(key, ViolationKind::LostIncrements { lost }, message, events);
        }
        let (value, op) = highest;
        if value > possible {
            let message = format!(
                "{key:?}: final value {value} is above the {possible} increments that may have happened ({figures}):\n  {op}"
            );
            let events = op.events().cloned().collect();
            report.violation(key, ViolationKind::TooManyIncrements, message, events);
        }
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ops::pair;
    use crate::check::testing::*;
    use crate::check::Event;

    fn kinds(events: &[Event]) -> Vec<ViolationKind> {
        let paired = pair(events);
        assert!(paired.malformed.is_empty(), "{:?}", paired.malformed);
        let report = check(&paired);
        for v in &report.violations {
            eprintln!("{v}");
        }
        report.violations.iter().map(|v| v.kind).collect()
    }

    /// Three acknowledged increments, one indeterminate, one failed.
    fn increments() -> Vec<Event> {
        vec![
            invoke(1, 0, incr("c", None)),
            ok(1, 1, incr("c", Some(1))),
            invoke(2, 0, incr("c", None)),
            ok(2, 2, incr("c", Some(2))),
            invoke(3, 0, incr("c", None)),
            ok(3, 3, incr("c", Some(3))),
            invoke(4, 0, incr("c", None)),
            info(4, 4, incr("c", None)),
            invoke(5, 0, incr("c", None)),
            fail(5, 5, incr("c", None)),
        ]
    }

    #[test]
    fn a_final_value_within_the_bounds_passes() {
        for value in [3, 4] {
            let mut events = increments();
            events.push(ok(9, 10, final_read("c", value)));
            assert_eq!(kinds(&events), [], "final value {value}");
        }
    }

    #[test]
    fn a_final_value_below_the_acknowledged_is_rejected() {
        let mut events = increments();
        events.push(ok(9, 10, final_read("c", 4)));
        events.push(ok(8, 10, final_read("c", 1)));
        assert_eq!(kinds(&events), [ViolationKind::LostIncrements { lost: 2 }]);
    }

    #[test]
    fn a_final_value_above_every_possible_increment_is_rejected() {
        let mut events = increments();
        events.push(ok(9, 10, final_read("c", 5)));
        assert_eq!(kinds(&events), [ViolationKind::TooManyIncrements]);
    }

    #[test]
    fn a_key_that_is_also_written_is_no_counter() {
        let mut events = increments();
        events.extend([
            invoke(6, 6, write("c", 0)),
            ok(6, 7, write("c", 0)),
            ok(9, 10, final_read("c", 0)),
        ]);
        assert_eq!(kinds(&events), []);
    }
}
