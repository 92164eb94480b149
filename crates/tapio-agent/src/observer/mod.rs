//! Each observer's user-space half, one module per observer: the mirror
//! of its record struct, the checks a record must pass, and the event it
//! becomes. These functions are pure: the poller calls them on the hot
//! path (through the table in `crate::observers`), tests call them
//! directly.

pub mod network;
pub mod process;
pub mod storage;

use crate::abi::{EventHeader, ParseError};
use crate::event::{Event, EventKind, Facts};
use crate::metrics::Suppress;
use tapio_wire::{CompiledConfig, Severity};

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

    /// The event of a record: its time and generation from the header.
    /// Workload facts are added later, by the poller.
    pub fn event(
        &self,
        hdr: &EventHeader,
        seq: u64,
        kind: EventKind,
        severity: Severity,
        facts: Facts,
    ) -> Event {
        Event {
            seq,
            kind,
            severity,
            timestamp_ns: self.wall_ns(hdr.timestamp_ns),
            config_generation: hdr.config_generation,
            workload: None,
            memcg: None,
            facts,
        }
    }
}

/// An observer's `to_event`: its `decode`, then its `build`.
pub fn to_event<R>(
    bytes: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<R, ParseError>,
    build: impl FnOnce(&R) -> Result<Event, Suppress>,
) -> Result<Event, Rejected> {
    let r = decode(bytes).map_err(Rejected::Malformed)?;
    build(&r).map_err(Rejected::Suppressed)
}

/// Why a record from a ring does not become an event. Both are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Structurally invalid (`tapio_malformed_records_total`).
    Malformed(ParseError),
    /// Valid, and deliberately not emitted (`tapio_suppressed_events_total`).
    Suppressed(Suppress),
}
