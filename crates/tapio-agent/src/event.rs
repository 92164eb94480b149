//! The event model and its JSON line.
//!
//! An [`Event`] is small (and allocates only for exec's filename): the agent's poller builds it from a
//! record without allocating, and the sender thread serializes it. The JSON
//! is written by hand (no serde on the hot path); its shape is exactly the
//! wire's `WireEvent`, which a test holds together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tapio_common::time::format_rfc3339_ns;
pub use tapio_wire::EventKind;
use tapio_wire::Severity;

/// A task name as the kernel stores it: up to 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        crate::abi::c_str(&self.0)
    }
}

/// The owner of a fact, where it is known truthfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFacts {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub owner: Option<Owner>,
    pub cgroup_id: Option<u64>,
    /// `retransmits` events: the count in this event's span.
    pub retransmits: Option<u32>,
    /// `retransmits` events: first to last retransmit of the span.
    pub span_ns: Option<u64>,
    /// `connection_timeout`: SYN retransmissions before giving up.
    pub syn_retries: Option<u32>,
    /// TCP state name at the time of the fact (`connection_reset`).
    pub tcp_state: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFacts {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub sector: u64,
    pub bytes: u32,
    pub op: &'static str,
    pub latency_ns: u64,
    /// `io_error`: the kernel's blk_status name (or number).
    pub error: Option<&'static str>,
    pub error_code: Option<u8>,
    pub owner: Option<Owner>,
    pub cgroup_id: Option<u64>,
}

/// The process facts; which are present depends on the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub pid: u32,
    pub comm: Comm,
    pub cgroup_id: u64,
    pub exit_code: Option<i32>,
    pub signal: Option<u32>,
    pub ppid: Option<u32>,
    pub memcg_id: Option<u64>,
    pub total_vm_kb: Option<u64>,
    pub rss_kb: Option<u64>,
    pub oom_score_adj: Option<i16>,
    /// Boxed: exec only, and it would triple the size of every queued event.
    pub filename: Option<Box<[u8; 128]>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    Network(NetFacts),
    Storage(StorageFacts),
    Process(ProcessFacts),
}

/// Who a cgroup belongs to, read from its path (no API server): the facts
/// a kubelet-created or systemd-created path names truthfully. Shared
/// (`Arc`) by every event of the same cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    /// The cgroup's path relative to the cgroup v2 mount (`/kubepods.slice/...`).
    pub cgroup_path: Box<str>,
    /// Kubernetes pod UID, with dashes as the API shows it.
    pub pod_uid: Option<Box<str>>,
    /// Container id: 64 lowercase hex digits.
    pub container_id: Option<Box<str>>,
    /// `guaranteed`, `burstable` or `besteffort`.
    pub qos_class: Option<&'static str>,
    /// The systemd service outside Kubernetes (`nginx.service`).
    pub systemd_unit: Option<Box<str>>,
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sequence number within the agent instance; with the instance id it
    /// forms the event id.
    pub seq: u64,
    pub kind: EventKind,
    pub severity: Severity,
    /// Wall-clock ns since the epoch, converted from the kernel timestamp.
    pub timestamp_ns: u64,
    pub config_generation: u32,
    pub facts: Facts,
    /// The owner's workload, from its cgroup (network and process events),
    /// when it could be resolved.
    pub workload: Option<std::sync::Arc<Workload>>,
    /// oom_kill on a host whose memory controller is on cgroup v1: the
    /// victim's memory cgroup, resolved in that hierarchy.
    pub memcg: Option<std::sync::Arc<Workload>>,
}

/// Writes JSON without an allocation per value.
struct Json<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Json<'a> {
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape_into(v, self.out);
    }

    fn num<T: std::fmt::Display>(&mut self, k: &str, v: T) {
        use std::fmt::Write;
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    fn ip(&mut self, k: &str, v: IpAddr) {
        use std::fmt::Write;
        self.key(k);
        let _ = write!(self.out, "\"{v}\"");
    }
}

/// A JSON string literal of `s`, escaped.
pub fn escape_into(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Event {
    /// The event id: `<instance>-<seq>`, unique per agent instance and the
    /// same on every resend.
    pub fn write_id(&self, instance: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{instance}-{}", self.seq);
    }

    /// Appends the event's JSON object (no newline) to `out`.
    pub fn write_json(&self, instance: &str, out: &mut String) {
        out.push_str("{\"id\":\"");
        self.write_id(instance, out);
        out.push_str("\",\"type\":\"");
        out.push_str(self.kind.type_name());
        out.push_str("\",\"observer\":\"");
        out.push_str(self.kind.observer().as_str());
        out.push_str("\",\"severity\":\"");
        out.push_str(self.severity.as_str());
        out.push_str("\",\"timestamp\":\"");
        // RFC 3339 is ASCII; no escaping needed.
        let mut ts = String::with_capacity(32);
        format_rfc3339_ns(self.timestamp_ns, &mut ts);
        out.push_str(&ts);
        out.push_str("\",\"config_generation\":");
        {
            use std::fmt::Write;
            let _ = write!(out, "{}", self.config_generation);
        }
        out.push_str(",\"facts\":{");
        let mut j = Json { out, first: true };
        match &self.facts {
            Facts::Network(n) => {
                j.str("family", if n.src.is_ipv4() { "ipv4" } else { "ipv6" });
                j.ip("src_ip", n.src);
                j.num("src_port", n.src_port);
                j.ip("dst_ip", n.dst);
                j.num("dst_port", n.dst_port);
                if let Some(o) = &n.owner {
                    j.num("pid", o.pid);
                    j.str("comm", &o.comm.as_str());
                }
                if let Some(c) = n.cgroup_id {
                    j.num("cgroup_id", c);
                }
                if let Some(r) = n.retransmits {
                    j.num("retransmits", r);
                }
                if let Some(s) = n.span_ns {
                    j.num("span_ns", s);
                }
                if let Some(s) = n.syn_retries {
                    j.num("syn_retries", s);
                }
                if let Some(s) = n.tcp_state {
                    j.str("tcp_state", s);
                }
            }
            Facts::Storage(s) => {
                j.num("dev_major", s.dev_major);
                j.num("dev_minor", s.dev_minor);
                j.num("sector", s.sector);
                j.num("bytes", s.bytes);
                j.str("op", s.op);
                j.num("latency_ns", s.latency_ns);
                if let Some(e) = s.error {
                    j.str("error", e);
                }
                if let Some(e) = s.error_code {
                    j.num("error_code", e);
                }
                if let Some(o) = &s.owner {
                    j.num("pid", o.pid);
                    j.str("comm", &o.comm.as_str());
                }
                if let Some(c) = s.cgroup_id {
                    j.num("cgroup_id", c);
                }
            }
            Facts::Process(p) => {
                j.num("pid", p.pid);
                j.str("comm", &p.comm.as_str());
                j.num("cgroup_id", p.cgroup_id);
                if let Some(v) = p.ppid {
                    j.num("ppid", v);
                }
                if let Some(v) = p.exit_code {
                    j.num("exit_code", v);
                }
                if let Some(v) = p.signal {
                    j.num("signal", v);
                }
                if let Some(v) = p.memcg_id {
                    j.num("memcg_id", v);
                }
                if let Some(v) = p.total_vm_kb {
                    j.num("total_vm_kb", v);
                }
                if let Some(v) = p.rss_kb {
                    j.num("rss_kb", v);
                }
                if let Some(v) = p.oom_score_adj {
                    j.num("oom_score_adj", v);
                }
                if let Some(f) = &p.filename {
                    j.str("filename", &crate::abi::c_str(&f[..]));
                }
            }
        }
        if let Some(w) = &self.workload {
            j.str("cgroup_path", &w.cgroup_path);
            if let Some(v) = &w.pod_uid {
                j.str("pod_uid", v);
            }
            if let Some(v) = &w.container_id {
                j.str("container_id", v);
            }
            if let Some(v) = w.qos_class {
                j.str("qos_class", v);
            }
            if let Some(v) = &w.systemd_unit {
                j.str("systemd_unit", v);
            }
        }
        if let Some(m) = &self.memcg {
            j.str("memcg_path", &m.cgroup_path);
        }
        out.push_str("}}");
    }
}

/// IPv4 from the first four bytes of a 16-byte address field, IPv6 from all.
pub fn ip_from_bytes(family: u16, b: &[u8; 16]) -> IpAddr {
    if family == crate::abi::AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_wire::{Observer, WireEvent};

    fn comm(s: &str) -> Comm {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        Comm(c)
    }

    fn refused() -> Event {
        Event {
            seq: 7,
            kind: EventKind::ConnectionRefused,
            severity: Severity::Warning,
            timestamp_ns: 1_795_328_784_500_000_000,
            config_generation: 2,
            workload: None,
            memcg: None,
            facts: Facts::Network(NetFacts {
                src: "127.0.0.1".parse().unwrap(),
                src_port: 40000,
                dst: "127.0.0.1".parse().unwrap(),
                dst_port: 9,
                owner: Some(Owner {
                    pid: 42,
                    comm: comm("cu\"rl\n"),
                }),
                cgroup_id: Some(1),
                retransmits: None,
                span_ns: None,
                syn_retries: None,
                tcp_state: None,
            }),
        }
    }

    #[test]
    fn json_line_is_exact() {
        let mut s = String::new();
        refused().write_json("abc", &mut s);
        assert_eq!(
            s,
            r#"{"id":"abc-7","type":"kernel.network.connection_refused","observer":"network","severity":"warning","timestamp":"2026-11-22T06:26:24.500000000Z","config_generation":2,"facts":{"family":"ipv4","src_ip":"127.0.0.1","src_port":40000,"dst_ip":"127.0.0.1","dst_port":9,"pid":42,"comm":"cu\"rl\n","cgroup_id":1}}"#
        );
    }

    #[test]
    fn json_decodes_as_a_valid_wire_event() {
        let mut s = String::new();
        refused().write_json("abc", &mut s);
        let w: WireEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(w.id, "abc-7");
        assert_eq!(w.kind, "kernel.network.connection_refused");
        assert_eq!(w.facts["comm"], "cu\"rl\n");
        assert!(tapio_wire::looks_like_rfc3339_utc(&w.timestamp));
        assert_eq!(
            tapio_wire::find_reasoning_key(&serde_json::to_value(&w).unwrap()),
            None
        );
    }

    #[test]
    fn owner_unknown_leaves_the_keys_out() {
        let mut e = refused();
        if let Facts::Network(n) = &mut e.facts {
            n.owner = None;
            n.cgroup_id = None;
        }
        let mut s = String::new();
        e.write_json("x", &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let facts = v["facts"].as_object().unwrap();
        assert!(
            !facts.contains_key("pid")
                && !facts.contains_key("comm")
                && !facts.contains_key("cgroup_id")
        );
    }

    #[test]
    fn every_kind_serializes_to_parseable_json() {
        for kind in EventKind::ALL {
            let facts = match kind.observer() {
                Observer::Network | Observer::Unknown => refused().facts,
                Observer::Storage => Facts::Storage(StorageFacts {
                    dev_major: 7,
                    dev_minor: 0,
                    sector: 8,
                    bytes: 4096,
                    op: "write",
                    latency_ns: 5,
                    error: Some("BLK_STS_IOERR"),
                    error_code: Some(10),
                    owner: None,
                    cgroup_id: None,
                }),
                Observer::Process => Facts::Process(ProcessFacts {
                    pid: 1,
                    comm: comm("\u{1}ctl"),
                    cgroup_id: 5,
                    exit_code: Some(3),
                    signal: Some(0),
                    ppid: Some(1),
                    memcg_id: None,
                    total_vm_kb: None,
                    rss_kb: None,
                    oom_score_adj: Some(-1000),
                    filename: Some(Box::new([b'/'; 128])),
                }),
            };
            let e = Event {
                kind,
                facts,
                ..refused()
            };
            let mut s = String::new();
            e.write_json("i", &mut s);
            let w: WireEvent =
                serde_json::from_str(&s).unwrap_or_else(|err| panic!("{kind:?}: {err}: {s}"));
            assert_eq!(w.kind, kind.type_name());
            assert_eq!(w.observer, kind.observer());
            assert_eq!(EventKind::from_type_name(&w.kind), Some(kind));
        }
    }

    #[test]
    fn ipv6_addresses() {
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(ip_from_bytes(crate::abi::AF_INET6, &b).to_string(), "::1");
        let b4 = [10, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        assert_eq!(
            ip_from_bytes(crate::abi::AF_INET, &b4).to_string(),
            "10.0.0.1"
        );
    }
}
