//! Builders for the small histories of the checkers' tests.

use super::history::{Event, Op, Phase};

/// xorshift64*: small, deterministic, good enough to shuffle a history.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p` percent.
    pub(crate) fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// An event of `process` on node `n<process>` at `t`.
pub(crate) fn event(process: u64, t: u64, phase: Phase, op: Op) -> Event {
    Event {
        process,
        node: format!("n{process}"),
        t,
        phase,
        op,
    }
}

pub(crate) fn invoke(process: u64, t: u64, op: Op) -> Event {
    event(process, t, Phase::Invoke, op)
}

pub(crate) fn ok(process: u64, t: u64, op: Op) -> Event {
    event(process, t, Phase::Ok, op)
}

pub(crate) fn fail(process: u64, t: u64, op: Op) -> Event {
    event(process, t, Phase::Fail, op)
}

pub(crate) fn info(process: u64, t: u64, op: Op) -> Event {
    event(process, t, Phase::Info, op)
}

pub(crate) fn read(key: &str, value: Option<u64>) -> Op {
    Op::Read {
        key: key.into(),
        value,
    }
}

pub(crate) fn write(key: &str, value: u64) -> Op {
    Op::Write {
        key: key.into(),
        value,
    }
}

pub(crate) fn cas(key: &str, from: u64, to: u64) -> Op {
    Op::Cas {
        key: key.into(),
        from,
        to,
    }
}

pub(crate) fn incr(key: &str, value: Option<u64>) -> Op {
    Op::Incr {
        key: key.into(),
        value,
    }
}

pub(crate) fn final_read(key: &str, value: u64) -> Op {
    Op::FinalRead {
        key: key.into(),
        value,
    }
}

pub(crate) fn fenced(key: &str, token: u64) -> Op {
    Op::Fenced {
        key: key.into(),
        token,
    }
}

pub(crate) fn acquire(lock: &str, token: Option<u64>, error: Option<&str>) -> Op {
    Op::Acquire {
        lock: lock.into(),
        token,
        error: error.map(Into::into),
    }
}

pub(crate) fn hold(lock: &str, token: u64) -> Op {
    Op::Hold {
        lock: lock.into(),
        token,
        error: None,
    }
}

pub(crate) fn lost(lock: &str, token: u64) -> Op {
    Op::Hold {
        lock: lock.into(),
        token,
        error: Some("lease expired".into()),
    }
}

pub(crate) fn campaign(election: &str, token: Option<u64>) -> Op {
    Op::Campaign {
        election: election.into(),
        token,
        error: None,
    }
}

pub(crate) fn believe(election: &str, token: u64) -> Op {
    Op::Believe {
        election: election.into(),
        token,
    }
}

pub(crate) fn resign(election: &str, token: u64) -> Op {
    Op::Resign {
        election: election.into(),
        token,
        error: None,
    }
}

pub(crate) fn watch_open(key: &str, watcher: u64, after: u64) -> Op {
    Op::WatchOpen {
        key: key.into(),
        watcher,
        after,
    }
}

pub(crate) fn seen(key: &str, watcher: u64, revision: u64, kind: &str) -> Op {
    Op::Seen {
        key: key.into(),
        watcher,
        revision,
        kind: kind.into(),
    }
}

pub(crate) fn kill(node: &str) -> Op {
    Op::Nemesis {
        action: "kill".into(),
        nodes: vec![node.into()],
    }
}
