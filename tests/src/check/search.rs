//! The Wing–Gong–Lowe search for a linearization, with memoization of
//! configurations (the algorithm of Porcupine, written for our models).
//!
//! Operations are a call entry and a return entry in one time-ordered
//! doubly linked list. The search walks the list from its head: a call
//! entry is a candidate to linearize next (its operation was invoked before
//! every unlinearized operation returned); the first return entry ends the
//! candidates, because that operation must be linearized before anything
//! invoked after it returned. Linearizing an operation unlinks both its
//! entries; backtracking links them back (in reverse order, so the links
//! are exactly restored). The path is an explicit stack, never recursion.
//!
//! Indeterminate operations (no known return) are *optional*: they have no
//! return entry, may be linearized anywhere after their call or never, and
//! are tried after the required candidates, so the memo's dominance rule
//! (see [`memo`](super::memo)) prunes the configurations where they were
//! linearized for nothing. Of equal optional operations (k indeterminate
//! increments, say) only the earliest invoked is a candidate, so they are
//! not tried in every order. The search succeeds once every required
//! operation is linearized.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use super::memo::{mix, Memo};

/// A sequential specification: the state of one object and how an
/// operation, with its recorded result, changes it.
pub(crate) trait Model {
    /// The object's state (small: it is copied into every memo entry).
    type State: Copy + Eq + Hash + Debug;
    /// An operation with its arguments and recorded result.
    type Op: Debug + Eq + Hash;

    /// The state before any operation.
    fn initial(&self) -> Self::State;

    /// The state after `op` runs on `state`, or None if the recorded
    /// result is impossible from `state`.
    fn step(&self, state: Self::State, op: &Self::Op) -> Option<Self::State>;

    /// The state, for a person.
    fn describe(&self, state: Self::State) -> String {
        format!("{state:?}")
    }
}

/// One operation to linearize.
#[derive(Clone, Debug)]
pub(crate) struct Call<O> {
    /// The operation and its result.
    pub op: O,
    /// When it was invoked.
    pub invoked: u64,
    /// When it returned; None if its outcome is unknown (optional).
    pub returned: Option<u64>,
}

/// What the search concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A linearization of every required operation exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The state budget ran out first.
    Inconclusive,
}

/// The verdict, and what the search saw on the way.
#[derive(Clone, Debug)]
pub(crate) struct Searched {
    /// What it concluded.
    pub verdict: Verdict,
    /// Configurations recorded in the memo.
    pub states: usize,
    /// The linearization found with the most required operations (indices
    /// into the calls, in linearization order): complete if linearizable.
    pub longest: Vec<usize>,
}

/// Searches for a linearization of `calls` under `model`, recording at
/// most `budget` configurations.
pub(crate) fn search<M: Model>(model: &M, calls: &[Call<M::Op>], budget: usize) -> Searched {
    Search::new(model, calls).run(budget)
}

/// The end of the list.
const NIL: usize = usize::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;

/// Where the walk over candidates stands.
#[derive(Clone, Copy)]
enum Cursor {
    /// At this node of the list.
    Required(usize),
    /// At this position of the optional operations, trying those invoked
    /// by `horizon` (the first return in the list).
    Optional { position: usize, horizon: u64 },
}

/// One linearized operation on the path, and the state before it.
struct Frame<S> {
    op: usize,
    before: S,
}

struct Search<'a, M: Model> {
    model: &'a M,
    calls: &'a [Call<M::Op>],
    /// Per node (node 0 is the head): (time, is a return, operation).
    nodes: Vec<(u64, bool, usize)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per operation: its call node and return node (required only).
    call_node: Vec<usize>,
    return_node: Vec<usize>,
    /// Per operation: its bit in the required or optional bitset.
    bit: Vec<usize>,
    /// Optional operations in order of invocation.
    optional: Vec<usize>,
    /// Per operation: its position in `optional` (optional only).
    optional_position: Vec<usize>,
    /// Per optional position: the position of the previous optional
    /// operation equal to it, which must be linearized first.
    equal_before: Vec<usize>,
    /// Per operation: a random word, XORed into the hash of the required set.
    zobrist: Vec<u64>,
    required_total: usize,
    required_done: usize,
    required_bits: Vec<u64>,
    optional_bits: Vec<u64>,
    required_hash: u64,
    state: M::State,
    path: Vec<Frame<M::State>>,
    memo: Memo<M::State>,
    longest: Vec<usize>,
    longest_required: usize,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, calls: &'a [Call<M::Op>]) -> Self {
        let n = calls.len();
        let mut bit = vec![0; n];
        let (mut required_total, mut optional) = (0, Vec::new());
        let mut entries = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            match call.returned {
                Some(returned) => {
                    bit[i] = required_total;
                    required_total += 1;
                    entries.push((call.invoked, false, i));
                    // A return before the call (a broken clock) is read as
                    // a return at the call.
                    entries.push((returned.max(call.invoked), true, i));
                }
                None => optional.push(i),
            }
        }
        // Calls before returns at the same instant: touching operations
        // count as concurrent.
        entries.sort_unstable();
        optional.sort_by_key(|&i| (calls[i].invoked, i));
        let mut optional_position = vec![NIL; n];
        let mut equal_before = vec![NIL; optional.len()];
        let mut last_equal: HashMap<&M::Op, usize> = HashMap::new();
        for (position, &op) in optional.iter().enumerate() {
            optional_position[op] = position;
            bit[op] = position;
            if let Some(before) = last_equal.insert(&calls[op].op, position) {
                equal_before[position] = before;
            }
        }
        let mut nodes = Vec::with_capacity(entries.len() + 1);
        nodes.push((0, false, NIL));
        nodes.extend(entries);
        let count = nodes.len();
        let next = (0..count)
            .map(|k| if k + 1 < count { k + 1 } else { NIL })
            .collect();
        let prev = (0..count).map(|k| k.wrapping_sub(1)).collect();
        let (mut call_node, mut return_node) = (vec![NIL; n], vec![NIL; n]);
        for (k, &(_, is_return, op)) in nodes.iter().enumerate().skip(1) {
            if is_return {
                return_node[op] = k;
            } else {
                call_node[op] = k;
            }
        }
        let optional_words = optional.len().div_ceil(64).max(1);
        let required_words = required_total.div_ceil(64).max(1);
        Search {
            model,
            calls,
            nodes,
            next,
            prev,
            call_node,
            return_node,
            bit,
            optional,
            optional_position,
            equal_before,
            zobrist: (0..n as u64).map(|i| mix(i ^ 0x5eed)).collect(),
            required_total,
            required_done: 0,
            required_bits: vec![0; required_words],
            optional_bits: vec![0; optional_words],
            required_hash: 0,
            state: model.initial(),
            path: Vec::new(),
            memo: Memo::new(required_words, optional_words),
            longest: Vec::new(),
            longest_required: 0,
        }
    }

    fn run(mut self, budget: usize) -> Searched {
        let mut cursor = Cursor::Required(self.next[HEAD]);
        let verdict = loop {
            if self.required_done == self.required_total {
                self.longest = self.path.iter().map(|f| f.op).collect();
                break Verdict::Linearizable;
            }
            let (op, resume) = match cursor {
                Cursor::Required(node) => {
                    if node == NIL || self.nodes[node].1 {
                        // The required candidates end here: the optional ones next.
                        let horizon = if node == NIL {
                            u64::MAX
                        } else {
                            self.nodes[node].0
                        };
                        cursor = Cursor::Optional {
                            position: 0,
                            horizon,
                        };
                        continue;
                    }
                    (self.nodes[node].2, Cursor::Required(self.next[node]))
                }
                Cursor::Optional { position, horizon } => {
                    match self.next_optional(position, horizon) {
                        Some(position) => (
                            self.optional[position],
                            Cursor::Optional {
                                position: position + 1,
                                horizon,
                            },
                        ),
                        None => match self.backtrack() {
                            Some(resume) => {
                                cursor = resume;
                                continue;
                            }
                            None => break Verdict::NotLinearizable,
                        },
                    }
                }
            };
            if self.place(op) {
                if self.memo.len() > budget {
                    break Verdict::Inconclusive;
                }
                cursor = Cursor::Required(self.next[HEAD]);
            } else {
                cursor = resume;
            }
        };
        Searched {
            verdict,
            states: self.memo.len(),
            longest: self.longest,
        }
    }

    /// The first optional operation at or after `position`, not yet
    /// linearized, invoked by `horizon`. Of equal optional operations, only
    /// the earliest invoked not yet linearized is a candidate: it can go
    /// wherever a later one can, so trying the others too only repeats the
    /// same linearizations (k pending increments would otherwise be tried
    /// in all k! orders, and in every subset).
    fn next_optional(&self, position: usize, horizon: u64) -> Option<usize> {
        (position..self.optional.len())
            .take_while(|&p| self.calls[self.optional[p]].invoked <= horizon)
            .find(|&p| {
                let before = self.equal_before[p];
                !test_bit(&self.optional_bits, p)
                    && (before == NIL || test_bit(&self.optional_bits, before))
            })
    }

    /// Linearizes `op` next if its result fits the state and the
    /// configuration it leads to is new; returns whether it did.
    fn place(&mut self, op: usize) -> bool {
        let Some(after) = self.model.step(self.state, &self.calls[op].op) else {
            return false;
        };
        let required = self.calls[op].returned.is_some();
        if !required && after == self.state {
            // No effect: the same as never linearizing it.
            return false;
        }
        let bit = self.bit[op];
        let recorded = if required {
            set_bit(&mut self.required_bits, bit, true);
            let hash = self.required_hash ^ self.zobrist[op];
            let recorded = self
                .memo
                .insert(hash, &self.required_bits, after, &self.optional_bits);
            if recorded {
                self.required_hash = hash;
            } else {
                set_bit(&mut self.required_bits, bit, false);
            }
            recorded
        } else {
            set_bit(&mut self.optional_bits, bit, true);
            let recorded = self.memo.insert(
                self.required_hash,
                &self.required_bits,
                after,
                &self.optional_bits,
            );
            if !recorded {
                set_bit(&mut self.optional_bits, bit, false);
            }
            recorded
        };
        if !recorded {
            return false;
        }
        self.path.push(Frame {
            op,
            before: self.state,
        });
        self.state = after;
        if required {
            self.lift(op);
            self.required_done += 1;
            if self.required_done > self.longest_required {
                self.longest_required = self.required_done;
                self.longest = self.path.iter().map(|f| f.op).collect();
            }
        }
        true
    }

    /// Undoes the last linearized operation; returns where to resume
    /// among its siblings, or None if the path is empty.
    fn backtrack(&mut self) -> Option<Cursor> {
        let Frame { op, before } = self.path.pop()?;
        self.state = before;
        let bit = self.bit[op];
        if self.calls[op].returned.is_some() {
            set_bit(&mut self.required_bits, bit, false);
            self.required_hash ^= self.zobrist[op];
            self.required_done -= 1;
            self.unlift(op);
            Some(Cursor::Required(self.next[self.call_node[op]]))
        } else {
            set_bit(&mut self.optional_bits, bit, false);
            Some(Cursor::Optional {
                position: self.optional_position[op] + 1,
                horizon: self.first_return(),
            })
        }
    }

    /// The time of the first return entry in the list: every candidate
    /// was invoked by then.
    fn first_return(&self) -> u64 {
        let mut node = self.next[HEAD];
        while node != NIL {
            if self.nodes[node].1 {
                return self.nodes[node].0;
            }
            node = self.next[node];
        }
        u64::MAX
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.return_node[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.return_node[op]);
        self.relink(self.call_node[op]);
    }
}

fn test_bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register whose operations are (expected state or none, new state).
    struct Toy;

    impl Model for Toy {
        type State = u64;
        type Op = (Option<u64>, u64);

        fn initial(&self) -> u64 {
            0
        }

        fn step(&self, state: u64, &(expect, to): &(Option<u64>, u64)) -> Option<u64> {
            expect.is_none_or(|e| e == state).then_some(to)
        }
    }

    fn call(
        expect: Option<u64>,
        to: u64,
        invoked: u64,
        returned: Option<u64>,
    ) -> Call<(Option<u64>, u64)> {
        Call {
            op: (expect, to),
            invoked,
            returned,
        }
    }

    #[test]
    fn concurrent_operations_linearize_in_either_order() {
        // 0 -> 1 and 1 -> 2 overlap; the second must go after the first.
        let calls = [call(Some(1), 2, 0, Some(10)), call(Some(0), 1, 5, Some(6))];
        let found = search(&Toy, &calls, 1000);
        assert_eq!(found.verdict, Verdict::Linearizable);
        assert_eq!(found.longest, [1, 0]);
    }

    #[test]
    fn real_time_order_is_respected() {
        let calls = [call(Some(1), 2, 0, Some(4)), call(Some(0), 1, 5, Some(6))];
        let found = search(&Toy, &calls, 1000);
        assert_eq!(found.verdict, Verdict::NotLinearizable);
        assert!(found.longest.is_empty());
    }

    #[test]
    fn an_optional_operation_takes_effect_only_if_needed() {
        let needed = [call(None, 7, 0, None), call(Some(7), 8, 5, Some(6))];
        assert_eq!(search(&Toy, &needed, 1000).verdict, Verdict::Linearizable);
        let not_needed = [call(None, 7, 0, None), call(Some(0), 8, 5, Some(6))];
        assert_eq!(
            search(&Toy, &not_needed, 1000).verdict,
            Verdict::Linearizable
        );
        let too_late = [call(None, 7, 7, None), call(Some(7), 8, 5, Some(6))];
        assert_eq!(
            search(&Toy, &too_late, 1000).verdict,
            Verdict::NotLinearizable
        );
    }

    /// Whether some order of the remaining operations, each invoked
    /// before every other remaining required one returned, fits the model
    /// (optional ones may be left out): every order is tried.
    fn brute_force<M: Model>(
        model: &M,
        calls: &[Call<M::Op>],
        left: &mut Vec<usize>,
        state: M::State,
    ) -> bool {
        if left.iter().all(|&i| calls[i].returned.is_none()) {
            return true;
        }
        for k in 0..left.len() {
            let x = left[k];
            let blocked = left
                .iter()
                .any(|&y| y != x && calls[y].returned.is_some_and(|r| r < calls[x].invoked));
            if blocked {
                continue;
            }
            let Some(next) = model.step(state, &calls[x].op) else {
                continue;
            };
            left.remove(k);
            let found = brute_force(model, calls, left, next);
            left.insert(k, x);
            if found {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_search_agrees_with_trying_every_order() {
        use crate::check::linearizable::{Register, RegisterOp};
        use crate::check::testing::Rng;
        let mut rng = Rng(0x1234_5678);
        let (mut linearizable, mut not) = (0, 0);
        for _ in 0..5000 {
            let n = 1 + rng.below(7) as usize;
            let calls: Vec<Call<RegisterOp>> = (0..n)
                .map(|_| {
                    let v = rng.below(3);
                    let op = match rng.below(6) {
                        0 => RegisterOp::Read(v),
                        // Some written values nothing tests: the model merges those.
                        1 => RegisterOp::Write(rng.below(6)),
                        2 => RegisterOp::Cas {
                            from: v,
                            to: rng.below(6),
                        },
                        3 => RegisterOp::CasFailed { from: v },
                        4 => RegisterOp::IncrementedTo(v),
                        _ => RegisterOp::Increment,
                    };
                    let invoked = rng.below(20);
                    let returned = invoked + rng.below(10);
                    let optional = matches!(op, RegisterOp::Increment) || rng.percent(15);
                    let op = match op {
                        // An optional result-checking op is not recorded:
                        // make it the blind form.
                        RegisterOp::Read(_) | RegisterOp::CasFailed { .. } if optional => {
                            RegisterOp::Write(v)
                        }
                        RegisterOp::IncrementedTo(_) if optional => RegisterOp::Increment,
                        op => op,
                    };
                    Call {
                        op,
                        invoked,
                        returned: (!optional).then_some(returned),
                    }
                })
                .collect();
            let expected = brute_force(&Register::exact(), &calls, &mut (0..n).collect(), 0);
            let model = Register::for_ops(calls.iter().map(|c| &c.op));
            let found = search(&model, &calls, 1_000_000);
            let verdict = if expected {
                Verdict::Linearizable
            } else {
                Verdict::NotLinearizable
            };
            assert_eq!(found.verdict, verdict, "{calls:#?}");
            if expected {
                linearizable += 1;
                // The linearization found is one.
                let exact = Register::exact();
                let fits = found
                    .longest
                    .iter()
                    .try_fold(0, |state, &i| exact.step(state, &calls[i].op));
                assert!(fits.is_some(), "{calls:#?} {:?}", found.longest);
            } else {
                not += 1;
            }
        }
        assert!(linearizable > 300 && not > 300, "{linearizable} / {not}");
    }

    #[test]
    fn the_budget_makes_a_long_search_inconclusive() {
        // Twenty concurrent blind writes and a read of a value none wrote.
        let mut calls: Vec<_> = (1..=20).map(|v| call(None, v, 0, Some(100))).collect();
        calls.push(call(Some(99), 99, 0, Some(100)));
        let found = search(&Toy, &calls, 500);
        assert_eq!(found.verdict, Verdict::Inconclusive);
        assert!(found.states > 500);
    }
}
