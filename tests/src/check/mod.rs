//! Checking recorded histories of a nemesis run.
//!
//! Clients record what they invoke and what comes back as JSON lines of
//! [`Event`]s (the format is in [`history`]); [`check_all`] reads them as
//! operations and runs every checker:
//!
//! - registers and fenced registers are linearizable, key by key (a
//!   Wing–Gong–Lowe search with memoization, as Porcupine does);
//! - lock tokens are unique and increase in real time, lock bodies never
//!   overlap, and an acquisition is granted while the lock is free;
//! - at most one elected leader believes it leads at a time;
//! - change streams are ordered and have no gaps without a resync;
//! - counters keep every acknowledged increment.
//!
//! ```no_run
//! use dref_tests::check::{check_all, read_histories, CheckOptions};
//!
//! let events = read_histories(["/tmp/run/histories"]).unwrap();
//! let report = check_all(&events, &CheckOptions::default());
//! if !report.is_ok() {
//!     let files = report.write_failing("/tmp/run/failing").unwrap();
//!     panic!("{report}\nfailing sub-histories: {files:?}");
//! }
//! ```

pub mod history;

mod counters;
mod elections;
mod faults;
mod intervals;
mod linearizable;
mod locks;
mod memo;
mod ops;
mod report;
mod search;
mod tokens;
mod watches;

#[cfg(test)]
mod random_history;
#[cfg(test)]
mod testing;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use history::{read_histories, read_history, sort_by_time, write_history, Event, Op, Phase};
pub use ops::Malformed;
pub use report::{Checker, CheckerReport, Counts, Violation, ViolationKind};

/// How strict the checkers are, and how much they may spend.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Most configurations the linearizability search records per key
    /// before the key is declared inconclusive (each costs about 60 bytes
    /// plus its bitsets). Default 1 000 000.
    pub state_budget: usize,
    /// Threads searching keys in parallel. Default 2.
    pub threads: usize,
    /// Whether an inconclusive key fails the run. Default true: a checker
    /// that gave up proved nothing.
    pub inconclusive_fails: bool,
    /// Overlap of two lock bodies, or of two leaders' belief, that is
    /// forgiven (recording a `t` is not instantaneous). Default zero.
    pub tolerance: Duration,
    /// Longest stretch a timed-out or unfinished acquisition may have
    /// waited while no body of the lock was open. Default 30 s: choose it
    /// above the lock TTL plus a failover, and above the longest pause.
    pub grant_bound: Duration,
    /// When the run ended (monotonic ns): lock bodies and acquisitions
    /// still open then end there, and an unfinished body is no violation.
    /// Default None: they end at the last event, and an unfinished body
    /// whose node was never killed is a violation.
    pub run_end: Option<u64>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            state_budget: 1_000_000,
            threads: 2,
            inconclusive_fails: true,
            tolerance: Duration::ZERO,
            grant_bound: Duration::from_secs(30),
            run_end: None,
        }
    }
}

/// Runs every checker on `events` (in any order: they are paired by `t`).
pub fn check_all(events: &[Event], options: &CheckOptions) -> Report {
    let started = Instant::now();
    let paired = ops::pair(events);
    let [register, fenced] = linearizable::check(&paired, options);
    let checkers = vec![
        register,
        fenced,
        locks::check(&paired, options),
        elections::check(&paired, options),
        watches::check(&paired),
        counters::check(&paired),
    ];
    let mut totals = Counts::default();
    for op in &paired.ops {
        if !matches!(op.call(), Op::Nemesis { .. }) {
            totals.count(op.outcome());
        }
    }
    let failing: BTreeSet<(Checker, &str)> = checkers
        .iter()
        .flat_map(|c| &c.violations)
        .map(|v| (v.checker, v.subject.as_str()))
        .collect();
    let sub_histories = failing
        .into_iter()
        .map(|(checker, subject)| SubHistory {
            checker,
            subject: subject.to_string(),
            events: events
                .iter()
                .filter(|e| checker.sub_history_has(subject, e))
                .cloned()
                .collect(),
        })
        .collect();
    Report {
        checkers,
        malformed: paired.malformed,
        totals,
        inconclusive_fails: options.inconclusive_fails,
        sub_histories,
        elapsed: started.elapsed(),
    }
}

/// The events of one failing key, lock or election.
#[derive(Clone, Debug)]
struct SubHistory {
    checker: Checker,
    subject: String,
    events: Vec<Event>,
}

/// What every checker found in a history.
#[derive(Clone, Debug)]
pub struct Report {
    /// One report per checker, in the order of [`Checker::ALL`].
    pub checkers: Vec<CheckerReport>,
    /// Events no operation could use (each fails the run).
    pub malformed: Vec<Malformed>,
    /// Every operation of the history but the nemesis's, by outcome.
    pub totals: Counts,
    /// Whether inconclusive keys fail the run.
    pub inconclusive_fails: bool,
    /// How long checking took.
    pub elapsed: Duration,
    sub_histories: Vec<SubHistory>,
}

/// Figures of a run, for a long-run report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Operations that completed ok.
    pub ops_ok: usize,
    /// Operations that failed.
    pub ops_failed: usize,
    /// Operations whose outcome is unknown.
    pub ops_indeterminate: usize,
    /// Pairs of overlapping lock bodies.
    pub lock_overlaps: usize,
    /// Acknowledged increments missing from final counter values.
    pub lost_acknowledged_writes: u64,
    /// Keys the linearizability search gave up on.
    pub inconclusive_keys: usize,
    /// Violations that fail the run.
    pub failures: usize,
    /// Malformed events.
    pub malformed: usize,
}

impl Report {
    /// Whether the history passed every checker, with no malformed events.
    pub fn is_ok(&self) -> bool {
        self.malformed.is_empty() && self.failures().next().is_none()
    }

    /// The report of one checker.
    pub fn checker(&self, checker: Checker) -> Option<&CheckerReport> {
        self.checkers.iter().find(|c| c.checker == checker)
    }

    /// Every violation found, including inconclusive keys.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.checkers.iter().flat_map(|c| &c.violations)
    }

    /// The violations that fail the run.
    pub fn failures(&self) -> impl Iterator<Item = &Violation> {
        self.violations()
            .filter(|v| self.inconclusive_fails || v.kind != ViolationKind::Inconclusive)
    }

    /// The figures of the run.
    pub fn figures(&self) -> Figures {
        let mut figures = Figures {
            ops_ok: self.totals.ok,
            ops_failed: self.totals.failed,
            ops_indeterminate: self.totals.indeterminate,
            failures: self.failures().count(),
            malformed: self.malformed.len(),
            ..Figures::default()
        };
        for violation in self.violations() {
            match violation.kind {
                ViolationKind::Overlap { .. } => figures.lock_overlaps += 1,
                ViolationKind::LostIncrements { lost } => figures.lost_acknowledged_writes += lost,
                ViolationKind::Inconclusive => figures.inconclusive_keys += 1,
                _ => {}
            }
        }
        figures
    }

    /// Writes the sub-history of every failing key, lock or election (and
    /// every inconclusive key) to `dir` as JSON lines, one file each named
    /// `<checker>-<subject>.jsonl`; returns their paths.
    pub fn write_failing(&self, dir: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let mut paths = Vec::with_capacity(self.sub_histories.len());
        for sub in &self.sub_histories {
            let stem = format!("{}-{}", sub.checker, file_safe(&sub.subject));
            let mut path = dir.join(format!("{stem}.jsonl"));
            // Two subjects can sanitize to one name.
            let mut n = 1;
            while paths.contains(&path) {
                n += 1;
                path = dir.join(format!("{stem}-{n}.jsonl"));
            }
            write_history(&path, &sub.events)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

/// `subject` with every character unsafe in a file name replaced.
fn file_safe(subject: &str) -> String {
    let safe: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if safe.is_empty() {
        "_".into()
    } else {
        safe
    }
}

impl fmt::Display for Report {
    /// A summary table, the figures, then the first violations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>8} {:>9} {:>7} {:>13} {:>10} {:>9}",
            "checker", "subjects", "ok", "failed", "indeterminate", "violations", "time"
        )?;
        for c in &self.checkers {
            writeln!(
                f,
                "{:<10} {:>8} {:>9} {:>7} {:>13} {:>10} {:>8.2}s",
                c.checker.name(),
                c.counts.subjects,
                c.counts.ok,
                c.counts.failed,
                c.counts.indeterminate,
                c.violations.len(),
                c.elapsed.as_secs_f64(),
            )?;
        }
        let figures = self.figures();
        writeln!(
            f,
            "ops ok {}, failed {}, indeterminate {}; lock overlaps {}; lost acknowledged writes {}; \
             inconclusive keys {}; malformed events {}",
            figures.ops_ok,
            figures.ops_failed,
            figures.ops_indeterminate,
            figures.lock_overlaps,
            figures.lost_acknowledged_writes,
            figures.inconclusive_keys,
            figures.malformed,
        )?;
        if self.is_ok() {
            return writeln!(f, "OK ({:.2}s)", self.elapsed.as_secs_f64());
        }
        writeln!(
            f,
            "FAILED: {} violations, {} malformed events",
            figures.failures, figures.malformed
        )?;
        const SHOWN: usize = 10;
        for malformed in self.malformed.iter().take(SHOWN) {
            writeln!(f, "malformed: {malformed}")?;
        }
        for violation in self.failures().take(SHOWN) {
            writeln!(f, "{violation}")?;
        }
        let more = figures.failures.saturating_sub(SHOWN) + figures.malformed.saturating_sub(SHOWN);
        if more > 0 {
            writeln!(f, "... and {more} more")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// A lock overlap, a lost increment and a stale read, each on its own
    /// subject, next to healthy ones.
    fn broken_run() -> Vec<Event> {
        vec![
            invoke(1, 0, acquire("l", None, None)),
            ok(1, 1, acquire("l", Some(1), None)),
            invoke(1, 1, hold("l", 1)),
            invoke(2, 2, acquire("l", None, None)),
            ok(2, 3, acquire("l", Some(2), None)),
            invoke(2, 3, hold("l", 2)),
            ok(1, 10, hold("l", 1)),
            ok(2, 12, hold("l", 2)),
            invoke(3, 0, incr("c", None)),
            ok(3, 1, incr("c", Some(1))),
            invoke(3, 2, incr("c", None)),
            ok(3, 3, incr("c", Some(2))),
            ok(9, 20, final_read("c", 1)),
            invoke(4, 0, write("k", 1)),
            ok(4, 1, write("k", 1)),
            invoke(4, 2, read("k", None)),
            ok(4, 3, read("k", Some(0))),
            invoke(5, 0, write("fine", 1)),
            ok(5, 1, write("fine", 1)),
        ]
    }

    #[test]
    fn a_healthy_run_passes_and_its_table_says_so() {
        let events = [
            invoke(1, 0, write("k", 1)),
            ok(1, 1, write("k", 1)),
            invoke(2, 2, read("k", None)),
            ok(2, 3, read("k", Some(1))),
        ];
        let report = check_all(&events, &CheckOptions::default());
        assert!(report.is_ok(), "{report}");
        let table = report.to_string();
        assert!(table.starts_with("checker"), "{table}");
        assert!(table.contains("register          1         2"), "{table}");
        assert!(table.contains("OK"), "{table}");
        assert_eq!(report.figures().ops_ok, 2);
    }

    #[test]
    fn a_broken_run_fails_with_its_figures_and_failing_sub_histories() {
        let events = broken_run();
        let report = check_all(&events, &CheckOptions::default());
        assert!(!report.is_ok());
        let figures = report.figures();
        assert_eq!(figures.lock_overlaps, 1);
        assert_eq!(figures.lost_acknowledged_writes, 1);
        assert_eq!(figures.failures, 3, "{report}");
        let table = report.to_string();
        assert!(table.contains("FAILED: 3 violations"), "{table}");

        let dir = crate::scratch::ScratchDir::new("failing");
        let paths = report.write_failing(&dir).unwrap();
        let names: Vec<_> = paths
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect();
        assert_eq!(
            names,
            ["register-k.jsonl", "locks-l.jsonl", "counters-c.jsonl"]
        );
        let register = read_history(&paths[0]).unwrap();
        assert_eq!(register, events[13..17]);
    }

    #[test]
    fn a_malformed_event_fails_the_run() {
        let events = [ok(1, 1, write("k", 1))];
        let report = check_all(&events, &CheckOptions::default());
        assert_eq!(report.malformed.len(), 1);
        assert!(!report.is_ok());
        assert!(
            report.to_string().contains("malformed: a write completion"),
            "{report}"
        );
    }

    #[test]
    fn an_inconclusive_key_fails_the_run_unless_the_caller_opts_out() {
        // Twenty concurrent writes, then a read of a value none wrote.
        let mut events = Vec::new();
        for p in 0..20 {
            events.push(invoke(p, 0, write("k", p + 1)));
            events.push(ok(p, 100, write("k", p + 1)));
        }
        events.push(invoke(99, 0, read("k", None)));
        events.push(ok(99, 100, read("k", Some(99))));
        let strict = CheckOptions {
            state_budget: 100,
            ..CheckOptions::default()
        };
        let report = check_all(&events, &strict);
        assert_eq!(report.figures().inconclusive_keys, 1, "{report}");
        assert!(!report.is_ok());
        let lenient = CheckOptions {
            inconclusive_fails: false,
            ..strict
        };
        assert!(check_all(&events, &lenient).is_ok());
    }

    #[test]
    fn random_garbage_gives_reports_not_panics() {
        let mut rng = Rng(0xbad_5eed);
        let subjects = ["a", "b"];
        for _ in 0..300 {
            let events: Vec<Event> = (0..1 + rng.below(40))
                .map(|_| {
                    let s = subjects[rng.below(2) as usize];
                    let v = rng.below(4);
                    let maybe = |rng: &mut Rng| rng.percent(50).then(|| rng.below(4));
                    let op = match rng.below(14) {
                        0 => read(s, maybe(&mut rng)),
                        1 => write(s, v),
                        2 => cas(s, v, rng.below(4)),
                        3 => incr(s, maybe(&mut rng)),
                        4 => final_read(s, v),
                        5 => acquire(s, maybe(&mut rng), rng.percent(50).then_some("timeout")),
                        6 => hold(s, v),
                        7 => fenced(s, v),
                        8 => campaign(s, maybe(&mut rng)),
                        9 => believe(s, v),
                        10 => resign(s, v),
                        11 => watch_open(s, rng.below(2), v),
                        12 => seen(
                            s,
                            rng.below(2),
                            v,
                            ["put", "resync", "deleted"][v as usize % 3],
                        ),
                        _ => kill(&format!("n{v}")),
                    };
                    let phase =
                        [Phase::Invoke, Phase::Ok, Phase::Fail, Phase::Info][rng.below(4) as usize];
                    event(rng.below(4), rng.below(50), phase, op)
                })
                .collect();
            let report = check_all(&events, &CheckOptions::default());
            let _ = report.to_string();
        }
    }
}
