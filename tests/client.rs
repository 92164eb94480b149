//! The agent's controller client against misbehaving servers: redirects
//! are not followed, slow answers hit the timeouts, 500s back off, cut
//! responses are failures, https is refused, and the token never leaks.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// A test server: answers every connection with `reply` (after reading the
/// request head), counting requests and recording their heads.
struct Fake {
    port: u16,
    hits: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    fn start(reply: fn(&mut std::net::TcpStream)) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, hd, st) = (Arc::clone(&hits), Arc::clone(&heads), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = Vec::new();
                        let mut b = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut b) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&b[..n]),
                            }
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        hd.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf).into_owned());
                        std::thread::spawn(move || reply(&mut s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fake {
            port,
            hits,
            heads,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn agent_against(name: &str, url: &str, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--no-stdout",
        "--metrics-interval-secs",
        "1",
        "--controller",
        url,
        "--controller-timeout-ms",
        "700",
    ];
    args.extend_from_slice(extra);
    Agent::start(name, &args)
}

#[test]
fn an_https_controller_is_refused_at_start() {
    let out = std::process::Command::new(agent_bin())
        .args(["run", "--controller", "https://controller.example:7070"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("https is not supported") && err.contains("never downgraded"),
        "{err}"
    );
}

#[test]
fn redirects_are_not_followed() {
    if !kernel_available("client::redirect") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let target = Fake::start(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    });
    // The redirect target's port is baked into the reply through a static.
    static TARGET: AtomicUsize = AtomicUsize::new(0);
    TARGET.store(usize::from(target.port), Ordering::SeqCst);
    let redirector = Fake::start(|s| {
        // alternate 301 and 302
        static N: AtomicUsize = AtomicUsize::new(0);
        let status = if N.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            "301 Moved Permanently"
        } else {
            "302 Found"
        };
        let loc = format!(
            "HTTP/1.1 {status}\r\nLocation: http://127.0.0.1:{}/v1/agents/hello\r\nContent-Length: 0\r\n\r\n",
            TARGET.load(Ordering::SeqCst)
        );
        let _ = s.write_all(loc.as_bytes());
    });
    let agent = agent_against("redirect", &redirector.url(), &[]);
    agent.wait_metric_at_least(
        "tapio_controller_send_failures_total{kind=\"redirect\"}",
        2,
        Duration::from_secs(10),
    );
    drop(agent.stop());
    assert!(redirector.hits.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "the Location was never visited"
    );
}

#[test]
fn slow_answers_hit_the_timeout_and_cut_answers_are_failures() {
    if !kernel_available("client::timeouts") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let slow = Fake::start(|s| {
        std::thread::sleep(Duration::from_secs(5));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    });
    let agent = agent_against("slow", &slow.url(), &[]);
    agent.wait_metric_at_least(
        "tapio_controller_send_failures_total{kind=\"timeout\"}",
        1,
        Duration::from_secs(5),
    );
    // The client's timeout fired before the server's 5 s answer: a timeout
    // was counted, and nothing was confirmed as sent. (How long it took is
    // a benchmark figure, not a gate.)
    assert_eq!(
        metric(&agent.metrics_now(), "tapio_controller_events_sent_total"),
        0
    );
    drop(agent.stop());

    let cut = Fake::start(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"wire_");
    });
    let agent = agent_against("cut", &cut.url(), &[]);
    agent.wait_metric_at_least(
        "tapio_controller_send_failures_total{kind=\"io\"}",
        1,
        Duration::from_secs(5),
    );
    let done = agent.stop();
    assert!(done.status.success(), "the agent survived");
}

#[test]
fn server_errors_back_off_and_the_token_never_leaks() {
    if !kernel_available("client::backoff_token") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let failing = Fake::start(|s| {
        let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
    });
    let dir = tmpdir("client-token");
    let tf = dir.join("token");
    let secret = "tk-9f8e7d6c5b4a";
    std::fs::write(&tf, format!("{secret}\n")).unwrap();
    let agent = agent_against(
        "backoff",
        &failing.url(),
        &["--token-file", tf.to_str().unwrap(), "--log-level", "debug"],
    );
    std::thread::sleep(Duration::from_secs(5));
    let hits = failing.hits.load(Ordering::SeqCst);
    let done = agent.stop();
    // 200 ms doubling with jitter (max 10 s): about 5 attempts in 5 s.
    // Backoff bounds the attempts; without it there would be dozens or
    // hundreds. Generous, so a busy machine cannot fail it.
    assert!((2..=15).contains(&hits), "{hits} requests in 5 s");
    assert!(
        metric(
            &done.metrics,
            "tapio_controller_send_failures_total{kind=\"http_status\"}"
        ) >= 3
    );
    // the token went to the server, and nowhere else
    assert!(
        failing
            .heads
            .lock()
            .unwrap()
            .iter()
            .all(|h| h.contains(&format!("Authorization: Bearer {secret}")))
    );
    assert!(
        done.log.iter().all(|l| !l.contains(secret)),
        "token in the log"
    );
    assert!(!done.metrics.contains(secret));
    assert!(
        done.log
            .iter()
            .any(|l| l.contains("DEBUG") || l.contains("INFO")),
        "debug logging was on"
    );
}
