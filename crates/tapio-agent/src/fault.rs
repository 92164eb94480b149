//! Test hooks: `TAPIO_FAULT_INJECT=<hook>[,<hook>...]` makes the agent
//! misbehave on purpose, so tests can prove what happens then. Compiled in
//! only with the `test-hooks` feature (the programs' side,
//! `TAPIO_TEST_HOOKS`, likewise: build.rs), which only the builds the
//! tests drive enable: any other binary ignores the variable, says so in
//! its log, and carries no way to be told to fail.
//!
//! Hooks: `load:<observer>` (that observer's load fails),
//! `storage:double_issue` (the storage program records every issue twice),
//! `storage:inflight_entries:<n>` (the in-flight map holds n requests),
//! `config:slow_write:<ms>` (every config write pauses halfway),
//! `<observer>:ring_bytes:<n>` (each of the observer's rings holds n bytes),
//! `<observer>:rings:<n>` (the observer has n rings, shared by the CPUs),
//! `network:slot_collide` (every socket hashes to one of two owner slots),
//! `network:reset_unseen` (the reset program ignores resets of connecting
//! sockets, as a recursion miss would make it),
//! `network:slots_fail` (the programs with owner slots fail to load),
//! `check:hide_tracepoint:<name>` (`check` reports the tracepoint missing).

const VARIABLE: &str = "TAPIO_FAULT_INJECT";

/// Whether this binary has the hooks (`tapio-agent version` says so).
pub const COMPILED: bool = cfg!(feature = "test-hooks");

/// The hooks set in the environment.
#[cfg(feature = "test-hooks")]
fn hooks() -> Vec<String> {
    std::env::var(VARIABLE)
        .unwrap_or_default()
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(not(feature = "test-hooks"))]
fn hooks() -> Vec<String> {
    Vec::new()
}

/// Logs, once at start, hooks that are set: in force, or ignored by a
/// binary without them.
pub fn log_at_start() {
    let Some(set) = std::env::var_os(VARIABLE).filter(|v| !v.is_empty()) else {
        return;
    };
    if COMPILED {
        log::warn!("test hooks in force: {VARIABLE}={}", set.to_string_lossy());
    } else {
        log::warn!("{VARIABLE} is ignored: this build has no test hooks");
    }
}

/// Whether `hook` (exactly) is set.
pub fn injected(hook: &str) -> bool {
    hooks().iter().any(|h| h == hook)
}

/// The values of every hook that starts with `prefix`.
pub fn values(prefix: &str) -> Vec<String> {
    hooks()
        .iter()
        .filter_map(|h| h.strip_prefix(prefix).map(String::from))
        .collect()
}
