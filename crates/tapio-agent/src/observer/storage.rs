//! `kernel.storage.*` from `struct tapio_storage_event`.

use super::Context;
use crate::abi::{
    F_CGROUP_KNOWN, F_CRITICAL, F_ERRNO, F_OWNER_KNOWN, StorageEvent, event_type, storage_op,
};
use crate::event::{Comm, Event, EventKind, Facts, Owner, StorageFacts};
use crate::metrics::Suppress;
use tapio_wire::Severity;

pub fn op_name(op: u8) -> &'static str {
    match op {
        storage_op::READ => "read",
        storage_op::WRITE => "write",
        storage_op::FLUSH => "flush",
        storage_op::DISCARD => "discard",
        _ => "other",
    }
}

/// The kernel's `blk_status_t` names (include/linux/blk_types.h).
pub fn blk_status_name(s: u8) -> Option<&'static str> {
    Some(match s {
        1 => "BLK_STS_NOTSUPP",
        2 => "BLK_STS_TIMEOUT",
        3 => "BLK_STS_NOSPC",
        4 => "BLK_STS_TRANSPORT",
        5 => "BLK_STS_TARGET",
        6 => "BLK_STS_RESV_CONFLICT",
        7 => "BLK_STS_MEDIUM",
        8 => "BLK_STS_PROTECTION",
        9 => "BLK_STS_RESOURCE",
        10 => "BLK_STS_IOERR",
        11 => "BLK_STS_DM_REQUEUE",
        12 => "BLK_STS_AGAIN",
        13 => "BLK_STS_DEV_RESOURCE",
        14 => "BLK_STS_ZONE_OPEN_RESOURCE",
        15 => "BLK_STS_ZONE_ACTIVE_RESOURCE",
        16 => "BLK_STS_OFFLINE",
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
        event_type::STORAGE_SLOW_IO => (
            EventKind::SlowIo,
            if e.flags & F_CRITICAL != 0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
        ),
        event_type::STORAGE_IO_ERROR => (EventKind::IoError, Severity::Critical),
        _ => return Err(Suppress::WrongObserver),
    };
    let is_err = kind == EventKind::IoError;
    let errno = e.flags & F_ERRNO != 0;
    Ok(Event {
        seq,
        kind,
        severity,
        timestamp_ns: ctx.wall_ns(e.hdr.timestamp_ns),
        config_generation: e.hdr.config_generation,
        workload: None,
        memcg: None,
        facts: Facts::Storage(StorageFacts {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::EventHeader;
    use tapio_wire::CompiledConfig;

    #[test]
    fn severity_follows_thresholds() {
        let cfg = CompiledConfig::standalone_default();
        let ctx = Context {
            boot_to_wall_ns: 0,
            config: &cfg,
            page_kb: 4,
        };
        let mut e = StorageEvent::zeroed();
        e.hdr = EventHeader {
            kind: event_type::STORAGE_SLOW_IO,
            size: 80,
            config_generation: 1,
            timestamp_ns: 5,
        };
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
        e.hdr.kind = event_type::STORAGE_IO_ERROR;
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
}
