/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * tapio_abi.h - THE kernel/user ABI of Tapio.
 *
 * Every struct that crosses the kernel boundary is defined here and only
 * here: the event records the BPF programs write into their ring buffers,
 * the counters they keep, and the tapio_config carrier the agent writes.
 * The Rust mirrors are crates/tapio-agent/src/abi.rs (what all observers
 * share) and crates/tapio-agent/src/observer/<name>.rs (each observer's
 * record and record types); they carry size_of /
 * offset_of assertions against the numbers asserted below.
 *
 * Rules:
 *  - plain fixed-width types only, no kernel headers;
 *  - every padding byte is explicit (a named _pad field) and zeroed;
 *  - a change of any layout bumps TAPIO_ABI_VERSION.
 */
#ifndef TAPIO_ABI_H
#define TAPIO_ABI_H

#ifdef __BPF__
/* BPF side: vmlinux-free build, fixed-width types from tapio_kernel.h. */
#else
#include <linux/types.h>
#endif

#define TAPIO_ABI_VERSION 3

/* Ring buffers: each observer's programs emit into the ring of the CPU
 * they run on ("events", a BPF_MAP_TYPE_ARRAY_OF_MAPS indexed by CPU, each
 * entry a BPF_MAP_TYPE_RINGBUF), which the agent creates and inserts
 * before it attaches the programs: two CPUs emitting into one ring fought
 * over its lock and positions on every record (docs/budgets.md). The
 * agent sizes them within the observer's bytes (tapio_wire::limits::
 * RING_BYTES_*): as many rings as CPUs, each a power of two at most
 * bytes / rings, but never one smaller than TAPIO_RINGBUF_MIN_BYTES, which
 * is also the size of the inner map's template. With more CPUs than that
 * allows, CPU c uses ring c % rings. Each ring is mapped twice into the
 * agent, so its size counts double in RSS. The profile caps
 * ringbuf.wakeup_bytes at TAPIO_WAKEUP_BYTES_MAX, and the agent writes at
 * most half of the object's ring into each object's config, so that the
 * threshold can fire on every ring. */
#define TAPIO_RINGBUF_MIN_BYTES (32 * 1024)
#define TAPIO_WAKEUP_BYTES_MAX (128 * 1024)

#define TAPIO_COMM_LEN 16
#define TAPIO_FILENAME_LEN 128
#define TAPIO_MAX_IGNORED_EXIT_CODES 16

/* Record types (tapio_event_header.type). */
enum tapio_event_type {
	TAPIO_EV_NET_CONN_REFUSED = 1,
	TAPIO_EV_NET_CONN_TIMEOUT = 2,
	TAPIO_EV_NET_CONN_RESET = 3,
	TAPIO_EV_NET_RETRANSMITS = 4,
	TAPIO_EV_NET_CONN_UNREACHABLE = 5,
	TAPIO_EV_STORAGE_SLOW_IO = 16,
	TAPIO_EV_STORAGE_IO_ERROR = 17,
	TAPIO_EV_PROC_ABNORMAL_EXIT = 32,
	TAPIO_EV_PROC_OOM_KILL = 33,
	TAPIO_EV_PROC_EXEC = 34,
};

/* Common header: first member of every record. */
struct tapio_event_header {
	__u16 type;              /* enum tapio_event_type */
	__u16 size;              /* sizeof the whole record */
	__u32 config_generation; /* tapio_config.generation in force */
	__u64 timestamp_ns;      /* bpf_ktime_get_boot_ns() */
};

/* Flags shared by records that may know their owning task. */
#define TAPIO_F_OWNER_KNOWN (1u << 0) /* pid/comm are the owning process */
#define TAPIO_F_CGROUP_KNOWN (1u << 1) /* cgroup_id is meaningful */
#define TAPIO_F_CRITICAL (1u << 2)     /* past the critical threshold in force */
#define TAPIO_F_MM_KNOWN (1u << 3)     /* oom_kill: total_vm_pages/rss_pages are meaningful */
#define TAPIO_F_ERRNO (1u << 4)        /* storage error: `error` is a positive errno, not a blk_status_t */

/* kernel.network.* */
struct tapio_net_event {
	struct tapio_event_header hdr;
	__u64 cgroup_id;
	__u32 pid;          /* tgid of the owner; valid with TAPIO_F_OWNER_KNOWN */
	__u32 retransmits;  /* TAPIO_EV_NET_RETRANSMITS: count in this span */
	__u64 span_ns;      /* retransmits: first..last retransmit of the span */
	__u8 saddr[16];     /* local address (IPv4 in the first 4 bytes) */
	__u8 daddr[16];     /* remote address */
	__u16 sport;        /* local port, host order */
	__u16 dport;        /* remote port, host order */
	__u16 family;       /* AF_INET (2) or AF_INET6 (10) */
	__u8 flags;         /* TAPIO_F_* */
	__u8 state;         /* TCP state at the time of the fact */
	__u32 syn_retries;  /* timeout, unreachable: SYN retransmissions before the outcome */
	__u32 sk_err;       /* unreachable: the socket error connect() returns (an errno) */
	char comm[TAPIO_COMM_LEN];
};

/* Storage ops (tapio_storage_event.op). */
enum tapio_storage_op {
	TAPIO_OP_READ = 0,
	TAPIO_OP_WRITE = 1,
	TAPIO_OP_FLUSH = 2,
	TAPIO_OP_DISCARD = 3,
	TAPIO_OP_OTHER = 4,
};

/* kernel.storage.* */
struct tapio_storage_event {
	struct tapio_event_header hdr;
	__u64 cgroup_id;
	__u64 sector;
	__u64 latency_ns;
	__u32 bytes;
	__u32 dev_major;
	__u32 dev_minor;
	__u32 pid;          /* valid with TAPIO_F_OWNER_KNOWN */
	__u8 op;            /* enum tapio_storage_op */
	__u8 error;         /* blk_status_t, 0 = ok (an errno with TAPIO_F_ERRNO) */
	__u8 flags;         /* TAPIO_F_* */
	__u8 _pad[5];
	char comm[TAPIO_COMM_LEN];
};

/* kernel.process.* */
struct tapio_process_event {
	struct tapio_event_header hdr;
	__u64 cgroup_id;       /* cgroup v2 (default hierarchy) id */
	__u64 memcg_id;        /* oom_kill: the victim's memory cgroup id */
	__u64 total_vm_pages;     /* oom_kill, in pages */
	__u64 rss_pages;          /* oom_kill: anon + file + shmem pages */
	__u32 pid;             /* tgid */
	__u32 ppid;
	__s32 exit_code;       /* abnormal_exit: exit status (0..255) */
	__u32 signal;          /* abnormal_exit: terminating signal, 0 = none */
	__s16 oom_score_adj;   /* oom_kill */
	__u8 flags;            /* TAPIO_F_* */
	__u8 _pad[5];
	char comm[TAPIO_COMM_LEN];
	char filename[TAPIO_FILENAME_LEN]; /* exec only */
};

/*
 * Per-CPU counters (BPF_MAP_TYPE_PERCPU_ARRAY, one per object, key = index).
 * Each object counts only its own observer's entries.
 */
enum tapio_counter {
	TAPIO_CNT_ATTEMPTS = 0,         /* records the program tried to emit */
	TAPIO_CNT_RINGBUF_LOST = 1,     /* bpf_ringbuf_reserve failures */
	TAPIO_CNT_ABI_MISMATCH = 2,     /* config ABI version not understood */
	/* correlation drops; see docs/events.md for each reason */
	TAPIO_CNT_CORR_OWNER_MISSING = 3,   /* network: connect state not found */
	TAPIO_CNT_CORR_STATE_FULL = 4,      /* any: correlation map full */
	TAPIO_CNT_CORR_AMBIGUOUS_IO = 5,    /* storage: ambiguous_inflight_io */
	TAPIO_CNT_CORR_NO_ISSUE = 6,        /* storage: completion without issue */
	TAPIO_CNT_OOM_EXIT_DEDUP = 7,       /* process: exit folded into oom_kill */
	TAPIO_CNT_INFLIGHT_AT_ATTACH = 8,   /* storage: completion of a request older than the program */
	TAPIO_CNT_NOT_DISPATCHED = 9,       /* storage: completed without ever reaching the driver */
	TAPIO_CNT_FLUSH_SEQ_END = 10,       /* storage: a flush sequence's final, 0-byte completion of a write already reported */
	TAPIO_CNT_RESET_DEDUP = 11,         /* network: a further reset of a connection whose reset was already reported */
	TAPIO_CNT_CONNECT_ERROR_TAKEN = 12, /* network: the kernel failed a connect, but the application read (and cleared) its error before the close */
	TAPIO_CNT_CONNECT_ERROR_UNCLASSIFIED = 13, /* network: a connect ended with an errno no event kind describes */
	TAPIO_CNT_CONFIG_SKIPPED = 14,      /* any: a run skipped because both config slots were being rewritten */
	TAPIO_CNT_OOM_VICTIM_EXITING = 15,  /* process: the OOM killer chose a task already exiting, and killed nothing */
	TAPIO_CNT_MAX = 16,
};

/*
 * The consumer's sleep, shared with the agent's poller ("tapio_consumer": a
 * one-entry BPF_MAP_TYPE_ARRAY of __u32, BPF_F_MMAPABLE, in every object).
 * Records are submitted without a wakeup (the poller drains on a short
 * timeout) until TAPIO_CONSUMER_IDLE is set: the poller sets it before it
 * sleeps long, and the first record submitted then clears it and wakes the
 * poller. An idle node costs few wakeups, and its first event no latency.
 */
#define TAPIO_CONSUMER_IDLE 1

/*
 * Runtime configuration: a private fixed layout (not CO-RE), written by the
 * agent into each object's "tapio_config" map: a BPF_MAP_TYPE_ARRAY of
 * TAPIO_CONFIG_SLOTS slots, mmap'ed by the agent (BPF_F_MMAPABLE), and the
 * index of the slot in force in "tapio_config_active".
 *
 * A consistent snapshot, never a record stamped with one generation and
 * another's thresholds: the agent (one writer at a time) rewrites the slot
 * not in force, making its `seq` odd while it writes and even after, and
 * only then points tapio_config_active at it. A program copies the slot in
 * force to its stack and keeps the copy only if `seq` was even and did not
 * change; otherwise it copies the other slot, which is complete whenever
 * the first is being written. Both failing needs two full rewrites within
 * one program run: the run is skipped and counted
 * (TAPIO_CNT_CONFIG_SKIPPED).
 *
 * An unknown abi_version makes the programs emit nothing and count
 * TAPIO_CNT_ABI_MISMATCH.
 */
#define TAPIO_CONFIG_SLOTS 2

struct tapio_config {
	__u32 abi_version;        /* must equal TAPIO_ABI_VERSION */
	__u32 generation;         /* config generation; stamped on every record */
	__u8 network_enabled;
	__u8 storage_enabled;
	__u8 process_enabled;
	__u8 exec_enabled;
	__u8 test_flags;             /* TAPIO_TEST_*: fault injection for tests, 0 in production */
	__u8 _pad0[3];
	__u64 retransmit_window_ns;
	__u64 slow_io_threshold_ns;  /* emit slow_io at or above this latency */
	__u32 ringbuf_wakeup_bytes;  /* force a wakeup once this much is pending */
	__u32 ignore_exit_count;     /* used entries of ignore_exit_codes */
	__s32 ignore_exit_codes[TAPIO_MAX_IGNORED_EXIT_CODES];
	__u64 slow_io_critical_ns;   /* slow_io at or above this: TAPIO_F_CRITICAL */
	__u32 seq;                   /* odd while the agent writes this slot */
	__u32 _pad1;
};

/* tapio_config.test_flags */
#define TAPIO_TEST_DOUBLE_ISSUE (1u << 0) /* storage: issue every request twice */
#define TAPIO_TEST_SLOT_COLLIDE (1u << 1) /* network: every socket in one of two owner slots */
#define TAPIO_TEST_RESET_UNSEEN (1u << 2) /* network: the reset program ignores resets in SYN_SENT */

#define TAPIO_ASSERT_LAYOUT(cond) _Static_assert(cond, #cond)

TAPIO_ASSERT_LAYOUT(sizeof(struct tapio_event_header) == 16);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_event_header, type) == 0);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_event_header, size) == 2);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_event_header, config_generation) == 4);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_event_header, timestamp_ns) == 8);

TAPIO_ASSERT_LAYOUT(sizeof(struct tapio_net_event) == 104);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, cgroup_id) == 16);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, pid) == 24);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, retransmits) == 28);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, span_ns) == 32);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, saddr) == 40);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, daddr) == 56);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, sport) == 72);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, dport) == 74);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, family) == 76);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, flags) == 78);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, state) == 79);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, syn_retries) == 80);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, sk_err) == 84);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_net_event, comm) == 88);

TAPIO_ASSERT_LAYOUT(sizeof(struct tapio_storage_event) == 80);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, cgroup_id) == 16);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, sector) == 24);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, latency_ns) == 32);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, bytes) == 40);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, dev_major) == 44);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, dev_minor) == 48);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, pid) == 52);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, op) == 56);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, error) == 57);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, flags) == 58);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_storage_event, comm) == 64);

TAPIO_ASSERT_LAYOUT(sizeof(struct tapio_process_event) == 216);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, cgroup_id) == 16);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, memcg_id) == 24);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, total_vm_pages) == 32);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, rss_pages) == 40);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, pid) == 48);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, ppid) == 52);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, exit_code) == 56);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, signal) == 60);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, oom_score_adj) == 64);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, flags) == 66);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, comm) == 72);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_process_event, filename) == 88);

TAPIO_ASSERT_LAYOUT(sizeof(struct tapio_config) == 120);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, abi_version) == 0);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, generation) == 4);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, network_enabled) == 8);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, storage_enabled) == 9);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, process_enabled) == 10);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, exec_enabled) == 11);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, test_flags) == 12);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, retransmit_window_ns) == 16);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, slow_io_threshold_ns) == 24);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, ringbuf_wakeup_bytes) == 32);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, ignore_exit_count) == 36);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, ignore_exit_codes) == 40);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, slow_io_critical_ns) == 104);
TAPIO_ASSERT_LAYOUT(__builtin_offsetof(struct tapio_config, seq) == 112);

#endif /* TAPIO_ABI_H */
