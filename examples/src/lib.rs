//! Runnable recipes for dref: see the files beside this crate.
