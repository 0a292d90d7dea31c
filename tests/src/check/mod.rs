//! Provisional (replaced by the checkers).
pub mod history;
