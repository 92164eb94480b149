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
    sort_files(&mut out);
    Ok(out)
}

/// Oldest first: by hour, then part, then path. Every sort of store
/// files goes through here (one copy of the sort in each binary).
pub fn sort_files(files: &mut [StoreFile]) {
    files.sort_by(|a, b| (a.hour, a.part, &a.path).cmp(&(b.hour, b.part, &b.path)));
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

/// What reading the store found besides events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub files: usize,
    pub events: u64,
    /// Lines that are not a JSON object with a string `id`: skipped.
    pub corrupt: u64,
    /// The same event id seen again (in a late or fallback file, or a
    /// retried write): kept once.
    pub duplicates: u64,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Reads every store file in `dirs` (the data directory, then any fallback
/// directories) whose hour is within `[from_hour, to_hour]`, merges primary,
/// late and fallback files, drops duplicate ids, and returns the events in
/// timestamp order. A directory that does not exist is an error for the
/// first (the data directory) and ignored for the others.
pub fn read_events(
    dirs: &[&Path],
    from_hour: Option<u64>,
    to_hour: Option<u64>,
) -> std::io::Result<(Vec<serde_json::Value>, ReadStats)> {
    let mut files = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        match list(d) {
            Ok(f) => files.extend(f),
            Err(e) if i == 0 => return Err(e),
            Err(_) => {}
        }
    }
    files.retain(|f| from_hour.is_none_or(|h| f.hour >= h) && to_hour.is_none_or(|h| f.hour <= h));
    sort_files(&mut files);
    let mut stats = ReadStats::default();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in &files {
        let text = match std::fs::read(&f.path) {
            Ok(t) => t,
            Err(e) => {
                stats.unreadable.push((f.path.clone(), e.to_string()));
                continue;
            }
        };
        stats.files += 1;
        for line in text.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(_) => {
                    stats.corrupt += 1;
                    continue;
                }
            };
            let Some(id) = v.get("id").and_then(|i| i.as_str()) else {
                stats.corrupt += 1;
                continue;
            };
            if !seen.insert(id.to_string()) {
                stats.duplicates += 1;
                continue;
            }
            out.push(v);
        }
    }
    // RFC 3339 with a fixed nine-digit fraction sorts as text.
    out.sort_by(|a, b| {
        let ts = |v: &serde_json::Value| {
            v.get("timestamp")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string()
        };
        ts(a).cmp(&ts(b))
    });
    stats.events = out.len() as u64;
    Ok((out, stats))
}

#[cfg(test)]
mod read_tests {
    use super::*;

    fn line(id: &str, ts: &str) -> String {
        format!(
            "{{\"id\":\"{id}\",\"type\":\"kernel.x.y\",\"timestamp\":\"{ts}\",\"facts\":{{}}}}\n"
        )
    }

    #[test]
    fn merges_primary_late_and_fallback_and_drops_duplicates() {
        let base = std::env::temp_dir().join(format!("tapio-read-{}", std::process::id()));
        let (d, fb) = (base.join("data"), base.join("fallback"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(&fb).unwrap();
        let h = crate::time::hour_of(1_795_328_784_500_000_000);
        std::fs::write(
            path(&d, h, Part::Primary),
            line("a-2", "2026-11-22T06:10:00.000000000Z")
                + "{not json\n"
                + &line("a-1", "2026-11-22T06:05:00.000000000Z"),
        )
        .unwrap();
        std::fs::write(
            path(&d, h, Part::Late),
            line("a-0", "2026-11-22T06:00:00.000000000Z"),
        )
        .unwrap();
        std::fs::write(
            path(&fb, h, Part::Primary),
            line("a-3", "2026-11-22T06:20:00.000000000Z")
                + &line("a-2", "2026-11-22T06:10:00.000000000Z"),
        )
        .unwrap();
        std::fs::write(
            path(&d, h + 1, Part::Primary),
            line("a-4", "2026-11-22T07:00:00.000000000Z") + "{\"no\":\"id\"}\n",
        )
        .unwrap();
        let (ev, st) = read_events(&[&d, &fb], None, None).unwrap();
        let ids: Vec<&str> = ev.iter().map(|v| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a-0", "a-1", "a-2", "a-3", "a-4"]);
        assert_eq!(
            (st.files, st.events, st.corrupt, st.duplicates),
            (4, 5, 2, 1)
        );
        let (ev, _) = read_events(&[&d, &fb], Some(h + 1), None).unwrap();
        assert_eq!(ev.len(), 1);
        assert!(read_events(&[&base.join("missing")], None, None).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
