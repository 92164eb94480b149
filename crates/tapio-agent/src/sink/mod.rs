//! The local sinks. The controller sink lives in `crate::client`.

pub mod file;
pub mod stdout;
