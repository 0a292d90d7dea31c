//! Writes a node's history: one JSON line per event, each written with one
//! `write` call as it happens, so that a node killed with SIGKILL leaves
//! every event but perhaps a torn last line.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use crate::check::history::{Event, Op, Phase};
use crate::os::monotonic_ns;

/// The history file of one node (clones of the `Arc` share it).
pub struct Recorder {
    node: String,
    file: Mutex<File>,
}

impl Recorder {
    /// Appends to the history at `path` for the node named `node`.
    pub fn create(path: &Path, node: &str) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Recorder {
            node: node.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records `op` for `process` now.
    pub fn emit(&self, process: u64, phase: Phase, op: Op) {
        self.emit_at(process, monotonic_ns(), phase, op);
    }

    /// Records `op` for `process` at time `t` (CLOCK_MONOTONIC, ns): for a
    /// completion known only after the moment it describes.
    pub fn emit_at(&self, process: u64, t: u64, phase: Phase, op: Op) {
        let event = Event {
            process,
            node: self.node.clone(),
            t,
            phase,
            op,
        };
        let mut line = match serde_json::to_vec(&event) {
            Ok(line) => line,
            Err(e) => panic!("a history event must serialize: {e}"),
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line) {
            panic!("cannot write the history of {}: {e}", self.node);
        }
    }
}
