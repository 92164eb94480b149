//! `tapio-agent check` on this host: every required check passes, nothing
//! stays loaded, and a missing capability or tracepoint is a failure with
//! exit code 1, never a pass.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;

/// `check` loads the observers for a moment: runs of it must not overlap
/// the program count taken by another test.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_check(cmd: &mut Command) -> (i32, Value) {
    let out = cmd.output().expect("run tapio-agent check");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn status_of<'a>(v: &'a Value, name: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}"))["status"]
        .as_str()
        .unwrap()
}

fn tapio_programs_loaded() -> usize {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" name tapio_"))
        .count()
}

/// The kernel frees a closed program asynchronously: programs of an agent
/// a previous test just killed may still be listed for a moment. Waits
/// (bounded) until the count is at most `at_most`, and returns it.
fn settled_programs(at_most: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = tapio_programs_loaded();
        if n <= at_most || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn all_required_checks_pass_here_and_nothing_stays_loaded() {
    if !kernel_available("check::all_pass") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = settled_programs(0);
    let (code, v) = run_check(Command::new(agent_bin()).arg("check"));
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);
    for c in v["checks"].as_array().unwrap() {
        if c["required"] == true {
            assert_eq!(c["status"], "pass", "{c}");
        }
    }
    for name in [
        "kernel_release",
        "btf",
        "bpf_syscall",
        "capabilities",
        "map_type:ringbuf",
        "map_type:hash",
        "map_type:percpu_array",
        "map_type:array",
        "map_type:array_of_maps",
        "prog_type:tracing",
        "tracepoint:network/inet_sock_set_state",
        "tracepoint:storage/block_rq_complete",
        "tracepoint:process/mark_victim",
        "bpffs",
        "tracefs",
        "memlock",
        "observer:network",
        "observer:storage",
        "observer:process",
    ] {
        status_of(&v, name);
    }
    assert_eq!(
        settled_programs(before),
        before,
        "check leaves no program loaded"
    );
    let pinned = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains("tapio"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(pinned, 0, "check pins nothing");
    let human = Command::new(agent_bin())
        .args(["check", "--human"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("result: all required checks pass"));
}

#[test]
fn a_missing_tracepoint_fails_the_check() {
    if !kernel_and_hooks_available("check::missing_tracepoint") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (code, v) = run_check(
        Command::new(agent_bin())
            .arg("check")
            .env("TAPIO_FAULT_INJECT", "check:hide_tracepoint:block_rq_issue"),
    );
    assert_eq!(code, 1);
    assert_eq!(v["ok"], false);
    assert_eq!(status_of(&v, "tracepoint:storage/block_rq_issue"), "fail");
    assert_eq!(
        status_of(&v, "tracepoint:storage/block_rq_complete"),
        "pass"
    );
}

#[test]
fn without_privileges_nothing_is_reported_as_a_pass_it_cannot_be() {
    if !kernel_available("check::unprivileged") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Run as nobody with no capabilities at all.
    let dir = tmpdir("check-unpriv");
    let bin = dir.join("tapio-agent");
    std::fs::copy(agent_bin(), &bin).unwrap();
    let (code, v) = run_check(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(&bin)
            .arg("check"),
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(status_of(&v, "capabilities"), "fail");
    assert_ne!(status_of(&v, "bpf_syscall"), "pass");
    for obs in ["observer:network", "observer:storage", "observer:process"] {
        assert_eq!(status_of(&v, obs), "fail");
    }
    assert_ne!(status_of(&v, "prog_type:tracing"), "pass");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_usage_error_exits_2() {
    let out = Command::new(agent_bin())
        .args(["check", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
