//! Downstream export: accepted events as hourly JSONL, the hand-off to a
//! log shipper (Vector, Fluent Bit, an OTel collector's filelog receiver).
//!
//! - Each event goes to the hour of its own timestamp (UTC), in the same
//!   file layout as the agent's store (`events-YYYYMMDDTHH.jsonl`, and
//!   `.late.jsonl` for an hour sealed more than the grace ago).
//! - Idempotent on the event id within a window of the current and the two
//!   previous hours, also across a restart: the ids of the current and
//!   previous hour's files are read back at start. An id is
//!   `<instance>-<sequence>` (the server refuses any other), so what is
//!   remembered per hour and instance is a set of sequence ranges, not one
//!   string per event: an instance that sends in order costs one range an
//!   hour, whatever its rate. At most `MAX_RANGES` ranges per instance and
//!   hour, and `MAX_INSTANCES` instances per hour; beyond, the oldest
//!   knowledge is forgotten and counted (a later resend could then be
//!   exported twice; an event is never dropped as a duplicate it is not).
//! - Files written since the last fsync are fsynced every `fsync_every` by
//!   the controller's main thread, outside the export's lock (a request
//!   never waits for a disk flush), and at shutdown.
//! - Each line is the agent's event, unknown fields included, plus
//!   `agent_id` and `node_name`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tapio_common::store::{self, Part};
use tapio_common::time::{hour_of, now_unix_ns, parse_rfc3339};
use tapio_wire::split_event_id;

/// Appends `ev` as one JSON line with `agent_id` and `node_name` set.
/// Written straight into `out` (no copy of the event): the two fields go
/// last, unless the event already has either, which is then replaced.
fn append_line(
    out: &mut Vec<u8>,
    ev: &serde_json::Value,
    agent_id: &str,
    node_name: &str,
) -> Result<(), ()> {
    let start = out.len();
    let map = ev.as_object().ok_or(())?;
    let written = if map.contains_key("agent_id") || map.contains_key("node_name") {
        let mut obj = map.clone();
        obj.insert("agent_id".into(), agent_id.into());
        obj.insert("node_name".into(), node_name.into());
        serde_json::to_writer(&mut *out, &obj)
    } else {
        serde_json::to_writer(&mut *out, map).and_then(|()| {
            // Reopen the object: `{}` becomes `{"agent_id":..}`, and
            // `{..}` becomes `{..,"agent_id":..}`.
            out.pop();
            if map.is_empty() {
                out.extend_from_slice(b"\"agent_id\":");
            } else {
                out.extend_from_slice(b",\"agent_id\":");
            }
            serde_json::to_writer(&mut *out, agent_id)?;
            out.extend_from_slice(b",\"node_name\":");
            serde_json::to_writer(&mut *out, node_name)?;
            out.push(b'}');
            Ok(())
        })
    };
    if written.is_err() {
        out.truncate(start);
        return Err(());
    }
    out.push(b'\n');
    Ok(())
}

const SEAL_GRACE_NS: u64 = 120 * 1_000_000_000;
/// Hours (back from now) whose ids are kept for de-duplication.
const ID_WINDOW_HOURS: u64 = 2;
/// Sequence ranges remembered per instance and hour.
const MAX_RANGES: usize = 4096;
/// Instances remembered per hour.
const MAX_INSTANCES: usize = 100_000;

/// Sequence numbers seen, as sorted, disjoint, non-adjacent inclusive
/// ranges.
#[derive(Debug, Default)]
struct SeqSet(Vec<(u64, u64)>);

impl SeqSet {
    fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 < seq);
        self.0.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// Adds `seq`; returns how many ranges were forgotten to stay bounded.
    fn insert(&mut self, seq: u64) -> u64 {
        let i = self.0.partition_point(|r| r.1 < seq);
        if self.0.get(i).is_some_and(|r| r.0 <= seq) {
            return 0;
        }
        let joins_prev = i > 0 && self.0[i - 1].1 + 1 == seq;
        let joins_next = self.0.get(i).is_some_and(|r| r.0 == seq + 1);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.0[i - 1].1 = self.0[i].1;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].1 = seq,
            (false, true) => self.0[i].0 = seq,
            (false, false) => self.0.insert(i, (seq, seq)),
        }
        let over = self.0.len().saturating_sub(MAX_RANGES);
        self.0.drain(..over);
        over as u64
    }
}

/// The ids remembered for one hour.
#[derive(Debug, Default)]
struct HourIds(HashMap<String, SeqSet>);

impl HourIds {
    fn contains(&self, inst: &str, seq: u64) -> bool {
        self.0.get(inst).is_some_and(|s| s.contains(seq))
    }

    /// Remembers one id; returns what had to be forgotten (ranges, or a
    /// whole instance when the hour holds `MAX_INSTANCES`).
    fn insert(&mut self, inst: &str, seq: u64) -> u64 {
        if let Some(s) = self.0.get_mut(inst) {
            return s.insert(seq);
        }
        let mut forgotten = 0;
        if self.0.len() >= MAX_INSTANCES {
            // Any one: the hour is bounded, and which is forgotten only
            // decides which later resend could be exported twice.
            if let Some(k) = self.0.keys().next().cloned() {
                forgotten += self.0.remove(&k).map_or(0, |s| s.0.len() as u64);
            }
        }
        let mut set = SeqSet::default();
        set.insert(seq);
        self.0.insert(inst.to_string(), set);
        forgotten
    }

    #[cfg(test)]
    fn ranges(&self) -> usize {
        self.0.values().map(|s| s.0.len()).sum()
    }
}

/// The lines, count and ids of one batch bound for one file.
#[derive(Default)]
struct Group<'a>(Vec<u8>, u64, Vec<(&'a str, u64)>);

pub struct Exporter {
    dir: PathBuf,
    files: HashMap<(u64, Part), (File, bool)>,
    ids: HashMap<u64, HourIds>,
    /// Ranges forgotten to stay bounded (`tapio_controller_export_ids_forgotten_total`).
    pub forgotten: u64,
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
            forgotten: 0,
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
                    if let Some((inst, seq)) = v
                        .get("id")
                        .and_then(|i| i.as_str())
                        .and_then(split_event_id)
                    {
                        ex.forgotten += set.insert(inst, seq);
                    }
                }
            }
        }
        Ok(ex)
    }

    /// Sequence ranges remembered, over every hour and instance.
    #[cfg(test)]
    pub fn remembered_ranges(&self) -> usize {
        self.ids.values().map(HourIds::ranges).sum()
    }

    /// Exports `events` (raw event objects) of one batch: each new one is
    /// one line, with `agent_id` and `node_name` added, in the file of its
    /// timestamp's hour.
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
        let mut batch_ids: HashSet<(&str, u64)> = HashSet::new();
        for ev in events {
            let (Some((inst, seq)), Some(ts)) = (
                ev.get("id")
                    .and_then(|v| v.as_str())
                    .and_then(split_event_id),
                ev.get("timestamp")
                    .and_then(|v| v.as_str())
                    .and_then(parse_rfc3339),
            ) else {
                res.failed += 1;
                continue;
            };
            let hour = hour_of(ts);
            if self.ids.get(&hour).is_some_and(|s| s.contains(inst, seq))
                || !batch_ids.insert((inst, seq))
            {
                res.duplicates += 1;
                continue;
            }
            let part = if hour < sealed_below {
                Part::Late
            } else {
                Part::Primary
            };
            let g = groups.entry((hour, part)).or_default();
            if append_line(&mut g.0, ev, agent_id, node_name).is_err() {
                res.failed += 1;
                continue;
            }
            g.1 += 1;
            g.2.push((inst, seq));
        }
        for ((hour, part), Group(bytes, n, ids)) in groups {
            match self.write(hour, part, &bytes) {
                Ok(()) => {
                    res.exported += n;
                    let set = self.ids.entry(hour).or_default();
                    for (inst, seq) in ids {
                        self.forgotten += set.insert(inst, seq);
                    }
                }
                Err(e) => {
                    log::error!("export to {}: {e}", self.dir.display());
                    res.failed += n;
                    res.write_failed += n;
                }
            }
        }
        res
    }

    /// When `fsync_every` has passed: handles (duplicated) of the files
    /// written since the last call, for the caller to fsync after it let go
    /// of the lock.
    pub fn due_for_sync(&mut self) -> Vec<File> {
        if self.last_sync.elapsed() < self.fsync_every {
            return Vec::new();
        }
        self.last_sync = Instant::now();
        let mut due = Vec::new();
        for (f, dirty) in self.files.values_mut() {
            if *dirty {
                if let Ok(d) = f.try_clone() {
                    due.push(d);
                    *dirty = false;
                }
            }
        }
        due
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

    #[test]
    fn lines_carry_the_agent_and_node_whatever_the_event_holds() {
        let line = |ev: serde_json::Value| {
            let mut out = Vec::new();
            append_line(&mut out, &ev, "a\"1", "n1").unwrap();
            assert_eq!(out.pop(), Some(b'\n'));
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let want = serde_json::json!({"id": "i-1", "x": {"y": [1]}, "agent_id": "a\"1", "node_name": "n1"});
        assert_eq!(
            line(serde_json::json!({"id": "i-1", "x": {"y": [1]}})),
            want
        );
        assert_eq!(
            line(serde_json::json!({"id": "i-1", "x": {"y": [1]}, "agent_id": "spoofed"})),
            want
        );
        assert_eq!(
            line(serde_json::json!({})),
            serde_json::json!({"agent_id": "a\"1", "node_name": "n1"})
        );
        assert!(append_line(&mut Vec::new(), &serde_json::json!([1]), "a", "n").is_err());
    }
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
        assert_eq!(
            ex.remembered_ranges(),
            1,
            "i-1..=i-3 read back as one range"
        );
        let r = ex.export("a1", "n1", &[ev("i-3"), ev("i-4")]);
        assert_eq!(r, written(1, 1));
        let (all, st) = store::read_events(&[dir.as_path()], None, None).unwrap();
        assert_eq!((all.len(), st.duplicates, st.corrupt), (4, 0, 0));
        assert_eq!(all[0]["agent_id"], "a1");
        assert_eq!(all[0]["node_name"], "n1");
        assert_eq!(all[0]["future_field"], 1, "unknown fields pass through");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sequence_sets_merge_and_stay_bounded() {
        let mut s = SeqSet::default();
        for q in [5, 7, 6, 1, 3, 2, 10] {
            assert_eq!(s.insert(q), 0);
        }
        assert_eq!(s.0, [(1, 3), (5, 7), (10, 10)]);
        assert!(s.contains(2) && s.contains(6) && s.contains(10));
        assert!(!s.contains(4) && !s.contains(8) && !s.contains(0));
        assert_eq!(s.insert(4), 0);
        assert_eq!(s.0, [(1, 7), (10, 10)]);
        // every other sequence: one range each, the oldest forgotten
        let mut s = SeqSet::default();
        let forgotten: u64 = (0..(MAX_RANGES as u64 + 10)).map(|i| s.insert(i * 2)).sum();
        assert_eq!((s.0.len(), forgotten), (MAX_RANGES, 10));
        assert!(
            !s.contains(0),
            "forgotten: a resend could be exported twice"
        );
        assert!(s.contains(2 * (MAX_RANGES as u64 + 9)));
    }
}
