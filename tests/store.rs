//! The file store under a full disk: failures counted, fallback used,
//! writing resumed once space is freed, nothing torn, accounting closed.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// Refused-connect events per dst_port in a directory's store files; every
/// line must be whole JSON (a torn line fails the test).
fn stored(dir: &Path) -> HashMap<u64, Vec<String>> {
    let mut out: HashMap<u64, Vec<String>> = HashMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in rd {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("torn line in {}: {e}: {line:?}", path.display()));
            if v["type"] == "kernel.network.connection_refused" {
                out.entry(v["facts"]["dst_port"].as_u64().unwrap())
                    .or_default()
                    .push(v["id"].as_str().unwrap().into());
            }
        }
    }
    out
}

fn refuse(port: u16, n: usize) {
    for _ in 0..n {
        let _ = TcpStream::connect(("127.0.0.1", port));
    }
}

fn wait_emitted(agent: &Agent, at_least: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = agent.metrics_now();
        if !text.is_empty() {
            let a = Accounting::parse(&text, "network");
            if a.emitted >= at_least && a.closes() {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not written in time:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_falls_back_counts_and_recovers() {
    if !kernel_available("store::full_disk") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fs = Tmpfs::mount("full-fs", "256k");
    let fallback = tmpdir("full-fallback");
    // Leave about 16 KiB free: room for a few dozen events, not 300.
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 240 * 1024]).unwrap();
    let args = [
        "--no-stdout",
        "--metrics-interval-secs",
        "1",
        "--data-dir",
        fs.0.to_str().unwrap(),
        "--fallback-dir",
        fallback.to_str().unwrap(),
    ];
    let agent = Agent::start("full", &args);
    let [p1, p2] = closed_ports();
    refuse(p1, 300);
    wait_emitted(&agent, 300);
    let text = agent.metrics_now();
    assert!(
        metric(&text, "tapio_sink_failures_total{sink=\"file\"}") >= 1,
        "{text}"
    );
    let via_fallback = metric(&text, "tapio_sink_fallback_events_total{sink=\"file\"}");
    assert!(via_fallback >= 1);
    // Free the space: the next batches go to the primary path again.
    std::fs::remove_file(&filler).unwrap();
    refuse(p2, 100);
    wait_emitted(&agent, 400);
    let done = agent.stop();
    assert!(done.status.success(), "the agent survived the full disk");
    assert_accounting(&done.metrics, "network");
    assert_eq!(
        metric(
            &done.metrics,
            "tapio_sink_dropped_events_total{sink=\"file\"}"
        ),
        0
    );

    let primary = stored(&fs.0);
    let second = stored(&fallback);
    let ids1: std::collections::HashSet<&String> = primary
        .get(&u64::from(p1))
        .into_iter()
        .flatten()
        .chain(second.get(&u64::from(p1)).into_iter().flatten())
        .collect();
    assert_eq!(
        ids1.len(),
        300,
        "every event of the full phase is in one of the two paths"
    );
    let in_fallback: usize = second.values().map(Vec::len).sum();
    assert_eq!(
        in_fallback as u64,
        metric(
            &done.metrics,
            "tapio_sink_fallback_events_total{sink=\"file\"}"
        )
    );
    assert_eq!(
        primary.get(&u64::from(p2)).map(Vec::len),
        Some(100),
        "writing resumed on the primary path"
    );
    assert_eq!(second.get(&u64::from(p2)), None);
    // The reader merges both paths: every event once, nothing corrupt.
    let (all, st) =
        tapio_common::store::read_events(&[fs.0.as_path(), fallback.as_path()], None, None)
            .unwrap();
    let port_count = |p: u16| all.iter().filter(|v| v["facts"]["dst_port"] == p).count();
    assert_eq!((port_count(p1), port_count(p2)), (300, 100));
    assert_eq!((st.corrupt, st.duplicates), (0, 0));
    let _ = std::fs::remove_dir_all(&fallback);
}

#[test]
fn a_full_disk_without_fallback_counts_every_lost_event() {
    if !kernel_available("store::full_disk_no_fallback") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fs = Tmpfs::mount("full-nofb-fs", "256k");
    std::fs::write(fs.0.join("filler"), vec![0u8; 240 * 1024]).unwrap();
    let args = [
        "--no-stdout",
        "--metrics-interval-secs",
        "1",
        "--data-dir",
        fs.0.to_str().unwrap(),
    ];
    let agent = Agent::start("full-nofb", &args);
    let port = closed_port();
    refuse(port, 300);
    wait_emitted(&agent, 300);
    let done = agent.stop();
    assert!(done.status.success());
    assert_accounting(&done.metrics, "network");
    let dropped = metric(
        &done.metrics,
        "tapio_sink_dropped_events_total{sink=\"file\"}",
    );
    let kept = stored(&fs.0)
        .get(&u64::from(port))
        .map(Vec::len)
        .unwrap_or(0) as u64;
    assert!(dropped >= 1, "the disk was full");
    assert!(kept < 300);
    // Exact over everything the sink was handed (any observer): every
    // emitted event is either a whole line in the store or counted.
    let lines: u64 = std::fs::read_dir(&fs.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count() as u64)
        .sum();
    let emitted = metric_sum(&done.metrics, "tapio_events_total");
    assert_eq!(
        lines + dropped,
        emitted,
        "stored lines + counted drops == emitted"
    );
}
