//! The tapio-wire/v1 routes.
//!
//! The front (`front.rs`) reads each request whole, its body through a
//! hard limit (Content-Length and chunked alike), and a worker thread calls
//! [`handle`] with it. Every error uses the wire's error shape and status
//! policy.

use crate::errors::ApiError;
use crate::export::Exporter;
use crate::front::{BodyError, Request, Response};
use crate::profile_store::ConfigStore;
use crate::registry::{BatchVerdict, Registry};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tapio_wire::{
    ErrorCode, EventBatch, EventBatchResponse, HeartbeatRequest, HeartbeatResponse, HelloRequest,
    HelloResponse, StatusConfig, StatusCounters, StatusResponse, WIRE_VERSION,
};

pub struct Settings {
    pub max_body_bytes: usize,
    pub heartbeat_interval_secs: u32,
    pub config_poll_interval_secs: u32,
    pub stale_after_secs: u64,
    pub token: Option<String>,
}

#[derive(Default)]
pub struct Counters {
    pub events_accepted: AtomicU64,
    pub events_rejected: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_exported: AtomicU64,
    pub export_failures: AtomicU64,
    pub batches_accepted: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub batches_duplicate: AtomicU64,
    pub requests_total: AtomicU64,
    pub requests_rejected: AtomicU64,
}

pub struct State {
    pub http: crate::metrics::HttpMetrics,
    /// The front end, for its refusal counters (None in unit tests).
    pub front: Option<Arc<crate::front::FrontCounters>>,
    pub controller_id: String,
    pub started: Instant,
    pub started_at: String,
    pub config: ConfigStore,
    pub registry: Mutex<Registry>,
    pub exporter: Option<Mutex<Exporter>>,
    pub counters: Counters,
    pub settings: Settings,
}

enum Body {
    Json(Vec<u8>),
    NotModified(String),
    /// Plain text with its content type (/metrics, /healthz).
    Text(String, &'static str),
}

struct Reply {
    status: u16,
    body: Body,
    etag: Option<String>,
}

impl Reply {
    fn json<T: serde::Serialize>(status: u16, v: &T) -> Reply {
        Reply {
            status,
            body: Body::Json(serde_json::to_vec(v).unwrap_or_default()),
            etag: None,
        }
    }
}

/// Constant-time comparison of the bearer token.
fn token_matches(expected: &str, got: &str) -> bool {
    let (a, b) = (expected.as_bytes(), got.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff));
    }
    diff == 0
}

/// The body the front read, or the error it found while reading.
fn read_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    match std::mem::replace(&mut req.body, Ok(Vec::new())) {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge) => Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        )),
        Err(BodyError::Broken) => Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the request body could not be read completely",
        )),
    }
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request. Never panics on input.
pub fn handle(state: &State, mut req: Request) -> Response {
    let started = Instant::now();
    let path = req.path().to_string();
    state.counters.requests_total.fetch_add(1, Relaxed);
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    let mut reject = None;
    let reply = route(state, &mut req).unwrap_or_else(|e| {
        state.counters.requests_rejected.fetch_add(1, Relaxed);
        reject = Some(e.code.as_str());
        match e.code {
            ErrorCode::MethodNotAllowed => {
                if let Some(m) = allowed_method(&path) {
                    headers.push(("Allow", m.to_string()));
                }
            }
            ErrorCode::Unauthorized => {
                headers.push(("WWW-Authenticate", "Bearer realm=\"tapio\"".to_string()));
            }
            _ => {}
        }
        Reply {
            status: e.status(),
            body: Body::Json(e.body()),
            etag: None,
        }
    });
    let status = reply.status;
    let body = match reply.body {
        Body::Json(bytes) => {
            headers.push(("Content-Type", "application/json".into()));
            bytes
        }
        Body::Text(text, ctype) => {
            headers.push(("Content-Type", ctype.into()));
            text.into_bytes()
        }
        Body::NotModified(etag) => {
            headers.push(("ETag", etag));
            Vec::new()
        }
    };
    if let Some(etag) = reply.etag {
        headers.push(("ETag", etag));
    }
    // Counted before the answer leaves: a client that reads /metrics right
    // after its answer must find its own request there.
    state.http.observe(
        crate::metrics::route_index(&path),
        status,
        started.elapsed(),
        reject,
    );
    Response {
        status,
        headers,
        body,
    }
}

/// 409: the instance id is bound to another agent id.
fn conflict(instance: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InstanceConflict,
        format!("instance_id {instance:?} belongs to another agent_id"),
    )
}

fn metrics(state: &State) -> Reply {
    let c = &state.counters;
    let (known, stale, evicted) = state
        .registry
        .lock()
        .map(|r| {
            let (k, s) = r.counts(Instant::now(), state.settings.stale_after_secs);
            (k, s, r.evicted)
        })
        .unwrap_or_default();
    let front = |f: fn(&crate::front::FrontCounters) -> &AtomicU64| {
        state.front.as_ref().map_or(0, |fr| f(fr).load(Relaxed))
    };
    let snap = crate::metrics::Snapshot {
        counters: vec![
            (
                "tapio_controller_events_accepted_total",
                "Events in accepted batches.",
                c.events_accepted.load(Relaxed),
            ),
            (
                "tapio_controller_events_rejected_total",
                "Events in rejected batches.",
                c.events_rejected.load(Relaxed),
            ),
            (
                "tapio_controller_events_duplicate_total",
                "Events already received (a retried batch, or an id already exported).",
                c.events_duplicate.load(Relaxed),
            ),
            (
                "tapio_controller_events_exported_total",
                "Events written to the export.",
                c.events_exported.load(Relaxed),
            ),
            (
                "tapio_controller_export_failures_total",
                "Events the export could not write.",
                c.export_failures.load(Relaxed),
            ),
            (
                "tapio_controller_export_ids_forgotten_total",
                "Sequence ranges the export forgot to stay bounded (a later resend of those events could be exported twice).",
                state
                    .exporter
                    .as_ref()
                    .and_then(|e| e.lock().ok().map(|e| e.forgotten))
                    .unwrap_or(0),
            ),
            (
                "tapio_controller_batches_accepted_total",
                "Event batches accepted.",
                c.batches_accepted.load(Relaxed),
            ),
            (
                "tapio_controller_batches_rejected_total",
                "Event batches rejected.",
                c.batches_rejected.load(Relaxed),
            ),
            (
                "tapio_controller_batches_duplicate_total",
                "Event batches whose sequence was already seen.",
                c.batches_duplicate.load(Relaxed),
            ),
        ],
        front_refusals: [
            ("busy", front(|f| &f.refused_busy)),
            ("head_too_large", front(|f| &f.head_too_large)),
            ("head_timeout", front(|f| &f.head_timeouts)),
            ("buffer_budget", front(|f| &f.buffer_budget)),
            ("malformed", front(|f| &f.malformed)),
        ],
        connections_open: front(|f| &f.connections_open),
        connections_accepted: front(|f| &f.connections_accepted),
        connections_closed_idle: [
            ("idle_timeout", front(|f| &f.closed_idle)),
            ("connection_limit", front(|f| &f.evicted_idle)),
        ],
        registry_evictions: evicted,
        agents_known: known,
        agents_stale: stale,
        reloads_ok: state.config.reloads_ok.load(Relaxed),
        reloads_failed: state.config.reloads_failed.load(Relaxed),
    };
    Reply {
        status: 200,
        body: Body::Text(
            crate::metrics::render(&state.http, &snap),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        etag: None,
    }
}

/// Every route and the one method it accepts.
const ROUTES: &[(&str, &str)] = &[
    ("/v1/agents/hello", "POST"),
    ("/v1/agents/config", "GET"),
    ("/v1/agents/heartbeat", "POST"),
    ("/v1/events", "POST"),
    ("/v1/status", "GET"),
    ("/metrics", "GET"),
    ("/healthz", "GET"),
];

fn allowed_method(path: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, m)| *m)
}

fn route(state: &State, req: &mut Request) -> Result<Reply, ApiError> {
    let url = req.target.clone();
    let path = url.split('?').next().unwrap_or("");
    let Some((_, want)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return Err(ApiError::new(
            ErrorCode::UnknownEndpoint,
            "no tapio-wire/v1 route matches this path",
        ));
    };
    if req.method != *want {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} accepts {want} only"),
        ));
    }
    // Liveness for probes and load balancers: never behind the token, and
    // a few bytes whatever the registry holds.
    if path == "/healthz" {
        return Ok(Reply {
            status: 200,
            body: Body::Text("ok\n".into(), "text/plain; charset=utf-8"),
            etag: None,
        });
    }
    if let Some(token) = &state.settings.token {
        let got = req
            .header("Authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !token_matches(token, got) {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "a valid bearer token is required",
            ));
        }
    }
    match path {
        "/v1/agents/hello" => hello(state, req),
        "/v1/agents/config" => config(state, req, &url),
        "/v1/agents/heartbeat" => heartbeat(state, req),
        "/v1/events" => events(state, req),
        "/metrics" => Ok(metrics(state)),
        _ => Ok(status(state, &url)),
    }
}

fn hello(state: &State, req: &mut Request) -> Result<Reply, ApiError> {
    let body = read_body(req, state.settings.max_body_bytes)?;
    let h: HelloRequest = tapio_wire::decode_request(&body)?;
    if let Ok(mut r) = state.registry.lock() {
        if !r.owns(&h.agent_id, &h.instance_id) {
            return Err(conflict(&h.instance_id));
        }
        r.hello(&h, Instant::now());
    }
    let active = state.config.current();
    Ok(Reply::json(
        200,
        &HelloResponse {
            wire_version: WIRE_VERSION.into(),
            controller_id: state.controller_id.clone(),
            config_version: active.version.to_string(),
            config_hash: active.hash.clone(),
            heartbeat_interval_secs: state.settings.heartbeat_interval_secs,
            config_poll_interval_secs: state.settings.config_poll_interval_secs,
        },
    ))
}

fn config(state: &State, req: &Request, url: &str) -> Result<Reply, ApiError> {
    for key in ["agent_id", "node_name"] {
        if query_param(url, key).is_none_or(|v| v.trim().is_empty()) {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                format!("{key} is required"),
            ));
        }
    }
    let active = state.config.current();
    if req.header("If-None-Match").map(str::trim) == Some(active.etag.as_str()) {
        return Ok(Reply {
            status: 304,
            body: Body::NotModified(active.etag.clone()),
            etag: None,
        });
    }
    Ok(Reply {
        status: 200,
        body: Body::Json(active.response.clone()),
        etag: Some(active.etag.clone()),
    })
}

fn heartbeat(state: &State, req: &mut Request) -> Result<Reply, ApiError> {
    let body = read_body(req, state.settings.max_body_bytes)?;
    let hb: HeartbeatRequest = tapio_wire::decode_request(&body)?;
    let known = match state.registry.lock() {
        Ok(mut r) => {
            if !r.owns(&hb.agent_id, &hb.instance_id) {
                return Err(conflict(&hb.instance_id));
            }
            r.heartbeat(&hb, Instant::now())
        }
        Err(_) => false,
    };
    Ok(Reply::json(
        200,
        &HeartbeatResponse {
            wire_version: WIRE_VERSION.into(),
            known_agent: known,
            config_hash: state.config.current().hash.clone(),
        },
    ))
}

fn events(state: &State, req: &mut Request) -> Result<Reply, ApiError> {
    let c = &state.counters;
    let body = read_body(req, state.settings.max_body_bytes).inspect_err(|_| {
        c.batches_rejected.fetch_add(1, Relaxed);
    })?;
    let decoded = tapio_wire::parse_body(&body).and_then(|raw| {
        let b: EventBatch = tapio_wire::decode_value(&raw)?;
        Ok((raw, b))
    });
    let (raw, batch) = match decoded {
        Ok(x) => x,
        Err(e) => {
            // Rejected: counted, and the sequence is not advanced.
            c.batches_rejected.fetch_add(1, Relaxed);
            if let Some(n) = tapio_wire::parse_body(&body)
                .ok()
                .and_then(|v| v.get("events")?.as_array().map(Vec::len))
            {
                c.events_rejected.fetch_add(n as u64, Relaxed);
            }
            return Err(e.into());
        }
    };
    let n = batch.events.len() as u64;
    // Every event id is `<instance_id>-<n>`: a batch cannot carry another
    // instance's ids (the export de-duplicates on them).
    if let Some(i) = batch.events.iter().position(|e| {
        tapio_wire::split_event_id(&e.id).is_none_or(|(inst, _)| inst != batch.instance_id)
    }) {
        c.batches_rejected.fetch_add(1, Relaxed);
        c.events_rejected.fetch_add(n, Relaxed);
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!(
                "events[{i}].id: must be {}-<sequence> (the batch's own instance)",
                batch.instance_id
            ),
        ));
    }
    let unavailable = |why: &str| {
        c.batches_rejected.fetch_add(1, Relaxed);
        c.events_rejected.fetch_add(n, Relaxed);
        ApiError::new(ErrorCode::Unavailable, format!("{why}; retry the batch"))
    };
    let (verdict, known, undo) = match state.registry.lock() {
        Ok(mut r) => {
            if !r.owns(&batch.agent_id, &batch.instance_id) {
                c.batches_rejected.fetch_add(1, Relaxed);
                c.events_rejected.fetch_add(n, Relaxed);
                return Err(conflict(&batch.instance_id));
            }
            r.batch(
                &batch.agent_id,
                &batch.instance_id,
                &batch.node_name,
                batch.sequence,
                Instant::now(),
            )
        }
        // Never 200 for a batch the controller could not account for.
        Err(_) => return Err(unavailable("the registry is unavailable")),
    };
    let take_back = || {
        if let Ok(mut r) = state.registry.lock() {
            r.undo_batch(&batch.agent_id, &batch.instance_id, undo);
        }
    };
    if verdict == BatchVerdict::Duplicate {
        c.batches_duplicate.fetch_add(1, Relaxed);
        c.events_duplicate.fetch_add(n, Relaxed);
        return Ok(Reply::json(
            200,
            &EventBatchResponse {
                wire_version: WIRE_VERSION.into(),
                sequence: batch.sequence,
                accepted: 0,
                duplicate: true,
                known_agent: known,
            },
        ));
    }
    // events_accepted counts new events only: what the export recognises
    // as already exported (a resend) is counted as a duplicate instead.
    let mut new_events = n;
    if let Some(ex) = &state.exporter {
        let events = raw
            .get("events")
            .and_then(|e| e.as_array())
            .map_or(&[][..], Vec::as_slice);
        let Ok(mut ex) = ex.lock() else {
            take_back();
            return Err(unavailable("the export is unavailable"));
        };
        let r = ex.export(&batch.agent_id, &batch.node_name, events);
        c.events_exported.fetch_add(r.exported, Relaxed);
        c.events_duplicate.fetch_add(r.duplicates, Relaxed);
        c.export_failures.fetch_add(r.failed, Relaxed);
        if r.write_failed > 0 {
            // Not stored: 503, and the sequence is taken back so the
            // agent's resend is new again. What this attempt did export is
            // accepted now (its ids are known: the resend finds them as
            // duplicates, so nothing is exported or counted twice).
            drop(ex);
            take_back();
            c.events_accepted.fetch_add(r.exported, Relaxed);
            c.batches_rejected.fetch_add(1, Relaxed);
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "{} of {n} events could not be written to the export; retry the batch",
                    r.write_failed
                ),
            ));
        }
        new_events = n.saturating_sub(r.duplicates);
    }
    c.batches_accepted.fetch_add(1, Relaxed);
    c.events_accepted.fetch_add(new_events, Relaxed);
    Ok(Reply::json(
        200,
        &EventBatchResponse {
            wire_version: WIRE_VERSION.into(),
            sequence: batch.sequence,
            accepted: n,
            duplicate: false,
            known_agent: known,
        },
    ))
}

/// `GET /v1/status[?limit=N][&after=AGENT_ID]`: one page of agents.
fn status(state: &State, url: &str) -> Reply {
    use tapio_wire::limits::{STATUS_PAGE_DEFAULT, STATUS_PAGE_MAX};
    let active = state.config.current();
    let c = &state.counters;
    let limit = query_param(url, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(STATUS_PAGE_DEFAULT)
        .clamp(1, STATUS_PAGE_MAX);
    let after = query_param(url, "after");
    let ((agents, next_after), instances_total) = state
        .registry
        .lock()
        .map(|r| {
            (
                r.status_page(Instant::now(), after.as_deref(), limit),
                r.instances(),
            )
        })
        .unwrap_or_default();
    Reply::json(
        200,
        &StatusResponse {
            wire_version: WIRE_VERSION.into(),
            controller_id: state.controller_id.clone(),
            started_at: state.started_at.clone(),
            uptime_secs: state.started.elapsed().as_secs(),
            config: StatusConfig {
                profile: active.config.profile.clone(),
                config_version: active.version.to_string(),
                config_hash: active.hash.clone(),
                reloads_ok: state.config.reloads_ok.load(Relaxed),
                reloads_failed: state.config.reloads_failed.load(Relaxed),
                last_reload_error: state.config.last_error(),
            },
            counters: StatusCounters {
                events_accepted: c.events_accepted.load(Relaxed),
                events_rejected: c.events_rejected.load(Relaxed),
                events_duplicate: c.events_duplicate.load(Relaxed),
                events_exported: c.events_exported.load(Relaxed),
                export_failures: c.export_failures.load(Relaxed),
                batches_accepted: c.batches_accepted.load(Relaxed),
                batches_rejected: c.batches_rejected.load(Relaxed),
                batches_duplicate: c.batches_duplicate.load(Relaxed),
                requests_total: c.requests_total.load(Relaxed),
                requests_rejected: c.requests_rejected.load(Relaxed),
            },
            stale_after_secs: state.settings.stale_after_secs,
            agents,
            instances_total,
            next_after,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_and_percent_decoding() {
        assert_eq!(
            query_param("/v1/agents/config?agent_id=a%201&node_name=n", "agent_id").as_deref(),
            Some("a 1")
        );
        assert_eq!(
            query_param("/v1/agents/config?agent_id=a", "node_name"),
            None
        );
        assert_eq!(query_param("/x?k=%zz%4", "k").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("/x", "k"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cretx"));
        assert!(!token_matches("s3cret", ""));
    }
}
