//! Every limit an operator can meet, in one place: the ranges of the
//! profile's knobs (the profile compiler checks them, `CompiledConfig`
//! re-checks them on the agent, and a test holds the JSON schema to them),
//! the kernel-side sizes they depend on, and the bounds on what the agent
//! and the controller read.
//!
//! Sizes that are part of the kernel ABI are mirrors of
//! `include/tapio_abi.h`; a test holds the compiled objects to them.

/// An inclusive range of a profile knob, in the profile's own unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const fn contains(self, v: u64) -> bool {
        v >= self.min && v <= self.max
    }
}

// ---- kernel-side sizes (include/tapio_abi.h)

/// Ring buffer bytes per observer, split into one ring per possible CPU,
/// or fewer rings, shared by CPUs, so that none is smaller than
/// [`RING_BYTES_MIN`] (include/tapio_abi.h). The low-rate observers get
/// less.
pub const RING_BYTES_NETWORK: u32 = 512 * 1024;
pub const RING_BYTES_STORAGE: u32 = 256 * 1024;
pub const RING_BYTES_PROCESS: u32 = 256 * 1024;
/// The smallest ring (`TAPIO_RINGBUF_MIN_BYTES`).
pub const RING_BYTES_MIN: u32 = 32 * 1024;
/// The largest `ringbuf.wakeup_bytes` (`TAPIO_WAKEUP_BYTES_MAX`). A
/// program uses at most half of its own ring, so that the threshold can
/// fire on every ring.
pub const WAKEUP_BYTES_MAX: u32 = 128 * 1024;
/// Most exit codes a profile may ignore: the kernel carrier's array
/// (`TAPIO_MAX_IGNORED_EXIT_CODES`).
pub const MAX_IGNORED_EXIT_CODES: usize = 16;

// ---- profile knobs (overrides.*), in the profile's units

/// `network.retransmit_window_ms`
pub const RETRANSMIT_WINDOW_MS: Range = Range {
    min: 100,
    max: 3_600_000,
};
/// `storage.slow_io.warning_ms` and `critical_ms` (0 reports every request).
pub const SLOW_IO_MS: Range = Range {
    min: 0,
    max: 600_000,
};
/// `process.ignore_exit_codes[]`: exit statuses other than success.
pub const EXIT_CODE: Range = Range { min: 1, max: 255 };
/// `batching.max_events`
pub const MAX_EVENTS: Range = Range {
    min: 1,
    max: MAX_EVENTS_PER_BATCH as u64,
};
/// `batching.max_bytes`: one controller request body.
pub const MAX_BYTES: Range = Range {
    min: 4096,
    max: 16 * 1024 * 1024,
};
/// `batching.flush_interval_ms`
pub const FLUSH_INTERVAL_MS: Range = Range {
    min: 1,
    max: 60_000,
};
/// `ringbuf.wakeup_bytes`
pub const WAKEUP_BYTES: Range = Range {
    min: 1,
    max: WAKEUP_BYTES_MAX as u64,
};
/// `ringbuf.poll_timeout_ms`
pub const POLL_TIMEOUT_MS: Range = Range { min: 1, max: 1000 };
/// With no record for this long, the agent's poller sleeps long and lets
/// the programs wake it (`TAPIO_CONSUMER_IDLE`, include/tapio_abi.h).
pub const POLLER_IDLE_AFTER_MS: u64 = 1000;
/// Its sleep then: the bound on the delay of a record submitted while the
/// poller was just going to sleep (the programs read the flag before they
/// submit), and on the wakeups of an idle node.
pub const POLLER_IDLE_SLEEP_MS: u64 = 2000;
/// The agent's store starts the write-out of each file every this many
/// bytes (`sync_file_range`), off the sender's thread: written back in
/// small pieces, the file's block allocation never holds its lock long
/// enough to stall the sender's next write (docs/architecture.md).
pub const STORE_WRITEBACK_BYTES: u64 = 4 << 20;
/// While the event queue is full the poller takes no record and pauses
/// this long between looks: the records wait in the rings, which hold
/// more than the queue (docs/architecture.md, "Back-pressure").
pub const POLLER_FULL_QUEUE_PAUSE_MS: u64 = 1;
/// At shutdown the poller waits at most this long for room in the queue
/// while it drains the rings; past it, what does not fit is a counted
/// queue drop.
pub const POLLER_DRAIN_WAIT_MS: u64 = 1000;

// ---- what the programs read and hold

/// Most events in one batch a v1 controller accepts.
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
/// Largest profile (controller) or config file (agent) read.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Largest HTTP response head (agent) or request head (controller) read.
pub const MAX_HTTP_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines in one request head (controller: beyond it, 431).
pub const MAX_HTTP_HEADERS: usize = 64;
/// Whole requests waiting for a controller worker, per worker; beyond
/// them a request is answered 503 at once.
pub const MAX_HTTP_REQUESTS_QUEUED_PER_WORKER: usize = 64;
/// Connections the controller's listening socket holds before it accepts
/// them (listen(2) backlog; the kernel caps it at net.core.somaxconn).
/// Beyond them the kernel drops the SYN, and the agent's TCP tries again
/// one second later (then 3, 7...): the standard library's 128 did that
/// to a fleet of thousands reconnecting at once (docs/budgets.md).
pub const CONTROLLER_LISTEN_BACKLOG: i32 = 4096;
/// Request bytes (heads and bodies) the controller buffers at once, unless
/// `--max-body-bytes` asks for more (then twice the largest body).
pub const CONTROLLER_BUFFER_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// The controller closes a keep-alive connection with no request for this
/// long (`--idle-timeout-secs`'s default)...
pub const HTTP_IDLE_TIMEOUT_SECS: u64 = 60;
/// ...and an agent reuses its connection only when it was idle for less
/// than this, so it rarely meets a connection the controller just closed.
pub const HTTP_CLIENT_REUSE_SECS: u64 = 45;
/// Largest agent queue (`--queue-capacity`, `--controller-queue`).
pub const MAX_AGENT_QUEUE: usize = 1 << 20;
/// Emptied line strings the agent's controller client hands back to the
/// sender for reuse (at about 400 bytes each, ~200 KiB at most).
pub const CONTROLLER_SPARE_LINES: usize = 512;
/// `GET /v1/status`: agents per page when `limit` is not given, and the
/// most a page holds whatever `limit` says.
pub const STATUS_PAGE_DEFAULT: usize = 500;
pub const STATUS_PAGE_MAX: usize = 1000;
/// Most cgroups the agent's attribution map holds.
pub const MAX_CGROUPS: usize = 65_536;
