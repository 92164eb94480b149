//! The smallest privilege the agent needs, proven on the real kernel: a
//! non-root uid holding exactly CAP_BPF and CAP_PERFMON (what the systemd
//! unit grants) loads every observer and emits evidence, and `check`
//! agrees. Without them, nothing loads.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

const NOBODY: &str = "65534";

/// setpriv to uid 65534 with exactly `caps`, under RLIMIT_MEMLOCK
/// unlimited where this host allows raising it, as the unit's
/// LimitMEMLOCK=infinity does (kernels before 5.11 charge BPF maps to it;
/// later ones do not care).
fn setpriv(caps: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("setpriv");
    // SAFETY: setrlimit is async-signal-safe; a refusal changes nothing.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
            Ok(())
        });
    }
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        &format!("--inh-caps=-all{caps}"),
        &format!("--ambient-caps=-all{caps}"),
        &format!("--bounding-set=-all{caps}"),
    ]);
    c
}

/// A copy of the agent that uid 65534 can run, in a directory it owns.
fn private_copy(tag: &str) -> std::path::PathBuf {
    let dir = tmpdir(tag);
    let bin = dir.join("tapio-agent");
    std::fs::copy(agent_bin(), &bin).unwrap();
    sh(&format!("chown -R {NOBODY}:{NOBODY} {}", dir.display()));
    bin
}

#[test]
fn cap_bpf_and_cap_perfmon_alone_load_every_observer_and_see_events() {
    if !kernel_available("capabilities::minimal") {
        return;
    }
    let bin = private_copy("caps-min");
    let out = setpriv(",+bpf,+perfmon")
        .arg(&bin)
        .arg("check")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("capabilities").as_deref(), Some("pass"), "{v:#}");
    for obs in ["network", "storage", "process"] {
        assert_eq!(
            status(&format!("observer:{obs}")).as_deref(),
            Some("pass"),
            "{v:#}"
        );
    }

    let metrics = bin.with_file_name("tapio.prom");
    let mut child = setpriv(",+bpf,+perfmon")
        .arg(&bin)
        .args(["run", "--metrics-file"])
        .arg(&metrics)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut attached = 0;
    let deadline = Instant::now() + 2 * SLOW_KERNEL_DEADLINE;
    while attached < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("not every observer attached with CAP_BPF+CAP_PERFMON ({attached} did)")
        });
        if line.contains(" attached") && line.contains("observer ") {
            attached += 1;
        }
        assert!(!line.contains(" failed"), "{line}");
    }
    let port = closed_port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let stdout = child.stdout.take().unwrap();
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = etx.send(l);
        }
    });
    let deadline = Instant::now() + SLOW_KERNEL_DEADLINE;
    let seen = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(l) = erx.recv_timeout(left) else {
            break false;
        };
        let v: Value = serde_json::from_str(&l).unwrap_or(Value::Null);
        if v["type"] == "kernel.network.connection_refused"
            && v["facts"]["dst_port"].as_u64() == Some(u64::from(port))
        {
            break true;
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = wait_child(&mut child, "the capability-limited agent");
    assert!(seen, "the refused connect was not reported");
    assert!(st.success(), "clean stop: {st:?}");
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

#[test]
fn without_cap_perfmon_nothing_loads() {
    if !kernel_available("capabilities::insufficient") {
        return;
    }
    let bin = private_copy("caps-bpf-only");
    let out = setpriv(",+bpf").arg(&bin).arg("check").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    for c in v["checks"].as_array().unwrap() {
        if c["name"].as_str().unwrap().starts_with("observer:") || c["name"] == "capabilities" {
            assert_eq!(c["status"], "fail", "{c}");
        }
    }
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}
