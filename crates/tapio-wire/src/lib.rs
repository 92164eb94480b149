//! `tapio-wire/v1`: the protocol between `tapio-agent` and
//! `tapio-controller`.
//!
//! The agent initiates every exchange; the controller is the only server.
//! This crate holds the request/response types, their validation, the error
//! body and codes, and the facts-not-reasoning boundary. It has no HTTP, no
//! Kubernetes and no async code: both sides, and tests, share it.
//!
//! Compatibility rules (docs/wire-v1.md):
//! - unknown fields in wire payloads are ignored (no `deny_unknown_fields`);
//! - every enum has a receiver-side catch-all variant (`Unknown`);
//! - fields added within v1 carry serde defaults, so older payloads still
//!   decode (`HeartbeatRequest::config_hash` is the worked example).

mod config;
mod decode;
mod error;
mod messages;
mod reasoning;

pub use config::{
    BatchingConfig, CompiledConfig, MAX_IGNORED_EXIT_CODES, NetworkConfig, NodeConfig,
    ProcessConfig, RingbufConfig, StorageConfig, config_hash_of,
};
pub use decode::FromWire;
pub use error::{ErrorBody, ErrorCode, ErrorDetail, WireError};
pub use messages::{
    AgentStatus, ConfigResponse, DegradedReason, EventBatch, EventBatchResponse, HeartbeatRequest,
    HeartbeatResponse, HelloRequest, HelloResponse, InstanceStatus, MAX_EVENTS_PER_BATCH, Observer,
    ObserverState, ObserverStatus, Severity, StatusConfig, StatusCounters, StatusResponse,
    WireEvent, is_config_hash, looks_like_rfc3339_utc,
};
pub use reasoning::{REASONING_KEYS, find_reasoning_key, is_reasoning_key};

/// The one protocol version this build speaks. It moves together with the
/// `/v1/` route prefix.
pub const WIRE_VERSION: &str = "tapio-wire/v1";

/// The `config_version` an agent reports before it has applied any
/// controller config.
pub const UNCONFIGURED_VERSION: &str = "0";

/// Checks the `wire_version` of a raw payload, before anything else is
/// decoded: a missing version is `MISSING_FIELD`, any other version is
/// `UNSUPPORTED_VERSION`, whatever the route.
pub fn check_version(value: &serde_json::Value) -> Result<(), WireError> {
    let obj = value.as_object().ok_or_else(|| WireError::InvalidField {
        path: "$".into(),
        reason: "the body must be a JSON object".into(),
    })?;
    match obj.get("wire_version") {
        None | Some(serde_json::Value::Null) => Err(WireError::MissingField("wire_version".into())),
        Some(serde_json::Value::String(v)) if v == WIRE_VERSION => Ok(()),
        Some(serde_json::Value::String(v)) => Err(WireError::UnsupportedVersion(v.clone())),
        Some(_) => Err(WireError::InvalidField {
            path: "wire_version".into(),
            reason: "must be a string".into(),
        }),
    }
}

/// Decodes a request body the way the controller does: JSON (depth-limited
/// by serde_json), then the version, then the reasoning boundary, then the
/// typed fields.
pub fn decode_request<T: FromWire>(body: &[u8]) -> Result<T, WireError> {
    decode_value(&parse_body(body)?)
}

/// The JSON step of [`decode_request`], for callers that keep the raw value
/// (the controller exports events with their unknown fields intact).
pub fn parse_body(body: &[u8]) -> Result<serde_json::Value, WireError> {
    serde_json::from_slice(body).map_err(|e| WireError::MalformedJson(json_error_summary(&e)))
}

/// The checks of [`decode_request`] after JSON parsing.
pub fn decode_value<T: FromWire>(value: &serde_json::Value) -> Result<T, WireError> {
    check_version(value)?;
    if let Some(path) = find_reasoning_key(value) {
        return Err(WireError::ReasoningField(path));
    }
    T::from_wire(value)
}

/// A short description of a JSON syntax error, without echoing input.
fn json_error_summary(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "unreadable body",
        Category::Syntax => "invalid JSON syntax",
        Category::Data => "invalid JSON data",
        Category::Eof => "truncated JSON",
    };
    if e.to_string().contains("recursion limit") {
        return format!(
            "JSON nested too deeply at line {} column {}",
            e.line(),
            e.column()
        );
    }
    format!("{what} at line {} column {}", e.line(), e.column())
}
