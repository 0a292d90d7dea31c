//! What each checker found: counts and violations.

use std::fmt;
use std::time::Duration;

use super::history::{Event, Op};
use super::ops::Outcome;

/// One of the checkers run by [`check_all`](super::check_all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    /// Reads, writes, compare-and-sets and increments are linearizable per key.
    Register,
    /// Fenced registers accept only tokens at or above the highest accepted.
    Fenced,
    /// Lock tokens are unique and increasing, bodies do not overlap, waits end.
    Locks,
    /// At most one leader believes it leads; its tokens increase.
    Elections,
    /// Change streams are ordered, start where they say and have no gaps.
    Watches,
    /// Final counter values keep every acknowledged increment.
    Counters,
}

impl Checker {
    /// Every checker, in report order.
    pub const ALL: [Checker; 6] = [
        Checker::Register,
        Checker::Fenced,
        Checker::Locks,
        Checker::Elections,
        Checker::Watches,
        Checker::Counters,
    ];

    /// Its name in reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Checker::Register => "register",
            Checker::Fenced => "fenced",
            Checker::Locks => "locks",
            Checker::Elections => "elections",
            Checker::Watches => "watches",
            Checker::Counters => "counters",
        }
    }

    /// Whether the checker reads this kind of operation.
    pub(crate) fn covers(self, op: &Op) -> bool {
        match self {
            Checker::Register => matches!(
                op,
                Op::Read { .. } | Op::Write { .. } | Op::Cas { .. } | Op::Incr { .. }
            ),
            Checker::Fenced => matches!(op, Op::Fenced { .. }),
            Checker::Locks => matches!(op, Op::Acquire { .. } | Op::Hold { .. } | Op::Left { .. }),
            Checker::Elections => matches!(
                op,
                Op::Campaign { .. } | Op::Believe { .. } | Op::Resign { .. }
            ),
            Checker::Watches => matches!(op, Op::WatchOpen { .. } | Op::Seen { .. }),
            Checker::Counters => matches!(op, Op::Incr { .. } | Op::FinalRead { .. }),
        }
    }

    /// Whether this event belongs in the sub-history of `subject` for this
    /// checker (faults are context for locks and elections).
    pub(crate) fn sub_history_has(self, subject: &str, event: &Event) -> bool {
        let faults = matches!(self, Checker::Locks | Checker::Elections)
            && matches!(event.op, Op::Nemesis { .. });
        faults || (self.covers(&event.op) && event.op.subject() == subject)
    }
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Operations a checker read, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys, locks or elections checked.
    pub subjects: usize,
    /// Operations (and point events) that completed ok.
    pub ok: usize,
    /// Operations that failed.
    pub failed: usize,
    /// Operations whose outcome is unknown (info, or never completed).
    pub indeterminate: usize,
}

impl Counts {
    pub(crate) fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.failed += 1,
            Outcome::Info | Outcome::Pending => self.indeterminate += 1,
        }
    }
}

/// The rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// No linearization of the key's operations exists.
    NotLinearizable,
    /// The search ran out of budget before deciding (a failure of the run
    /// unless the options say otherwise).
    Inconclusive,
    /// Two grants (or election wins) got the same token.
    DuplicateToken,
    /// A grant completed before another was invoked, with a higher token.
    TokenWentBackwards,
    /// Two lock bodies with different tokens ran at the same time, by this
    /// much beyond the tolerance.
    Overlap {
        /// How far one body would have to move to clear the other, minus
        /// the tolerance.
        by: Duration,
    },
    /// A lock body never ended, and its node was never killed.
    BodyNeverEnded,
    /// An acquisition waited at least the grant bound while the lock was free.
    NotGranted,
    /// Two leaders believed they lead at the same time.
    TwoLeaders,
    /// A watcher's items went backwards.
    RevisionOrder,
    /// A watcher delivered an event at or before the revision it started after.
    EventBeforeStart,
    /// A watcher skipped events without a resync.
    Gap,
    /// Two watchers saw one revision as different kinds of event.
    Disagreement,
    /// A final read of a counter is below its acknowledged increments.
    LostIncrements {
        /// Acknowledged increments missing.
        lost: u64,
    },
    /// A final read of a counter is above every increment that may have happened.
    TooManyIncrements,
}

/// One broken rule, with the events involved.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The checker that found it.
    pub checker: Checker,
    /// The key, lock or election.
    pub subject: String,
    /// The rule broken.
    pub kind: ViolationKind,
    /// What happened, for a person.
    pub message: String,
    /// The events involved.
    pub events: Vec<Event>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.checker, self.message.trim_end())
    }
}

/// What one checker found.
#[derive(Clone, Debug)]
pub struct CheckerReport {
    /// Which checker.
    pub checker: Checker,
    /// The operations it read.
    pub counts: Counts,
    /// What it found wrong.
    pub violations: Vec<Violation>,
    /// Search configurations recorded (linearizability checkers only).
    pub states_explored: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl CheckerReport {
    pub(crate) fn new(checker: Checker) -> Self {
        CheckerReport {
            checker,
            counts: Counts::default(),
            violations: Vec::new(),
            states_explored: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Records a violation.
    pub(crate) fn violation(
        &mut self,
        subject: &str,
        kind: ViolationKind,
        message: String,
        events: Vec<Event>,
    ) {
        self.violations.push(Violation {
            checker: self.checker,
            subject: subject.to_string(),
            kind,
            message,
            events,
        });
    }
}
