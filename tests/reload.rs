//! SIGHUP (what `systemctl reload tapio-agent` sends) re-reads --config: a
//! valid file becomes the next kernel config generation; a bad one is
//! rejected, counted and logged, and the old config stays.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::time::{Duration, Instant};

fn wait_metric(agent: &Agent, key: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics_now();
        if !m.is_empty() && metric(&m, key) == want {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never became {want}:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_a_bad_file() {
    if !kernel_available("reload::sighup") {
        return;
    }
    let dir = tmpdir("reload-cfg");
    let path = dir.join("agent.json");
    let mut cfg = tapio_wire::CompiledConfig::standalone_default();
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let agent = Agent::start(
        "reload",
        &[
            "--config",
            path.to_str().unwrap(),
            "--metrics-interval-secs",
            "1",
        ],
    );
    wait_metric(&agent, "tapio_config_generation", 1);
    const KERNEL: &str = "tapio_kernel_events_total{observer=\"network\"}";
    // The oracle works: under generation 1 a refused connect is a record
    // the network program tried to emit.
    let before = metric(&agent.metrics_now(), KERNEL);
    let _ = std::net::TcpStream::connect(("127.0.0.1", closed_port()));
    agent.wait_metric_at_least(KERNEL, before + 1, Duration::from_secs(10));

    // valid: the network observer switched off, generation 2
    cfg.network.enabled = false;
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    agent.signal("HUP");
    wait_metric(&agent, "tapio_config_generation", 2);
    wait_metric(&agent, "tapio_config_reloads_total{result=\"ok\"}", 1);
    // Switched off in the kernel, not filtered in user space: the
    // programs' own attempt counter stands still (whatever else the host
    // does, a switched-off program tries nothing).
    std::thread::sleep(Duration::from_millis(1500));
    let off = metric(&agent.metrics_now(), KERNEL);
    let port = closed_port();
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        metric(&agent.metrics_now(), KERNEL),
        off,
        "the network programs tried no record under generation 2"
    );

    // invalid: rejected, counted, generation stays 2
    std::fs::write(&path, b"{\"profile\": 7}").unwrap();
    agent.signal("HUP");
    wait_metric(&agent, "tapio_config_reloads_total{result=\"failed\"}", 1);
    wait_metric(&agent, "tapio_config_generation", 2);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    std::thread::sleep(Duration::from_millis(500));
    let done = agent.stop();
    assert!(
        done.log
            .iter()
            .any(|l| l.contains("SIGHUP: applied") && l.contains("generation 2"))
    );
    assert!(
        done.log
            .iter()
            .any(|l| l.contains("SIGHUP: rejected new config, keeping generation 2"))
    );
    let ours = done
        .events
        .iter()
        .filter(|e| e["facts"]["dst_port"] == port)
        .count();
    assert_eq!(
        ours, 0,
        "the kernel stopped emitting network facts under generation 2"
    );
}
