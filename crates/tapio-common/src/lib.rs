//! What the agent, the controller and the CLI share, platform independent:
//! - [`time`]: RFC 3339 formatting and parsing;
//! - [`decimal`]: digits without a division instruction, for the agent's
//!   JSON lines;
//! - [`store`]: the file store's layout (hourly buckets, late and fallback
//!   files), shared by the agent's writer and the CLI's reader;
//! - [`logger`]: the one logger of the agent and the controller (journald
//!   priorities, escaped control characters);
//! - `signals` (unix): stop and reload flags for the agent and the
//!   controller.
//!
//! The agent's own data path (the ABI mirror and record parser, the event
//! model, the sink trait) lives in the agent.

pub mod decimal;
pub mod logger;
#[cfg(unix)]
pub mod signals;
pub mod store;
pub mod time;
