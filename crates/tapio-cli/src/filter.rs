//! Event filters shared by the commands.

use serde_json::Value;
use tapio_common::time::{now_unix_ns, parse_duration, parse_rfc3339};
use tapio_wire::EventKind;

/// The observers an event can come from: those of the event kinds, in
/// their order (one source: tapio-common's event model).
fn observers() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for k in EventKind::ALL {
        let o = k.observer().as_str();
        if !v.contains(&o) {
            v.push(o);
        }
    }
    v
}

/// `--type` matches the full type (`kernel.network.connection_refused`) or
/// its part after the observer (`connection_refused`).
fn type_matches(t: &str, k: &str) -> bool {
    t == k || t.strip_suffix(k).is_some_and(|head| head.ends_with('.'))
}

/// `2026-11-22T06:00:00Z` or a duration back from now (`15m`, `2h`).
pub fn parse_time(s: &str, now: u64) -> Result<u64, String> {
    if let Some(ns) = parse_rfc3339(s) {
        return Ok(ns);
    }
    match parse_duration(s) {
        Some(d) => Ok(now.saturating_sub(d)),
        None => Err(format!(
            "{s:?} is neither RFC 3339 (2026-11-22T06:00:00Z) nor a duration (15m, 2h, 7d)"
        )),
    }
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub observer: Option<String>,
    pub kind: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub pid: Option<u64>,
    pub port: Option<u64>,
}

impl Filter {
    pub fn new(
        observer: &Option<String>,
        kind: &Option<String>,
        since: &Option<String>,
        until: &Option<String>,
        pid: Option<u64>,
        port: Option<u64>,
    ) -> Result<Filter, String> {
        let now = now_unix_ns();
        if let Some(o) = observer {
            let valid = observers();
            if !valid.contains(&o.as_str()) {
                return Err(format!(
                    "unknown --observer {o:?}; valid: {}",
                    valid.join(", ")
                ));
            }
        }
        if let Some(k) = kind {
            let known = EventKind::ALL
                .iter()
                .any(|e| type_matches(e.type_name(), k));
            if !known {
                let names: Vec<&str> = EventKind::ALL.iter().map(|e| e.type_name()).collect();
                return Err(format!(
                    "unknown --type {k:?}; valid: {} (or the part after the observer, e.g. connection_refused)",
                    names.join(", ")
                ));
            }
        }
        Ok(Filter {
            observer: observer.clone(),
            kind: kind.clone(),
            since: since.as_deref().map(|s| parse_time(s, now)).transpose()?,
            until: until.as_deref().map(|s| parse_time(s, now)).transpose()?,
            pid,
            port,
        })
    }

    /// Hour bounds for the store reader.
    pub fn hours(&self) -> (Option<u64>, Option<u64>) {
        (
            self.since.map(tapio_common::time::hour_of),
            self.until.map(tapio_common::time::hour_of),
        )
    }

    pub fn matches(&self, e: &Value) -> bool {
        if let Some(o) = &self.observer {
            if e["observer"].as_str() != Some(o) {
                return false;
            }
        }
        if let Some(k) = &self.kind {
            if !type_matches(e["type"].as_str().unwrap_or(""), k) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(ts) = e["timestamp"].as_str().and_then(parse_rfc3339) else {
                return false;
            };
            if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts > u) {
                return false;
            }
        }
        if let Some(p) = self.pid {
            if e["facts"]["pid"].as_u64() != Some(p) {
                return false;
            }
        }
        if let Some(p) = self.port {
            let f = &e["facts"];
            if f["dst_port"].as_u64() != Some(p) && f["src_port"].as_u64() != Some(p) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times() {
        let now = 10_000_000_000_000;
        assert_eq!(parse_time("15m", now), Ok(now - 900_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1_000_000_000));
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn unknown_observers_and_types_are_refused_with_the_valid_ones() {
        let none = None;
        let e = Filter::new(&Some("netwrk".into()), &none, &none, &none, None, None).unwrap_err();
        assert!(e.contains("network, storage, process"), "{e}");
        let e = Filter::new(&none, &Some("bogus".into()), &none, &none, None, None).unwrap_err();
        assert!(e.contains("kernel.network.connection_refused"), "{e}");
        assert!(
            Filter::new(
                &Some("storage".into()),
                &Some("slow_io".into()),
                &none,
                &none,
                None,
                None
            )
            .is_ok()
        );
        assert!(
            Filter::new(
                &none,
                &Some("kernel.process.oom_kill".into()),
                &none,
                &none,
                None,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn filters() {
        let e = json!({"type": "kernel.network.connection_refused", "observer": "network",
                       "timestamp": "2026-11-22T06:00:00.000000000Z", "facts": {"dst_port": 9, "pid": 7}});
        let f = |f: Filter| f.matches(&e);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            kind: Some("connection_refused".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            kind: Some("kernel.network.connection_refused".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            kind: Some("refused".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            observer: Some("storage".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            port: Some(9),
            pid: Some(7),
            ..Default::default()
        }));
        assert!(!f(Filter {
            pid: Some(8),
            ..Default::default()
        }));
        let t = parse_rfc3339("2026-11-22T06:00:00Z").unwrap();
        assert!(f(Filter {
            since: Some(t),
            until: Some(t),
            ..Default::default()
        }));
        assert!(!f(Filter {
            since: Some(t + 1),
            ..Default::default()
        }));
    }
}
