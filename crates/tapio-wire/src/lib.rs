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

mod catalogue;
mod config;
mod decode;
mod error;
pub mod limits;
mod messages;
mod reasoning;

pub use catalogue::{EventKind, Observer};
pub use config::{
    BatchingConfig, CompiledConfig, NetworkConfig, ProcessConfig, RingbufConfig, StorageConfig,
    config_hash_of,
};
pub use decode::FromWire;
pub use error::{ErrorBody, ErrorCode, ErrorDetail, WireError};
pub use limits::{
    MAX_EVENTS_PER_BATCH, MAX_IGNORED_EXIT_CODES, RING_BYTES_NETWORK, RING_BYTES_PROCESS,
    RING_BYTES_STORAGE, WAKEUP_BYTES_MAX,
};
pub use messages::{
    AgentStatus, ConfigResponse, DegradedReason, EventBatch, EventBatchResponse, HeartbeatRequest,
    HeartbeatResponse, HelloRequest, HelloResponse, InstanceStatus, ObserverState, ObserverStatus,
    Severity, StatusConfig, StatusCounters, StatusResponse, WireEvent, is_config_hash,
    looks_like_rfc3339_utc, split_event_id,
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

#[cfg(test)]
mod property_tests {
    //! Arbitrary JSON against every request decoder: no panic, and every
    //! error that concerns a field names its path.
    use super::*;
    use serde_json::{Map, Value, json};

    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }

        /// A key of a request (a hello's, or another), or of an event.
        fn key(&mut self, keys: &[&'static str]) -> &'static str {
            match self.next() % 4 {
                0 => self.pick(&messages::WIRE_EVENT_FIELDS),
                1 => self.pick(&messages::HELLO_FIELDS),
                _ => self.pick(keys),
            }
        }

        fn value(&mut self, depth: u32) -> Value {
            const KEYS: &[&str] = &[
                "wire_version",
                "capabilities",
                "sequence",
                "events",
                "config_version",
                "config_hash",
                "uptime_secs",
                "counters",
                "observers",
                "state",
                "degraded_reasons",
                "dst_port",
                "root_cause",
                "x",
            ];
            let kind = if depth >= 4 {
                self.next() % 5
            } else {
                self.next() % 7
            };
            match kind {
                0 => Value::Null,
                1 => Value::Bool(self.next() % 2 == 0),
                2 => json!(self.next() as i64 % 100_000 - 50),
                3 => Value::String(
                    self.pick(&[
                        "tapio-wire/v1",
                        "",
                        "kernel.network.x",
                        "2026-11-22T06:00:00Z",
                        "network",
                        "up",
                        "sha256:zz",
                        "0",
                        "\u{0}",
                        "ü",
                    ])
                    .into(),
                ),
                4 => json!(f64::from(self.next() as u32) / 7.0),
                5 => Value::Array(
                    (0..self.next() % 4)
                        .map(|_| self.value(depth + 1))
                        .collect(),
                ),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..self.next() % 8 {
                        let k = self.key(KEYS).to_string();
                        let v = self.value(depth + 1);
                        m.insert(k, v);
                    }
                    Value::Object(m)
                }
            }
        }
    }

    fn check<T: FromWire>(v: &Value) {
        match decode_value::<T>(v) {
            Ok(_) => {}
            Err(WireError::MalformedJson(_)) => panic!("a parsed value is never malformed JSON"),
            Err(e) => {
                let p = e.path().unwrap_or("");
                assert!(!p.is_empty(), "error without a path: {e} for {v}");
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_errors_have_paths() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut v = g.value(0);
            // most documents get a valid version, so the deeper checks run
            if let Some(m) = v.as_object_mut() {
                if g.next() % 4 != 0 {
                    m.insert("wire_version".into(), json!(WIRE_VERSION));
                }
            }
            check::<HelloRequest>(&v);
            check::<HeartbeatRequest>(&v);
            check::<EventBatch>(&v);
            // and through the byte path, truncated at a random point
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            let cut = (g.next() as usize) % (bytes.len() + 1);
            let _ = decode_request::<EventBatch>(&bytes[..cut]);
        }
    }
}
