//! A tiny stderr logger for the `log` facade, shared by the agent and the
//! controller.
//!
//! When stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//! inode), each line starts with a `<N>` syslog priority, which journald
//! turns into the entry's priority (`journalctl -p warning` works), and
//! carries no timestamp: journald adds its own. Elsewhere each line starts
//! with an RFC 3339 UTC time. Control characters in a message (a comm, a
//! file name, anything a local user controls) are escaped, so one line is
//! one entry and no terminal sequence gets through. Lines are capped in
//! length so hostile input can never flood the log.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

const MAX_LINE: usize = 2048;

struct StderrLogger {
    journal: bool,
}

/// True when `JOURNAL_STREAM` (`<dev>:<ino>`) names stderr itself, as
/// systemd sets it for a service whose stderr is connected to journald.
pub fn stderr_is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(js), Some((dev, ino))) = (journal_stream, stderr) else {
        return false;
    };
    let Some((d, i)) = js.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Appends `msg` with every control character (and DEL) escaped.
pub fn push_escaped(out: &mut String, msg: &str) {
    use std::fmt::Write as _;
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// One log line, newline included.
fn format_line(journal: bool, level: Level, msg: &str, now_ns: u64) -> String {
    let mut line = String::with_capacity(128);
    if journal {
        line.push('<');
        line.push(char::from(b'0' + priority(level)));
        line.push('>');
    } else {
        crate::time::format_rfc3339_ns(now_ns, &mut line);
        line.push(' ');
    }
    line.push_str(match level {
        Level::Error => "ERROR ",
        Level::Warn => "WARN ",
        Level::Info => "INFO ",
        Level::Debug => "DEBUG ",
        Level::Trace => "TRACE ",
    });
    push_escaped(&mut line, msg);
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" …");
    }
    line.push('\n');
    line
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let line = format_line(
            self.journal,
            record.level(),
            &msg,
            crate::time::now_unix_ns(),
        );
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
    use std::os::unix::fs::MetadataExt;
    let stderr = std::fs::metadata("/proc/self/fd/2")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let js = std::env::var("JOURNAL_STREAM").ok();
    let journal = stderr_is_journal(js.as_deref(), stderr);
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger { journal }));
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

    #[test]
    fn journal_lines_carry_the_priority_and_no_timestamp() {
        assert_eq!(
            format_line(true, Level::Warn, "disk full", 0),
            "<4>WARN disk full\n"
        );
        assert_eq!(format_line(true, Level::Error, "x", 0), "<3>ERROR x\n");
        assert_eq!(format_line(true, Level::Info, "x", 0), "<6>INFO x\n");
        assert_eq!(format_line(true, Level::Debug, "x", 0), "<7>DEBUG x\n");
        assert_eq!(
            format_line(false, Level::Info, "x", 0),
            "1970-01-01T00:00:00.000000000Z INFO x\n"
        );
    }

    #[test]
    fn journal_only_when_the_stream_is_stderr() {
        assert!(stderr_is_journal(Some("8:1234"), Some((8, 1234))));
        assert!(!stderr_is_journal(Some("8:1234"), Some((8, 1235))));
        assert!(!stderr_is_journal(Some("garbage"), Some((8, 1234))));
        assert!(!stderr_is_journal(None, Some((8, 1234))));
        assert!(!stderr_is_journal(Some("8:1234"), None));
    }

    #[test]
    fn control_characters_never_reach_the_log() {
        let l = format_line(
            true,
            Level::Warn,
            "comm=\u{1b}[31mevil\nFAKE <0>EMERG\u{7f}",
            0,
        );
        assert_eq!(l, "<4>WARN comm=\\u{1b}[31mevil\\nFAKE <0>EMERG\\u{7f}\n");
        assert_eq!(l.matches('\n').count(), 1);
    }
}
