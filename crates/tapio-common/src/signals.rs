//! SIGINT/SIGTERM (stop) and SIGHUP (reload) as flags a main loop reads,
//! for the agent and the controller alike. SIGPIPE is ignored: a reader
//! that went away is an I/O error to count, not a death.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Whether a system call interrupted by one of these signals restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// Blocking calls return EINTR, so a loop blocked in one notices the
    /// signal at once (the agent).
    ReturnEintr,
    /// Blocking calls restart (the controller: its threads poll the flag).
    Restart,
}

fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int), how: Interrupted) {
    // SAFETY: the handlers only store to atomics (async-signal-safe); the
    // sigaction struct is zeroed and then filled.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if how == Interrupted::Restart {
            sa.sa_flags = libc::SA_RESTART;
        }
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

pub fn install_handlers(how: Interrupted) {
    install(libc::SIGINT, on_stop, how);
    install(libc::SIGTERM, on_stop, how);
    install(libc::SIGHUP, on_reload, how);
    // SAFETY: setting a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// True once per SIGHUP.
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}
