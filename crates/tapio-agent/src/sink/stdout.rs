//! JSON lines on standard output.

use crate::sink::{Line, Sink, SinkResult};
use std::io::Write;

pub struct StdoutSink {
    out: std::io::Stdout,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            out: std::io::stdout(),
        }
    }
}

impl Sink for StdoutSink {
    fn write_batch(&mut self, lines: &[Line], buf: &str) -> SinkResult {
        let mut lock = self.out.lock();
        match lock.write_all(buf.as_bytes()).and_then(|_| lock.flush()) {
            Ok(()) => SinkResult::default(),
            Err(_) => SinkResult {
                failures: 1,
                dropped: lines.len() as u64,
                fallback: 0,
            },
        }
    }
}
