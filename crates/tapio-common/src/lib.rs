//! Shared by the agent and the CLI, and platform independent:
//! - [`abi`]: the Rust mirror of `include/tapio_abi.h` and the safe record
//!   parser;
//! - [`event`]: the event model and its JSON line;
//! - [`time`]: RFC 3339 formatting and parsing;
//! - [`store`]: the file store's layout (hourly buckets, late and fallback
//!   files), shared by the agent's writer and the CLI's reader.
//! - [`sink`]: the sink trait.

pub mod abi;
pub mod event;
pub mod logger;
pub mod sink;
pub mod store;
pub mod time;
