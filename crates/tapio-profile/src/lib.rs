//! Evidence Profiles: the operator-facing document that says what Tapio
//! observes and where its thresholds lie.
//!
//! The caller deserializes the document (the controller uses YAML; this
//! crate has no YAML and no file I/O), then [`compile`] validates it against
//! its builtin base and produces a [`tapio_wire::CompiledConfig`]. Unknown
//! fields are rejected at deserialization: a typo is an error, never a
//! silent default. Every validation error names the exact field path.

mod builtin;
mod document;

pub use builtin::{BUILTINS, builtin, builtin_names};
pub use document::{
    BatchingOverrides, EvidenceProfile, Metadata, NetworkOverrides, Overrides, ProcessOverrides,
    RingbufOverrides, SlowIoOverrides, StorageOverrides,
};

use tapio_wire::limits::{self, MAX_IGNORED_EXIT_CODES, Range};
use tapio_wire::{
    BatchingConfig, CompiledConfig, NetworkConfig, ProcessConfig, RingbufConfig, StorageConfig,
};

/// The `apiVersion` this build understands.
pub const API_VERSION: &str = "tapio.dev/v1";
/// The only `kind`.
pub const KIND: &str = "EvidenceProfile";

/// One problem in a profile, at an exact field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ProfileError {
    pub path: String,
    pub message: String,
}

/// All problems found in a profile, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl std::fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileErrors {}

struct Checker {
    errors: Vec<ProfileError>,
}

impl Checker {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ProfileError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// `v` if it is within `r` (`tapio_wire::limits`); otherwise an error.
    fn range(&mut self, path: &str, v: u64, r: Range) -> u64 {
        if !r.contains(v) {
            self.fail(
                path,
                format!("must be between {} and {} (got {v})", r.min, r.max),
            );
        }
        v
    }
}

/// Validates a profile; `Ok` means [`compile`] will succeed.
pub fn validate(profile: &EvidenceProfile) -> Result<(), ProfileErrors> {
    compile(profile).map(|_| ())
}

/// Validates and compiles a profile into the config the agents apply.
pub fn compile(profile: &EvidenceProfile) -> Result<CompiledConfig, ProfileErrors> {
    let mut c = Checker { errors: Vec::new() };
    if profile.api_version != API_VERSION {
        c.fail(
            "apiVersion",
            format!("must be {API_VERSION:?} (got {:?})", profile.api_version),
        );
    }
    if profile.kind != KIND {
        c.fail("kind", format!("must be {KIND:?} (got {:?})", profile.kind));
    }
    let Some(base) = builtin(&profile.base) else {
        c.fail(
            "base",
            format!(
                "unknown builtin {:?}; one of: {}",
                profile.base,
                builtin_names().join(", ")
            ),
        );
        return Err(ProfileErrors(c.errors));
    };
    let name = profile
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| profile.base.clone());
    if name.len() > 128 {
        c.fail("metadata.name", "at most 128 characters");
    }
    let o = &profile.overrides;

    // network
    let net = o.network.clone().unwrap_or_default();
    let window_ms = c.range(
        "overrides.network.retransmit_window_ms",
        net.retransmit_window_ms
            .unwrap_or(base.retransmit_window_ms),
        limits::RETRANSMIT_WINDOW_MS,
    );

    // storage
    let st = o.storage.clone().unwrap_or_default();
    let slow = st.slow_io.clone().unwrap_or_default();
    let errors_before = c.errors.len();
    let warning_ms = c.range(
        "overrides.storage.slow_io.warning_ms",
        slow.warning_ms.unwrap_or(base.slow_io_warning_ms),
        limits::SLOW_IO_MS,
    );
    let critical_ms = c.range(
        "overrides.storage.slow_io.critical_ms",
        slow.critical_ms.unwrap_or(base.slow_io_critical_ms),
        limits::SLOW_IO_MS,
    );
    // Compare only values that are themselves in range: one mistake, one error.
    if c.errors.len() == errors_before && critical_ms < warning_ms {
        c.fail(
            "overrides.storage.slow_io.critical_ms",
            format!("must be >= warning_ms ({warning_ms})"),
        );
    }

    // process
    let pr = o.process.clone().unwrap_or_default();
    let mut codes: Vec<i32> = Vec::new();
    if let Some(list) = &pr.ignore_exit_codes {
        if list.len() > MAX_IGNORED_EXIT_CODES {
            c.fail(
                "overrides.process.ignore_exit_codes",
                format!(
                    "at most {MAX_IGNORED_EXIT_CODES} entries (got {})",
                    list.len()
                ),
            );
        }
        for (i, code) in list.iter().enumerate() {
            let r = limits::EXIT_CODE;
            if !u64::try_from(*code).is_ok_and(|v| r.contains(v)) {
                c.fail(
                    &format!("overrides.process.ignore_exit_codes[{i}]"),
                    format!(
                        "must be an exit status between {} and {} (got {code})",
                        r.min, r.max
                    ),
                );
            } else {
                codes.push(*code as i32);
            }
        }
    } else {
        codes = base.ignore_exit_codes.to_vec();
    }
    codes.sort_unstable();
    codes.dedup();

    if o.node.is_some() {
        c.fail(
            "overrides.node",
            "the node observer was removed (per-CPU counters are metrics, not evidence: node_exporter's perf collector exports them); delete this section",
        );
    }

    // batching
    let b = o.batching.clone().unwrap_or_default();
    let max_events = c.range(
        "overrides.batching.max_events",
        b.max_events.unwrap_or(base.max_events),
        limits::MAX_EVENTS,
    );
    let max_bytes = c.range(
        "overrides.batching.max_bytes",
        b.max_bytes.unwrap_or(base.max_bytes),
        limits::MAX_BYTES,
    );
    let flush_ms = c.range(
        "overrides.batching.flush_interval_ms",
        b.flush_interval_ms.unwrap_or(base.flush_interval_ms),
        limits::FLUSH_INTERVAL_MS,
    );

    // ring buffer
    let r = o.ringbuf.clone().unwrap_or_default();
    let wakeup = c.range(
        "overrides.ringbuf.wakeup_bytes",
        r.wakeup_bytes.unwrap_or(base.wakeup_bytes),
        limits::WAKEUP_BYTES,
    );
    let poll_ms = c.range(
        "overrides.ringbuf.poll_timeout_ms",
        r.poll_timeout_ms.unwrap_or(base.poll_timeout_ms),
        limits::POLL_TIMEOUT_MS,
    );

    if !c.errors.is_empty() {
        return Err(ProfileErrors(c.errors));
    }
    const MS: u64 = 1_000_000;
    // Every value was range-checked above, so the narrowing casts are exact.
    Ok(CompiledConfig {
        profile: name,
        network: NetworkConfig {
            enabled: net.enabled.unwrap_or(base.network),
            retransmit_window_ns: window_ms * MS,
        },
        storage: StorageConfig {
            enabled: st.enabled.unwrap_or(base.storage),
            slow_io_warning_ns: warning_ms * MS,
            slow_io_critical_ns: critical_ms * MS,
        },
        process: ProcessConfig {
            enabled: pr.enabled.unwrap_or(base.process),
            exec_enabled: pr.exec.unwrap_or(base.exec),
            ignore_exit_codes: codes,
        },
        batching: BatchingConfig {
            max_events: max_events as u32,
            max_bytes: max_bytes as u32,
            flush_interval_ms: flush_ms as u32,
        },
        ringbuf: RingbufConfig {
            wakeup_bytes: wakeup as u32,
            poll_timeout_ms: poll_ms as u32,
        },
    })
}

/// Compiles a builtin profile by name, as if a document named only its base.
pub fn compile_builtin(name: &str) -> Option<CompiledConfig> {
    builtin(name)?;
    compile(&EvidenceProfile::from_base(name)).ok()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod schema_tests;
