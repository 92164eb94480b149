//! Record -> event, one module per observer. These functions are pure: the
//! poller calls them on the hot path, tests call them directly.

pub mod network;
pub mod process;
pub mod storage;

use crate::abi::Record;
use crate::event::Event;
use crate::metrics::Suppress;
use tapio_wire::CompiledConfig;

/// What the observers need besides the record.
pub struct Context<'a> {
    /// Wall-clock ns = kernel boot-time ns + this offset.
    pub boot_to_wall_ns: i64,
    pub config: &'a CompiledConfig,
    /// The kernel's page size in KiB (memory facts arrive in pages).
    pub page_kb: u64,
}

impl Context<'_> {
    pub fn wall_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i64).saturating_add(self.boot_to_wall_ns).max(0) as u64
    }
}

/// Builds the event for a parsed record, or says why it is not emitted.
pub fn build_event(rec: &Record, seq: u64, ctx: &Context<'_>) -> Result<Event, Suppress> {
    match rec {
        Record::Network(e) => network::build(e, seq, ctx),
        Record::Storage(e) => storage::build(e, seq, ctx),
        Record::Process(e) => process::build(e, seq, ctx),
    }
}
