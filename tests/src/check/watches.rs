//! Change streams: each watcher's items are ordered, start after the
//! revision the watcher was opened after, and skip no event without a
//! resync; watchers agree on what each revision was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::history::{Event, Op, Phase};
use super::ops::Paired;
use super::report::{Checker, CheckerReport, ViolationKind};

/// The kind of a resync item; every other kind is an event.
const RESYNC: &str = "resync";

/// Where one watcher's stream stands.
struct Stream<'a> {
    /// Its `WatchOpen`, if one was recorded.
    opened: Option<&'a Event>,
    /// Every event it delivers must be above this.
    after: u64,
    /// Everything up to here was delivered or covered by a resync; None
    /// right after a resync to an absent record (which says nothing of
    /// the revisions it covers).
    covered: Option<u64>,
    /// The item before, and the highest revision delivered so far.
    previous: Option<(&'a Event, u64)>,
}

/// Checks every watched key of the history. Per watcher, in the order its
/// items appear in the history (one task writes them):
///
/// - event revisions strictly increase, and a resync does not go below the
///   revision before it (a resync to an absent record has revision 0 and
///   is exempt);
/// - no event is at or below the `after` of its `WatchOpen`;
/// - no gap: every event revision any watcher saw on the key, between the
///   previous item and an event, was delivered (from the first item on:
///   a watch opened after revision `after` may start anywhere above it). A resync at revision r
///   covers what it skipped up to r; one to an absent record covers up to
///   the next event.
///
/// And two watchers that saw one revision of a key saw the same kind.
///
/// A watcher's items before any `WatchOpen` are checked as if it were
/// opened after revision 0 with nothing known covered; a second
/// `WatchOpen` for the same watcher starts its stream anew. Nothing can
/// tell a watcher that stopped early from one that ended with the run, so
/// events after a watcher's last item are not counted as missed.
pub(crate) fn check(paired: &Paired<'_>) -> CheckerReport {
    let started = Instant::now();
    let mut report = CheckerReport::new(Checker::Watches);
    // Per key, per watcher: its WatchOpen and Seen events, in file order.
    let mut keys: BTreeMap<&str, BTreeMap<u64, Vec<&Event>>> = BTreeMap::new();
    for event in paired.events {
        let watcher = match &event.op {
            Op::WatchOpen { watcher, .. } | Op::Seen { watcher, .. } => *watcher,
            _ => continue,
        };
        if event.phase != Phase::Ok {
            // Pairing reported it as malformed.
            continue;
        }
        report.counts.ok += 1;
        let key = event.op.subject();
        keys.entry(key)
            .or_default()
            .entry(watcher)
            .or_default()
            .push(event);
    }
    report.counts.subjects = keys.len();
    for (key, watchers) in &keys {
        let seen_events: BTreeSet<u64> = watchers
            .values()
            .flatten()
            .filter_map(|e| match &e.op {
                Op::Seen { revision, kind, .. } if kind != RESYNC => Some(*revision),
                _ => None,
            })
            .collect();
        for (watcher, items) in watchers {
            check_stream(&mut report, key, *watcher, items, &seen_events);
        }
        check_agreement(&mut report, key, watchers);
    }
    report.elapsed = started.elapsed();
    report
}

fn check_stream(
    report: &mut CheckerReport,
    key: &str,
    watcher: u64,
    items: &[&Event],
    seen_events: &BTreeSet<u64>,
) {
    let mut stream = Stream {
        opened: None,
        after: 0,
        covered: None,
        previous: None,
    };
    for &item in items {
        let (revision, kind) = match &item.op {
            Op::WatchOpen { after, .. } => {
                // A watch of what commits from now on starts somewhere
                // above `after` (the read before it was opened): what
                // committed in between may or may not be delivered, so its
                // stream is complete only from its first item on.
                stream = Stream {
                    opened: Some(item),
                    after: *after,
                    covered: None,
                    previous: None,
                };
                continue;
            }
            Op::Seen { revision, kind, .. } => (*revision, kind.as_str()),
            _ => continue,
        };
        let mut violation = |kind: ViolationKind, what: String, also: Option<&Event>| {
            let mut events: Vec<Event> = stream.opened.into_iter().cloned().collect();
            events.extend(also.cloned());
            events.push(item.clone());
            let message = format!(
                "{key:?} watcher {watcher}: {what}\n  {}",
                events
                    .iter()
                    .map(|e| serde_json::to_string(e).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
            report.violation(key, kind, message, events);
        };
        let last = stream.previous.map(|(_, highest)| highest);
        if kind == RESYNC {
            if let Some((before, highest)) = stream.previous.filter(|_| revision != 0) {
                if revision < highest {
                    violation(
                        ViolationKind::RevisionOrder,
                        format!("resync to revision {revision} after revision {highest}"),
                        Some(before),
                    );
                }
            }
            stream.covered = match (revision, stream.covered) {
                (0, _) => None,
                (r, Some(c)) => Some(c.max(r)),
                (r, None) => Some(r),
            };
            stream.previous = Some((item, last.unwrap_or(0).max(revision)));
            continue;
        }
        if revision <= stream.after {
            violation(
                ViolationKind::EventBeforeStart,
                format!(
                    "{kind} event at revision {revision}, but the watch started after revision {}",
                    stream.after
                ),
                None,
            );
        }
        if let Some((before, highest)) = stream.previous {
            if revision <= highest {
                violation(
                    ViolationKind::RevisionOrder,
                    format!("{kind} event at revision {revision} after revision {highest}"),
                    Some(before),
                );
            }
        }
        if let Some(covered) = stream.covered {
            let from = covered.saturating_add(1);
            let missed: Vec<u64> = if from < revision {
                seen_events.range(from..revision).copied().collect()
            } else {
                Vec::new()
            };
            if !missed.is_empty() {
                violation(
                    ViolationKind::Gap,
                    format!(
                        "missed event revisions {missed:?} (seen by other watchers) between \
                         revision {covered} and the {kind} event at {revision}, with no resync"
                    ),
                    stream.previous.map(|(e, _)| e),
                );
            }
        }
        stream.covered = Some(stream.covered.unwrap_or(0).max(revision));
        stream.previous = Some((item, last.unwrap_or(0).max(revision)));
    }
}

/// Reports revisions of a key that two watchers saw as different kinds.
fn check_agreement(report: &mut CheckerReport, key: &str, watchers: &BTreeMap<u64, Vec<&Event>>) {
    let mut first: HashMap<u64, &Event> = HashMap::new();
    let mut reported: BTreeSet<u64> = BTreeSet::new();
    for item in watchers.values().flatten() {
        let Op::Seen { revision, kind, .. } = &item.op else {
            continue;
        };
        if kind == RESYNC {
            continue;
        }
        let earlier = *first.entry(*revision).or_insert(item);
        let Op::Seen {
            kind: earlier_kind, ..
        } = &earlier.op
        else {
            continue;
        };
        if earlier_kind != kind && reported.insert(*revision) {
            let message = format!(
                "{key:?}: revision {revision} seen as {earlier_kind} and as {kind}:\n  {}\n  {}",
                serde_json::to_string(earlier).unwrap_or_default(),
                serde_json::to_string(item).unwrap_or_default(),
            );
            let events = vec![earlier.clone(), (*item).clone()];
            report.violation(key, ViolationKind::Disagreement, message, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ops::pair;
    use crate::check::testing::*;

    fn kinds(events: &[Event]) -> Vec<ViolationKind> {
        let paired = pair(events);
        assert!(paired.malformed.is_empty(), "{:?}", paired.malformed);
        let report = check(&paired);
        for v in &report.violations {
            eprintln!("{v}");
        }
        report.violations.iter().map(|v| v.kind).collect()
    }

    /// Watcher `w` of key "k", opened after `after`, receiving `items`
    /// (revision, kind) at t = 10, 11, ...
    fn watcher(w: u64, after: u64, items: &[(u64, &str)]) -> Vec<Event> {
        let mut events = vec![ok(w, 0, watch_open("k", w, after))];
        for (i, &(revision, kind)) in items.iter().enumerate() {
            events.push(ok(w, 10 + i as u64, seen("k", w, revision, kind)));
        }
        events
    }

    #[test]
    fn complete_streams_pass() {
        let mut events = watcher(1, 2, &[(3, "put"), (5, "put"), (6, "deleted")]);
        events.extend(watcher(2, 4, &[(5, "put"), (6, "deleted"), (9, "expired")]));
        assert_eq!(kinds(&events), []);
    }

    #[test]
    fn a_resync_covers_the_events_it_skipped() {
        let mut events = watcher(1, 0, &[(3, "put"), (5, "put"), (6, "put"), (7, "put")]);
        events.extend(watcher(2, 0, &[(3, "put"), (6, "resync"), (7, "put")]));
        // A resync to an absent record covers up to the next event.
        events.extend(watcher(3, 0, &[(3, "put"), (0, "resync"), (7, "put")]));
        assert_eq!(kinds(&events), []);
    }

    #[test]
    fn a_gap_without_a_resync_is_rejected() {
        let mut events = watcher(1, 0, &[(3, "put"), (5, "put"), (6, "put")]);
        events.extend(watcher(2, 0, &[(3, "put"), (6, "put")]));
        assert_eq!(kinds(&events), [ViolationKind::Gap]);
        // A watch opened after revision 2 may start with any later event
        // (what committed while it opened may or may not be delivered),
        // but not skip one after its first.
        let mut late = watcher(1, 0, &[(3, "put"), (5, "put"), (7, "put")]);
        late.extend(watcher(2, 2, &[(5, "put"), (7, "put")]));
        assert_eq!(kinds(&late), []);
        let mut skipping = watcher(1, 0, &[(3, "put"), (5, "put"), (7, "put")]);
        skipping.extend(watcher(2, 2, &[(3, "put"), (7, "put")]));
        assert_eq!(kinds(&skipping), [ViolationKind::Gap]);
    }

    #[test]
    fn an_event_older_than_the_watch_start_is_rejected() {
        let events = watcher(1, 5, &[(4, "put"), (6, "put")]);
        assert_eq!(kinds(&events), [ViolationKind::EventBeforeStart]);
    }

    #[test]
    fn revisions_that_go_backwards_are_rejected() {
        let repeated = watcher(1, 0, &[(3, "put"), (3, "put")]);
        assert_eq!(kinds(&repeated), [ViolationKind::RevisionOrder]);
        let stale_resync = watcher(1, 0, &[(3, "put"), (5, "put"), (4, "resync")]);
        assert_eq!(kinds(&stale_resync), [ViolationKind::RevisionOrder]);
    }

    #[test]
    fn watchers_that_disagree_on_a_revision_are_rejected() {
        let mut events = watcher(1, 0, &[(3, "put")]);
        events.extend(watcher(2, 0, &[(3, "deleted")]));
        assert_eq!(kinds(&events), [ViolationKind::Disagreement]);
    }
}
