//! Real-kernel tests of the network observer: the built agent as a
//! process, real TCP traffic, exact counts. They run as root on a kernel
//! with BTF and skip loudly elsewhere.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

/// One kernel test at a time: they share the machine's two CPUs.
static SERIAL: Mutex<()> = Mutex::new(());

fn port_of(e: &Value, key: &str) -> u64 {
    e["facts"][key].as_u64().unwrap_or(0)
}

fn thread_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .unwrap()
        .trim()
        .to_string()
}

/// Connects `n` times to `host`:`port`, where nothing listens, and stops
/// the agent once it has seen the `n` refusals (and a little longer, to
/// catch any extra event). Returns the stopped agent and every event to
/// that destination port.
fn refuse(agent: Agent, host: &str, port: u16, n: usize) -> (Finished, Vec<Value>) {
    for _ in 0..n {
        let e = TcpStream::connect((host, port)).expect_err("nothing listens");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    stop_after_refusals(agent, port, n)
}

/// Stops the agent once it has seen `n` refusals to `port` (and a little
/// longer, to catch any extra event). Returns the stopped agent and every
/// event to that destination port.
fn stop_after_refusals(agent: Agent, port: u16, n: usize) -> (Finished, Vec<Value>) {
    agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
        by_type(ev, "kernel.network.connection_refused")
            .iter()
            .filter(|e| port_of(e, "dst_port") == u64::from(port))
            .count()
            >= n
    });
    std::thread::sleep(Duration::from_millis(300));
    let done = agent.stop();
    assert!(
        done.status.success(),
        "exit: {:?}\n{}",
        done.status,
        done.log.join("\n")
    );
    let ours = done
        .events
        .iter()
        .filter(|e| port_of(e, "dst_port") == u64::from(port))
        .cloned()
        .collect();
    (done, ours)
}

#[test]
fn refused_connects_are_exactly_one_event_each_with_the_owner() {
    if !kernel_available("network::refused") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start("refused", &[]);
    let port = closed_port();
    const N: usize = 25;
    let comm = thread_comm();
    let (done, ours) = refuse(agent, "127.0.0.1", port, N);
    let refused = by_type(&done.events, "kernel.network.connection_refused")
        .into_iter()
        .filter(|e| port_of(e, "dst_port") == u64::from(port))
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), N, "refused events for port {port}");
    assert_eq!(
        ours.len(),
        N,
        "no other event (timeout, reset) for port {port}: {ours:#?}"
    );
    let mut ids = std::collections::HashSet::new();
    for e in &refused {
        let f = &e["facts"];
        assert_eq!(f["family"], "ipv4");
        assert_eq!(f["dst_ip"], "127.0.0.1");
        assert_eq!(f["src_ip"], "127.0.0.1");
        assert_ne!(f["src_port"], 0);
        assert_eq!(
            f["pid"].as_u64(),
            Some(u64::from(std::process::id())),
            "pid is the connecting process"
        );
        assert_eq!(
            f["comm"].as_str(),
            Some(comm.as_str()),
            "comm is the connecting thread"
        );
        assert!(f["cgroup_id"].as_u64().unwrap_or(0) > 0);
        assert_eq!(e["severity"], "warning");
        assert_eq!(e["config_generation"], 1);
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_string()),
            "ids are unique"
        );
    }
    assert_accounting(&done.metrics, "network");
}

#[test]
fn refused_ipv6_connects_carry_both_addresses() {
    if !kernel_available("network::refused_ipv6") {
        return;
    }
    // The port is one nothing listens on over IPv6 loopback.
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED network::refused_ipv6: this host has no IPv6 loopback");
        return;
    };
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start("refused6", &[]);
    const N: usize = 5;
    let (done, ours) = refuse(agent, "::1", port, N);
    assert_eq!(ours.len(), N, "exactly the refused connects: {ours:#?}");
    for e in &ours {
        assert_eq!(e["type"], "kernel.network.connection_refused");
        let f = &e["facts"];
        assert_eq!(f["family"], "ipv6");
        assert_eq!(f["dst_ip"], "::1");
        assert_eq!(f["src_ip"], "::1");
        assert_ne!(f["src_port"], 0);
        assert_eq!(f["pid"].as_u64(), Some(u64::from(std::process::id())));
    }
    assert_accounting(&done.metrics, "network");
}

/// The kernel release as (major, minor), for an expectation only: the
/// agent itself never reads it.
fn kernel_release() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn the_owner_table_is_the_one_the_verifier_allows() {
    if !kernel_available("network::owner_table") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start("owner-table", &[]);
    // BPF atomics (compare-and-swap) came with Linux 5.12.
    let atomics = kernel_release() >= (5, 12);
    agent.wait_log(
        if atomics {
            "BPF atomics: socket owners in lock-free slots"
        } else {
            "no BPF atomics: socket owners in a hash"
        },
        SLOW_KERNEL_DEADLINE,
    );
    let done = agent.stop();
    assert!(done.status.success());
    let metrics = &done.metrics;
    // The loaded programs are the matching kind, all three of them.
    for prog in [
        "tapio_inet_sock_set_state",
        "tapio_tcp_receive_reset",
        "tapio_tcp_retransmit_skb",
    ] {
        let with_slots = format!("program=\"{prog}_slots\"");
        let without = format!("program=\"{prog}\"");
        assert_eq!(
            metrics.contains(&with_slots),
            atomics,
            "{prog}: slots variant loaded?\n{metrics}"
        );
        assert_eq!(
            metrics.contains(&without),
            !atomics,
            "{prog}: hash variant loaded?\n{metrics}"
        );
    }
}

#[test]
fn a_failed_load_of_the_slot_programs_falls_back_to_the_hash() {
    if !kernel_and_hooks_available("network::slots_fail") {
        return;
    }
    if kernel_release() < (5, 12) {
        eprintln!("network::slots_fail: no BPF atomics here, the hash programs load first anyway");
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start_with_env(
        "slots-fail",
        &[],
        &[("TAPIO_FAULT_INJECT", "network:slots_fail")],
    );
    let port = closed_port();
    const N: usize = 5;
    let (done, ours) = refuse(agent, "127.0.0.1", port, N);
    assert_eq!(ours.len(), N, "exactly the refused connects: {ours:#?}");
    for e in &ours {
        assert_eq!(e["type"], "kernel.network.connection_refused");
        assert_eq!(
            e["facts"]["pid"].as_u64(),
            Some(u64::from(std::process::id()))
        );
    }
    assert!(
        done.metrics
            .contains("program=\"tapio_inet_sock_set_state\"")
            && !done.metrics.contains("_slots\""),
        "the hash programs are loaded:\n{}",
        done.metrics
    );
    if kernel_release() >= (5, 12) {
        assert!(
            done.log
                .iter()
                .any(|l| l.contains("did not load") && l.contains("loading the ones with the hash")),
            "the fallback is logged:\n{}",
            done.log.join("\n")
        );
    }
    assert_accounting(&done.metrics, "network");
}

#[test]
fn owners_stay_exact_when_sockets_share_a_slot() {
    if !kernel_and_hooks_available("network::slot_collide") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Every socket hashes to one of two slots: concurrent connects find
    // theirs taken and keep their owner in the hash instead.
    let agent = Agent::start_with_env(
        "slot-collide",
        &[],
        &[("TAPIO_FAULT_INJECT", "network:slot_collide")],
    );
    const THREADS: usize = 4;
    const EACH: usize = 200;
    let ports: [u16; THREADS] = closed_ports();
    let workers: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            std::thread::Builder::new()
                .name(format!("slot-{i}"))
                .spawn(move || {
                    let mut refused = 0;
                    for _ in 0..EACH {
                        if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
                            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                refused += 1;
                            }
                        }
                    }
                    refused
                })
                .expect("spawn")
        })
        .collect();
    let refused: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(refused, THREADS * EACH, "every connect was refused");
    agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
        by_type(ev, "kernel.network.connection_refused")
            .iter()
            .filter(|e| ports.contains(&(port_of(e, "dst_port") as u16)))
            .count()
            >= THREADS * EACH
    });
    std::thread::sleep(Duration::from_millis(300));
    let done = agent.stop();
    assert!(done.status.success());
    for (i, &port) in ports.iter().enumerate() {
        let ours: Vec<&Value> = done
            .events
            .iter()
            .filter(|e| port_of(e, "dst_port") == u64::from(port))
            .collect();
        assert_eq!(ours.len(), EACH, "thread {i}: one event per connect");
        for e in ours {
            assert_eq!(e["type"], "kernel.network.connection_refused");
            // Each thread connects to its own port: an owner taken from
            // another socket's state would name another thread.
            assert_eq!(e["facts"]["comm"], format!("slot-{i}"), "{e}");
            assert_eq!(
                e["facts"]["pid"].as_u64(),
                Some(u64::from(std::process::id()))
            );
        }
    }
    assert_accounting(&done.metrics, "network");
}

/// A reset the reset program does not see (the kernel skips a program run
/// that would nest in a run of the same program on that CPU: a recursion
/// miss) leaves a refused connect looking like one refused by an ICMP port
/// unreachable, with the same errno. The state-change program tells them
/// apart by the segment the reset was: such a connect is counted as
/// unclassified, never reported as unreachable (nor as refused). The hook
/// makes the reset program ignore every reset of a connecting socket.
#[test]
fn a_reset_the_reset_program_missed_is_counted_never_called_unreachable() {
    if !kernel_and_hooks_available("network::reset_unseen") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = NetNs::new("unseen");
    let port = 9931;
    let (rsts_before, fails_before) = (
        netns_counter(&ns.name, "/proc/net/snmp", "Tcp:", "OutRsts"),
        netns_counter(&ns.name, "/proc/net/snmp", "Tcp:", "AttemptFails"),
    );
    let agent = Agent::start_with_env(
        "reset-unseen",
        &[],
        &[("TAPIO_FAULT_INJECT", "network:reset_unseen")],
    );
    const N: u64 = 50;
    let name = ns.name.clone();
    let refused = std::thread::spawn(move || {
        enter_netns(&name);
        let to = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
        (0..N)
            .filter(|_| RawTcp::new(false).connect(to) == libc::ECONNREFUSED)
            .count() as u64
    })
    .join()
    .unwrap();
    assert_eq!(refused, N, "every connect was refused");
    let unclassified =
        "tapio_correlation_drops_total{observer=\"network\",reason=\"connect_error_unclassified\"}";
    let deadline = std::time::Instant::now() + SLOW_KERNEL_DEADLINE;
    while metric_prefix_sum(&agent.metrics_now(), unclassified) < N {
        assert!(
            std::time::Instant::now() < deadline,
            "{N} unclassified connects never counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = agent.stop();
    assert!(done.status.success());
    // The oracle: the resets the namespace sent, one per failed attempt.
    let rsts = netns_counter(&ns.name, "/proc/net/snmp", "Tcp:", "OutRsts") - rsts_before;
    let fails = netns_counter(&ns.name, "/proc/net/snmp", "Tcp:", "AttemptFails") - fails_before;
    assert_eq!(
        (rsts, fails),
        (N, N),
        "one reset and one failed attempt per connect"
    );
    let ours: Vec<&Value> = done
        .events
        .iter()
        .filter(|e| port_of(e, "dst_port") == u64::from(port))
        .collect();
    assert!(ours.is_empty(), "no fact for an unseen reset: {ours:#?}");
    assert_eq!(metric(&done.metrics, unclassified), N);
    assert_accounting(&done.metrics, "network");
}

/// Two test hosts joined by a veth pair: the client namespace (returned
/// first) connects with `tcp_syn_retries=1`, so a connect times out after
/// about 3 s; the server namespace silently drops the SYNs to `port` (no
/// reset, no ICMP). Also the two addresses: (client, server).
fn syn_dropping_pair(tag: &str, port: u16) -> (NetNs, NetNs, String, String) {
    let client_ns = NetNs::new(&format!("{tag}client"));
    let server_ns = NetNs::new(&format!("{tag}server"));
    let net = 250 - (std::process::id() % 200) as u8;
    let (client_ip, server_ip) = (format!("10.250.{net}.1"), format!("10.250.{net}.2"));
    sh(&format!(
        "ip -n {c} link add tva type veth peer name tvb netns {s} && \
         ip -n {c} addr add {client_ip}/30 dev tva && ip -n {c} link set tva up && \
         ip -n {s} addr add {server_ip}/30 dev tvb && ip -n {s} link set tvb up",
        c = client_ns.name,
        s = server_ns.name
    ));
    client_ns.exec("sysctl -qw net.ipv4.tcp_syn_retries=1");
    server_ns.exec(&format!(
        "nft add table inet tapio_test && nft add chain inet tapio_test inp '{{ type filter hook input priority 0 ; }}' && nft add rule inet tapio_test inp tcp dport {port} drop"
    ));
    (client_ns, server_ns, client_ip, server_ip)
}

#[test]
fn silently_dropped_syns_are_timeouts_never_refusals() {
    if !kernel_available("network::timeout") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let port = 9917;
    let (client_ns, _server_ns, client_ip, server_ip) = syn_dropping_pair("t", port);
    let ns = &client_ns;
    let server_addr: std::net::Ipv4Addr = server_ip.parse().unwrap();
    let syn_retrans_before = netns_tcpext(&ns.name, "TCPSynRetrans");
    let retrans_fail_before = netns_tcpext(&ns.name, "TCPRetransFail");
    let agent = Agent::start("timeout", &[]);
    const M: usize = 4;
    let workers: Vec<_> = (0..M)
        .map(|_| {
            let name = ns.name.clone();
            std::thread::spawn(move || {
                enter_netns(&name);
                // Blocking: the caller reads the error only after the
                // kernel closed the socket (docs/events.md).
                connect_blocking(
                    std::net::SocketAddrV4::new(server_addr, port),
                    Duration::from_secs(20),
                )
            })
        })
        .collect();
    // A connect the application abandons is no outcome: no event, and
    // not counted as an error taken (it closes under the socket lock).
    {
        let name = ns.name.clone();
        std::thread::spawn(move || {
            enter_netns(&name);
            connect_then_close(std::net::SocketAddrV4::new(server_addr, port));
        })
        .join()
        .unwrap();
    }
    for w in workers {
        let r = w.join().unwrap();
        assert_eq!(r, Some(libc::ETIMEDOUT), "connect must time out");
    }
    let done = {
        agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
            by_type(ev, "kernel.network.connection_timeout")
                .iter()
                .filter(|e| port_of(e, "dst_port") == u64::from(port))
                .count()
                >= M
        });
        std::thread::sleep(Duration::from_millis(300));
        agent.stop()
    };
    let timeouts: Vec<&Value> = by_type(&done.events, "kernel.network.connection_timeout")
        .into_iter()
        .filter(|e| port_of(e, "dst_port") == u64::from(port))
        .collect();
    let refused = refused_to(&done.events, port);
    assert_eq!(timeouts.len(), M, "{:#?}", done.events);
    assert_eq!(refused, 0);
    for reason in ["connect_error_taken", "connect_error_unclassified"] {
        let key =
            format!("tapio_correlation_drops_total{{observer=\"network\",reason=\"{reason}\"}}");
        assert_eq!(metric(&done.metrics, &key), 0, "{key}");
    }
    let syn_retrans = netns_tcpext(&ns.name, "TCPSynRetrans") - syn_retrans_before;
    let mut sum = 0;
    for e in &timeouts {
        assert_eq!(
            e["facts"]["pid"].as_u64(),
            Some(u64::from(std::process::id()))
        );
        assert_eq!(e["facts"]["src_ip"].as_str(), Some(client_ip.as_str()));
        assert_eq!(e["facts"]["dst_ip"].as_str(), Some(server_ip.as_str()));
        let n = e["facts"]["syn_retries"].as_u64().expect("syn_retries");
        assert!(n >= 1, "tcp_syn_retries=1 allows at least one retry");
        sum += n;
    }
    // Exact unless the kernel skipped a tcp_retransmit_skb run (the
    // program was already running on that CPU), or a retransmit failed
    // to leave the host: newer kernels (this host's 6.18) count a SYN
    // retransmit before they send it, and a send that fails
    // (TCPRetransFail) is no retry on the wire, which the program does
    // not count either. The difference is within those two.
    let skipped = metric_prefix_sum(
        &done.metrics,
        "tapio_kernel_recursion_misses_total{observer=\"network\",program=\"tapio_tcp_retransmit_skb\"}",
    );
    let failed = netns_tcpext(&ns.name, "TCPRetransFail") - retrans_fail_before;
    assert!(
        sum <= syn_retrans && syn_retrans <= sum + skipped + failed,
        "syn_retries {sum} agree with the namespace's TCPSynRetrans {syn_retrans} (recursion misses {skipped}, failed sends {failed})"
    );
    assert_accounting(&done.metrics, "network");
}

#[test]
fn icmp_rejected_connects_are_unreachable_with_the_errno_connect_returned() {
    if !kernel_available("network::unreachable") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The server namespace answers SYNs with ICMP errors instead of TCP:
    // host unreachable on one port, port unreachable on another. It drops
    // each first SYN and rejects its retransmission: an ICMP error that a
    // veth returns within the connect() call itself meets a socket the
    // caller still holds, which the kernel hands over as a soft error
    // (docs/events.md); one that arrives later, as from any real network,
    // ends the connect in the kernel, where the observer sees it.
    let client_ns = NetNs::new("uclient");
    let server_ns = NetNs::new("userver");
    let net = 250 - (std::process::id() % 200) as u8;
    let (client_ip, server_ip) = (format!("10.251.{net}.1"), format!("10.251.{net}.2"));
    sh(&format!(
        "ip -n {c} link add uva type veth peer name uvb netns {s} && \
         ip -n {c} addr add {client_ip}/30 dev uva && ip -n {c} link set uva up && \
         ip -n {s} addr add {server_ip}/30 dev uvb && ip -n {s} link set uvb up",
        c = client_ns.name,
        s = server_ns.name
    ));
    // A third port rejects like the first, for connects whose caller
    // spins on SO_ERROR (the race docs/events.md describes).
    let (host_port, port_port, spin_port) = (9921u16, 9922u16, 9923u16);
    let mut rules = String::from(
        "nft add table ip tapio_ur && nft add chain ip tapio_ur inp '{ type filter hook input priority 0 ; }'",
    );
    for (port, icmp) in [
        (host_port, "host-unreachable"),
        (port_port, "port-unreachable"),
        (spin_port, "host-unreachable"),
    ] {
        rules += &format!(
            " && nft add rule ip tapio_ur inp tcp dport {port} numgen inc mod 2 0 drop \
              && nft add rule ip tapio_ur inp tcp dport {port} reject with icmp type {icmp}"
        );
    }
    server_ns.exec(&rules);
    let server_addr: std::net::Ipv4Addr = server_ip.parse().unwrap();
    let icmp_before = netns_counter(&client_ns.name, "/proc/net/snmp", "Icmp:", "InDestUnreachs");
    let syn_retrans_before = netns_tcpext(&client_ns.name, "TCPSynRetrans");
    let agent = Agent::start("unreachable", &[]);
    const M: usize = 3;
    // One connect at a time: each one's first SYN meets the drop rule.
    let in_client_ns = |port: u16, spin: bool| {
        let name = client_ns.name.clone();
        std::thread::spawn(move || {
            enter_netns(&name);
            let to = std::net::SocketAddrV4::new(server_addr, port);
            if spin {
                connect_spinning_on_so_error(to, Duration::from_secs(10))
            } else {
                connect_blocking(to, Duration::from_secs(10))
            }
        })
        .join()
        .unwrap()
    };
    let mut codes = Vec::new();
    for port in [host_port, port_port] {
        for _ in 0..M {
            codes.push((port, in_client_ns(port, false)));
        }
    }
    let spun: Vec<Option<i32>> = (0..M).map(|_| in_client_ns(spin_port, true)).collect();
    // The oracle for the errno: what connect() itself returned.
    for (port, code) in &codes {
        let want = if *port == host_port {
            libc::EHOSTUNREACH
        } else {
            libc::ECONNREFUSED
        };
        assert_eq!(*code, Some(want), "connect to port {port}");
    }
    assert_eq!(
        spun,
        vec![Some(libc::EHOSTUNREACH); M],
        "SO_ERROR after connect to {spin_port}"
    );
    let unreachable_for = |ev: &[Value], port: u16| -> usize {
        by_type(ev, "kernel.network.connection_unreachable")
            .iter()
            .filter(|e| port_of(e, "dst_port") == u64::from(port))
            .count()
    };
    agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
        unreachable_for(ev, host_port) >= M && unreachable_for(ev, port_port) >= M
    });
    std::thread::sleep(Duration::from_millis(300));
    let done = agent.stop();
    // The oracle for the count: ICMP destination-unreachable messages the
    // client namespace received.
    let icmp =
        netns_counter(&client_ns.name, "/proc/net/snmp", "Icmp:", "InDestUnreachs") - icmp_before;
    assert_eq!(icmp, 3 * M as u64, "one ICMP error per connect");
    let syn_retrans = netns_tcpext(&client_ns.name, "TCPSynRetrans") - syn_retrans_before;
    assert_eq!(
        syn_retrans,
        3 * M as u64,
        "one SYN retransmission per connect"
    );
    for (port, errno, code) in [
        (host_port, "EHOSTUNREACH", libc::EHOSTUNREACH),
        (port_port, "ECONNREFUSED", libc::ECONNREFUSED),
        (spin_port, "EHOSTUNREACH", libc::EHOSTUNREACH),
    ] {
        let ours: Vec<&Value> = done
            .events
            .iter()
            .filter(|e| port_of(e, "dst_port") == u64::from(port))
            .collect();
        // A blocking connect is reported every time; one whose caller
        // spun on SO_ERROR is reported or counted, never both, never
        // neither.
        let want = if port == spin_port {
            let taken = metric(
                &done.metrics,
                "tapio_correlation_drops_total{observer=\"network\",reason=\"connect_error_taken\"}",
            );
            eprintln!("unreachable: {taken} of {M} spinning callers took the error first");
            M - metric(
                &done.metrics,
                "tapio_correlation_drops_total{observer=\"network\",reason=\"connect_error_taken\"}",
            ) as usize
        } else {
            M
        };
        // A state change the kernel skipped because the program was
        // already running on that CPU (a process-context run elsewhere on
        // the host, under this softirq) is the one way for a fact to be
        // missing: counted, for any socket, so it bounds the shortfall.
        let misses = metric_prefix_sum(
            &done.metrics,
            "tapio_kernel_recursion_misses_total{observer=\"network\",program=\"tapio_inet_sock_set_state",
        ) as usize;
        assert!(
            ours.len() <= want && ours.len() + misses >= want,
            "one event per reported connect to {port}, {} of {want} with {misses} recursion misses: {ours:#?}\n{}",
            ours.len(),
            network_counters(&done.metrics)
        );
        for e in ours {
            assert_eq!(e["type"], "kernel.network.connection_unreachable");
            let f = &e["facts"];
            assert_eq!(f["error"], errno);
            assert_eq!(f["error_code"].as_i64(), Some(i64::from(code)));
            assert_eq!(f["syn_retries"], 1, "the retransmitted SYN was answered");
            assert_eq!(f["pid"].as_u64(), Some(u64::from(std::process::id())));
            assert_eq!(f["src_ip"].as_str(), Some(client_ip.as_str()));
            assert_eq!(f["dst_ip"].as_str(), Some(server_ip.as_str()));
            assert_eq!(e["severity"], "warning");
        }
    }
    assert_eq!(
        metric(
            &done.metrics,
            "tapio_correlation_drops_total{observer=\"network\",reason=\"connect_error_unclassified\"}",
        ),
        0
    );
    assert_accounting(&done.metrics, "network");
}

#[test]
fn a_linger_zero_close_is_one_reset_on_the_receiving_side() {
    if !kernel_available("network::reset") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start("reset", &[]);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = server.local_addr().unwrap().port();
    let mut client = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (peer, _) = server.accept().unwrap();
    // SO_LINGER {on, 0}: close() sends a reset instead of a FIN.
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let rc = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(peer);
    let mut buf = [0u8; 1];
    let r = client.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
        !by_type(ev, "kernel.network.connection_reset").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let done = agent.stop();
    let resets: Vec<&Value> = by_type(&done.events, "kernel.network.connection_reset")
        .into_iter()
        .filter(|e| {
            port_of(e, "dst_port") == u64::from(sport) || port_of(e, "src_port") == u64::from(sport)
        })
        .collect();
    assert_eq!(resets.len(), 1, "{resets:#?}");
    let f = &resets[0]["facts"];
    assert_eq!(port_of(resets[0], "src_port"), u64::from(cport));
    assert_eq!(port_of(resets[0], "dst_port"), u64::from(sport));
    assert_eq!(
        f["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "the client's owner, captured at connect"
    );
    assert_eq!(f["tcp_state"], "ESTABLISHED");
    drop(client);
    assert_accounting(&done.metrics, "network");
}

fn total_retrans(s: &TcpStream) -> u32 {
    tcp_info(s.as_raw_fd())
        .expect("TCP_INFO of a connected socket")
        .tcpi_total_retrans
}

#[test]
fn dropped_segments_are_aggregated_retransmits_with_the_right_tuple() {
    if !kernel_available("network::retransmits") {
        return;
    }
    retransmits_case("retrans", 9918, 1000, None);
}

/// A write of many segments over a small MTU leaves in GSO skbs of several
/// segments each; the kernel counts segments in tcpi_total_retrans, and so
/// must the observer (tcp_skb_pcount, not one per skb).
#[test]
fn retransmits_of_multi_segment_skbs_count_segments() {
    if !kernel_available("network::retransmits_gso") {
        return;
    }
    retransmits_case("retransgso", 9919, 256 * 1024, Some(1500));
}

/// Connects over loopback in a fresh namespace (with `mtu` on its lo),
/// drops everything to the server for 1.5 s while `payload` bytes are
/// written, and checks the retransmits events against the client socket's
/// tcpi_total_retrans.
///
/// The oracle is exact but for one case: on 6.18, about one run in twenty,
/// tcpi_total_retrans counts one retransmit more than `tcp_retransmit_skb`
/// fired for (bpftrace on the same tracepoint saw 3 firings, all with
/// err 0, for a total_retrans of 4, and TCPRetransFail did not move). The
/// observer reports what the tracepoint reports, so such a run is repeated
/// once; the facts may never exceed the kernel's count.
fn retransmits_case(tag: &str, port: u16, payload: usize, mtu: Option<u32>) {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !retransmits_attempt(tag, port, payload, mtu, false) {
        assert!(retransmits_attempt(tag, port, payload, mtu, true));
    }
}

/// One run of [`retransmits_case`]: true when it checked out, false when
/// the facts fell short of tcpi_total_retrans and `last` is false.
fn retransmits_attempt(tag: &str, port: u16, payload: usize, mtu: Option<u32>, last: bool) -> bool {
    let ns = NetNs::new(tag);
    if let Some(mtu) = mtu {
        ns.exec(&format!("ip link set lo mtu {mtu}"));
    }
    let agent = Agent::start(tag, &[]);
    let name = ns.name.clone();
    let (cport, retrans) = std::thread::spawn(move || {
        enter_netns(&name);
        let server = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cport = client.local_addr().unwrap().port();
        let (mut peer, _) = server.accept().unwrap();
        netns_exec(&name, &format!(
            "nft add table inet tapio_rt && nft add chain inet tapio_rt inp '{{ type filter hook input priority 0 ; }}' && nft add rule inet tapio_rt inp tcp dport {port} drop"
        ));
        // The write may wait for acknowledgements that only come once
        // the drop rule is gone: it runs beside the clock.
        let mut w = client.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let writer = std::thread::spawn(move || w.write_all(&vec![7u8; payload]));
        std::thread::sleep(Duration::from_millis(1500));
        netns_exec(&name, "nft delete table inet tapio_rt");
        let mut buf = vec![0u8; payload];
        peer.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        peer.read_exact(&mut buf).unwrap();
        writer.join().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let retrans = total_retrans(&client);
        client.shutdown(Shutdown::Both).unwrap();
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
        drop(peer);
        drop(client);
        std::thread::sleep(Duration::from_millis(300));
        (cport, retrans)
    })
    .join()
    .unwrap();
    assert!(retrans >= 1, "the kernel retransmitted");
    let want = u64::from(retrans);
    let sum_for = |ev: &[Value]| -> u64 {
        by_type(ev, "kernel.network.retransmits")
            .iter()
            .filter(|e| {
                port_of(e, "src_port") == u64::from(cport)
                    && port_of(e, "dst_port") == u64::from(port)
            })
            .map(|e| e["facts"]["retransmits"].as_u64().unwrap_or(0))
            .sum()
    };
    let delivered = agent.events_within(SLOW_KERNEL_DEADLINE, |ev| sum_for(ev) >= want);
    std::thread::sleep(Duration::from_millis(300));
    let done = agent.stop();
    // A program run the kernel skipped (the same program already running
    // on that CPU: the connection's close in softirq over a process-context
    // run) loses a span, and is counted; only then may the sum fall short.
    let skipped = metric_prefix_sum(
        &done.metrics,
        "tapio_kernel_recursion_misses_total{observer=\"network\",",
    );
    if !delivered || sum_for(&done.events) != want {
        let sum = sum_for(&done.events);
        assert!(
            sum <= want,
            "retransmits facts {sum} exceed tcpi_total_retrans {want}\n{}",
            done.metrics
        );
        if skipped > 0 {
            eprintln!(
                "retransmits: {skipped} recursion misses counted, so the sum was checked as a bound"
            );
            return true;
        }
        assert!(
            !last,
            "retransmits facts {sum} against tcpi_total_retrans {want}, twice, and no counted recursion miss\n{:#?}\n{}",
            by_type(&done.events, "kernel.network.retransmits"),
            done.metrics
        );
        eprintln!("retransmits: facts {sum}, tcpi_total_retrans {want}: run again once");
        return false;
    }
    let ours: Vec<&Value> = by_type(&done.events, "kernel.network.retransmits")
        .into_iter()
        .filter(|e| {
            port_of(e, "src_port") == u64::from(cport) && port_of(e, "dst_port") == u64::from(port)
        })
        .collect();
    assert!(!ours.is_empty());
    assert!(
        ours.len() <= 2,
        "one event per window plus the final one at close: {ours:#?}"
    );
    assert_eq!(
        sum_for(&done.events),
        want,
        "sum of retransmits facts equals tcpi_total_retrans"
    );
    for e in &ours {
        assert_eq!(e["facts"]["src_ip"], "127.0.0.1");
        assert_eq!(e["facts"]["dst_ip"], "127.0.0.1");
        assert!(e["facts"]["retransmits"].as_u64().unwrap() >= 1);
        assert_eq!(
            e["facts"]["pid"].as_u64(),
            Some(u64::from(std::process::id())),
            "owner from connect, not softirq"
        );
    }
    assert_accounting(&done.metrics, "network");
    true
}

/// Stored events of one type to one destination port, in a file-sink
/// directory. Lines are matched as text (hundreds of thousands of them);
/// the first of each kind is parsed to check that the text match holds.
fn stored(dir: &std::path::Path, ty: &str, dst_port: u16) -> u64 {
    let ty_text = format!("\"type\":\"{ty}\"");
    let port_text = format!("\"dst_port\":{dst_port},");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if line.contains(&ty_text) && line.contains(&port_text) {
                if n == 0 {
                    let v: Value = serde_json::from_str(line).expect("a stored line is JSON");
                    assert_eq!(v["type"], ty);
                    assert_eq!(port_of(&v, "dst_port"), u64::from(dst_port));
                }
                n += 1;
            }
        }
    }
    n
}

/// The local ports of the stored timeout events to `port`.
fn timeout_event_ports(dir: &std::path::Path, port: u16) -> std::collections::HashSet<u16> {
    let port_text = format!("\"dst_port\":{port},");
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("connection_timeout") && l.contains(&port_text))
        {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                seen.insert(port_of(&v, "src_port") as u16);
            }
        }
    }
    seen
}

/// For a failed recursion storm: the timeouts with no event (by local
/// port), with the TCP state each socket was in when its error was read
/// (7 CLOSE, 2 SYN_SENT) and when that was.
fn timeouts_without_event(
    evented: &std::collections::HashSet<u16>,
    collected: &[(u16, u8, u128)],
) -> String {
    let missing: Vec<_> = collected
        .iter()
        .filter(|c| !evented.contains(&c.0))
        .collect();
    let not_closed = collected.iter().filter(|c| c.1 != 7).count();
    format!(
        "{} timeouts without an event; {not_closed} of all {} were not CLOSE when their error was read; without an event (port, state, ms): {:?}",
        missing.len(),
        collected.len(),
        &missing[..missing.len().min(40)]
    )
}

/// The timeouts' closes as the kernel traced them (an ftrace instance on
/// the same tracepoint), in timer batches: the closes one softirq made in
/// a row over one interrupted task. Of the batches in which no close
/// became an event and whose task is none of the test's connecting
/// threads (`own`, where a batch can be a recursion miss): how many closes
/// they hold, and over which tasks.
///
/// This host's kernel (a sandbox build) runs no BPF program at all, and
/// counts no miss, while the task under a softirq is one of its own
/// control process's threads; ftrace still records the event
/// (docs/reliability.md). Such a batch is neither an event nor a miss.
fn closes_over_foreign_tasks(
    records: &[String],
    own: &[u32],
    evented: &std::collections::HashSet<u16>,
) -> (u64, Vec<String>) {
    struct Batch<'a> {
        tid: u32,
        context: &'a str,
        last_secs: f64,
        ports: Vec<u16>,
    }
    let mut batches: Vec<Batch> = Vec::new();
    for r in records.iter().filter_map(|l| TraceRecord::parse(l)) {
        let Some(sport) = r.field("sport") else {
            continue;
        };
        match batches.last_mut() {
            Some(b) if b.tid == r.tid && r.secs - b.last_secs < 0.001 => {
                b.last_secs = r.secs;
                b.ports.push(sport as u16);
            }
            _ => batches.push(Batch {
                tid: r.tid,
                context: r.context,
                last_secs: r.secs,
                ports: vec![sport as u16],
            }),
        }
    }
    let mut closes = 0;
    let mut tasks = Vec::new();
    for b in batches {
        if own.contains(&b.tid) || b.ports.iter().any(|p| evented.contains(p)) {
            continue;
        }
        closes += b.ports.len() as u64;
        if !tasks.iter().any(|t| t == b.context) {
            tasks.push(b.context.to_owned());
        }
    }
    (closes, tasks)
}

/// The batch rule on an ftrace excerpt of the shape this host writes: a
/// batch over a test thread (a miss), one over a foreign task with an
/// event (BPF ran there), and one over a foreign task with none, split
/// from the next by more than a millisecond.
#[test]
fn foreign_batches_are_those_with_no_event_over_other_tasks() {
    let line = |ctx: &str, secs: &str, sport: u16| {
        format!(
            " {ctx}   [000] ..s1.  {secs}: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport={sport} dport=9918 saddr=10.0.0.1 daddr=10.0.0.2 saddrv6=::ffff:10.0.0.1 daddrv6=::ffff:10.0.0.2 oldstate=TCP_SYN_SENT newstate=TCP_CLOSE"
        )
    };
    let records = vec![
        line("a_recursion_sto-700", "10.000100", 40000),
        line("a_recursion_sto-700", "10.000104", 40002),
        line("tokio-rt-worker-105", "10.030000", 40010),
        line("tokio-rt-worker-105", "10.030004", 40012),
        line("tokio-rt-worker-105", "10.030008", 40014),
        line("tokio-rt-worker-105", "10.060000", 40020),
        line("tokio-rt-worker-105", "10.060003", 40022),
        line("memfd:sealed-91-1219", "10.090000", 40030),
    ];
    let evented = [40020, 40030].into_iter().collect();
    assert_eq!(
        closes_over_foreign_tasks(&records, &[700], &evented),
        (3, vec!["tokio-rt-worker-105".to_string()])
    );
    let r = TraceRecord::parse(&records[7]).expect("parses");
    assert_eq!(
        (r.context, r.tid, r.field("sport")),
        ("memfd:sealed-91-1219", 1219, Some(40030))
    );
}

/// A recursion storm. The kernel skips a tracing program that fires while
/// the same program is running on that CPU, and counts the run only in
/// `bpf_prog_info.recursion_misses`. Here everything runs on CPU 0: two
/// threads connect to a closed port as fast as they can (process-context
/// runs of the state-change program), while 1,000 connects to a host that
/// drops SYNs time out in the timer softirq, which the tick can start
/// inside one of those runs. Every state change is an event or a counted
/// miss: refused + timeouts + misses = the connects the application saw
/// fail, exactly. Kernels without the recursion guard for tracepoint
/// programs (older than this machine's) run the nested program instead,
/// and count 0.
///
/// The equation is exact only with no ring, queue or sink loss. The storm
/// is paced to [`RECURSION_STORM_RATE`]: unpaced, a fast host makes
/// several hundred thousand connects a second on CPU 0, more than the
/// debug agent these tests run stores, and it lost records (counted) in
/// both tries. Under emulation (the VM matrix) the agent can still fall
/// behind and lose records, each counted.
///
/// A run that cannot check the equation is done again, up to
/// [`RECURSION_STORM_RUNS`] runs in all, and the last one must close
/// exactly: one that lost records (counted), and one in which the kernel
/// closed whole timer batches over a task in whose context this host's
/// kernel runs no BPF program (an ftrace instance on the same tracepoint
/// shows the closes and the task; `closes_over_foreign_tasks`).
#[test]
fn a_recursion_storm_closes_with_the_counted_misses() {
    if !kernel_available("network::recursion_storm") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let closed = (1..=RECURSION_STORM_RUNS).any(|run| recursion_storm(run == RECURSION_STORM_RUNS));
    assert!(closed, "the last run asserts, so it never returns false");
}

/// Runs of the recursion storm at most: see above.
const RECURSION_STORM_RUNS: u32 = 3;

/// Refused connects per second of each of the recursion storm's two
/// threads, at most. At this rate CPU 0 still spends several percent of
/// its time inside the state-change program, where the timer softirq
/// finds it (the misses this test counts).
const RECURSION_STORM_RATE: u64 = 40_000;

/// One recursion storm; false when it could not check the equation (see
/// above) and `last` is not set.
fn recursion_storm(last: bool) -> bool {
    let port = 9918;
    let refused_port = 9919;
    let (client_ns, _server_ns, _, server_ip) = syn_dropping_pair("r", port);
    let dir = tmpdir("recursion-store");
    let dir_s = dir.to_string_lossy().into_owned();
    // Rings that hold the whole storm: a consumer slowed down by an
    // emulated CPU (the kernel matrix's VMs) loses none.
    let agent = Agent::start_with_env(
        "recursion",
        &["--no-stdout", "--data-dir", &dir_s],
        &[("TAPIO_FAULT_INJECT", "network:ring_bytes:8388608")],
    );
    // The kernel's own record of every timeout's close, whatever BPF
    // programs ran (TCP_SYN_SENT 2 -> TCP_CLOSE 7).
    let traced = TraceInstance::start(
        "tapio-recursion",
        "sock/inet_sock_set_state",
        &format!("dport == {port} && oldstate == 2 && newstate == 7"),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm: Vec<_> = (0..2)
        .map(|_| {
            let (name, stop) = (client_ns.name.clone(), stop.clone());
            std::thread::spawn(move || {
                enter_netns(&name);
                pin_to_cpu(0);
                let to = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, refused_port);
                let mut refused = 0u64;
                let start = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(RawTcp::new(false).connect(to), libc::ECONNREFUSED);
                    refused += 1;
                    // Ahead of the pace: wait busy, so that CPU 0 never
                    // idles and the tick keeps landing at any point of a
                    // connect (asleep, the misses were often 0).
                    let due =
                        start + Duration::from_micros(refused * 1_000_000 / RECURSION_STORM_RATE);
                    while std::time::Instant::now() < due {
                        std::hint::spin_loop();
                    }
                }
                (refused, thread_id())
            })
        })
        .collect();
    const SLOW: usize = 1000;
    let server = std::net::SocketAddrV4::new(server_ip.parse().unwrap(), port);
    let timeouts = {
        let name = client_ns.name.clone();
        std::thread::spawn(move || {
            enter_netns(&name);
            pin_to_cpu(0);
            let mut pending = Vec::with_capacity(SLOW);
            let t0 = std::time::Instant::now();
            for _ in 0..SLOW {
                let s = RawTcp::new(true);
                assert_eq!(s.connect(server), libc::EINPROGRESS);
                pending.push(s);
                std::thread::sleep(Duration::from_millis(2));
            }
            // Collect each error once the kernel has closed the socket,
            // with the socket's local port, its TCP state when its error
            // was read and when (ms after the first connect): what a
            // failure below prints about the connects it cannot find.
            let deadline = std::time::Instant::now() + SLOW_KERNEL_DEADLINE;
            let mut collected = Vec::with_capacity(SLOW);
            while !pending.is_empty() {
                assert!(std::time::Instant::now() < deadline, "connects never ended");
                pending.retain(|s| {
                    let state = s.tcp_state();
                    match s.so_error() {
                        0 => true,
                        e => {
                            assert_eq!(e, libc::ETIMEDOUT);
                            let ms = t0.elapsed().as_millis();
                            collected.push((s.local_port(), state, ms));
                            false
                        }
                    }
                });
                std::thread::sleep(Duration::from_millis(50));
            }
            (collected, thread_id())
        })
    };
    // The threads of this test that connect, each by its tid: the tasks
    // the softirq can find inside a state-change program's run.
    let (collected, timeouts_tid) = timeouts.join().unwrap();
    let timed_out = collected.len() as u64;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut own = vec![timeouts_tid];
    let mut refused = 0;
    for (n, tid) in storm.into_iter().map(|t| t.join().unwrap()) {
        refused += n;
        own.push(tid);
    }
    std::thread::sleep(Duration::from_secs(2));
    let done = agent.stop();
    let (_, losses) = assert_accounting(&done.metrics, "network");
    if losses > 0 && !last {
        eprintln!(
            "recursion storm: {losses} records lost (counted): NOT VERIFIED on this run, run again"
        );
        let _ = std::fs::remove_dir_all(&dir);
        return false;
    }
    assert_eq!(
        losses,
        0,
        "no ring, queue or sink loss in this test:\n{}",
        network_counters(&done.metrics)
    );
    // The state-change program of either kind (with or without owner
    // slots): only one is loaded.
    let misses = metric_prefix_sum(
        &done.metrics,
        "tapio_kernel_recursion_misses_total{observer=\"network\",program=\"tapio_inet_sock_set_state",
    );
    let drops = metric_prefix_sum(
        &done.metrics,
        "tapio_correlation_drops_total{observer=\"network\"",
    );
    let refused_events = stored(&dir, "kernel.network.connection_refused", refused_port);
    let timeout_events = stored(&dir, "kernel.network.connection_timeout", port);
    // A reset whose program run was skipped must not turn a refused
    // connect into an unreachable one: it is counted instead.
    let unreachable = stored(&dir, "kernel.network.connection_unreachable", refused_port)
        + stored(&dir, "kernel.network.connection_unreachable", port);
    let evented = timeout_event_ports(&dir, port);
    let without = timeouts_without_event(&evented, &collected);
    eprintln!(
        "recursion storm: {refused} refused ({refused_events} events), {timed_out} timeouts ({timeout_events} events), {misses} recursion misses, {drops} correlation drops; {without}"
    );
    let counters = network_counters(&done.metrics);
    assert_eq!(
        unreachable, 0,
        "no connect here was unreachable:\n{counters}"
    );
    assert!(
        refused_events <= refused && timeout_events <= timed_out,
        "{refused_events} refused events for {refused} refused connects, {timeout_events} timeout events for {timed_out} timeouts:\n{counters}"
    );
    let accounted = refused_events + timeout_events + misses + drops;
    let failed = refused + timed_out;
    if accounted < failed && !last {
        // Closes this host's kernel ran no BPF program for (see
        // closes_over_foreign_tasks): not a loss of Tapio's, but the
        // equation cannot be checked on this run. Run again; the last run
        // must close exactly.
        let records = traced.as_ref().map(|t| t.records()).unwrap_or_default();
        let (foreign, tasks) = closes_over_foreign_tasks(&records, &own, &evented);
        if failed - accounted <= foreign {
            eprintln!(
                "recursion storm: {} failed connects are neither an event nor a counted miss; the kernel traced {foreign} closes in batches with no event over tasks outside this test ({tasks:?}), where this host runs no BPF program: NOT VERIFIED on this run, run again",
                failed - accounted
            );
            let _ = std::fs::remove_dir_all(&dir);
            return false;
        }
    }
    assert_eq!(
        accounted, failed,
        "every failed connect is an event or a counted miss: {refused_events} refused and {timeout_events} timeout events, {misses} state-change misses, {drops} correlation drops, for {refused} refused connects and {timed_out} timeouts:\n{counters}\n{without}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    true
}

#[test]
fn a_storm_of_refused_connects_closes_the_accounting() {
    if !kernel_available("network::storm") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tmpdir("storm-store");
    let dir_s = dir.to_string_lossy().into_owned();
    let agent = Agent::start("storm", &["--no-stdout", "--data-dir", &dir_s]);
    let port = closed_port();
    // 100,000 by default; the VM matrix runs fewer under emulation.
    let n: usize = std::env::var("TAPIO_STORM_CONNECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut refused = 0usize;
                for _ in 0..n / 2 {
                    if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            refused += 1;
                        }
                    }
                }
                refused
            })
        })
        .collect();
    let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let n = n / 2 * 2;
    assert_eq!(refused, n, "every connect was refused");
    std::thread::sleep(Duration::from_secs(2));
    let done = agent.stop();
    assert!(done.status.success());
    let (_, losses) = assert_accounting(&done.metrics, "network");
    // Count the stored refused events for our port.
    let mut stored = 0u64;
    let mut ids = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("every stored line is JSON");
            if v["type"] == "kernel.network.connection_refused"
                && port_of(&v, "dst_port") == u64::from(port)
            {
                stored += 1;
                assert!(ids.insert(v["id"].as_str().unwrap().to_string()));
            }
        }
    }
    let file_dropped = metric(
        &done.metrics,
        "tapio_sink_dropped_events_total{sink=\"file\"}",
    );
    eprintln!(
        "storm: {n} connects, {stored} stored, {losses} counted losses, {file_dropped} file drops"
    );
    assert!(stored <= n as u64);
    if losses == 0 && file_dropped == 0 {
        assert_eq!(
            stored, n as u64,
            "no loss counted, so every connect is stored"
        );
    } else {
        // Losses are counted per observer, not per port: background
        // network events may be among them, so only a bound is exact.
        assert!(
            stored + losses + file_dropped >= n as u64,
            "every missing event is counted"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn accounting_closes_while_running_once_the_pipeline_is_idle() {
    if !kernel_available("network::running_accounting") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start("running", &["--no-stdout", "--metrics-interval-secs", "1"]);
    let port = closed_port();
    const N: u64 = 300;
    for _ in 0..N {
        let _ = TcpStream::connect(("127.0.0.1", port));
    }
    // The agent keeps running: once the ring buffers are polled, the queue
    // drained and the batch written (poll 50 ms, flush 1 s), the next
    // periodic metrics file must close exactly and count our events.
    let deadline = std::time::Instant::now() + SLOW_KERNEL_DEADLINE;
    let seen = loop {
        let text = agent.metrics_now();
        if !text.is_empty() {
            let a = Accounting::parse(&text, "network");
            if a.emitted >= N && a.closes() {
                break Some(a);
            }
        }
        if std::time::Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let a = seen.unwrap_or_else(|| {
        panic!(
            "the running agent's metrics never closed:\n{}",
            agent.metrics_now()
        )
    });
    assert_eq!(a.lost + a.queue + a.malformed, 0, "{a:?}");
    let done = agent.stop();
    assert_accounting(&done.metrics, "network");
}

#[test]
fn an_observer_that_fails_to_load_does_not_stop_the_others() {
    if !kernel_and_hooks_available("network::observer_failure") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start_with_env("obsfail", &[], &[("TAPIO_FAULT_INJECT", "load:process")]);
    agent.wait_log(
        "observer process failed to load or attach: fault injected",
        SLOW_KERNEL_DEADLINE,
    );
    let port = closed_port();
    let _ = TcpStream::connect(("127.0.0.1", port));
    agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
        ev.iter().any(|e| port_of(e, "dst_port") == u64::from(port))
    });
    let done = agent.stop();
    assert!(done.status.success());
    let ours = done
        .events
        .iter()
        .filter(|e| port_of(e, "dst_port") == u64::from(port))
        .count();
    assert_eq!(ours, 1, "the network observer kept working");
    assert_eq!(
        metric(&done.metrics, "tapio_observer_up{observer=\"process\"}"),
        0
    );
    assert_eq!(
        metric(&done.metrics, "tapio_observer_up{observer=\"network\"}"),
        1
    );
}

/// Every CPU's records arrive, whether it has a ring of its own or shares
/// one (test hook `network:rings:1`, as on a host with more CPUs than
/// rings): one thread per online CPU, pinned there, each refused `N`
/// times; exactly one event per connect, and nothing lost.
#[test]
fn every_cpus_records_arrive_whether_it_has_a_ring_or_shares_one() {
    if !kernel_and_hooks_available("network::rings_per_cpu") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    const N: usize = 200;
    for (hook, rings) in [("", cpus.to_string()), ("network:rings:1", "1".to_string())] {
        let agent = Agent::start_with_env("rings", &[], &[("TAPIO_FAULT_INJECT", hook)]);
        agent.wait_log(
            &format!("observer network: {rings} ring(s) of"),
            SLOW_KERNEL_DEADLINE,
        );
        agent.wait_log("observer network attached", SLOW_KERNEL_DEADLINE);
        let port = closed_port();
        let threads: Vec<_> = (0..cpus)
            .map(|cpu| {
                std::thread::spawn(move || {
                    pin_to_cpu(cpu);
                    for _ in 0..N {
                        let e =
                            TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
                        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a connecting thread");
        }
        let want = N * cpus;
        let (done, ours) = stop_after_refusals(agent, port, want);
        let ours = ours.len();
        assert_eq!(ours, want, "{rings} ring(s): one event per connect");
        assert_eq!(
            metric(
                &done.metrics,
                "tapio_ringbuf_lost_total{observer=\"network\"}"
            ),
            0,
            "{rings} ring(s)"
        );
        assert_accounting(&done.metrics, "network");
    }
}

/// The network observer's samples of a metrics text, for a failure message.
fn network_counters(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.contains("observer=\"network\"") && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `connection_refused` events to `port`.
fn refused_to(events: &[Value], port: u16) -> usize {
    by_type(events, "kernel.network.connection_refused")
        .into_iter()
        .filter(|e| port_of(e, "dst_port") == u64::from(port))
        .count()
}

/// `n` connects to a closed port refused while the agent is stopped
/// (SIGSTOP), so that their records pile up in the rings; the port.
fn refused_while_stopped(agent: &Agent, n: usize) -> u16 {
    let port = closed_port();
    agent.signal("STOP");
    let mut refused = 0;
    for _ in 0..n {
        if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                refused += 1;
            }
        }
    }
    agent.signal("CONT");
    assert_eq!(refused, n, "every connect was refused");
    port
}

/// A ring buffer that overflows loses records, and counts each one: a
/// 4 KiB ring (test hook, each of the network's rings) holds a few dozen
/// records; the agent is stopped (SIGSTOP) while a burst of refused
/// connects fills them.
#[test]
fn an_overflowing_ring_buffer_counts_every_lost_record() {
    if !kernel_and_hooks_available("network::ring_overflow") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start_with_env(
        "ring-overflow",
        &[],
        &[("TAPIO_FAULT_INJECT", "network:ring_bytes:4096")],
    );
    agent.wait_log("observer network attached", SLOW_KERNEL_DEADLINE);
    const N: usize = 2000;
    let port = refused_while_stopped(&agent, N);
    std::thread::sleep(Duration::from_secs(1));
    let done = agent.stop();
    let ours = refused_to(&done.events, port) as u64;
    let lost = metric(
        &done.metrics,
        "tapio_ringbuf_lost_total{observer=\"network\"}",
    );
    // The ring holds a few dozen records: most of the burst is lost, and
    // counted. Other connections' records may share the loss counter, so
    // the bound, not equality, is exact for this port.
    assert!(
        ours < N as u64 / 2,
        "a 4 KiB ring cannot hold the burst: {ours}"
    );
    assert!(lost > 0);
    assert!(
        ours + lost >= N as u64,
        "every refused connect is an event or a counted loss: {ours} + {lost} < {N}"
    );
    assert_accounting(&done.metrics, "network");
}

/// Back-pressure: the poller takes from the rings no more records than the
/// event queue has room for, so a burst larger than the queue waits in the
/// rings instead of being dropped. The agent is stopped while 2,000
/// connects are refused (one ring of 512 KiB, shared by every CPU, holds
/// about 4,600 records), then resumes with a queue of 64 events: every
/// record is delivered, none is a queue drop. (Taking the whole burst at
/// once, as the poller did before, dropped all but the queue's worth.)
#[test]
fn a_burst_larger_than_the_queue_waits_in_the_rings() {
    if !kernel_and_hooks_available("network::ring_backpressure") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start_with_env(
        "ring-backpressure",
        &["--queue-capacity", "64"],
        &[(
            "TAPIO_FAULT_INJECT",
            "network:rings:1,network:ring_bytes:524288",
        )],
    );
    agent.wait_log("observer network attached", SLOW_KERNEL_DEADLINE);
    const N: usize = 2000;
    let port = refused_while_stopped(&agent, N);
    let all_in = agent.events_within(SLOW_KERNEL_DEADLINE, |ev| refused_to(ev, port) >= N);
    let done = agent.stop();
    let queue_drops = metric(
        &done.metrics,
        "tapio_queue_drops_total{observer=\"network\"}",
    );
    let lost = metric(
        &done.metrics,
        "tapio_ringbuf_lost_total{observer=\"network\"}",
    );
    assert_eq!(
        (refused_to(&done.events, port), queue_drops, lost),
        (N, 0, 0),
        "every record of the burst delivered through a 64-event queue (arrived in time: {all_in})"
    );
    assert_accounting(&done.metrics, "network");
}
