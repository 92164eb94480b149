//! The network observer's user-space half: the mirror of
//! `struct tapio_net_event`, its checks, and the `kernel.network.*` facts.

use super::{Context, Rejected};
use crate::abi::{COMM_LEN, EventHeader, F_CGROUP_KNOWN, F_OWNER_KNOWN, ParseError, read_record};
use crate::event::{Comm, Event, EventKind, Json, Owner};
use crate::metrics::Suppress;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tapio_wire::Severity;

/// Its record types (`enum tapio_event_type`).
pub mod types {
    pub const CONN_REFUSED: u16 = 1;
    pub const CONN_TIMEOUT: u16 = 2;
    pub const CONN_RESET: u16 = 3;
    pub const RETRANSMITS: u16 = 4;
    pub const CONN_UNREACHABLE: u16 = 5;
    pub const ALL: &[u16] = &[
        CONN_REFUSED,
        CONN_TIMEOUT,
        CONN_RESET,
        RETRANSMITS,
        CONN_UNREACHABLE,
    ];
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `struct tapio_net_event`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEvent {
    pub hdr: EventHeader,
    pub cgroup_id: u64,
    pub pid: u32,
    pub retransmits: u32,
    pub span_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub flags: u8,
    pub state: u8,
    pub syn_retries: u32,
    pub sk_err: u32,
    pub comm: [u8; COMM_LEN],
}

crate::abi::record!(NetEvent, 104);

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
    /// `connection_timeout`, `connection_unreachable`: SYN retransmissions
    /// before the outcome.
    pub syn_retries: Option<u32>,
    /// `connection_unreachable`: the errno connect() returns.
    pub error: Option<u32>,
    /// TCP state name at the time of the fact (`connection_reset`).
    pub tcp_state: Option<&'static str>,
}

impl NetFacts {
    /// Loopback, ports 40000 -> 9, cgroup 1, nothing else: tests change
    /// what they need with `..NetFacts::sample()`.
    #[cfg(test)]
    pub fn sample() -> NetFacts {
        NetFacts {
            src: Ipv4Addr::LOCALHOST.into(),
            src_port: 40000,
            dst: Ipv4Addr::LOCALHOST.into(),
            dst_port: 9,
            owner: None,
            cgroup_id: Some(1),
            retransmits: None,
            span_ns: None,
            syn_retries: None,
            error: None,
            tcp_state: None,
        }
    }

    pub fn write_json(&self, j: &mut Json<'_>) {
        j.word("family", if self.src.is_ipv4() { "ipv4" } else { "ipv6" });
        j.ip("src_ip", self.src);
        j.num("src_port", self.src_port);
        j.ip("dst_ip", self.dst);
        j.num("dst_port", self.dst_port);
        if let Some(o) = &self.owner {
            j.num("pid", o.pid);
            j.comm("comm", &o.comm);
        }
        j.num_opt("cgroup_id", self.cgroup_id);
        j.num_opt("retransmits", self.retransmits);
        j.num_opt("span_ns", self.span_ns);
        j.num_opt("syn_retries", self.syn_retries);
        if let Some(e) = self.error {
            j.word("error", connect_errno_name(e).unwrap_or("unknown"));
            j.num("error_code", e);
        }
        if let Some(s) = self.tcp_state {
            j.word("tcp_state", s);
        }
    }
}

/// IPv4 from the first four bytes of a 16-byte address field, IPv6 from all.
pub fn ip_from_bytes(family: u16, b: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// The errnos an ICMP error (or a local neighbour failure) leaves on a
/// connecting socket; the program emits `connection_unreachable` for
/// exactly these.
pub fn connect_errno_name(e: u32) -> Option<&'static str> {
    Some(match i32::try_from(e).ok()? {
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EACCES => "EACCES",
        _ => return None,
    })
}

/// A record from the network ring, checked field by field.
pub fn decode(bytes: &[u8]) -> Result<NetEvent, ParseError> {
    let e: NetEvent = read_record(bytes, types::ALL)?;
    if e.family != AF_INET && e.family != AF_INET6 {
        return Err(ParseError::BadField("family"));
    }
    if e.hdr.kind == types::RETRANSMITS && e.retransmits == 0 {
        return Err(ParseError::BadField("retransmits"));
    }
    if e.hdr.kind == types::CONN_UNREACHABLE && connect_errno_name(e.sk_err).is_none() {
        return Err(ParseError::BadField("sk_err"));
    }
    Ok(e)
}

/// The table's entry point: ring bytes to event.
pub fn to_event(bytes: &[u8], seq: u64, ctx: &Context<'_>) -> Result<Event, Rejected> {
    super::to_event(bytes, decode, |e| build(e, seq, ctx))
}

pub fn tcp_state_name(s: u8) -> Option<&'static str> {
    Some(match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => return None,
    })
}

pub fn build(e: &NetEvent, seq: u64, ctx: &Context<'_>) -> Result<Event, Suppress> {
    if !ctx.config.network.enabled {
        return Err(Suppress::ObserverDisabled);
    }
    let (kind, severity) = match e.hdr.kind {
        types::CONN_REFUSED => (EventKind::ConnectionRefused, Severity::Warning),
        types::CONN_TIMEOUT => (EventKind::ConnectionTimeout, Severity::Warning),
        types::CONN_RESET => (EventKind::ConnectionReset, Severity::Warning),
        types::CONN_UNREACHABLE => (EventKind::ConnectionUnreachable, Severity::Warning),
        types::RETRANSMITS => (EventKind::Retransmits, Severity::Info),
        _ => return Err(Suppress::WrongObserver),
    };
    let owner = (e.flags & F_OWNER_KNOWN != 0).then_some(Owner {
        pid: e.pid,
        comm: Comm(e.comm),
    });
    let retrans = kind == EventKind::Retransmits;
    Ok(ctx.event(
        &e.hdr,
        seq,
        kind,
        severity,
        crate::observers::Facts::Network(NetFacts {
            src: ip_from_bytes(e.family, &e.saddr),
            src_port: e.sport,
            dst: ip_from_bytes(e.family, &e.daddr),
            dst_port: e.dport,
            owner,
            cgroup_id: (e.flags & F_CGROUP_KNOWN != 0).then_some(e.cgroup_id),
            retransmits: retrans.then_some(e.retransmits),
            span_ns: retrans.then_some(e.span_ns),
            syn_retries: matches!(
                kind,
                EventKind::ConnectionTimeout | EventKind::ConnectionUnreachable
            )
            .then_some(e.syn_retries),
            error: (kind == EventKind::ConnectionUnreachable).then_some(e.sk_err),
            tcp_state: if kind == EventKind::ConnectionReset {
                tcp_state_name(e.state)
            } else {
                None
            },
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::record_bytes;
    use crate::observers::Facts;
    use tapio_wire::CompiledConfig;

    impl NetEvent {
        pub fn zeroed() -> Self {
            NetEvent {
                hdr: EventHeader::default(),
                cgroup_id: 0,
                pid: 0,
                retransmits: 0,
                span_ns: 0,
                saddr: [0; 16],
                daddr: [0; 16],
                sport: 0,
                dport: 0,
                family: AF_INET,
                flags: 0,
                state: 0,
                syn_retries: 0,
                sk_err: 0,
                comm: [0; COMM_LEN],
            }
        }
    }

    fn net(kind: u16) -> NetEvent {
        let mut e = NetEvent::zeroed();
        e.hdr = EventHeader::for_record::<NetEvent>(kind, 3, 42);
        e.dport = 8080;
        e
    }

    #[test]
    fn decodes_a_valid_record() {
        let e = net(types::CONN_REFUSED);
        assert_eq!(decode(&record_bytes(&e)), Ok(e));
    }

    #[test]
    fn rejects_short_and_other_observers_types() {
        let b = record_bytes(&net(types::CONN_REFUSED));
        assert_eq!(decode(&b[..10]), Err(ParseError::Short { len: 10 }));
        let mut other = b.clone();
        other[0..2].copy_from_slice(&16u16.to_ne_bytes());
        assert_eq!(decode(&other), Err(ParseError::UnknownType(16)));
    }

    #[test]
    fn rejects_out_of_domain_fields() {
        let mut e = net(types::CONN_REFUSED);
        e.family = 7;
        assert_eq!(
            decode(&record_bytes(&e)),
            Err(ParseError::BadField("family"))
        );
        let e = net(types::RETRANSMITS);
        assert_eq!(
            decode(&record_bytes(&e)),
            Err(ParseError::BadField("retransmits"))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator: every length 0..300, many seeds.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300usize {
            for _ in 0..50 {
                let mut buf = vec![0u8; len];
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                // sometimes make the header consistent so deeper checks run
                if len >= 4 && x % 3 == 0 {
                    buf[2..4].copy_from_slice(&(len as u16).to_ne_bytes());
                    let kinds = [1u16, 2, 3, 4, 16, 17, 32, 33, 34, 48];
                    buf[0..2].copy_from_slice(&kinds[(x % 10) as usize].to_ne_bytes());
                }
                let _ = decode(&buf);
            }
        }
    }

    fn rec(kind: u16) -> NetEvent {
        let mut e = NetEvent::zeroed();
        e.hdr = EventHeader::for_record::<NetEvent>(kind, 4, 1_000);
        e.family = AF_INET;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        e.sport = 40000;
        e.dport = 9;
        e
    }

    fn ctx(cfg: &CompiledConfig) -> Context<'_> {
        Context {
            boot_to_wall_ns: 1_700_000_000_000_000_000,
            config: cfg,
            page_kb: 4,
        }
    }

    #[test]
    fn refused_with_owner() {
        let cfg = CompiledConfig::standalone_default();
        let mut r = rec(types::CONN_REFUSED);
        r.flags = F_OWNER_KNOWN | F_CGROUP_KNOWN;
        r.pid = 4242;
        r.cgroup_id = 77;
        r.comm[..4].copy_from_slice(b"curl");
        let ev = build(&r, 9, &ctx(&cfg)).unwrap();
        assert_eq!(ev.kind, EventKind::ConnectionRefused);
        assert_eq!(ev.timestamp_ns, 1_700_000_000_000_001_000);
        assert_eq!(ev.config_generation, 4);
        let Facts::Network(n) = ev.facts else {
            panic!()
        };
        assert_eq!(n.dst.to_string(), "10.1.2.3");
        assert_eq!(n.dst_port, 9);
        assert_eq!(n.owner.unwrap().pid, 4242);
        assert_eq!(n.owner.unwrap().comm.as_str(), "curl");
        assert_eq!(n.cgroup_id, Some(77));
        assert_eq!(n.retransmits, None);
    }

    #[test]
    fn unknown_owner_has_no_pid() {
        let cfg = CompiledConfig::standalone_default();
        let mut r = rec(types::CONN_RESET);
        r.pid = 1; // garbage without the flag must not leak
        r.state = 1;
        let ev = build(&r, 1, &ctx(&cfg)).unwrap();
        let Facts::Network(n) = ev.facts else {
            panic!()
        };
        assert_eq!(n.owner, None);
        assert_eq!(n.cgroup_id, None);
        assert_eq!(n.tcp_state, Some("ESTABLISHED"));
    }

    #[test]
    fn retransmits_and_ipv6() {
        let cfg = CompiledConfig::standalone_default();
        let mut r = rec(types::RETRANSMITS);
        r.family = AF_INET6;
        r.saddr = [0; 16];
        r.saddr[15] = 1;
        r.retransmits = 3;
        r.span_ns = 500;
        let ev = build(&r, 1, &ctx(&cfg)).unwrap();
        let Facts::Network(n) = ev.facts else {
            panic!()
        };
        assert_eq!(n.src.to_string(), "::1");
        assert_eq!(n.retransmits, Some(3));
        assert_eq!(n.span_ns, Some(500));
        assert_eq!(ev.severity, Severity::Info);
    }

    #[test]
    fn disabled_observer_suppresses() {
        let mut cfg = CompiledConfig::standalone_default();
        cfg.network.enabled = false;
        assert_eq!(
            build(&rec(1), 1, &ctx(&cfg)),
            Err(Suppress::ObserverDisabled)
        );
    }

    #[test]
    fn ipv6_addresses() {
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(ip_from_bytes(AF_INET6, &b).to_string(), "::1");
        let b4 = [10, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        assert_eq!(ip_from_bytes(AF_INET, &b4).to_string(), "10.0.0.1");
    }

    #[test]
    fn mirror_matches_the_skeleton_type() {
        crate::abi::assert_same_layout!(
            tapio_bpf::network::types::tapio_net_event,
            NetEvent,
            hdr,
            cgroup_id,
            pid,
            retransmits,
            span_ns,
            saddr,
            daddr,
            sport,
            dport,
            family,
            flags,
            state,
            syn_retries,
            sk_err,
            comm
        );
    }

    #[test]
    fn unreachable_names_the_errno_and_only_known_ones_decode() {
        let cfg = CompiledConfig::standalone_default();
        let mut r = rec(types::CONN_UNREACHABLE);
        r.sk_err = libc::EHOSTUNREACH as u32;
        r.syn_retries = 1;
        assert_eq!(decode(&record_bytes(&r)), Ok(r));
        let ev = build(&r, 1, &ctx(&cfg)).unwrap();
        assert_eq!(
            (ev.kind, ev.severity),
            (EventKind::ConnectionUnreachable, Severity::Warning)
        );
        let mut line = String::new();
        ev.write_json("i", &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["facts"]["error"], "EHOSTUNREACH");
        assert_eq!(v["facts"]["error_code"], 113);
        assert_eq!(v["facts"]["syn_retries"], 1);
        r.sk_err = libc::ETIMEDOUT as u32;
        assert_eq!(
            decode(&record_bytes(&r)),
            Err(ParseError::BadField("sk_err"))
        );
    }
}
