//! Fencing and leadership tokens: unique, and increasing in real time.

use std::collections::HashMap;

use super::ops::{Operation, Secs};
use super::report::{CheckerReport, ViolationKind};

/// A granted acquisition or a won campaign.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grant<'p, 'a> {
    pub token: u64,
    pub op: &'p Operation<'a>,
}

impl Grant<'_, '_> {
    fn invoked(&self) -> u64 {
        self.op.invoked()
    }

    fn completed(&self) -> u64 {
        self.op.completed().unwrap_or(u64::MAX)
    }
}

/// Reports tokens granted twice, and grants that completed before another
/// was invoked yet hold a higher token than it.
pub(crate) fn check_tokens(report: &mut CheckerReport, subject: &str, grants: &[Grant<'_, '_>]) {
    let mut by_token: HashMap<u64, Vec<&Grant<'_, '_>>> = HashMap::new();
    for grant in grants {
        by_token.entry(grant.token).or_default().push(grant);
    }
    let mut duplicates: Vec<_> = by_token.into_iter().filter(|(_, g)| g.len() > 1).collect();
    duplicates.sort_by_key(|(token, _)| *token);
    for (token, same) in duplicates {
        let mut message = format!("{subject:?}: token {token} granted {} times:", same.len());
        for grant in &same {
            message += &format!("\n  {}", grant.op);
        }
        let events = same.iter().flat_map(|g| g.op.events()).cloned().collect();
        report.violation(subject, ViolationKind::DuplicateToken, message, events);
    }

    // Sweep grants in order of invocation, keeping the highest token among
    // those completed before the current invocation.
    let mut by_completion: Vec<&Grant<'_, '_>> = grants.iter().collect();
    by_completion.sort_by_key(|g| g.completed());
    let mut by_invocation: Vec<&Grant<'_, '_>> = grants.iter().collect();
    by_invocation.sort_by_key(|g| g.invoked());
    let mut highest: Option<&Grant<'_, '_>> = None;
    let mut completed = by_completion.iter().peekable();
    for later in by_invocation {
        while let Some(earlier) = completed.next_if(|g| g.completed() < later.invoked()) {
            if highest.is_none_or(|h| earlier.token > h.token) {
                highest = Some(earlier);
            }
        }
        let Some(earlier) = highest else { continue };
        if earlier.token > later.token {
            let message = format!(
                "{subject:?}: token went backwards: {} was granted before {} was invoked (at {}), \
                 yet holds a higher token\n  {}\n  {}",
                earlier.token,
                later.token,
                Secs(later.invoked()),
                earlier.op,
                later.op
            );
            let events = earlier
                .op
                .events()
                .chain(later.op.events())
                .cloned()
                .collect();
            report.violation(subject, ViolationKind::TokenWentBackwards, message, events);
        }
    }
}
