//! `CompiledConfig` -> `struct tapio_config`, the kernel carrier.
//!
//! The agent writes the whole struct into every loaded object's
//! `tapio_config` map (`slots`: the slot not in force, then flipped). A BPF
//! program copies the slot in force once per invocation and keeps the copy
//! only when it is whole, so it sees the old or the new config, never a mix;
//! every record it emits carries the generation it read, which is how user
//! space tells which config a fact was produced under.

use crate::abi::{ABI_VERSION, KernelConfig, MAX_IGNORED_EXIT_CODES};
use tapio_wire::CompiledConfig;

/// The kernel carrier of `cfg` under `generation`.
pub fn to_kernel(cfg: &CompiledConfig, generation: u32) -> KernelConfig {
    let mut k = KernelConfig {
        abi_version: ABI_VERSION,
        generation,
        network_enabled: u8::from(cfg.network.enabled),
        storage_enabled: u8::from(cfg.storage.enabled),
        process_enabled: u8::from(cfg.process.enabled),
        exec_enabled: u8::from(cfg.process.enabled && cfg.process.exec_enabled),
        test_flags: test_flags(),
        retransmit_window_ns: cfg.network.retransmit_window_ns,
        // The lowest latency the kernel must report is the warning
        // threshold; the critical one only flags the record.
        slow_io_threshold_ns: cfg.storage.slow_io_warning_ns,
        slow_io_critical_ns: cfg.storage.slow_io_critical_ns,
        ringbuf_wakeup_bytes: cfg.ringbuf.wakeup_bytes,
        ..Default::default()
    };
    let n = cfg
        .process
        .ignore_exit_codes
        .len()
        .min(MAX_IGNORED_EXIT_CODES);
    k.ignore_exit_codes[..n].copy_from_slice(&cfg.process.ignore_exit_codes[..n]);
    k.ignore_exit_count = n as u32;
    k
}

/// Test hooks (crate::fault): `storage:double_issue` sets
/// `TAPIO_TEST_DOUBLE_ISSUE`, which makes the storage program record every
/// issue twice, so a real completion meets an ambiguous key;
/// `network:slot_collide` sets `TAPIO_TEST_SLOT_COLLIDE`, which puts every
/// socket in one of two owner slots, so most fall back to the hash;
/// `network:reset_unseen` sets `TAPIO_TEST_RESET_UNSEEN`, which makes the
/// reset program ignore every reset of a connecting socket, as when its run
/// is skipped (a recursion miss). 0 otherwise.
fn test_flags() -> u8 {
    let mut f = 0;
    if crate::fault::injected("storage:double_issue") {
        f |= crate::abi::TEST_DOUBLE_ISSUE;
    }
    if crate::fault::injected("network:slot_collide") {
        f |= crate::abi::TEST_SLOT_COLLIDE;
    }
    if crate::fault::injected("network:reset_unseen") {
        f |= crate::abi::TEST_RESET_UNSEEN;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_every_knob() {
        let mut c = CompiledConfig::standalone_default();
        c.process.exec_enabled = true;
        c.process.ignore_exit_codes = vec![1, 143];
        c.storage.slow_io_warning_ns = 0;
        let k = to_kernel(&c, 9);
        assert_eq!(k.abi_version, ABI_VERSION);
        assert_eq!(k.generation, 9);
        assert_eq!(
            (k.network_enabled, k.storage_enabled, k.process_enabled),
            (1, 1, 1)
        );
        assert_eq!(k.exec_enabled, 1);
        assert_eq!(k.retransmit_window_ns, 10_000_000_000);
        assert_eq!(k.slow_io_threshold_ns, 0);
        assert_eq!(k.slow_io_critical_ns, 500_000_000);
        assert_eq!(k.ringbuf_wakeup_bytes, 131072);
        assert_eq!(k.ignore_exit_count, 2);
        assert_eq!(&k.ignore_exit_codes[..3], &[1, 143, 0]);
    }

    #[test]
    fn exec_needs_the_process_observer() {
        let mut c = CompiledConfig::standalone_default();
        c.process.enabled = false;
        c.process.exec_enabled = true;
        assert_eq!(to_kernel(&c, 1).exec_enabled, 0);
    }
}
