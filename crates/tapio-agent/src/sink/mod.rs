//! Where the sender thread puts events: the sink trait and the local
//! sinks. The controller sink lives in `crate::client`.

pub mod file;
pub mod stdout;

/// One event of a batch: where its JSON line lies in the batch's buffer
/// (ending in `\n`), and the event's time, which picks its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub range: std::ops::Range<usize>,
    pub timestamp_ns: u64,
}

/// A destination for events. Implementations never panic on I/O errors:
/// they report them, and count what they could not write.
pub trait Sink {
    /// Writes a batch: the lines of `buf`, one per event, in order,
    /// serialized once for all sinks.
    fn write_batch(&mut self, lines: &[Line], buf: &str) -> SinkResult;

    /// Flushes buffered output (called at the end of each batch and at
    /// shutdown).
    fn flush(&mut self) -> SinkResult {
        SinkResult::default()
    }
}

/// What happened to one batch in one sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkResult {
    /// Write operations that failed (each counted in
    /// `tapio_sink_failures_total`).
    pub failures: u64,
    /// Events this sink could not keep (each counted in
    /// `tapio_sink_dropped_events_total`).
    pub dropped: u64,
    /// Events written through a fallback path.
    pub fallback: u64,
}
