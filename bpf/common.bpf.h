/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Helpers shared by every Tapio program: the config snapshot, the per-CPU
 * counters, reserve-or-count, and header stamping.
 *
 * Each observer is its own BPF object, so each has its own copy of these
 * maps: one observer failing to load never takes another's state with it.
 */
#ifndef TAPIO_COMMON_BPF_H
#define TAPIO_COMMON_BPF_H

#include "tapio_kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tapio_abi.h"

char LICENSE[] SEC("license") = "GPL";

/*
 * The observer's rings, one entry per CPU (tapio_abi.h). The agent sets
 * the array's size to the number of possible CPUs, creates the rings,
 * gives the first one to libbpf as the inner map's template (so each ring
 * has the template's size, which kernels before 5.10 also require), and
 * fills every entry before it attaches the programs. The size here only
 * makes the template valid on its own.
 */
struct tapio_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TAPIO_RINGBUF_MIN_BYTES);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct tapio_ring);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TAPIO_CONFIG_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct tapio_config);
} tapio_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32); /* the tapio_config slot in force */
} tapio_config_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32); /* TAPIO_CONSUMER_IDLE or 0 (tapio_abi.h) */
} tapio_consumer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TAPIO_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tapio_counters SEC(".maps");

static __always_inline void tapio_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&tapio_counters, &idx);

	/* Atomic even in a per-CPU slot: a program on this CPU can interrupt
	 * another mid-increment (softirq over process context, an NMI-time
	 * program), and a plain += would lose one of the two. An add whose
	 * result is unused compiles to BPF_XADD, which every supported kernel
	 * has (fetch variants need 5.12). */
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* The leading bytes of struct tapio_config that an object's programs read,
 * and so copy: all of it, unless the object defines fewer before it
 * includes this header (its programs then read no field past them). */
#ifndef TAPIO_CONFIG_READ_BYTES
#define TAPIO_CONFIG_READ_BYTES sizeof(struct tapio_config)
#endif

/* Copies config slot `slot` into `snap`; whether the copy is whole (the
 * slot's seq was even before and unchanged after: tapio_abi.h). */
static __always_inline bool tapio_cfg_copy(__u32 slot, struct tapio_config *snap)
{
	const struct tapio_config *c = bpf_map_lookup_elem(&tapio_config, &slot);
	__u32 seq;

	if (!c)
		return false;
	seq = *(volatile const __u32 *)&c->seq;
	asm volatile("" ::: "memory");
	__builtin_memcpy(snap, c, TAPIO_CONFIG_READ_BYTES);
	asm volatile("" ::: "memory");
	return !(seq & 1) && *(volatile const __u32 *)&c->seq == seq;
}

/*
 * Fills `snap` with a consistent copy of the config in force; 0 when the
 * agent has not written one yet, wrote an ABI version this program does
 * not understand (counted), or was rewriting both slots (counted).
 */
static __always_inline int tapio_cfg_fill(struct tapio_config *snap)
{
	__u32 zero = 0, slot;
	const __u32 *active = bpf_map_lookup_elem(&tapio_config_active, &zero);

	if (!active)
		return 0;
	slot = *(volatile const __u32 *)active & 1;
	if (!tapio_cfg_copy(slot, snap) && !tapio_cfg_copy(slot ^ 1, snap)) {
		tapio_count(TAPIO_CNT_CONFIG_SKIPPED);
		return 0;
	}
	if (snap->abi_version == 0)
		return 0; /* not configured yet: observe nothing */
	if (snap->abi_version != TAPIO_ABI_VERSION) {
		tapio_count(TAPIO_CNT_ABI_MISMATCH);
		return 0;
	}
	return 1;
}

/* tapio_cfg_fill as one BPF subprogram per object, called by every
 * program, rather than the copy inlined into each (it was a fifth of each
 * object's size). */
static __attribute__((noinline)) int tapio_cfg_read(struct tapio_config *snap)
{
	return tapio_cfg_fill(snap);
}

/* The config in force (a copy in `snap`), or NULL: see tapio_cfg_fill. */
static __always_inline const struct tapio_config *tapio_cfg(struct tapio_config *snap)
{
	return tapio_cfg_read(snap) ? snap : 0;
}

/* The same, inlined: for the programs that run on every connection
 * (network) or every block request (storage's issue and completion). A
 * call to a BPF subprogram and its return cost about 20 ns on this kind
 * of machine (return thunks), more where returns are mitigated
 * (docs/budgets.md); inlined in every program, the copies would cost
 * the agent's size budget more than the rare programs gain. */
static __always_inline const struct tapio_config *tapio_cfg_inline(struct tapio_config *snap)
{
	return tapio_cfg_fill(snap) ? snap : 0;
}

/*
 * Reserve a record of `size` bytes in the ring of this CPU, zeroed, with
 * the header stamped; `*ring` is the ring, for tapio_submit (a program
 * runs on one CPU from start to end). Counts the attempt, and a reserve
 * failure as ringbuf_lost: also a CPU without a ring, which the agent
 * never leaves (it fills the entry of every possible CPU).
 */
static __always_inline void *tapio_reserve(const struct tapio_config *cfg, __u32 size, __u16 type,
					   void **ring)
{
	struct tapio_event_header *hdr = 0;
	__u32 cpu = bpf_get_smp_processor_id();

	tapio_count(TAPIO_CNT_ATTEMPTS);
	*ring = bpf_map_lookup_elem(&events, &cpu);
	if (*ring)
		hdr = bpf_ringbuf_reserve(*ring, size, 0);
	if (!hdr) {
		tapio_count(TAPIO_CNT_RINGBUF_LOST);
		return 0;
	}
	__builtin_memset(hdr, 0, size);
	hdr->type = type;
	hdr->size = size;
	hdr->config_generation = cfg->generation;
	hdr->timestamp_ns = bpf_ktime_get_boot_ns();
	return hdr;
}

/*
 * Submit without waking the reader, unless enough bytes are pending in
 * the record's ring (ringbuf_wakeup_bytes: the agent writes at most half
 * of the object's ring there): the reader polls with a short timeout
 * anyway, and drains every ring when it wakes. One wakeup per record
 * costs the machine several times more than the record itself
 * (docs/architecture.md).
 *
 * The pending bytes are looked at only on every TAPIO_WAKEUP_CHECK_EVERY-th
 * record a CPU tries to emit (its ATTEMPTS counter): reading the ring's
 * positions pulls cache lines the consumer writes, and on every record it
 * cost more than the rest of the record together (docs/budgets.md). The
 * pending bytes can so pass the threshold by at most that many records per
 * CPU before a wakeup is forced.
 */
#define TAPIO_WAKEUP_CHECK_EVERY 16

static __always_inline void tapio_submit(const struct tapio_config *cfg, void *rec, void *ring)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u32 zero = 0, idx = TAPIO_CNT_ATTEMPTS, *consumer;
	const __u64 *attempts = bpf_map_lookup_elem(&tapio_counters, &idx);

	if (attempts && *(volatile const __u64 *)attempts % TAPIO_WAKEUP_CHECK_EVERY == 0 &&
	    bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= cfg->ringbuf_wakeup_bytes) {
		flags = BPF_RB_FORCE_WAKEUP;
	} else {
		/* The poller sleeps long: the first record wakes it (tapio_abi.h). */
		consumer = bpf_map_lookup_elem(&tapio_consumer, &zero);
		if (consumer && *(volatile __u32 *)consumer == TAPIO_CONSUMER_IDLE) {
			*(volatile __u32 *)consumer = 0;
			flags = BPF_RB_FORCE_WAKEUP;
		}
	}
	bpf_ringbuf_submit(rec, flags);
}

/*
 * bpf_map_update_elem() as a 32-bit error. Before 6.4 the map ops that the
 * verifier calls directly returned int, so a negative error reached the
 * program zero-extended (-EEXIST as 0xffffffef): compared as 64 bits it
 * never equals -EEXIST. Every comparison of its result goes through this.
 */
static __always_inline int tapio_map_update(void *map, const void *key, const void *value, __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

static __always_inline __u64 tapio_task_cgroup_id(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
}

/*
 * Keeps an observer's record type in its object's BTF, so the generated
 * skeleton carries it and a test can hold the Rust mirror against it. Each
 * observer names its own record once: TAPIO_KEEP_RECORD_BTF(tapio_net_event).
 * The function is never called and never loaded (libbpf only loads
 * subprograms a program calls).
 */
#define TAPIO_KEEP_RECORD_BTF(record)                                              \
	__attribute__((noinline, unused)) int tapio_record_btf_anchor(struct record *r) \
	{                                                                          \
		return r->hdr.size;                                                \
	}

#endif /* TAPIO_COMMON_BPF_H */
