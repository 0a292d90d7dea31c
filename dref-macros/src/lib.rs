//! Procedural macros for [dref](https://docs.rs/dref). Use them through the
//! `dref` crate, which re-exports them; generated code names only
//! `::dref::__private` and fully qualified `::core` paths.
