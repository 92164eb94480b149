//! The agent's counters, and the Prometheus textfile that exposes them.
//!
//! All counters are monotonic. The agent has no inbound server: the
//! textfile is written atomically (temporary file + rename) every few
//! seconds and at exit, for node_exporter's textfile collector or a human.
//!
//! Loss accounting, per observer (docs/operations.md):
//!   kernel_events = ringbuf_lost + received
//!   received      = malformed + queue_drops + suppressed + emitted

use crate::abi::counter;
use crate::event::EventKind;
use crate::observers::{
    COUNT as OBS_COUNT, NAMES as OBSERVER_NAMES, OBSERVERS, index_of as observer_index,
};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use tapio_wire::ObserverState;

/// Reasons a received record is deliberately not emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppress {
    /// The observer was disabled by a config applied after the record was
    /// produced (records in flight across a config change).
    ObserverDisabled = 0,
    /// The record's type belongs to another observer's ring buffer.
    WrongObserver = 1,
}
pub const SUPPRESS_REASONS: [&str; 2] = ["observer_disabled", "wrong_observer"];

/// The sinks, in `tapio_sink_*{sink}` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkId {
    Stdout = 0,
    File = 1,
    /// The controller client's queue and requests (`crate::client`).
    Controller = 2,
}
pub const SINK_NAMES: [&str; 3] = ["stdout", "file", "controller"];

/// `tapio_config_fetch_total{result}`
pub const FETCH_RESULTS: [&str; 4] = ["applied", "not_modified", "rejected", "error"];
/// `tapio_controller_send_failures_total{kind}`
pub const SEND_FAILURE_KINDS: [&str; 6] = [
    "connect",
    "timeout",
    "http_status",
    "redirect",
    "io",
    "gave_up",
];

/// Kernel-side counters of each observer, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelCounters(pub [[u64; counter::MAX as usize]; OBS_COUNT]);

impl KernelCounters {
    pub fn get(&self, obs: usize, idx: u32) -> u64 {
        self.0[obs][idx as usize]
    }
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

pub struct Metrics {
    pub received: [AtomicU64; OBS_COUNT],
    pub malformed: [AtomicU64; OBS_COUNT],
    pub queue_drops: [AtomicU64; OBS_COUNT],
    pub suppressed: [[AtomicU64; 2]; OBS_COUNT],
    pub emitted: [AtomicU64; EventKind::ALL.len()],
    /// Events still queued for the sender when a shutdown gave up waiting
    /// for it (per observer): received, never emitted.
    pub shutdown_abandoned: [AtomicU64; OBS_COUNT],
    pub sink_failures: [AtomicU64; 3],
    pub sink_dropped: [AtomicU64; 3],
    pub sink_fallback: [AtomicU64; 3],
    pub observer_state: [AtomicU8; OBS_COUNT],
    pub config_fetch: [AtomicU64; 4],
    pub config_reloads_ok: AtomicU64,
    pub config_reloads_failed: AtomicU64,
    pub controller_send_failures: [AtomicU64; 6],
    pub controller_events_sent: AtomicU64,
    /// Events of batches given up after an attempt whose outcome is unknown.
    pub controller_unconfirmed: AtomicU64,
    /// The controller client's connections (shared with its HTTP client).
    pub controller_connections: std::sync::Arc<crate::client::http::ConnectionCounters>,
    pub store_files_removed: AtomicU64,
    /// Store syncs and write-outs that failed (sink::file).
    pub store_sync_failures: AtomicU64,
    /// Workload attribution: events whose cgroup was resolved / not, and
    /// walks of the cgroup hierarchy; the sender's resolver counts here.
    pub attribution: std::sync::Arc<crate::attribution::Stats>,
    pub config_generation: AtomicU32,
    /// Last kernel counter snapshot (refreshed by the metrics writer).
    pub kernel: Mutex<KernelCounters>,
    /// (observer, program, runs the kernel skipped because the program was
    /// already running on that CPU), read with the kernel counters.
    pub recursion_misses: Mutex<Vec<(usize, String, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: zeros(),
            malformed: zeros(),
            queue_drops: zeros(),
            suppressed: std::array::from_fn(|_| zeros()),
            emitted: zeros(),
            shutdown_abandoned: zeros(),
            sink_failures: zeros(),
            sink_dropped: zeros(),
            sink_fallback: zeros(),
            observer_state: std::array::from_fn(|_| {
                AtomicU8::new(state_code(ObserverState::Disabled))
            }),
            config_fetch: zeros(),
            config_reloads_ok: AtomicU64::new(0),
            config_reloads_failed: AtomicU64::new(0),
            controller_send_failures: zeros(),
            controller_events_sent: AtomicU64::new(0),
            controller_unconfirmed: AtomicU64::new(0),
            controller_connections: std::sync::Arc::default(),
            store_files_removed: AtomicU64::new(0),
            store_sync_failures: AtomicU64::new(0),
            attribution: std::sync::Arc::default(),
            config_generation: AtomicU32::new(0),
            kernel: Mutex::new(KernelCounters::default()),
            recursion_misses: Mutex::new(Vec::new()),
        }
    }
}

pub fn state_code(s: ObserverState) -> u8 {
    match s {
        ObserverState::Up => 1,
        ObserverState::Failed => 2,
        ObserverState::Disabled => 3,
        ObserverState::Unsupported => 4,
        ObserverState::Unknown => 0,
    }
}

pub fn state_of(code: u8) -> ObserverState {
    match code {
        1 => ObserverState::Up,
        2 => ObserverState::Failed,
        3 => ObserverState::Disabled,
        4 => ObserverState::Unsupported,
        _ => ObserverState::Unknown,
    }
}

pub fn kind_index(kind: EventKind) -> usize {
    EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Metrics {
    pub fn set_state(&self, obs: usize, s: ObserverState) {
        self.observer_state[obs].store(state_code(s), Relaxed);
    }

    pub fn state(&self, obs: usize) -> ObserverState {
        state_of(self.observer_state[obs].load(Relaxed))
    }

    pub fn emitted_for(&self, obs: usize) -> u64 {
        EventKind::ALL
            .iter()
            .enumerate()
            .filter(|(_, k)| observer_index(k.observer()) == Some(obs))
            .map(|(i, _)| self.emitted[i].load(Relaxed))
            .sum()
    }

    pub fn suppressed_for(&self, obs: usize) -> u64 {
        self.suppressed[obs].iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Replaces the per-program recursion misses with a fresh reading
    /// (programs that could not be read keep their previous value).
    pub fn set_recursion_misses(&self, fresh: Vec<(usize, String, u64)>) {
        if let Ok(mut cur) = self.recursion_misses.lock() {
            for (obs, name, v) in fresh {
                match cur.iter_mut().find(|(o, n, _)| *o == obs && *n == name) {
                    Some(slot) => slot.2 = v,
                    None => cur.push((obs, name, v)),
                }
            }
        }
    }

    /// Every counter as `name{labels}` -> value: the textfile's samples and
    /// the heartbeat's counters.
    pub fn samples(&self) -> Vec<(String, u64)> {
        let k = self.kernel.lock().map(|g| *g).unwrap_or_default();
        let mut out = Vec::with_capacity(96);
        let mut push = |name: &str, labels: String, v: u64| {
            if labels.is_empty() {
                out.push((name.to_string(), v));
            } else {
                out.push((format!("{name}{{{labels}}}"), v));
            }
        };
        for (o, name) in OBSERVER_NAMES.iter().enumerate() {
            let l = format!("observer=\"{name}\"");
            push(
                "tapio_kernel_events_total",
                l.clone(),
                k.get(o, counter::ATTEMPTS),
            );
            push(
                "tapio_ringbuf_lost_total",
                l.clone(),
                k.get(o, counter::RINGBUF_LOST),
            );
            push(
                "tapio_received_events_total",
                l.clone(),
                self.received[o].load(Relaxed),
            );
            push(
                "tapio_malformed_events_total",
                l.clone(),
                self.malformed[o].load(Relaxed),
            );
            push(
                "tapio_queue_drops_total",
                l.clone(),
                self.queue_drops[o].load(Relaxed),
            );
            for (r, reason) in SUPPRESS_REASONS.iter().enumerate() {
                push(
                    "tapio_events_suppressed_total",
                    format!("{l},reason=\"{reason}\""),
                    self.suppressed[o][r].load(Relaxed),
                );
            }
            push(
                "tapio_shutdown_abandoned_events_total",
                l.clone(),
                self.shutdown_abandoned[o].load(Relaxed),
            );
            let up = u64::from(self.state(o) == ObserverState::Up);
            push("tapio_observer_up", l, up);
        }
        if let Ok(r) = self.recursion_misses.lock() {
            for (obs, program, v) in r.iter() {
                push(
                    "tapio_kernel_recursion_misses_total",
                    format!(
                        "observer=\"{}\",program=\"{program}\"",
                        OBSERVER_NAMES.get(*obs).copied().unwrap_or("unknown")
                    ),
                    *v,
                );
            }
        }
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            push(
                "tapio_events_total",
                format!(
                    "observer=\"{}\",type=\"{}\"",
                    kind.observer().as_str(),
                    kind.type_name()
                ),
                self.emitted[i].load(Relaxed),
            );
        }
        for (o, spec) in OBSERVERS.iter().enumerate() {
            for (idx, reason) in spec.correlation {
                push(
                    "tapio_correlation_drops_total",
                    format!("observer=\"{}\",reason=\"{reason}\"", OBSERVER_NAMES[o]),
                    k.get(o, *idx),
                );
            }
        }
        for (o, spec) in OBSERVERS.iter().enumerate() {
            for i in spec.informational {
                push(i.family, String::new(), k.get(o, i.counter));
            }
        }
        let abi: u64 = (0..OBS_COUNT)
            .map(|o| k.get(o, counter::ABI_MISMATCH))
            .sum();
        push("tapio_config_abi_mismatch_total", String::new(), abi);
        for (o, name) in OBSERVER_NAMES.iter().enumerate() {
            push(
                "tapio_kernel_config_skips_total",
                format!("observer=\"{name}\""),
                k.get(o, counter::CONFIG_SKIPPED),
            );
        }
        for (s, name) in SINK_NAMES.iter().enumerate() {
            let l = format!("sink=\"{name}\"");
            push(
                "tapio_sink_failures_total",
                l.clone(),
                self.sink_failures[s].load(Relaxed),
            );
            push(
                "tapio_sink_dropped_events_total",
                l.clone(),
                self.sink_dropped[s].load(Relaxed),
            );
            push(
                "tapio_sink_fallback_events_total",
                l,
                self.sink_fallback[s].load(Relaxed),
            );
        }
        for (i, r) in FETCH_RESULTS.iter().enumerate() {
            push(
                "tapio_config_fetch_total",
                format!("result=\"{r}\""),
                self.config_fetch[i].load(Relaxed),
            );
        }
        push(
            "tapio_config_reloads_total",
            "result=\"ok\"".into(),
            self.config_reloads_ok.load(Relaxed),
        );
        push(
            "tapio_config_reloads_total",
            "result=\"failed\"".into(),
            self.config_reloads_failed.load(Relaxed),
        );
        for (i, kind) in SEND_FAILURE_KINDS.iter().enumerate() {
            push(
                "tapio_controller_send_failures_total",
                format!("kind=\"{kind}\""),
                self.controller_send_failures[i].load(Relaxed),
            );
        }
        push(
            "tapio_controller_events_sent_total",
            String::new(),
            self.controller_events_sent.load(Relaxed),
        );
        push(
            "tapio_controller_unconfirmed_events_total",
            String::new(),
            self.controller_unconfirmed.load(Relaxed),
        );
        let conns = &self.controller_connections;
        for (result, n) in [("opened", &conns.opened), ("replaced", &conns.replaced)] {
            push(
                "tapio_controller_connections_total",
                format!("result=\"{result}\""),
                n.load(Relaxed),
            );
        }
        push(
            "tapio_store_files_removed_total",
            String::new(),
            self.store_files_removed.load(Relaxed),
        );
        push(
            "tapio_store_sync_failures_total",
            String::new(),
            self.store_sync_failures.load(Relaxed),
        );
        let a = &self.attribution;
        for (result, c) in [("resolved", &a.resolved), ("unresolved", &a.unresolved)] {
            push(
                "tapio_cgroup_attribution_total",
                format!("result=\"{result}\""),
                c.load(Relaxed),
            );
        }
        push(
            "tapio_cgroup_walks_total",
            String::new(),
            a.walks.load(Relaxed),
        );
        push(
            "tapio_cgroup_walks_truncated_total",
            String::new(),
            a.truncated_walks.load(Relaxed),
        );
        push(
            "tapio_config_generation",
            String::new(),
            u64::from(self.config_generation.load(Relaxed)),
        );
        out
    }

    /// The Prometheus text exposition of [`Metrics::samples`]: each family
    /// contiguous, with one `# HELP` and one `# TYPE` line, then
    /// `tapio_build_info`. `promtool check metrics` accepts it (tested).
    pub fn render(&self) -> String {
        let samples = self.samples();
        // Families in order of first appearance; samples keep their order.
        let mut families: Vec<&str> = Vec::with_capacity(48);
        for (key, _) in &samples {
            let name = family(key);
            if !families.contains(&name) {
                families.push(name);
            }
        }
        let mut s = String::with_capacity(12 * 1024);
        for name in families {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(s, "# HELP {name} {}", help(name));
            let _ = writeln!(s, "# TYPE {name} {kind}");
            for (key, v) in samples.iter().filter(|(k, _)| family(k) == name) {
                let _ = writeln!(s, "{key} {v}");
            }
        }
        let _ = writeln!(s, "# HELP tapio_build_info {}", help("tapio_build_info"));
        let _ = writeln!(s, "# TYPE tapio_build_info gauge");
        let _ = writeln!(
            s,
            "tapio_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            option_env!("TAPIO_GIT_COMMIT").unwrap_or("unknown")
        );
        s
    }

    /// Writes the textfile atomically: `<path>.tmp` in the same directory,
    /// mode 0644 whatever the umask (node_exporter runs as another user),
    /// then rename.
    pub fn write_textfile(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let tmp = path.with_extension("prom.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(self.render().as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, path)
    }
}

/// The metric family of a sample key (`name{labels}` or `name`).
fn family(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

/// The `# HELP` text of each family; one place for what each one means.
fn help(name: &str) -> &'static str {
    match name {
        "tapio_kernel_events_total" => "Records the BPF programs tried to emit (attempts).",
        "tapio_ringbuf_lost_total" => "Records lost because the ring buffer was full.",
        "tapio_kernel_recursion_misses_total" => {
            "Program runs the kernel skipped because the program was already running on that CPU."
        }
        "tapio_received_events_total" => "Records the agent read from the ring buffer.",
        "tapio_malformed_events_total" => "Records that failed to parse (counted, not emitted).",
        "tapio_queue_drops_total" => "Events dropped because the poller-to-sender queue was full.",
        "tapio_events_suppressed_total" => "Events not emitted on purpose, by reason.",
        "tapio_shutdown_abandoned_events_total" => {
            "Events still queued when a shutdown gave up waiting for the sender."
        }
        "tapio_observer_up" => "1 when the observer is loaded and attached.",
        "tapio_events_total" => "Events emitted, by observer and type.",
        "tapio_correlation_drops_total" => "Facts the kernel side could not correlate, by reason.",
        "tapio_config_abi_mismatch_total" => {
            "Program runs that ignored a config of another ABI version."
        }
        "tapio_kernel_config_skips_total" => {
            "Program runs skipped because both config slots were being rewritten."
        }
        "tapio_sink_failures_total" => "Failed writes, by sink.",
        "tapio_sink_dropped_events_total" => "Events a sink could not store, by sink.",
        "tapio_sink_fallback_events_total" => "Events written to the fallback path, by sink.",
        "tapio_config_fetch_total" => "Config polls of the controller, by result.",
        "tapio_config_reloads_total" => "Config reloads (SIGHUP or controller), by result.",
        "tapio_controller_send_failures_total" => "Failed event batch sends, by kind.",
        "tapio_controller_events_sent_total" => "Events the controller confirmed.",
        "tapio_controller_unconfirmed_events_total" => {
            "Events given up after an attempt that may have reached the controller."
        }
        "tapio_controller_connections_total" => {
            "Connections to the controller: opened, and kept-alive ones found closed before an answer and replaced."
        }
        "tapio_store_files_removed_total" => "Store files removed by retention.",
        "tapio_store_sync_failures_total" => {
            "Store fsyncs and write-outs that failed: what they covered may not be on disk."
        }
        "tapio_config_generation" => "The config generation in force in the kernel.",
        "tapio_cgroup_attribution_total" => {
            "Events whose owner's cgroup was resolved to a path (workload facts) or not."
        }
        "tapio_cgroup_walks_total" => "Walks of the cgroup v2 hierarchy to map cgroup ids.",
        "tapio_cgroup_walks_truncated_total" => {
            "Walks stopped at the bound on mapped cgroups (65,536)."
        }
        "tapio_build_info" => "The agent's version and commit; always 1.",
        // An observer's own counters carry their help in its row.
        _ => OBSERVERS
            .iter()
            .flat_map(|s| s.informational)
            .find(|i| i.family == name)
            .map_or("Tapio agent metric.", |i| i.help),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_with_type_lines() {
        let m = Metrics::default();
        m.received[0].store(5, Relaxed);
        m.emitted[kind_index(EventKind::ConnectionRefused)].store(4, Relaxed);
        m.queue_drops[0].store(1, Relaxed);
        m.kernel.lock().unwrap().0[0][counter::ATTEMPTS as usize] = 6;
        m.kernel.lock().unwrap().0[0][counter::RINGBUF_LOST as usize] = 1;
        let text = m.render();
        for needle in [
            "# TYPE tapio_kernel_events_total counter",
            "tapio_kernel_events_total{observer=\"network\"} 6",
            "tapio_ringbuf_lost_total{observer=\"network\"} 1",
            "tapio_received_events_total{observer=\"network\"} 5",
            "tapio_queue_drops_total{observer=\"network\"} 1",
            "tapio_events_total{observer=\"network\",type=\"kernel.network.connection_refused\"} 4",
            "tapio_events_suppressed_total{observer=\"network\",reason=\"observer_disabled\"} 0",
            "tapio_correlation_drops_total{observer=\"storage\",reason=\"ambiguous_inflight_io\"} 0",
            "tapio_sink_failures_total{sink=\"file\"} 0",
            "tapio_config_abi_mismatch_total 0",
            "tapio_observer_up{observer=\"network\"} 0",
            "tapio_config_fetch_total{result=\"not_modified\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
        // each family's HELP and TYPE lines appear once, and each family's
        // samples follow them without another family in between
        for fam in samples_families(&text) {
            assert_eq!(text.matches(&format!("# TYPE {fam} ")).count(), 1, "{fam}");
            assert_eq!(text.matches(&format!("# HELP {fam} ")).count(), 1, "{fam}");
            assert_ne!(help(&fam), "Tapio agent metric.", "{fam} has its own HELP");
        }
        let mut seen: Vec<String> = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let fam = family(line.split(' ').next().unwrap()).to_string();
            if seen.last() != Some(&fam) {
                assert!(!seen.contains(&fam), "{fam} is split:\n{text}");
                seen.push(fam);
            }
        }
        assert!(text.contains("tapio_build_info{version=\""));
        assert_eq!(m.emitted_for(0), 4);
    }

    fn samples_families(text: &str) -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| family(l.split(' ').next().unwrap()).to_string())
            .collect();
        v.dedup();
        v
    }

    #[test]
    fn textfile_is_replaced_atomically() {
        let dir = std::env::temp_dir().join(format!("tapio-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tapio.prom");
        let m = Metrics::default();
        m.write_textfile(&p).unwrap();
        m.received[1].store(9, Relaxed);
        m.write_textfile(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("tapio_received_events_total{observer=\"storage\"} 9"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644,
            "readable by node_exporter's user whatever the umask"
        );
        assert!(!dir.join("tapio.prom.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
