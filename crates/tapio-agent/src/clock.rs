//! Kernel boot-time timestamps to wall-clock time.
//!
//! The programs stamp records with `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME,
//! which keeps counting across suspend). The wall-clock time of a record is
//! that plus (CLOCK_REALTIME - CLOCK_BOOTTIME), sampled back to back; the
//! poller refreshes the offset every second so NTP steps are followed.

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return 0;
    }
    // time_t and c_long are i64 on the 64-bit targets we build for.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (sec, nsec) = (ts.tv_sec as i64, ts.tv_nsec as i64);
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's `request.start_time_ns`.
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// CLOCK_REALTIME - CLOCK_BOOTTIME, in ns. The smaller of two samples'
/// bracket is taken to keep the error below a microsecond.
pub fn boot_to_wall_offset() -> i64 {
    let mut best = (i64::MAX, 0i64);
    for _ in 0..3 {
        let b1 = clock_ns(libc::CLOCK_BOOTTIME);
        let r = clock_ns(libc::CLOCK_REALTIME);
        let b2 = clock_ns(libc::CLOCK_BOOTTIME);
        let width = b2 - b1;
        if width < best.0 {
            best = (width, r - (b1 + width / 2));
        }
    }
    best.1
}

/// CLOCK_BOOTTIME now, in ns.
#[cfg(test)]
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME).max(0) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn offset_maps_boot_now_to_wall_now() {
        let wall = tapio_common::time::now_unix_ns() as i64;
        let mapped = super::boot_ns() as i64 + super::boot_to_wall_offset();
        // A wrong offset is off by the uptime (hours); a second covers any
        // preemption between the two clock reads on a busy machine.
        assert!((mapped - wall).abs() < 1_000_000_000, "{mapped} vs {wall}");
    }
}
