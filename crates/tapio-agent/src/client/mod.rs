//! The outbound controller client (tapio-wire/v1), on its own thread.
//!
//! The sender thread hands each event's JSON line to a bounded queue
//! ([`ControllerSink`]); a full queue is a counted drop
//! (`tapio_sink_dropped_events_total{sink="controller"}`). The strings
//! come back once their batch is done, so a steady stream allocates
//! nothing per event. This thread
//! turns the queue into batches and talks to the controller: hello, config
//! polls with If-None-Match, heartbeats, event batches with bounded
//! exponential backoff and jitter. Local sinks never wait for any of it,
//! and the poller never sees it at all.
//!
//! A config the controller serves is validated here, then handed to the
//! main thread, which writes it to the kernel maps; only after that is its
//! hash reported as applied in heartbeats.

pub mod http;

use crate::metrics::{Metrics, SinkId};
use crate::observers::NAMES as OBSERVER_NAMES;
use crate::sink::{Line, Sink, SinkResult};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use http::{Client, HttpError, Response};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tapio_wire::{
    ConfigResponse, DegradedReason, EventBatchResponse, HeartbeatRequest, HeartbeatResponse,
    HelloRequest, HelloResponse, Observer, ObserverStatus, WIRE_VERSION,
};

/// `tapio_controller_send_failures_total{kind}` indexes (metrics.rs).
#[derive(Clone, Copy)]
enum Failure {
    Connect = 0,
    Timeout = 1,
    HttpStatus = 2,
    Redirect = 3,
    Io = 4,
    GaveUp = 5,
}

/// The config applied to the kernel, as heartbeats report it.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Controller-served config applied: its hash and version.
    pub hash: String,
    pub version: String,
}

/// A controller config for the main thread to apply.
pub struct ConfigUpdate {
    pub response: ConfigResponse,
}

/// The sender's side: event lines into a bounded queue. Each line is
/// copied into a string the client gave back (`spare`) when there is one:
/// a new one is allocated only when more lines are in flight than the
/// client has returned (`CONTROLLER_SPARE_LINES`).
pub struct ControllerSink {
    tx: Sender<String>,
    spare: Receiver<String>,
}

/// The two queues between the sender's [`ControllerSink`] and the
/// client: lines out, emptied strings back.
pub fn line_queues(capacity: usize) -> (ControllerSink, Receiver<String>, Sender<String>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let (spare_tx, spare) = crossbeam_channel::bounded(tapio_wire::limits::CONTROLLER_SPARE_LINES);
    (ControllerSink { tx, spare }, rx, spare_tx)
}

impl Sink for ControllerSink {
    fn write_batch(&mut self, lines: &[Line], buf: &str) -> SinkResult {
        let mut r = SinkResult::default();
        for l in lines {
            // Without the trailing newline: the line is one JSON object.
            let line = buf[l.range.clone()].trim_end_matches('\n');
            let mut s = self.spare.try_recv().unwrap_or_default();
            s.clear();
            s.push_str(line);
            match self.tx.try_send(s) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => r.dropped += 1,
            }
        }
        r
    }
}

pub struct ClientConfig {
    pub agent_id: String,
    pub node_name: String,
    pub instance_id: String,
    pub kernel_release: String,
    /// Most attempts per batch before it is dropped (counted).
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a clean shutdown may spend delivering what is queued.
    pub drain_timeout: Duration,
}

pub struct ClientThread {
    pub http: Client,
    pub cfg: ClientConfig,
    pub rx: Receiver<String>,
    /// Lines whose batch is done go back to the sink here.
    pub spare: Sender<String>,
    pub metrics: Arc<Metrics>,
    pub shared: crate::config::SharedConfig,
    pub applied: Arc<Mutex<Applied>>,
    pub updates: Sender<ConfigUpdate>,
    pub started: Instant,
}

struct Pending {
    sequence: u64,
    lines: Vec<String>,
    attempts: u32,
    next_try: Instant,
    /// An attempt failed after the request was sent (timeout, cut
    /// response): the controller may have stored the batch.
    maybe_delivered: bool,
}

/// A small xorshift for backoff jitter: no dependency, good enough.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `d` scaled by a factor in [0.75, 1.25).
    fn spread(&mut self, d: Duration) -> Duration {
        let f = 750 + self.next() % 500;
        d * f as u32 / 1000
    }
}

impl ClientThread {
    fn fail(&self, e: &HttpError) {
        let kind = match e {
            HttpError::Connect(_) => Failure::Connect,
            HttpError::Timeout => Failure::Timeout,
            HttpError::Io(_) | HttpError::Malformed(_) | HttpError::TooLarge => Failure::Io,
        };
        self.metrics.controller_send_failures[kind as usize].fetch_add(1, Relaxed);
    }

    /// A non-2xx answer: counted by class.
    fn fail_status(&self, r: &Response) {
        let kind = if (300..400).contains(&r.status) {
            Failure::Redirect
        } else {
            Failure::HttpStatus
        };
        self.metrics.controller_send_failures[kind as usize].fetch_add(1, Relaxed);
    }

    fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ()> {
        match self.http.request("POST", path, &[], Some(body)) {
            Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).map_err(|_| {
                self.metrics.controller_send_failures[Failure::Io as usize].fetch_add(1, Relaxed);
            }),
            Ok(r) => {
                self.fail_status(&r);
                Err(())
            }
            Err(e) => {
                self.fail(&e);
                Err(())
            }
        }
    }

    fn hello(&self) -> Result<HelloResponse, ()> {
        let h = HelloRequest {
            wire_version: WIRE_VERSION.into(),
            agent_id: self.cfg.agent_id.clone(),
            node_name: self.cfg.node_name.clone(),
            instance_id: self.cfg.instance_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: self.cfg.kernel_release.clone(),
            arch: std::env::consts::ARCH.into(),
            capabilities: (0..OBSERVER_NAMES.len())
                .filter(|o| self.metrics.state(*o) == tapio_wire::ObserverState::Up)
                .map(|o| format!("observer:{}", OBSERVER_NAMES[o]))
                .collect(),
        };
        self.post("/v1/agents/hello", &serde_json::to_vec(&h).map_err(|_| ())?)
    }

    /// One config poll. Returns false when the fetch failed.
    fn poll_config(&self, etag: &mut Option<String>) -> bool {
        let path = format!(
            "/v1/agents/config?agent_id={}&node_name={}",
            encode(&self.cfg.agent_id),
            encode(&self.cfg.node_name)
        );
        let inm = etag.clone();
        let headers: Vec<(&str, &str)> = inm
            .as_deref()
            .map(|t| vec![("If-None-Match", t)])
            .unwrap_or_default();
        let m = &self.metrics;
        match self.http.request("GET", &path, &headers, None) {
            Ok(r) if r.status == 304 => {
                m.config_fetch[1].fetch_add(1, Relaxed);
                true
            }
            Ok(r) if r.status == 200 => match serde_json::from_slice::<ConfigResponse>(&r.body) {
                Ok(cr) if cr.validate().is_ok() => {
                    let tag = format!("\"{}\"", cr.config_hash);
                    if r.header("ETag").is_some_and(|t| t != tag) {
                        log::warn!(
                            "controller ETag disagrees with the config hash; using the hash"
                        );
                    }
                    *etag = Some(tag);
                    m.config_fetch[0].fetch_add(1, Relaxed);
                    let _ = self.updates.send(ConfigUpdate { response: cr });
                    true
                }
                _ => {
                    m.config_fetch[2].fetch_add(1, Relaxed);
                    log::error!(
                        "the controller served a config this agent rejects; keeping the current one"
                    );
                    false
                }
            },
            Ok(r) => {
                self.fail_status(&r);
                m.config_fetch[3].fetch_add(1, Relaxed);
                false
            }
            Err(e) => {
                self.fail(&e);
                m.config_fetch[3].fetch_add(1, Relaxed);
                false
            }
        }
    }

    fn heartbeat(&self, fetch_failing: bool, send_failing: bool) -> Result<HeartbeatResponse, ()> {
        let applied = self.applied.lock().map(|a| a.clone()).unwrap_or_default();
        let mut degraded = Vec::new();
        if applied.hash.is_empty() {
            degraded.push(DegradedReason::Unconfigured);
        }
        if (0..OBSERVER_NAMES.len())
            .any(|o| self.metrics.state(o) == tapio_wire::ObserverState::Failed)
        {
            degraded.push(DegradedReason::ObserverFailed);
        }
        if fetch_failing {
            degraded.push(DegradedReason::ConfigFetchFailing);
        }
        if send_failing {
            degraded.push(DegradedReason::ControllerSendFailing);
        }
        let hb = HeartbeatRequest {
            wire_version: WIRE_VERSION.into(),
            agent_id: self.cfg.agent_id.clone(),
            instance_id: self.cfg.instance_id.clone(),
            node_name: self.cfg.node_name.clone(),
            config_version: if applied.hash.is_empty() {
                tapio_wire::UNCONFIGURED_VERSION.into()
            } else {
                applied.version.clone()
            },
            config_hash: applied.hash,
            uptime_secs: self.started.elapsed().as_secs(),
            counters: self.metrics.samples().into_iter().collect(),
            observers: Observer::ALL
                .iter()
                .enumerate()
                .map(|(i, o)| ObserverStatus {
                    observer: *o,
                    state: self.metrics.state(i),
                })
                .collect(),
            degraded_reasons: degraded,
        };
        self.post(
            "/v1/agents/heartbeat",
            &serde_json::to_vec(&hb).map_err(|_| ())?,
        )
    }

    fn batch_body(&self, p: &Pending) -> Vec<u8> {
        let mut b = Vec::with_capacity(256 + p.lines.iter().map(|l| l.len() + 1).sum::<usize>());
        let head = serde_json::json!({
            "wire_version": WIRE_VERSION,
            "agent_id": self.cfg.agent_id,
            "instance_id": self.cfg.instance_id,
            "node_name": self.cfg.node_name,
            "sequence": p.sequence,
        });
        let head = head.to_string();
        // `{...,"sequence":N` + `,"events":[` lines `]}`
        b.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        b.extend_from_slice(b",\"events\":[");
        for (i, l) in p.lines.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(l.as_bytes());
        }
        b.extend_from_slice(b"]}");
        b
    }

    /// Hands a finished batch's strings back to the sink, as many as the
    /// spare queue takes; the rest are freed.
    fn give_back(&self, p: Option<Pending>) {
        for line in p.into_iter().flat_map(|p| p.lines) {
            if self.spare.try_send(line).is_err() {
                break;
            }
        }
    }

    /// Gives a batch up. Its events are counted as dropped, or, when an
    /// attempt may have reached the controller, as unconfirmed: they may be
    /// in the export, and the sequence/id de-duplication keeps them once.
    fn drop_batch(&self, p: &Pending, why: &str) {
        let n = p.lines.len() as u64;
        if p.maybe_delivered {
            self.metrics.controller_unconfirmed.fetch_add(n, Relaxed);
            log::warn!(
                "controller: gave up on batch {} ({n} events, delivery unconfirmed): {why}",
                p.sequence
            );
        } else {
            self.metrics.sink_dropped[SinkId::Controller as usize].fetch_add(n, Relaxed);
            log::warn!(
                "controller: dropped batch {} ({n} events): {why}",
                p.sequence
            );
        }
    }

    /// One attempt to deliver `p`. Ok(known_agent) when it was delivered
    /// (or dropped for good), Err(()) to retry.
    fn send_batch(&self, p: &mut Pending) -> Result<bool, ()> {
        let body = self.batch_body(p);
        p.attempts += 1;
        let res = self.http.request("POST", "/v1/events", &[], Some(&body));
        let m = &self.metrics;
        match res {
            Ok(r) if r.status == 200 => {
                m.controller_events_sent
                    .fetch_add(p.lines.len() as u64, Relaxed);
                let known = serde_json::from_slice::<EventBatchResponse>(&r.body)
                    .map(|b| b.known_agent)
                    .unwrap_or(true);
                Ok(known)
            }
            Ok(r) if (400..500).contains(&r.status) && r.status != 408 && r.status != 429 => {
                // The controller will never take this batch: drop, count.
                self.fail_status(&r);
                m.sink_failures[SinkId::Controller as usize].fetch_add(1, Relaxed);
                self.drop_batch(p, &format!("rejected with HTTP {}", r.status));
                Ok(true)
            }
            Ok(r) => {
                self.fail_status(&r);
                Err(())
            }
            Err(e) => {
                if !matches!(e, HttpError::Connect(_)) {
                    p.maybe_delivered = true;
                }
                self.fail(&e);
                Err(())
            }
        }
    }

    /// Hello, config polls and heartbeats, each when it is due.
    fn converse(&self, session: &mut Session, control: &mut Control, jitter: &mut Jitter) {
        let now = Instant::now();
        match session {
            Session::Introducing { next, backoff } => {
                if now < *next {
                    return;
                }
                match self.hello() {
                    Ok(h) => {
                        log::info!(
                            "controller {}: hello accepted (config_version {})",
                            self.http.endpoint,
                            h.config_version
                        );
                        *session = Session::Ready {
                            hello: Box::new(h),
                            next_poll: now,
                            next_heartbeat: now,
                        };
                    }
                    Err(()) => {
                        *next = now + jitter.spread(*backoff);
                        *backoff = (*backoff * 2).min(self.cfg.backoff_max);
                    }
                }
            }
            Session::Ready {
                hello,
                next_poll,
                next_heartbeat,
            } => {
                let poll_every =
                    Duration::from_secs(u64::from(hello.config_poll_interval_secs.max(1)));
                let hb_every = Duration::from_secs(u64::from(hello.heartbeat_interval_secs.max(1)));
                if now >= *next_poll {
                    control.fetch_failing = !self.poll_config(&mut control.etag);
                    *next_poll = now + jitter.spread(control.next_fetch_in(poll_every));
                }
                if now >= *next_heartbeat {
                    *next_heartbeat = now + hb_every;
                    let dropped =
                        self.metrics.sink_dropped[SinkId::Controller as usize].load(Relaxed);
                    let sending_failed = dropped > control.drops_at_last_hb;
                    control.drops_at_last_hb = dropped;
                    if let Ok(r) = self.heartbeat(control.fetch_failing, sending_failed) {
                        if !r.known_agent {
                            log::info!(
                                "controller {} does not know this agent; saying hello again",
                                self.http.endpoint
                            );
                            *session = self.introduce_now();
                        }
                    }
                }
            }
        }
    }

    /// A session that says hello at once (the controller forgot us).
    fn introduce_now(&self) -> Session {
        Session::Introducing {
            next: Instant::now(),
            backoff: self.cfg.backoff_base,
        }
    }

    /// Takes lines from the channel into the outbox, waiting at most until
    /// the next thing is due. Bounded: past `cap` lines the channel fills
    /// up and the sink counts the drops.
    fn gather(&self, out: &mut Outbox, session: &Session, b: &Batching) {
        let now = Instant::now();
        let mut wait = match &out.pending {
            Some(p) => p.next_try.saturating_duration_since(now),
            None if out.queue.len() >= b.max_events => Duration::ZERO,
            None => out
                .first_queued
                .map_or(b.flush, |t| (t + b.flush).saturating_duration_since(now)),
        };
        if let Session::Introducing { next, .. } = session {
            wait = wait.max(next.saturating_duration_since(now));
        }
        let wait = wait.min(Duration::from_millis(200));
        if out.closed_at.is_some() {
            return;
        }
        if out.queue.len() < b.cap {
            match self.rx.recv_timeout(wait) {
                Ok(l) => out.queue.push_back(l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => out.closed_at = Some(Instant::now()),
            }
            while out.queue.len() < b.cap {
                match self.rx.try_recv() {
                    Ok(l) => out.queue.push_back(l),
                    Err(_) => break,
                }
            }
        } else {
            std::thread::sleep(wait);
        }
        if out.first_queued.is_none() && !out.queue.is_empty() {
            out.first_queued = Some(Instant::now());
        }
    }

    /// Out of time at shutdown: everything still held is dropped, counted.
    fn abandon(&self, out: &mut Outbox) {
        let n = out.queue.len() as u64;
        if let Some(p) = out.pending.take() {
            self.drop_batch(&p, "shutdown");
        }
        if n > 0 {
            self.metrics.sink_dropped[SinkId::Controller as usize].fetch_add(n, Relaxed);
            self.metrics.controller_send_failures[Failure::GaveUp as usize].fetch_add(1, Relaxed);
            log::warn!("controller: {n} events not delivered before shutdown (counted)");
        }
    }

    /// Sends the batch in flight if its attempt is due; schedules a retry
    /// with backoff, or gives it up (counted) after `max_attempts`.
    /// Returns `false` when the controller does not know this agent.
    fn deliver(&self, out: &mut Outbox, jitter: &mut Jitter) -> bool {
        let now = Instant::now();
        let Some(p) = out.pending.as_mut().filter(|p| now >= p.next_try) else {
            return true;
        };
        match self.send_batch(p) {
            Ok(known) => {
                self.give_back(out.pending.take());
                known
            }
            Err(()) if p.attempts >= self.cfg.max_attempts => {
                self.metrics.controller_send_failures[Failure::GaveUp as usize]
                    .fetch_add(1, Relaxed);
                self.metrics.sink_failures[SinkId::Controller as usize].fetch_add(1, Relaxed);
                self.drop_batch(p, "retries exhausted");
                self.give_back(out.pending.take());
                true
            }
            Err(()) => {
                let exp = self.cfg.backoff_base
                    * 2u32.saturating_pow(p.attempts.saturating_sub(1)).min(1024);
                p.next_try = Instant::now() + jitter.spread(exp.min(self.cfg.backoff_max));
                true
            }
        }
    }

    /// Runs until the queue is closed (the sender stopped) and drained, or
    /// the drain timeout after closing passes. Each turn: talk to the
    /// controller (`Session`), gather events (`Outbox`), and, once
    /// introduced, cut a batch when one is due and deliver it.
    pub fn run(self) {
        let mut jitter = Jitter(
            self.cfg
                .instance_id
                .bytes()
                .fold(0x9e37_79b9_7f4a_7c15u64, |a, b| {
                    a.rotate_left(5) ^ u64::from(b)
                })
                | 1,
        );
        let mut session = self.introduce_now();
        let mut control = Control::default();
        let mut out = Outbox::default();
        loop {
            self.converse(&mut session, &mut control, &mut jitter);
            let b = Batching::of(&self.shared.snapshot().1);
            self.gather(&mut out, &session, &b);
            let now = Instant::now();
            if let Some(t) = out.closed_at {
                if now.duration_since(t) >= self.cfg.drain_timeout {
                    self.abandon(&mut out);
                    return;
                }
                if out.queue.is_empty() && out.pending.is_none() {
                    return;
                }
                if let Session::Introducing { next, .. } = &session {
                    if now < *next {
                        std::thread::sleep(Duration::from_millis(20).min(*next - now));
                        continue;
                    }
                }
            }
            if matches!(session, Session::Introducing { .. }) {
                continue;
            }
            out.cut_batch_if_due(now, &b);
            if !self.deliver(&mut out, &mut jitter) {
                session = self.introduce_now();
            }
            // While a batch waits for its retry, the queue keeps filling
            // (bounded by the channel, drops counted by the sink).
            if let Some(p) = &out.pending {
                let now = Instant::now();
                if p.next_try > now && out.closed_at.is_some() {
                    std::thread::sleep((p.next_try - now).min(Duration::from_millis(50)));
                }
            }
        }
    }
}

/// Where the client stands with the controller.
enum Session {
    /// No hello accepted yet (or the controller forgot this agent): the
    /// next attempt is at `next`; a failure doubles `backoff`.
    Introducing { next: Instant, backoff: Duration },
    /// Hello accepted: config polls and heartbeats on their own schedules.
    Ready {
        hello: Box<HelloResponse>,
        next_poll: Instant,
        next_heartbeat: Instant,
    },
}

/// What the heartbeats report, and the config poll's validator.
#[derive(Default)]
struct Control {
    etag: Option<String>,
    fetch_failing: bool,
    /// Config polls failed in a row.
    fetch_failures: u32,
    drops_at_last_hb: u64,
}

impl Control {
    /// When to poll the config next (before jitter): the controller's
    /// interval after a success; after `n` failures in a row the interval
    /// doubled `n` times, up to `FETCH_BACKOFF_FACTOR` intervals (and never
    /// beyond `FETCH_BACKOFF_MAX`, unless the interval itself is longer),
    /// so a fleet backs away from a controller that fails.
    fn next_fetch_in(&mut self, interval: Duration) -> Duration {
        if !self.fetch_failing {
            self.fetch_failures = 0;
            return interval;
        }
        self.fetch_failures = self.fetch_failures.saturating_add(1);
        let doubled = interval.saturating_mul(1u32 << self.fetch_failures.min(16));
        let cap = interval
            .saturating_mul(FETCH_BACKOFF_FACTOR)
            .min(FETCH_BACKOFF_MAX)
            .max(interval);
        doubled.min(cap)
    }
}

/// Failed config polls back off to at most this many intervals...
const FETCH_BACKOFF_FACTOR: u32 = 8;
/// ...and at most this long.
const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The events the client holds: a bounded queue and at most one batch in
/// flight.
#[derive(Default)]
struct Outbox {
    queue: std::collections::VecDeque<String>,
    first_queued: Option<Instant>,
    pending: Option<Pending>,
    sequence: u64,
    /// When the sender closed the channel (shutdown): drain, then stop.
    closed_at: Option<Instant>,
}

impl Outbox {
    /// Cuts the next batch (at most `max_events` lines and `max_bytes`)
    /// when none is in flight and one is due: full, flush interval
    /// reached, or shutting down.
    fn cut_batch_if_due(&mut self, now: Instant, b: &Batching) {
        let due = self.queue.len() >= b.max_events
            || self.closed_at.is_some()
            || self
                .first_queued
                .is_some_and(|t| now.duration_since(t) >= b.flush);
        if self.pending.is_some() || self.queue.is_empty() || !due {
            return;
        }
        let mut lines = Vec::new();
        let mut bytes = 256;
        while let Some(l) = self.queue.front() {
            if lines.len() >= b.max_events
                || (!lines.is_empty() && bytes + l.len() + 1 > b.max_bytes)
            {
                break;
            }
            bytes += l.len() + 1;
            if let Some(l) = self.queue.pop_front() {
                lines.push(l);
            }
        }
        self.first_queued = (!self.queue.is_empty()).then_some(now);
        self.sequence += 1;
        self.pending = Some(Pending {
            sequence: self.sequence,
            lines,
            attempts: 0,
            next_try: now,
            maybe_delivered: false,
        });
    }
}

/// The batching knobs of the config in force.
struct Batching {
    max_events: usize,
    max_bytes: usize,
    flush: Duration,
    /// Most lines held before the channel is left to fill.
    cap: usize,
}

impl Batching {
    fn of(cfg: &tapio_wire::CompiledConfig) -> Batching {
        let max_events = cfg.batching.max_events as usize;
        Batching {
            max_events,
            max_bytes: cfg.batching.max_bytes as usize,
            flush: Duration::from_millis(u64::from(cfg.batching.flush_interval_ms)),
            cap: max_events.saturating_mul(4),
        }
    }
}

/// Percent-encoding for query values.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// A string the client gives back carries the next line: the sink
    /// allocates only when none is spare. A full queue is a counted drop.
    #[test]
    fn the_sink_reuses_the_strings_the_client_gives_back() {
        let (mut sink, rx, spare) = line_queues(2);
        let buf = "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let line = |range: std::ops::Range<usize>| Line {
            range,
            timestamp_ns: 1,
        };
        let r = sink.write_batch(&[line(0..8), line(8..16), line(16..24)], buf);
        assert_eq!(r.dropped, 1, "the queue holds two lines");
        let (a, b) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        assert_eq!((a.as_str(), b.as_str()), ("{\"a\":1}", "{\"b\":2}"));
        let at = a.as_ptr();
        spare.try_send(a).unwrap();
        let r = sink.write_batch(&[line(16..24)], buf);
        assert_eq!(r, SinkResult::default());
        let c = rx.try_recv().unwrap();
        assert_eq!(c, "{\"c\":3}");
        assert_eq!(c.as_ptr(), at, "the given-back string was reused");
    }

    #[test]
    fn failed_config_polls_back_off_and_a_success_resets() {
        let every = Duration::from_secs(10);
        let mut c = Control {
            fetch_failing: true,
            ..Default::default()
        };
        let waits: Vec<u64> = (0..5).map(|_| c.next_fetch_in(every).as_secs()).collect();
        assert_eq!(waits, [20, 40, 80, 80, 80]);
        c.fetch_failing = false;
        assert_eq!(c.next_fetch_in(every), every);
        c.fetch_failing = true;
        assert_eq!(c.next_fetch_in(every).as_secs(), 20, "counted afresh");
        // capped at five minutes, and an interval longer than that is kept
        let long = Duration::from_secs(60);
        let waits: Vec<u64> = (0..4).map(|_| c.next_fetch_in(long).as_secs()).collect();
        assert_eq!(waits, [240, 300, 300, 300]);
        let longer = Duration::from_secs(600);
        assert_eq!(c.next_fetch_in(longer), longer);
    }

    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(encode("node-1.a_b~"), "node-1.a_b~");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter(42);
        for _ in 0..1000 {
            let d = j.spread(Duration::from_millis(1000));
            assert!(
                d >= Duration::from_millis(750) && d < Duration::from_millis(1250),
                "{d:?}"
            );
        }
    }
}
