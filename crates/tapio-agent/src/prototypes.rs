//! The running kernel's tracepoint prototypes, read from its BTF, the BPF
//! instructions its verifier accepts, and the program variants they select.
//!
//! A few tracepoints changed their arguments across the kernels Tapio
//! supports. Each observer object carries one program per prototype, and
//! the loader turns autoload off for the ones this kernel cannot run. The
//! choice comes from the kernel's own BTF (`btf_trace_<name>` is a pointer
//! to the probe's function prototype), never from the release string.
//!
//! The network programs also come in two kinds: with the lock-free owner
//! slots, which need BPF atomics (compare-and-swap, 5.12+), and without.
//! Whether the verifier has them is asked of the verifier itself, with a
//! six-instruction program, as `bpftool feature probe` does.

use libbpf_rs::btf::types::{FuncProto, Int, IntEncoding, Ptr, Typedef};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, ReferencesType};

/// What this kernel's tracepoints look like, where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prototypes {
    /// `sched_process_exit(task, bool group_dead)` (newer kernels): the
    /// kernel says which thread ended the group.
    pub exit_has_group_dead: bool,
    /// `mark_victim(task, uid)`; older kernels pass only the pid.
    pub mark_victim_has_task: bool,
    /// `block_rq_complete(rq, int error, ...)` with a negative errno
    /// (older kernels) rather than a `blk_status_t`.
    pub complete_error_is_errno: bool,
    /// The verifier accepts BPF atomics beyond add (compare-and-swap):
    /// the network observer keeps socket owners in lock-free slots.
    pub bpf_atomics: bool,
}

impl Default for Prototypes {
    /// What the loader assumes when BTF is unreadable: the claim-based
    /// exit (right with or without `group_dead`), and the task-carrying
    /// `mark_victim` and `blk_status_t` completion of current kernels (a
    /// kernel that differs then fails to load, with its own reason).
    fn default() -> Self {
        Prototypes {
            exit_has_group_dead: false,
            mark_victim_has_task: true,
            complete_error_is_errno: false,
            bpf_atomics: false,
        }
    }
}

/// Whether the verifier accepts a 64-bit compare-and-swap on the stack
/// (BPF atomics, 5.12+): it loads a six-instruction socket filter, and
/// closes it again. Any refusal, for whatever reason, says no; the
/// programs without atomics run everywhere.
pub fn probe_bpf_atomics() -> bool {
    use libbpf_sys as sys;
    fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> sys::bpf_insn {
        sys::bpf_insn {
            code: code as u8,
            _bitfield_align_1: [],
            _bitfield_1: sys::bpf_insn::new_bitfield_1(dst, src),
            off,
            imm,
        }
    }
    let insns = [
        // *(u64 *)(r10 - 8) = 0
        insn(sys::BPF_ST | sys::BPF_MEM | sys::BPF_DW, 10, 0, -8, 0),
        // r0 = 0; r1 = 1
        insn(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K, 0, 0, 0, 0),
        insn(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K, 1, 0, 0, 1),
        // r0 = cmpxchg_64(r10 - 8, r0, r1)
        insn(
            sys::BPF_STX | sys::BPF_ATOMIC | sys::BPF_DW,
            10,
            1,
            -8,
            (sys::BPF_CMPXCHG) as i32,
        ),
        // r0 = 0; exit
        insn(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K, 0, 0, 0, 0),
        insn(sys::BPF_JMP | sys::BPF_EXIT, 0, 0, 0, 0),
    ];
    // SAFETY: `insns` and the license string outlive the call, which only
    // reads them; the fd it returns is ours and closed right away.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_SOCKET_FILTER,
            std::ptr::null(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd was just returned to us and is not used elsewhere.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    true
}

/// The argument kinds of a tracepoint, after the probe's `void *` context:
/// `None` when the kernel has no such tracepoint in its BTF.
fn args(btf: &Btf<'_>, tracepoint: &str) -> Option<Vec<Arg>> {
    let td = btf.type_by_name::<Typedef<'_>>(&format!("btf_trace_{tracepoint}"))?;
    let ptr = Ptr::try_from(td.referenced_type().skip_mods_and_typedefs()).ok()?;
    let proto = FuncProto::try_from(ptr.referenced_type().skip_mods_and_typedefs()).ok()?;
    Some(
        proto
            .iter()
            .skip(1)
            .map(|p| {
                btf.type_by_id::<BtfType<'_>>(p.ty)
                    .map_or(Arg::Other, |t| Arg::of(t))
            })
            .collect(),
    )
}

/// What one argument is, as far as variant selection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    Pointer,
    /// An integer of this many bytes, signed or not.
    Int {
        bytes: usize,
        signed: bool,
    },
    Other,
}

impl Arg {
    fn of(t: BtfType<'_>) -> Arg {
        let t = t.skip_mods_and_typedefs();
        match t.kind() {
            BtfKind::Ptr => Arg::Pointer,
            BtfKind::Int => Int::try_from(t).map_or(Arg::Other, |i| Arg::Int {
                bytes: usize::from(i.bits / 8),
                signed: matches!(i.encoding, IntEncoding::Signed),
            }),
            _ => Arg::Other,
        }
    }
}

impl Prototypes {
    /// Reads the prototypes from `/sys/kernel/btf/vmlinux`; the defaults
    /// when it cannot be read.
    pub fn of_running_kernel() -> Prototypes {
        let from_btf = match Btf::from_vmlinux() {
            Ok(btf) => Prototypes::from_btf(&btf),
            Err(e) => {
                log::warn!(
                    "kernel BTF not readable ({e}): assuming the newest tracepoint prototypes"
                );
                Prototypes::default()
            }
        };
        Prototypes {
            bpf_atomics: probe_bpf_atomics(),
            ..from_btf
        }
    }

    fn from_btf(btf: &Btf<'_>) -> Prototypes {
        let d = Prototypes::default();
        let exit = args(btf, "sched_process_exit");
        let victim = args(btf, "mark_victim");
        let complete = args(btf, "block_rq_complete");
        Prototypes {
            exit_has_group_dead: exit.is_some_and(|a| a.len() >= 2),
            mark_victim_has_task: victim
                .map_or(d.mark_victim_has_task, |a| a.first() == Some(&Arg::Pointer)),
            complete_error_is_errno: complete.map_or(d.complete_error_is_errno, |a| {
                a.get(1)
                    == Some(&Arg::Int {
                        bytes: 4,
                        signed: true,
                    })
            }),
            bpf_atomics: d.bpf_atomics,
        }
    }

    /// `(program, load it?)` for every program that has variants, in the
    /// object that holds it.
    pub fn process_programs(&self) -> [(&'static str, bool); 4] {
        [
            ("tapio_mark_victim", self.mark_victim_has_task),
            ("tapio_mark_victim_pid", !self.mark_victim_has_task),
            ("tapio_sched_process_exit_gd", self.exit_has_group_dead),
            // The claim-based exit: its claims are released by the free
            // hook, which every kernel loads (it also forgets OOM state).
            ("tapio_sched_process_exit", !self.exit_has_group_dead),
        ]
    }

    /// See [`Prototypes::process_programs`].
    pub fn network_programs(&self) -> [(&'static str, bool); 6] {
        let slots = self.bpf_atomics;
        [
            ("tapio_inet_sock_set_state", !slots),
            ("tapio_inet_sock_set_state_slots", slots),
            ("tapio_tcp_receive_reset", !slots),
            ("tapio_tcp_receive_reset_slots", slots),
            ("tapio_tcp_retransmit_skb", !slots),
            ("tapio_tcp_retransmit_skb_slots", slots),
        ]
    }

    /// See [`Prototypes::process_programs`].
    pub fn storage_programs(&self) -> [(&'static str, bool); 2] {
        [
            ("tapio_block_rq_complete", !self.complete_error_is_errno),
            (
                "tapio_block_rq_complete_errno",
                self.complete_error_is_errno,
            ),
        ]
    }

    /// One line for the log and `check`.
    pub fn describe(&self) -> String {
        format!(
            "sched_process_exit {}, mark_victim {}, block_rq_complete {}, {}",
            if self.exit_has_group_dead {
                "(task, group_dead)"
            } else {
                "(task): group death claimed per tgid"
            },
            if self.mark_victim_has_task {
                "(task)"
            } else {
                "(pid): oom_kill emitted at the victim's exit"
            },
            if self.complete_error_is_errno {
                "(rq, errno)"
            } else {
                "(rq, blk_status_t)"
            },
            if self.bpf_atomics {
                "BPF atomics: socket owners in lock-free slots"
            } else {
                "no BPF atomics: socket owners in a hash"
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the running kernel, every tracepoint Tapio uses has a prototype
    /// in BTF, and each variant group selects exactly one program.
    #[test]
    fn each_variant_group_selects_exactly_one_program() {
        let Ok(btf) = Btf::from_vmlinux() else {
            eprintln!("SKIPPED: prototypes test needs /sys/kernel/btf/vmlinux");
            crate::test_skip::record("each_variant_group_selects_exactly_one_program");
            return;
        };
        for tp in [
            "sched_process_exit",
            "mark_victim",
            "block_rq_complete",
            "sched_process_free",
        ] {
            assert!(args(&btf, tp).is_some(), "{tp} not in BTF");
        }
        let p = Prototypes::from_btf(&btf);
        let procs = p.process_programs();
        assert_eq!(procs[..2].iter().filter(|(_, on)| *on).count(), 1);
        assert_eq!(procs[2..].iter().filter(|(_, on)| *on).count(), 1);
        assert_eq!(p.storage_programs().iter().filter(|(_, on)| *on).count(), 1);
        for atomics in [false, true] {
            let net = Prototypes {
                bpf_atomics: atomics,
                ..p
            }
            .network_programs();
            for pair in net.chunks(2) {
                assert_eq!(pair.iter().filter(|(_, on)| *on).count(), 1);
                assert_eq!(pair[1].0, format!("{}_slots", pair[0].0));
                assert_eq!(pair[1].1, atomics);
            }
        }
        // The task argument of sched_process_exit is a pointer everywhere.
        assert_eq!(
            args(&btf, "sched_process_exit").and_then(|a| a.first().copied()),
            Some(Arg::Pointer)
        );
        println!("PROTOTYPES {}", p.describe());
    }
}
