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

extern "C" fn on_wake(_: libc::c_int) {}

/// The signal [`wake`] sends to one thread, to end a blocking call early.
const WAKE: libc::c_int = libc::SIGURG;

/// Lets [`wake`] interrupt a thread's blocking call (a handler that does
/// nothing, installed without SA_RESTART). SIGURG, ignored by default, is
/// otherwise unused by the agent.
pub fn install_wakeup() {
    install(WAKE, on_wake, Interrupted::ReturnEintr);
}

/// Interrupts a blocking system call of `thread` (it returns EINTR), after
/// [`install_wakeup`]. A thread that was not blocked just runs the empty
/// handler: callers repeat it until the thread has done what they wait for.
pub fn wake<T>(thread: &std::thread::JoinHandle<T>) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the handle keeps the thread joinable, so its pthread_t is
    // valid; the handler is installed (or the signal is ignored).
    unsafe {
        libc::pthread_kill(thread.as_pthread_t(), WAKE);
    }
}

/// Runs `spawn` with SIGINT, SIGTERM and SIGHUP blocked, then unblocks them
/// in the calling thread only: every thread `spawn` starts inherits the
/// block, so these signals reach the caller, and [`sleep_unless_signalled`]
/// there ends at once. A signal that arrives meanwhile waits, pending.
pub fn spawning_without_signals<T>(spawn: impl FnOnce() -> T) -> T {
    // SAFETY: sigset operations on a zeroed set we own; pthread_sigmask
    // changes the calling thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let out = spawn();
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        out
    }
}

/// Sleeps for `d`, or less when a signal handler runs on this thread
/// (handlers installed with [`Interrupted::ReturnEintr`]).
pub fn sleep_unless_signalled(d: std::time::Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid timespec; the remainder is not wanted.
    unsafe {
        libc::nanosleep(&ts, std::ptr::null_mut());
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// True once per SIGHUP.
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}
