//! The controller's HTTP/1.1 connections.
//!
//! One event-loop thread (mio, edge-triggered epoll) owns every socket. It
//! reads each request head (httparse) and body to the end, under hard
//! bounds, and only then hands the whole request to the worker pool over a
//! bounded channel. A worker answers it and hands the encoded response
//! back; the loop writes it and keeps the connection for the agent's next
//! request. So an idle keep-alive connection costs a few hundred bytes and
//! no thread, and a slow or hostile client never holds a worker.
//!
//! Bounds, each with a named counter when it bites
//! (`tapio_controller_front_refusals_total{reason}`):
//! - connections open at once: at the limit, the connection idle the
//!   longest is closed to make room (a kept-alive connection is a cache:
//!   its agent opens a new one for its next request; counted in
//!   `tapio_controller_connections_closed_idle_total`); with none idle, the
//!   new one is closed at once (`busy`);
//! - the request head: 64 KiB (`head_too_large`, answered 431) and
//!   `io_timeout` from its first byte, or from the accept for a new
//!   connection (`head_timeout`: closed);
//! - the body: `max_body` bytes (a 413 from the route, so the route's own
//!   counters see it) and the same deadline as the head;
//! - all request bytes buffered at once (`buffer_budget`: answered 503);
//! - requests waiting for a worker (`busy`: answered 503);
//! - a malformed head or chunked body (`malformed`: answered 400, closed);
//! - a keep-alive connection with no request for `idle_timeout` is closed
//!   (counted in `tapio_controller_connections_closed_idle_total`).
//!
//! After an error answer the connection is closed for writing and its
//! input drained for at most `io_timeout`, so the client reads the answer
//! instead of a reset.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub use tapio_wire::limits::MAX_HTTP_HEAD_BYTES as MAX_HEAD_BYTES;
use tapio_wire::limits::{MAX_HTTP_HEADERS, MAX_HTTP_REQUESTS_QUEUED_PER_WORKER};

#[derive(Default)]
pub struct FrontCounters {
    pub refused_busy: AtomicU64,
    pub head_too_large: AtomicU64,
    pub head_timeouts: AtomicU64,
    pub buffer_budget: AtomicU64,
    pub malformed: AtomicU64,
    pub closed_idle: AtomicU64,
    pub evicted_idle: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
}

/// The limits of the front, from the command line.
pub struct Settings {
    pub max_body: usize,
    /// The time a client has to send a request's head and body, to take
    /// an answer, and to close after an error answer.
    pub io_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Most request bytes (heads and bodies) buffered at once.
    pub buffer_budget: usize,
    pub workers: usize,
}

/// One request, read whole.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Result<Vec<u8>, BodyError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over `max_body` (by its length, or while a chunked body streamed).
    TooLarge,
    /// A chunked body that is not valid chunked encoding.
    Broken,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// A route's answer.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The response on the wire, with its length and whether the connection
/// stays open.
pub fn encode(r: &Response, close: bool) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        if r.status == 304 { 0 } else { r.body.len() }
    );
    for (k, v) in &r.headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "\r\n"
    });
    let mut out = head.into_bytes();
    if r.status != 304 {
        out.extend_from_slice(&r.body);
    }
    out
}

/// What a failed non-blocking read or write means for the connection:
/// None to retry at once (interrupted), else wait for the socket or close.
fn on_io_error(e: &std::io::Error) -> Option<Step> {
    match e.kind() {
        ErrorKind::Interrupted => None,
        ErrorKind::WouldBlock => Some(Step::Wait),
        _ => Some(Step::Close),
    }
}

fn error_response(code: tapio_wire::ErrorCode, message: &str) -> Vec<u8> {
    let e = crate::errors::ApiError::new(code, message);
    encode(
        &Response {
            status: e.status(),
            headers: vec![("Content-Type", "application/json".into())],
            body: e.body(),
        },
        true,
    )
}

/// Identifies a connection across slot reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnId {
    slot: usize,
    generation: u32,
}

struct Job {
    conn: ConnId,
    req: Request,
    close: bool,
}

struct Done {
    conn: ConnId,
    bytes: Vec<u8>,
}

enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
}

enum BodyKind {
    Length(usize),
    Chunked(Chunked),
}

enum Phase {
    /// Reading a request head.
    Head,
    /// Reading the body of `req`.
    Body {
        req: Request,
        kind: BodyKind,
        body: Vec<u8>,
        close: bool,
    },
    /// At a worker.
    Busy,
    /// Writing `out`.
    Write,
    /// Answered with an error: reading and discarding until EOF or the
    /// deadline, so the client reads the answer rather than a reset.
    Drain,
}

struct Conn {
    sock: TcpStream,
    id: ConnId,
    phase: Phase,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    close_after: bool,
    /// The deadline of the phase (head, body, write, drain or idle).
    deadline: Instant,
    /// Bytes of `buf` and of a body charged against the budget.
    charged: usize,
    /// The body of the request at a worker: charged until it is answered.
    at_worker: usize,
    /// The connection has served a request (its head deadline then runs
    /// from the request's first byte, not from an idle wait).
    idle_since: Option<Instant>,
}

enum Step {
    /// Keep going: the phase moved on.
    Again,
    /// Wait for the socket (or a worker).
    Wait,
    Close,
}

struct Loop {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    open: usize,
    budget_used: usize,
    settings: Arc<Settings>,
    counters: Arc<FrontCounters>,
    jobs: Option<Sender<Job>>,
    scratch: Box<[u8]>,
    /// Connections in the order they went idle (entries whose connection
    /// has since moved on are skipped when met): the one to close first
    /// when the connection limit is reached.
    idle: std::collections::VecDeque<(ConnId, Instant)>,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// A running front: its event loop and worker threads.
pub struct Running {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Serves `listener` until `stop` returns true; then finishes the requests
/// in flight (for at most `io_timeout`) and returns.
pub fn run(
    listener: std::net::TcpListener,
    settings: Arc<Settings>,
    counters: Arc<FrontCounters>,
    handler: Arc<dyn Fn(Request) -> Response + Send + Sync>,
    stop: fn() -> bool,
) -> std::io::Result<Running> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let workers = settings.workers.max(1);
    let queued = workers * MAX_HTTP_REQUESTS_QUEUED_PER_WORKER;
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(queued);
    // Never more answers than requests in flight: sends never block.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Done>(queued + workers);
    let mut threads = Vec::with_capacity(workers + 1);
    for i in 0..workers {
        let (jobs, done, waker, handler) = (
            jobs_rx.clone(),
            done_tx.clone(),
            Arc::clone(&waker),
            Arc::clone(&handler),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("tapio-http-{i}"))
                .spawn(move || {
                    for job in jobs.iter() {
                        let resp = handler(job.req);
                        let bytes = encode(&resp, job.close);
                        if done
                            .send(Done {
                                conn: job.conn,
                                bytes,
                            })
                            .is_err()
                        {
                            break;
                        }
                        let _ = waker.wake();
                    }
                })?,
        );
    }
    drop(done_tx);
    let mut lp = Loop {
        poll,
        conns: Vec::new(),
        gens: Vec::new(),
        free: Vec::new(),
        open: 0,
        budget_used: 0,
        settings,
        counters,
        jobs: Some(jobs_tx),
        scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
        idle: std::collections::VecDeque::new(),
    };
    threads.push(
        std::thread::Builder::new()
            .name("tapio-front".into())
            .spawn(move || lp.run(listener, done_rx, stop))?,
    );
    Ok(Running { threads })
}

impl Loop {
    fn run(&mut self, mut listener: TcpListener, done: Receiver<Done>, stop: fn() -> bool) {
        let mut events = Events::with_capacity(1024);
        let tick = Duration::from_millis(250);
        let mut last_sweep = Instant::now();
        let mut accept_paused_until: Option<Instant> = None;
        let mut stopping_since: Option<Instant> = None;
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(tick)) {
                if e.kind() != ErrorKind::Interrupted {
                    log::error!("front: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => {
                        if stopping_since.is_none() && accept_paused_until.is_none() {
                            accept_paused_until = self.accept(&listener);
                        }
                    }
                    WAKER => {}
                    Token(t) => self.drive(t - FIRST_CONN),
                }
            }
            while let Ok(d) = done.try_recv() {
                self.answered(d);
            }
            if accept_paused_until.is_some_and(|t| now >= t) {
                accept_paused_until = None;
                if stopping_since.is_none() {
                    accept_paused_until = self.accept(&listener);
                }
            }
            if now.duration_since(last_sweep) >= tick {
                last_sweep = now;
                self.sweep(now, stopping_since.is_some());
            }
            if stopping_since.is_none() && stop() {
                stopping_since = Some(now);
                let _ = self.poll.registry().deregister(&mut listener);
                self.sweep(now, true);
            }
            if let Some(t) = stopping_since {
                if self.open == 0 || now.duration_since(t) >= self.settings.io_timeout {
                    break;
                }
            }
        }
        // Workers end when the queue closes.
        self.jobs = None;
    }

    /// Accepts until the backlog is empty. On an error such as EMFILE it
    /// pauses accepting briefly instead of spinning (returns until when).
    fn accept(&mut self, listener: &TcpListener) -> Option<Instant> {
        loop {
            match listener.accept() {
                Ok((mut sock, _)) => {
                    self.counters.connections_accepted.fetch_add(1, Relaxed);
                    if self.open >= self.settings.max_connections && !self.evict_idle() {
                        self.counters.refused_busy.fetch_add(1, Relaxed);
                        let _ = sock.shutdown(Shutdown::Both);
                        continue;
                    }
                    let _ = sock.set_nodelay(true);
                    let slot = match self.free.pop() {
                        Some(s) => s,
                        None => {
                            self.conns.push(None);
                            self.gens.push(0);
                            self.conns.len() - 1
                        }
                    };
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut sock,
                            Token(slot + FIRST_CONN),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    self.open += 1;
                    self.counters
                        .connections_open
                        .store(self.open as u64, Relaxed);
                    self.conns[slot] = Some(Conn {
                        sock,
                        id: ConnId {
                            slot,
                            generation: self.gens[slot],
                        },
                        phase: Phase::Head,
                        buf: Vec::new(),
                        out: Vec::new(),
                        out_at: 0,
                        close_after: false,
                        deadline: Instant::now() + self.settings.io_timeout,
                        charged: 0,
                        at_worker: 0,
                        idle_since: None,
                    });
                    // Data may already be waiting: an edge was consumed.
                    self.drive(slot);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Some(Instant::now() + Duration::from_millis(10)),
            }
        }
    }

    /// Closes the connection idle the longest, if any is; true when one
    /// was closed.
    fn evict_idle(&mut self) -> bool {
        while let Some((id, since)) = self.idle.pop_front() {
            let still_idle = self
                .conns
                .get(id.slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| {
                    c.id == id
                        && c.idle_since == Some(since)
                        && matches!(c.phase, Phase::Head)
                        && c.buf.is_empty()
                });
            if still_idle {
                self.counters.evicted_idle.fetch_add(1, Relaxed);
                self.close(id.slot);
                return true;
            }
        }
        false
    }

    /// Notes that a connection went idle; stale notes are dropped when
    /// they outnumber the connections (bounded at twice the limit).
    fn note_idle(&mut self, id: ConnId, since: Instant) {
        if self.idle.len() >= 2 * self.settings.max_connections.max(1) {
            let conns = &self.conns;
            self.idle.retain(|(id, since)| {
                conns
                    .get(id.slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.id == *id && c.idle_since == Some(*since))
            });
        }
        self.idle.push_back((id, since));
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) {
            self.budget_used = self.budget_used.saturating_sub(c.charged);
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.gens[slot] = self.gens[slot].wrapping_add(1);
            self.free.push(slot);
            self.open -= 1;
            self.counters
                .connections_open
                .store(self.open as u64, Relaxed);
        }
    }

    /// A worker's answer: written at once if the socket takes it.
    fn answered(&mut self, d: Done) {
        let Some(Some(c)) = self.conns.get_mut(d.conn.slot) else {
            return;
        };
        if c.id != d.conn || !matches!(c.phase, Phase::Busy) {
            return;
        }
        c.out = d.bytes;
        c.out_at = 0;
        c.at_worker = 0;
        c.phase = Phase::Write;
        c.deadline = Instant::now() + self.settings.io_timeout;
        self.drive(d.conn.slot);
    }

    /// Closes connections past their deadline. When stopping, idle ones
    /// and those still sending a request are closed too.
    fn sweep(&mut self, now: Instant, stopping: bool) {
        for slot in 0..self.conns.len() {
            let Some(c) = &self.conns[slot] else {
                continue;
            };
            let waiting_for_request = matches!(c.phase, Phase::Head) && c.buf.is_empty();
            if stopping && matches!(c.phase, Phase::Head | Phase::Body { .. } | Phase::Drain) {
                self.close(slot);
                continue;
            }
            if matches!(c.phase, Phase::Busy) || now < c.deadline {
                continue;
            }
            if waiting_for_request && c.idle_since.is_some() {
                self.counters.closed_idle.fetch_add(1, Relaxed);
            } else if matches!(c.phase, Phase::Head | Phase::Body { .. }) {
                self.counters.head_timeouts.fetch_add(1, Relaxed);
            }
            self.close(slot);
        }
    }

    fn drive(&mut self, slot: usize) {
        loop {
            let step = match self.conns.get_mut(slot) {
                Some(Some(_)) => self.step(slot),
                _ => return,
            };
            match step {
                Step::Again => {}
                Step::Wait => return,
                Step::Close => {
                    self.close(slot);
                    return;
                }
            }
        }
    }

    /// Re-charges the budget with the connection's buffered bytes; false
    /// when the budget cannot hold them.
    fn recharge(&mut self, slot: usize) -> bool {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return true;
        };
        let body = match &c.phase {
            Phase::Body { body, .. } => body.capacity(),
            _ => 0,
        };
        let now = c.buf.capacity() + body + c.at_worker;
        let others = self.budget_used - c.charged;
        if now > c.charged && others + now > self.settings.buffer_budget {
            return false;
        }
        self.budget_used = others + now;
        c.charged = now;
        true
    }

    /// Turns the connection into an error answer followed by a drain.
    fn refuse(&mut self, slot: usize, bytes: Vec<u8>) -> Step {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Step::Close;
        };
        c.phase = Phase::Write;
        c.out = bytes;
        c.out_at = 0;
        c.close_after = true;
        c.buf = Vec::new();
        c.deadline = Instant::now() + self.settings.io_timeout;
        self.recharge(slot);
        Step::Again
    }

    /// Hands a whole request to the workers, or answers 503 when their
    /// queue is full.
    fn dispatch(&mut self, slot: usize, req: Request, close: bool) -> Step {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Step::Close;
        };
        let conn = c.id;
        if c.buf.is_empty() {
            // An idle kept-alive connection holds no buffer.
            c.buf = Vec::new();
        }
        c.phase = Phase::Busy;
        c.close_after = close;
        let body = req.body.as_ref().map_or(0, Vec::capacity);
        let Some(jobs) = &self.jobs else {
            return Step::Close;
        };
        match jobs.try_send(Job { conn, req, close }) {
            Ok(()) => {
                if let Some(Some(c)) = self.conns.get_mut(slot) {
                    c.at_worker = body;
                }
                self.recharge(slot);
                Step::Wait
            }
            Err(TrySendError::Full(_)) => {
                self.counters.refused_busy.fetch_add(1, Relaxed);
                self.refuse(
                    slot,
                    error_response(
                        tapio_wire::ErrorCode::Unavailable,
                        "the controller is busy: retry later",
                    ),
                )
            }
            Err(TrySendError::Disconnected(_)) => Step::Close,
        }
    }

    /// Reads what the socket has into `buf`; Err(step) on EOF, error or
    /// nothing to read.
    fn fill(&mut self, slot: usize, limit: usize) -> Result<(), Step> {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Err(Step::Close);
        };
        let room = limit.saturating_sub(c.buf.len()).min(self.scratch.len());
        if room == 0 {
            return Ok(());
        }
        loop {
            match c.sock.read(&mut self.scratch[..room]) {
                Ok(0) => return Err(Step::Close),
                Ok(n) => {
                    if c.buf.is_empty() && matches!(c.phase, Phase::Head) && c.idle_since.is_some()
                    {
                        // A request begins: its head has the deadline.
                        c.idle_since = None;
                        c.deadline = Instant::now() + self.settings.io_timeout;
                    }
                    c.buf.extend_from_slice(&self.scratch[..n]);
                    break;
                }
                Err(e) => {
                    if let Some(step) = on_io_error(&e) {
                        return Err(step);
                    }
                }
            }
        }
        if self.recharge(slot) {
            Ok(())
        } else {
            self.counters.buffer_budget.fetch_add(1, Relaxed);
            Err(self.refuse(
                slot,
                error_response(
                    tapio_wire::ErrorCode::Unavailable,
                    "the controller's request buffers are full: retry later",
                ),
            ))
        }
    }

    fn step(&mut self, slot: usize) -> Step {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Step::Close;
        };
        match &mut c.phase {
            Phase::Busy => Step::Wait,
            Phase::Write => {
                while c.out_at < c.out.len() {
                    match c.sock.write(&c.out[c.out_at..]) {
                        Ok(0) => return Step::Close,
                        Ok(n) => c.out_at += n,
                        Err(e) => {
                            if let Some(step) = on_io_error(&e) {
                                return step;
                            }
                        }
                    }
                }
                c.out = Vec::new();
                c.out_at = 0;
                let now = Instant::now();
                if c.close_after {
                    let _ = c.sock.shutdown(Shutdown::Write);
                    c.phase = Phase::Drain;
                    c.buf = Vec::new();
                    c.deadline = now + self.settings.io_timeout;
                } else {
                    c.phase = Phase::Head;
                    c.idle_since = Some(now);
                    c.deadline = if c.buf.is_empty() {
                        now + self.settings.idle_timeout
                    } else {
                        now + self.settings.io_timeout
                    };
                    let id = c.id;
                    self.note_idle(id, now);
                }
                self.recharge(slot);
                Step::Again
            }
            Phase::Drain => loop {
                match c.sock.read(&mut self.scratch) {
                    Ok(0) => return Step::Close,
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(step) = on_io_error(&e) {
                            return step;
                        }
                    }
                }
            },
            Phase::Head => self.head(slot),
            Phase::Body { .. } => self.body(slot),
        }
    }

    fn head(&mut self, slot: usize) -> Step {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Step::Close;
        };
        let head = match parse_head(&c.buf) {
            Head::Partial => {
                if c.buf.len() > MAX_HEAD_BYTES {
                    return self.too_large_head(slot);
                }
                // Room for the limit plus one read, to see it exceeded.
                return match self.fill(slot, MAX_HEAD_BYTES + 1) {
                    Ok(()) => Step::Again,
                    Err(s) => s,
                };
            }
            Head::TooLarge => return self.too_large_head(slot),
            Head::Malformed(why) => return self.malformed(slot, why),
            Head::Complete(h) => h,
        };
        c.buf.drain(..head.len);
        let (mut req, close) = (head.req, head.close);
        let kind = match (head.chunked, head.length) {
            (true, _) => BodyKind::Chunked(Chunked::Size),
            (false, Some(n)) if n > self.settings.max_body => {
                // Answered before the body is read; the route counts it.
                req.body = Err(BodyError::TooLarge);
                return self.dispatch(slot, req, true);
            }
            (false, Some(n)) if n > 0 => BodyKind::Length(n),
            _ => return self.dispatch(slot, req, close),
        };
        if head.expect_continue {
            // Best effort: 25 bytes into an idle socket's send buffer.
            let _ = c.sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        c.phase = Phase::Body {
            req,
            kind,
            body: Vec::new(),
            close,
        };
        Step::Again
    }

    fn too_large_head(&mut self, slot: usize) -> Step {
        self.counters.head_too_large.fetch_add(1, Relaxed);
        self.refuse(
            slot,
            error_response(
                tapio_wire::ErrorCode::HeadersTooLarge,
                "request headers exceed 64 KiB",
            ),
        )
    }

    fn malformed(&mut self, slot: usize, why: &str) -> Step {
        self.counters.malformed.fetch_add(1, Relaxed);
        self.refuse(
            slot,
            error_response(tapio_wire::ErrorCode::InvalidField, why),
        )
    }

    /// Moves body bytes out of `buf`; reads more when they run out.
    fn body(&mut self, slot: usize) -> Step {
        let max_body = self.settings.max_body;
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Step::Close;
        };
        let Phase::Body { kind, body, .. } = &mut c.phase else {
            return Step::Close;
        };
        let mut outcome: Option<Result<(), BodyError>> = None;
        match kind {
            BodyKind::Length(n) => {
                if body.capacity() < *n {
                    body.reserve_exact(*n - body.len());
                }
                let take = (*n - body.len()).min(c.buf.len());
                body.extend_from_slice(&c.buf[..take]);
                c.buf.drain(..take);
                if body.len() == *n {
                    outcome = Some(Ok(()));
                }
            }
            BodyKind::Chunked(state) => {
                while outcome.is_none() && !c.buf.is_empty() {
                    match state {
                        Chunked::Size => match httparse::parse_chunk_size(&c.buf) {
                            Ok(httparse::Status::Complete((used, size))) => {
                                c.buf.drain(..used);
                                *state = if size == 0 {
                                    Chunked::Trailer
                                } else {
                                    Chunked::Data(size)
                                };
                            }
                            Ok(httparse::Status::Partial) if c.buf.len() < 1024 => break,
                            _ => outcome = Some(Err(BodyError::Broken)),
                        },
                        Chunked::Data(left) => {
                            let take = (*left).min(c.buf.len() as u64) as usize;
                            if body.len() + take > max_body {
                                outcome = Some(Err(BodyError::TooLarge));
                                break;
                            }
                            body.extend_from_slice(&c.buf[..take]);
                            c.buf.drain(..take);
                            *left -= take as u64;
                            if *left == 0 {
                                *state = Chunked::DataEnd;
                            }
                        }
                        Chunked::DataEnd => {
                            if c.buf.len() < 2 {
                                break;
                            }
                            if &c.buf[..2] != b"\r\n" {
                                outcome = Some(Err(BodyError::Broken));
                                break;
                            }
                            c.buf.drain(..2);
                            *state = Chunked::Size;
                        }
                        Chunked::Trailer => {
                            let Some(i) = c.buf.windows(2).position(|w| w == b"\r\n") else {
                                if c.buf.len() > MAX_HEAD_BYTES {
                                    outcome = Some(Err(BodyError::Broken));
                                }
                                break;
                            };
                            c.buf.drain(..i + 2);
                            if i == 0 {
                                outcome = Some(Ok(()));
                            }
                        }
                    }
                }
            }
        }
        match outcome {
            Some(result) => {
                let Phase::Body {
                    mut req,
                    body,
                    close,
                    ..
                } = std::mem::replace(&mut c.phase, Phase::Busy)
                else {
                    return Step::Close;
                };
                // An error ends the connection: what follows is unknown.
                let close = close || result.is_err();
                req.body = result.map(|()| body);
                self.dispatch(slot, req, close)
            }
            None => {
                // Enough for the rest of a length body, or one read.
                let limit = match kind {
                    BodyKind::Length(n) => *n - body.len(),
                    BodyKind::Chunked(_) => self.scratch.len(),
                };
                match self.fill(slot, limit) {
                    Ok(()) => Step::Again,
                    Err(s) => s,
                }
            }
        }
    }
}

struct ParsedHead {
    /// Bytes of the head, blank line included.
    len: usize,
    req: Request,
    close: bool,
    length: Option<usize>,
    chunked: bool,
    expect_continue: bool,
}

enum Head {
    Partial,
    TooLarge,
    Malformed(&'static str),
    Complete(ParsedHead),
}

/// Parses the request head at the start of `buf`, if it is all there.
fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return Head::TooLarge,
        Err(_) => return Head::Malformed("the request head is not valid HTTP/1.1"),
    };
    if len > MAX_HEAD_BYTES {
        return Head::TooLarge;
    }
    let http11 = parsed.version == Some(1);
    let mut close = !http11;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut owned = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let v = String::from_utf8_lossy(h.value).trim().to_string();
        let has = |token: &str| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
        if h.name.eq_ignore_ascii_case("content-length") {
            match v.parse::<usize>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Head::Malformed("a bad or repeated Content-Length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !v.eq_ignore_ascii_case("chunked") {
                return Head::Malformed("only the chunked transfer coding is accepted");
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has("close") {
                close = true;
            } else if has("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = http11 && v.eq_ignore_ascii_case("100-continue");
        }
        owned.push((h.name.to_string(), v));
    }
    if chunked && length.is_some() {
        return Head::Malformed("both Content-Length and Transfer-Encoding");
    }
    Head::Complete(ParsedHead {
        len,
        req: Request {
            method: parsed.method.unwrap_or("").to_string(),
            target: parsed.path.unwrap_or("").to_string(),
            headers: owned,
            body: Ok(Vec::new()),
        },
        close,
        length,
        chunked,
        expect_continue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_encoded_with_length_and_connection() {
        let r = Response {
            status: 200,
            headers: vec![("Content-Type", "application/json".into())],
            body: b"{}".to_vec(),
        };
        assert_eq!(
            String::from_utf8(encode(&r, false)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
        );
        assert!(
            String::from_utf8(encode(&r, true))
                .unwrap()
                .ends_with("Connection: close\r\n\r\n{}")
        );
        let nm = Response {
            status: 304,
            headers: vec![("ETag", "\"x\"".into())],
            body: b"ignored".to_vec(),
        };
        assert_eq!(
            String::from_utf8(encode(&nm, false)).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\nETag: \"x\"\r\n\r\n"
        );
    }
}
