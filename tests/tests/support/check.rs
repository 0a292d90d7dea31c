//! Checks a nemesis run's histories and prints its report.

use std::path::Path;
use std::time::Duration;

use dref_tests::check::{check_all, read_histories, CheckOptions, Event, Op, Phase, Report};

/// How long a lock may stay out of reach of a waiter before the liveness
/// check calls it a failure: a waiter paused or cut off for the longest
/// fault (2.5 TTLs), then a lease expiry and an election, with slack.
pub fn grant_bound(ttl: Duration) -> Duration {
    ttl * 5 / 2 + ttl + Duration::from_secs(4)
}

/// The longest time after a node was killed until any node completed a
/// write again: how long the store was unavailable.
fn longest_unavailability(events: &[Event]) -> Option<Duration> {
    let kills = events.iter().filter(|e| {
        e.phase == Phase::Ok && matches!(&e.op, Op::Nemesis { action, .. } if action == "kill")
    });
    let mut longest = None;
    for kill in kills {
        let next_write = events.iter().find(|e| {
            e.t > kill.t
                && e.phase == Phase::Ok
                && matches!(e.op, Op::Write { .. } | Op::Cas { .. } | Op::Incr { .. })
        });
        if let Some(write) = next_write {
            let gap = Duration::from_nanos(write.t - kill.t);
            longest = Some(longest.map_or(gap, |l: Duration| l.max(gap)));
        }
    }
    longest
}

/// Reads every history in `dir`, checks it, and prints the report.
pub fn report(dir: &Path, ttl: Duration) -> Report {
    let events = read_histories([dir]).expect("the run's histories");
    let options = CheckOptions {
        grant_bound: grant_bound(ttl),
        ..CheckOptions::default()
    };
    let report = check_all(&events, &options);
    eprintln!("{report}");
    match longest_unavailability(&events) {
        Some(gap) => eprintln!("longest unavailability after a kill: {gap:?}"),
        None => eprintln!("longest unavailability after a kill: no kills"),
    }
    report
}

/// [`report`], then panics
/// on a violation after writing the failing sub-histories next to the
/// run's (their paths are in the message).
pub fn check_run(dir: &Path, ttl: Duration) {
    let report = report(dir, ttl);
    if !report.is_ok() {
        let failing = dir.join("failing");
        let files = report
            .write_failing(&failing)
            .expect("write the failing histories");
        panic!(
            "the nemesis run in {} broke the checkers; failing histories: {files:#?}",
            dir.display()
        );
    }
}
