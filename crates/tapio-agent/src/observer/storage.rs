//! The storage observer's user-space half: the mirror of
//! `struct tapio_storage_event`, its checks, and the `kernel.storage.*`
//! facts.

use super::{Context, Rejected};
use crate::abi::{
    COMM_LEN, EventHeader, F_CGROUP_KNOWN, F_CRITICAL, F_ERRNO, F_OWNER_KNOWN, ParseError,
    read_record,
};
use crate::event::{Comm, Event, EventKind, Json, Owner};
use crate::metrics::Suppress;
use tapio_wire::Severity;

/// Its record types (`enum tapio_event_type`).
pub mod types {
    pub const SLOW_IO: u16 = 16;
    pub const IO_ERROR: u16 = 17;
    pub const ALL: &[u16] = &[SLOW_IO, IO_ERROR];
}

/// `enum tapio_storage_op`
pub mod storage_op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const FLUSH: u8 = 2;
    pub const DISCARD: u8 = 3;
    pub const OTHER: u8 = 4;
}

/// `struct tapio_storage_event`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageEvent {
    pub hdr: EventHeader,
    pub cgroup_id: u64,
    pub sector: u64,
    pub latency_ns: u64,
    pub bytes: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub pid: u32,
    pub op: u8,
    pub error: u8,
    pub flags: u8,
    pub _pad: [u8; 5],
    pub comm: [u8; COMM_LEN],
}

crate::abi::record!(StorageEvent, 80);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFacts {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub sector: u64,
    pub bytes: u32,
    pub op: &'static str,
    pub latency_ns: u64,
    /// `io_error`: the kernel's blk_status name (or number).
    pub error: Option<&'static str>,
    pub error_code: Option<u8>,
    pub owner: Option<Owner>,
    pub cgroup_id: Option<u64>,
}

impl StorageFacts {
    /// A 4 KiB write on 7:0, nothing optional set: tests change what they
    /// need with `..StorageFacts::sample()`.
    #[cfg(test)]
    pub fn sample() -> StorageFacts {
        StorageFacts {
            dev_major: 7,
            dev_minor: 0,
            sector: 8,
            bytes: 4096,
            op: "write",
            latency_ns: 5,
            error: None,
            error_code: None,
            owner: None,
            cgroup_id: None,
        }
    }

    pub fn write_json(&self, j: &mut Json<'_>) {
        j.num("dev_major", self.dev_major);
        j.num("dev_minor", self.dev_minor);
        j.num("sector", self.sector);
        j.num("bytes", self.bytes);
        j.str("op", self.op);
        j.num("latency_ns", self.latency_ns);
        if let Some(e) = self.error {
            j.str("error", e);
        }
        j.num_opt("error_code", self.error_code);
        if let Some(o) = &self.owner {
            j.num("pid", o.pid);
            j.comm("comm", &o.comm);
        }
        j.num_opt("cgroup_id", self.cgroup_id);
    }
}

/// A record from the storage ring, checked field by field.
pub fn decode(bytes: &[u8]) -> Result<StorageEvent, ParseError> {
    let e: StorageEvent = read_record(bytes, types::ALL)?;
    if e.op > storage_op::OTHER {
        return Err(ParseError::BadField("op"));
    }
    if e.hdr.kind == types::IO_ERROR && e.error == 0 {
        return Err(ParseError::BadField("error"));
    }
    Ok(e)
}

/// The table's entry point: ring bytes to event.
pub fn to_event(bytes: &[u8], seq: u64, ctx: &Context<'_>) -> Result<Event, Rejected> {
    super::to_event(bytes, decode, |e| build(e, seq, ctx))
}

pub fn op_name(op: u8) -> &'static str {
    match op {
        storage_op::READ => "read",
        storage_op::WRITE => "write",
        storage_op::FLUSH => "flush",
        storage_op::DISCARD => "discard",
        _ => "other",
    }
}

/// The kernel's `blk_status_t` names (include/linux/blk_types.h), for the
/// numbers that have meant the same thing on every kernel whose
/// `block_rq_complete` passes a `blk_status_t`. The numbers are macros, so
/// no BTF carries them, and some moved: 6 was `BLK_STS_NEXUS` before it
/// became `BLK_STS_RESV_CONFLICT`, and removing `BLK_STS_ZONE_RESOURCE`
/// (14) shifted 15 and 16 down (5.15 has 14 = ZONE_RESOURCE, 15 =
/// ZONE_OPEN_RESOURCE, 16 = ZONE_ACTIVE_RESOURCE; 6.1 has 14 =
/// ZONE_OPEN_RESOURCE, 15 = ZONE_ACTIVE_RESOURCE, 16 = OFFLINE). Those
/// are `None`: the event then says `unknown` beside the number, never a
/// name that may be another kernel's.
pub fn blk_status_name(s: u8) -> Option<&'static str> {
    Some(match s {
        1 => "BLK_STS_NOTSUPP",
        2 => "BLK_STS_TIMEOUT",
        3 => "BLK_STS_NOSPC",
        4 => "BLK_STS_TRANSPORT",
        5 => "BLK_STS_TARGET",
        7 => "BLK_STS_MEDIUM",
        8 => "BLK_STS_PROTECTION",
        9 => "BLK_STS_RESOURCE",
        10 => "BLK_STS_IOERR",
        11 => "BLK_STS_DM_REQUEUE",
        12 => "BLK_STS_AGAIN",
        13 => "BLK_STS_DEV_RESOURCE",
        // 17 and 18 were new numbers when they were added (6.5 and
        // later): no kernel has used them for anything else.
        17 => "BLK_STS_DURATION_LIMIT",
        18 => "BLK_STS_INVAL",
        _ => return None,
    })
}

/// The errno names `blk_status_to_errno` can produce, for kernels whose
/// `block_rq_complete` passes an errno (flag `F_ERRNO`).
pub fn errno_name(e: u8) -> Option<&'static str> {
    Some(match i32::from(e) {
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOSPC => "ENOSPC",
        libc::ENOLINK => "ENOLINK",
        libc::EREMOTEIO => "EREMOTEIO",
        libc::EBADE => "EBADE",
        libc::ENODATA => "ENODATA",
        libc::EILSEQ => "EILSEQ",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::EREMCHG => "EREMCHG",
        libc::ETOOMANYREFS => "ETOOMANYREFS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EIO => "EIO",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        _ => return None,
    })
}

pub fn build(e: &StorageEvent, seq: u64, ctx: &Context<'_>) -> Result<Event, Suppress> {
    let cfg = &ctx.config.storage;
    if !cfg.enabled {
        return Err(Suppress::ObserverDisabled);
    }
    let (kind, severity) = match e.hdr.kind {
        // The kernel decided against the thresholds of the generation the
        // record is stamped with, not whatever is in force now.
        types::SLOW_IO => (
            EventKind::SlowIo,
            if e.flags & F_CRITICAL != 0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
        ),
        types::IO_ERROR => (EventKind::IoError, Severity::Critical),
        _ => return Err(Suppress::WrongObserver),
    };
    let is_err = kind == EventKind::IoError;
    let errno = e.flags & F_ERRNO != 0;
    Ok(ctx.event(
        &e.hdr,
        seq,
        kind,
        severity,
        crate::observers::Facts::Storage(StorageFacts {
            dev_major: e.dev_major,
            dev_minor: e.dev_minor,
            sector: e.sector,
            bytes: e.bytes,
            op: op_name(e.op),
            latency_ns: e.latency_ns,
            error: match (is_err, errno) {
                (false, _) => None,
                (true, false) => Some(blk_status_name(e.error).unwrap_or("unknown")),
                (true, true) => Some(errno_name(e.error).unwrap_or("unknown")),
            },
            // The blk_status_t number; an errno is not one.
            error_code: (is_err && !errno).then_some(e.error),
            owner: (e.flags & F_OWNER_KNOWN != 0).then_some(Owner {
                pid: e.pid,
                comm: Comm(e.comm),
            }),
            cgroup_id: (e.flags & F_CGROUP_KNOWN != 0).then_some(e.cgroup_id),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::record_bytes;
    use crate::observers::Facts;
    use tapio_wire::CompiledConfig;

    impl StorageEvent {
        pub fn zeroed() -> Self {
            StorageEvent {
                hdr: EventHeader::default(),
                cgroup_id: 0,
                sector: 0,
                latency_ns: 0,
                bytes: 0,
                dev_major: 0,
                dev_minor: 0,
                pid: 0,
                op: 0,
                error: 0,
                flags: 0,
                _pad: [0; 5],
                comm: [0; COMM_LEN],
            }
        }
    }

    #[test]
    fn status_numbers_that_moved_between_kernels_have_no_name() {
        for moved in [6u8, 14, 15, 16] {
            assert_eq!(blk_status_name(moved), None, "{moved}");
        }
        assert_eq!(blk_status_name(10), Some("BLK_STS_IOERR"));
        assert_eq!(blk_status_name(0), None);
    }

    #[test]
    fn decode_checks_op_and_error() {
        let mut e = StorageEvent::zeroed();
        e.hdr = EventHeader::for_record::<StorageEvent>(types::IO_ERROR, 1, 5);
        assert_eq!(
            decode(&record_bytes(&e)),
            Err(ParseError::BadField("error"))
        );
        e.error = 10;
        assert_eq!(decode(&record_bytes(&e)), Ok(e));
        e.op = storage_op::OTHER + 1;
        assert_eq!(decode(&record_bytes(&e)), Err(ParseError::BadField("op")));
        e.op = storage_op::READ;
        e.hdr.kind = super::super::network::types::CONN_REFUSED;
        assert_eq!(decode(&record_bytes(&e)), Err(ParseError::UnknownType(1)));
    }

    #[test]
    fn severity_follows_thresholds() {
        let cfg = CompiledConfig::standalone_default();
        let ctx = Context {
            boot_to_wall_ns: 0,
            config: &cfg,
            page_kb: 4,
        };
        let mut e = StorageEvent::zeroed();
        e.hdr = EventHeader::for_record::<StorageEvent>(types::SLOW_IO, 1, 5);
        // Severity follows the kernel's flag (the record's generation), not
        // the thresholds in force in user space now.
        e.latency_ns = cfg.storage.slow_io_critical_ns * 10;
        e.op = storage_op::WRITE;
        let ev = build(&e, 1, &ctx).unwrap();
        assert_eq!(ev.severity, Severity::Warning);
        e.flags = F_CRITICAL;
        assert_eq!(build(&e, 1, &ctx).unwrap().severity, Severity::Critical);
        e.flags = 0;
        let Facts::Storage(s) = ev.facts else {
            panic!()
        };
        assert_eq!(s.op, "write");
        assert_eq!(s.error, None);
        e.hdr.kind = types::IO_ERROR;
        e.error = 10;
        let Facts::Storage(s) = build(&e, 1, &ctx).unwrap().facts else {
            panic!()
        };
        assert_eq!(s.error, Some("BLK_STS_IOERR"));
        assert_eq!(s.error_code, Some(10));
        // The same failure from a kernel that passes an errno.
        e.error = 5;
        e.flags |= F_ERRNO;
        let ev = build(&e, 2, &ctx).unwrap();
        let Facts::Storage(s) = &ev.facts else {
            panic!()
        };
        assert_eq!(s.error, Some("EIO"));
        assert_eq!(s.error_code, None);
    }

    #[test]
    fn mirror_matches_the_skeleton_type() {
        crate::abi::assert_same_layout!(
            tapio_bpf::storage::types::tapio_storage_event,
            StorageEvent,
            hdr,
            cgroup_id,
            sector,
            latency_ns,
            bytes,
            dev_major,
            dev_minor,
            pid,
            op,
            error,
            flags,
            comm
        );
    }
}
