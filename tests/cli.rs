//! The `tapio` CLI over a store written the way the agent writes it.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tapio_common::store::{Part, path};
use tapio_common::time::{hour_of, now_unix_ns, rfc3339_ns};

fn ev(id: &str, ts: u64, ty: &str, facts: Value) -> String {
    let observer = ty.split('.').nth(1).unwrap();
    json!({"id": id, "type": ty, "observer": observer, "severity": "warning", "timestamp": rfc3339_ns(ts),
           "config_generation": 1, "facts": facts})
    .to_string()
        + "\n"
}

fn net(id: &str, ts: u64, port: u16, pid: u32) -> String {
    ev(
        id,
        ts,
        "kernel.network.connection_refused",
        json!({"family": "ipv4", "src_ip": "127.0.0.1", "src_port": 40000,
        "dst_ip": "10.0.0.9", "dst_port": port, "pid": pid, "comm": "curl"}),
    )
}

fn tapio(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("tapio")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Two hours of events: primary, late and fallback files, a duplicate and
/// a corrupt line.
fn store(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tmpdir(&format!("cli-store-{tag}"));
    let fb = tmpdir(&format!("cli-fallback-{tag}"));
    let now = now_unix_ns();
    let h = hour_of(now);
    let t0 = h * 3_600_000_000_000 + 1_000_000_000; // this hour
    let t1 = t0 - 3_600_000_000_000; // previous hour
    std::fs::write(
        path(&dir, h - 1, Part::Primary),
        net("i-1", t1, 80, 11) + &net("i-2", t1 + 1, 443, 12) + "{torn line\n",
    )
    .unwrap();
    std::fs::write(
        path(&dir, h - 1, Part::Late),
        ev(
            "i-3",
            t1 + 2,
            "kernel.process.abnormal_exit",
            json!({"pid": 13, "comm": "java", "cgroup_id": 1, "exit_code": 3, "signal": 0}),
        ),
    )
    .unwrap();
    std::fs::write(
        path(&dir, h, Part::Primary),
        net("i-4", t0, 443, 14)
            + &ev("i-5", t0 + 1, "kernel.storage.slow_io", json!({"dev_major": 7, "dev_minor": 0, "sector": 8, "bytes": 4096, "op": "write", "latency_ns": 250_000_000u64})),
    )
    .unwrap();
    std::fs::write(
        path(&fb, h, Part::Primary),
        net("i-6", t0 + 2, 443, 15) + &net("i-4", t0, 443, 14),
    )
    .unwrap();
    (dir, fb)
}

#[test]
fn events_merge_filter_and_format() {
    let (dir, fb) = store("events");
    let (d, f) = (dir.to_str().unwrap(), fb.to_str().unwrap());
    let (code, out, err) = tapio(&["events", "--data-dir", d, "--fallback-dir", f, "--json"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        ["i-1", "i-2", "i-3", "i-4", "i-5", "i-6"],
        "merged, de-duplicated, in time order"
    );
    assert!(err.contains("skipped 1 corrupt line"), "{err}");
    let (_, out, _) = tapio(&[
        "events",
        "--data-dir",
        d,
        "--fallback-dir",
        f,
        "--port",
        "443",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 3);
    let (_, out, _) = tapio(&[
        "events",
        "--data-dir",
        d,
        "--type",
        "abnormal_exit",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 1);
    let (_, out, _) = tapio(&["events", "--data-dir", d, "--observer", "storage", "--json"]);
    assert!(out.contains("\"i-5\""));
    let (_, out, _) = tapio(&["events", "--data-dir", d, "--pid", "12", "--json"]);
    assert_eq!(out.lines().count(), 1);
    let (_, out, _) = tapio(&[
        "events",
        "--data-dir",
        d,
        "--fallback-dir",
        f,
        "--limit",
        "2",
        "--json",
    ]);
    assert!(out.contains("\"i-5\"") && out.contains("\"i-6\"") && out.lines().count() == 2);
    let (_, out, _) = tapio(&["events", "--data-dir", d, "--since", "30m", "--json"]);
    assert!(
        !out.contains("\"i-1\""),
        "the previous hour is out of a 30 minute window: {out}"
    );
    // the table
    let (_, out, _) = tapio(&["events", "--data-dir", d]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("TYPE") && lines[0].contains("FACTS")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("network.connection_refused")
                && l.contains("127.0.0.1:40000 -> 10.0.0.9:80")
                && l.contains("pid=11"))
    );
    assert!(lines.iter().any(|l| l.contains("storage.slow_io")
        && l.contains("dev 7:0 write 4096B")
        && l.contains("250.00ms")));
    let col = lines[0].find("TYPE").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[col..].starts_with(|c: char| c.is_ascii_alphabetic())),
        "aligned columns"
    );
}

#[test]
fn summary_counts_and_tops() {
    let (dir, fb) = store("summary");
    let (code, out, _) = tapio(&[
        "summary",
        "--data-dir",
        dir.to_str().unwrap(),
        "--fallback-dir",
        fb.to_str().unwrap(),
        "--since",
        "3h",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("6 events since 3h"), "{out}");
    let out: String = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect();
    assert!(out.contains("\n4 network.connection_refused\n"), "{out}");
    assert!(out.contains("\n3 10.0.0.9:443\n"), "{out}");
    assert!(out.contains("\n1 7:0\n"), "{out}");
    assert!(out.contains("\n1 java\n"), "{out}");
}

#[test]
fn missing_data_dir_and_metrics_file_are_clear_errors() {
    let (code, _, err) = tapio(&["events", "--data-dir", "/nonexistent/tapio"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read the data directory /nonexistent/tapio")
            && err.contains("--data-dir"),
        "{err}"
    );
    let (code, _, err) = tapio(&["metrics", "--metrics-file", "/nonexistent/t.prom"]);
    assert_eq!(code, 1);
    assert!(err.contains("--metrics-file"), "{err}");
}

#[test]
fn metrics_group_and_explain_losses() {
    let dir = tmpdir("cli-metrics");
    let p = dir.join("tapio.prom");
    std::fs::write(&p, "tapio_kernel_events_total{observer=\"network\"} 10\ntapio_ringbuf_lost_total{observer=\"network\"} 2\ntapio_queue_drops_total{observer=\"network\"} 0\ntapio_observer_up{observer=\"network\"} 1\n").unwrap();
    let (code, out, _) = tapio(&["metrics", "--metrics-file", p.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("evidence pipeline")
            && out.contains("tapio_kernel_events_total{observer=\"network\"} 10")
    );
    assert!(out.contains("! tapio_ringbuf_lost_total{observer=\"network\"} = 2"));
    assert!(!out.contains("! tapio_queue_drops_total"));
}

#[test]
fn tail_follows_new_lines_across_an_hour_rollover() {
    let dir = tmpdir("cli-tail");
    let now = now_unix_ns();
    let h = hour_of(now);
    std::fs::write(path(&dir, h, Part::Primary), net("old", now, 1, 1)).unwrap();
    let child = Command::new(bin("tapio"))
        .args([
            "tail",
            "--data-dir",
            dir.to_str().unwrap(),
            "--json",
            "--poll-ms",
            "50",
            "--for-secs",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let append = |p: &Path, s: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    };
    // a line written in two parts, then the next hour's file
    let line = net("new-1", now, 2, 2);
    let (a, b) = line.split_at(20);
    append(&path(&dir, h, Part::Primary), a);
    std::thread::sleep(Duration::from_millis(200));
    append(&path(&dir, h, Part::Primary), b);
    append(
        &path(&dir, h + 1, Part::Primary),
        &net("new-2", now + 3_600_000_000_000, 3, 3),
    );
    append(
        &path(&dir, h - 1, Part::Late),
        &net("late-1", now - 3_600_000_000_000, 4, 4),
    );
    let out = child.wait_with_output().unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(!ids.contains(&"old".to_string()), "only new events");
    for want in ["new-1", "new-2", "late-1"] {
        assert_eq!(
            ids.iter().filter(|i| *i == want).count(),
            1,
            "{want} in {ids:?}"
        );
    }
}

#[test]
fn metrics_check_fails_on_any_loss_and_passes_when_clean() {
    let dir = tmpdir("cli-metrics-check");
    let lossy = dir.join("lossy.prom");
    std::fs::write(&lossy, "tapio_ringbuf_lost_total{observer=\"network\"} 2\ntapio_observer_up{observer=\"network\"} 1\n").unwrap();
    let clean = dir.join("clean.prom");
    std::fs::write(&clean, "# HELP tapio_ringbuf_lost_total x\n# TYPE tapio_ringbuf_lost_total counter\ntapio_ringbuf_lost_total{observer=\"network\"} 0\n").unwrap();
    let (code, _, err) = tapio(&[
        "metrics",
        "--check",
        "--metrics-file",
        lossy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 loss counter"), "{err}");
    let (code, out, _) = tapio(&[
        "metrics",
        "--check",
        "--metrics-file",
        clean.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("no losses"));
    // Without --check a loss is shown, not an error.
    assert_eq!(
        tapio(&["metrics", "--metrics-file", lossy.to_str().unwrap()]).0,
        0
    );
}

#[test]
fn unknown_filter_values_are_usage_errors_listing_the_valid_ones() {
    let (dir, _) = store("usage");
    let d = dir.to_str().unwrap();
    let (code, out, err) = tapio(&["events", "--data-dir", d, "--observer", "netwrk"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("network, storage, process"), "{err}");
    let (code, _, err) = tapio(&["events", "--data-dir", d, "--type", "bogus"]);
    assert_eq!(code, 2);
    assert!(err.contains("kernel.network.connection_refused"), "{err}");
    let (code, _, _) = tapio(&["events", "--data-dir", d, "--since", "yesterday"]);
    assert_eq!(code, 2);
    // A runtime failure stays 1.
    assert_eq!(tapio(&["events", "--data-dir", "/nonexistent/tapio"]).0, 1);
}

#[test]
fn a_closed_pipe_ends_quietly_with_0() {
    let dir = tmpdir("cli-pipe");
    let h = hour_of(now_unix_ns());
    let t0 = h * 3_600_000_000_000 + 1_000_000_000;
    let mut lines = String::new();
    for i in 0..20_000u32 {
        lines += &net(&format!("p-{i}"), t0 + u64::from(i), 80, i);
    }
    std::fs::write(path(&dir, h, Part::Primary), lines).unwrap();
    let mut child = Command::new(bin("tapio"))
        .args(["events", "--json", "--data-dir", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close our end: `tapio events | head -1`.
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        assert!(first.contains("p-0"));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn control_characters_in_facts_never_reach_the_terminal() {
    let dir = tmpdir("cli-escape");
    let h = hour_of(now_unix_ns());
    let t0 = h * 3_600_000_000_000 + 1_000_000_000;
    std::fs::write(
        path(&dir, h, Part::Primary),
        ev(
            "x-1",
            t0,
            "kernel.process.exec",
            json!({"pid": 1, "comm": "ev\u{1b}[2Jil", "cgroup_id": 1, "filename": "/tmp/a\rb\u{7}"}),
        ),
    )
    .unwrap();
    for cmd in ["events", "tail"] {
        let mut args = vec![cmd, "--data-dir", dir.to_str().unwrap()];
        if cmd == "tail" {
            args.extend(["--lines", "1", "--for-secs", "1"]);
        }
        let (code, out, _) = tapio(&args);
        assert_eq!(code, 0);
        assert!(
            !out.bytes().any(|b| b == 0x1b || b == b'\r' || b == 0x07),
            "{cmd}: raw control bytes in {out:?}"
        );
        assert!(out.contains("ev\\u{1b}[2Jil"), "{cmd}: {out}");
        assert!(out.contains("/tmp/a\\rb\\u{7}"), "{cmd}: {out}");
    }
}
