//! Checking recorded histories of a nemesis run.
//!
//! Clients record what they invoke and what comes back as JSON lines of
//! [`Event`]s (the format is in [`history`]).

pub mod history;

pub use history::{read_histories, read_history, sort_by_time, write_history, Event, Op, Phase};
