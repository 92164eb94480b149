//! `tapio events`: list stored events, filtered.

use crate::filter::Filter;
use crate::table;
use argh::FromArgs;
use std::io::Write;
use std::path::PathBuf;

/// List stored events, oldest first: an aligned table, or JSON lines with
/// --json.
#[derive(FromArgs)]
#[argh(subcommand, name = "events")]
pub struct EventsArgs {
    /// the agent's data directory (default /var/lib/tapio)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// the agent's fallback directory, merged in (repeatable)
    #[argh(option)]
    pub fallback_dir: Vec<PathBuf>,
    /// only this observer: network, storage, process
    #[argh(option)]
    pub observer: Option<String>,
    /// only this type (full, or the part after the observer, e.g.
    /// connection_refused)
    #[argh(option, long = "type")]
    pub kind: Option<String>,
    /// from this time: RFC 3339, or a duration back from now (15m, 2h)
    #[argh(option)]
    pub since: Option<String>,
    /// until this time: RFC 3339, or a duration back from now
    #[argh(option)]
    pub until: Option<String>,
    /// only events with this pid
    #[argh(option)]
    pub pid: Option<u64>,
    /// only network events with this source or destination port
    #[argh(option)]
    pub port: Option<u64>,
    /// at most this many events, the most recent ones
    #[argh(option)]
    pub limit: Option<usize>,
    /// print JSON lines instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(a: &EventsArgs, out: &mut dyn Write) -> Result<(), crate::Failure> {
    let filter = Filter::new(&a.observer, &a.kind, &a.since, &a.until, a.pid, a.port)
        .map_err(crate::Failure::Usage)?;
    let (events, _) = super::load(
        &crate::store_dirs(&a.data_dir, &a.fallback_dir),
        filter.hours(),
    )?;
    let mut selected: Vec<&serde_json::Value> =
        events.iter().filter(|e| filter.matches(e)).collect();
    if let Some(n) = a.limit {
        let skip = selected.len().saturating_sub(n);
        selected.drain(..skip);
    }
    let w = |out: &mut dyn Write, s: &str| out.write_all(s.as_bytes()).map_err(crate::write_failed);
    if a.json {
        for e in selected {
            w(out, &format!("{e}\n"))?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = selected
        .iter()
        .map(|e| {
            vec![
                super::clean(e["timestamp"].as_str().unwrap_or("")),
                super::clean(super::short_type(e["type"].as_str().unwrap_or(""))),
                super::clean(e["severity"].as_str().unwrap_or("")),
                super::describe(e),
            ]
        })
        .collect();
    if rows.is_empty() {
        return w(out, "no events\n");
    }
    w(
        out,
        &table::render(&["TIME", "TYPE", "SEVERITY", "FACTS"], &rows),
    )
}
