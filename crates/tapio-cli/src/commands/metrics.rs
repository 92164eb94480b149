//! `tapio metrics`: the agent's textfile metrics, grouped, with every
//! non-zero loss counter explained.

use argh::FromArgs;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Show the agent's metrics (its Prometheus textfile), grouped, and explain
/// every non-zero loss counter.
#[derive(FromArgs)]
#[argh(subcommand, name = "metrics")]
pub struct MetricsArgs {
    /// the agent's --metrics-file (default $TAPIO_METRICS_FILE, else
    /// /run/tapio-metrics/tapio.prom, the systemd unit's)
    #[argh(option)]
    pub metrics_file: Option<PathBuf>,
    /// show zero-valued samples too
    #[argh(switch)]
    pub all: bool,
    /// exit 1 when any loss counter is non-zero (for scripts and alerts)
    #[argh(switch)]
    pub check: bool,
}

/// How many loss counters are non-zero in a textfile.
pub fn non_zero_losses(text: &str) -> usize {
    parse(text)
        .iter()
        .filter(|(name, _, v)| *v > 0.0 && LOSSES.iter().any(|(m, _, _)| m == name))
        .count()
}

/// Loss counters: (metric name, what it means, what to do).
pub const LOSSES: &[(&str, &str, &str)] = &[
    (
        "tapio_ringbuf_lost_total",
        "the kernel produced records faster than the agent read them; those facts are gone",
        "lower the event rate (profile thresholds, windows) or raise ringbuf.wakeup_bytes; check the agent's CPU",
    ),
    (
        "tapio_kernel_recursion_misses_total",
        "the kernel skipped a program run because the same program was already running on that CPU (a softirq over process context); that run may have been an event",
        "expected only under heavy softirq load; if it keeps rising, report it with the program name",
    ),
    (
        "tapio_malformed_events_total",
        "records that failed the ABI check; a kernel/agent mismatch or a bug",
        "report it with `tapio-agent check` output and the agent version",
    ),
    (
        "tapio_queue_drops_total",
        "the sinks fell behind and the poller -> sender queue was full",
        "check sink failures (disk, stdout consumer); raise --queue-capacity",
    ),
    (
        "tapio_sink_dropped_events_total",
        "a sink could not keep events (disk full without fallback, controller unreachable too long)",
        "free space or add --fallback-dir; check the controller and tapio_controller_send_failures_total",
    ),
    (
        "tapio_sink_failures_total",
        "failed write operations to a sink",
        "see the agent log for the error; check the disk or the controller",
    ),
    (
        "tapio_correlation_drops_total",
        "facts the kernel side could not correlate exactly and did not guess",
        "see docs/events.md for each reason; a full map means the workload exceeds the map size",
    ),
    (
        "tapio_kernel_config_skips_total",
        "BPF program runs skipped because both config slots were being rewritten at once",
        "config writes come faster than a program runs: look for a reload loop (SIGHUP or controller)",
    ),
    (
        "tapio_config_abi_mismatch_total",
        "BPF programs saw a config layout they do not know and emitted nothing",
        "the agent binary and its programs disagree: reinstall the agent",
    ),
    (
        "tapio_controller_send_failures_total",
        "requests to the controller that failed",
        "check the controller's address, health and `tapio-controller` logs",
    ),
];

fn parse(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, v) = l.rsplit_once(' ')?;
            let v: f64 = v.trim().parse().ok()?;
            let name = key.split('{').next()?.to_string();
            let labels = key.strip_prefix(&name).unwrap_or("").to_string();
            Some((name, labels, v))
        })
        .collect()
}

pub fn render(text: &str, all: bool) -> String {
    let samples = parse(text);
    let mut groups: BTreeMap<&str, Vec<&(String, String, f64)>> = BTreeMap::new();
    for s in &samples {
        let group = match s.0.as_str() {
            n if n.starts_with("tapio_controller") || n.starts_with("tapio_config") => {
                "controller and config"
            }
            n if n.starts_with("tapio_sink") || n.starts_with("tapio_store") => "sinks",
            n if n.starts_with("tapio_observer") => "observers",
            _ => "evidence pipeline",
        };
        groups.entry(group).or_default().push(s);
    }
    let mut out = String::new();
    for (g, list) in &groups {
        out.push_str(&format!("{g}\n"));
        for (name, labels, v) in list.iter().map(|s| (&s.0, &s.1, s.2)) {
            if all || v != 0.0 || name == "tapio_observer_up" {
                out.push_str(&format!("  {name}{labels} {v}\n"));
            }
        }
    }
    let mut losses = Vec::new();
    for (metric, meaning, action) in LOSSES {
        for (name, labels, v) in &samples {
            if name == metric && *v > 0.0 {
                losses.push(format!(
                    "  ! {name}{labels} = {v}\n      means: {meaning}\n      do:    {action}\n"
                ));
            }
        }
    }
    if losses.is_empty() {
        out.push_str("\nno losses: every loss counter is zero\n");
    } else {
        out.push_str(&format!("\n{} non-zero loss counter(s):\n", losses.len()));
        for l in losses {
            out.push_str(&l);
        }
    }
    out
}

pub fn run(a: &MetricsArgs, out: &mut dyn Write) -> Result<(), crate::Failure> {
    let path = a
        .metrics_file
        .clone()
        .or_else(|| {
            std::env::var_os("TAPIO_METRICS_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_METRICS_FILE));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (is the agent running with --metrics-file {}?)",
            path.display(),
            path.display()
        )
    })?;
    out.write_all(render(&text, a.all).as_bytes())
        .map_err(crate::write_failed)?;
    let losses = non_zero_losses(&text);
    if a.check && losses > 0 {
        return Err(crate::Failure::Runtime(format!(
            "--check: {losses} loss counter(s) are non-zero"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_non_zero_losses_only() {
        let text = "# TYPE tapio_queue_drops_total counter\ntapio_queue_drops_total{observer=\"network\"} 3\ntapio_ringbuf_lost_total{observer=\"network\"} 0\ntapio_observer_up{observer=\"network\"} 1\ngarbage line\n";
        let r = render(text, false);
        assert!(
            r.contains("! tapio_queue_drops_total{observer=\"network\"} = 3"),
            "{r}"
        );
        assert!(r.contains("means: the sinks fell behind"));
        assert!(!r.contains("tapio_ringbuf_lost_total"));
        assert!(r.contains("1 non-zero loss counter(s)"));
        let clean = render("tapio_ringbuf_lost_total{observer=\"network\"} 0\n", true);
        assert!(clean.contains("no losses"));
        assert!(clean.contains("tapio_ringbuf_lost_total{observer=\"network\"} 0"));
    }
}
