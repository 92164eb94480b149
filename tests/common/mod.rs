//! Helpers for the real-kernel tests: the built agent as a process, kernel
//! availability checks (with loud skips), and network namespaces.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary built by `cargo build --workspace --bins`.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TAPIO_AGENT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/tapio-agent
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("tapio-agent");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` first (make test does)",
        bin.display()
    );
    bin
}

/// True when real-kernel tests can run here; otherwise prints a loud
/// SKIPPED line and records the skip for the lean gate.
pub fn kernel_available(test: &str) -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("TAPIO_LEAN_REQUIRE_NET").is_some() => {
            panic!(
                "{test}: {why}, and TAPIO_LEAN_REQUIRE_NET=1 forbids skipping kernel and network tests"
            )
        }
        Some(why) => {
            skip(test, why);
            false
        }
    }
}

/// True when the agent binary has the test hooks (`TAPIO_FAULT_INJECT`,
/// the `test-hooks` feature that `make test` builds with); otherwise
/// prints a loud SKIPPED line and records the skip for the lean gate.
pub fn test_hooks_available(test: &str) -> bool {
    static COMPILED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let compiled = *COMPILED.get_or_init(|| {
        Command::new(agent_bin())
            .arg("version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("+test-hooks"))
    });
    if !compiled {
        skip(
            test,
            "the agent has no test hooks: build it with `cargo build --workspace --bins --features tapio-agent/test-hooks` (make test does)",
        );
    }
    compiled
}

/// [`kernel_available`] and [`test_hooks_available`]: for the tests that
/// drive a test hook on the real kernel.
pub fn kernel_and_hooks_available(test: &str) -> bool {
    kernel_available(test) && test_hooks_available(test)
}

/// Says SKIPPED loudly and records it for the lean gate ($TAPIO_SKIP_LOG).
pub fn skip(test: &str, why: &str) {
    // Straight to stderr: `eprintln!` is captured (hidden) by the test
    // harness for a test that passes, and a skip must be seen.
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {test}: {why} ***\n");
    }
    if let Some(path) = std::env::var_os("TAPIO_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapio-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmpdir");
    d
}

pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<Vec<String>>>,
    pub metrics: PathBuf,
    pub dir: PathBuf,
}

pub struct Finished {
    pub events: Vec<Value>,
    pub log: Vec<String>,
    pub metrics: String,
    pub status: std::process::ExitStatus,
}

/// How long a test waits for something the agent does on its own
/// (attach, deliver, write metrics). Generous: the kernel matrix runs
/// emulated (TCG) on CI's two busy cores, where loading one observer
/// alone can take seconds. A wait returns as soon as its condition holds.
pub const SLOW_KERNEL_DEADLINE: Duration = Duration::from_secs(30);

impl Agent {
    /// Starts `tapio-agent run` and waits until the network observer is
    /// attached.
    pub fn start(name: &str, extra: &[&str]) -> Agent {
        Agent::start_with_env(name, extra, &[])
    }

    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tmpdir(name);
        let metrics = dir.join("tapio.prom");
        let mut child = Command::new(agent_bin())
            .arg("run")
            .arg("--metrics-file")
            .arg(&metrics)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tapio-agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            });
        }
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(l);
                }
            });
        }
        let agent = Agent {
            child,
            lines,
            log,
            metrics,
            dir,
        };
        agent.wait_log("observer network attached", Duration::from_secs(30));
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// The metrics textfile as it is now (empty when not written yet).
    pub fn metrics_now(&self) -> String {
        std::fs::read_to_string(&self.metrics).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent log never said {needle:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Events seen so far on stdout.
    pub fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pred` holds over the events delivered so far, while
    /// the agent runs; fails the test at the deadline (events that only
    /// appear at shutdown do not count as delivered).
    pub fn wait_events(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.events();
            if pred(&ev) {
                return ev;
            }
            assert!(
                Instant::now() < deadline,
                "expected events were not delivered within {timeout:?} while the agent ran; {} events so far",
                ev.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the metrics textfile shows `key` at `at_least` or more;
    /// fails the test at the deadline. Returns the value seen.
    pub fn wait_metric_at_least(&self, key: &str, at_least: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let m = self.metrics_now();
            let v = if m.is_empty() { 0 } else { metric(&m, key) };
            if v >= at_least {
                return v;
            }
            assert!(Instant::now() < deadline, "{key} stayed at {v}:\n{m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`Agent::wait_events`], but says whether `pred` held by the
    /// deadline instead of failing the test.
    pub fn events_within(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.events()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(mut self) -> Finished {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let Some(status) = exited_within(&mut self.child, Duration::from_secs(30)) else {
            let _ = self.child.kill();
            panic!("agent did not stop within 30 s after SIGTERM");
        };
        // let the reader threads finish the pipes
        std::thread::sleep(Duration::from_millis(200));
        let metrics = std::fs::read_to_string(&self.metrics).unwrap_or_default();
        Finished {
            events: self.events(),
            log: self.log.lock().unwrap().clone(),
            metrics,
            status,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Bounded: an agent stuck in the kernel must not hang the test
        // binary on its way out of a failed test.
        let _ = self.child.kill();
        let _ = exited_within(&mut self.child, Duration::from_secs(10));
    }
}

/// The value of one sample in a Prometheus textfile (exact key).
pub fn metric(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {key} not found in:\n{text}"))
}

/// The sum of the samples whose key starts with `prefix`.
pub fn metric_prefix_sum(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum()
}

/// The sum of a metric family's samples (every label set).
#[allow(dead_code)]
pub fn metric_sum(text: &str, family: &str) -> u64 {
    metric_prefix_sum(text, &format!("{family}{{"))
}

/// One observer's loss-accounting counters from a metrics textfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    pub kernel: u64,
    pub lost: u64,
    pub received: u64,
    pub malformed: u64,
    pub queue: u64,
    pub suppressed: u64,
    pub emitted: u64,
    pub abandoned: u64,
}

impl Accounting {
    pub fn parse(text: &str, observer: &str) -> Accounting {
        let l = format!("{{observer=\"{observer}\"}}");
        let sum_of = |prefix: String| -> u64 {
            text.lines()
                .filter(|x| x.starts_with(&prefix))
                .filter_map(|x| x.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        Accounting {
            kernel: metric(text, &format!("tapio_kernel_events_total{l}")),
            lost: metric(text, &format!("tapio_ringbuf_lost_total{l}")),
            received: metric(text, &format!("tapio_received_events_total{l}")),
            malformed: metric(text, &format!("tapio_malformed_events_total{l}")),
            queue: metric(text, &format!("tapio_queue_drops_total{l}")),
            suppressed: sum_of(format!(
                "tapio_events_suppressed_total{{observer=\"{observer}\""
            )),
            emitted: sum_of(format!("tapio_events_total{{observer=\"{observer}\"")),
            abandoned: metric(text, &format!("tapio_shutdown_abandoned_events_total{l}")),
        }
    }

    /// Both identities hold exactly.
    pub fn closes(&self) -> bool {
        self.kernel == self.lost + self.received
            && self.received
                == self.malformed + self.queue + self.suppressed + self.emitted + self.abandoned
    }
}

/// Asserts the loss accounting identities for one observer, exactly;
/// returns (emitted, counted losses).
pub fn assert_accounting(text: &str, observer: &str) -> (u64, u64) {
    let a = Accounting::parse(text, observer);
    assert_eq!(
        a.kernel,
        a.lost + a.received,
        "{observer}: kernel_events != ringbuf_lost + received\n{text}"
    );
    assert_eq!(
        a.received,
        a.malformed + a.queue + a.suppressed + a.emitted + a.abandoned,
        "{observer}: received != malformed + queue_drops + suppressed + emitted + abandoned\n{text}"
    );
    (a.emitted, a.lost + a.malformed + a.queue + a.abandoned)
}

pub fn by_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// How long a test waits for a child process it started to end (the
/// helpers sleep at most 120 s; an OOM victim dies in well under this).
pub const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// `child.wait()` with a deadline: a child still running at the deadline
/// is killed, and the test fails naming `what` (a hang in a test must be
/// a failure with a name, never a matrix VM that times out silently).
pub fn wait_child(child: &mut Child, what: &str) -> std::process::ExitStatus {
    if let Some(st) = exited_within(child, CHILD_DEADLINE) {
        return st;
    }
    let state = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    let stack = std::fs::read_to_string(format!("/proc/{}/stack", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.try_wait();
    panic!(
        "{what}: pid {} still running after {CHILD_DEADLINE:?}; stat: {state}\nstack:\n{stack}",
        child.id()
    );
}

/// The child's exit status once it has exited, polling until `within` has
/// passed (None: still running, or waitpid kept failing). The one bounded
/// wait behind [`wait_child`], [`Agent::stop`] and the agent's drop.
fn exited_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "command failed: {cmd}");
}

/// A network namespace that is deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("tapio-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        NetNs { name }
    }

    pub fn exec(&self, cmd: &str) {
        netns_exec(&self.name, cmd);
    }
}

pub fn netns_exec(name: &str, cmd: &str) {
    sh(&format!(
        "ip netns exec {name} sh -c '{}'",
        cmd.replace('\'', "'\\''")
    ));
}

/// Moves the calling thread into a namespace (network namespaces are per
/// thread), for sockets created afterwards on this thread.
pub fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns file");
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// An IPv4 TCP socket, closed on drop.
pub struct RawTcp(i32);

impl RawTcp {
    pub fn new(nonblocking: bool) -> RawTcp {
        let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | flags, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        RawTcp(fd)
    }

    /// 0, or the errno `connect()` returned.
    pub fn connect(&self, to: std::net::SocketAddrV4) -> i32 {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*to.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = unsafe {
            libc::connect(
                self.0,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    /// The local port (`getsockname`), 0 if unknown.
    pub fn local_port(&self) -> u16 {
        // SAFETY: a zeroed sockaddr_in is valid; the kernel writes at most len bytes.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockname(self.0, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len)
        };
        if rc == 0 {
            u16::from_be(sa.sin_port)
        } else {
            0
        }
    }

    /// The socket's TCP state (`TCP_INFO`'s tcpi_state: 2 SYN_SENT, 7
    /// CLOSE), 255 if unknown.
    pub fn tcp_state(&self) -> u8 {
        tcp_info(self.0).map_or(255, |i| i.tcpi_state)
    }

    /// `getsockopt(SO_ERROR)`: reads and clears the socket's error.
    pub fn so_error(&self) -> i32 {
        let v: Option<libc::c_int> = getsockopt_value(self.0, libc::SOL_SOCKET, libc::SO_ERROR);
        v.unwrap_or_else(|| panic!("getsockopt: {}", std::io::Error::last_os_error()))
    }
}

/// `getsockopt(fd, level, name)` into a `T` the kernel fills (a C struct
/// or integer, valid when zeroed); None when the call fails.
fn getsockopt_value<T: Copy>(fd: i32, level: i32, name: i32) -> Option<T> {
    // SAFETY: T is a plain C type for which all zeroes is valid; the kernel
    // writes at most `len` bytes into it.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut T).cast(), &mut len) };
    (rc == 0).then_some(v)
}

/// The kernel's `TCP_INFO` for a TCP socket, None when it cannot be read.
pub fn tcp_info(fd: i32) -> Option<libc::tcp_info> {
    getsockopt_value(fd, libc::IPPROTO_TCP, libc::TCP_INFO)
}

impl Drop for RawTcp {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

/// A blocking `connect()` bounded by `SO_SNDTIMEO`: the errno it returned
/// (`Some(0)` never: a connect that succeeds is `None`). A blocking
/// connect takes the socket lock to read the error, so the kernel has
/// closed the socket (and the observer has seen it) before it returns.
pub fn connect_blocking(to: std::net::SocketAddrV4, deadline: Duration) -> Option<i32> {
    let s = RawTcp::new(false);
    let tv = libc::timeval {
        tv_sec: deadline.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    let rc = unsafe {
        libc::setsockopt(
            s.0,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDTIMEO: {}", std::io::Error::last_os_error());
    match s.connect(to) {
        0 => None,
        e => Some(e),
    }
}

/// A non-blocking `connect()` that the caller abandons at once with
/// `close()`, while the socket is still connecting.
pub fn connect_then_close(to: std::net::SocketAddrV4) {
    let s = RawTcp::new(true);
    assert_eq!(s.connect(to), libc::EINPROGRESS, "connect to {to}");
}

/// A non-blocking `connect()` whose caller spins on `getsockopt(SO_ERROR)`
/// until it reads an error, as an event loop does, as fast as it can: on
/// kernels that wake the caller before they close the socket, this read
/// can clear the error before the observer sees the close. The errno read,
/// or `None` at the deadline.
pub fn connect_spinning_on_so_error(to: std::net::SocketAddrV4, deadline: Duration) -> Option<i32> {
    let s = RawTcp::new(true);
    let rc = s.connect(to);
    if rc != libc::EINPROGRESS {
        return Some(rc);
    }
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        let e = s.so_error();
        if e != 0 {
            return Some(e);
        }
        std::hint::spin_loop();
    }
    None
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The value of `key` in a kernel file of `<key> <value>` lines
/// (/proc/vmstat, a cgroup's memory.events); `None` when the file or the
/// key is not there.
pub fn keyed_value(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays in it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// A local TCP port with nothing listening on it.
pub fn closed_port() -> u16 {
    let [p] = closed_ports();
    p
}

/// `N` distinct local TCP ports with nothing listening on them: all bound
/// at once, then closed (one at a time, the kernel may hand out the same
/// port twice).
pub fn closed_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    listeners.map(|l| l.local_addr().expect("addr").port())
}

/// A TcpExt counter of a namespace (/proc/net/netstat as seen inside it).
pub fn netns_tcpext(name: &str, counter: &str) -> u64 {
    netns_counter(name, "/proc/net/netstat", "TcpExt:", counter)
}

/// A counter of a namespace's `/proc/net/snmp` or `/proc/net/netstat`
/// (a header line and a value line per section, e.g. `Icmp:`).
pub fn netns_counter(name: &str, file: &str, section: &str, counter: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", name, "cat", file])
        .output()
        .expect("read the namespace's counters");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(section)).collect();
    assert_eq!(lines.len(), 2, "{section} header and values");
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == counter)
        .unwrap_or_else(|| panic!("no {section} {counter}"));
    values[i].parse().expect("counter value")
}

/// A built binary of this workspace, next to the agent.
pub fn bin(name: &str) -> PathBuf {
    let p = agent_bin().with_file_name(name);
    assert!(p.exists(), "{} not built", p.display());
    p
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A raw HTTP exchange: writes `request` as is, reads until close (10 s
/// deadline). Returns (status, lowercase headers, body).
pub fn raw_http(port: u16, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let cl = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if let Some(cl) = cl {
                        if buf.len() >= i + 4 + cl {
                            break;
                        }
                    }
                }
            }
            Err(_) => break,
        }
    }
    let i = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..i]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = buf[i + 4..].to_vec();
    (status, headers, body)
}

pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// The controller binary as a process; killed on drop.
pub struct Controller {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Controller {
    pub fn start(args: &[&str]) -> Controller {
        Controller::start_on(free_port(), args)
    }

    pub fn start_on(port: u16, args: &[&str]) -> Controller {
        let mut child = Command::new(bin("tapio-controller"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tapio-controller");
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(l);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "controller did not listen: {:?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Controller { child, port, log }
    }

    pub fn get(&self, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        raw_http(self.port, &request("GET", path, &[], None))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let b = serde_json::to_vec(body).unwrap();
        let (s, _, body) = raw_http(self.port, &request("POST", path, &[], Some(&b)));
        (s, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub fn status(&self) -> Value {
        let (s, _, body) = self.get("/v1/status");
        assert_eq!(s, 200);
        serde_json::from_slice(&body).unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `text`: Ok(()) when the real Prometheus
/// parser and linter accept it silently, Err(what it said) otherwise, and
/// None when promtool is not installed (the caller skips loudly).
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let _ = child.stdin.take()?.write_all(text.as_bytes());
    let out = child.wait_with_output().ok()?;
    Some(
        if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        },
    )
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted and removed
/// when dropped. Root only.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(name: &str, size: &str) -> Tmpfs {
        let dir = tmpdir(name);
        sh(&format!(
            "mount -t tmpfs -o size={size} tapio-test {}",
            dir.display()
        ));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A controller (export on, heartbeats every second) and an agent that
/// sends to it, with a local store: the start of every end-to-end test.
#[allow(dead_code)]
pub struct Linked {
    pub controller: Controller,
    pub agent: Agent,
    pub export: PathBuf,
    pub store: PathBuf,
    pub port: u16,
}

#[allow(dead_code)]
impl Linked {
    /// `agent_extra` goes after `--no-stdout --data-dir <store>
    /// --controller <url> --controller-timeout-ms 1000`.
    pub fn start(name: &str, agent_extra: &[&str]) -> Linked {
        let export = tmpdir(&format!("{name}-export"));
        let store = tmpdir(&format!("{name}-store"));
        let port = free_port();
        let controller = Linked::controller_on(port, &export);
        let url = format!("http://127.0.0.1:{port}");
        let store_s = store.to_string_lossy().into_owned();
        let mut args = vec![
            "--no-stdout",
            "--data-dir",
            &store_s,
            "--controller",
            &url,
            "--controller-timeout-ms",
            "1000",
        ];
        args.extend_from_slice(agent_extra);
        let agent = Agent::start(name, &args);
        Linked {
            controller,
            agent,
            export,
            store,
            port,
        }
    }

    /// (controller, agent, export dir, store dir, controller port)
    pub fn into_parts(self) -> (Controller, Agent, PathBuf, PathBuf, u16) {
        (
            self.controller,
            self.agent,
            self.export,
            self.store,
            self.port,
        )
    }

    /// A controller exporting to `export` on `port`: how `start` starts
    /// one, and how a test starts it again after killing it.
    pub fn controller_on(port: u16, export: &Path) -> Controller {
        let export = export.to_string_lossy().into_owned();
        Controller::start_on(
            port,
            &["--export-dir", &export, "--heartbeat-interval-secs", "1"],
        )
    }
}

/// The calling thread's id, as the kernel's traces name it (`comm-tid`).
pub fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// A private ftrace instance (`instances/<name>` under tracefs) that
/// records one trace event, filtered: an oracle of what the kernel traced,
/// independent of which BPF programs ran. Removed on drop. `None` where
/// tracefs or its instances are not there, or where tests may not turn
/// events on: the caller then has no such oracle. The kernel matrix's
/// guests set `TAPIO_NO_TRACEFS_EVENTS`: under emulation, turning an event
/// on patches code another vCPU may be running, which can leave that vCPU
/// looping (docs/operations.md).
pub struct TraceInstance(PathBuf);

impl TraceInstance {
    /// `event` as `system/name` (`sock/inet_sock_set_state`), `filter` in
    /// the event filter syntax.
    pub fn start(name: &str, event: &str, filter: &str) -> Option<TraceInstance> {
        if std::env::var_os("TAPIO_NO_TRACEFS_EVENTS").is_some() {
            return None;
        }
        let root = Path::new("/sys/kernel/tracing/instances");
        if !root.is_dir() {
            return None;
        }
        let dir = root.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let inst = TraceInstance(dir);
        let ev = inst.0.join("events").join(event);
        std::fs::write(inst.0.join("buffer_size_kb"), "4096").ok()?;
        std::fs::write(ev.join("filter"), filter).ok()?;
        std::fs::write(ev.join("enable"), "1").ok()?;
        Some(inst)
    }

    /// The records so far, one line each (the `trace` file, comments out).
    pub fn records(&self) -> Vec<String> {
        std::fs::read_to_string(self.0.join("trace"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("events/enable"), "0");
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// One record of an ftrace `trace` file: the task the event fired over
/// (`comm-tid`, the interrupted one for an event in softirq), its tid, the
/// time in seconds, and the event's `field=value` text.
pub struct TraceRecord<'a> {
    pub context: &'a str,
    pub tid: u32,
    pub secs: f64,
    pub fields: &'a str,
}

impl<'a> TraceRecord<'a> {
    /// `  comm-tid  [cpu] flags  secs: event: fields`; None for another shape.
    pub fn parse(line: &'a str) -> Option<TraceRecord<'a>> {
        let (context, rest) = line.split_once(" [")?;
        let context = context.trim();
        let tid = context.rsplit_once('-')?.1.parse().ok()?;
        let (_, rest) = rest.split_once("] ")?;
        let mut words = rest.split_whitespace();
        let _flags = words.next()?;
        let secs = words.next()?.strip_suffix(':')?.parse().ok()?;
        let fields = rest.split_once(": ")?.1.split_once(": ")?.1;
        Some(TraceRecord {
            context,
            tid,
            secs,
            fields,
        })
    }

    /// The numeric value of `key=` in the fields.
    pub fn field(&self, key: &str) -> Option<u64> {
        let v = self
            .fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
        v.parse().ok()
    }
}
