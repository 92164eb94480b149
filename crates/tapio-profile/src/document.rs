//! The Evidence Profile document, as operators write it.
//!
//! Every struct rejects unknown fields; every override is optional and
//! falls back to the base.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EvidenceProfile {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// A builtin profile name (`production-default`, `network-only`,
    /// `investigation`).
    pub base: String,
    #[serde(default)]
    pub overrides: Overrides,
}

impl EvidenceProfile {
    /// A document with only a base.
    pub fn from_base(base: &str) -> Self {
        EvidenceProfile {
            api_version: crate::API_VERSION.into(),
            kind: crate::KIND.into(),
            metadata: None,
            base: base.into(),
            overrides: Overrides::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessOverrides>,
    /// The node observer was removed: a profile that still has this
    /// section is rejected by `compile` with a hint, not a bare "unknown
    /// field".
    #[serde(default, skip_serializing)]
    pub node: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ringbuf: Option<RingbufOverrides>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverrides {
    pub enabled: Option<bool>,
    /// At most one `retransmits` event per connection per window.
    pub retransmit_window_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageOverrides {
    pub enabled: Option<bool>,
    pub slow_io: Option<SlowIoOverrides>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowIoOverrides {
    /// `slow_io` at or above this latency, severity warning. 0 reports every
    /// request.
    pub warning_ms: Option<u64>,
    /// At or above this latency the severity is critical.
    pub critical_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessOverrides {
    pub enabled: Option<bool>,
    /// Emit `kernel.process.exec`.
    pub exec: Option<bool>,
    /// Exit statuses that are not abnormal (1..=255, at most 16 distinct).
    pub ignore_exit_codes: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingOverrides {
    pub max_events: Option<u64>,
    pub max_bytes: Option<u64>,
    pub flush_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingbufOverrides {
    pub wakeup_bytes: Option<u64>,
    pub poll_timeout_ms: Option<u64>,
}
