//! Networked backends for dref. Each backend sits behind its own cargo
//! feature (`redis`, `raft`) and implements [`dref::engine::Backend`].
