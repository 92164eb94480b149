//! `kernel.network.*` from `struct tapio_net_event`.

use super::Context;
use crate::abi::{F_CGROUP_KNOWN, F_OWNER_KNOWN, NetEvent, event_type};
use crate::event::{Comm, Event, EventKind, Facts, NetFacts, Owner, ip_from_bytes};
use crate::metrics::Suppress;
use tapio_wire::Severity;

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
        event_type::NET_CONN_REFUSED => (EventKind::ConnectionRefused, Severity::Warning),
        event_type::NET_CONN_TIMEOUT => (EventKind::ConnectionTimeout, Severity::Warning),
        event_type::NET_CONN_RESET => (EventKind::ConnectionReset, Severity::Warning),
        event_type::NET_RETRANSMITS => (EventKind::Retransmits, Severity::Info),
        _ => return Err(Suppress::WrongObserver),
    };
    let owner = (e.flags & F_OWNER_KNOWN != 0).then_some(Owner {
        pid: e.pid,
        comm: Comm(e.comm),
    });
    let retrans = kind == EventKind::Retransmits;
    Ok(Event {
        seq,
        kind,
        severity,
        timestamp_ns: ctx.wall_ns(e.hdr.timestamp_ns),
        config_generation: e.hdr.config_generation,
        workload: None,
        memcg: None,
        facts: Facts::Network(NetFacts {
            src: ip_from_bytes(e.family, &e.saddr),
            src_port: e.sport,
            dst: ip_from_bytes(e.family, &e.daddr),
            dst_port: e.dport,
            owner,
            cgroup_id: (e.flags & F_CGROUP_KNOWN != 0).then_some(e.cgroup_id),
            retransmits: retrans.then_some(e.retransmits),
            span_ns: retrans.then_some(e.span_ns),
            syn_retries: (kind == EventKind::ConnectionTimeout).then_some(e.syn_retries),
            tcp_state: if kind == EventKind::ConnectionReset {
                tcp_state_name(e.state)
            } else {
                None
            },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{AF_INET, AF_INET6, EventHeader};
    use tapio_wire::CompiledConfig;

    fn rec(kind: u16) -> NetEvent {
        let mut e = NetEvent::zeroed();
        e.hdr = EventHeader {
            kind,
            size: 104,
            config_generation: 4,
            timestamp_ns: 1_000,
        };
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
        let mut r = rec(event_type::NET_CONN_REFUSED);
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
        let mut r = rec(event_type::NET_CONN_RESET);
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
        let mut r = rec(event_type::NET_RETRANSMITS);
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
}
