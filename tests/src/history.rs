//! Recording concurrent histories and checking that they are linearizable.
//!
//! A history is a list of operations on one register, each with the instant
//! it was invoked and the instant it returned. It is linearizable if every
//! operation can be placed at one point between its invocation and its
//! return so that the results match a sequential register. The check is a
//! Wing–Gong–Lowe search with memoization of (operations done, state), as
//! in Porcupine.

use std::collections::HashSet;
use std::time::Instant;

/// An operation on a `u64` register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value.
    Read(u64),
    /// A write of this value.
    Write(u64),
    /// An atomic increment that returned the new value.
    Increment(u64),
}

/// One completed operation.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Which client ran it.
    pub client: usize,
    /// What it did and what it returned.
    pub op: RegisterOp,
    /// When it was invoked.
    pub invoked: Instant,
    /// When it returned.
    pub returned: Instant,
}

/// Collects entries from concurrent clients.
#[derive(Default)]
pub struct Recorder(std::sync::Mutex<Vec<Entry>>);

impl Recorder {
    /// Records one completed operation.
    pub fn push(&self, entry: Entry) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    /// Takes the recorded history.
    pub fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl RegisterOp {
    /// Applies the operation to `state`: the new state if its result is
    /// consistent with `state`.
    fn step(self, state: u64) -> Option<u64> {
        match self {
            RegisterOp::Read(v) => (v == state).then_some(state),
            RegisterOp::Write(v) => Some(v),
            RegisterOp::Increment(v) => (state.checked_add(1) == Some(v)).then_some(v),
        }
    }
}

/// Whether `history` (at most 128 operations) is linearizable from `initial`.
/// On failure, returns the longest linearizable prefix found, for the test
/// message.
pub fn check_linearizable(initial: u64, history: &[Entry]) -> Result<(), Vec<Entry>> {
    assert!(
        history.len() <= 128,
        "the checker handles at most 128 operations"
    );
    let mut search = Search {
        history,
        seen: HashSet::new(),
        best: Vec::new(),
        path: Vec::new(),
    };
    if search.run(0, initial) {
        Ok(())
    } else {
        Err(search.best.iter().map(|i| history[*i]).collect())
    }
}

struct Search<'a> {
    history: &'a [Entry],
    seen: HashSet<(u128, u64)>,
    best: Vec<usize>,
    path: Vec<usize>,
}

impl Search<'_> {
    fn run(&mut self, done: u128, state: u64) -> bool {
        let all = if self.history.len() == 128 {
            u128::MAX
        } else {
            (1u128 << self.history.len()) - 1
        };
        if done == all {
            return true;
        }
        if !self.seen.insert((done, state)) {
            return false;
        }
        if self.path.len() > self.best.len() {
            self.best = self.path.clone();
        }
        // An operation can go next only if it was invoked before every
        // pending operation returned.
        let horizon = self
            .history
            .iter()
            .enumerate()
            .filter(|(i, _)| done & (1 << i) == 0)
            .map(|(_, e)| e.returned)
            .min();
        let Some(horizon) = horizon else { return true };
        for (i, entry) in self.history.iter().enumerate() {
            if done & (1 << i) != 0 || entry.invoked > horizon {
                continue;
            }
            if let Some(next) = entry.op.step(state) {
                self.path.push(i);
                if self.run(done | (1 << i), next) {
                    return true;
                }
                self.path.pop();
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(base: Instant, client: usize, op: RegisterOp, from: u64, to: u64) -> Entry {
        Entry {
            client,
            op,
            invoked: base + Duration::from_millis(from),
            returned: base + Duration::from_millis(to),
        }
    }

    #[test]
    fn accepts_overlapping_operations_in_either_order() {
        let t = Instant::now();
        let h = [
            at(t, 0, RegisterOp::Write(1), 0, 10),
            at(t, 1, RegisterOp::Read(1), 5, 6),
            at(t, 2, RegisterOp::Read(0), 1, 7),
            at(t, 0, RegisterOp::Increment(2), 11, 12),
        ];
        assert!(check_linearizable(0, &h).is_ok());
    }

    #[test]
    fn rejects_a_stale_read_after_a_write_returned() {
        let t = Instant::now();
        let h = [
            at(t, 0, RegisterOp::Write(1), 0, 1),
            at(t, 1, RegisterOp::Read(0), 2, 3),
        ];
        assert!(check_linearizable(0, &h).is_err());
    }

    #[test]
    fn rejects_a_lost_increment() {
        let t = Instant::now();
        let h = [
            at(t, 0, RegisterOp::Increment(1), 0, 5),
            at(t, 1, RegisterOp::Increment(1), 1, 6),
        ];
        assert!(check_linearizable(0, &h).is_err());
    }
}
