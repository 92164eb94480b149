//! The sender thread: channel -> batches -> JSON -> sinks.
//!
//! Serialization happens here, once per event for all sinks. A sink that
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
    /// A long round wakes the sender every quarter of the channel, so that
    /// it never fills while the sender sleeps.
    wake_every: usize,
}

impl Handoff {
    pub fn new(tx: Sender<Event>, sender: Thread) -> Handoff {
        let wake_every = (tx.capacity().unwrap_or(1) / 4).max(1);
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
