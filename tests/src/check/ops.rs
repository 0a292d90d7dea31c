//! Pairing events into operations: an invocation with its completion, or
//! a point event alone. Every checker reads the history through this.

use std::collections::HashMap;
use std::fmt;

use super::history::{Event, Op, Phase};

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Completed `ok`.
    Ok,
    /// Completed `fail`: it did not happen.
    Fail,
    /// Completed `info`: unknown.
    Info,
    /// Invoked and never completed: unknown too.
    Pending,
}

impl Outcome {
    /// Whether it may or may not have happened.
    pub(crate) fn is_indeterminate(self) -> bool {
        matches!(self, Outcome::Info | Outcome::Pending)
    }
}

/// An invocation and its completion, or a point event (no invocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operation<'a> {
    /// The invocation, or the point event.
    start: &'a Event,
    /// The completion; for a point event, the event itself.
    completion: Option<&'a Event>,
}

impl<'a> Operation<'a> {
    /// The invocation, if the operation has one.
    pub(crate) fn invoke(&self) -> Option<&'a Event> {
        let point = self.completion.is_some_and(|c| std::ptr::eq(c, self.start));
        (!point).then_some(self.start)
    }

    /// The completion, or the point event; None if pending.
    pub(crate) fn completion(&self) -> Option<&'a Event> {
        self.completion
    }

    /// The operation as invoked (or as the point event has it).
    pub(crate) fn call(&self) -> &'a Op {
        &self.start.op
    }

    /// The operation as completed, with its results (None if pending).
    pub(crate) fn result(&self) -> Option<&'a Op> {
        self.completion.map(|e| &e.op)
    }

    /// The process that ran it.
    pub(crate) fn process(&self) -> u64 {
        self.start.process
    }

    /// The node it ran on.
    pub(crate) fn node(&self) -> &'a str {
        &self.start.node
    }

    /// When it was invoked (a point event: when it happened).
    pub(crate) fn invoked(&self) -> u64 {
        self.start.t
    }

    /// When it completed, if it did.
    pub(crate) fn completed(&self) -> Option<u64> {
        self.completion.map(|e| e.t)
    }

    /// How it ended.
    pub(crate) fn outcome(&self) -> Outcome {
        match self.completion.map(|e| e.phase) {
            None | Some(Phase::Invoke) => Outcome::Pending,
            Some(Phase::Ok) => Outcome::Ok,
            Some(Phase::Fail) => Outcome::Fail,
            Some(Phase::Info) => Outcome::Info,
        }
    }

    /// The events of the operation, in order.
    pub(crate) fn events(&self) -> impl Iterator<Item = &'a Event> {
        self.invoke().into_iter().chain(self.completion)
    }
}

impl fmt::Display for Operation<'_> {
    /// `p3@n1 write(k, 7) ok [1.000000200s, 1.000000900s]`: for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}@{} ", self.process(), self.node())?;
        match (self.call(), self.result()) {
            (Op::Read { key, .. }, Some(Op::Read { value: Some(v), .. })) => {
                write!(f, "read({key}) -> {v}")?
            }
            (Op::Read { key, .. }, _) => write!(f, "read({key})")?,
            (Op::Write { key, value }, _) => write!(f, "write({key}, {value})")?,
            (Op::Cas { key, from, to }, _) => write!(f, "cas({key}, {from} -> {to})")?,
            (Op::Incr { key, .. }, Some(Op::Incr { value: Some(v), .. })) => {
                write!(f, "incr({key}) -> {v}")?
            }
            (Op::Incr { key, .. }, _) => write!(f, "incr({key})")?,
            (Op::FinalRead { key, value }, _) => write!(f, "final_read({key}) -> {value}")?,
            (Op::Acquire { lock, .. }, result) => {
                write!(f, "acquire({lock})")?;
                if let Some(Op::Acquire {
                    token: Some(token), ..
                }) = result
                {
                    write!(f, " -> token {token}")?;
                }
            }
            (Op::Hold { lock, token, .. }, _) => write!(f, "hold({lock}, token {token})")?,
            (Op::Left { lock, token }, _) => write!(f, "left({lock}, token {token})")?,
            (Op::Fenced { key, token }, _) => write!(f, "fenced({key}, token {token})")?,
            (Op::Campaign { election, .. }, result) => {
                write!(f, "campaign({election})")?;
                if let Some(Op::Campaign {
                    token: Some(token), ..
                }) = result
                {
                    write!(f, " -> token {token}")?;
                }
            }
            (Op::Believe { election, token }, _) => {
                write!(f, "believe({election}, token {token})")?
            }
            (
                Op::Resign {
                    election, token, ..
                },
                _,
            ) => write!(f, "resign({election}, token {token})")?,
            (
                Op::WatchOpen {
                    key,
                    watcher,
                    after,
                },
                _,
            ) => write!(f, "watch_open({key}, watcher {watcher}, after {after})")?,
            (
                Op::Seen {
                    key,
                    watcher,
                    revision,
                    kind,
                },
                _,
            ) => write!(f, "seen({key}, watcher {watcher}, {kind} at {revision})")?,
            (Op::Nemesis { action, nodes }, _) => write!(f, "nemesis {action} {nodes:?}")?,
        }
        let outcome = match self.outcome() {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
            Outcome::Pending => "pending",
        };
        write!(f, " {outcome}")?;
        if let Some(Some(error)) = self.result().map(error_text) {
            write!(f, " ({error})")?;
        }
        match (self.invoke(), self.completion) {
            (Some(i), Some(c)) => write!(f, " [{}, {}]", Secs(i.t), Secs(c.t)),
            (Some(i), None) => write!(f, " [{}, never]", Secs(i.t)),
            (None, _) => write!(f, " at {}", Secs(self.start.t)),
        }
    }
}

/// The error text of a completion, if it has one.
pub(crate) fn error_text(op: &Op) -> Option<&str> {
    match op {
        Op::Acquire { error, .. } | Op::Hold { error, .. } | Op::Campaign { error, .. } => {
            error.as_deref()
        }
        Op::Resign { error, .. } => error.as_deref(),
        _ => None,
    }
}

/// A monotonic timestamp shown as seconds with nanoseconds: exact, and
/// readable next to the `t` of the JSON lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Secs(pub u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// An event the checkers cannot use, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Malformed {
    /// The event.
    pub event: Event,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = serde_json::to_string(&self.event).unwrap_or_else(|e| e.to_string());
        write!(f, "{}: {line}", self.reason)
    }
}

/// A history read as operations.
pub(crate) struct Paired<'a> {
    /// The events, in the order given.
    pub events: &'a [Event],
    /// Every operation, in order of its first event's `t`.
    pub ops: Vec<Operation<'a>>,
    /// Events that fit no operation.
    pub malformed: Vec<Malformed>,
    /// The latest `t` in the history (0 if empty).
    pub end: u64,
}

/// Whether an operation of this kind is one event with no invocation.
fn is_point(op: &Op) -> bool {
    matches!(
        op,
        Op::FinalRead { .. }
            | Op::Left { .. }
            | Op::Believe { .. }
            | Op::Resign { .. }
            | Op::WatchOpen { .. }
            | Op::Seen { .. }
            | Op::Nemesis { .. }
    )
}

/// Pairs each completion with the latest invocation of the same kind by
/// the same process. An invocation replaced by a later one of its kind
/// before completing stays pending (unknown outcome).
pub(crate) fn pair(events: &[Event]) -> Paired<'_> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].t);
    let mut ops: Vec<Operation<'_>> = Vec::with_capacity(events.len() / 2 + 1);
    let mut malformed = Vec::new();
    // (process, kind) -> index in `ops` of the pending invocation.
    let mut pending: HashMap<(u64, &'static str), usize> = HashMap::new();
    for &i in &order {
        let event = &events[i];
        let mut reject = |reason: String| {
            malformed.push(Malformed {
                event: event.clone(),
                reason,
            })
        };
        let kind = event.op.name();
        if is_point(&event.op) {
            if let Some(reason) = point_phase_problem(&event.op, event.phase) {
                reject(reason);
                continue;
            }
            ops.push(Operation {
                start: event,
                completion: Some(event),
            });
            continue;
        }
        if event.phase == Phase::Invoke {
            if let Some(reason) = invocation_problem(&event.op) {
                reject(reason);
                continue;
            }
            pending.insert((event.process, kind), ops.len());
            ops.push(Operation {
                start: event,
                completion: None,
            });
            continue;
        }
        let Some(at) = pending.remove(&(event.process, kind)) else {
            reject(format!(
                "a {kind} completion with no pending {kind} invocation by process {}",
                event.process
            ));
            continue;
        };
        let invoked = ops[at].call();
        if let Some(reason) = completion_problem(invoked, event) {
            reject(reason);
            // The invocation stays pending: its completion is unusable.
            continue;
        }
        ops[at].completion = Some(event);
    }
    Paired {
        events,
        ops,
        malformed,
        end: events.iter().map(|e| e.t).max().unwrap_or(0),
    }
}

/// Why a point event has a phase it cannot have.
fn point_phase_problem(op: &Op, phase: Phase) -> Option<String> {
    let allowed = match op {
        Op::Resign { .. } => matches!(phase, Phase::Ok | Phase::Fail),
        Op::Nemesis { .. } => true,
        _ => phase == Phase::Ok,
    };
    (!allowed).then(|| format!("a {} event cannot have phase {phase:?}", op.name()))
}

/// Why an invocation is unusable: results it cannot know yet.
fn invocation_problem(op: &Op) -> Option<String> {
    let has_result = match op {
        Op::Read { value, .. } | Op::Incr { value, .. } => value.is_some(),
        Op::Acquire { token, .. } | Op::Campaign { token, .. } => token.is_some(),
        _ => false,
    };
    has_result.then(|| format!("a {} invocation with a result", op.name()))
}

/// Why `completion` cannot complete an invocation of `invoked`: another
/// subject or other arguments, or an ok without its result.
fn completion_problem(invoked: &Op, completion: &Event) -> Option<String> {
    let done = &completion.op;
    if invoked.subject() != done.subject() {
        return Some(format!(
            "completes an invocation on {:?}, not {:?}",
            invoked.subject(),
            done.subject()
        ));
    }
    let same_arguments = match (invoked, done) {
        (Op::Write { value: a, .. }, Op::Write { value: b, .. }) => a == b,
        (Op::Cas { from: a, to: c, .. }, Op::Cas { from: b, to: d, .. }) => a == b && c == d,
        (Op::Hold { token: a, .. }, Op::Hold { token: b, .. })
        | (Op::Fenced { token: a, .. }, Op::Fenced { token: b, .. }) => a == b,
        _ => true,
    };
    if !same_arguments {
        return Some("completes an invocation with other arguments".into());
    }
    let ok_without_result = completion.phase == Phase::Ok
        && match done {
            Op::Read { value, .. } | Op::Incr { value, .. } => value.is_none(),
            Op::Acquire { token, .. } | Op::Campaign { token, .. } => token.is_none(),
            _ => false,
        };
    ok_without_result.then(|| format!("an ok {} without its result", done.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::*;

    #[test]
    fn completions_pair_with_the_latest_invocation_of_their_kind() {
        let events = [
            invoke(1, 0, write("k", 1)),
            invoke(1, 5, write("k", 2)),
            invoke(1, 6, hold("l", 3)),
            ok(1, 7, write("k", 2)),
            fail(1, 9, hold("l", 3)),
        ];
        let paired = pair(&events);
        assert!(paired.malformed.is_empty(), "{:?}", paired.malformed);
        let outcomes: Vec<_> = paired.ops.iter().map(|o| o.outcome()).collect();
        assert_eq!(outcomes, [Outcome::Pending, Outcome::Ok, Outcome::Fail]);
        assert_eq!(paired.ops[1].completed(), Some(7));
        assert_eq!(paired.end, 9);
    }

    #[test]
    fn unusable_events_are_reported_not_used() {
        let events = [
            ok(1, 1, write("k", 1)),
            invoke(2, 2, write("k", 1)),
            ok(2, 3, write("other", 1)),
            invoke(3, 4, read("k", None)),
            ok(3, 5, read("k", None)),
            invoke(4, 6, final_read("k", 3)),
        ];
        let paired = pair(&events);
        assert_eq!(paired.malformed.len(), 4, "{:#?}", paired.malformed);
        assert!(paired.ops.iter().all(|o| o.outcome() == Outcome::Pending));
    }
}
