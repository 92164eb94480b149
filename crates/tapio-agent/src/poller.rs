//! The poller thread: ring buffers -> events -> bounded channel.
//!
//! This is the hot path. Per record it parses (no allocation), builds a
//! `Copy` event and `try_send`s it. A full channel is a counted queue drop:
//! the poller never blocks, does no I/O and never waits on a sink or the
//! controller.

use crate::clock;
use crate::loader::Observer;
use crate::metrics::Metrics;
use crate::observer::{self, Context};
use crate::state::SharedConfig;
use crossbeam_channel::{Sender, TrySendError};
use libbpf_rs::RingBufferBuilder;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tapio_common::abi::{observer_of_type, parse_record};
use tapio_common::event::Event;

/// Per-thread state the ring-buffer callbacks share.
struct PollState {
    seq: Cell<u64>,
    offset: Cell<i64>,
    config: std::cell::RefCell<Arc<tapio_wire::CompiledConfig>>,
    tx: Sender<Event>,
    metrics: Arc<Metrics>,
    page_kb: u64,
}

impl PollState {
    fn handle(&self, obs: usize, data: &[u8]) {
        let m = &self.metrics;
        m.received[obs].fetch_add(1, Relaxed);
        let rec = match parse_record(data) {
            Ok(r) if observer_of_type(r.header().kind) == Some(obs) => r,
            _ => {
                m.malformed[obs].fetch_add(1, Relaxed);
                return;
            }
        };
        let seq = self.seq.get() + 1;
        let cfg = self.config.borrow();
        let ctx = Context {
            boot_to_wall_ns: self.offset.get(),
            config: &cfg,
            page_kb: self.page_kb,
        };
        match observer::build_event(&rec, seq, &ctx) {
            Ok(ev) => {
                self.seq.set(seq);
                match self.tx.try_send(ev) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        m.queue_drops[obs].fetch_add(1, Relaxed);
                    }
                }
            }
            Err(reason) => {
                m.suppressed[obs][reason as usize].fetch_add(1, Relaxed);
            }
        }
    }
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if sz > 0 { sz as u64 / 1024 } else { 4 }
}

pub struct PollerConfig {
    pub poll_timeout: Duration,
}

/// Runs until `stop` is set, then detaches every program, drains what the
/// ring buffers still hold, and returns.
pub fn run(
    mut observers: Vec<Observer>,
    tx: Sender<Event>,
    metrics: Arc<Metrics>,
    config: SharedConfig,
    stop: Arc<AtomicBool>,
    pc: PollerConfig,
) {
    let (mut generation, cfg) = config.snapshot();
    let state = Rc::new(PollState {
        seq: Cell::new(0),
        offset: Cell::new(clock::boot_to_wall_offset()),
        config: std::cell::RefCell::new(cfg),
        tx,
        metrics,
        page_kb: page_kb(),
    });
    let mut builder = RingBufferBuilder::new();
    for o in &observers {
        let st = Rc::clone(&state);
        let obs = o.index;
        if let Err(e) = builder.add(o.events_map(), move |data: &[u8]| {
            st.handle(obs, data);
            0
        }) {
            log::error!("ring buffer of observer {obs}: {e}");
        }
    }
    let rb = match builder.build() {
        Ok(rb) => rb,
        Err(e) => {
            log::error!("cannot build the ring buffer reader: {e}");
            return;
        }
    };
    let mut last_clock = Instant::now();
    let mut timeout = pc.poll_timeout;
    while !stop.load(Relaxed) {
        // Returns early on a forced wakeup, an EINTR or the timeout. poll
        // only consumes rings that epoll reported ready, and records
        // submitted with BPF_RB_NO_WAKEUP never make a ring ready: consume
        // every ring explicitly, so a record waits at most one timeout.
        let _ = rb.poll_raw(timeout);
        let _ = rb.consume_raw();
        if config.generation() != generation {
            let (g, cfg) = config.snapshot();
            generation = g;
            timeout = Duration::from_millis(u64::from(cfg.ringbuf.poll_timeout_ms.max(1)));
            *state.config.borrow_mut() = cfg;
        }
        if last_clock.elapsed() >= Duration::from_secs(1) {
            state.offset.set(clock::boot_to_wall_offset());
            last_clock = Instant::now();
        }
    }
    // Shutdown: no new records after detach; let programs already running
    // finish, then drain everything that was submitted.
    for o in &mut observers {
        o.detach();
    }
    std::thread::sleep(Duration::from_millis(20));
    loop {
        let n = rb.consume_raw();
        if n <= 0 {
            break;
        }
    }
    log::debug!(
        "poller drained and stopped after {} events",
        state.seq.get()
    );
}
