/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * tapio_kernel.h - the few kernel types Tapio's programs touch, as CO-RE
 * declarations.
 *
 * This replaces a generated vmlinux.h (about 135,000 lines) with the fields
 * we actually read. Every struct is marked preserve_access_index, so libbpf
 * relocates each field access against the running kernel's BTF: the layout
 * below only has to name the fields, not reproduce the kernel's offsets, and
 * it is the same for every architecture. A field missing on a kernel makes
 * the program fail to load there with a clear CO-RE error, never read
 * garbage.
 *
 * Add a field here only when a program reads it.
 */
#ifndef TAPIO_KERNEL_H
#define TAPIO_KERNEL_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0

/* From uapi/linux/bpf.h: the constants the programs use. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_RING_SIZE = 1,
};
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_MMAPABLE (1U << 10)

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define ETIMEDOUT 110
#define E2BIG 7
#define ENOMEM 12
#define EEXIST 17

/* TCP states (include/net/tcp_states.h) */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_FIN_WAIT1 = 4,
	TCP_FIN_WAIT2 = 5,
	TCP_TIME_WAIT = 6,
	TCP_CLOSE = 7,
	TCP_CLOSE_WAIT = 8,
	TCP_LAST_ACK = 9,
	TCP_LISTEN = 10,
	TCP_CLOSING = 11,
	TCP_NEW_SYN_RECV = 12,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

/* owned != 0: a task holds the socket (lock_sock); the kernel's own
 * softirq and timer paths run with it 0. */
typedef struct {
	int owned;
} socket_lock_t;

struct sock {
	struct sock_common __sk_common;
	socket_lock_t sk_lock;
	int sk_err;
	u16 sk_protocol;
};

/* inet_sport stays valid through TCP_CLOSE; skc_num is cleared when the
 * port is released. */
struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

/* What bpf_skc_to_tcp_sock() returns: the socket as a typed pointer that
 * reaches inet_sport with a direct load. */
struct inet_connection_sock {
	struct inet_sock icsk_inet;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 segs_in; /* segments received (tcp_segs_in), 4.6+ */
};

/* The control block where TCP keeps a segment's metadata (tcp_skb_cb). */
struct sk_buff {
	char cb[48];
};

struct tcp_skb_cb {
	__u32 seq;
	__u32 end_seq;
	union {
		__u32 tcp_tw_isn;
		struct {
			u16 tcp_gso_segs; /* segments in this skb: tcp_skb_pcount() */
			u16 tcp_gso_size;
		};
	};
};

/* Used only to ask, through CO-RE, whether this kernel's tcp_retransmit_skb
 * tracepoint carries the transmit result (6.x+ fires it for failed
 * attempts too, with err != 0). */
struct trace_event_raw_tcp_retransmit_skb {
	int err;
};

struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

struct css_set {
	struct cgroup_subsys_state *subsys[14];
	struct cgroup *dfl_cgrp;
};

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags;
	short oom_score_adj;
};

/* Index of the memory controller in css_set.subsys[]; the value is
 * relocated against the kernel's BTF (it depends on its config). */
enum cgroup_subsys_id {
	memory_cgrp_id = 4,
};

/* mm counters (enum in include/linux/mm_types_task.h) */
enum {
	MM_FILEPAGES = 0,
	MM_ANONPAGES = 1,
	MM_SWAPENTS = 2,
	MM_SHMEMPAGES = 3,
};

#define SIGNAL_GROUP_EXIT 0x00000004

struct percpu_counter {
	s64 count;
};

typedef struct {
	long counter;
} atomic_long_t;

/* Before 6.2, mm->rss_stat was one struct of atomic counters. */
struct mm_rss_stat___atomic {
	atomic_long_t count[4];
};

struct mm_struct___atomic {
	struct mm_rss_stat___atomic rss_stat;
};

struct mm_struct {
	unsigned long total_vm;
	struct percpu_counter rss_stat[4];
};

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	char comm[16];
	struct task_struct *group_leader;
	struct task_struct *real_parent;
	struct signal_struct *signal;
	struct mm_struct *mm;
	struct css_set *cgroups;
};

struct linux_binprm {
	const char *filename;
};

struct gendisk {
	int major;
	int first_minor;
};

struct request_queue {
	struct gendisk *disk;
};

enum mq_rq_state {
	MQ_RQ_IDLE = 0,
	MQ_RQ_IN_FLIGHT = 1,
	MQ_RQ_COMPLETE = 2,
};

struct request {
	struct request_queue *q;
	struct gendisk *rq_disk; /* before 5.15; later q->disk */
	u64 start_time_ns;
	enum mq_rq_state state;
	unsigned int cmd_flags;
	unsigned int __data_len;
	__u64 __sector;
};

#pragma clang attribute pop

#endif /* TAPIO_KERNEL_H */
