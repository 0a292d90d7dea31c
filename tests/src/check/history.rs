//! The history format: JSON lines, one [`Event`] per line.
//!
//! Every client task (a *process*) writes an event when it invokes an
//! operation (`"type": "invoke"`) and one when the operation completes:
//! `ok` (it happened, with its result), `fail` (it definitely did not
//! happen, or for a compare-and-set, it observed another value) or `info`
//! (the outcome is unknown: a timeout after the request was sent). A
//! process runs one operation of a kind at a time, so a completion belongs
//! to the same process's latest invocation of that kind; an invocation
//! with no completion is as unknown as an `info`. Some events are points
//! with no invocation (`final_read`, `believe`, `resign`, `watch_open`,
//! `seen`, `nemesis`).
//!
//! `t` is `CLOCK_MONOTONIC` in nanoseconds, one clock for every process on
//! the machine, so events written by different OS processes compare
//! directly. The operation's fields are flattened into the event, tagged by
//! `f`:
//!
//! ```text
//! {"process":3,"node":"n1","t":1200,"type":"invoke","f":"write","key":"k1","value":7}
//! {"process":3,"node":"n1","t":1900,"type":"ok","f":"write","key":"k1","value":7}
//! {"process":4,"node":"n2","t":1300,"type":"invoke","f":"read","key":"k1","value":null}
//! {"process":4,"node":"n2","t":2100,"type":"ok","f":"read","key":"k1","value":7}
//! ```
//!
//! A node SIGKILLed in the middle of writing a line leaves a torn last
//! line without its newline: the readers drop it, and report any other
//! malformed line as an error.

use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of a history: an invocation, a completion, or a point event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique in a run; one process (client task) runs one operation at a time,
    /// so a completion belongs to the same process's latest invocation.
    pub process: u64,
    /// The node (OS process or context) the client runs on, e.g. "n2".
    pub node: String,
    /// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
    pub t: u64,
    /// Invocation, or how the operation completed.
    #[serde(rename = "type")]
    pub phase: Phase,
    /// What the operation is, with its arguments and results.
    #[serde(flatten)]
    pub op: Op,
}

/// Whether an event invokes an operation or completes it, and how.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The operation was called.
    Invoke,
    /// It happened, with the result in the event.
    Ok,
    /// It definitely did not happen (or, for a compare-and-set, it observed
    /// another value).
    Fail,
    /// Its outcome is unknown: it may or may not have happened.
    Info,
}

/// An operation and its fields (tagged by `f` in the JSON line).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Linearizable read of a u64 register (initial value 0). `value` is None on invoke, Some on ok.
    Read {
        /// The register.
        key: String,
        /// What it read (on ok).
        value: Option<u64>,
    },
    /// Write of `value`.
    Write {
        /// The register.
        key: String,
        /// What it wrote.
        value: u64,
    },
    /// Compare-and-set. ok: the register held `from` and now holds `to`. fail: it did not hold `from`
    /// at the linearization point (a definite observation, nothing written).
    Cas {
        /// The register.
        key: String,
        /// The value it expected.
        from: u64,
        /// The value it set.
        to: u64,
    },
    /// Atomic +1; `value` is the new value on ok (None on invoke).
    Incr {
        /// The register.
        key: String,
        /// The new value (on ok).
        value: Option<u64>,
    },
    /// Final read of a counter key after all faults were healed (phase ok only): for durability.
    FinalRead {
        /// The counter.
        key: String,
        /// What it read.
        value: u64,
    },
    /// Lock acquisition: invoke when called; ok when granted with `token`; fail when not granted
    /// (timeout/busy/error text in `error`); info if the outcome is unknown.
    Acquire {
        /// The lock.
        lock: String,
        /// The fencing token granted (on ok).
        token: Option<u64>,
        /// Why it was not granted (on fail or info).
        error: Option<String>,
    },
    /// A lock body. invoke = the body entered (with its token); ok = the body left and the lock call
    /// returned Ok; fail = the call returned LockLost (`error` = reason; t = when it was told);
    /// no completion = the process died or the run ended.
    Hold {
        /// The lock.
        lock: String,
        /// The fencing token of the grant the body runs under.
        token: u64,
        /// Why the lock was lost (on fail).
        error: Option<String>,
    },
    /// Point event (phase ok): the body of `token` returned at `t`. The
    /// body's `Hold` completes only when the lock call returns (after the
    /// release), which may be much later or never (a node killed while
    /// its release waits for an unreachable store): this says when the body
    /// itself stopped running.
    Left {
        /// The lock.
        lock: String,
        /// The fencing token of the body that returned.
        token: u64,
    },
    /// A write of `token` through a fenced register `key` (state: highest accepted token, initially 0):
    /// ok = accepted (token >= state, state := token), fail = rejected as stale (token < state).
    Fenced {
        /// The fenced register.
        key: String,
        /// The token written.
        token: u64,
    },
    /// Campaign in an election: invoke when called; ok = won with `token`; fail/info as for Acquire.
    Campaign {
        /// The election.
        election: String,
        /// The leadership token won (on ok).
        token: Option<u64>,
        /// Why it did not win (on fail or info).
        error: Option<String>,
    },
    /// Point sample (phase ok): at `t` the winner holding `token` checked and believed it leads.
    Believe {
        /// The election.
        election: String,
        /// The leadership token of the term.
        token: u64,
    },
    /// Leadership ended (phase ok = resigned, fail = told it was lost, at `t`).
    Resign {
        /// The election.
        election: String,
        /// The leadership token of the term.
        token: u64,
        /// Why leadership was lost (on fail).
        error: Option<String>,
    },
    /// A watcher opened on `key` (phase ok): every committed event it may deliver has a revision
    /// above `after` (a linearizable read made before the watch was opened saw revision `after`).
    WatchOpen {
        /// The key watched.
        key: String,
        /// The watcher, unique per key in a run.
        watcher: u64,
        /// The revision the watcher starts after.
        after: u64,
    },
    /// An item a watcher received (phase ok), in delivery order: `kind` is "put", "deleted",
    /// "expired" or "resync"; `revision` is the event's revision, or the resynced record's
    /// mod revision (0 for a resync to an absent record).
    Seen {
        /// The key watched.
        key: String,
        /// The watcher.
        watcher: u64,
        /// The event's revision, or the resynced record's mod revision.
        revision: u64,
        /// "put", "deleted", "expired" or "resync".
        kind: String,
    },
    /// A fault the nemesis applied (invoke when it starts applying, ok when done): action is
    /// "kill", "pause", "resume", "partition", "heal", "restart" (a server), "start" (a node).
    Nemesis {
        /// What it did.
        action: String,
        /// The nodes it did it to.
        nodes: Vec<String>,
    },
}

impl Op {
    /// The `f` tag: which kind of operation this is.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Cas { .. } => "cas",
            Op::Incr { .. } => "incr",
            Op::FinalRead { .. } => "final_read",
            Op::Acquire { .. } => "acquire",
            Op::Hold { .. } => "hold",
            Op::Left { .. } => "left",
            Op::Fenced { .. } => "fenced",
            Op::Campaign { .. } => "campaign",
            Op::Believe { .. } => "believe",
            Op::Resign { .. } => "resign",
            Op::WatchOpen { .. } => "watch_open",
            Op::Seen { .. } => "seen",
            Op::Nemesis { .. } => "nemesis",
        }
    }

    /// The key, lock or election the operation is about ("" for the nemesis).
    pub(crate) fn subject(&self) -> &str {
        match self {
            Op::Read { key, .. }
            | Op::Write { key, .. }
            | Op::Cas { key, .. }
            | Op::Incr { key, .. }
            | Op::FinalRead { key, .. }
            | Op::Fenced { key, .. }
            | Op::WatchOpen { key, .. }
            | Op::Seen { key, .. } => key,
            Op::Acquire { lock, .. } | Op::Hold { lock, .. } | Op::Left { lock, .. } => lock,
            Op::Campaign { election, .. }
            | Op::Believe { election, .. }
            | Op::Resign { election, .. } => election,
            Op::Nemesis { .. } => "",
        }
    }
}

/// Reads one history file. A torn last line (no newline, not valid JSON:
/// the writer was killed mid-line) is dropped; any other malformed line is
/// an `InvalidData` error naming the file and line.
pub fn read_history(path: impl AsRef<Path>) -> io::Result<Vec<Event>> {
    let path = path.as_ref();
    let text = fs::read_to_string(path)?;
    parse_history(&text).map_err(|(line, e)| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}:{line}: {e}", path.display()),
        )
    })
}

/// Parses JSON lines; on error, the 1-based line number and the error.
fn parse_history(text: &str) -> Result<Vec<Event>, (usize, serde_json::Error)> {
    let torn_tail_possible = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(event) => events.push(event),
            Err(_) if torn_tail_possible && i + 1 == lines.len() => {}
            Err(e) => return Err((i + 1, e)),
        }
    }
    Ok(events)
}

/// Reads and merges several histories (one per node, say), sorted by `t`
/// (stably, so one process's events keep their order). Each path is a
/// file, or a directory whose `*.jsonl` files are all read (in name order).
pub fn read_histories<I, P>(paths: I) -> io::Result<Vec<Event>>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    let mut events = Vec::new();
    for path in paths {
        let path = path.as_ref();
        if path.is_dir() {
            let mut files: Vec<PathBuf> = fs::read_dir(path)?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<io::Result<_>>()?;
            files.retain(|f| f.extension().is_some_and(|ext| ext == "jsonl") && f.is_file());
            files.sort();
            for file in files {
                events.extend(read_history(file)?);
            }
        } else {
            events.extend(read_history(path)?);
        }
    }
    sort_by_time(&mut events);
    Ok(events)
}

/// Writes `events` as JSON lines, replacing the file.
pub fn write_history(path: impl AsRef<Path>, events: &[Event]) -> io::Result<()> {
    let mut out = BufWriter::new(fs::File::create(path)?);
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Sorts events by `t`, keeping the order of events with the same `t`.
pub fn sort_by_time(events: &mut [Event]) {
    events.sort_by_key(|e| e.t);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: u64, t: u64, phase: Phase) -> Event {
        Event {
            process: 1,
            node: "n1".into(),
            t,
            phase,
            op: Op::Write {
                key: key.into(),
                value,
            },
        }
    }

    #[test]
    fn the_documented_lines_parse() {
        let text = r#"{"process":3,"node":"n1","t":1200,"type":"invoke","f":"write","key":"k1","value":7}
{"process":4,"node":"n2","t":2100,"type":"ok","f":"read","key":"k1","value":7}
{"process":5,"node":"n3","t":2200,"type":"info","f":"acquire","lock":"l","token":null,"error":"timeout"}
{"process":0,"node":"nemesis","t":2300,"type":"ok","f":"nemesis","action":"kill","nodes":["n2"]}
"#;
        let events = parse_history(text).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0],
            Event {
                process: 3,
                ..write("k1", 7, 1200, Phase::Invoke)
            }
        );
        assert_eq!(
            events[1].op,
            Op::Read {
                key: "k1".into(),
                value: Some(7)
            }
        );
        assert_eq!(events[2].phase, Phase::Info);
    }

    #[test]
    fn a_torn_last_line_is_dropped_but_a_torn_middle_line_is_an_error() {
        let good = serde_json::to_string(&write("k", 1, 5, Phase::Ok)).unwrap();
        let torn = &good[..good.len() / 2];
        assert_eq!(
            parse_history(&format!("{good}\n{torn}")).unwrap().len(),
            1,
            "a torn tail is tolerated"
        );
        let (line, _) = parse_history(&format!("{good}\n{torn}\n{good}\n")).unwrap_err();
        assert_eq!(line, 2);
        assert!(
            parse_history(&format!("{good}\n{torn}\n")).is_err(),
            "a complete (newline-terminated) line that does not parse is an error"
        );
    }

    #[test]
    fn histories_round_trip_and_merge_in_time_order() {
        let dir = crate::scratch::ScratchDir::new("history");
        let a = [
            write("k", 1, 10, Phase::Invoke),
            write("k", 1, 30, Phase::Ok),
        ];
        let b = [
            write("k", 2, 20, Phase::Invoke),
            write("k", 2, 20, Phase::Ok),
        ];
        write_history(dir.join("a.jsonl"), &a).unwrap();
        write_history(dir.join("b.jsonl"), &b).unwrap();
        fs::write(dir.join("notes.txt"), "not a history").unwrap();
        assert_eq!(read_history(dir.join("a.jsonl")).unwrap(), a);
        let merged = read_histories([&dir]).unwrap();
        assert_eq!(
            merged,
            [a[0].clone(), b[0].clone(), b[1].clone(), a[1].clone()]
        );
    }
}
