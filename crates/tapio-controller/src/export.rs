//! Downstream export: accepted events as hourly JSONL, the hand-off to a
//! log shipper (Vector, Fluent Bit, an OTel collector's filelog receiver).
//!
//! - Each event goes to the hour of its own timestamp (UTC), in the same
//!   file layout as the agent's store (`events-YYYYMMDDTHH.jsonl`, and
//!   `.late.jsonl` for an hour sealed more than the grace ago).
//! - Idempotent on the event id within a window of the current and the two
//!   previous hours, also across a restart: the ids of the current and
//!   previous hour's files are read back at start.
//! - Files are fsynced at most every `fsync_every`, and at shutdown.
//! - Each line is the agent's event, unknown fields included, plus
//!   `agent_id` and `node_name`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tapio_common::store::{self, Part};
use tapio_common::time::{hour_of, now_unix_ns, parse_rfc3339};

const SEAL_GRACE_NS: u64 = 120 * 1_000_000_000;
/// Hours (back from now) whose ids are kept for de-duplication.
const ID_WINDOW_HOURS: u64 = 2;

/// The lines, count and ids of one batch bound for one file.
#[derive(Default)]
struct Group(Vec<u8>, u64, Vec<String>);

pub struct Exporter {
    dir: PathBuf,
    files: HashMap<(u64, Part), (File, bool)>,
    ids: HashMap<u64, HashSet<String>>,
    last_sync: Instant,
    fsync_every: Duration,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExportResult {
    pub exported: u64,
    pub duplicates: u64,
    /// Events not exported, whatever the reason (counted as export
    /// failures).
    pub failed: u64,
    /// Of `failed`, those whose write failed (a full or broken disk): a
    /// retry may succeed, so the batch is answered 503.
    pub write_failed: u64,
}

impl Exporter {
    pub fn open(dir: PathBuf, fsync_every: Duration) -> std::io::Result<Exporter> {
        std::fs::create_dir_all(&dir)?;
        let mut ex = Exporter {
            dir,
            files: HashMap::new(),
            ids: HashMap::new(),
            last_sync: Instant::now(),
            fsync_every,
        };
        let now_hour = hour_of(now_unix_ns());
        for f in store::list(&ex.dir)? {
            if f.hour + 1 < now_hour {
                continue;
            }
            let text = std::fs::read(&f.path)?;
            let set = ex.ids.entry(f.hour).or_default();
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                    if let Some(id) = v.get("id").and_then(|i| i.as_str()) {
                        set.insert(id.to_string());
                    }
                }
            }
        }
        Ok(ex)
    }

    /// Number of ids remembered.
    #[cfg(test)]
    pub fn remembered_ids(&self) -> usize {
        self.ids.values().map(HashSet::len).sum()
    }

    /// Exports `events` (raw event objects) of one batch.
    pub fn export(
        &mut self,
        agent_id: &str,
        node_name: &str,
        events: &[serde_json::Value],
    ) -> ExportResult {
        let now = now_unix_ns();
        let now_hour = hour_of(now);
        self.ids.retain(|h, _| *h + ID_WINDOW_HOURS >= now_hour);
        let sealed_below = hour_of(now.saturating_sub(SEAL_GRACE_NS));
        let mut groups: HashMap<(u64, Part), Group> = HashMap::new();
        let mut res = ExportResult::default();
        let mut batch_ids = HashSet::new();
        for ev in events {
            let (Some(id), Some(ts)) = (
                ev.get("id").and_then(|v| v.as_str()),
                ev.get("timestamp")
                    .and_then(|v| v.as_str())
                    .and_then(parse_rfc3339),
            ) else {
                res.failed += 1;
                continue;
            };
            let hour = hour_of(ts);
            if self.ids.get(&hour).is_some_and(|s| s.contains(id))
                || !batch_ids.insert(id.to_string())
            {
                res.duplicates += 1;
                continue;
            }
            let mut obj = ev.clone();
            if let Some(map) = obj.as_object_mut() {
                map.insert("agent_id".into(), agent_id.into());
                map.insert("node_name".into(), node_name.into());
            }
            let Ok(mut line) = serde_json::to_vec(&obj) else {
                res.failed += 1;
                continue;
            };
            line.push(b'\n');
            let part = if hour < sealed_below {
                Part::Late
            } else {
                Part::Primary
            };
            let g = groups.entry((hour, part)).or_default();
            g.0.extend_from_slice(&line);
            g.1 += 1;
            g.2.push(id.to_string());
        }
        for ((hour, part), Group(bytes, n, ids)) in groups {
            match self.write(hour, part, &bytes) {
                Ok(()) => {
                    res.exported += n;
                    self.ids.entry(hour).or_default().extend(ids);
                }
                Err(e) => {
                    log::error!("export to {}: {e}", self.dir.display());
                    res.failed += n;
                    res.write_failed += n;
                }
            }
        }
        if self.last_sync.elapsed() >= self.fsync_every {
            self.sync();
        }
        res
    }

    fn write(&mut self, hour: u64, part: Part, bytes: &[u8]) -> std::io::Result<()> {
        if !self.files.contains_key(&(hour, part)) {
            if self.files.len() >= 8 {
                // close the oldest hour's handle
                if let Some(k) = self.files.keys().min().copied() {
                    if let Some((f, _)) = self.files.remove(&k) {
                        let _ = f.sync_data();
                    }
                }
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(store::path(&self.dir, hour, part))?;
            self.files.insert((hour, part), (f, false));
        }
        let Some((f, dirty)) = self.files.get_mut(&(hour, part)) else {
            return Err(std::io::Error::other("export file handle vanished"));
        };
        let len = f.metadata()?.len();
        if let Err(e) = f.write_all(bytes) {
            let _ = f.set_len(len); // never leave a torn line
            self.files.remove(&(hour, part));
            return Err(e);
        }
        *dirty = true;
        Ok(())
    }

    pub fn sync(&mut self) {
        self.last_sync = Instant::now();
        for (f, dirty) in self.files.values_mut() {
            if *dirty {
                let _ = f.sync_data();
                *dirty = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str) -> serde_json::Value {
        json!({"id": id, "type": "kernel.network.connection_refused", "observer": "network",
               "severity": "warning", "timestamp": tapio_common::time::rfc3339_ns(now_unix_ns()),
               "config_generation": 1, "facts": {"dst_port": 9}, "future_field": 1})
    }

    /// A result with nothing failed.
    fn written(exported: u64, duplicates: u64) -> ExportResult {
        ExportResult {
            exported,
            duplicates,
            failed: 0,
            write_failed: 0,
        }
    }

    #[test]
    fn exports_once_per_id_also_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("tapio-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut ex = Exporter::open(dir.clone(), Duration::from_secs(1)).unwrap();
        let r = ex.export("a1", "n1", &[ev("i-1"), ev("i-2"), ev("i-2")]);
        assert_eq!(r, written(2, 1));
        let r = ex.export("a1", "n1", &[ev("i-1"), ev("i-3")]);
        assert_eq!(r, written(1, 1));
        ex.sync();
        drop(ex);
        let mut ex = Exporter::open(dir.clone(), Duration::from_secs(1)).unwrap();
        assert_eq!(ex.remembered_ids(), 3);
        let r = ex.export("a1", "n1", &[ev("i-3"), ev("i-4")]);
        assert_eq!(r, written(1, 1));
        let (all, st) = store::read_events(&[dir.as_path()], None, None).unwrap();
        assert_eq!((all.len(), st.duplicates, st.corrupt), (4, 0, 0));
        assert_eq!(all[0]["agent_id"], "a1");
        assert_eq!(all[0]["node_name"], "n1");
        assert_eq!(all[0]["future_field"], 1, "unknown fields pass through");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
