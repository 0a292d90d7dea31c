//! The clients a node runs during a nemesis run, each recording what it
//! invoked and what came back (see [`crate::check::history`]):
//!
//! - register clients: linearizable reads, writes and compare-and-sets on
//!   `u64` registers, and increments on counters;
//! - lock clients: lock bodies that write their fencing token through a
//!   fenced register and hold the lock for a while;
//! - election clients: campaigns, and while leading, samples of whether
//!   the leadership is still believed;
//! - watchers: raw engine watches and ref change streams of some keys.
//!
//! Any operation may be dropped at a random poll (the `cancel` share of
//! them), as a `select!` or a timeout would, which the history records as
//! indeterminate.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dref::engine::{EventKind, WatchItem};
use dref::{current_fencing_token, ChangeKind, Context, DRef, Error, ManualId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::recorder::Recorder;
use crate::check::history::{Op, Phase};
use crate::os::monotonic_ns;
use crate::poll_then_drop;

/// What a node's clients do (sent by the test to every node).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct WorkloadSpec {
    /// Seeds this node's random choices (mixed with its client numbers).
    pub seed: u64,
    /// Process ids of this node's clients start here: give every node its
    /// own range.
    pub process_base: u64,
    /// Registers (read, write, compare-and-set).
    pub registers: Vec<String>,
    /// Counters (increment, read).
    pub counters: Vec<String>,
    /// Number of register clients.
    pub register_clients: usize,
    /// Locks (each with the fenced register `fence/<lock>`).
    pub locks: Vec<String>,
    /// Number of lock clients.
    pub lock_clients: usize,
    /// Elections.
    pub elections: Vec<String>,
    /// Number of election clients.
    pub election_clients: usize,
    /// Registers or counters watched by an engine watch and a change
    /// stream each.
    pub watched: Vec<String>,
    /// Timeout of one register operation.
    pub op_timeout_ms: u64,
    /// How long a lock or campaign may wait.
    pub acquire_timeout_ms: u64,
    /// Range of how long a lock body holds the lock.
    pub hold_ms: (u64, u64),
    /// Range of how long a winner leads before resigning.
    pub lead_ms: (u64, u64),
    /// Range of the pause between two operations of a client.
    pub think_ms: (u64, u64),
    /// Share of operations dropped at a random poll (0 to 1).
    pub cancel: f64,
    /// Reads from `peek()`, a stale local copy: the control run that the
    /// checker must flag.
    pub stale_reads: bool,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            seed: 1,
            process_base: 0,
            registers: Vec::new(),
            counters: Vec::new(),
            register_clients: 0,
            locks: Vec::new(),
            lock_clients: 0,
            elections: Vec::new(),
            election_clients: 0,
            watched: Vec::new(),
            op_timeout_ms: 5_000,
            acquire_timeout_ms: 10_000,
            hold_ms: (20, 200),
            lead_ms: (200, 1_000),
            think_ms: (0, 20),
            cancel: 0.0,
            stale_reads: false,
        }
    }
}

/// A small deterministic PRNG (splitmix64): runs are reproducible from
/// their seed, without a dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[low, high]`.
    pub fn between(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.next_u64() % (high.saturating_sub(low) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The running clients of one node.
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Workload {
    /// Opens the refs and starts every client of `spec` on `ctx`.
    pub async fn start(
        ctx: Context,
        recorder: Arc<Recorder>,
        spec: WorkloadSpec,
    ) -> dref::Result<Self> {
        let refs = Refs::open(&ctx, &spec).await?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut next_process = spec.process_base;
        let mut process = || {
            next_process += 1;
            next_process
        };
        let shared = Arc::new(Shared {
            ctx,
            recorder,
            spec,
            refs,
            stopped,
        });
        for _ in 0..shared.spec.register_clients {
            tasks.spawn(register_client(shared.clone(), process()));
        }
        for _ in 0..shared.spec.lock_clients {
            tasks.spawn(lock_client(shared.clone(), process()));
        }
        for _ in 0..shared.spec.election_clients {
            tasks.spawn(election_client(shared.clone(), process()));
        }
        for name in shared.spec.watched.clone() {
            tasks.spawn(engine_watcher(shared.clone(), process(), name.clone()));
            tasks.spawn(ref_watcher(shared.clone(), process(), name));
        }
        Ok(Workload { stop, tasks })
    }

    /// Stops every client after its current operation and waits for them.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Final, linearizable reads of `counters` after the faults were healed,
/// recorded for the durability check; retried while the store is
/// unavailable.
pub async fn final_reads(
    ctx: &Context,
    recorder: &Recorder,
    process: u64,
    counters: &[String],
) -> dref::Result<Vec<(String, u64)>> {
    let mut values = Vec::new();
    for name in counters {
        let r = ctx.make(ManualId::<u64>::new(name.clone()), 0).await?;
        let value = crate::eventually("a final read", || r.get()).await;
        recorder.emit(
            process,
            Phase::Ok,
            Op::FinalRead {
                key: name.clone(),
                value,
            },
        );
        values.push((name.clone(), value));
    }
    Ok(values)
}

struct Refs {
    registers: HashMap<String, DRef<u64>>,
    fences: HashMap<String, DRef<u64>>,
}

impl Refs {
    async fn open(ctx: &Context, spec: &WorkloadSpec) -> dref::Result<Refs> {
        let mut registers = HashMap::new();
        for name in spec.registers.iter().chain(&spec.counters) {
            let r = open_eventually(ctx, name).await?;
            registers.insert(name.clone(), r);
        }
        let mut fences = HashMap::new();
        for lock in &spec.locks {
            let name = fence_of(lock);
            fences.insert(lock.clone(), open_eventually(ctx, &name).await?);
        }
        Ok(Refs { registers, fences })
    }
}

async fn open_eventually(ctx: &Context, name: &str) -> dref::Result<DRef<u64>> {
    let id = ManualId::<u64>::new(name);
    Ok(crate::eventually("opening a ref", || ctx.make(id.clone(), 0)).await)
}

/// The fenced register guarding the resources of `lock`.
pub fn fence_of(lock: &str) -> String {
    format!("fence/{lock}")
}

struct Shared {
    ctx: Context,
    recorder: Arc<Recorder>,
    spec: WorkloadSpec,
    refs: Refs,
    stopped: watch::Receiver<bool>,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    fn rng(&self, process: u64) -> Rng {
        Rng::new(self.spec.seed ^ process.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    async fn think(&self, rng: &mut Rng) {
        let ms = rng.between(self.spec.think_ms);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn emit(&self, process: u64, phase: Phase, op: Op) {
        self.recorder.emit(process, phase, op);
    }

    /// Runs `op` with the operation timeout, or drops it at a random poll
    /// (the `cancel` share of operations).
    async fn run<T>(
        &self,
        rng: &mut Rng,
        timeout: Duration,
        op: impl Future<Output = dref::Result<T>>,
    ) -> Outcome<T> {
        if rng.chance(self.spec.cancel) {
            let polls = rng.between((1, 12)) as usize;
            return match poll_then_drop(tokio::time::timeout(timeout, op), polls).await {
                Some(Ok(Ok(v))) => Outcome::Done(v),
                Some(Ok(Err(e))) => Outcome::Failed(e),
                Some(Err(_)) => Outcome::TimedOut,
                None => Outcome::Dropped,
            };
        }
        match tokio::time::timeout(timeout, op).await {
            Ok(Ok(v)) => Outcome::Done(v),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::TimedOut,
        }
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.spec.op_timeout_ms)
    }
}

enum Outcome<T> {
    Done(T),
    Failed(Error),
    TimedOut,
    Dropped,
}

impl<T> Outcome<T> {
    /// The phase of a mutating operation that did not finish: it may or
    /// may not have taken effect.
    fn unknown(&self) -> String {
        match self {
            Outcome::Done(_) => String::new(),
            Outcome::Failed(e) => e.to_string(),
            Outcome::TimedOut => "timed out".to_owned(),
            Outcome::Dropped => "dropped".to_owned(),
        }
    }
}

/// A value no other client writes: node range, client and sequence.
fn unique(process: u64, seq: u64) -> u64 {
    (process << 32) | (seq & 0xffff_ffff)
}

async fn register_client(shared: Arc<Shared>, process: u64) {
    let mut rng = shared.rng(process);
    let spec = &shared.spec;
    let mut seq = 0;
    // The last value this client saw per register: compare-and-sets from
    // it succeed sometimes and fail sometimes.
    let mut last: HashMap<String, u64> = HashMap::new();
    let all: Vec<&String> = spec.registers.iter().chain(&spec.counters).collect();
    if all.is_empty() {
        return;
    }
    while !shared.stopping() {
        shared.think(&mut rng).await;
        let name = (*rng.pick(&all)).clone();
        let r = &shared.refs.registers[&name];
        let counter = spec.counters.contains(&name);
        let dice = rng.next_u64() % 10;
        seq += 1;
        if dice < 4 {
            shared.emit(
                process,
                Phase::Invoke,
                Op::Read {
                    key: name.clone(),
                    value: None,
                },
            );
            let read = if spec.stale_reads {
                Outcome::Done(r.peek().unwrap_or(0))
            } else {
                shared.run(&mut rng, shared.op_timeout(), r.get()).await
            };
            match read {
                Outcome::Done(v) => {
                    last.insert(name.clone(), v);
                    shared.emit(
                        process,
                        Phase::Ok,
                        Op::Read {
                            key: name,
                            value: Some(v),
                        },
                    );
                }
                _ => shared.emit(
                    process,
                    Phase::Fail,
                    Op::Read {
                        key: name,
                        value: None,
                    },
                ),
            }
        } else if counter {
            shared.emit(
                process,
                Phase::Invoke,
                Op::Incr {
                    key: name.clone(),
                    value: None,
                },
            );
            match shared
                .run(&mut rng, shared.op_timeout(), r.update_and_get(|n| n + 1))
                .await
            {
                Outcome::Done(v) => {
                    last.insert(name.clone(), v);
                    shared.emit(
                        process,
                        Phase::Ok,
                        Op::Incr {
                            key: name,
                            value: Some(v),
                        },
                    );
                }
                _ => shared.emit(
                    process,
                    Phase::Info,
                    Op::Incr {
                        key: name,
                        value: None,
                    },
                ),
            }
        } else if dice < 7 {
            let value = unique(process, seq);
            shared.emit(
                process,
                Phase::Invoke,
                Op::Write {
                    key: name.clone(),
                    value,
                },
            );
            match shared
                .run(&mut rng, shared.op_timeout(), r.set(value))
                .await
            {
                Outcome::Done(()) => {
                    last.insert(name.clone(), value);
                    shared.emit(process, Phase::Ok, Op::Write { key: name, value });
                }
                _ => shared.emit(process, Phase::Info, Op::Write { key: name, value }),
            }
        } else {
            let from = last.get(&name).copied().unwrap_or(0);
            let to = unique(process, seq);
            shared.emit(
                process,
                Phase::Invoke,
                Op::Cas {
                    key: name.clone(),
                    from,
                    to,
                },
            );
            let cas = r.modify(move |current| match current == from {
                true => (true, to),
                false => (false, current),
            });
            match shared.run(&mut rng, shared.op_timeout(), cas).await {
                Outcome::Done(true) => {
                    last.insert(name.clone(), to);
                    shared.emit(
                        process,
                        Phase::Ok,
                        Op::Cas {
                            key: name,
                            from,
                            to,
                        },
                    );
                }
                Outcome::Done(false) => {
                    last.remove(&name);
                    shared.emit(
                        process,
                        Phase::Fail,
                        Op::Cas {
                            key: name,
                            from,
                            to,
                        },
                    )
                }
                _ => shared.emit(
                    process,
                    Phase::Info,
                    Op::Cas {
                        key: name,
                        from,
                        to,
                    },
                ),
            }
        }
    }
}

/// What a lock body left behind for its client.
#[derive(Default)]
struct BodyTrace {
    token: Option<u64>,
    ended: Option<u64>,
}

async fn lock_client(shared: Arc<Shared>, process: u64) {
    let mut rng = shared.rng(process);
    if shared.spec.locks.is_empty() {
        return;
    }
    while !shared.stopping() {
        shared.think(&mut rng).await;
        let lock = rng.pick(&shared.spec.locks).clone();
        let fence = shared.refs.fences[&lock].clone();
        let hold = Duration::from_millis(rng.between(shared.spec.hold_ms));
        let trace = Arc::new(Mutex::new(BodyTrace::default()));
        let body = {
            let (shared, trace, lock) = (shared.clone(), trace.clone(), lock.clone());
            async move {
                let Some(token) = current_fencing_token().map(|t| t.0) else {
                    panic!("a lock body runs with a fencing token");
                };
                trace.lock().unwrap_or_else(|e| e.into_inner()).token = Some(token);
                let op = |token| Op::Acquire {
                    lock: lock.clone(),
                    token,
                    error: None,
                };
                shared.emit(process, Phase::Ok, op(Some(token)));
                shared.emit(
                    process,
                    Phase::Invoke,
                    Op::Hold {
                        lock: lock.clone(),
                        token,
                        error: None,
                    },
                );
                let fenced = Op::Fenced {
                    key: fence_of(&lock),
                    token,
                };
                shared.emit(process, Phase::Invoke, fenced.clone());
                let write = fence.modify(|highest| match token >= highest {
                    true => (true, token),
                    false => (false, highest),
                });
                match tokio::time::timeout(shared.op_timeout(), write).await {
                    Ok(Ok(true)) => shared.emit(process, Phase::Ok, fenced),
                    Ok(Ok(false)) => shared.emit(process, Phase::Fail, fenced),
                    _ => shared.emit(process, Phase::Info, fenced),
                }
                tokio::time::sleep(hold).await;
                let ended = monotonic_ns();
                trace.lock().unwrap_or_else(|e| e.into_inner()).ended = Some(ended);
                // Now, not when the lock call returns: its release may wait
                // for an unreachable store until the node is killed.
                shared.recorder.emit_at(
                    process,
                    ended,
                    Phase::Ok,
                    Op::Left {
                        lock: lock.clone(),
                        token,
                    },
                );
            }
        };
        shared.emit(
            process,
            Phase::Invoke,
            Op::Acquire {
                lock: lock.clone(),
                token: None,
                error: None,
            },
        );
        let wait = Duration::from_millis(shared.spec.acquire_timeout_ms);
        // The lock call has its own timeout for the acquisition; this one
        // only bounds a body that hangs.
        let bound = wait + hold + shared.op_timeout() * 2;
        let outcome = shared
            .run(&mut rng, bound, shared.ctx.lock_timeout(&lock, wait, body))
            .await;
        let BodyTrace { token, ended } =
            std::mem::take(&mut *trace.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(token) = token else {
            let error = Some(match &outcome {
                Outcome::Done(()) => "the lock returned without running its body".to_owned(),
                other => other.unknown(),
            });
            let phase = match outcome {
                Outcome::Dropped => Phase::Info,
                _ => Phase::Fail,
            };
            shared.emit(
                process,
                phase,
                Op::Acquire {
                    lock,
                    token: None,
                    error,
                },
            );
            continue;
        };
        let at = ended.unwrap_or_else(monotonic_ns);
        let (phase, error) = match outcome {
            Outcome::Done(()) => (Phase::Ok, None),
            Outcome::Failed(e @ Error::LockLost { .. }) => (Phase::Fail, Some(e.to_string())),
            other => (Phase::Info, Some(other.unknown())),
        };
        shared
            .recorder
            .emit_at(process, at, phase, Op::Hold { lock, token, error });
    }
}

async fn election_client(shared: Arc<Shared>, process: u64) {
    let mut rng = shared.rng(process);
    if shared.spec.elections.is_empty() {
        return;
    }
    while !shared.stopping() {
        shared.think(&mut rng).await;
        let election = rng.pick(&shared.spec.elections).clone();
        let campaign = |token, error| Op::Campaign {
            election: election.clone(),
            token,
            error,
        };
        shared.emit(process, Phase::Invoke, campaign(None, None));
        let wait = Duration::from_millis(shared.spec.acquire_timeout_ms);
        let leadership = match shared
            .run(&mut rng, wait, shared.ctx.campaign(&election))
            .await
        {
            Outcome::Done(leadership) => leadership,
            Outcome::Dropped => {
                shared.emit(process, Phase::Info, campaign(None, Some("dropped".into())));
                continue;
            }
            other => {
                shared.emit(process, Phase::Fail, campaign(None, Some(other.unknown())));
                continue;
            }
        };
        let token = leadership.token().0;
        shared.emit(process, Phase::Ok, campaign(Some(token), None));
        let until =
            tokio::time::Instant::now() + Duration::from_millis(rng.between(shared.spec.lead_ms));
        let resign = |error| Op::Resign {
            election: election.clone(),
            token,
            error,
        };
        loop {
            let t = monotonic_ns();
            if leadership.is_lost() {
                shared.emit(process, Phase::Fail, resign(Some("leadership lost".into())));
                break;
            }
            shared.recorder.emit_at(
                process,
                t,
                Phase::Ok,
                Op::Believe {
                    election: election.clone(),
                    token,
                },
            );
            if tokio::time::Instant::now() >= until || shared.stopping() {
                // Belief ends when the leader decides to step down, not
                // when the store has confirmed it (the next leader may win
                // in between): the resignation is recorded at the decision.
                let decided = monotonic_ns();
                match leadership.resign().await {
                    Ok(()) => shared
                        .recorder
                        .emit_at(process, decided, Phase::Ok, resign(None)),
                    Err(e) => shared.emit(process, Phase::Fail, resign(Some(e.to_string()))),
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn kind_of(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Put { .. } => "put",
        EventKind::Deleted => "deleted",
        EventKind::Expired => "expired",
        _ => "other",
    }
}

/// An engine watch of one key, opened with `since = None` right after a
/// linearizable read: it must never yield anything at or below that read.
async fn engine_watcher(shared: Arc<Shared>, process: u64, name: String) {
    let key = shared.refs.registers[&name].key().clone();
    let backend = shared.ctx.backend().clone();
    let mut stopped = shared.stopped.clone();
    let seen = |revision: u64, kind: &str| Op::Seen {
        key: name.clone(),
        watcher: process,
        revision,
        kind: kind.to_owned(),
    };
    let after = crate::eventually("the watcher's first read", || backend.read(key.clone()))
        .await
        .map_or(0, |r| r.mod_revision);
    let Ok(mut stream) = backend.watch(key.clone(), None).await else {
        return;
    };
    shared.emit(
        process,
        Phase::Ok,
        Op::WatchOpen {
            key: name.clone(),
            watcher: process,
            after,
        },
    );
    let mut last = after;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match item {
            Some(Ok(WatchItem::Event(event))) => {
                last = last.max(event.revision);
                shared.emit(
                    process,
                    Phase::Ok,
                    seen(event.revision, kind_of(&event.kind)),
                );
            }
            Some(Ok(WatchItem::Resync(record))) => {
                let revision = record.as_ref().map_or(0, |r| r.mod_revision);
                last = last.max(revision);
                shared.emit(process, Phase::Ok, seen(revision, "resync"));
            }
            Some(Err(_)) | None => {
                // Resume where it stopped: the backend replays or resyncs.
                loop {
                    if shared.stopping() {
                        return;
                    }
                    match backend.watch(key.clone(), Some(last)).await {
                        Ok(s) => {
                            stream = s;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
    }
}

/// A ref's change stream of one key, recorded under `<key>@ref`: a
/// change stream reports changed values, so it leaves out commits that
/// wrote a value equal to the one before (a compare-and-set that did not
/// swap writes the value back), which the engine's watches report. Its
/// watchers are compared with each other only.
async fn ref_watcher(shared: Arc<Shared>, process: u64, key: String) {
    let r = shared.refs.registers[&key].clone();
    let name = format!("{key}@ref");
    let mut stopped = shared.stopped.clone();
    let mut changes = r.changes();
    shared.emit(
        process,
        Phase::Ok,
        Op::WatchOpen {
            key: name.clone(),
            watcher: process,
            after: 0,
        },
    );
    loop {
        let item = tokio::select! {
            item = changes.next() => item,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let Some(item) = item else { return };
        let Ok(change) = item else { continue };
        let kind = match change.kind {
            ChangeKind::Updated(_) => "put",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Expired => "expired",
            ChangeKind::Resync(_) => "resync",
            _ => "other",
        };
        shared.emit(
            process,
            Phase::Ok,
            Op::Seen {
                key: name.clone(),
                watcher: process,
                revision: change.revision,
                kind: kind.into(),
            },
        );
    }
}
