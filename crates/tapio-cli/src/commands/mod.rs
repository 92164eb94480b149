//! One module per subcommand.

pub mod events;
pub mod metrics;
pub mod summary;
pub mod tail;

use serde_json::Value;
use std::path::PathBuf;
use tapio_common::store::{ReadStats, read_events};

/// Reads the store with a clear message for a missing or unreadable
/// directory, and reports skipped lines on stderr.
pub fn load(
    dirs: &[PathBuf],
    hours: (Option<u64>, Option<u64>),
) -> Result<(Vec<Value>, ReadStats), String> {
    let refs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (events, stats) = read_events(&refs, hours.0, hours.1).map_err(|e| {
        format!(
            "cannot read the data directory {}: {e} (is the agent running with --data-dir {}?)",
            dirs[0].display(),
            dirs[0].display()
        )
    })?;
    report(&stats);
    Ok((events, stats))
}

pub fn report(stats: &ReadStats) {
    if stats.corrupt > 0 {
        eprintln!(
            "tapio: skipped {} corrupt line(s) in the store",
            stats.corrupt
        );
    }
    for (p, e) in &stats.unreadable {
        eprintln!("tapio: could not read {}: {e}", p.display());
    }
}

/// `s` with every control character escaped: store contents (a comm, a
/// file name) are chosen by any local user and must not drive the terminal.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    tapio_common::logger::push_escaped(&mut out, s);
    out
}

/// The short human description of an event's facts.
pub fn describe(e: &Value) -> String {
    let f = &e["facts"];
    let s = |k: &str| {
        f[k].as_str()
            .map(String::from)
            .or_else(|| f.get(k).filter(|v| !v.is_null()).map(|v| v.to_string()))
    };
    let mut parts: Vec<String> = Vec::new();
    match e["observer"].as_str() {
        Some("network") => {
            parts.push(format!(
                "{}:{} -> {}:{}",
                s("src_ip").unwrap_or_default(),
                s("src_port").unwrap_or_default(),
                s("dst_ip").unwrap_or_default(),
                s("dst_port").unwrap_or_default()
            ));
            if let Some(r) = s("retransmits") {
                parts.push(format!("retransmits={r}"));
            }
        }
        Some("storage") => {
            parts.push(format!(
                "dev {}:{} {} {}B sector {} latency {}",
                s("dev_major").unwrap_or_default(),
                s("dev_minor").unwrap_or_default(),
                s("op").unwrap_or_default(),
                s("bytes").unwrap_or_default(),
                s("sector").unwrap_or_default(),
                f["latency_ns"].as_u64().map(fmt_ns).unwrap_or_default()
            ));
            if let Some(err) = s("error") {
                parts.push(format!("error={err}"));
            }
        }
        Some("process") => {
            for k in ["exit_code", "signal", "memcg_id", "rss_kb", "filename"] {
                if let Some(v) = s(k) {
                    parts.push(format!("{k}={v}"));
                }
            }
        }
        _ => {}
    }
    if let Some(pid) = s("pid") {
        parts.push(format!("pid={pid} comm={}", s("comm").unwrap_or_default()));
    }
    clean(&parts.join(" "))
}

pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}us", ns as f64 / 1e3)
    }
}

/// `kernel.network.connection_refused` -> `network.connection_refused`.
pub fn short_type(t: &str) -> &str {
    t.strip_prefix("kernel.").unwrap_or(t)
}
