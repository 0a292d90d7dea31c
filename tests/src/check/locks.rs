//! Lock safety and liveness: tokens, bodies that never overlap, waits that
//! end while the lock is free.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::faults::Kills;
use super::history::Op;
use super::intervals::{gaps, nanos, overlap, Interval};
use super::ops::{Operation, Outcome, Paired, Secs};
use super::report::{Checker, CheckerReport, ViolationKind};
use super::tokens::{check_tokens, Grant};
use super::CheckOptions;

/// A lock body: from entering to leaving (or to its node's death).
struct Body<'p, 'a> {
    op: &'p Operation<'a>,
    token: u64,
    interval: Interval,
    /// Whether it ended with LockLost: someone else may hold the lock from
    /// before it was told.
    lost: bool,
}

/// The operations of one lock.
#[derive(Default)]
struct LockOps<'p, 'a> {
    acquires: Vec<&'p Operation<'a>>,
    holds: Vec<&'p Operation<'a>>,
    /// When each token's body left, if recorded.
    left: BTreeMap<u64, u64>,
}

/// Checks every lock of the history:
///
/// - the tokens of granted acquisitions are unique, and increase in real
///   time (a grant completed before another is invoked has a lower token);
/// - no two bodies with different tokens overlap by more than the
///   tolerance, unless the earlier one ended with LockLost. A body ends
///   when it left (its `Left` event), or else at its completion (an `info`
///   one counts as a normal end); one with neither ends at its node's first
///   kill after it started, or else at
///   the declared run end; with neither, it ends at the end of the history
///   and is itself a violation (it never ended);
/// - an acquisition that failed with a timeout (its error mentions one),
///   or never completed, did not wait through a stretch of at least the
///   grant bound with no body of the lock open.
pub(crate) fn check(paired: &Paired<'_>, options: &CheckOptions) -> CheckerReport {
    let started = Instant::now();
    let mut report = CheckerReport::new(Checker::Locks);
    let kills = Kills::of(paired);
    let mut locks: BTreeMap<&str, LockOps<'_, '_>> = BTreeMap::new();
    for op in &paired.ops {
        match op.call() {
            Op::Acquire { lock, .. } => locks.entry(lock).or_default().acquires.push(op),
            Op::Hold { lock, .. } => locks.entry(lock).or_default().holds.push(op),
            Op::Left { lock, token } => {
                let left = &mut locks.entry(lock).or_default().left;
                let t = op.invoked();
                left.entry(*token)
                    .and_modify(|e: &mut u64| *e = (*e).min(t))
                    .or_insert(t);
            }
            _ => continue,
        }
        report.counts.count(op.outcome());
    }
    report.counts.subjects = locks.len();
    let run_end = options.run_end.unwrap_or(paired.end);
    for (lock, ops) in &locks {
        let grants: Vec<Grant<'_, '_>> = ops
            .acquires
            .iter()
            .filter_map(|op| match op.result() {
                Some(Op::Acquire {
                    token: Some(token), ..
                }) if op.outcome() == Outcome::Ok => Some(Grant { token: *token, op }),
                _ => None,
            })
            .collect();
        check_tokens(&mut report, lock, &grants);
        let bodies = bodies(
            &mut report,
            lock,
            &ops.holds,
            &ops.left,
            &kills,
            options.run_end,
            paired.end,
        );
        check_overlaps(&mut report, lock, &bodies, options.tolerance);
        let busy: Vec<Interval> = bodies.iter().map(|b| b.interval).collect();
        for acquire in &ops.acquires {
            check_wait(
                &mut report,
                lock,
                acquire,
                &busy,
                &kills,
                run_end,
                options.grant_bound,
            );
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// The bodies of a lock, with their ends; reports those that never ended.
fn bodies<'p, 'a>(
    report: &mut CheckerReport,
    lock: &str,
    holds: &[&'p Operation<'a>],
    left: &BTreeMap<u64, u64>,
    kills: &Kills<'_>,
    declared_end: Option<u64>,
    history_end: u64,
) -> Vec<Body<'p, 'a>> {
    let mut bodies = Vec::with_capacity(holds.len());
    for &op in holds {
        let Op::Hold { token, .. } = op.call() else {
            continue;
        };
        let start = op.invoked();
        let left = left.get(token).copied().filter(|t| *t >= start);
        let end = match left.or(op.completed()) {
            Some(t) => op.completed().map_or(t, |c| c.min(t)),
            None => match (kills.first_after(op.node(), start), declared_end) {
                (Some(killed), _) => killed,
                (None, Some(end)) => end,
                (None, None) => {
                    let message = format!(
                        "{lock:?}: a body never ended, and its node {} was never killed:\n  {op}",
                        op.node()
                    );
                    let events = op.events().cloned().collect();
                    report.violation(lock, ViolationKind::BodyNeverEnded, message, events);
                    history_end
                }
            },
        };
        bodies.push(Body {
            op,
            token: *token,
            interval: Interval::new(start, end),
            lost: op.outcome() == Outcome::Fail,
        });
    }
    bodies.sort_by_key(|b| b.interval.start);
    bodies
}

/// Reports bodies with different tokens that ran at once.
fn check_overlaps(
    report: &mut CheckerReport,
    lock: &str,
    bodies: &[Body<'_, '_>],
    tolerance: Duration,
) {
    let tolerance = nanos(tolerance);
    for (i, earlier) in bodies.iter().enumerate() {
        for later in &bodies[i + 1..] {
            if later.interval.start >= earlier.interval.end {
                // Sorted by start: no later body reaches back into this one.
                break;
            }
            let by = overlap(earlier.interval, later.interval);
            if later.token == earlier.token || by <= tolerance {
                continue;
            }
            let same_start = later.interval.start == earlier.interval.start;
            if earlier.lost || (same_start && later.lost) {
                // Lost before it was told: fencing, not the lock, protects this.
                continue;
            }
            let by = Duration::from_nanos(by - tolerance);
            let message = format!(
                "{lock:?}: bodies of tokens {} and {} overlap by {by:?} beyond the tolerance:\n  {}{}\n  {}{}",
                earlier.token,
                later.token,
                earlier.op,
                ends(earlier),
                later.op,
                ends(later),
            );
            let events = earlier
                .op
                .events()
                .chain(later.op.events())
                .cloned()
                .collect();
            report.violation(lock, ViolationKind::Overlap { by }, message, events);
        }
    }
}

/// For a body with no completion: where it was taken to end.
fn ends(body: &Body<'_, '_>) -> String {
    match body.op.completed() {
        Some(_) => String::new(),
        None => format!(" (taken to end at {})", Secs(body.interval.end)),
    }
}

/// Whether an acquisition's error says it timed out.
fn is_timeout(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    ["timeout", "timed out", "time out"]
        .iter()
        .any(|t| error.contains(t))
}

/// Reports an acquisition that timed out or never completed although the
/// lock was free for at least `bound` while it waited.
fn check_wait(
    report: &mut CheckerReport,
    lock: &str,
    acquire: &Operation<'_>,
    busy: &[Interval],
    kills: &Kills<'_>,
    run_end: u64,
    bound: Duration,
) {
    let start = acquire.invoked();
    let end = match (acquire.outcome(), acquire.result()) {
        (Outcome::Fail, Some(Op::Acquire { error: Some(e), .. })) if is_timeout(e) => {
            acquire.completed().unwrap_or(start)
        }
        (Outcome::Pending, _) => kills.first_after(acquire.node(), start).unwrap_or(run_end),
        _ => return,
    };
    let bound = nanos(bound);
    let free = gaps(Interval::new(start, end), busy);
    let Some(longest) = free.iter().max_by_key(|g| g.end - g.start) else {
        return;
    };
    if longest.end - longest.start < bound {
        return;
    }
    let message = format!(
        "{lock:?}: not granted although free from {} to {} ({:?}, bound {:?}):\n  {acquire}",
        Secs(longest.start),
        Secs(longest.end),
        Duration::from_nanos(longest.end - longest.start),
        Duration::from_nanos(bound),
    );
    let events = acquire.events().cloned().collect();
    report.violation(lock, ViolationKind::NotGranted, message, events);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ops::pair;
    use crate::check::testing::*;
    use crate::check::Event;

    const S: u64 = 1_000_000_000;

    fn kinds(events: &[Event], options: &CheckOptions) -> Vec<ViolationKind> {
        let paired = pair(events);
        assert!(paired.malformed.is_empty(), "{:?}", paired.malformed);
        let report = check(&paired, options);
        for v in &report.violations {
            eprintln!("{v}");
        }
        report.violations.iter().map(|v| v.kind).collect()
    }

    /// Process `p` acquires `lock` over [a, b] with `token` and holds it over [b, c].
    fn turn(p: u64, token: u64, a: u64, b: u64, c: u64) -> Vec<Event> {
        vec![
            invoke(p, a, acquire("l", None, None)),
            ok(p, b, acquire("l", Some(token), None)),
            invoke(p, b, hold("l", token)),
            ok(p, c, hold("l", token)),
        ]
    }

    #[test]
    fn bodies_in_turn_with_increasing_tokens_pass() {
        let mut events = turn(1, 1, 0, 1, 10);
        events.extend(turn(2, 2, 2, 10, 20));
        events.extend(turn(3, 3, 3, 20, 30));
        assert_eq!(kinds(&events, &CheckOptions::default()), []);
    }

    #[test]
    fn two_overlapping_bodies_are_rejected() {
        let mut events = turn(1, 1, 0, 1, 10);
        events.extend(turn(2, 2, 2, 8, 20));
        assert_eq!(
            kinds(&events, &CheckOptions::default()),
            [ViolationKind::Overlap {
                by: Duration::from_nanos(2)
            }]
        );
        let forgiving = CheckOptions {
            tolerance: Duration::from_nanos(2),
            ..CheckOptions::default()
        };
        assert_eq!(kinds(&events, &forgiving), []);
    }

    #[test]
    fn a_lock_handed_over_after_lock_lost_passes() {
        // The first holder's lease expired at about 5; it was told at 12.
        let events = [
            invoke(1, 0, acquire("l", None, None)),
            ok(1, 1, acquire("l", Some(1), None)),
            invoke(1, 1, hold("l", 1)),
            invoke(2, 2, acquire("l", None, None)),
            ok(2, 6, acquire("l", Some(2), None)),
            invoke(2, 6, hold("l", 2)),
            fail(1, 12, lost("l", 1)),
            ok(2, 20, hold("l", 2)),
        ];
        assert_eq!(kinds(&events, &CheckOptions::default()), []);
    }

    #[test]
    fn a_body_ends_when_it_left_even_if_its_release_never_returned() {
        // The body returned at 3; its release hung until the node was
        // killed at 10, long after the next holder entered at 6.
        let left = Op::Left {
            lock: "l".into(),
            token: 1,
        };
        let events = [
            invoke(1, 0, acquire("l", None, None)),
            ok(1, 1, acquire("l", Some(1), None)),
            invoke(1, 1, hold("l", 1)),
            ok(1, 3, left.clone()),
            invoke(2, 2, acquire("l", None, None)),
            ok(2, 6, acquire("l", Some(2), None)),
            invoke(2, 6, hold("l", 2)),
            invoke(9, 10, kill("n1")),
            ok(9, 10, kill("n1")),
            ok(2, 20, hold("l", 2)),
        ];
        assert_eq!(kinds(&events, &CheckOptions::default()), []);
        // Had it left only at 7, the bodies overlap.
        let late: Vec<Event> = events
            .iter()
            .map(|e| match &e.op {
                Op::Left { .. } => ok(1, 7, left.clone()),
                _ => e.clone(),
            })
            .collect();
        assert_eq!(
            kinds(&late, &CheckOptions::default()),
            [ViolationKind::Overlap {
                by: Duration::from_nanos(1)
            }]
        );
    }

    #[test]
    fn a_killed_holder_ends_at_its_kill() {
        let events = [
            invoke(1, 0, acquire("l", None, None)),
            ok(1, 1, acquire("l", Some(1), None)),
            invoke(1, 1, hold("l", 1)),
            invoke(9, 5, kill("n1")),
            ok(9, 6, kill("n1")),
            invoke(2, 2, acquire("l", None, None)),
            ok(2, 8, acquire("l", Some(2), None)),
            invoke(2, 8, hold("l", 2)),
            ok(2, 20, hold("l", 2)),
        ];
        assert_eq!(kinds(&events, &CheckOptions::default()), []);
        // Without the kill, the first body never ended: it overlaps too.
        let unkilled: Vec<Event> = events
            .iter()
            .filter(|e| !matches!(e.op, Op::Nemesis { .. }))
            .cloned()
            .collect();
        assert_eq!(
            kinds(&unkilled, &CheckOptions::default()),
            [
                ViolationKind::BodyNeverEnded,
                ViolationKind::Overlap {
                    by: Duration::from_nanos(12)
                }
            ]
        );
    }

    #[test]
    fn a_body_still_open_at_the_declared_run_end_passes() {
        let events = [
            invoke(1, 0, acquire("l", None, None)),
            ok(1, 1, acquire("l", Some(1), None)),
            invoke(1, 1, hold("l", 1)),
        ];
        let options = CheckOptions {
            run_end: Some(10),
            ..CheckOptions::default()
        };
        assert_eq!(kinds(&events, &options), []);
        assert_eq!(
            kinds(&events, &CheckOptions::default()),
            [ViolationKind::BodyNeverEnded]
        );
    }

    #[test]
    fn a_token_that_went_backwards_is_rejected() {
        let mut events = turn(1, 5, 0, 1, 10);
        events.extend(turn(2, 4, 11, 12, 20));
        assert_eq!(
            kinds(&events, &CheckOptions::default()),
            [ViolationKind::TokenWentBackwards]
        );
    }

    #[test]
    fn concurrent_acquisitions_may_get_tokens_in_either_order() {
        // Both invoked before either was granted.
        let events = [
            invoke(1, 0, acquire("l", None, None)),
            invoke(2, 1, acquire("l", None, None)),
            ok(2, 2, acquire("l", Some(7), None)),
            ok(1, 3, acquire("l", Some(6), None)),
        ];
        assert_eq!(kinds(&events, &CheckOptions::default()), []);
    }

    #[test]
    fn a_token_granted_twice_is_rejected() {
        let mut events = turn(1, 3, 0, 1, 10);
        events.extend(turn(2, 3, 0, 10, 20));
        assert_eq!(
            kinds(&events, &CheckOptions::default()),
            [ViolationKind::DuplicateToken]
        );
    }

    #[test]
    fn a_wait_through_a_free_lock_is_rejected() {
        let options = CheckOptions {
            grant_bound: Duration::from_secs(2),
            ..CheckOptions::default()
        };
        // Held until 1 s; the other waits from 0.5 s and times out at 5 s.
        let mut events = turn(1, 1, 0, 1, S);
        events.extend([
            invoke(2, S / 2, acquire("l", None, None)),
            fail(2, 5 * S, acquire("l", None, Some("timed out after 4.5s"))),
        ]);
        assert_eq!(kinds(&events, &options), [ViolationKind::NotGranted]);
        // Busy the whole time: a timeout is fine.
        let mut busy = turn(1, 1, 0, 1, 6 * S);
        busy.extend(events[4..].iter().cloned());
        assert_eq!(kinds(&busy, &options), []);
        // "busy" (a try_lock) is not a wait.
        let mut tried = turn(1, 1, 0, 1, S);
        tried.extend([
            invoke(2, S / 2, acquire("l", None, None)),
            fail(2, 5 * S, acquire("l", None, Some("busy"))),
        ]);
        assert_eq!(kinds(&tried, &options), []);
    }
}
