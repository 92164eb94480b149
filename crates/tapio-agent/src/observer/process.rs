//! `kernel.process.*` from `struct tapio_process_event`.

use super::Context;
use crate::abi::{F_MM_KNOWN, ProcessEvent, event_type};
use crate::event::{Comm, Event, EventKind, Facts, ProcessFacts};
use crate::metrics::Suppress;
use tapio_wire::Severity;

pub fn build(e: &ProcessEvent, seq: u64, ctx: &Context<'_>) -> Result<Event, Suppress> {
    let cfg = &ctx.config.process;
    if !cfg.enabled {
        return Err(Suppress::ObserverDisabled);
    }
    let mut f = ProcessFacts {
        pid: e.pid,
        comm: Comm(e.comm),
        cgroup_id: e.cgroup_id,
        exit_code: None,
        signal: None,
        ppid: None,
        memcg_id: None,
        total_vm_kb: None,
        rss_kb: None,
        oom_score_adj: None,
        filename: None,
    };
    let (kind, severity) = match e.hdr.kind {
        event_type::PROC_ABNORMAL_EXIT => {
            f.exit_code = Some(e.exit_code);
            f.signal = Some(e.signal);
            (EventKind::AbnormalExit, Severity::Warning)
        }
        event_type::PROC_OOM_KILL => {
            f.memcg_id = Some(e.memcg_id);
            // Known only when the kernel handed over the victim's task
            // while its mm was still there.
            if e.flags & F_MM_KNOWN != 0 {
                f.total_vm_kb = Some(e.total_vm_pages.saturating_mul(ctx.page_kb));
                f.rss_kb = Some(e.rss_pages.saturating_mul(ctx.page_kb));
            }
            f.oom_score_adj = Some(e.oom_score_adj);
            (EventKind::OomKill, Severity::Critical)
        }
        event_type::PROC_EXEC => {
            if !cfg.exec_enabled {
                return Err(Suppress::ObserverDisabled);
            }
            f.ppid = Some(e.ppid);
            f.filename = Some(Box::new(e.filename));
            (EventKind::Exec, Severity::Info)
        }
        _ => return Err(Suppress::WrongObserver),
    };
    Ok(Event {
        seq,
        kind,
        severity,
        timestamp_ns: ctx.wall_ns(e.hdr.timestamp_ns),
        config_generation: e.hdr.config_generation,
        workload: None,
        memcg: None,
        facts: Facts::Process(f),
    })
}
