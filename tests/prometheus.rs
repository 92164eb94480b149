//! The real pipeline: the agent's textfile read by node_exporter's textfile
//! collector, node_exporter and the controller scraped by a real
//! Prometheus server, and the agent's values read back through
//! Prometheus' HTTP API. Everything binds to 127.0.0.1 and is stopped by
//! the test, each wait with a deadline.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command) -> Guard {
    Guard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
    )
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant query, once Prometheus has one.
fn query(port: u16, q: &str) -> Option<f64> {
    let (s, _, body) = raw_http(
        port,
        &request(
            "GET",
            &format!("/api/v1/query?query={}", encode(q)),
            &[],
            None,
        ),
    );
    if s != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

fn query_until(port: u16, q: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = query(port, q);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus: {q} = {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_scrapes_the_agent_through_node_exporter_and_the_controller() {
    if !kernel_available("prometheus::pipeline") {
        return;
    }
    for tool in ["prometheus", "prometheus-node-exporter"] {
        if Command::new(tool).arg("--version").output().is_err() {
            skip(
                "prometheus::pipeline",
                &format!(
                    "{tool} not installed (Debian packages prometheus, prometheus-node-exporter)"
                ),
            );
            return;
        }
    }
    // The agent: one refused connect, then stopped so its textfile is final.
    let agent = Agent::start("prom-pipeline", &[]);
    agent.wait_log("observer network attached", Duration::from_secs(30));
    let port = closed_port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    agent.wait_events(Duration::from_secs(10), |ev| {
        !by_type(ev, "kernel.network.connection_refused").is_empty()
    });
    let textfile_dir = agent.dir.clone();
    let done = agent.stop();
    let refused = metric(
        &done.metrics,
        "tapio_events_total{observer=\"network\",type=\"kernel.network.connection_refused\"}",
    );
    assert!(refused >= 1);
    let lost = metric(
        &done.metrics,
        "tapio_ringbuf_lost_total{observer=\"network\"}",
    );
    let queue = metric(
        &done.metrics,
        "tapio_queue_drops_total{observer=\"network\"}",
    );
    let kernel = metric(
        &done.metrics,
        "tapio_kernel_events_total{observer=\"network\"}",
    );

    let ctl = Controller::start(&[]);
    let ne_port = free_port();
    let _ne = start(Command::new("prometheus-node-exporter").args([
        format!("--web.listen-address=127.0.0.1:{ne_port}"),
        "--collector.disable-defaults".into(),
        "--collector.textfile".into(),
        format!("--collector.textfile.directory={}", textfile_dir.display()),
    ]));
    wait_listening(ne_port, "node_exporter");

    let prom_dir = tmpdir("prometheus");
    let prom_port = free_port();
    let cfg = prom_dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{ne_port}']\n  - job_name: tapio-controller\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            ctl.port
        ),
    )
    .unwrap();
    let _prom = start(Command::new("prometheus").args([
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", prom_dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{prom_port}"),
    ]));
    wait_listening(prom_port, "prometheus");

    // Both targets up; node_exporter parsed the textfile without error.
    query_until(prom_port, "up{job=\"node\"}", 1.0);
    query_until(prom_port, "up{job=\"tapio-controller\"}", 1.0);
    query_until(prom_port, "node_textfile_scrape_error", 0.0);
    // The agent's own values, through node_exporter and Prometheus.
    query_until(
        prom_port,
        "tapio_events_total{type=\"kernel.network.connection_refused\"}",
        refused as f64,
    );
    query_until(
        prom_port,
        "tapio_kernel_events_total{observer=\"network\"}",
        kernel as f64,
    );
    query_until(
        prom_port,
        "tapio_ringbuf_lost_total{observer=\"network\"}",
        lost as f64,
    );
    query_until(
        prom_port,
        "tapio_queue_drops_total{observer=\"network\"}",
        queue as f64,
    );
    query_until(prom_port, "count(tapio_build_info{job=\"node\"})", 1.0);
    // The controller's own metrics arrived too.
    query_until(
        prom_port,
        "count(tapio_controller_build_info{job=\"tapio-controller\"})",
        1.0,
    );
    let _ = std::fs::remove_dir_all(&prom_dir);
}
