//! The sender thread: channel -> batches -> JSON -> sinks.
//!
//! Serialization happens here, once per event for all sinks. A sink that
//! fails counts its failures and drops; it never slows the poller, which
//! only ever sees a full channel (counted there).

use crate::event::Event;
use crate::metrics::{Metrics, SinkId, kind_index};
use crate::sink::Sink;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

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
    /// drained) and empty.
    pub fn run(mut self) {
        let mut batch: Vec<Event> = Vec::with_capacity(self.cfg.max_events);
        let mut buf = String::with_capacity(self.cfg.max_events * 320);
        let mut lines: Vec<std::ops::Range<usize>> = Vec::with_capacity(self.cfg.max_events);
        let mut last_flush = Instant::now();
        // Written since the last flush. Without anything to flush the
        // sender blocks until an event comes (an idle node costs it no
        // wakeup); the first write after a quiet spell is flushed at once.
        let mut dirty = false;
        loop {
            let received = if dirty {
                let wait = self.cfg.flush_interval.saturating_sub(last_flush.elapsed());
                self.rx.recv_timeout(wait)
            } else {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let closed = match received {
                Ok(ev) => {
                    batch.push(ev);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            while batch.len() < self.cfg.max_events {
                match self.rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write(&batch, &mut buf, &mut lines);
                batch.clear();
                dirty = true;
            }
            if dirty && last_flush.elapsed() >= self.cfg.flush_interval {
                self.flush();
                last_flush = Instant::now();
                dirty = false;
            }
            if closed && self.rx.is_empty() {
                break;
            }
        }
        self.flush();
    }

    fn write(
        &mut self,
        batch: &[Event],
        buf: &mut String,
        lines: &mut Vec<std::ops::Range<usize>>,
    ) {
        buf.clear();
        lines.clear();
        for ev in batch {
            let start = buf.len();
            ev.write_json(&self.cfg.instance_id, buf);
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
