/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Process observer: abnormal process exits, OOM kills, and (optionally)
 * exec.
 *
 *  - abnormal_exit: one per process, at the thread group's final exit
 *    (signal->live reached 0), when it was killed by a signal or exited
 *    with a status that is neither 0 nor in the ignore list.
 *  - oom_kill: the OOM killer's victim, with the victim's own cgroups read
 *    from its task_struct (never from current, which is the allocating
 *    task). The victim's tgid is remembered in `oom_victims`, and its exit
 *    is then folded into the oom_kill: one death, one event.
 *  - exec: sched_process_exec, only with exec_enabled.
 */
/* Lower rate than the network observer: a smaller ring (each ring is
 * mapped twice into the agent, so its size counts double in RSS). */
#define TAPIO_RINGBUF_BYTES (256 * 1024)
#include "common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);  /* tgid */
	__type(value, __u8);
} oom_victims SEC(".maps");

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

SEC("tp_btf/mark_victim")
int BPF_PROG(tapio_mark_victim, struct task_struct *task)
{
	const struct tapio_config *cfg = tapio_cfg();
	struct tapio_process_event *ev;
	struct mm_struct *mm;
	__u32 tgid;
	__u8 one = 1;

	if (!cfg || !cfg->process_enabled)
		return 0;
	ev = tapio_reserve(cfg, sizeof(*ev), TAPIO_EV_PROC_OOM_KILL);
	if (!ev)
		return 0; /* lost and counted: the exit will be reported instead */
	tgid = BPF_CORE_READ(task, tgid);
	ev->pid = tgid;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm);
	ev->cgroup_id = tapio_task_cgroup_id(task);
	ev->memcg_id = memcg_id(task);
	ev->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	mm = BPF_CORE_READ(task, mm);
	if (mm) {
		__s64 file = BPF_CORE_READ(mm, rss_stat[MM_FILEPAGES].count);
		__s64 anon = BPF_CORE_READ(mm, rss_stat[MM_ANONPAGES].count);
		__s64 shmem = BPF_CORE_READ(mm, rss_stat[MM_SHMEMPAGES].count);
		__s64 rss = (file > 0 ? file : 0) + (anon > 0 ? anon : 0) + (shmem > 0 ? shmem : 0);

		ev->total_vm_pages = BPF_CORE_READ(mm, total_vm);
		ev->rss_pages = rss;
	}
	ev->flags = TAPIO_F_CGROUP_KNOWN;
	bpf_map_update_elem(&oom_victims, &tgid, &one, BPF_ANY);
	tapio_submit(cfg, ev);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tapio_sched_process_exit, struct task_struct *task)
{
	const struct tapio_config *cfg = tapio_cfg();
	struct tapio_process_event *ev;
	__u32 tgid, flags, sig;
	__s32 code, status;

	if (!cfg || !cfg->process_enabled)
		return 0;
	/* Threads other than the last one of the group: not a process exit. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	if (bpf_map_lookup_elem(&oom_victims, &tgid)) {
		bpf_map_delete_elem(&oom_victims, &tgid);
		tapio_count(TAPIO_CNT_OOM_EXIT_DEDUP);
		return 0;
	}
	code = BPF_CORE_READ(task, exit_code);
	flags = BPF_CORE_READ(task, signal, flags);
	if (flags & SIGNAL_GROUP_EXIT)
		code = BPF_CORE_READ(task, signal, group_exit_code);
	status = (code >> 8) & 0xff;
	sig = code & 0x7f;
	if (!sig && (status == 0 || ignored(cfg, status)))
		return 0;
	ev = tapio_reserve(cfg, sizeof(*ev), TAPIO_EV_PROC_ABNORMAL_EXIT);
	if (!ev)
		return 0;
	ev->pid = tgid;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->exit_code = status;
	ev->signal = sig;
	ev->cgroup_id = tapio_task_cgroup_id(task);
	ev->flags = TAPIO_F_CGROUP_KNOWN;
	BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm);
	tapio_submit(cfg, ev);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tapio_sched_process_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	const struct tapio_config *cfg = tapio_cfg();
	struct tapio_process_event *ev;
	const char *filename;

	if (!cfg || !cfg->process_enabled || !cfg->exec_enabled)
		return 0;
	ev = tapio_reserve(cfg, sizeof(*ev), TAPIO_EV_PROC_EXEC);
	if (!ev)
		return 0;
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->cgroup_id = tapio_task_cgroup_id(task);
	ev->flags = TAPIO_F_CGROUP_KNOWN;
	BPF_CORE_READ_STR_INTO(&ev->comm, task, comm);
	filename = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), filename);
	tapio_submit(cfg, ev);
	return 0;
}
