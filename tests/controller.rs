//! The controller binary over real loopback HTTP: every route and error
//! code, 304, 413, 401, reloads, duplicate batches, sequence gaps, status
//! and the export files.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const V: &str = "tapio-wire/v1";

fn hello(agent: &str, instance: &str) -> Value {
    json!({"wire_version": V, "agent_id": agent, "node_name": "node-1", "instance_id": instance,
           "agent_version": "0.1.0", "kernel_release": "6.18", "arch": "x86_64", "capabilities": []})
}

fn event(id: &str) -> Value {
    json!({"id": id, "type": "kernel.network.connection_refused", "observer": "network",
           "severity": "warning", "timestamp": tapio_common::time::rfc3339_ns(tapio_common::time::now_unix_ns()),
           "config_generation": 1, "facts": {"dst_port": 9}})
}

fn batch(instance: &str, seq: u64, ids: &[&str]) -> Value {
    json!({"wire_version": V, "agent_id": "a1", "instance_id": instance, "node_name": "node-1",
           "sequence": seq, "events": ids.iter().map(|i| event(i)).collect::<Vec<_>>()})
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn routes_methods_and_error_codes() {
    let c = Controller::start(&[]);
    let (s, b) = c.post("/v1/agents/hello", &hello("a1", "i1"));
    assert_eq!(s, 200);
    assert_eq!(b["config_version"], "1");
    assert!(b["config_hash"].as_str().unwrap().starts_with("sha256:"));

    // 404 and 405, in the error shape
    let (s, _, body) = c.get("/v2/agents/hello");
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (404, "UNKNOWN_ENDPOINT")
    );
    let (s, headers, body) = c.get("/v1/agents/hello");
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (405, "METHOD_NOT_ALLOWED")
    );
    assert_eq!(
        header_of(&headers, "allow"),
        Some("POST"),
        "405 says what is allowed"
    );
    let (s, b) = c.post("/v1/status", &json!({}));
    assert_eq!((s, code(&b)), (405, "METHOD_NOT_ALLOWED"));

    // 400s
    let mut h = hello("a1", "i1");
    h.as_object_mut().unwrap().remove("agent_id");
    let (s, b) = c.post("/v1/agents/hello", &h);
    assert_eq!((s, code(&b)), (400, "MISSING_FIELD"));
    assert_eq!(b["error"]["message"], "agent_id is required");
    let mut h = hello("a1", "i1");
    h["wire_version"] = json!("tapio-wire/v2");
    for path in ["/v1/agents/hello", "/v1/agents/heartbeat", "/v1/events"] {
        let (s, b) = c.post(path, &h);
        assert_eq!((s, code(&b)), (400, "UNSUPPORTED_VERSION"), "{path}");
    }
    let mut bad = batch("i1", 1, &["x-1"]);
    bad["events"][0]["config_generation"] = json!("one");
    let (s, b) = c.post("/v1/events", &bad);
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[0].config_generation")
    );
    let raw = request(
        "POST",
        "/v1/agents/hello",
        &[],
        Some(b"{\"wire_version\": "),
    );
    let (s, _, body) = raw_http(c.port, &raw);
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (400, "MALFORMED_JSON")
    );
    let (s, _, body) = c.get("/v1/agents/config?agent_id=a1");
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (400, "MISSING_FIELD")
    );

    // 422 for reasoning, nested in an array
    let mut r = batch("i1", 1, &["x-1"]);
    r["events"][0]["facts"]["notes"] = json!([{"root_cause": "disk"}]);
    let (s, b) = c.post("/v1/events", &r);
    assert_eq!((s, code(&b)), (422, "REASONING_FIELD"));

    // messages never leak internals
    let m = b["error"]["message"].as_str().unwrap();
    assert!(
        !m.contains("/work") && !m.contains("src/") && !m.contains("panicked"),
        "{m}"
    );
}

#[test]
fn config_etag_and_304() {
    let c = Controller::start(&[]);
    let (s, h, body) = c.get("/v1/agents/config?agent_id=a1&node_name=n1");
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let hash = v["config_hash"].as_str().unwrap().to_string();
    let etag = h
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(etag, format!("\"{hash}\""));
    assert_eq!(v["config_version"], "1");
    assert_eq!(v["config"]["profile"], "production-default");
    let raw = request(
        "GET",
        "/v1/agents/config?agent_id=a1&node_name=n1",
        &[("If-None-Match", &etag)],
        None,
    );
    let (s, _, body) = raw_http(c.port, &raw);
    assert_eq!(s, 304);
    assert!(body.is_empty());
    // exact single-tag matching only
    for other in ["*", &format!("W/{etag}"), &format!("{etag}, \"x\""), &hash] {
        let raw = request(
            "GET",
            "/v1/agents/config?agent_id=a1&node_name=n1",
            &[("If-None-Match", other)],
            None,
        );
        assert_eq!(raw_http(c.port, &raw).0, 200, "{other}");
    }
}

#[test]
fn bodies_over_the_limit_are_413_by_length_and_chunked() {
    let c = Controller::start(&["--max-body-bytes", "4096"]);
    let big = vec![b' '; 5000];
    let (s, _, body) = raw_http(
        c.port,
        &request("POST", "/v1/agents/hello", &[], Some(&big)),
    );
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (413, "PAYLOAD_TOO_LARGE")
    );
    // chunked, no length: the limit applies while reading
    let mut raw = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..10 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b' '; 0x400]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (s, _, body) = raw_http(c.port, &raw);
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (413, "PAYLOAD_TOO_LARGE")
    );
    assert_eq!(c.status()["counters"]["batches_rejected"], 1);
}

#[test]
fn bearer_token_is_required_when_configured() {
    let dir = tmpdir("ctl-token");
    let tf = dir.join("token");
    std::fs::write(&tf, "s3cret-token\n").unwrap();
    let c = Controller::start(&["--token-file", tf.to_str().unwrap()]);
    let (s, headers, body) = c.get("/v1/status");
    assert_eq!(
        (s, code(&serde_json::from_slice(&body).unwrap())),
        (401, "UNAUTHORIZED")
    );
    assert!(
        header_of(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
        "401 names the scheme: {headers:?}"
    );
    // Probes need no token; metrics do.
    let (s, _, body) = c.get("/healthz");
    assert_eq!((s, body.as_slice()), (200, b"ok\n".as_slice()));
    assert_eq!(c.get("/metrics").0, 401);
    let (s, _, _) = raw_http(
        c.port,
        &request(
            "GET",
            "/metrics",
            &[("Authorization", "Bearer s3cret-token")],
            None,
        ),
    );
    assert_eq!(s, 200);
    for bad in [
        "Bearer wrong",
        "Bearer s3cret-toke",
        "Basic s3cret-token",
        "s3cret-token",
    ] {
        let (s, _, _) = raw_http(
            c.port,
            &request("GET", "/v1/status", &[("Authorization", bad)], None),
        );
        assert_eq!(s, 401, "{bad}");
    }
    let (s, _, _) = raw_http(
        c.port,
        &request(
            "GET",
            "/v1/status",
            &[("Authorization", "Bearer s3cret-token")],
            None,
        ),
    );
    assert_eq!(s, 200);
    assert!(c.log.lock().unwrap().iter().all(|l| !l.contains("s3cret")));
}

#[test]
fn duplicates_gaps_status_and_export() {
    let dir = tmpdir("ctl-export");
    let c = Controller::start(&["--export-dir", dir.to_str().unwrap()]);
    assert_eq!(c.post("/v1/agents/hello", &hello("a1", "i1")).0, 200);
    let (s, b) = c.post("/v1/events", &batch("i1", 1, &["i1-1", "i1-2"]));
    assert_eq!(
        (s, b["accepted"].as_u64(), b["duplicate"].as_bool()),
        (200, Some(2), Some(false))
    );
    // a resend: acknowledged, not stored or counted again
    let (s, b) = c.post("/v1/events", &batch("i1", 1, &["i1-1", "i1-2"]));
    assert_eq!(
        (s, b["accepted"].as_u64(), b["duplicate"].as_bool()),
        (200, Some(0), Some(true))
    );
    // a rejected batch does not advance the sequence
    let mut bad = batch("i1", 2, &["i1-3"]);
    bad["events"][0]["type"] = json!("user.x");
    assert_eq!(c.post("/v1/events", &bad).0, 400);
    // a gap: 2 and 3 missing
    assert_eq!(c.post("/v1/events", &batch("i1", 4, &["i1-4"])).0, 200);
    let hb = json!({"wire_version": V, "agent_id": "a1", "instance_id": "i1", "node_name": "node-1",
                    "config_version": "0", "uptime_secs": 3, "counters": {"tapio_queue_drops_total{observer=\"network\"}": 7},
                    "observers": [{"observer": "network", "state": "up"}], "degraded_reasons": ["unconfigured"]});
    let (s, b) = c.post("/v1/agents/heartbeat", &hb);
    assert_eq!((s, b["known_agent"].as_bool()), (200, Some(true)));
    // an instance the controller never met is told to say hello
    let mut hb2 = hb.clone();
    hb2["instance_id"] = json!("i9");
    assert_eq!(c.post("/v1/agents/heartbeat", &hb2).1["known_agent"], false);

    let st = c.status();
    let k = &st["counters"];
    assert_eq!(
        (
            k["events_accepted"].as_u64(),
            k["batches_accepted"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(
        (
            k["batches_duplicate"].as_u64(),
            k["events_duplicate"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        (
            k["batches_rejected"].as_u64(),
            k["events_rejected"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(k["events_exported"], 3);
    assert_eq!(st["stale_after_secs"], 30);
    let inst = &st["agents"][0]["instances"][0];
    assert_eq!(st["agents"][0]["agent_id"], "a1");
    assert_eq!(inst["instance_id"], "i1");
    assert_eq!(
        (
            inst["last_sequence"].as_u64(),
            inst["sequence_gaps"].as_u64(),
            inst["missing_batches"].as_u64()
        ),
        (Some(4), Some(1), Some(2))
    );
    assert_eq!(inst["duplicate_batches"], 1);
    assert_eq!(
        inst["counters"]["tapio_queue_drops_total{observer=\"network\"}"],
        7
    );
    assert_eq!(inst["degraded_reasons"], json!(["unconfigured"]));
    assert!(inst["last_heartbeat_age_secs"].as_u64().unwrap() <= 1);
    assert!(
        st.get("healthy").is_none() && inst.get("stale").is_none(),
        "facts, not verdicts"
    );

    let (events, stats) = tapio_common::store::read_events(&[dir.as_path()], None, None).unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&"i1-1") && ids.contains(&"i1-4"));
    assert_eq!((stats.duplicates, stats.corrupt), (0, 0));
    assert!(
        events
            .iter()
            .all(|e| e["agent_id"] == "a1" && e["node_name"] == "node-1")
    );

    // restart: the export stays idempotent on ids (a new instance resends)
    drop(c);
    let c = Controller::start(&["--export-dir", dir.to_str().unwrap()]);
    let (s, b) = c.post("/v1/events", &batch("i1", 1, &["i1-1", "i1-5"]));
    assert_eq!((s, b["known_agent"].as_bool()), (200, Some(false)));
    let (events, _) = tapio_common::store::read_events(&[dir.as_path()], None, None).unwrap();
    let lines: usize = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!((events.len(), lines), (4, 4), "i1-1 was not exported twice");
    // ... and counted as a duplicate, never as a newly accepted event.
    let k = c.status()["counters"].clone();
    assert_eq!(
        (
            &k["events_accepted"],
            &k["events_exported"],
            &k["events_duplicate"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{k}"
    );
}

#[test]
fn reload_valid_and_invalid_profiles() {
    let dir = tmpdir("ctl-reload");
    let p = dir.join("profile.yaml");
    let head = "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\n";
    std::fs::write(&p, head).unwrap();
    let c = Controller::start(&["--profile", p.to_str().unwrap(), "--reload-poll-secs", "1"]);
    let st = c.status();
    let h1 = st["config"]["config_hash"].as_str().unwrap().to_string();
    assert_eq!(st["config"]["config_version"], "1");
    // valid change, via SIGHUP
    std::fs::write(
        &p,
        format!("{head}overrides:\n  network:\n    retransmit_window_ms: 2000\n"),
    )
    .unwrap();
    c.signal("HUP");
    let st = wait_status(&c, |s| s["config"]["config_version"] == "2");
    let h2 = st["config"]["config_hash"].as_str().unwrap().to_string();
    assert_ne!(h1, h2);
    // invalid change, picked up by the mtime poll: old config kept
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &p,
        format!("{head}overrides:\n  storage:\n    slow_io:\n      critical_ms: 1\n"),
    )
    .unwrap();
    let st = wait_status(&c, |s| s["config"]["reloads_failed"] == 1);
    assert_eq!(st["config"]["config_version"], "2");
    assert_eq!(st["config"]["config_hash"], h2);
    assert!(
        st["config"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("overrides.storage.slow_io.critical_ms")
    );
    let (_, _, body) = c.get("/v1/agents/config?agent_id=a&node_name=n");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["config"]["network"]["retransmit_window_ns"],
        2_000_000_000u64
    );
}

fn wait_status(c: &Controller, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.status();
        if pred(&st) {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never matched: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_bad_profile_fails_startup_with_file_line_and_path() {
    let dir = tmpdir("ctl-badprofile");
    let p = dir.join("bad.yaml");
    std::fs::write(&p, "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\noverrides:\n  network:\n    retransmit_windw_ms: 5\n").unwrap();
    let out = std::process::Command::new(bin("tapio-controller"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--profile",
            p.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:6:5: overrides.network: unknown field `retransmit_windw_ms`"),
        "{err}"
    );
    let out = std::process::Command::new(bin("tapio-controller"))
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = std::process::Command::new(bin("tapio-controller"))
        .args([
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/profiles/web-tier.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn metrics_count_every_request_exactly_and_pass_promtool() {
    let c = Controller::start(&[]);
    assert_eq!(c.post("/v1/agents/hello", &hello("a1", "i1")).0, 200);
    assert_eq!(
        c.post("/v1/events", &batch("i1", 1, &["i1-1", "i1-2"])).0,
        200
    );
    assert_eq!(
        c.post("/v1/events", &batch("i1", 1, &["i1-1", "i1-2"])).0,
        200
    );
    assert_eq!(c.get("/nope").0, 404);
    assert_eq!(c.get("/v1/events").0, 405);
    assert_eq!(c.get("/healthz").0, 200);
    let (s, headers, body) = c.get("/metrics");
    assert_eq!(s, 200);
    assert!(header_of(&headers, "content-type").is_some_and(|v| v.starts_with("text/plain")));
    let text = String::from_utf8(body).unwrap();
    for (key, want) in [
        (
            "tapio_controller_requests_total{route=\"hello\",code=\"200\"}",
            1,
        ),
        (
            "tapio_controller_requests_total{route=\"events\",code=\"200\"}",
            2,
        ),
        (
            "tapio_controller_requests_total{route=\"events\",code=\"405\"}",
            1,
        ),
        (
            "tapio_controller_requests_total{route=\"other\",code=\"404\"}",
            1,
        ),
        (
            "tapio_controller_requests_total{route=\"healthz\",code=\"200\"}",
            1,
        ),
        (
            "tapio_controller_rejected_requests_total{code=\"UNKNOWN_ENDPOINT\"}",
            1,
        ),
        (
            "tapio_controller_rejected_requests_total{code=\"METHOD_NOT_ALLOWED\"}",
            1,
        ),
        (
            "tapio_controller_request_duration_seconds_count{route=\"events\"}",
            3,
        ),
        ("tapio_controller_events_accepted_total", 2),
        ("tapio_controller_events_duplicate_total", 2),
        ("tapio_controller_batches_duplicate_total", 1),
        ("tapio_controller_agents{state=\"known\"}", 1),
        ("tapio_controller_agents{state=\"stale\"}", 0),
        ("tapio_controller_registry_evictions_total", 0),
        ("tapio_controller_front_refusals_total{reason=\"busy\"}", 0),
        ("tapio_controller_build_info{version=\"0.1.0\",commit=", 1),
    ] {
        let got = text
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok());
        assert_eq!(got, Some(want), "{key}\n{text}");
    }
    match promtool_check(&text) {
        None => skip(
            "controller::metrics_promtool",
            "promtool not installed (Debian package prometheus)",
        ),
        Some(r) => {
            if let Err(e) = r {
                panic!("promtool rejected /metrics:\n{e}");
            }
        }
    }
}

#[test]
fn no_client_can_claim_another_agents_instance_or_event_ids() {
    let dir = tmpdir("ctl-claims");
    let c = Controller::start(&["--export-dir", dir.to_str().unwrap()]);
    assert_eq!(c.post("/v1/agents/hello", &hello("a1", "i1")).0, 200);
    assert_eq!(c.post("/v1/events", &batch("i1", 1, &["i1-1"])).0, 200);
    // Agent a2 claims a1's instance: refused on every route, counted.
    let (s, b) = c.post("/v1/agents/hello", &hello("a2", "i1"));
    assert_eq!((s, code(&b)), (409, "INSTANCE_CONFLICT"));
    let mut foreign = batch("i1", 2, &["i1-2"]);
    foreign["agent_id"] = json!("a2");
    let (s, b) = c.post("/v1/events", &foreign);
    assert_eq!((s, code(&b)), (409, "INSTANCE_CONFLICT"));
    let hb = json!({"wire_version": V, "agent_id": "a2", "instance_id": "i1", "node_name": "node-1",
                    "config_version": "0", "uptime_secs": 3, "counters": {}});
    assert_eq!(c.post("/v1/agents/heartbeat", &hb).0, 409);
    // a1 itself, under its own instance, cannot carry another instance's ids.
    let (s, b) = c.post("/v1/events", &batch("i1", 2, &["i1-2", "i7-9"]));
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[1].id"),
        "{b}"
    );
    // Nor ids of another shape: the sequence is a decimal number, and a
    // longer prefix is another instance.
    for odd in ["i1-x", "i1-7-9"] {
        let (s, b) = c.post("/v1/events", &batch("i1", 2, &[odd]));
        assert_eq!((s, code(&b)), (400, "INVALID_FIELD"), "{odd}");
    }
    // ... so a1's future ids were never taken: its next batch is exported.
    assert_eq!(c.post("/v1/events", &batch("i1", 2, &["i1-2"])).0, 200);
    let (events, _) = tapio_common::store::read_events(&[dir.as_path()], None, None).unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"i1-1") && ids.contains(&"i1-2"));
    let (_, _, m) = c.get("/metrics");
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains("tapio_controller_rejected_requests_total{code=\"INSTANCE_CONFLICT\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("tapio_controller_rejected_requests_total{code=\"INVALID_FIELD\"} 3"),
        "{m}"
    );
}

/// The export fails (its disk is full): the batch is answered 503, never
/// 200, and its sequence is taken back, so the agent's resend of the very
/// same batch is stored once space is back. Nothing is lost or doubled.
#[test]
fn a_failed_export_is_503_and_the_resend_is_stored_once() {
    if unsafe { libc::geteuid() } != 0 {
        skip(
            "controller::export_full_disk",
            "needs root to mount a tmpfs",
        );
        return;
    }
    let tmpfs = Tmpfs::mount("ctl-export-full", "8k");
    let mnt = tmpfs.0.clone();
    let c = Controller::start(&["--export-dir", mnt.to_str().unwrap()]);
    assert_eq!(c.post("/v1/agents/hello", &hello("a1", "i1")).0, 200);
    let ids: Vec<String> = (1..=100).map(|i| format!("i1-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut big = batch("i1", 1, &refs);
    for e in big["events"].as_array_mut().unwrap() {
        e["facts"]["comm"] = json!("x".repeat(200));
    }
    let (s, b) = c.post("/v1/events", &big);
    assert_eq!((s, code(&b)), (503, "UNAVAILABLE"), "{b}");
    let st = c.status();
    let k = &st["counters"];
    assert_eq!(
        (
            k["batches_accepted"].as_u64(),
            k["events_accepted"].as_u64()
        ),
        (Some(0), Some(0)),
        "{k}"
    );
    assert_eq!(k["export_failures"], 100);
    assert_eq!(
        st["agents"][0]["instances"][0]["last_sequence"], 0,
        "the sequence was taken back"
    );
    // Space is back: the agent resends the same batch, which is new again.
    sh(&format!("mount -o remount,size=1m {}", mnt.display()));
    let (s, b) = c.post("/v1/events", &big);
    assert_eq!(
        (s, b["duplicate"].as_bool(), b["accepted"].as_u64()),
        (200, Some(false), Some(100)),
        "{b}"
    );
    let k = c.status()["counters"].clone();
    assert_eq!(
        (k["events_accepted"].as_u64(), k["events_exported"].as_u64()),
        (Some(100), Some(100)),
        "{k}"
    );
    let (events, stats) = tapio_common::store::read_events(&[mnt.as_path()], None, None).unwrap();
    assert_eq!((events.len(), stats.duplicates), (100, 0));
    drop(c);
    drop(tmpfs);
}

#[test]
fn status_is_paged_by_agent_id() {
    let c = Controller::start(&[]);
    for (agent, inst) in [("a3", "i3"), ("a1", "i1"), ("a2", "i2"), ("a2", "i2b")] {
        assert_eq!(c.post("/v1/agents/hello", &hello(agent, inst)).0, 200);
    }
    let page = |q: &str| -> Value {
        let (s, _, body) = c.get(&format!("/v1/status{q}"));
        assert_eq!(s, 200);
        serde_json::from_slice(&body).unwrap()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["agent_id"].as_str().unwrap().to_string())
            .collect()
    };
    let p1 = page("?limit=2");
    assert_eq!(ids(&p1), ["a1", "a2"]);
    assert_eq!(p1["next_after"], "a2");
    assert_eq!(p1["instances_total"], 4);
    assert_eq!(p1["agents"][1]["instances"].as_array().unwrap().len(), 2);
    let p2 = page("?limit=2&after=a2");
    assert_eq!(ids(&p2), ["a3"]);
    assert!(p2.get("next_after").is_none(), "the last page: {p2:#}");
    // no limit: the default page holds all three; a limit of 0 means 1
    assert_eq!(ids(&page("")), ["a1", "a2", "a3"]);
    assert_eq!(ids(&page("?limit=0")), ["a1"]);
}

/// Reads exactly one response from a kept-alive connection (its length
/// says where it ends). Returns (status, lowercase head, body).
fn one_response(s: &mut std::net::TcpStream) -> (u16, String, Vec<u8>) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!("the connection ended inside a head: {other:?} {buf:?}"),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, head, body)
}

fn kept_request(method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
    let b = body.map(|v| serde_json::to_vec(v).unwrap());
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    if let Some(b) = &b {
        r.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend(b.unwrap_or_default());
    out
}

#[test]
fn kept_alive_connections_carry_many_requests_and_idle_ones_are_closed() {
    use std::io::{Read, Write};
    let c = Controller::start(&["--idle-timeout-secs", "2"]);
    let scrape = |c: &Controller| String::from_utf8(c.get("/metrics").2).unwrap();
    let before = scrape(&c);
    let accepted = |m: &str| metric(m, "tapio_controller_connections_accepted_total");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Three requests, one after another, on one connection.
    s.write_all(&kept_request(
        "POST",
        "/v1/agents/hello",
        Some(&hello("a1", "ki1")),
    ))
    .unwrap();
    let (st, head, _) = one_response(&mut s);
    assert_eq!(st, 200);
    assert!(!head.contains("connection: close"), "{head}");
    s.write_all(&kept_request(
        "GET",
        "/v1/agents/config?agent_id=k1&node_name=n",
        None,
    ))
    .unwrap();
    assert_eq!(one_response(&mut s).0, 200);
    s.write_all(&kept_request(
        "POST",
        "/v1/events",
        Some(&batch("ki1", 1, &["ki1-1", "ki1-2"])),
    ))
    .unwrap();
    let (st, _, body) = one_response(&mut s);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    // Two requests in one write (pipelined): two answers, in order.
    let mut two = kept_request("GET", "/healthz", None);
    two.extend(kept_request("GET", "/nope", None));
    s.write_all(&two).unwrap();
    assert_eq!(one_response(&mut s).0, 200);
    assert_eq!(one_response(&mut s).0, 404);
    // A client error on a well-formed request keeps the connection.
    s.write_all(&kept_request("DELETE", "/healthz", None))
        .unwrap();
    assert_eq!(one_response(&mut s).0, 405);
    s.write_all(&kept_request("GET", "/healthz", None)).unwrap();
    assert_eq!(one_response(&mut s).0, 200);
    // Idle past --idle-timeout-secs: the controller closes it.
    let t = std::time::Instant::now();
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).unwrap(), 0, "closed, with nothing sent");
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let after = scrape(&c);
    // Exactly one connection more than the two scrapes: the kept one.
    assert_eq!(accepted(&after) - accepted(&before), 2);
    assert_eq!(
        metric(
            &after,
            "tapio_controller_connections_closed_idle_total{reason=\"idle_timeout\"}"
        ),
        1
    );
    assert_eq!(c.status()["counters"]["events_accepted"], 2);

    // HTTP/1.0 and Connection: close are answered with close, then EOF.
    for req in [
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", c.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let (st, head, _) = one_response(&mut s);
        assert_eq!(st, 200);
        assert!(head.contains("connection: close"), "{head}");
        assert_eq!(s.read(&mut rest).unwrap(), 0);
    }
    // A malformed head is a 400, counted, and the end of the connection.
    let (st, _, body) = raw_http(c.port, b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let m = scrape(&c);
    assert_eq!(
        metric(
            &m,
            "tapio_controller_front_refusals_total{reason=\"malformed\"}"
        ),
        1
    );
    // A new connection that sends no request, or half a head, is closed
    // after the head deadline (--io-timeout-secs) and counted.
    let c = Controller::start(&["--io-timeout-secs", "1"]);
    let before = metric(
        &scrape(&c),
        "tapio_controller_front_refusals_total{reason=\"head_timeout\"}",
    );
    for first in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost"] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", c.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(first).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(s.read(&mut rest).unwrap_or(0), 0);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    let after = metric(
        &scrape(&c),
        "tapio_controller_front_refusals_total{reason=\"head_timeout\"}",
    );
    assert_eq!(after - before, 2);
}

#[test]
fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    use std::io::{Read, Write};
    let c = Controller::start(&["--max-connections", "16"]);
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", c.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // 16 kept-alive connections, each idle after one request, oldest first.
    let mut kept: Vec<_> = (0..16)
        .map(|_| {
            let mut s = connect();
            s.write_all(&kept_request("GET", "/healthz", None)).unwrap();
            assert_eq!(one_response(&mut s).0, 200);
            std::thread::sleep(Duration::from_millis(5));
            s
        })
        .collect();
    // A 17th is served; the one idle the longest (the first) was closed.
    let mut s = connect();
    s.write_all(&kept_request("GET", "/healthz", None)).unwrap();
    assert_eq!(one_response(&mut s).0, 200);
    let mut rest = [0u8; 16];
    assert_eq!(
        kept[0].read(&mut rest).unwrap_or(0),
        0,
        "the oldest is closed"
    );
    kept[1]
        .write_all(&kept_request("GET", "/healthz", None))
        .unwrap();
    assert_eq!(one_response(&mut kept[1]).0, 200, "the others are kept");
    drop(kept.remove(0));
    // Now every connection is inside a request (half a head): none is
    // idle, so a new connection is refused and counted.
    for k in kept.iter_mut().chain(std::iter::once(&mut s)) {
        k.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect();
    let _ = extra.write_all(&kept_request("GET", "/healthz", None));
    assert_eq!(extra.read(&mut rest).unwrap_or(0), 0, "refused");
    // One request finished makes its connection idle again: the scrape
    // below takes its place.
    s.write_all(b"st: x\r\n\r\n").unwrap();
    assert_eq!(one_response(&mut s).0, 200);
    let m = String::from_utf8(c.get("/metrics").2).unwrap();
    assert_eq!(
        s.read(&mut rest).unwrap_or(0),
        0,
        "made room for the scrape"
    );
    assert_eq!(
        metric(
            &m,
            "tapio_controller_connections_closed_idle_total{reason=\"connection_limit\"}"
        ),
        2
    );
    assert_eq!(
        metric(&m, "tapio_controller_front_refusals_total{reason=\"busy\"}"),
        1
    );
}

/// A fleet reconnecting at once meets a controller busy elsewhere: the
/// kernel must hold their connections until it accepts them. With the
/// standard library's backlog of 128, the 130th connect's SYN was dropped
/// and its agent waited a second for TCP to try again (docs/budgets.md).
/// Here the controller is stopped (SIGSTOP), so the kernel's accept queue
/// is the only thing that can take the connects: each must complete.
#[test]
fn a_stalled_controller_holds_a_thousand_connects_in_its_backlog() {
    const N: usize = 1000;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if somaxconn < N {
        skip(
            "controller::backlog",
            &format!("net.core.somaxconn is {somaxconn}, below {N}"),
        );
        return;
    }
    let c = Controller::start(&[]);
    c.signal("STOP");
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], c.port));
    let mut held = Vec::with_capacity(N);
    let mut failed = None;
    for i in 0..N {
        match std::net::TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
            Ok(s) => held.push(s),
            Err(e) => {
                failed = Some(format!("connect {} of {N}: {e}", i + 1));
                break;
            }
        }
    }
    c.signal("CONT");
    assert_eq!(failed, None, "the backlog dropped a connect");
    assert_eq!(held.len(), N);
    // Once it runs again, it serves them.
    drop(held);
    assert_eq!(c.get("/v1/status").0, 200);
}
