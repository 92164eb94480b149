//! The local file store's layout, shared by the agent (writer) and the CLI
//! (reader).
//!
//! - `events-<YYYYMMDDTHH>.jsonl`: the hour bucket, chosen by each event's
//!   own timestamp (UTC), never by the time of the write;
//! - `events-<YYYYMMDDTHH>.late.jsonl`: events that arrived after their hour
//!   was sealed;
//! - the same two names under the fallback directory, for writes that
//!   failed on the primary path.
//!
//! Readers merge all of them and de-duplicate on the event id.

use crate::time::{hour_label, parse_hour_label};
use std::path::{Path, PathBuf};

/// Bump when the JSON line changes shape (see docs/events.md, "Schema
/// versions" for the migration notes).
pub const SCHEMA_VERSION: u32 = 1;

/// Which file of an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Primary,
    Late,
}

pub fn file_name(hour: u64, part: Part) -> String {
    match part {
        Part::Primary => format!("events-{}.jsonl", hour_label(hour)),
        Part::Late => format!("events-{}.late.jsonl", hour_label(hour)),
    }
}

pub fn path(dir: &Path, hour: u64, part: Part) -> PathBuf {
    dir.join(file_name(hour, part))
}

/// Parses a store file name into its hour and part.
pub fn parse_file_name(name: &str) -> Option<(u64, Part)> {
    let rest = name.strip_prefix("events-")?;
    if let Some(label) = rest.strip_suffix(".late.jsonl") {
        return Some((parse_hour_label(label)?, Part::Late));
    }
    let label = rest.strip_suffix(".jsonl")?;
    Some((parse_hour_label(label)?, Part::Primary))
}

/// A store file found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    pub path: PathBuf,
    pub hour: u64,
    pub part: Part,
    pub bytes: u64,
}

/// The store files in `dir`, oldest hour first (primary before late).
pub fn list(dir: &Path) -> std::io::Result<Vec<StoreFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((hour, part)) = parse_file_name(name) else {
            continue;
        };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(StoreFile {
            path: entry.path(),
            hour,
            part,
            bytes,
        });
    }
    out.sort_by(|a, b| (a.hour, a.part, &a.path).cmp(&(b.hour, b.part, &b.path)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let h = crate::time::hour_of(1_795_328_784_500_000_000);
        assert_eq!(file_name(h, Part::Primary), "events-20261122T06.jsonl");
        assert_eq!(file_name(h, Part::Late), "events-20261122T06.late.jsonl");
        assert_eq!(
            parse_file_name("events-20261122T06.jsonl"),
            Some((h, Part::Primary))
        );
        assert_eq!(
            parse_file_name("events-20261122T06.late.jsonl"),
            Some((h, Part::Late))
        );
        assert_eq!(parse_file_name("events-20261122T06.jsonl.tmp"), None);
        assert_eq!(parse_file_name("metrics.prom"), None);
    }

    #[test]
    fn lists_in_hour_order() {
        let dir = std::env::temp_dir().join(format!("tapio-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for n in [
            "events-20261122T07.jsonl",
            "events-20261122T06.late.jsonl",
            "events-20261122T06.jsonl",
            "other.txt",
        ] {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        let names: Vec<String> = list(&dir)
            .unwrap()
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "events-20261122T06.jsonl",
                "events-20261122T06.late.jsonl",
                "events-20261122T07.jsonl"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
