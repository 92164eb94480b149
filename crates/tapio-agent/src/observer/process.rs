//! The process observer's user-space half: the mirror of
//! `struct tapio_process_event`, its checks, and the `kernel.process.*`
//! facts.

use super::{Context, Rejected};
use crate::abi::{COMM_LEN, EventHeader, F_MM_KNOWN, FILENAME_LEN, ParseError, read_record};
use crate::event::{Comm, Event, EventKind, Json};
use crate::metrics::Suppress;
use tapio_wire::Severity;

/// Its record types (`enum tapio_event_type`).
pub mod types {
    pub const ABNORMAL_EXIT: u16 = 32;
    pub const OOM_KILL: u16 = 33;
    pub const EXEC: u16 = 34;
    pub const ALL: &[u16] = &[ABNORMAL_EXIT, OOM_KILL, EXEC];
}

/// `struct tapio_process_event`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEvent {
    pub hdr: EventHeader,
    pub cgroup_id: u64,
    pub memcg_id: u64,
    pub total_vm_pages: u64,
    pub rss_pages: u64,
    pub pid: u32,
    pub ppid: u32,
    pub exit_code: i32,
    pub signal: u32,
    pub oom_score_adj: i16,
    pub flags: u8,
    pub _pad: [u8; 5],
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; FILENAME_LEN],
}

crate::abi::record!(ProcessEvent, 216);

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
    pub filename: Option<Box<[u8; FILENAME_LEN]>>,
}

impl ProcessFacts {
    /// pid 1 in cgroup 5, nothing optional set: tests change what they
    /// need with `..ProcessFacts::sample()`.
    #[cfg(test)]
    pub fn sample() -> ProcessFacts {
        ProcessFacts {
            pid: 1,
            comm: Comm(*b"\x01ctl\0\0\0\0\0\0\0\0\0\0\0\0"),
            cgroup_id: 5,
            exit_code: None,
            signal: None,
            ppid: None,
            memcg_id: None,
            total_vm_kb: None,
            rss_kb: None,
            oom_score_adj: None,
            filename: None,
        }
    }

    pub fn write_json(&self, j: &mut Json<'_>) {
        j.num("pid", self.pid);
        j.comm("comm", &self.comm);
        j.num("cgroup_id", self.cgroup_id);
        j.num_opt("ppid", self.ppid);
        j.int_opt("exit_code", self.exit_code);
        j.num_opt("signal", self.signal);
        j.num_opt("memcg_id", self.memcg_id);
        j.num_opt("total_vm_kb", self.total_vm_kb);
        j.num_opt("rss_kb", self.rss_kb);
        j.int_opt("oom_score_adj", self.oom_score_adj);
        if let Some(f) = &self.filename {
            j.str("filename", &crate::abi::c_str(&f[..]));
        }
    }
}

/// A record from the process ring, checked field by field.
pub fn decode(bytes: &[u8]) -> Result<ProcessEvent, ParseError> {
    let e: ProcessEvent = read_record(bytes, types::ALL)?;
    if e.pid == 0 {
        return Err(ParseError::BadField("pid"));
    }
    Ok(e)
}

/// The table's entry point: ring bytes to event.
pub fn to_event(bytes: &[u8], seq: u64, ctx: &Context<'_>) -> Result<Event, Rejected> {
    super::to_event(bytes, decode, |e| build(e, seq, ctx))
}

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
        types::ABNORMAL_EXIT => {
            f.exit_code = Some(e.exit_code);
            f.signal = Some(e.signal);
            (EventKind::AbnormalExit, Severity::Warning)
        }
        types::OOM_KILL => {
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
        types::EXEC => {
            if !cfg.exec_enabled {
                return Err(Suppress::ObserverDisabled);
            }
            f.ppid = Some(e.ppid);
            f.filename = Some(Box::new(e.filename));
            (EventKind::Exec, Severity::Info)
        }
        _ => return Err(Suppress::WrongObserver),
    };
    Ok(ctx.event(
        &e.hdr,
        seq,
        kind,
        severity,
        crate::observers::Facts::Process(f),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::record_bytes;
    use crate::observers::Facts;
    use tapio_wire::CompiledConfig;

    fn rec(kind: u16) -> ProcessEvent {
        ProcessEvent {
            hdr: EventHeader {
                kind,
                size: size_of::<ProcessEvent>() as u16,
                config_generation: 2,
                timestamp_ns: 10,
            },
            cgroup_id: 11,
            memcg_id: 12,
            total_vm_pages: 100,
            rss_pages: 50,
            pid: 4242,
            ppid: 1,
            exit_code: 0x0100,
            signal: 9,
            oom_score_adj: -17,
            flags: 0,
            _pad: [0; 5],
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            filename: [0; FILENAME_LEN],
        }
    }

    fn ctx(cfg: &CompiledConfig) -> Context<'_> {
        Context {
            boot_to_wall_ns: 1_000,
            config: cfg,
            page_kb: 4,
        }
    }

    #[test]
    fn decode_rejects_pid_zero_and_other_types() {
        let mut e = rec(types::ABNORMAL_EXIT);
        assert_eq!(decode(&record_bytes(&e)), Ok(e));
        e.pid = 0;
        assert_eq!(decode(&record_bytes(&e)), Err(ParseError::BadField("pid")));
        let e = rec(16);
        assert_eq!(decode(&record_bytes(&e)), Err(ParseError::UnknownType(16)));
    }

    #[test]
    fn abnormal_exit_carries_code_and_signal_only() {
        let cfg = CompiledConfig::standalone_default();
        let ev = build(&rec(types::ABNORMAL_EXIT), 3, &ctx(&cfg)).unwrap();
        assert_eq!(
            (ev.kind, ev.severity),
            (EventKind::AbnormalExit, Severity::Warning)
        );
        assert_eq!((ev.timestamp_ns, ev.config_generation), (1_010, 2));
        let Facts::Process(f) = ev.facts else {
            panic!()
        };
        assert_eq!((f.pid, f.cgroup_id), (4242, 11));
        assert_eq!(f.comm.as_str(), "worker");
        assert_eq!((f.exit_code, f.signal), (Some(0x0100), Some(9)));
        assert_eq!(
            (f.ppid, f.memcg_id, f.rss_kb, f.filename),
            (None, None, None, None)
        );
    }

    #[test]
    fn oom_kill_memory_in_kib_only_when_the_mm_was_known() {
        let cfg = CompiledConfig::standalone_default();
        let mut e = rec(types::OOM_KILL);
        let Facts::Process(f) = build(&e, 1, &ctx(&cfg)).unwrap().facts else {
            panic!()
        };
        assert_eq!((f.memcg_id, f.oom_score_adj), (Some(12), Some(-17)));
        assert_eq!(
            (f.total_vm_kb, f.rss_kb),
            (None, None),
            "no mm, no memory facts"
        );
        e.flags = F_MM_KNOWN;
        let ev = build(&e, 1, &ctx(&cfg)).unwrap();
        assert_eq!(ev.severity, Severity::Critical);
        let Facts::Process(f) = ev.facts else {
            panic!()
        };
        assert_eq!((f.total_vm_kb, f.rss_kb), (Some(400), Some(200)));
        assert_eq!((f.exit_code, f.signal), (None, None));
    }

    #[test]
    fn exec_only_when_enabled_and_with_the_filename() {
        let mut cfg = CompiledConfig::standalone_default();
        let mut e = rec(types::EXEC);
        e.filename[..9].copy_from_slice(b"/bin/true");
        cfg.process.exec_enabled = false;
        assert_eq!(build(&e, 1, &ctx(&cfg)), Err(Suppress::ObserverDisabled));
        cfg.process.exec_enabled = true;
        let ev = build(&e, 1, &ctx(&cfg)).unwrap();
        assert_eq!((ev.kind, ev.severity), (EventKind::Exec, Severity::Info));
        let Facts::Process(f) = ev.facts else {
            panic!()
        };
        assert_eq!(f.ppid, Some(1));
        assert_eq!(crate::abi::c_str(&f.filename.unwrap()[..]), "/bin/true");
        cfg.process.enabled = false;
        assert_eq!(
            build(&rec(types::ABNORMAL_EXIT), 1, &ctx(&cfg)),
            Err(Suppress::ObserverDisabled)
        );
    }

    #[test]
    fn mirror_matches_the_skeleton_type() {
        crate::abi::assert_same_layout!(
            tapio_bpf::process::types::tapio_process_event,
            ProcessEvent,
            hdr,
            cgroup_id,
            memcg_id,
            total_vm_pages,
            rss_pages,
            pid,
            ppid,
            exit_code,
            signal,
            oom_score_adj,
            flags,
            comm,
            filename
        );
    }
}
