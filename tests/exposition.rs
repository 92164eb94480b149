//! The agent's metrics textfile against the real Prometheus parser:
//! `promtool check metrics` (Debian package `prometheus`) on the file a
//! real agent run wrote, after a real event.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn promtool_accepts_the_textfile_of_a_real_run() {
    if !kernel_available("exposition::promtool") {
        return;
    }
    if Command::new("promtool").arg("--version").output().is_err() {
        skip(
            "exposition::promtool",
            "promtool not installed (Debian package prometheus; make setup installs it)",
        );
        return;
    }
    let agent = Agent::start("exposition", &[]);
    agent.wait_log("observer network attached", Duration::from_secs(30));
    let port = closed_port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    agent.wait_events(Duration::from_secs(10), |ev| {
        !by_type(ev, "kernel.network.connection_refused").is_empty()
    });
    // The textfile is rewritten periodically: wait for the event in it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let t = agent.metrics_now();
        let key =
            "tapio_events_total{observer=\"network\",type=\"kernel.network.connection_refused\"}";
        if !t.is_empty() && metric(&t, key) >= 1 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the event:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let done = agent.stop();
    for t in [&text, &done.metrics] {
        if let Some(Err(e)) = promtool_check(t) {
            panic!("promtool rejected the textfile:\n{e}\n---\n{t}");
        }
    }
    assert!(done.metrics.contains("# HELP tapio_events_total "));
    assert!(done.metrics.contains("tapio_build_info{version=\""));
    // Every loaded program's recursion misses are exported: one of each
    // pair (with owner slots or without, by kernel).
    for p in [
        "tapio_inet_sock_set_state",
        "tapio_tcp_receive_reset",
        "tapio_tcp_retransmit_skb",
    ] {
        let prefixes = [
            format!("tapio_kernel_recursion_misses_total{{observer=\"network\",program=\"{p}\"}} "),
            format!(
                "tapio_kernel_recursion_misses_total{{observer=\"network\",program=\"{p}_slots\"}} "
            ),
        ];
        assert_eq!(
            done.metrics
                .lines()
                .filter(|l| prefixes.iter().any(|x| l.starts_with(x.as_str())))
                .count(),
            1,
            "{p}:\n{}",
            done.metrics
        );
    }
}
