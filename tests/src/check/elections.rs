//! Elections: at most one leader believes it leads at any time, and the
//! tokens of successive winners increase.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::history::{Event, Op};
use super::intervals::{nanos, overlap, Interval};
use super::ops::{Operation, Outcome, Paired, Secs};
use super::report::{Checker, CheckerReport, ViolationKind};
use super::tokens::{check_tokens, Grant};
use super::CheckOptions;

/// One leadership term (one token) and what its leader recorded.
#[derive(Default)]
struct Term<'p, 'a> {
    /// The campaign that won it.
    won: Option<&'p Operation<'a>>,
    /// Its belief samples.
    believes: Vec<&'p Operation<'a>>,
    /// Its end: resigned (ok) or told lost (fail).
    ended: Vec<&'p Operation<'a>>,
}

impl Term<'_, '_> {
    /// From winning to the last moment its leader believed it led: the
    /// last belief sample, or its resignation. Being told it was lost
    /// ends it too, but proves no belief up to then.
    fn belief(&self) -> Option<Interval> {
        let samples = self.believes.iter().map(|b| b.invoked());
        let resigned = self
            .ended
            .iter()
            .filter(|r| r.outcome() == Outcome::Ok)
            .map(|r| r.invoked());
        let won = self.won.and_then(|c| c.completed());
        let start = won.or_else(|| samples.clone().chain(resigned.clone()).min())?;
        let end = samples.chain(resigned).max().unwrap_or(start);
        Some(Interval::new(start, end))
    }

    fn events(&self) -> impl Iterator<Item = &Event> + '_ {
        self.won
            .into_iter()
            .chain(self.believes.iter().copied())
            .chain(self.ended.iter().copied())
            .flat_map(|op| op.events())
    }
}

#[derive(Default)]
struct ElectionOps<'p, 'a> {
    campaigns: Vec<&'p Operation<'a>>,
    terms: BTreeMap<u64, Term<'p, 'a>>,
}

/// Checks every election of the history: the tokens of winning campaigns
/// are unique and increase in real time, and no two terms' belief
/// intervals overlap by more than the tolerance.
pub(crate) fn check(paired: &Paired<'_>, options: &CheckOptions) -> CheckerReport {
    let started = Instant::now();
    let mut report = CheckerReport::new(Checker::Elections);
    let mut elections: BTreeMap<&str, ElectionOps<'_, '_>> = BTreeMap::new();
    for op in &paired.ops {
        match op.call() {
            Op::Campaign { election, .. } => {
                let e = elections.entry(election).or_default();
                e.campaigns.push(op);
                if let (Outcome::Ok, Some(Op::Campaign { token: Some(t), .. })) =
                    (op.outcome(), op.result())
                {
                    e.terms.entry(*t).or_default().won.get_or_insert(op);
                }
            }
            Op::Believe { election, token } => {
                let e = elections.entry(election).or_default();
                e.terms.entry(*token).or_default().believes.push(op);
            }
            Op::Resign {
                election, token, ..
            } => {
                let e = elections.entry(election).or_default();
                e.terms.entry(*token).or_default().ended.push(op);
            }
            _ => continue,
        }
        report.counts.count(op.outcome());
    }
    report.counts.subjects = elections.len();
    let tolerance = nanos(options.tolerance);
    for (election, ops) in &elections {
        // Every winning campaign, so two wins of one token are both seen.
        let wins: Vec<Grant<'_, '_>> = ops
            .campaigns
            .iter()
            .filter_map(|op| match (op.outcome(), op.result()) {
                (
                    Outcome::Ok,
                    Some(Op::Campaign {
                        token: Some(token), ..
                    }),
                ) => Some(Grant { token: *token, op }),
                _ => None,
            })
            .collect();
        check_tokens(&mut report, election, &wins);

        let mut terms: Vec<(u64, &Term<'_, '_>, Interval)> = ops
            .terms
            .iter()
            .filter_map(|(token, term)| Some((*token, term, term.belief()?)))
            .collect();
        terms.sort_by_key(|(_, _, belief)| belief.start);
        for (i, (token_a, a, belief_a)) in terms.iter().enumerate() {
            for (token_b, b, belief_b) in &terms[i + 1..] {
                if belief_b.start > belief_a.end {
                    break;
                }
                let by = overlap(*belief_a, *belief_b);
                if by <= tolerance {
                    continue;
                }
                let message = format!(
                    "{election:?}: terms {token_a} and {token_b} both believed they led, \
                     overlapping by {:?} beyond the tolerance:\n  {}\n  {}",
                    Duration::from_nanos(by - tolerance),
                    describe(*token_a, a, *belief_a),
                    describe(*token_b, b, *belief_b),
                );
                let events = a.events().chain(b.events()).cloned().collect();
                report.violation(election, ViolationKind::TwoLeaders, message, events);
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

fn describe(token: u64, term: &Term<'_, '_>, belief: Interval) -> String {
    let won = match term.won {
        Some(op) => op.to_string(),
        None => "no winning campaign recorded".into(),
    };
    format!(
        "token {token}: believed from {} to {} ({} samples); {won}",
        Secs(belief.start),
        Secs(belief.end),
        term.believes.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ops::pair;
    use crate::check::testing::*;

    fn kinds(events: &[Event]) -> Vec<ViolationKind> {
        let paired = pair(events);
        assert!(paired.malformed.is_empty(), "{:?}", paired.malformed);
        let report = check(&paired, &CheckOptions::default());
        for v in &report.violations {
            eprintln!("{v}");
        }
        report.violations.iter().map(|v| v.kind).collect()
    }

    /// Process `p` campaigns from `a`, wins `token` at `b`, believes at
    /// each of `samples`.
    fn term(p: u64, token: u64, a: u64, b: u64, samples: &[u64]) -> Vec<Event> {
        let mut events = vec![
            invoke(p, a, campaign("e", None)),
            ok(p, b, campaign("e", Some(token))),
        ];
        events.extend(samples.iter().map(|&t| ok(p, t, believe("e", token))));
        events
    }

    #[test]
    fn leaders_in_turn_pass() {
        let mut events = term(1, 1, 0, 1, &[2, 5, 9]);
        events.push(ok(1, 10, resign("e", 1)));
        events.extend(term(2, 2, 3, 11, &[12, 20]));
        // Told lost at 30 after its last belief at 20; the next won at 25.
        events.push(fail(2, 30, resign("e", 2)));
        events.extend(term(3, 3, 13, 25, &[26]));
        assert_eq!(kinds(&events), []);
    }

    #[test]
    fn two_believed_leaders_are_rejected() {
        let mut events = term(1, 1, 0, 1, &[2, 15]);
        events.extend(term(2, 2, 3, 10, &[11]));
        assert_eq!(kinds(&events), [ViolationKind::TwoLeaders]);
    }

    #[test]
    fn a_win_inside_another_term_is_rejected_even_with_no_sample() {
        let mut events = term(1, 1, 0, 1, &[20]);
        events.extend(term(2, 2, 3, 10, &[]));
        assert_eq!(kinds(&events), [ViolationKind::TwoLeaders]);
    }

    #[test]
    fn a_resignation_extends_the_belief() {
        let mut events = term(1, 1, 0, 1, &[2]);
        events.push(ok(1, 15, resign("e", 1)));
        events.extend(term(2, 2, 3, 10, &[16]));
        assert_eq!(kinds(&events), [ViolationKind::TwoLeaders]);
    }

    #[test]
    fn a_leadership_token_that_went_backwards_is_rejected() {
        let mut events = term(1, 5, 0, 1, &[2]);
        events.push(ok(1, 3, resign("e", 5)));
        events.extend(term(2, 4, 4, 5, &[6]));
        assert_eq!(kinds(&events), [ViolationKind::TokenWentBackwards]);
    }
}
