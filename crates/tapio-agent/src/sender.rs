//! The sender thread: queue -> workload attribution -> JSON -> sinks.
//!
//! Attribution happens here, not in the poller: a workload is shared
//! (`Arc`), and taking a reference in one thread and dropping it in
//! another moved its count's cache line between the two CPUs for every
//! event. Serialization happens here too, once per event for all sinks. A
//! sink that fails counts its failures and drops; it never slows the
//! poller, which only ever sees a full queue (counted there).
//!
//! The queue is a single-producer, single-consumer ring of events
//! ([`rtrb`]): the poller pushes one event with one store, and the sender
//! takes everything queued as one chunk, works on the events where they
//! lie, and gives the slots back with one store. A channel cost a
//! synchronised receive and a copy out per event (docs/budgets.md).
//!
//! The poller wakes the sender once per poll round through a [`Handoff`],
//! not once per event: the sender parks whenever the queue is empty.

use crate::event::{Event, LineWriter};
use crate::metrics::{Metrics, SinkId, kind_index};
use crate::sink::{Line, Sink};
use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The poller -> sender queue, bounded to `capacity` events: its putting
/// end, for a [`Handoff`] once the sender's thread exists, and its taking
/// end.
pub fn queue(capacity: usize) -> (rtrb::Producer<Event>, Queue) {
    let (tx, rx) = rtrb::RingBuffer::new(capacity);
    (tx, Queue(Arc::new(Mutex::new(rx))))
}

/// The taking end of the queue: the sender's, and the shutdown's when the
/// sender is stuck in a sink (the sender holds it only while it turns
/// events into lines, never during a sink's I/O).
#[derive(Clone)]
pub struct Queue(Arc<Mutex<rtrb::Consumer<Event>>>);

impl Queue {
    fn lock(&self) -> MutexGuard<'_, rtrb::Consumer<Event>> {
        // A panic aborts the agent (panic = "abort"), so a poisoned lock
        // is never seen; its events would still be intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands up to `max` queued events, oldest first, to `f`, where they
    /// lie in the queue, then frees their slots (dropping them). Returns
    /// how many, and whether the queue is closed: the [`Handoff`] is gone
    /// and nothing is left.
    pub fn take(&self, max: usize, mut f: impl FnMut(&mut Event)) -> (usize, bool) {
        let mut rx = self.lock();
        // Read before the slots: once the producer is gone, nothing more
        // arrives, so empty then means empty for good.
        let gone = rx.is_abandoned();
        let n = rx.slots().min(max);
        if n == 0 {
            return (0, gone);
        }
        // `n` slots are readable, so the chunk is always granted; were it
        // not, nothing was taken.
        let Ok(mut chunk) = rx.read_chunk(n) else {
            return (0, gone);
        };
        let (a, b) = chunk.as_mut_slices();
        a.iter_mut().chain(b.iter_mut()).for_each(&mut f);
        chunk.commit_all();
        (n, false)
    }
}

/// The poller's end of the queue.
pub struct Handoff {
    /// `None` once closed: dropped before the sender's last wake, so that
    /// the sender sees the queue closed when it has drained it.
    tx: Option<RefCell<rtrb::Producer<Event>>>,
    sender: Thread,
    /// Queued since the sender was last woken.
    queued: Cell<usize>,
    /// Within a round the sender is woken once this many events wait
    /// (1/4 of the queue), so that it drains while the poller still
    /// fills: a late poll round can hold more records than the queue.
    /// Waking a sender that is already busy costs no context switch, but
    /// one that drained and parked costs two: at 1/16 the sender parked
    /// and woke about 2.5 times per round in the storm, at 1/4 about 1.5,
    /// with no more queue drops (docs/budgets.md).
    wake_every: usize,
}

impl Handoff {
    pub fn new(tx: rtrb::Producer<Event>, sender: Thread) -> Handoff {
        let wake_every = (tx.buffer().capacity() / 4).max(1);
        Handoff {
            tx: Some(RefCell::new(tx)),
            sender,
            queued: Cell::new(0),
            wake_every,
        }
    }

    /// Queues `ev` without blocking; false when the queue is full: the
    /// caller counts the drop.
    pub fn send(&self, ev: Event) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        if tx.borrow_mut().push(ev).is_err() {
            return false;
        }
        self.queued.set(self.queued.get() + 1);
        if self.queued.get() >= self.wake_every {
            self.wake();
        }
        true
    }

    /// Free places in the queue: records the poller may take now.
    pub fn room(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.borrow().slots())
    }

    /// The end of a poll round: wakes the sender if anything was queued.
    pub fn wake(&self) {
        if self.queued.replace(0) > 0 {
            self.sender.unpark();
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.sender.unpark();
    }
}

pub struct SenderConfig {
    pub instance_id: String,
    pub max_events: usize,
    pub flush_interval: Duration,
}

pub struct SenderThread {
    pub rx: Queue,
    pub attribution: crate::attribution::Attributor,
    pub sinks: Vec<(SinkId, Box<dyn Sink + Send>)>,
    pub metrics: Arc<Metrics>,
    pub cfg: SenderConfig,
}

impl SenderThread {
    /// Runs until the queue is closed (the poller has stopped and
    /// drained) and empty. Runs on the thread the poller's [`Handoff`]
    /// wakes.
    pub fn run(mut self) {
        let max = self.cfg.max_events.max(1);
        let mut buf = String::with_capacity(max * 320);
        let mut lines: Vec<Line> = Vec::with_capacity(max);
        let mut writer = LineWriter::new(&self.cfg.instance_id);
        let mut last_flush = Instant::now();
        // Written since the last flush. Without anything to flush the
        // sender sleeps until the poller wakes it (an idle node costs it no
        // wakeup); the first write after a quiet spell is flushed at once.
        let mut dirty = false;
        loop {
            let mut closed = false;
            buf.clear();
            lines.clear();
            while lines.len() < max {
                let (n, gone) = self.rx.take(max - lines.len(), |ev| {
                    self.attribution.attribute(ev);
                    let start = buf.len();
                    writer.write(ev, &mut buf);
                    buf.push('\n');
                    lines.push(Line {
                        range: start..buf.len(),
                        timestamp_ns: ev.timestamp_ns,
                    });
                    // Emitted means handed to the sinks: counted before the
                    // writes, so that a sink which never returns (shutdown
                    // gives up on it) still leaves every event taken from
                    // the queue counted somewhere.
                    self.metrics.emitted[kind_index(ev.kind)].fetch_add(1, Relaxed);
                });
                if n == 0 {
                    closed = gone;
                    break;
                }
            }
            let full = lines.len() == max;
            if !lines.is_empty() {
                self.write(&lines, &buf);
                dirty = true;
            }
            if dirty && last_flush.elapsed() >= self.cfg.flush_interval {
                self.flush();
                last_flush = Instant::now();
                dirty = false;
            }
            if closed {
                break;
            }
            if full {
                continue; // more may be queued
            }
            // A wake that came while this round ran is not lost: it makes
            // the park return at once.
            if dirty {
                std::thread::park_timeout(
                    self.cfg.flush_interval.saturating_sub(last_flush.elapsed()),
                );
            } else {
                std::thread::park();
            }
        }
        self.flush();
    }

    fn write(&mut self, lines: &[Line], buf: &str) {
        for (id, sink) in &mut self.sinks {
            let r = sink.write_batch(lines, buf);
            let i = *id as usize;
            self.metrics.sink_failures[i].fetch_add(r.failures, Relaxed);
            self.metrics.sink_dropped[i].fetch_add(r.dropped, Relaxed);
            self.metrics.sink_fallback[i].fetch_add(r.fallback, Relaxed);
        }
    }

    fn flush(&mut self) {
        for (id, sink) in &mut self.sinks {
            let r = sink.flush();
            self.metrics.sink_failures[*id as usize].fetch_add(r.failures, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Facts;
    use crate::observer::network::NetFacts;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            kind: tapio_wire::EventKind::ConnectionRefused,
            severity: tapio_wire::Severity::Warning,
            timestamp_ns: 1,
            config_generation: 1,
            facts: Facts::Network(NetFacts::sample()),
            workload: None,
            memcg: None,
        }
    }

    fn seqs(q: &Queue) -> Vec<u64> {
        let mut v = Vec::new();
        q.take(usize::MAX, |e| v.push(e.seq));
        v
    }

    /// A receiver that parks whenever the queue is empty, as the sender
    /// does, gets every event the hand-off queued, in order, and sees the
    /// queue closed once the hand-off is dropped.
    #[test]
    fn a_parked_receiver_gets_every_event_and_then_the_close() {
        let (seen_tx, seen) = crossbeam_channel::unbounded();
        let (tx, q) = queue(8);
        let receiver = std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                let (got, closed) = q.take(usize::MAX, |e| {
                    n += 1;
                    let _ = seen_tx.send(e.seq);
                });
                if closed {
                    return n;
                }
                if got == 0 {
                    std::thread::park();
                }
            }
        });
        let h = Handoff::new(tx, receiver.thread().clone());
        // 1/4 of 8 is 2: the second event wakes it, the wake() the third.
        for seq in 1..=3 {
            assert!(h.send(ev(seq)));
        }
        h.wake();
        for seq in 1..=3 {
            assert_eq!(seen.recv_timeout(Duration::from_secs(10)), Ok(seq));
        }
        drop(h);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !receiver.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the receiver never saw the close"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(receiver.join().ok(), Some(3));
    }

    /// A full queue refuses without blocking: the poller counts the drop.
    /// What is queued comes out in order, a bounded take at a time, and
    /// across the ring's wrap.
    #[test]
    fn a_full_queue_refuses_the_event() {
        let (tx, q) = queue(4);
        let h = Handoff::new(tx, std::thread::current());
        for seq in 1..=4 {
            assert!(h.send(ev(seq)));
        }
        assert!(!h.send(ev(5)));
        let mut first = Vec::new();
        assert_eq!(q.take(3, |e| first.push(e.seq)), (3, false));
        assert_eq!(first, [1, 2, 3]);
        for seq in 6..=8 {
            assert!(h.send(ev(seq)));
        }
        assert!(!h.send(ev(9)));
        assert_eq!(seqs(&q), [4, 6, 7, 8]);
        assert_eq!(q.take(usize::MAX, |_| ()), (0, false));
        drop(h);
        assert_eq!(q.take(usize::MAX, |_| ()), (0, true));
    }
}
