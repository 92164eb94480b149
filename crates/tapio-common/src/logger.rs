//! A tiny stderr logger for the `log` facade, shared by the agent and the
//! controller.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp: journald
//! adds its own. Elsewhere each line starts with an RFC 3339 UTC time.
//! Lines are capped in length so hostile input can never flood the log.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

const MAX_LINE: usize = 2048;

struct StderrLogger {
    timestamps: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::with_capacity(128);
        if self.timestamps {
            crate::time::format_rfc3339_ns(crate::time::now_unix_ns(), &mut line);
            line.push(' ');
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        use std::fmt::Write as _;
        let _ = write!(line, "{level} {}", record.args());
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …");
        }
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Parses `error|warn|info|debug|trace`.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

pub fn init(level: LevelFilter) {
    let timestamps = std::env::var_os("JOURNAL_STREAM").is_none();
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger { timestamps }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("loud"), None);
    }
}
