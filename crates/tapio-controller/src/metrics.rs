//! The controller's own metrics, served at `GET /metrics` in the Prometheus
//! text format: requests by route and code, latency histograms, rejects by
//! error code, duplicates, export failures, front-end refusals, registry
//! evictions, and the agents known and stale.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Routes, as metric labels. Anything else is `other`.
pub const ROUTES: [&str; 8] = [
    "hello",
    "config",
    "heartbeat",
    "events",
    "status",
    "metrics",
    "healthz",
    "other",
];

/// The route label of a request path.
pub fn route_index(path: &str) -> usize {
    let name = match path {
        "/v1/agents/hello" => "hello",
        "/v1/agents/config" => "config",
        "/v1/agents/heartbeat" => "heartbeat",
        "/v1/events" => "events",
        "/v1/status" => "status",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        _ => "other",
    };
    ROUTES
        .iter()
        .position(|r| *r == name)
        .unwrap_or(ROUTES.len() - 1)
}

/// Upper bounds of the latency buckets, in seconds (+Inf is implied).
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts; the last slot is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// Request accounting, written by the worker threads.
#[derive(Default)]
pub struct HttpMetrics {
    /// (route, status code) -> requests. Bounded: 8 routes x the few codes
    /// the server answers with.
    by_code: Mutex<BTreeMap<(usize, u16), u64>>,
    /// error code name -> rejected requests.
    rejects: Mutex<BTreeMap<&'static str, u64>>,
    latency: [Histogram; ROUTES.len()],
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn observe(&self, route: usize, code: u16, took: Duration, reject: Option<&'static str>) {
        let route = route.min(ROUTES.len() - 1);
        if let Ok(mut m) = self.by_code.lock() {
            *m.entry((route, code)).or_default() += 1;
        }
        if let Some(r) = reject {
            if let Ok(mut m) = self.rejects.lock() {
                *m.entry(r).or_default() += 1;
            }
        }
        let h = &self.latency[route];
        let secs = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        h.buckets[slot].fetch_add(1, Relaxed);
        h.sum_ns
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        h.count.fetch_add(1, Relaxed);
    }
}

/// Everything else the exposition shows, read at scrape time.
pub struct Snapshot {
    pub counters: Vec<(&'static str, &'static str, u64)>,
    pub front_refusals: [(&'static str, u64); 5],
    pub connections_open: u64,
    pub connections_accepted: u64,
    /// Idle kept-alive connections closed, by reason.
    pub connections_closed_idle: [(&'static str, u64); 2],
    pub registry_evictions: u64,
    pub agents_known: u64,
    pub agents_stale: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

/// A family of one sample.
fn single(s: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    family(s, name, kind, help);
    let _ = writeln!(s, "{name} {v}");
}

/// A family with one label, a sample per value.
fn labelled(
    s: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    family(s, name, kind, help);
    for (value, n) in values {
        let _ = writeln!(s, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// The whole exposition.
pub fn render(http: &HttpMetrics, snap: &Snapshot) -> String {
    let mut s = String::with_capacity(16 * 1024);
    family(
        &mut s,
        "tapio_controller_requests_total",
        "counter",
        "Requests answered, by route and HTTP status code.",
    );
    if let Ok(m) = http.by_code.lock() {
        for ((route, code), n) in m.iter() {
            let _ = writeln!(
                s,
                "tapio_controller_requests_total{{route=\"{}\",code=\"{code}\"}} {n}",
                ROUTES[*route]
            );
        }
    }
    family(
        &mut s,
        "tapio_controller_request_duration_seconds",
        "histogram",
        "Time from the request reaching a worker to its answer being ready, by route.",
    );
    for (r, h) in http.latency.iter().enumerate() {
        let mut cumulative = 0u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Relaxed);
            let _ = writeln!(
                s,
                "tapio_controller_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cumulative}",
                ROUTES[r]
            );
        }
        cumulative += h.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            s,
            "tapio_controller_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {cumulative}",
            ROUTES[r]
        );
        let _ = writeln!(
            s,
            "tapio_controller_request_duration_seconds_sum{{route=\"{}\"}} {}",
            ROUTES[r],
            h.sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            s,
            "tapio_controller_request_duration_seconds_count{{route=\"{}\"}} {}",
            ROUTES[r],
            h.count.load(Relaxed)
        );
    }
    family(
        &mut s,
        "tapio_controller_rejected_requests_total",
        "counter",
        "Requests answered with an error, by tapio-wire error code.",
    );
    if let Ok(m) = http.rejects.lock() {
        for (code, n) in m.iter() {
            let _ = writeln!(
                s,
                "tapio_controller_rejected_requests_total{{code=\"{code}\"}} {n}"
            );
        }
    }
    for (name, help, v) in &snap.counters {
        single(&mut s, name, "counter", help, *v);
    }
    labelled(
        &mut s,
        "tapio_controller_front_refusals_total",
        "counter",
        "Requests or connections the front end refused before a worker saw them, by reason.",
        "reason",
        &snap.front_refusals,
    );
    single(
        &mut s,
        "tapio_controller_connections_open",
        "gauge",
        "Client connections open now (kept-alive ones included).",
        snap.connections_open,
    );
    single(
        &mut s,
        "tapio_controller_connections_accepted_total",
        "counter",
        "Client connections accepted (refused ones included).",
        snap.connections_accepted,
    );
    labelled(
        &mut s,
        "tapio_controller_connections_closed_idle_total",
        "counter",
        "Kept-alive connections closed while idle: after idle_timeout_secs, or to admit a new one at max_connections.",
        "reason",
        &snap.connections_closed_idle,
    );
    single(
        &mut s,
        "tapio_controller_registry_evictions_total",
        "counter",
        "Agent instances evicted from the bounded registry to admit new ones.",
        snap.registry_evictions,
    );
    labelled(
        &mut s,
        "tapio_controller_agents",
        "gauge",
        "Agent instances in the registry, by state (stale: not seen within stale_after_secs).",
        "state",
        &[("known", snap.agents_known), ("stale", snap.agents_stale)],
    );
    labelled(
        &mut s,
        "tapio_controller_config_reloads_total",
        "counter",
        "Profile reloads (SIGHUP or file change), by result.",
        "result",
        &[("ok", snap.reloads_ok), ("failed", snap.reloads_failed)],
    );
    family(
        &mut s,
        "tapio_controller_build_info",
        "gauge",
        "The controller's version and commit; always 1.",
    );
    let _ = writeln!(
        s,
        "tapio_controller_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        option_env!("TAPIO_GIT_COMMIT").unwrap_or("unknown")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_families_contiguous() {
        let m = HttpMetrics::default();
        m.observe(
            route_index("/v1/events"),
            200,
            Duration::from_micros(300),
            None,
        );
        m.observe(
            route_index("/v1/events"),
            200,
            Duration::from_millis(3),
            None,
        );
        m.observe(
            route_index("/nope"),
            404,
            Duration::from_secs(2),
            Some("UNKNOWN_ENDPOINT"),
        );
        let snap = Snapshot {
            counters: vec![(
                "tapio_controller_events_accepted_total",
                "Events accepted.",
                7,
            )],
            front_refusals: [
                ("busy", 1),
                ("head_too_large", 0),
                ("head_timeout", 0),
                ("buffer_budget", 0),
                ("malformed", 0),
            ],
            connections_open: 3,
            connections_accepted: 9,
            connections_closed_idle: [("idle_timeout", 2), ("connection_limit", 0)],
            registry_evictions: 2,
            agents_known: 3,
            agents_stale: 1,
            reloads_ok: 0,
            reloads_failed: 0,
        };
        let t = render(&m, &snap);
        for needle in [
            "tapio_controller_requests_total{route=\"events\",code=\"200\"} 2",
            "tapio_controller_requests_total{route=\"other\",code=\"404\"} 1",
            "tapio_controller_request_duration_seconds_bucket{route=\"events\",le=\"0.0005\"} 1",
            "tapio_controller_request_duration_seconds_bucket{route=\"events\",le=\"0.005\"} 2",
            "tapio_controller_request_duration_seconds_bucket{route=\"events\",le=\"+Inf\"} 2",
            "tapio_controller_request_duration_seconds_bucket{route=\"other\",le=\"1\"} 0",
            "tapio_controller_request_duration_seconds_bucket{route=\"other\",le=\"+Inf\"} 1",
            "tapio_controller_request_duration_seconds_count{route=\"events\"} 2",
            "tapio_controller_rejected_requests_total{code=\"UNKNOWN_ENDPOINT\"} 1",
            "tapio_controller_events_accepted_total 7",
            "tapio_controller_agents{state=\"stale\"} 1",
        ] {
            assert!(t.contains(needle), "missing {needle}\n{t}");
        }
        let mut seen: Vec<&str> = Vec::new();
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let fam = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| f.ends_with("_seconds"))
                .unwrap_or(name);
            if seen.last() != Some(&fam) {
                assert!(!seen.contains(&fam), "{fam} is split");
                seen.push(fam);
            }
        }
    }
}
