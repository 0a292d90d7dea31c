//! Batching of concurrent writes: writes issued through one backend handle
//! while its script calls are in flight wait for the next call, which
//! carries all of them.
//!
//! The server's CPU is what bounds a busy handle's writes, and a good part
//! of a write's cost is the call, not the write: parsing the `EVALSHA`,
//! setting up the script and running its prologue, the request's and the
//! reply's socket reads and writes. One call that carries several writes
//! shares that cost (and the client's: one request to encode, one reply to
//! read). Each write keeps its own condition, revision, event and reply
//! (see the `write` operation in `engine.lua`).
//!
//! A write that finds no call in flight and no write queued makes its call
//! itself, at once: a lone write waits for nothing and costs no hand-over
//! to another task. Other writes queue, and a dedicated task per handle
//! sends them, in calls of its own of which it keeps at most [`MAX_CALLS`]
//! in flight. (Letting writes make their own calls whenever fewer than that
//! are in flight split a busy handle's batches: fewer writes per call,
//! more server time per write.) A call a caller made never holds
//! up the queue (its caller may stop polling it for a while), and a caller
//! that goes away (its future dropped) can neither strand the writes
//! queued behind it nor take another's reply: replies are matched to writes
//! by their position in the call, fixed when the call is made. A queued
//! write whose caller went away before its call was made is not sent.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, RedisError, ServerErrorKind, Value};
use tokio::sync::{oneshot, Notify};

/// The most writes one call carries. A call runs for several µs of server
/// time per write, during which the server serves no other client: 64
/// writes keep that around a millisecond.
const MAX_WRITES: usize = 64;

/// The most argument bytes one call carries, so that a few large values
/// do not make one huge request (a single write above it is sent alone).
const MAX_BYTES: usize = 1 << 20;

/// Calls of the batching task in flight at once. With one, the server
/// sits idle while a call's reply travels back and the next call is made
/// and read; with two, the next call is on its way while the server runs
/// the first. (Measured on the benchmark's 64 tasks: two did better than
/// one and than three.)
const MAX_CALLS: usize = 2;

/// One write's arguments to the engine script (after the operation, the
/// prefix and the write count), encoded by the caller.
pub(super) struct Args {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Args {
    /// Room for `count` arguments of `bytes` bytes in all.
    pub(super) fn with_capacity(count: usize, bytes: usize) -> Self {
        Args {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(count),
        }
    }

    /// Appends one argument.
    pub(super) fn push(&mut self, arg: &[u8]) {
        self.bytes.extend_from_slice(arg);
        self.ends.push(self.bytes.len());
    }

    /// Appends a number as a canonical decimal.
    pub(super) fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, end)| &self.bytes[start..*end])
    }

    /// About what the arguments add to a request.
    fn size(&self) -> usize {
        // Each argument's RESP header (`$<len>\r\n`) and trailer.
        self.bytes.len() + 8 * self.ends.len()
    }
}

/// Why a write got no reply of its own.
#[derive(Clone, Debug)]
pub(super) enum Failure {
    /// The call carrying it failed as a whole: the connection (the write
    /// may have committed), or an error reply to the whole call.
    Redis(RedisError),
    /// No answer within the command timeout (the write may have
    /// committed).
    Timeout(Duration),
    /// The reply to the call carrying it was not an array with one reply
    /// per write.
    Malformed(String),
    /// The handle's batching task is gone (its runtime shut down).
    Stopped,
}

/// A write waiting for a call.
struct Queued {
    args: Args,
    reply: oneshot::Sender<Result<Value, Failure>>,
}

impl Queued {
    fn answer(self, reply: Result<Value, Failure>) {
        if self.reply.send(reply).is_err() {
            // The caller went away (its future was dropped, or it timed
            // out) after the call was made: the write's outcome is unknown
            // to it, as for any write cancelled after it was sent. No one
            // else waits for this answer.
        }
    }
}

/// The queue and the counts of calls in flight, one lock for all, so that
/// a write never makes its own call while others wait.
#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Calls of the batching task in flight.
    batches: usize,
    /// Calls made by callers in flight.
    own: usize,
    /// The batching task is gone: nothing would send a queued write.
    stopped: bool,
}

/// What the callers and the batching task of a handle share.
struct Shared {
    /// Off, every write makes a call of its own.
    batching: bool,
    state: Mutex<State>,
    /// Wakes the batching task: a write was queued.
    wake: Notify,
    sender: Sender,
}

impl Shared {
    /// Takes the next batch off the queue if the batching task may make
    /// another call.
    fn take(&self) -> Option<Vec<Queued>> {
        let mut state = self.state.lock();
        if state.batches >= MAX_CALLS {
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < MAX_WRITES {
            let Some(next) = state.queue.front() else {
                break;
            };
            let gone = next.reply.is_closed();
            let size = next.args.size();
            if !gone && !batch.is_empty() && bytes + size > MAX_BYTES {
                break;
            }
            let Some(next) = state.queue.pop_front() else {
                break;
            };
            // A write whose caller went away is never sent.
            if !gone {
                bytes += size;
                batch.push(next);
            }
        }
        if batch.is_empty() {
            return None;
        }
        state.batches += 1;
        Some(batch)
    }

    /// Runs `batch` as one call made by the batching task, and frees the
    /// call.
    async fn call(&self, batch: Vec<Queued>) {
        self.sender.call(batch).await;
        let mut state = self.state.lock();
        state.batches = state.batches.saturating_sub(1);
    }
}

/// A call made by a caller itself, counted until its future ends.
struct OwnCall<'a>(&'a Shared);

impl Drop for OwnCall<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.own = state.own.saturating_sub(1);
    }
}

/// Answers every queued write when the batching task ends (its runtime
/// shutting down), and makes later writes fail at once.
struct Stop<'a>(&'a Shared);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let queued: Vec<Queued> = {
            let mut state = self.0.state.lock();
            state.stopped = true;
            state.queue.drain(..).collect()
        };
        for write in queued {
            write.answer(Err(Failure::Stopped));
        }
    }
}

/// The writes of one backend handle: its queue and the task that sends it.
pub(super) struct Batcher {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Dropped with the last handle, when no write is waiting.
        self.task.abort();
    }
}

impl Batcher {
    /// Starts the task that sends the queued writes of a handle: with
    /// `script` on `commands`, for the namespace `prefix`; every write
    /// waits at most `timeout` for its answer. Without `batching`, every
    /// write makes a call of its own.
    pub(super) fn start(
        commands: ConnectionManager,
        script: redis::Script,
        prefix: String,
        timeout: Duration,
        batching: bool,
    ) -> Self {
        let shared = Arc::new(Shared {
            batching,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            sender: Sender {
                commands,
                script,
                prefix,
                timeout,
            },
        });
        let task = tokio::spawn(run(shared.clone())).abort_handle();
        Batcher { shared, task }
    }

    /// Sends one write and returns its reply: its own item of the call's
    /// reply. The wait, queued and in flight, is bounded by the command
    /// timeout. A queued write whose future is dropped, or which times out,
    /// before its call is made is never sent.
    pub(super) async fn write(&self, args: Args) -> Result<Value, Failure> {
        let shared = &*self.shared;
        let timeout = shared.sender.timeout;
        // (The lock is released before anything is awaited.)
        let route = {
            let mut state = shared.state.lock();
            if state.stopped {
                return Err(Failure::Stopped);
            }
            let idle = state.queue.is_empty() && state.own == 0 && state.batches == 0;
            if idle || !shared.batching {
                state.own += 1;
                Route::Own(args)
            } else {
                let (reply, answer) = oneshot::channel();
                state.queue.push_back(Queued { args, reply });
                Route::Queued(answer)
            }
        };
        match route {
            Route::Own(args) => {
                let _call = OwnCall(shared);
                match tokio::time::timeout(timeout, shared.sender.call_one(&args)).await {
                    Ok(reply) => reply,
                    Err(_) => Err(Failure::Timeout(timeout)),
                }
            }
            Route::Queued(answer) => {
                shared.wake.notify_one();
                match tokio::time::timeout(timeout, answer).await {
                    Ok(Ok(reply)) => reply,
                    // Dropped unanswered: the task has ended.
                    Ok(Err(_)) => Err(Failure::Stopped),
                    Err(_) => Err(Failure::Timeout(timeout)),
                }
            }
        }
    }
}

/// How a write reaches the server.
enum Route {
    /// In a call of its own, made by its caller.
    Own(Args),
    /// Queued for the batching task, which answers here.
    Queued(oneshot::Receiver<Result<Value, Failure>>),
}

/// Sends the queued writes, at most [`MAX_CALLS`] calls at a time, until
/// the handle is gone.
async fn run(shared: Arc<Shared>) {
    let _stop = Stop(&shared);
    let mut calls = FuturesUnordered::new();
    loop {
        if let Some(batch) = shared.take() {
            let mut call = Box::pin(shared.call(batch));
            // The first poll sends the call, before the next is made: the
            // writes keep the order they were queued in.
            if poll_once(call.as_mut()).await.is_pending() {
                calls.push(call);
            }
            continue;
        }
        tokio::select! {
            Some(()) = calls.next(), if !calls.is_empty() => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// Polls `fut` once, with the task's waker.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// What a call needs.
struct Sender {
    commands: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl Sender {
    /// The call of the script's `write` operation carrying `writes`.
    fn command<'a>(&self, writes: impl ExactSizeIterator<Item = &'a Args>) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(0)
            .arg("write")
            .arg(self.prefix.as_str())
            .arg(writes.len());
        for write in writes {
            for arg in write.iter() {
                cmd.arg(arg);
            }
        }
        cmd
    }

    /// Runs `cmd`, a call carrying `count` writes, and returns their
    /// replies.
    async fn replies(&self, cmd: &Cmd, count: usize) -> Result<Vec<Value>, Failure> {
        match tokio::time::timeout(self.timeout, self.invoke(cmd)).await {
            Ok(Ok(Value::Array(replies))) if replies.len() == count => Ok(replies),
            Ok(Ok(Value::ServerError(e))) => Err(Failure::Redis(e.into())),
            Ok(Ok(other)) => Err(Failure::Malformed(format!(
                "expected one reply per write ({count}), got {other:?}"
            ))),
            Ok(Err(e)) => Err(Failure::Redis(e)),
            Err(_) => Err(Failure::Timeout(self.timeout)),
        }
    }

    /// Runs one write as a call of its own.
    async fn call_one(&self, write: &Args) -> Result<Value, Failure> {
        let cmd = self.command(std::iter::once(write));
        let replies = self.replies(&cmd, 1).await?;
        replies
            .into_iter()
            .next()
            .ok_or_else(|| Failure::Malformed("a call of one write got no reply".into()))
    }

    /// Runs `batch` as one call and answers each write.
    async fn call(&self, batch: Vec<Queued>) {
        let cmd = self.command(batch.iter().map(|queued| &queued.args));
        match self.replies(&cmd, batch.len()).await {
            Ok(replies) => {
                for (queued, reply) in batch.into_iter().zip(replies) {
                    queued.answer(Ok(reply));
                }
            }
            Err(failure) => {
                for queued in batch {
                    queued.answer(Err(failure.clone()));
                }
            }
        }
    }

    /// Sends `cmd` (an `EVALSHA` of the script) once, and once more after
    /// loading the script if the server does not have it (`NOSCRIPT`, e.g.
    /// after a restart: the call did not run). The reply is returned as
    /// sent, error replies within it included.
    async fn invoke(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        let mut connection = self.commands.clone();
        let reply = connection.req_packed_command(cmd).await?;
        let missing = |e: &redis::ServerError| e.kind() == Some(ServerErrorKind::NoScript);
        match reply {
            Value::ServerError(e) if missing(&e) => {}
            reply => return Ok(reply),
        }
        self.script.load_async(&mut connection).await?;
        connection.req_packed_command(cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    #[test]
    fn arguments_keep_their_boundaries() {
        let mut args = Args::with_capacity(5, 16);
        args.push(b"key");
        args.push(b"");
        args.push_number(0);
        args.push_number(10);
        args.push_number(u64::MAX);
        let got: Vec<&[u8]> = args.iter().collect();
        assert_eq!(
            got,
            [&b"key"[..], b"", b"0", b"10", b"18446744073709551615"]
        );
    }
}
