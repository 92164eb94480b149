//! The poller thread: ring buffers -> events -> bounded queue.
//!
//! This is the hot path. Per record it parses (no allocation), builds a
//! `Copy` event and queues it. It takes from the rings only as many records
//! as the queue has room for: while the sender is behind, records wait in
//! the rings, and what the kernel then cannot reserve is counted there as
//! ringbuf_lost. A full queue all the same is a counted queue drop. The
//! poller never blocks on the sender, does no I/O and never waits on a
//! sink or the controller.

use crate::clock;
use crate::config::SharedConfig;
use crate::loader::Observer;
use crate::metrics::Metrics;
use crate::observer::{Context, Rejected};
use crate::observers::OBSERVERS;
use crate::sender::Handoff;
use libbpf_rs::RingBufferBuilder;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Per-thread state the ring-buffer callbacks share.
struct PollState {
    seq: Cell<u64>,
    offset: Cell<i64>,
    config: std::cell::RefCell<Arc<tapio_wire::CompiledConfig>>,
    tx: Handoff,
    metrics: Arc<Metrics>,
    page_kb: u64,
}

impl PollState {
    fn handle(&self, obs: usize, data: &[u8]) {
        let m = &self.metrics;
        // `obs` is the ring's row in the table, fixed when the ring was
        // added: never data from the kernel.
        m.received[obs].fetch_add(1, Relaxed);
        let spec = &OBSERVERS[obs];
        let seq = self.seq.get() + 1;
        let cfg = self.config.borrow();
        let ctx = Context {
            boot_to_wall_ns: self.offset.get(),
            config: &cfg,
            page_kb: self.page_kb,
        };
        match (spec.to_event)(data, seq, &ctx) {
            Ok(ev) => {
                self.seq.set(seq);
                if !self.tx.send(ev) {
                    m.queue_drops[obs].fetch_add(1, Relaxed);
                }
            }
            Err(Rejected::Malformed(_)) => {
                m.malformed[obs].fetch_add(1, Relaxed);
            }
            Err(Rejected::Suppressed(reason)) => {
                m.suppressed[obs][reason as usize].fetch_add(1, Relaxed);
            }
        }
    }
}

/// Waits until a ring has records or `timeout` passes (a forced wakeup,
/// or an EINTR: shutdown sends one); whether one was reported. Unlike
/// libbpf's poll it takes no record: [`take`] does, within the queue's room.
fn wait_ready(rb: &libbpf_rs::RingBuffer<'_>, timeout: Duration) -> i32 {
    let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `ev` is a valid buffer of `ev.len()` entries for the call's
    // duration, and the descriptor is the ring reader's own epoll set.
    unsafe { libc::epoll_wait(rb.epoll_fd(), ev.as_mut_ptr(), ev.len() as i32, ms) }
}

/// Takes records from the rings, at most as many as the queue has room
/// for; how many (negative: libbpf's error).
fn take(rb: &libbpf_rs::RingBuffer<'_>, tx: &Handoff) -> i32 {
    match tx.room() {
        0 => 0,
        room => rb.consume_raw_n(room),
    }
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if sz > 0 { sz as u64 / 1024 } else { 4 }
}

/// One object's `tapio_consumer` flag (include/tapio_abi.h): set, the
/// first record its programs submit wakes the poller.
pub struct ConsumerFlag(crate::mapped::Mapping);

impl ConsumerFlag {
    pub fn open(map: &impl std::os::fd::AsFd) -> std::io::Result<ConsumerFlag> {
        crate::mapped::Mapping::new(map, std::mem::size_of::<u32>()).map(ConsumerFlag)
    }

    fn set(&self, idle: bool) {
        // SAFETY: the mapping holds at least one page, page-aligned, so a
        // u32 at its start is valid and aligned; the programs access it
        // with single loads and stores.
        let flag = unsafe { std::sync::atomic::AtomicU32::from_ptr(self.0.ptr().cast()) };
        flag.store(
            if idle { crate::abi::CONSUMER_IDLE } else { 0 },
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

/// Whether the poller sleeps long: every object's flag set, so that the
/// first record anywhere wakes it.
struct Sleep {
    flags: Vec<ConsumerFlag>,
    long: bool,
}

impl Sleep {
    fn set(&mut self, long: bool) {
        for f in &self.flags {
            f.set(long);
        }
        self.long = long;
    }
}

pub struct PollerConfig {
    pub poll_timeout: Duration,
}

/// Runs until `stop` is set, then detaches every program, drains what the
/// ring buffers still hold, and returns.
pub fn run(
    mut observers: Vec<Observer>,
    tx: Handoff,
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
        for (i, ring) in o.rings.iter().enumerate() {
            let st = Rc::clone(&state);
            let obs = o.index;
            if let Err(e) = builder.add(ring, move |data: &[u8]| {
                st.handle(obs, data);
                0
            }) {
                log::error!("ring buffer {i} of observer {obs}: {e}");
            }
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
    let mut sleep = Sleep {
        flags: observers
            .iter_mut()
            .filter_map(|o| o.consumer.take())
            .collect(),
        long: false,
    };
    let idle_after = Duration::from_millis(tapio_wire::limits::POLLER_IDLE_AFTER_MS);
    let long_sleep = Duration::from_millis(tapio_wire::limits::POLLER_IDLE_SLEEP_MS);
    let full_pause = Duration::from_millis(tapio_wire::limits::POLLER_FULL_QUEUE_PAUSE_MS);
    let mut last_record = Instant::now();
    while !stop.load(Relaxed) {
        // The wait returns early on a forced wakeup, an EINTR (shutdown
        // sends one) or the timeout. Records submitted with
        // BPF_RB_NO_WAKEUP wake nobody: every ring is read after each
        // wait, whatever it reported, so a record waits at most one
        // timeout.
        let polled = if state.tx.room() == 0 {
            // The sender is behind: leave the records in the rings.
            std::thread::sleep(full_pause);
            1
        } else {
            wait_ready(&rb, if sleep.long { long_sleep } else { timeout })
        };
        let consumed = take(&rb, &state.tx);
        state.tx.wake();
        if polled > 0 || consumed > 0 {
            last_record = Instant::now();
            if sleep.long {
                sleep.set(false);
            }
        } else if !sleep.long && last_record.elapsed() >= idle_after {
            // Quiet: sleep long, woken by the next record. One that was
            // submitted before its program saw the flag is drained here,
            // or waits at most the long sleep.
            sleep.set(true);
            if take(&rb, &state.tx) > 0 {
                sleep.set(false);
                last_record = Instant::now();
            }
        }
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
    let deadline = Instant::now() + Duration::from_millis(tapio_wire::limits::POLLER_DRAIN_WAIT_MS);
    loop {
        let n = if state.tx.room() > 0 {
            take(&rb, &state.tx)
        } else if Instant::now() < deadline {
            state.tx.wake();
            std::thread::sleep(full_pause);
            continue;
        } else {
            // Waited long enough: the rest is counted as queue drops.
            rb.consume_raw()
        };
        state.tx.wake();
        if n <= 0 {
            break;
        }
    }
    log::debug!(
        "poller drained and stopped after {} events",
        state.seq.get()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{EventHeader, record_bytes};
    use crate::observer::network::{self, NetEvent, types};
    use std::cell::RefCell;

    fn state(cap: usize) -> (PollState, crate::sender::Queue) {
        let (tx, rx) = crate::sender::queue(cap);
        let st = PollState {
            seq: Cell::new(0),
            offset: Cell::new(0),
            config: RefCell::new(Arc::new(tapio_wire::CompiledConfig::standalone_default())),
            tx: Handoff::new(tx, std::thread::current()),
            metrics: Arc::new(Metrics::default()),
            page_kb: 4,
        };
        (st, rx)
    }

    /// Property: arbitrary bytes (short, oversized, unknown types, torn
    /// strings, lying headers) are each counted malformed and never emit.
    #[test]
    fn arbitrary_records_are_counted_malformed_and_never_emitted() {
        let (st, rx) = state(1024);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut fed = 0u64;
        let mut valid = 0u64;
        for _ in 0..20_000 {
            let len = (next() % 260) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 16 && next() % 2 == 0 {
                // a plausible header over garbage: size lies half the time
                let kinds = [1u16, 2, 3, 4, 16, 17, 32, 33, 34, 48, 999];
                buf[0..2]
                    .copy_from_slice(&kinds[(next() % kinds.len() as u64) as usize].to_ne_bytes());
                let size = if next() % 2 == 0 {
                    len as u16
                } else {
                    next() as u16
                };
                buf[2..4].copy_from_slice(&size.to_ne_bytes());
            }
            // a garbage record that happens to parse is not malformed:
            // count those separately so the property stays exact
            if network::decode(&buf).is_ok() {
                valid += 1;
            }
            st.handle(0, &buf);
            fed += 1;
        }
        let m = &st.metrics;
        let malformed = m.malformed[0].load(Relaxed);
        assert_eq!(m.received[0].load(Relaxed), fed);
        assert_eq!(malformed + valid, fed);
        let (emitted, _) = rx.take(usize::MAX, |_| ());
        let emitted = emitted as u64;
        assert_eq!(
            emitted + m.queue_drops[0].load(Relaxed) + m.suppressed_for(0),
            valid,
            "only parseable records go on"
        );
        assert!(
            malformed > 19_000,
            "random bytes are almost never a valid record ({malformed})"
        );
    }

    #[test]
    fn a_full_queue_is_a_counted_drop_and_never_blocks() {
        let (st, rx) = state(2);
        let mut e = NetEvent::zeroed();
        e.hdr = EventHeader::for_record::<NetEvent>(types::CONN_REFUSED, 1, 1);
        let b = record_bytes(&e);
        for _ in 0..5 {
            st.handle(0, &b);
        }
        let m = &st.metrics;
        assert_eq!(
            (m.received[0].load(Relaxed), m.queue_drops[0].load(Relaxed)),
            (5, 3)
        );
        assert_eq!(rx.take(usize::MAX, |_| ()), (2, false));
        // records in the wrong ring buffer are malformed
        st.handle(1, &b);
        assert_eq!(m.malformed[1].load(Relaxed), 1);
    }
}
