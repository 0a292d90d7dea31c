//! Time intervals: how much two overlap, and the gaps a set leaves.

use std::time::Duration;

/// A duration in nanoseconds of the history's clock (saturating).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A closed interval of monotonic time, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interval {
    pub start: u64,
    pub end: u64,
}

impl Interval {
    /// The interval from `start` to `end` (an `end` before `start` is read
    /// as `start`: a broken clock makes an empty interval, not a huge one).
    pub(crate) fn new(start: u64, end: u64) -> Self {
        Interval {
            start,
            end: end.max(start),
        }
    }
}

/// How far one interval would have to move to clear the other: 0 if they
/// are disjoint or only touch. Unlike the length of the intersection, this
/// is positive for an instant strictly inside an interval (a point sample
/// taken while another term was open).
pub(crate) fn overlap(a: Interval, b: Interval) -> u64 {
    (a.end.saturating_sub(b.start)).min(b.end.saturating_sub(a.start))
}

/// The parts of `within` that no interval of `busy` covers, in order.
pub(crate) fn gaps(within: Interval, busy: &[Interval]) -> Vec<Interval> {
    let mut busy: Vec<Interval> = busy
        .iter()
        .filter(|b| b.end > within.start && b.start < within.end)
        .copied()
        .collect();
    busy.sort_by_key(|b| b.start);
    let mut gaps = Vec::new();
    let mut free_from = within.start;
    for b in busy {
        if b.start > free_from {
            gaps.push(Interval::new(free_from, b.start));
        }
        free_from = free_from.max(b.end);
    }
    if within.end > free_from {
        gaps.push(Interval::new(free_from, within.end));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(start: u64, end: u64) -> Interval {
        Interval::new(start, end)
    }

    #[test]
    fn overlap_is_the_shift_that_separates() {
        assert_eq!(overlap(i(0, 5), i(5, 10)), 0, "touching");
        assert_eq!(overlap(i(0, 5), i(6, 10)), 0, "disjoint");
        assert_eq!(overlap(i(0, 10), i(2, 12)), 8);
        assert_eq!(overlap(i(0, 10), i(5, 5)), 5, "a point inside");
        assert_eq!(overlap(i(0, 10), i(2, 3)), 3);
        assert_eq!(overlap(i(2, 3), i(0, 10)), 3, "symmetric");
    }

    #[test]
    fn gaps_are_what_busy_intervals_leave_free() {
        let busy = [i(10, 20), i(15, 30), i(40, 50), i(90, 200)];
        assert_eq!(gaps(i(0, 100), &busy), [i(0, 10), i(30, 40), i(50, 90)]);
        assert_eq!(gaps(i(12, 28), &busy), []);
        assert_eq!(gaps(i(0, 5), &[]), [i(0, 5)]);
    }
}
