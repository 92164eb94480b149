//! Load generators for `make bench` (scripts/bench/run.py drives them).
//! Every mode runs for a fixed duration and prints one JSON line of
//! results; nothing here talks to anything but loopback.

use argh::FromArgs;
use serde_json::json;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Tapio benchmark load generators.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    mode: Mode,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Mode {
    Storm(Storm),
    Churn(Churn),
    Paced(Paced),
    Agents(Agents),
    Max304(Max304),
}

/// Refused connects to a closed loopback port, as fast as possible.
#[derive(FromArgs)]
#[argh(subcommand, name = "storm")]
struct Storm {
    /// threads (default 2)
    #[argh(option, default = "2")]
    threads: usize,
    /// seconds (default 5)
    #[argh(option, default = "5.0")]
    secs: f64,
}

/// Established connections opened and closed with FIN, as fast as possible.
#[derive(FromArgs)]
#[argh(subcommand, name = "churn")]
struct Churn {
    /// client threads (default 2)
    #[argh(option, default = "2")]
    threads: usize,
    /// seconds (default 5)
    #[argh(option, default = "5.0")]
    secs: f64,
}

/// Refused connects at a fixed rate.
#[derive(FromArgs)]
#[argh(subcommand, name = "paced")]
struct Paced {
    /// connects per second
    #[argh(option)]
    rate: u64,
    /// seconds (default 5)
    #[argh(option, default = "5.0")]
    secs: f64,
}

/// N simulated agents against a controller: hello once, then per interval
/// a config poll (304), a heartbeat and a batch of 50 events, each agent
/// on its own kept-alive connection. Agents start spread evenly over the
/// first interval, as their rounds are: each says hello just before its
/// first round. With `--burst`, every agent says hello at once at the
/// start instead (a fleet reconnecting together), each load thread one
/// after another.
#[derive(FromArgs)]
#[argh(subcommand, name = "agents")]
struct Agents {
    /// controller port on 127.0.0.1
    #[argh(option)]
    port: u16,
    /// simulated agents
    #[argh(option)]
    n: usize,
    /// seconds between an agent's rounds (default 10)
    #[argh(option, default = "10.0")]
    interval: f64,
    /// seconds of measurement (default 30)
    #[argh(option, default = "30.0")]
    secs: f64,
    /// worker threads (default 64)
    #[argh(option, default = "64")]
    workers: usize,
    /// the first agent this process simulates (default 0): one process
    /// holds at most one open file per agent, so a large run is split
    #[argh(option, default = "0")]
    first: usize,
    /// how many agents this process simulates (default: n - first)
    #[argh(option)]
    count: Option<usize>,
    /// print every latency (µs) per route, for merging split runs
    #[argh(switch)]
    raw: bool,
    /// every agent says hello at the start, at once: a closed loop of
    /// `workers` connections, whose latency is the queue they make
    /// (concurrency / throughput); `hello_burst_secs` says how long all
    /// the hellos took
    #[argh(switch)]
    burst: bool,
}

/// As many config polls answered 304 as `conns` concurrent clients get.
#[derive(FromArgs)]
#[argh(subcommand, name = "max304")]
struct Max304 {
    /// controller port on 127.0.0.1
    #[argh(option)]
    port: u16,
    /// concurrent clients (default 8)
    #[argh(option, default = "8")]
    conns: usize,
    /// seconds (default 5)
    #[argh(option, default = "5.0")]
    secs: f64,
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn threads<F: Fn(&AtomicBool) -> u64 + Send + Sync + 'static>(
    n: usize,
    secs: f64,
    f: F,
) -> (u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let f = Arc::new(f);
    let t0 = Instant::now();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (s, f) = (Arc::clone(&stop), Arc::clone(&f));
            std::thread::spawn(move || f(&s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Relaxed);
    let total: u64 = hs.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    (total, t0.elapsed().as_secs_f64())
}

fn storm(a: &Storm) {
    let port = closed_port();
    let (n, el) = threads(a.threads, a.secs, move |stop| {
        let mut n = 0;
        while !stop.load(Relaxed) {
            let _ = TcpStream::connect(("127.0.0.1", port));
            n += 1;
        }
        n
    });
    println!(
        "{}",
        json!({"mode": "storm", "port": port, "ops": n, "secs": el, "rate": n as f64 / el})
    );
}

fn churn(a: &Churn) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let stop_srv = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop_srv);
    l.set_nonblocking(true).expect("nonblocking");
    let srv = std::thread::spawn(move || {
        while !s2.load(Relaxed) {
            match l.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    let (n, el) = threads(a.threads, a.secs, move |stop| {
        let mut n = 0;
        while !stop.load(Relaxed) {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"x");
                let mut b = [0u8; 1];
                let _ = s.read(&mut b);
                n += 1;
            }
        }
        n
    });
    stop_srv.store(true, Relaxed);
    let _ = srv.join();
    println!(
        "{}",
        json!({"mode": "churn", "port": port, "ops": n, "secs": el, "rate": n as f64 / el})
    );
}

fn paced(a: &Paced) {
    let port = closed_port();
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(a.secs);
    let mut n = 0u64;
    while t0.elapsed() < end {
        let due = t0 + Duration::from_nanos(n * 1_000_000_000 / a.rate.max(1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let _ = TcpStream::connect(("127.0.0.1", port));
        n += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"mode": "paced", "port": port, "ops": n, "secs": el, "rate": n as f64 / el})
    );
}

/// One HTTP exchange with Connection: close. Returns (status, micros).
fn exchange(port: u16, req: &[u8]) -> Option<(u16, u64)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(req).ok()?;
    let mut buf = Vec::with_capacity(1024);
    s.read_to_end(&mut buf).ok()?;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    Some((status, t.elapsed().as_micros() as u64))
}

/// One exchange on the agent's kept-alive connection, opened when there is
/// none and once more when the kept one turns out closed, as the agent
/// does. Returns (status, micros).
fn kept_exchange(
    conn: &mut Option<TcpStream>,
    src: [u8; 4],
    port: u16,
    req: &[u8],
) -> Option<(u16, u64)> {
    let t = Instant::now();
    for _ in 0..2 {
        let mut s = match conn.take() {
            Some(s) => s,
            None => {
                let s = connect_from(src, port)?;
                s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        if s.write_all(req).is_err() {
            continue;
        }
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let status = loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => break None,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                break head.get(9..12).and_then(|c| c.parse().ok());
            }
        };
        match status {
            Some(code) => {
                *conn = Some(s);
                return Some((code, t.elapsed().as_micros() as u64));
            }
            None if buf.is_empty() => continue,
            None => return None,
        }
    }
    None
}

fn http(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    request(method, path, headers, body, true)
}

fn request(method: &str, path: &str, headers: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}{headers}Content-Length: {}\r\n\r\n",
        if close { "Connection: close\r\n" } else { "" },
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Lifts the open-file limit to `want` (root may raise the hard limit),
/// else the soft limit to the hard one: one socket per agent.
fn raise_nofile(want: u64) {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            return;
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A connection to 127.0.0.1:`port` from `src` (another loopback address):
/// one source address has only ~28k ephemeral ports, and 50k agents each
/// keep a connection.
fn connect_from(src: [u8; 4], port: u16) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket owned here until it is handed to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let from = addr(src, 0);
        let to = addr([127, 0, 0, 1], port);
        // The port is chosen at connect(), for this destination, instead of
        // at bind() by a search for one no socket uses at all: that search
        // grows with the sockets open, and it is the load generator's cost,
        // not the controller's (docs/budgets.md, the hello burst).
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if libc::bind(fd, (&raw const from).cast(), len) != 0
            || libc::connect(fd, (&raw const to).cast(), len) != 0
        {
            libc::close(fd);
            return None;
        }
        Some(TcpStream::from_raw_fd(fd))
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn agents(a: &Agents) {
    let (first, count) = (a.first, a.count.unwrap_or(a.n.saturating_sub(a.first)));
    raise_nofile(count as u64 + 1024);
    let port = a.port;
    let etag = {
        let req = http(
            "GET",
            "/v1/agents/config?agent_id=bench&node_name=bench",
            "",
            b"",
        );
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("controller");
        s.write_all(&req).expect("write");
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.lines()
            .find_map(|l| {
                l.strip_prefix("ETag: ")
                    .or_else(|| l.strip_prefix("etag: "))
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let n = a.n;
    let interval = Duration::from_secs_f64(a.interval);
    let measure = Duration::from_secs_f64(a.secs);
    let errors = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let burst = a.burst;
    // When the last load thread finished its burst of hellos (µs after t0).
    let burst_done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..a.workers)
        .map(|w| {
            let (errors, events, etag) = (Arc::clone(&errors), Arc::clone(&events), etag.clone());
            let burst_done = Arc::clone(&burst_done);
            let workers = a.workers;
            std::thread::spawn(move || {
                let mine: Vec<usize> = (first + w..(first + count).min(n)).step_by(workers).collect();
                let mut lat: [Vec<u64>; 4] = Default::default();
                let mut seq = vec![0u64; mine.len()];
                let mut conns: Vec<Option<TcpStream>> = (0..mine.len()).map(|_| None).collect();
                let hello = |conn: &mut Option<TcpStream>, i: usize, lat: &mut [Vec<u64>; 4]| {
                    let body = json!({"wire_version": "tapio-wire/v1", "agent_id": format!("a{i}"), "node_name": format!("n{i}"),
                        "instance_id": format!("i{i}"), "agent_version": "bench", "kernel_release": "6", "arch": "x86_64"});
                    match kept_exchange(conn, [127, 0, 0, 1 + (i % 8) as u8], port, &request("POST", "/v1/agents/hello", "", body.to_string().as_bytes(), false)) {
                        Some((200, us)) => lat[0].push(us),
                        _ => {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                };
                if burst {
                    for (k, &i) in mine.iter().enumerate() {
                        hello(&mut conns[k], i, &mut lat);
                    }
                    burst_done.fetch_max(t0.elapsed().as_micros() as u64, Relaxed);
                }
                // each agent's round is offset evenly across the interval
                let mut round = 0u64;
                'outer: loop {
                    for (k, &i) in mine.iter().enumerate() {
                        let offset = interval.mul_f64(i as f64 / n as f64);
                        let due = t0 + interval * round as u32 + offset;
                        if due > t0 + measure {
                            break 'outer;
                        }
                        if let Some(d) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(d);
                        }
                        if round == 0 && !burst {
                            hello(&mut conns[k], i, &mut lat);
                        }
                        let hdr = format!("If-None-Match: {etag}\r\n");
                        match kept_exchange(&mut conns[k], [127, 0, 0, 1 + (i % 8) as u8], port, &request("GET", &format!("/v1/agents/config?agent_id=a{i}&node_name=n{i}"), &hdr, b"", false)) {
                            Some((304, us)) => lat[1].push(us),
                            _ => {
                                errors.fetch_add(1, Relaxed);
                            }
                        }
                        let hb = json!({"wire_version": "tapio-wire/v1", "agent_id": format!("a{i}"), "instance_id": format!("i{i}"),
                            "node_name": format!("n{i}"), "config_version": "1", "uptime_secs": round, "counters": {"tapio_queue_drops_total{observer=\"network\"}": 0}});
                        match kept_exchange(&mut conns[k], [127, 0, 0, 1 + (i % 8) as u8], port, &request("POST", "/v1/agents/heartbeat", "", hb.to_string().as_bytes(), false)) {
                            Some((200, us)) => lat[2].push(us),
                            _ => {
                                errors.fetch_add(1, Relaxed);
                            }
                        }
                        seq[k] += 1;
                        // Built as text: the load generator should cost
                        // little next to the controller it measures.
                        let mut batch = format!(
                            "{{\"wire_version\":\"tapio-wire/v1\",\"agent_id\":\"a{i}\",\"instance_id\":\"i{i}\",\"node_name\":\"n{i}\",\"sequence\":{},\"events\":[",
                            seq[k]
                        );
                        for e in 0..50u64 {
                            if e > 0 {
                                batch.push(',');
                            }
                            let _ = write!(
                                batch,
                                "{{\"id\":\"i{i}-{}\",\"type\":\"kernel.network.connection_refused\",\"observer\":\"network\",\"severity\":\"warning\",\"timestamp\":\"2026-11-22T06:00:00.000000000Z\",\"config_generation\":1,\"facts\":{{\"family\":\"ipv4\",\"src_ip\":\"10.0.0.1\",\"src_port\":40000,\"dst_ip\":\"10.0.0.2\",\"dst_port\":5432}}}}",
                                (seq[k] - 1) * 50 + e + 1
                            );
                        }
                        batch.push_str("]}");
                        match kept_exchange(&mut conns[k], [127, 0, 0, 1 + (i % 8) as u8], port, &request("POST", "/v1/events", "", batch.as_bytes(), false)) {
                            Some((200, us)) => {
                                lat[3].push(us);
                                events.fetch_add(50, Relaxed);
                            }
                            _ => {
                                errors.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    round += 1;
                }
                lat
            })
        })
        .collect();
    let mut all: [Vec<u64>; 4] = Default::default();
    for h in hs {
        if let Ok(l) = h.join() {
            for (a, b) in all.iter_mut().zip(l) {
                a.extend(b);
            }
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let names = ["hello", "config_304", "heartbeat", "events"];
    let raw: serde_json::Map<String, serde_json::Value> = if a.raw {
        names
            .iter()
            .zip(all.iter())
            .map(|(name, v)| (name.to_string(), json!(v)))
            .collect()
    } else {
        serde_json::Map::new()
    };
    let mut routes = serde_json::Map::new();
    let mut total = 0usize;
    for (name, v) in names.iter().zip(all.iter_mut()) {
        total += v.len();
        routes.insert(
            name.to_string(),
            json!({"count": v.len(), "p50_ms": pct(v, 0.5) as f64 / 1000.0, "p99_ms": pct(v, 0.99) as f64 / 1000.0, "max_ms": pct(v, 1.0) as f64 / 1000.0}),
        );
    }
    println!(
        "{}",
        json!({"mode": "agents", "n": n, "secs": el, "requests": total, "rps": total as f64 / el,
               "events": events.load(Relaxed), "events_per_sec": events.load(Relaxed) as f64 / el,
               "errors": errors.load(Relaxed), "routes": routes, "raw": raw,
               "hello_burst_secs": if burst { json!(burst_done.load(Relaxed) as f64 / 1e6) } else { json!(null) }})
    );
}

fn max304(a: &Max304) {
    let port = a.port;
    let req0 = http("GET", "/v1/agents/config?agent_id=m&node_name=m", "", b"");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("controller");
    s.write_all(&req0).expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let etag = buf
        .lines()
        .find_map(|l| l.strip_prefix("ETag: ").map(str::to_string))
        .unwrap_or_default();
    let req = Arc::new(http(
        "GET",
        "/v1/agents/config?agent_id=m&node_name=m",
        &format!("If-None-Match: {etag}\r\n"),
        b"",
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let e2 = Arc::clone(&errors);
    let (n, el) = threads(a.conns, a.secs, move |stop| {
        let mut n = 0;
        while !stop.load(Relaxed) {
            match exchange(port, &req) {
                Some((304, _)) => n += 1,
                _ => {
                    e2.fetch_add(1, Relaxed);
                }
            }
        }
        n
    });
    println!(
        "{}",
        json!({"mode": "max304", "conns": a.conns, "ops": n, "secs": el, "rate": n as f64 / el, "errors": errors.load(Relaxed)})
    );
}

fn main() {
    let args: Args = argh::from_env();
    match args.mode {
        Mode::Storm(a) => storm(&a),
        Mode::Churn(a) => churn(&a),
        Mode::Paced(a) => paced(&a),
        Mode::Agents(a) => agents(&a),
        Mode::Max304(a) => max304(&a),
    }
}
