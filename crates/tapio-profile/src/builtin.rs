//! Builtin profiles: the bases a document starts from.

/// A builtin base, in the profile's own units (milliseconds, ratios).
#[derive(Debug, Clone, PartialEq)]
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    pub network: bool,
    pub retransmit_window_ms: u64,
    pub storage: bool,
    pub slow_io_warning_ms: u64,
    pub slow_io_critical_ms: u64,
    pub process: bool,
    pub exec: bool,
    pub ignore_exit_codes: &'static [i32],
    pub max_events: u64,
    pub max_bytes: u64,
    pub flush_interval_ms: u64,
    pub wakeup_bytes: u64,
    pub poll_timeout_ms: u64,
}

const PRODUCTION_DEFAULT: Builtin = Builtin {
    name: "production-default",
    description: "network, storage and process evidence with conservative thresholds; no exec",
    network: true,
    retransmit_window_ms: 10_000,
    storage: true,
    slow_io_warning_ms: 100,
    slow_io_critical_ms: 500,
    process: true,
    exec: false,
    ignore_exit_codes: &[],
    max_events: 500,
    max_bytes: 512 * 1024,
    flush_interval_ms: 1000,
    wakeup_bytes: 128 * 1024,
    poll_timeout_ms: 100,
};

/// Every builtin. `production-default` is what a controller serves without
/// `--profile` and what a standalone agent runs without `--config`.
pub const BUILTINS: &[Builtin] = &[
    PRODUCTION_DEFAULT,
    Builtin {
        name: "network-only",
        description: "TCP evidence only: for hosts where storage and process facts are collected elsewhere",
        storage: false,
        process: false,
        ..PRODUCTION_DEFAULT
    },
    Builtin {
        name: "investigation",
        description: "everything on, exec included, lower slow-I/O thresholds and a 1 s retransmit window; for a bounded time on a host under study",
        retransmit_window_ms: 1000,
        slow_io_warning_ms: 20,
        slow_io_critical_ms: 200,
        exec: true,
        ..PRODUCTION_DEFAULT
    },
];

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}
