//! The sender thread: channel -> batches -> workload attribution -> JSON
//! -> sinks.
//!
//! Attribution happens here, not in the poller: a workload is shared
//! (`Arc`), and taking a reference in one thread and dropping it in
//! another moved its count's cache line between the two CPUs for every
//! event. Serialization happens here too, once per event for all sinks. A sink that
//! fails counts its failures and drops; it never slows the poller, which
//! only ever sees a full channel (counted there).
//!
//! The poller wakes the sender once per poll round through a [`Handoff`],
//! not once per event: a blocking channel receive spins, yields and parks
//! each time the channel runs dry, and at storm rate that was an eighth of
//! the agent's CPU (docs/budgets.md).

use crate::event::{Event, LineWriter};
use crate::metrics::{Metrics, SinkId, kind_index};
use crate::sink::Sink;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The poller's end of the channel to the sender thread.
pub struct Handoff {
    /// `None` once closed: dropped before the sender's last wake, so that
    /// the sender sees the channel disconnected when it has drained it.
    tx: Option<Sender<Event>>,
    sender: Thread,
    /// Queued since the sender was last woken.
    queued: Cell<usize>,
    /// Within a round the sender is woken once this many events wait
    /// (1/16 of the channel), so that it drains while the poller still
    /// fills: a late poll round can hold more records than the channel.
    /// Waking a sender that is already busy costs no context switch.
    wake_every: usize,
}

impl Handoff {
    pub fn new(tx: Sender<Event>, sender: Thread) -> Handoff {
        let wake_every = (tx.capacity().unwrap_or(1) / 16).max(1);
        Handoff {
            tx: Some(tx),
            sender,
            queued: Cell::new(0),
            wake_every,
        }
    }

    /// Queues `ev` without blocking; false when the channel is full (or the
    /// sender is gone): the caller counts the drop.
    pub fn send(&self, ev: Event) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        if tx.try_send(ev).is_err() {
            return false;
        }
        self.queued.set(self.queued.get() + 1);
        if self.queued.get() >= self.wake_every {
            self.wake();
        }
        true
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
    pub rx: Receiver<Event>,
    pub attribution: crate::attribution::Attributor,
    pub sinks: Vec<(SinkId, Box<dyn Sink + Send>)>,
    pub metrics: Arc<Metrics>,
    pub cfg: SenderConfig,
}

impl SenderThread {
    /// Runs until the channel is closed (the poller has stopped and
    /// drained) and empty. Runs on the thread the poller's [`Handoff`]
    /// wakes.
    pub fn run(mut self) {
        let mut batch: Vec<Event> = Vec::with_capacity(self.cfg.max_events);
        let mut buf = String::with_capacity(self.cfg.max_events * 320);
        let mut lines: Vec<std::ops::Range<usize>> = Vec::with_capacity(self.cfg.max_events);
        let mut writer = LineWriter::new(&self.cfg.instance_id);
        let mut last_flush = Instant::now();
        // Written since the last flush. Without anything to flush the
        // sender sleeps until the poller wakes it (an idle node costs it no
        // wakeup); the first write after a quiet spell is flushed at once.
        let mut dirty = false;
        loop {
            let mut closed = false;
            while batch.len() < self.cfg.max_events {
                match self.rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let full = batch.len() == self.cfg.max_events;
            if !batch.is_empty() {
                for ev in &mut batch {
                    self.attribution.attribute(ev);
                }
                self.write(&batch, &mut writer, &mut buf, &mut lines);
                batch.clear();
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

    fn write(
        &mut self,
        batch: &[Event],
        writer: &mut LineWriter,
        buf: &mut String,
        lines: &mut Vec<std::ops::Range<usize>>,
    ) {
        buf.clear();
        lines.clear();
        for ev in batch {
            let start = buf.len();
            writer.write(ev, buf);
            buf.push('\n');
            lines.push(start..buf.len());
        }
        // Emitted means handed to the sinks: counted before the writes, so
        // that a sink which never returns (shutdown gives up on it) still
        // leaves every received event counted somewhere.
        for ev in batch {
            self.metrics.emitted[kind_index(ev.kind)].fetch_add(1, Relaxed);
        }
        for (id, sink) in &mut self.sinks {
            let r = sink.write_batch(batch, lines, buf);
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

    /// A receiver that parks whenever the channel is empty, as the sender
    /// does, gets every event the hand-off queued, in order, and sees the
    /// channel closed once the hand-off is dropped.
    #[test]
    fn a_parked_receiver_gets_every_event_and_then_the_close() {
        let (tx, rx) = crossbeam_channel::bounded::<Event>(8);
        let (seen_tx, seen) = crossbeam_channel::unbounded();
        let receiver = std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                match rx.try_recv() {
                    Ok(e) => {
                        n += 1;
                        let _ = seen_tx.send(e.seq);
                    }
                    Err(TryRecvError::Empty) => std::thread::park(),
                    Err(TryRecvError::Disconnected) => return n,
                }
            }
        });
        let h = Handoff::new(tx, receiver.thread().clone());
        // 1/16 of 8 rounds up to 1: each event wakes it.
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

    /// A full channel refuses without blocking: the poller counts the drop.
    #[test]
    fn a_full_channel_refuses_the_event() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let h = Handoff::new(tx, std::thread::current());
        for seq in 1..=4 {
            assert!(h.send(ev(seq)));
        }
        assert!(!h.send(ev(5)));
        assert_eq!(rx.len(), 4);
        drop(h);
        assert_eq!(rx.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }
}
