//! Test hooks: `TAPIO_FAULT_INJECT=<hook>[,<hook>...]` makes the agent
//! misbehave on purpose, so tests can prove what happens then. Compiled
//! into debug builds only (the ones the tests run; the programs' side,
//! `TAPIO_TEST_HOOKS`, likewise: build.rs): a release binary
//! ignores the variable, and carries no way to be told to fail.
//!
//! Hooks: `load:<observer>` (that observer's load fails),
//! `storage:double_issue` (the storage program records every issue twice),
//! `storage:inflight_entries:<n>` (the in-flight map holds n requests),
//! `config:slow_write:<ms>` (every config write pauses halfway),
//! `network:ring_bytes:<n>` (the network ring buffer holds n bytes),
//! `check:hide_tracepoint:<name>` (`check` reports the tracepoint missing).

/// The hooks set in the environment.
#[cfg(debug_assertions)]
fn hooks() -> Vec<String> {
    std::env::var("TAPIO_FAULT_INJECT")
        .unwrap_or_default()
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(not(debug_assertions))]
fn hooks() -> Vec<String> {
    Vec::new()
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
