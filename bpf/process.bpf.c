/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Process observer: abnormal process exits, OOM kills, and (optionally)
 * exec.
 *
 *  - abnormal_exit: one per process, at the thread group's death, when it
 *    was killed by a signal or exited with a status that is neither 0 nor
 *    in the ignore list. Which thread ended the group comes from the
 *    kernel where the tracepoint says (group_dead), else from an atomic
 *    claim per tgid (dead_groups): one death, one event, on every kernel.
 *  - oom_kill: the OOM killer's victim, with the victim's own cgroups read
 *    from its task_struct (never from current, which is the allocating
 *    task). The victim's tgid is remembered in `oom_victims`, and its exit
 *    is then folded into the oom_kill: one death, one event. On kernels
 *    whose mark_victim carries only a pid, the oom_kill is emitted at the
 *    victim's death instead, without the mm facts (gone by then); the
 *    victim's tgid is remembered at mark_victim all the same (from the
 *    SIGKILL's target), so whichever thread ends the group finds it.
 *    mark_victim also fires when the OOM killer picks a task that is
 *    already exiting: it then kills nothing (the kernel's oom_kill counters
 *    stay put), so no oom_kill is emitted and the task's own exit is
 *    reported as what it is. A real kill sends SIGKILL (SEND_SIG_PRIV, to
 *    the thread group) and marks the victim from the same task on the same
 *    CPU without a preemption point in between (both under task_lock):
 *    signal_generate remembers that SIGKILL and its sender per CPU, and
 *    mark_victim checks both.
 *  - exec: sched_process_exec, only with exec_enabled.
 */
#include "common.bpf.h"

TAPIO_KEEP_RECORD_BTF(tapio_process_event)

#define TAPIO_OOM_MAX 1024
#define TAPIO_DEAD_GROUPS_MAX 8192

/* oom_victims values */
#define OOM_REPORTED 1 /* oom_kill emitted at mark_victim: fold the exit */
#define OOM_AT_EXIT 2  /* pid-only mark_victim: emit the oom_kill at the exit */

/* Thread groups whose OOM kill is known, by tgid. A plain hash: a full map
 * is counted (correlation_state_full), never evicted silently. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_OOM_MAX);
	__type(key, __u32);  /* tgid */
	__type(value, __u8); /* OOM_* */
} oom_victims SEC(".maps");

/* Kernels whose sched_process_exit does not say whether the group died:
 * every thread that exits after the group's live count reached 0 sees 0,
 * so the first of them claims the death here (BPF_NOEXIST is atomic) and
 * the others stand down. The claim is released when the group leader's
 * task_struct is freed, which happens only after every thread of the
 * group has passed its exit tracepoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_DEAD_GROUPS_MAX);
	__type(key, __u32);  /* tgid */
	__type(value, __u8);
} dead_groups SEC(".maps");

/* The thread (and its group) that the last group SIGKILL sent by the
 * kernel itself (SEND_SIG_PRIV) went to on this CPU, and the task that
 * sent it; pid 0 once mark_victim took it. The OOM killer sends and marks
 * from one task; a kernel SIGKILL sent for another reason (a pid
 * namespace's init dying kills the rest) and a later OOM decision that
 * finds its target already exiting happen in two tasks, so a stale slot
 * never passes for a kill. */
struct oom_sigkill {
	__u64 sender; /* task_struct * of the sending task, as a number */
	__u32 pid;    /* thread id */
	__u32 tgid;   /* its thread group */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct oom_sigkill);
} oom_sigkill SEC(".maps");

#define TAPIO_SIGKILL 9
#define TAPIO_SEND_SIG_PRIV ((void *)1)

/* signal_generate(sig, info, task, group, result): the OOM killer's kill
 * is a SIGKILL with SEND_SIG_PRIV to the victim's thread group. */
SEC("tp_btf/signal_generate")
int BPF_PROG(tapio_signal_generate, int sig, void *info, struct task_struct *task, int group)
{
	struct oom_sigkill *slot;
	__u32 zero = 0;

	if (sig != TAPIO_SIGKILL || info != TAPIO_SEND_SIG_PRIV || !group)
		return 0;
	slot = bpf_map_lookup_elem(&oom_sigkill, &zero);
	if (slot) {
		slot->sender = bpf_get_current_task();
		slot->pid = BPF_CORE_READ(task, pid);
		slot->tgid = BPF_CORE_READ(task, tgid);
	}
	return 0;
}

/* Whether mark_victim(thread `pid`) follows the OOM killer's SIGKILL to it,
 * sent by this same task (a kill: the victim's tgid, which the pid-only
 * tracepoint does not carry), or found the task already exiting (no kill:
 * 0). Either way the slot is emptied, enabled or not: it belongs to this
 * one OOM decision. */
static __always_inline __u32 oom_killed(__u32 pid)
{
	struct oom_sigkill *slot;
	__u32 zero = 0, tgid;

	slot = bpf_map_lookup_elem(&oom_sigkill, &zero);
	if (!slot)
		return 0;
	tgid = slot->pid == pid && slot->sender == bpf_get_current_task() ? slot->tgid : 0;
	slot->pid = 0;
	return tgid;
}

static __always_inline __u64 memcg_id(struct task_struct *task)
{
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = 0;
	__u32 idx = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	__u32 off = bpf_core_field_offset(struct css_set, subsys);

	if (!cset || idx >= 32)
		return 0;
	bpf_probe_read_kernel(&css, sizeof(css), (void *)cset + off + idx * sizeof(void *));
	if (!css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

static __always_inline bool ignored(const struct tapio_config *cfg, __s32 status)
{
	__u32 n = cfg->ignore_exit_count;

#pragma unroll
	for (int i = 0; i < TAPIO_MAX_IGNORED_EXIT_CODES; i++) {
		if (i < n && cfg->ignore_exit_codes[i] == status)
			return true;
	}
	return false;
}

/* Resident pages (file + anon + shmem). Before 6.2 mm->rss_stat is one
 * struct of atomic counters; from 6.2 an array of percpu_counters, whose
 * global count is what the kernel's own OOM report prints. */
static __always_inline __s64 rss_pages(struct mm_struct *mm)
{
	__s64 file, anon, shmem;

	if (bpf_core_field_exists(((struct mm_struct___atomic *)mm)->rss_stat.count)) {
		struct mm_struct___atomic *old = (void *)mm;

		file = BPF_CORE_READ(old, rss_stat.count[MM_FILEPAGES].counter);
		anon = BPF_CORE_READ(old, rss_stat.count[MM_ANONPAGES].counter);
		shmem = BPF_CORE_READ(old, rss_stat.count[MM_SHMEMPAGES].counter);
	} else {
		file = BPF_CORE_READ(mm, rss_stat[MM_FILEPAGES].count);
		anon = BPF_CORE_READ(mm, rss_stat[MM_ANONPAGES].count);
		shmem = BPF_CORE_READ(mm, rss_stat[MM_SHMEMPAGES].count);
	}
	return (file > 0 ? file : 0) + (anon > 0 ? anon : 0) + (shmem > 0 ? shmem : 0);
}

/* The facts every process record takes from the task. */
static __always_inline void fill_task(struct tapio_process_event *ev, struct task_struct *task)
{
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->cgroup_id = tapio_task_cgroup_id(task);
	ev->flags = TAPIO_F_CGROUP_KNOWN;
	BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm);
}

static __always_inline void emit_oom(const struct tapio_config *cfg, struct task_struct *task)
{
	struct tapio_process_event *ev;
	void *ring;
	struct mm_struct *mm;

	ev = tapio_reserve(cfg, sizeof(*ev), TAPIO_EV_PROC_OOM_KILL, &ring);
	if (!ev)
		return; /* lost and counted */
	fill_task(ev, task);
	ev->memcg_id = memcg_id(task);
	ev->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	mm = BPF_CORE_READ(task, mm);
	if (mm) {
		ev->total_vm_pages = BPF_CORE_READ(mm, total_vm);
		ev->rss_pages = rss_pages(mm);
		ev->flags |= TAPIO_F_MM_KNOWN;
	}
	tapio_submit(cfg, ev, ring);
}

/* mark_victim(task, uid): the victim's task, while its mm is still there. */
SEC("tp_btf/mark_victim")
int BPF_PROG(tapio_mark_victim, struct task_struct *task)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	__u32 tgid = oom_killed(BPF_CORE_READ(task, pid));
	__u8 v = OOM_REPORTED;

	if (!cfg || !cfg->process_enabled)
		return 0;
	if (!tgid) {
		tapio_count(TAPIO_CNT_OOM_VICTIM_EXITING);
		return 0;
	}
	if (tapio_map_update(&oom_victims, &tgid, &v, BPF_ANY)) {
		/* Unremembered, the exit would be a second event: report the
		 * death once, as the exit it also is, and count the loss. */
		tapio_count(TAPIO_CNT_CORR_STATE_FULL);
		return 0;
	}
	emit_oom(cfg, task);
	return 0;
}

/* mark_victim(pid), older kernels: only the victim's thread id. The
 * oom_kill is emitted at its group's death, from the exiting task. The
 * group is remembered now, not when the victim thread exits: another
 * thread may end the group first, and would report a plain SIGKILL. */
SEC("tp_btf/mark_victim")
int BPF_PROG(tapio_mark_victim_pid, int pid)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	__u32 tgid = oom_killed(pid);
	__u8 v = OOM_AT_EXIT;

	if (!cfg || !cfg->process_enabled)
		return 0;
	if (!tgid) {
		tapio_count(TAPIO_CNT_OOM_VICTIM_EXITING);
		return 0;
	}
	if (tapio_map_update(&oom_victims, &tgid, &v, BPF_ANY))
		tapio_count(TAPIO_CNT_CORR_STATE_FULL);
	return 0;
}

/* The group of `task` has died; `task` is one of its threads. */
static __always_inline void group_died(const struct tapio_config *cfg, struct task_struct *task, __u32 tgid)
{
	struct tapio_process_event *ev;
	void *ring;
	struct task_struct *leader;
	__u8 *oom;
	__u32 flags, sig;
	__s32 code, status;

	oom = bpf_map_lookup_elem(&oom_victims, &tgid);
	if (oom) {
		__u8 how = *oom;

		bpf_map_delete_elem(&oom_victims, &tgid);
		tapio_count(TAPIO_CNT_OOM_EXIT_DEDUP);
		if (how == OOM_AT_EXIT)
			emit_oom(cfg, task);
		return;
	}
	/* The status wait(2) reports: the group's exit code after a group
	 * exit (exit_group, a fatal signal), else the leader's own. */
	flags = BPF_CORE_READ(task, signal, flags);
	if (flags & SIGNAL_GROUP_EXIT) {
		code = BPF_CORE_READ(task, signal, group_exit_code);
	} else {
		leader = BPF_CORE_READ(task, group_leader);
		code = BPF_CORE_READ(leader, exit_code);
	}
	status = (code >> 8) & 0xff;
	sig = code & 0x7f;
	if (!sig && (status == 0 || ignored(cfg, status)))
		return;
	ev = tapio_reserve(cfg, sizeof(*ev), TAPIO_EV_PROC_ABNORMAL_EXIT, &ring);
	if (!ev)
		return;
	fill_task(ev, task);
	ev->exit_code = status;
	ev->signal = sig;
	tapio_submit(cfg, ev, ring);
}

/* sched_process_exit(task, group_dead): the kernel says which thread
 * ended the group (newer kernels). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(tapio_sched_process_exit_gd, struct task_struct *task, bool group_dead)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	__u32 tgid;

	if (!cfg || !cfg->process_enabled)
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	if (!group_dead)
		return 0;
	group_died(cfg, task, tgid);
	return 0;
}

/* sched_process_exit(task): the group is dead once signal->live is 0;
 * the first thread to see that claims the death in dead_groups. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(tapio_sched_process_exit, struct task_struct *task)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	__u32 tgid;
	__u8 one = 1;
	int err;

	if (!cfg || !cfg->process_enabled)
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* not the end of the group */
	err = tapio_map_update(&dead_groups, &tgid, &one, BPF_NOEXIST);
	if (err == -EEXIST)
		return 0; /* another thread of the group reported it */
	if (err) {
		/* Without a claim this death could be reported twice: drop it,
		 * counted, rather than risk a duplicate. */
		tapio_count(TAPIO_CNT_CORR_STATE_FULL);
		return 0;
	}
	group_died(cfg, task, tgid);
	return 0;
}

/* A task_struct is freed after its thread has passed its exit
 * tracepoint, and a leader's only after every thread of its group has:
 * nothing kept for the thread or, at the leader, for its group can be
 * used again, and a later process that reuses the pid starts clean. The
 * group's death claim (claim-based kernels) is released here too. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(tapio_sched_process_free, struct task_struct *task)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	__u32 tgid = BPF_CORE_READ(task, tgid);

	if (pid == tgid) {
		bpf_map_delete_elem(&dead_groups, &tgid);
		bpf_map_delete_elem(&oom_victims, &tgid);
	}
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tapio_sched_process_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	struct tapio_process_event *ev;
	void *ring;
	const char *filename;

	if (!cfg || !cfg->process_enabled || !cfg->exec_enabled)
		return 0;
	ev = tapio_reserve(cfg, sizeof(*ev), TAPIO_EV_PROC_EXEC, &ring);
	if (!ev)
		return 0;
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->cgroup_id = tapio_task_cgroup_id(task);
	ev->flags = TAPIO_F_CGROUP_KNOWN;
	BPF_CORE_READ_STR_INTO(&ev->comm, task, comm);
	filename = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), filename);
	tapio_submit(cfg, ev, ring);
	return 0;
}
