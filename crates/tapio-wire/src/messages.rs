//! Request and response bodies of the five v1 operations.

use crate::decode::{Fields, FromWire};
use crate::{CompiledConfig, MAX_EVENTS_PER_BATCH, Observer, WireError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The fields every event of a batch must have (tests hold the decoder to
/// them).
#[cfg(test)]
pub(crate) const WIRE_EVENT_FIELDS: [&str; 7] = [
    "id",
    "type",
    "observer",
    "severity",
    "timestamp",
    "config_generation",
    "facts",
];

/// The text fields a hello must have, non-blank.
#[cfg(test)]
pub(crate) const HELLO_FIELDS: [&str; 6] = [
    "agent_id",
    "node_name",
    "instance_id",
    "agent_version",
    "kernel_release",
    "arch",
];

// ---------------------------------------------------------------- enums

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    #[serde(other)]
    Unknown,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Unknown => "unknown",
        }
    }
}

/// What an observer is doing on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObserverState {
    /// Loaded and attached.
    Up,
    /// Tried and failed (the agent logs the kernel's reason).
    Failed,
    /// Switched off by config.
    Disabled,
    /// The host cannot support it (for example no hardware counters).
    Unsupported,
    #[serde(other)]
    Unknown,
}

/// Why an agent is not fully doing its job. Facts, not verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradedReason {
    /// Controller mode, no controller config applied yet.
    Unconfigured,
    /// At least one enabled observer failed to load or attach.
    ObserverFailed,
    /// The last config fetch failed; the previous config stays in force.
    ConfigFetchFailing,
    /// Events were dropped on the way to the controller since the last
    /// heartbeat.
    ControllerSendFailing,
    /// Ring buffer, queue or sink losses since the last heartbeat.
    EvidenceLoss,
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------- hello

/// `POST /v1/agents/hello`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {
    pub wire_version: String,
    pub agent_id: String,
    pub node_name: String,
    /// Fresh and random for every start of the agent process.
    pub instance_id: String,
    pub agent_version: String,
    pub kernel_release: String,
    pub arch: String,
    /// What this agent can observe, e.g. `observer:network`, `btf`.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl FromWire for HelloRequest {
    fn from_wire(value: &Value) -> Result<Self, WireError> {
        let f = Fields::of(value, "")?;
        let capabilities: Vec<String> = f.opt("capabilities")?;
        if capabilities.len() > 64 {
            return Err(WireError::InvalidField {
                path: "capabilities".into(),
                reason: "at most 64 entries".into(),
            });
        }
        Ok(HelloRequest {
            wire_version: f.req_str("wire_version")?,
            agent_id: f.req_str("agent_id")?,
            node_name: f.req_str("node_name")?,
            instance_id: f.req_str("instance_id")?,
            agent_version: f.req_str("agent_version")?,
            kernel_release: f.req_str("kernel_release")?,
            arch: f.req_str("arch")?,
            capabilities,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResponse {
    pub wire_version: String,
    pub controller_id: String,
    pub config_version: String,
    pub config_hash: String,
    /// How often the controller expects heartbeats.
    pub heartbeat_interval_secs: u32,
    /// How often agents should poll `GET /v1/agents/config`.
    pub config_poll_interval_secs: u32,
}

// ---------------------------------------------------------------- config

/// `GET /v1/agents/config` (200). A 304 has no body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResponse {
    pub wire_version: String,
    /// Generation: base-10 u32, from "1", reset on controller restart.
    pub config_version: String,
    /// `sha256:<lowercase hex>` over `config.canonical_bytes()`.
    pub config_hash: String,
    pub config: CompiledConfig,
}

impl ConfigResponse {
    /// What an agent checks before applying a served config.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.wire_version != crate::WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(self.wire_version.clone()));
        }
        if self.config_version.parse::<u32>().is_err() {
            return Err(WireError::InvalidField {
                path: "config_version".into(),
                reason: "must be a base-10 u32".into(),
            });
        }
        if !is_config_hash(&self.config_hash) {
            return Err(WireError::InvalidField {
                path: "config_hash".into(),
                reason: "must be sha256:<64 lowercase hex>".into(),
            });
        }
        self.config.validate()
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_config_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

// ---------------------------------------------------------------- heartbeat

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverStatus {
    pub observer: Observer,
    pub state: ObserverState,
}

/// `POST /v1/agents/heartbeat`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub wire_version: String,
    pub agent_id: String,
    pub instance_id: String,
    pub node_name: String,
    /// Generation of the applied config; "0" before any is applied.
    pub config_version: String,
    /// Hash of the config the agent has applied to the kernel; empty when
    /// none. Added within v1: absent in older heartbeats.
    #[serde(default)]
    pub config_hash: String,
    pub uptime_secs: u64,
    /// Counter samples, keyed by metric name with labels, e.g.
    /// `tapio_queue_drops_total{observer="network"}`.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    #[serde(default)]
    pub observers: Vec<ObserverStatus>,
    #[serde(default)]
    pub degraded_reasons: Vec<DegradedReason>,
}

impl FromWire for HeartbeatRequest {
    fn from_wire(value: &Value) -> Result<Self, WireError> {
        let f = Fields::of(value, "")?;
        let config_version = f.req_str("config_version")?;
        if config_version.parse::<u32>().is_err() {
            return Err(WireError::InvalidField {
                path: "config_version".into(),
                reason: "must be a base-10 u32 string".into(),
            });
        }
        let config_hash: String = f.opt("config_hash")?;
        if !config_hash.is_empty() && !is_config_hash(&config_hash) {
            return Err(WireError::InvalidField {
                path: "config_hash".into(),
                reason: "must be empty or sha256:<64 lowercase hex>".into(),
            });
        }
        let counters: BTreeMap<String, u64> = f.opt("counters")?;
        if counters.len() > 1024 {
            return Err(WireError::InvalidField {
                path: "counters".into(),
                reason: "at most 1024 counters".into(),
            });
        }
        let observers: Vec<ObserverStatus> = f.opt("observers")?;
        if observers.len() > 16 {
            return Err(WireError::InvalidField {
                path: "observers".into(),
                reason: "at most 16 observers".into(),
            });
        }
        let degraded_reasons: Vec<DegradedReason> = f.opt("degraded_reasons")?;
        if degraded_reasons.len() > 16 {
            return Err(WireError::InvalidField {
                path: "degraded_reasons".into(),
                reason: "at most 16 reasons".into(),
            });
        }
        Ok(HeartbeatRequest {
            wire_version: f.req_str("wire_version")?,
            agent_id: f.req_str("agent_id")?,
            instance_id: f.req_str("instance_id")?,
            node_name: f.req_str("node_name")?,
            config_version,
            config_hash,
            uptime_secs: f.req("uptime_secs")?,
            counters,
            observers,
            degraded_reasons,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub wire_version: String,
    /// False when the controller has no hello from this agent instance (it
    /// restarted, or forgot): the agent should say hello again.
    pub known_agent: bool,
    /// The config the controller currently serves.
    pub config_hash: String,
}

// ---------------------------------------------------------------- events

/// One event, exactly as the agent writes it to its local sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Unique per agent instance; identical on every resend.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub observer: Observer,
    pub severity: Severity,
    /// RFC 3339 UTC with nanoseconds, from the kernel's timestamp.
    pub timestamp: String,
    pub config_generation: u32,
    pub facts: Map<String, Value>,
}

impl WireEvent {
    fn from_wire_at(value: &Value, prefix: &str) -> Result<Self, WireError> {
        let f = Fields::of(value, prefix)?;
        let kind = f.req_str("type")?;
        if !kind.starts_with("kernel.") || kind.len() <= "kernel.".len() {
            return Err(WireError::InvalidField {
                path: f.path("type"),
                reason: "must start with \"kernel.\"".into(),
            });
        }
        let timestamp = f.req_str("timestamp")?;
        if !looks_like_rfc3339_utc(&timestamp) {
            return Err(WireError::InvalidField {
                path: f.path("timestamp"),
                reason: "must be RFC 3339 UTC (…Z)".into(),
            });
        }
        let facts: Map<String, Value> = f.req("facts")?;
        if facts.len() > 64 {
            return Err(WireError::InvalidField {
                path: f.path("facts"),
                reason: "at most 64 facts".into(),
            });
        }
        Ok(WireEvent {
            id: f.req_str("id")?,
            kind,
            observer: f.req("observer")?,
            severity: f.req("severity")?,
            timestamp,
            config_generation: f.req("config_generation")?,
            facts,
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, checked by shape and ranges.
pub fn looks_like_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 30 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    if !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)) {
        return false;
    }
    if !(b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let (mo, d, h, mi, se) = (num(5..7), num(8..10), num(11..13), num(14..16), num(17..19));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return false;
    }
    match &b[19..b.len() - 1] {
        [] => true,
        [b'.', frac @ ..] => {
            !frac.is_empty() && frac.len() <= 9 && frac.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// An event id's parts: `<instance_id>-<sequence>` (the instance id may
/// itself contain dashes; the sequence is decimal). `None` for any other
/// shape. The agent writes ids this way; the controller refuses others and
/// de-duplicates its export on the parts.
pub fn split_event_id(id: &str) -> Option<(&str, u64)> {
    let (instance, seq) = id.rsplit_once('-')?;
    if instance.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((instance, seq.parse().ok()?))
}

/// `POST /v1/events`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub wire_version: String,
    pub agent_id: String,
    pub instance_id: String,
    pub node_name: String,
    /// Starts at 1 for each agent instance and increases by one per new
    /// batch; a resend repeats its sequence.
    pub sequence: u64,
    pub events: Vec<WireEvent>,
}

impl FromWire for EventBatch {
    fn from_wire(value: &Value) -> Result<Self, WireError> {
        let f = Fields::of(value, "")?;
        let sequence: u64 = f.req("sequence")?;
        if sequence == 0 {
            return Err(WireError::InvalidField {
                path: "sequence".into(),
                reason: "must be >= 1".into(),
            });
        }
        let raw_events = match f.raw("events") {
            None => return Err(WireError::MissingField("events".into())),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(WireError::InvalidField {
                    path: "events".into(),
                    reason: "must be an array".into(),
                });
            }
        };
        if raw_events.len() > MAX_EVENTS_PER_BATCH {
            return Err(WireError::InvalidField {
                path: "events".into(),
                reason: format!("at most {MAX_EVENTS_PER_BATCH} events per batch"),
            });
        }
        let mut events = Vec::with_capacity(raw_events.len());
        for (i, ev) in raw_events.iter().enumerate() {
            events.push(WireEvent::from_wire_at(ev, &format!("events[{i}]"))?);
        }
        Ok(EventBatch {
            wire_version: f.req_str("wire_version")?,
            agent_id: f.req_str("agent_id")?,
            instance_id: f.req_str("instance_id")?,
            node_name: f.req_str("node_name")?,
            sequence,
            events,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatchResponse {
    pub wire_version: String,
    pub sequence: u64,
    /// Events newly accepted from this batch.
    pub accepted: u64,
    /// True when this (instance, sequence) was accepted before: the batch is
    /// acknowledged and not stored again.
    pub duplicate: bool,
    pub known_agent: bool,
}

// ---------------------------------------------------------------- status

/// `GET /v1/status`: facts only, no verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub wire_version: String,
    pub controller_id: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub config: StatusConfig,
    pub counters: StatusCounters,
    /// Reported as configuration beside the ages; not applied as a verdict.
    pub stale_after_secs: u64,
    /// One page of agents, by agent id (`?limit=` and `?after=`).
    pub agents: Vec<AgentStatus>,
    /// Instances the controller knows, on every page. Added within v1.
    #[serde(default)]
    pub instances_total: u64,
    /// The `after=` of the next page; absent on the last one. Added within
    /// v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusConfig {
    pub profile: String,
    pub config_version: String,
    pub config_hash: String,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last failed reload's message; empty when none failed.
    #[serde(default)]
    pub last_reload_error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusCounters {
    pub events_accepted: u64,
    pub events_rejected: u64,
    pub events_duplicate: u64,
    pub events_exported: u64,
    pub export_failures: u64,
    pub batches_accepted: u64,
    pub batches_rejected: u64,
    pub batches_duplicate: u64,
    pub requests_total: u64,
    pub requests_rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent_id: String,
    pub node_name: String,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub agent_version: String,
    pub kernel_release: String,
    /// Absent when the instance sent events before any hello (for example
    /// after a controller restart).
    pub first_hello_age_secs: Option<u64>,
    pub last_hello_age_secs: Option<u64>,
    /// Absent before the first heartbeat.
    pub last_heartbeat_age_secs: Option<u64>,
    pub config_version: String,
    pub applied_config_hash: String,
    pub uptime_secs: u64,
    pub counters: BTreeMap<String, u64>,
    pub observers: Vec<ObserverStatus>,
    pub degraded_reasons: Vec<DegradedReason>,
    pub last_sequence: u64,
    pub batches: u64,
    pub sequence_gaps: u64,
    pub missing_batches: u64,
    pub sequence_regressions: u64,
    pub duplicate_batches: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{WIRE_VERSION, decode_request};
    use serde_json::json;

    fn hello() -> Value {
        json!({
            "wire_version": WIRE_VERSION, "agent_id": "a1", "node_name": "n1",
            "instance_id": "i1", "agent_version": "0.1.0", "kernel_release": "6.18",
            "arch": "x86_64", "capabilities": ["observer:network"]
        })
    }

    fn heartbeat() -> Value {
        json!({
            "wire_version": WIRE_VERSION, "agent_id": "a1", "instance_id": "i1", "node_name": "n1",
            "config_version": "0", "uptime_secs": 5,
            "counters": {"tapio_queue_drops_total{observer=\"network\"}": 0},
            "observers": [{"observer": "network", "state": "up"}],
            "degraded_reasons": ["unconfigured"]
        })
    }

    fn event() -> Value {
        json!({
            "id": "i1-1", "type": "kernel.network.connection_refused", "observer": "network",
            "severity": "warning", "timestamp": "2026-11-22T06:00:00.123456789Z",
            "config_generation": 1, "facts": {"dst_port": 80}
        })
    }

    fn batch() -> Value {
        json!({
            "wire_version": WIRE_VERSION, "agent_id": "a1", "instance_id": "i1",
            "node_name": "n1", "sequence": 1, "events": [event()]
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn every_request_type_round_trips() {
        let h: HelloRequest = decode_request(&bytes(&hello())).unwrap();
        assert_eq!(h.agent_id, "a1");
        assert_eq!(serde_json::to_value(&h).unwrap(), hello());
        let hb: HeartbeatRequest = decode_request(&bytes(&heartbeat())).unwrap();
        assert_eq!(hb.degraded_reasons, vec![DegradedReason::Unconfigured]);
        let b: EventBatch = decode_request(&bytes(&batch())).unwrap();
        assert_eq!(b.events[0].kind, "kernel.network.connection_refused");
        assert_eq!(serde_json::to_value(&b).unwrap(), batch());
    }

    #[test]
    fn heartbeat_without_config_hash_still_validates() {
        let v = heartbeat();
        assert!(v.get("config_hash").is_none());
        let hb: HeartbeatRequest = decode_request(&bytes(&v)).unwrap();
        assert_eq!(hb.config_hash, "");
        assert_eq!(hb.config_version, "0");
        // and through plain serde too (the agent side)
        let hb2: HeartbeatRequest = serde_json::from_value(v).unwrap();
        assert_eq!(hb2.config_hash, "");
    }

    #[test]
    fn heartbeat_rejects_bad_hash_and_version() {
        let mut v = heartbeat();
        v["config_hash"] = json!("md5:abc");
        let e = decode_request::<HeartbeatRequest>(&bytes(&v)).unwrap_err();
        assert_eq!(e.path(), Some("config_hash"));
        let mut v = heartbeat();
        v["config_version"] = json!("one");
        let e = decode_request::<HeartbeatRequest>(&bytes(&v)).unwrap_err();
        assert_eq!(e.path(), Some("config_version"));
    }

    #[test]
    fn unknown_fields_and_variants_are_tolerated() {
        let mut v = heartbeat();
        v["brand_new"] = json!({"x": 1});
        v["observers"] = json!([{"observer": "gpu", "state": "warming_up", "extra": 1}]);
        v["degraded_reasons"] = json!(["solar_flare"]);
        let hb: HeartbeatRequest = decode_request(&bytes(&v)).unwrap();
        assert_eq!(hb.observers[0].observer, Observer::Unknown);
        assert_eq!(hb.observers[0].state, ObserverState::Unknown);
        assert_eq!(hb.degraded_reasons, vec![DegradedReason::Unknown]);
        let mut b = batch();
        b["events"][0]["severity"] = json!("apocalyptic");
        b["events"][0]["observer"] = json!("gpu");
        b["events"][0]["new_field"] = json!(true);
        let b: EventBatch = decode_request(&bytes(&b)).unwrap();
        assert_eq!(b.events[0].severity, Severity::Unknown);
        assert_eq!(b.events[0].observer, Observer::Unknown);
    }

    #[test]
    fn version_is_checked_first_whatever_the_body() {
        let mut v = hello();
        v["wire_version"] = json!("tapio-wire/v2");
        v.as_object_mut().unwrap().remove("agent_id");
        let e = decode_request::<HelloRequest>(&bytes(&v)).unwrap_err();
        assert_eq!(e, WireError::UnsupportedVersion("tapio-wire/v2".into()));
        let mut v = batch();
        v.as_object_mut().unwrap().remove("wire_version");
        let e = decode_request::<EventBatch>(&bytes(&v)).unwrap_err();
        assert_eq!(e, WireError::MissingField("wire_version".into()));
        let mut v = batch();
        v["wire_version"] = json!(1);
        assert_eq!(
            decode_request::<EventBatch>(&bytes(&v)).unwrap_err().path(),
            Some("wire_version")
        );
    }

    #[test]
    fn missing_and_invalid_fields_carry_paths() {
        for field in HELLO_FIELDS {
            let mut v = hello();
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(
                decode_request::<HelloRequest>(&bytes(&v)).unwrap_err(),
                WireError::MissingField(field.into())
            );
            let mut v = hello();
            v[field] = json!("  ");
            assert_eq!(
                decode_request::<HelloRequest>(&bytes(&v)).unwrap_err(),
                WireError::MissingField(field.into())
            );
        }
        for field in WIRE_EVENT_FIELDS {
            let mut v = batch();
            v["events"][0].as_object_mut().unwrap().remove(field);
            let e = decode_request::<EventBatch>(&bytes(&v)).unwrap_err();
            assert_eq!(
                e,
                WireError::MissingField(format!("events[0].{field}")),
                "{field}"
            );
        }
        let mut v = batch();
        v["events"][0]["config_generation"] = json!("x");
        let e = decode_request::<EventBatch>(&bytes(&v)).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidField);
        assert_eq!(e.path(), Some("events[0].config_generation"));
        let mut v = batch();
        v["sequence"] = json!(0);
        assert_eq!(
            decode_request::<EventBatch>(&bytes(&v)).unwrap_err().path(),
            Some("sequence")
        );
        let mut v = batch();
        v["events"] = json!({});
        assert_eq!(
            decode_request::<EventBatch>(&bytes(&v)).unwrap_err().path(),
            Some("events")
        );
        let mut v = batch();
        v["events"][0] = json!(3);
        assert_eq!(
            decode_request::<EventBatch>(&bytes(&v)).unwrap_err().path(),
            Some("events[0]")
        );
    }

    #[test]
    fn event_type_prefix_and_timestamp_are_enforced() {
        let mut v = batch();
        v["events"][0]["type"] = json!("user.network.refused");
        let e = decode_request::<EventBatch>(&bytes(&v)).unwrap_err();
        assert_eq!(e.path(), Some("events[0].type"));
        let mut v = batch();
        v["events"][0]["timestamp"] = json!("yesterday");
        let e = decode_request::<EventBatch>(&bytes(&v)).unwrap_err();
        assert_eq!(e.path(), Some("events[0].timestamp"));
        assert!(looks_like_rfc3339_utc("2026-01-01T00:00:00Z"));
        assert!(looks_like_rfc3339_utc("2026-01-01T23:59:59.000000001Z"));
        assert!(!looks_like_rfc3339_utc("2026-13-01T00:00:00Z"));
        assert!(!looks_like_rfc3339_utc("2026-01-01T00:00:00+01:00"));
        assert!(!looks_like_rfc3339_utc("2026-01-01T00:00:00.Z"));
    }

    #[test]
    fn reasoning_fields_are_rejected_at_any_depth() {
        let mut v = batch();
        v["events"][0]["facts"]["nested"] = json!([{"ok": 1}, {"root_cause": "disk"}]);
        let e = decode_request::<EventBatch>(&bytes(&v)).unwrap_err();
        assert_eq!(
            e,
            WireError::ReasoningField("events[0].facts.nested[1].root_cause".into())
        );
        assert_eq!(e.code().http_status(), 422);
        let mut v = heartbeat();
        v["explanation"] = json!("x");
        assert_eq!(
            decode_request::<HeartbeatRequest>(&bytes(&v)).unwrap_err(),
            WireError::ReasoningField("explanation".into())
        );
    }

    #[test]
    fn malformed_json_is_400() {
        for body in [&b"{"[..], b"not json", b"{\"a\": \xff}", b""] {
            let e = decode_request::<HelloRequest>(body).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::MalformedJson, "{body:?}");
        }
        let deep = "[".repeat(100_000);
        let e = decode_request::<HelloRequest>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::MalformedJson);
        assert!(e.to_string().contains("nested too deeply"), "{e}");
        let e = decode_request::<HelloRequest>(b"[1]").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidField);
    }

    #[test]
    fn config_response_validation() {
        let cfg = CompiledConfig::standalone_default();
        let mut r = ConfigResponse {
            wire_version: WIRE_VERSION.into(),
            config_version: "1".into(),
            config_hash: format!("sha256:{}", "a".repeat(64)),
            config: cfg,
        };
        r.validate().unwrap();
        r.config_hash = "sha256:ABC".into();
        assert_eq!(r.validate().unwrap_err().path(), Some("config_hash"));
        r.config_hash = format!("sha256:{}", "0".repeat(64));
        r.config_version = "-1".into();
        assert_eq!(r.validate().unwrap_err().path(), Some("config_version"));
    }

    #[test]
    fn event_ids_split_into_instance_and_sequence() {
        assert_eq!(split_event_id("inst-7f-42"), Some(("inst-7f", 42)));
        assert_eq!(split_event_id("i1-1"), Some(("i1", 1)));
        for bad in [
            "nodash",
            "i-x",
            "i-",
            "-5",
            "i-+5",
            "i-99999999999999999999",
        ] {
            assert_eq!(split_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn status_round_trips() {
        let s = StatusResponse {
            wire_version: WIRE_VERSION.into(),
            controller_id: "c".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            uptime_secs: 1,
            config: StatusConfig {
                profile: "production-default".into(),
                config_version: "1".into(),
                config_hash: "sha256:x".into(),
                reloads_ok: 0,
                reloads_failed: 0,
                last_reload_error: String::new(),
            },
            counters: StatusCounters::default(),
            stale_after_secs: 90,
            agents: vec![],
            instances_total: 3,
            next_after: Some("a1".into()),
        };
        let v = serde_json::to_value(&s).unwrap();
        let back: StatusResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
