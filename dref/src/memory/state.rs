//! The store state behind the memory backend's mutex: a [`Store`] plus the
//! lease deadlines that the store itself leaves to its owner.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::engine::store::Store;
use crate::engine::{LeaseId, Write, WriteOutcome};
use crate::{Error, Result};

pub(super) struct State {
    pub(super) store: Store,
    deadlines: HashMap<LeaseId, Instant>,
    /// No lease ends before this instant (a lower bound; keep-alives may
    /// have pushed the real earliest deadline later).
    earliest_deadline: Option<Instant>,
    /// A reaper task expires leases at their deadlines (see
    /// [`expire_unless_reaped`](Self::expire_unless_reaped)).
    pub(super) reaper_running: bool,
}

impl State {
    pub(super) fn new(watch_buffer: usize) -> Self {
        State {
            store: Store::new(watch_buffer),
            deadlines: HashMap::new(),
            earliest_deadline: None,
            reaper_running: false,
        }
    }

    pub(super) fn write(&mut self, write: &mut Write) -> Result<WriteOutcome> {
        self.expire_unless_reaped();
        self.store.write_from(write)
    }

    pub(super) fn grant(&mut self, ttl: std::time::Duration, now: Instant) -> LeaseId {
        let id = self.store.grant(ttl);
        let deadline = now + ttl;
        self.deadlines.insert(id, deadline);
        self.earliest_deadline = Some(self.earliest_deadline.map_or(deadline, |e| e.min(deadline)));
        id
    }

    pub(super) fn keep_alive(&mut self, lease: LeaseId, now: Instant) -> Result<()> {
        self.expire_due();
        let ttl = self
            .store
            .lease_ttl(lease)
            .ok_or(Error::LeaseExpired { lease })?;
        self.deadlines.insert(lease, now + ttl);
        Ok(())
    }

    pub(super) fn revoke(&mut self, lease: LeaseId) {
        self.deadlines.remove(&lease);
        self.store.revoke(lease);
    }

    /// Expires the due leases before a read or a write, unless the reaper
    /// does so at their deadlines. With a reaper, a read or a write may
    /// see a lease a moment after its deadline, before the reaper has run:
    /// expiry seen late, never early, as on the other backends (a holder
    /// stops trusting its lock before the deadline). That spares every
    /// operation a read of the clock, a tenth of an update's time.
    #[inline]
    pub(super) fn expire_unless_reaped(&mut self) {
        if !self.reaper_running {
            self.expire_due();
        }
    }

    /// Expires the leases whose deadlines have passed. Reads the clock only
    /// when some lease exists.
    #[inline]
    pub(super) fn expire_due(&mut self) {
        // (Inlined: without leases, an operation costs a check.)
        if let Some(earliest) = self.earliest_deadline {
            self.expire_due_from(earliest);
        }
    }

    /// [`expire_due`](Self::expire_due), when no lease ends before
    /// `earliest`.
    fn expire_due_from(&mut self, earliest: Instant) {
        let now = Instant::now();
        if now < earliest {
            return;
        }
        let mut due: Vec<LeaseId> = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort();
        for lease in due {
            self.revoke(lease);
        }
        self.earliest_deadline = self.next_deadline();
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }
}
