//! `tapio summary`: what happened in a window, at a glance.

use crate::filter::Filter;
use crate::table;
use argh::FromArgs;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Counts by type, top remote endpoints, top devices and process deaths by
/// comm, over a window (default the last hour).
#[derive(FromArgs)]
#[argh(subcommand, name = "summary")]
pub struct SummaryArgs {
    /// the agent's data directory (default /var/lib/tapio)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// the agent's fallback directory, merged in (repeatable)
    #[argh(option)]
    pub fallback_dir: Vec<PathBuf>,
    /// from this time (default 1h): RFC 3339 or a duration back from now
    #[argh(option, default = "String::from(\"1h\")")]
    pub since: String,
    /// until this time (default now)
    #[argh(option)]
    pub until: Option<String>,
    /// rows per top list (default 5)
    #[argh(option, default = "5")]
    pub top: usize,
}

fn top(map: BTreeMap<String, u64>, n: usize) -> Vec<Vec<String>> {
    let mut v: Vec<(String, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .take(n)
        .map(|(k, c)| vec![c.to_string(), k])
        .collect()
}

pub fn run(a: &SummaryArgs, out: &mut dyn Write) -> Result<(), crate::Failure> {
    let filter = Filter::new(&None, &None, &Some(a.since.clone()), &a.until, None, None)
        .map_err(crate::Failure::Usage)?;
    let (events, _) = super::load(
        &crate::store_dirs(&a.data_dir, &a.fallback_dir),
        filter.hours(),
    )?;
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut endpoints: BTreeMap<String, u64> = BTreeMap::new();
    let mut devices: BTreeMap<String, u64> = BTreeMap::new();
    let mut deaths: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for e in events.iter().filter(|e| filter.matches(e)) {
        total += 1;
        let t = e["type"].as_str().unwrap_or("?");
        *by_type.entry(super::short_type(t).to_string()).or_default() += 1;
        let f = &e["facts"];
        match e["observer"].as_str() {
            Some("network") => {
                let k = format!("{}:{}", f["dst_ip"].as_str().unwrap_or("?"), f["dst_port"]);
                *endpoints.entry(k).or_default() += 1;
            }
            Some("storage") => {
                *devices
                    .entry(format!("{}:{}", f["dev_major"], f["dev_minor"]))
                    .or_default() += 1;
            }
            Some("process") if t.ends_with("abnormal_exit") || t.ends_with("oom_kill") => {
                *deaths
                    .entry(f["comm"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    let mut s = format!("{total} events since {}\n\n", a.since);
    let mut section = |title: &str, head: &[&str], rows: Vec<Vec<String>>| {
        if !rows.is_empty() {
            s.push_str(title);
            s.push('\n');
            s.push_str(&table::render(head, &rows));
            s.push('\n');
        }
    };
    section("By type", &["COUNT", "TYPE"], top(by_type, usize::MAX));
    section(
        "Top remote endpoints (network)",
        &["COUNT", "ENDPOINT"],
        top(endpoints, a.top),
    );
    section(
        "Top devices (storage)",
        &["COUNT", "DEVICE"],
        top(devices, a.top),
    );
    section(
        "Process deaths by comm",
        &["COUNT", "COMM"],
        top(deaths, a.top),
    );
    out.write_all(s.as_bytes()).map_err(crate::write_failed)
}
