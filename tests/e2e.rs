//! End to end: real kernel, agent and controller.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn ids_for_port(events: &[Value], port: u16) -> HashSet<String> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "kernel.network.connection_refused" && e["facts"]["dst_port"] == port
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn refuse(port: u16, n: usize) {
    for _ in 0..n {
        let _ = TcpStream::connect(("127.0.0.1", port));
    }
}

fn wait_until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_dir_events(dir: &std::path::Path) -> Vec<Value> {
    tapio_common::store::read_events(&[dir], None, None)
        .map(|(e, _)| e)
        .unwrap_or_default()
}

#[test]
fn refused_connects_reach_the_export_with_the_local_ids() {
    if !kernel_available("e2e::export") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (c, agent, export, store, _port) = Linked::start("e2e", &[]).into_parts();
    // the agent applies the controller's config and reports its hash
    wait_until(
        "applied config in a heartbeat",
        Duration::from_secs(15),
        || {
            let st = c.status();
            st["agents"][0]["instances"][0]["applied_config_hash"] == st["config"]["config_hash"]
        },
    );
    let port = closed_port();
    const N: usize = 40;
    refuse(port, N);
    wait_until("export", Duration::from_secs(15), || {
        ids_for_port(&read_dir_events(&export), port).len() >= N
    });
    let done = agent.stop();
    let local = ids_for_port(&read_dir_events(&store), port);
    let exported = ids_for_port(&read_dir_events(&export), port);
    assert_eq!(local.len(), N);
    assert_eq!(exported, local, "same ids locally and downstream");
    assert_eq!(
        metric(
            &done.metrics,
            "tapio_sink_dropped_events_total{sink=\"controller\"}"
        ),
        0
    );
    let st = c.status();
    let inst = &st["agents"][0]["instances"][0];
    assert_eq!(inst["config_version"], "1");
    assert_eq!(inst["degraded_reasons"], serde_json::json!([]));
    assert!(
        done.log
            .iter()
            .any(|l| l.contains("applied controller config_version 1"))
    );
}

#[test]
fn a_killed_controller_loses_nothing_uncounted() {
    if !kernel_available("e2e::controller_kill") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (c, agent, export, store, port) = Linked::start("e2e-kill", &[]).into_parts();
    wait_until("hello", Duration::from_secs(10), || {
        c.status()["agents"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    // Three distinct ports, taken at once: one handed out twice would mix
    // the phases' events.
    let [p1, p2, p3] = closed_ports();
    refuse(p1, 30);
    wait_until("first export", Duration::from_secs(10), || {
        ids_for_port(&read_dir_events(&export), p1).len() >= 30
    });
    // The agent keeps its connection: over 3 s of 1 s heartbeats the
    // controller accepts one connection only, the one this scrape opens.
    let scrape = || String::from_utf8(c.get("/metrics").2).unwrap();
    let (m1, t1) = (scrape(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let m2 = scrape();
    let (heartbeats, accepted) = (
        "tapio_controller_requests_total{route=\"heartbeat\",code=\"200\"}",
        "tapio_controller_connections_accepted_total",
    );
    assert!(
        metric(&m2, heartbeats) >= metric(&m1, heartbeats) + 2,
        "heartbeats in {:?}: {} -> {}",
        t1.elapsed(),
        metric(&m1, heartbeats),
        metric(&m2, heartbeats)
    );
    assert_eq!(metric(&m2, accepted), metric(&m1, accepted) + 1);
    // SIGKILL mid-run, events while it is down, then a restart on the same port
    c.signal("KILL");
    std::thread::sleep(Duration::from_millis(300));
    refuse(p2, 30);
    std::thread::sleep(Duration::from_millis(500));
    drop(c);
    let c = Linked::controller_on(port, &export);
    refuse(p3, 30);
    wait_until("re-hello", Duration::from_secs(20), || {
        c.status()["agents"][0]["instances"][0]["last_hello_age_secs"].is_u64()
    });
    wait_until("third export", Duration::from_secs(20), || {
        ids_for_port(&read_dir_events(&export), p3).len() >= 30
    });
    let done = agent.stop();
    // No duplicate ids downstream, across both controller processes.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut lines = 0usize;
    for entry in std::fs::read_dir(&export).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .lines()
        {
            let v: Value = serde_json::from_str(line).unwrap();
            *seen
                .entry(v["id"].as_str().unwrap().to_string())
                .or_default() += 1;
            lines += 1;
        }
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicate ids in the export"
    );
    // Every event the agent emitted is exported or counted as dropped.
    let emitted = metric_sum(&done.metrics, "tapio_events_total");
    let dropped = metric(
        &done.metrics,
        "tapio_sink_dropped_events_total{sink=\"controller\"}",
    );
    let local: HashSet<String> = read_dir_events(&store)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        local.len() as u64,
        emitted,
        "the local store has every emitted event"
    );
    let exported_ours = seen.keys().filter(|id| local.contains(*id)).count() as u64;
    assert_eq!(
        exported_ours as usize, lines,
        "only this agent's events were exported"
    );
    let sent = metric(&done.metrics, "tapio_controller_events_sent_total");
    let unconfirmed = metric(&done.metrics, "tapio_controller_unconfirmed_events_total");
    assert_eq!(
        sent + dropped + unconfirmed,
        emitted,
        "every event is confirmed, dropped or unconfirmed"
    );
    assert!(
        sent <= exported_ours && exported_ours <= sent + unconfirmed,
        "sent {sent} exported {exported_ours} unconfirmed {unconfirmed}"
    );
    // One connection to each controller process; the first one's, found
    // closed at the first request after the kill, was replaced once.
    assert_eq!(
        (
            metric(
                &done.metrics,
                "tapio_controller_connections_total{result=\"opened\"}"
            ),
            metric(
                &done.metrics,
                "tapio_controller_connections_total{result=\"replaced\"}"
            )
        ),
        (2, 1)
    );
    for p in [p1, p3] {
        assert_eq!(ids_for_port(&read_dir_events(&export), p).len(), 30);
    }
    // The restarted controller reports the sequence gap it saw.
    let inst = &c.status()["agents"][0]["instances"][0];
    assert!(inst["sequence_gaps"].as_u64().unwrap() >= 1, "{inst:#}");
}
