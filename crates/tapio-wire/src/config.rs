//! `CompiledConfig`: what the controller serves and the agent applies.
//!
//! It is the compiled form of an Evidence Profile (see `tapio-profile`):
//! every value is primitive and in the unit the agent and the kernel use
//! (nanoseconds, bytes, milli-ratios), so the agent never interprets a
//! profile. Its canonical bytes are `serde_json::to_vec` of this struct, in
//! field declaration order; `config_hash_of` hashes those bytes upstream (the
//! hash itself is computed by the controller, which owns sha2).

use serde::{Deserialize, Serialize};

use crate::limits::{self, MAX_IGNORED_EXIT_CODES};

/// Nanoseconds per millisecond: the profile speaks ms, the carrier ns.
const MS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledConfig {
    /// Name of the profile this was compiled from (informational).
    pub profile: String,
    pub network: NetworkConfig,
    pub storage: StorageConfig,
    pub process: ProcessConfig,
    pub batching: BatchingConfig,
    pub ringbuf: RingbufConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub enabled: bool,
    /// At most one `retransmits` event per connection per window.
    pub retransmit_window_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    pub enabled: bool,
    /// `slow_io` at or above this latency, severity `warning`.
    pub slow_io_warning_ns: u64,
    /// At or above this latency the severity is `critical`.
    pub slow_io_critical_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub enabled: bool,
    /// Emit `kernel.process.exec`.
    pub exec_enabled: bool,
    /// Exit codes that are not abnormal; sorted, unique, at most
    /// `MAX_IGNORED_EXIT_CODES`.
    pub ignore_exit_codes: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchingConfig {
    /// Most events in one batch to a sink or the controller.
    pub max_events: u32,
    /// Most bytes in one controller request body.
    pub max_bytes: u32,
    /// A partial batch is flushed after this long.
    pub flush_interval_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingbufConfig {
    /// The kernel side forces a reader wakeup once this many bytes are
    /// pending; below it, records are submitted without a wakeup.
    pub wakeup_bytes: u32,
    /// The reader's poll timeout: the longest a record waits below the
    /// wakeup threshold.
    pub poll_timeout_ms: u32,
}

impl CompiledConfig {
    /// The configuration a standalone agent runs with when it has neither a
    /// controller nor `--config`. It must equal the compilation of the
    /// `production-default` profile; `tapio-profile` tests hold the two
    /// together, so the agent needs no profile code.
    pub fn standalone_default() -> Self {
        CompiledConfig {
            profile: "production-default".into(),
            network: NetworkConfig {
                enabled: true,
                retransmit_window_ns: 10_000_000_000,
            },
            storage: StorageConfig {
                enabled: true,
                slow_io_warning_ns: 100_000_000,
                slow_io_critical_ns: 500_000_000,
            },
            process: ProcessConfig {
                enabled: true,
                exec_enabled: false,
                ignore_exit_codes: vec![],
            },
            batching: BatchingConfig {
                max_events: 500,
                max_bytes: 512 * 1024,
                flush_interval_ms: 1000,
            },
            ringbuf: RingbufConfig {
                wakeup_bytes: 128 * 1024,
                poll_timeout_ms: 100,
            },
        }
    }

    /// Canonical bytes: the input of `config_hash`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of primitives cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the invariants a receiver relies on; the path of the first
    /// offending field is in the error.
    pub fn validate(&self) -> Result<(), crate::WireError> {
        use crate::WireError::InvalidField;
        let bad = |path: &str, reason: &str| InvalidField {
            path: format!("config.{path}"),
            reason: reason.into(),
        };
        if self.storage.slow_io_critical_ns < self.storage.slow_io_warning_ns {
            return Err(bad(
                "storage.slow_io_critical_ns",
                "must be >= slow_io_warning_ns",
            ));
        }
        if self.process.ignore_exit_codes.len() > MAX_IGNORED_EXIT_CODES {
            return Err(bad("process.ignore_exit_codes", "at most 16 entries"));
        }
        if let Some(code) = self
            .process
            .ignore_exit_codes
            .iter()
            .find(|c| !u64::try_from(**c).is_ok_and(|c| limits::EXIT_CODE.contains(c)))
        {
            return Err(bad(
                "process.ignore_exit_codes",
                &format!("{code} is not an exit status 1..=255"),
            ));
        }
        // The profile's ranges, in the carrier's units.
        let ms = |r: limits::Range| limits::Range {
            min: r.min * MS,
            max: r.max * MS,
        };
        let checks: [(&str, u64, limits::Range); 8] = [
            (
                "network.retransmit_window_ns",
                self.network.retransmit_window_ns,
                ms(limits::RETRANSMIT_WINDOW_MS),
            ),
            (
                "storage.slow_io_warning_ns",
                self.storage.slow_io_warning_ns,
                ms(limits::SLOW_IO_MS),
            ),
            (
                "storage.slow_io_critical_ns",
                self.storage.slow_io_critical_ns,
                ms(limits::SLOW_IO_MS),
            ),
            (
                "batching.max_events",
                u64::from(self.batching.max_events),
                limits::MAX_EVENTS,
            ),
            (
                "batching.max_bytes",
                u64::from(self.batching.max_bytes),
                limits::MAX_BYTES,
            ),
            (
                "batching.flush_interval_ms",
                u64::from(self.batching.flush_interval_ms),
                limits::FLUSH_INTERVAL_MS,
            ),
            (
                "ringbuf.wakeup_bytes",
                u64::from(self.ringbuf.wakeup_bytes),
                limits::WAKEUP_BYTES,
            ),
            (
                "ringbuf.poll_timeout_ms",
                u64::from(self.ringbuf.poll_timeout_ms),
                limits::POLL_TIMEOUT_MS,
            ),
        ];
        for (path, v, r) in checks {
            if !r.contains(v) {
                return Err(bad(path, &format!("must be {}..={}", r.min, r.max)));
            }
        }
        Ok(())
    }
}

/// `sha256:<hex>` from a caller-supplied SHA-256 of the canonical bytes.
/// (Hashing lives with the controller so the agent does not link sha2.)
pub fn config_hash_of(digest: &[u8]) -> String {
    let mut s = String::with_capacity(7 + digest.len() * 2);
    s.push_str("sha256:");
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_default_is_valid() {
        CompiledConfig::standalone_default().validate().unwrap();
    }

    #[test]
    fn canonical_bytes_are_stable_field_order() {
        let s = String::from_utf8(CompiledConfig::standalone_default().canonical_bytes()).unwrap();
        assert!(s.starts_with("{\"profile\":\"production-default\",\"network\":{\"enabled\":true"));
    }

    #[test]
    fn hash_format() {
        assert_eq!(config_hash_of(&[0x00, 0xab, 0xff]), "sha256:00abff");
    }

    #[test]
    fn invalid_thresholds_name_the_field() {
        let mut c = CompiledConfig::standalone_default();
        c.storage.slow_io_critical_ns = 1;
        let e = c.validate().unwrap_err();
        assert_eq!(e.path(), Some("config.storage.slow_io_critical_ns"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = serde_json::to_value(CompiledConfig::standalone_default()).unwrap();
        v["network"]["future_knob"] = serde_json::json!(7);
        v["brand_new_section"] = serde_json::json!({"x": 1});
        let c: CompiledConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c, CompiledConfig::standalone_default());
    }
}
