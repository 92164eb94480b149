//! The node observer: hardware counters per CPU.
//!
//! This build carries the node config (window, thresholds) to the kernel
//! but emits no node events yet. The agent says so truthfully: where the
//! counters are missing (many VMs) the reason is the failed
//! perf_event_open; where they exist, the reason is that the observer is
//! not in this build. Either way it attaches nothing and reports
//! `unsupported`, never `up`.

/// Whether this host exposes a hardware cycle counter, by opening one on
/// CPU 0 for all tasks (closed at once).
pub fn hardware_counters() -> Result<(), std::io::Error> {
    let mut attr = [0u8; 128];
    // perf_event_attr: type = PERF_TYPE_HARDWARE (0), size, config =
    // PERF_COUNT_HW_CPU_CYCLES (0); bit 0 of the flags word: disabled.
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[40] = 1;
    // SAFETY: perf_event_open reads `attr` and returns an fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            0u64,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: closing the fd the kernel just gave us.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Why the node observer is unsupported on this host.
pub fn unsupported_reason() -> String {
    match hardware_counters() {
        Err(e) => format!("hardware counters unavailable (perf_event_open: {e})"),
        Ok(()) => "hardware counters exist, but the node observer is not in this build".into(),
    }
}
