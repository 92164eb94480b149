/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Network observer: TCP connect outcomes, resets and retransmits.
 *
 * Facts and how they are decided (docs/events.md has the catalogue):
 *  - connection_refused: SYN_SENT -> CLOSE after tcp_receive_reset fired on
 *    that socket while it was in SYN_SENT.
 *  - connection_timeout: SYN_SENT -> CLOSE with no reset seen and
 *    sk_err == ETIMEDOUT (the retransmission timer gave up).
 *  - connection_unreachable: SYN_SENT -> CLOSE with no reset seen and an
 *    ICMP-derived sk_err (host/network unreachable or down,
 *    administratively filtered, ICMP port unreachable, protocol
 *    unreachable): the network, not the peer's TCP, ended the connect. A
 *    local neighbour (ARP/NDP) failure arrives the same way, as a local
 *    ICMP host unreachable; so does a timeout after soft ICMP errors (the
 *    kernel then reports the last ICMP error instead of ETIMEDOUT).
 *    ECONNREFUSED counts only if the socket received no segment: else it
 *    may be a reset whose program run the kernel skipped.
 *  An aborted connect (close() while connecting) is none of these. A
 *  connect the kernel failed with an errno none of these describe, or
 *  whose errno the application read before the close (kernels that wake
 *  the caller before tcp_done), is counted, never guessed.
 *  - connection_reset: tcp_receive_reset on a synchronized connection.
 *  - retransmits: tcp_retransmit_skb aggregated per connection per window.
 *
 * pid/comm/cgroup are captured once, in process context, when connect()
 * moves the socket CLOSE -> SYN_SENT, and carried in `conns`. Nothing is
 * ever read from `current` in softirq or timer context.
 */
/* Its programs read the config only up to the exit codes (excluded). */
#define TAPIO_CONFIG_READ_BYTES __builtin_offsetof(struct tapio_config, ignore_exit_codes)
#include "common.bpf.h"

TAPIO_KEEP_RECORD_BTF(tapio_net_event)

#define TAPIO_CONN_MAX 16384

/* The errnos an ICMP error (or a local neighbour failure) sets on a
 * connecting socket: icmp_err_convert[] and icmpv6_err_convert(). */
#define ENOPROTOOPT 92
#define ENETUNREACH 101
#define ECONNREFUSED 111
#define EHOSTDOWN 112
#define EHOSTUNREACH 113
#define EACCES 13

static __always_inline bool icmp_connect_error(int err)
{
	return err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
	       err == ECONNREFUSED || err == ENOPROTOOPT || err == EACCES;
}

#define CONN_F_OWNER 1u      /* pid/comm/cgroup valid */
#define CONN_F_RESET_SYN 2u  /* reset received while in SYN_SENT */
#define CONN_F_RESET_DONE 4u /* connection_reset already emitted */

struct conn {
	__u64 cgroup_id;
	__u64 span_start_ns;   /* first unreported retransmit */
	__u64 span_last_ns;    /* last unreported retransmit */
	__u64 last_emit_ns;    /* last retransmits event */
	__u32 pid;
	__u32 retrans_pending; /* retransmits not reported yet */
	__u32 syn_retries;
	__u32 flags;
	char comm[TAPIO_COMM_LEN];
};

/*
 * A socket's `struct conn` lives in one of two tables. Both are exact:
 * nothing is ever evicted, an entry is emptied at CLOSE, and it is reset
 * when a socket is born (connect(), or a child created in SYN_RECV), so a
 * socket reusing a freed one's address never inherits its state, even one
 * whose CLOSE was missed. (Per-socket storage would need no capacity, but
 * its allocation doubled this program's cost per connect:
 * docs/architecture.md, "Decisions".)
 *
 * conn_slots, on kernels whose verifier has BPF atomics (5.12+; the loader
 * probes for them and loads the `_slots` programs): a socket born by
 * connect() claims the slot its address hashes to with one compare-and-
 * swap, and gives it back with another at CLOSE. No lock, no allocation:
 * the hash's insert and delete cost about a third of the observer's time
 * per connect (docs/budgets.md). A slot holds one socket at a time; only
 * that socket's own events, which its socket lock serialises, touch the
 * slot's `conn` while it holds it, and a reader uses a slot only when it
 * holds the reader's socket. A socket whose slot is held by another one
 * uses `conns`.
 *
 * conns, a plain hash keyed by the socket's address: every socket on
 * kernels without atomics; with them, a socket whose slot was taken, and
 * state made after birth (a retransmit of an accepted connection). A full
 * map is counted as state_map_full.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_CONN_MAX);
	__type(key, __u64); /* struct sock * */
	__type(value, struct conn);
} conns SEC(".maps");

#define TAPIO_CONN_SLOT_BITS 14 /* 16,384 slots; 1 when not used (loader) */

struct conn_slot {
	__u64 sk; /* struct sock * holding the slot; 0 when free */
	struct conn c;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1u << TAPIO_CONN_SLOT_BITS);
	__type(key, __u32);
	__type(value, struct conn_slot);
} conn_slots SEC(".maps");

/* A per-CPU word that turns sk's address into a number (below). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sk_scratch SEC(".maps");

/*
 * sk's address as a number, or 0. The verifier allows no arithmetic on a
 * socket pointer, but a pointer stored into a map reads back as a plain
 * number. A program that interrupts this one on the same CPU may store
 * its own socket in between: then the two differ, and it tries again.
 * Three times interrupted (never seen), 0 says "no slot": the socket's
 * state is then looked for in the hash only.
 */
static __always_inline __u64 sk_addr_once(__u64 *w, const struct sock *sk)
{
	__u64 v;

	*(volatile __u64 *)w = (__u64)sk;
	/* In assembly: compiled from C, the compiler would reuse the pointer
	 * for the number once it knows the two are equal. */
	asm volatile("%[v] = *(u64 *)(%[w] + 0)\n"
		     "if %[v] == %[p] goto +1\n"
		     "%[v] = 0\n"
		     : [v] "=&r"(v)
		     : [w] "r"(w), [p] "r"(sk)
		     : "memory");
	return v;
}

static __always_inline __u64 sk_addr(const struct sock *sk)
{
	__u32 zero = 0;
	__u64 *w = bpf_map_lookup_elem(&sk_scratch, &zero), v;

	if (!w)
		return 0;
	v = sk_addr_once(w, sk);
	if (!v)
		v = sk_addr_once(w, sk);
	if (!v)
		v = sk_addr_once(w, sk);
	return v;
}

/* sk's slot, by a multiplicative hash of its address: the top bits of the
 * product mix every bit of the pointer (slab objects share their low
 * ones). NULL when there is none: the address could not be read, or the
 * map is smaller (the loader shrinks it to 1 entry where the slots are not
 * used, and these programs are not loaded). */
static __always_inline struct conn_slot *slot_of(const struct tapio_config *cfg,
						 const struct sock *sk)
{
	__u64 addr = sk_addr(sk);
	__u32 idx = (addr * 0x9E3779B97F4A7C15ull) >> (64 - TAPIO_CONN_SLOT_BITS);

	if (!addr)
		return 0;

#ifdef TAPIO_TEST_HOOKS
	/* Test hook (the test-hooks feature only, build.rs): every socket
	 * in one of two slots, so that most find theirs taken. */
	if (cfg->test_flags & TAPIO_TEST_SLOT_COLLIDE)
		idx &= 1;
#endif
	return bpf_map_lookup_elem(&conn_slots, &idx);
}

/* The slot sk holds, or NULL. */
static __always_inline struct conn_slot *slot_held(const struct tapio_config *cfg,
						   const struct sock *sk)
{
	struct conn_slot *s = slot_of(cfg, sk);

	if (s && *(volatile __u64 *)&s->sk == (__u64)sk)
		return s;
	return 0;
}

/* Frees sk's slot. A compare-and-swap, not a store: it orders every read
 * of the slot before it ahead of the next holder's writes. */
static __always_inline void slot_release(struct conn_slot *s, const struct sock *sk)
{
	__sync_val_compare_and_swap(&s->sk, (__u64)sk, 0);
}

/* sk's state and, in *slot, the slot that holds it (NULL: in conns). */
static __always_inline struct conn *conn_find(const struct tapio_config *cfg,
					      const struct sock *sk, bool slots,
					      struct conn_slot **slot)
{
	__u64 key = (__u64)sk;

	*slot = 0;
	if (slots) {
		struct conn_slot *s = slot_held(cfg, sk);

		if (s) {
			*slot = s;
			return &s->c;
		}
	}
	return bpf_map_lookup_elem(&conns, &key);
}

static __always_inline struct conn *conn_get(const struct tapio_config *cfg,
					     const struct sock *sk, bool slots)
{
	struct conn_slot *slot;

	return conn_find(cfg, sk, slots, &slot);
}

/* Sets sk's entry to `init`, replacing any; a full map is counted. No
 * lookup after it: a caller that needs the entry uses conn_put. */
static __always_inline void conn_set(const struct tapio_config *cfg, const struct sock *sk,
				     const struct conn *init, bool slots)
{
	__u64 key = (__u64)sk;

	if (slots) {
		struct conn_slot *s = slot_of(cfg, sk);

		if (s) {
			/* Held by sk already: left by a freed socket at this
			 * address, whose CLOSE was missed; sk may reuse it. */
			__u64 held = *(volatile __u64 *)&s->sk;

			if (held == key ||
			    (held == 0 && __sync_val_compare_and_swap(&s->sk, 0, key) == 0)) {
				s->c = *init;
				return;
			}
		}
	}
	if (tapio_map_update(&conns, &key, init, BPF_ANY))
		tapio_count(TAPIO_CNT_CORR_STATE_FULL);
}

/* sk's entry, created as `init` in conns when it has none; NULL when no
 * entry could be made: counted. */
static __always_inline struct conn *conn_put(const struct sock *sk, const struct conn *init)
{
	__u64 key = (__u64)sk;
	struct conn *c;

	tapio_map_update(&conns, &key, init, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&conns, &key);
	if (!c)
		tapio_count(TAPIO_CNT_CORR_STATE_FULL);
	return c;
}

static __always_inline void conns_delete(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&conns, &key);
}

/* Drops whatever state sk has, in either table. */
static __always_inline void conn_forget(const struct tapio_config *cfg, const struct sock *sk,
					bool slots)
{
	if (slots) {
		struct conn_slot *s = slot_held(cfg, sk);

		if (s)
			slot_release(s, sk);
	}
	conns_delete(sk);
}

/*
 * Socket fields are loaded directly: every program here is tp_btf, whose
 * socket argument is a typed kernel pointer, and a direct load is far
 * cheaper than a bpf_probe_read_kernel per field (docs/architecture.md).
 * inet_sport lies past struct sock, which the verifier holds the argument
 * to: it is loaded through the tcp_sock that bpf_skc_to_tcp_sock() (5.9+)
 * returns as a typed pointer too, and read with the helper only if that
 * says the socket is no full TCP socket (never seen: the callers are TCP
 * state changes of full sockets).
 */
static __always_inline void fill_tuple(struct tapio_net_event *ev, const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	__be16 sport;

	if (tp)
		sport = tp->inet_conn.icsk_inet.inet_sport;
	else
		sport = BPF_CORE_READ((const struct inet_sock *)sk, inet_sport);
	ev->family = family;
	ev->sport = __builtin_bswap16(sport);
	ev->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	if (family == AF_INET6) {
		__builtin_memcpy(ev->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(ev->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		*(__be32 *)ev->saddr = sk->__sk_common.skc_rcv_saddr;
		*(__be32 *)ev->daddr = sk->__sk_common.skc_daddr;
	}
}

static __always_inline void fill_owner(struct tapio_net_event *ev, const struct conn *c)
{
	if (!c || !(c->flags & CONN_F_OWNER))
		return;
	ev->pid = c->pid;
	ev->cgroup_id = c->cgroup_id;
	ev->flags |= TAPIO_F_OWNER_KNOWN | TAPIO_F_CGROUP_KNOWN;
	__builtin_memcpy(ev->comm, c->comm, TAPIO_COMM_LEN);
}

/*
 * Whether sk has received a TCP segment. tcp_segs_in() counts every
 * segment a full socket receives, before it is processed; an ICMP error is
 * no segment. A connect refused by a reset has received one (the reset);
 * one refused by an ICMP port unreachable, in SYN_SENT, has not. Unknown
 * (not a full TCP socket, never seen here): yes, so the caller counts the
 * outcome instead of naming it.
 */
static __always_inline bool segment_received(const struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	return !tp || tp->segs_in != 0;
}

static __always_inline bool is_tcp(const struct sock *sk)
{
	return sk->sk_protocol == IPPROTO_TCP;
}

/*
 * One record: `what` is the event type, with the TCP state in bits 16-23
 * (a BPF function takes at most five arguments). One BPF subprogram, not
 * inlined at each of its callers in both program variants: inlined, it
 * was most of the object's size. (Inlined in the slots variant's
 * state-change program alone, where a call costs about 20 ns as for
 * tapio_cfg_inline, it saved about 10 ns per connect for 1.6 KB of object:
 * not kept.)
 */
static __attribute__((noinline)) int emit(const struct tapio_config *cfg, const struct sock *sk,
					  const struct conn *c, __u32 what, int err)
{
	__u16 type = what & 0xffff;
	struct tapio_net_event *ev;
	void *ring;

	ev = tapio_reserve(cfg, sizeof(*ev), type, &ring);
	if (!ev)
		return 0;
	fill_tuple(ev, sk);
	fill_owner(ev, c);
	ev->state = (__u8)(what >> 16);
	if (c && (type == TAPIO_EV_NET_CONN_TIMEOUT || type == TAPIO_EV_NET_CONN_UNREACHABLE))
		ev->syn_retries = c->syn_retries;
	if (type == TAPIO_EV_NET_CONN_UNREACHABLE)
		ev->sk_err = (__u32)err;
	if (c && type == TAPIO_EV_NET_RETRANSMITS) {
		ev->retransmits = c->retrans_pending;
		ev->span_ns = c->span_last_ns - c->span_start_ns;
	}
	tapio_submit(cfg, ev, ring);
	return 0;
}

/* emit()'s `what`. */
#define EMIT_WHAT(type, state) ((__u32)(type) | (__u32)(__u8)(state) << 16)

static __always_inline void on_state(const struct sock *sk, int oldstate, int newstate, bool slots)
{
	bool born = newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV;
	const struct tapio_config *cfg;
	struct tapio_config snap;
	struct conn_slot *slot;
	struct conn *c;
	__u32 what = 0;
	int err = 0;

	/* Most transitions matter to no fact: leave before any map. */
	if (!born && newstate != TCP_CLOSE)
		return;
	if (!is_tcp(sk))
		return;
	/* Inlined in the programs most kernels load (the slots'), called in
	 * the others (tapio_cfg_inline). */
	cfg = slots ? tapio_cfg_inline(&snap) : tapio_cfg(&snap);
	if (!cfg)
		return;
	if (!cfg->network_enabled) {
		/* Switched off: no facts, but no state outlives its socket
		 * (this is a birth or a close) either, so nothing seen before
		 * is inherited after it is switched on again. */
		conn_forget(cfg, sk, slots);
		return;
	}

	if (newstate == TCP_SYN_SENT) {
		/* connect(): process context, the caller is the owner. */
		struct conn fresh = {};
		__u64 pid_tgid = bpf_get_current_pid_tgid();

		fresh.pid = pid_tgid >> 32;
		fresh.cgroup_id = bpf_get_current_cgroup_id();
		fresh.flags = CONN_F_OWNER;
		bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		conn_set(cfg, sk, &fresh, slots);
		return;
	}
	if (born) {
		/* A child socket, new in SYN_RECV: whatever a freed socket at
		 * this address left behind is not its state. */
		conn_forget(cfg, sk, slots);
		return;
	}

	/* newstate == TCP_CLOSE: at most one fact, `what` (0: none). */
	c = conn_find(cfg, sk, slots, &slot);
	if (oldstate == TCP_SYN_SENT) {
		bool reset = c && (c->flags & CONN_F_RESET_SYN);

		err = sk->sk_err;
		if (reset) {
			what = TAPIO_EV_NET_CONN_REFUSED;
		} else if (err == ETIMEDOUT) {
			if (!c)
				tapio_count(TAPIO_CNT_CORR_OWNER_MISSING);
			what = TAPIO_EV_NET_CONN_TIMEOUT;
		} else if (err == ECONNREFUSED && (!c || segment_received(sk))) {
			/* Refused by a reset or by an ICMP port unreachable,
			 * and which one is unknown: no state kept (connect()
			 * began before the agent attached, or the map was
			 * full at the reset), or a segment arrived that the
			 * reset program did not mark: a reset whose program
			 * run the kernel skipped, because that program was
			 * already running on this CPU (a softirq over process
			 * context; counted as its recursion miss too).
			 * Counted, never guessed. */
			tapio_count(TAPIO_CNT_CONNECT_ERROR_UNCLASSIFIED);
		} else if (icmp_connect_error(err)) {
			if (!c)
				tapio_count(TAPIO_CNT_CORR_OWNER_MISSING);
			what = TAPIO_EV_NET_CONN_UNREACHABLE;
		} else if (err) {
			/* Ended by the kernel with an errno no event kind
			 * describes (an ICMP parameter problem, a socket
			 * destroyed with ss -K): missing evidence, counted. */
			tapio_count(TAPIO_CNT_CONNECT_ERROR_UNCLASSIFIED);
		} else if (!sk->sk_lock.owned) {
			/* sk_err is 0, yet no task holds the socket: the
			 * kernel closed it from softirq or timer context,
			 * which it does only on an error. Before
			 * tcp_done_with_error() the kernel woke the
			 * application first (tcp_v4_err, tcp_write_err), and
			 * getsockopt(SO_ERROR) clears sk_err without the
			 * socket lock: the application took the errno before
			 * this tracepoint could read it. Outcome unknown. */
			tapio_count(TAPIO_CNT_CONNECT_ERROR_TAKEN);
		}
		/* else: aborted by the application (close or AF_UNSPEC connect
		 * while connecting, both under the socket lock): no fact. */
	} else if (c && c->retrans_pending) {
		/* Final span of retransmits not reported yet. */
		what = TAPIO_EV_NET_RETRANSMITS;
	}
	if (what)
		emit(cfg, sk, c, EMIT_WHAT(what, oldstate), err);
	if (slot)
		slot_release(slot, sk);
	else if (c)
		conns_delete(sk);
}

static __always_inline void on_receive_reset(struct sock *sk, bool slots)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = slots ? tapio_cfg_inline(&snap) : tapio_cfg(&snap);
	__u8 state;
	struct conn *c;

	if (!cfg || !cfg->network_enabled || !is_tcp(sk))
		return;
	state = sk->__sk_common.skc_state;
#ifdef TAPIO_TEST_HOOKS
	/* Test hook: every reset of a connecting socket unseen, as when the
	 * kernel skips this program's run (a recursion miss). */
	if (state == TCP_SYN_SENT && (cfg->test_flags & TAPIO_TEST_RESET_UNSEEN))
		return;
#endif
	c = conn_get(cfg, sk, slots);

	if (state == TCP_SYN_SENT) {
		if (c) {
			c->flags |= CONN_F_RESET_SYN;
		} else {
			/* connect() started before we attached: no owner. */
			struct conn fresh = { .flags = CONN_F_RESET_SYN };

			tapio_count(TAPIO_CNT_CORR_OWNER_MISSING);
			conn_set(cfg, sk, &fresh, slots);
		}
		return;
	}
	if (state == TCP_LISTEN || state == TCP_SYN_RECV || state == TCP_CLOSE ||
	    state == TCP_NEW_SYN_RECV || state == TCP_TIME_WAIT)
		return;
	if (c) {
		if (c->flags & CONN_F_RESET_DONE) {
			/* One reset event per connection: a further one is
			 * folded into it, and counted. */
			tapio_count(TAPIO_CNT_RESET_DEDUP);
			return;
		}
		c->flags |= CONN_F_RESET_DONE;
	}
	emit(cfg, sk, c, EMIT_WHAT(TAPIO_EV_NET_CONN_RESET, state), 0);
}

static __always_inline void on_retransmit(const struct sock *sk, __u32 segs, bool slots)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	__u64 now;
	__u8 state;
	struct conn *c;

	if (!cfg || !cfg->network_enabled || !is_tcp(sk))
		return;
	state = sk->__sk_common.skc_state;
	c = conn_get(cfg, sk, slots);
	if (state == TCP_SYN_SENT) {
		/* SYN retries belong to the connect outcome, not to a span. */
		if (c)
			c->syn_retries++;
		return;
	}
	now = bpf_ktime_get_boot_ns();
	if (!c) {
		/* First retransmit of a connection we hold no state for
		 * (accepted, or older than the agent): track it ownerless. */
		struct conn fresh = {};

		c = conn_put(sk, &fresh);
		if (!c)
			return;
	}
	if (!c->retrans_pending)
		c->span_start_ns = now;
	c->span_last_ns = now;
	c->retrans_pending += segs;
	if (!c->last_emit_ns || now - c->last_emit_ns >= cfg->retransmit_window_ns) {
		emit(cfg, sk, c, EMIT_WHAT(TAPIO_EV_NET_RETRANSMITS, state), 0);
		c->last_emit_ns = now;
		c->retrans_pending = 0;
	}
}

/*
 * Newer kernels also fire tcp_retransmit_skb for attempts that failed
 * locally (err != 0: nothing left the host). Only count what was sent, as
 * older kernels (which fire on success only) do. The branch is resolved
 * at load time; on kernels without the argument it is dead code and never
 * verified.
 */
static __always_inline bool retransmit_failed(unsigned long long *ctx)
{
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb, err))
		return (int)ctx[2] != 0;
	return false;
}

/*
 * The segments one retransmitted skb carries (tcp_skb_pcount(): a GSO skb
 * holds several), as the kernel adds them to tcpi_total_retrans. At least
 * one.
 */
static __always_inline __u32 retransmit_segs(const struct sk_buff *skb)
{
	const struct tcp_skb_cb *cb = (const void *)__builtin_preserve_access_index(&skb->cb);
	__u16 segs = BPF_CORE_READ(cb, tcp_gso_segs);

	return segs ? segs : 1;
}

/*
 * Each program twice: with the owner slots (kernels with BPF atomics) and
 * without. The loader loads one of each pair (crate::prototypes); the
 * other one, never loaded, is never verified.
 */
#define TAPIO_NET_PROGRAMS(suffix, slots)                                                   \
	SEC("tp_btf/inet_sock_set_state")                                                   \
	int BPF_PROG(tapio_inet_sock_set_state##suffix, const struct sock *sk, int oldstate, \
		     int newstate)                                                          \
	{                                                                                   \
		on_state(sk, oldstate, newstate, slots);                                    \
		return 0;                                                                   \
	}                                                                                   \
                                                                                            \
	SEC("tp_btf/tcp_receive_reset")                                                     \
	int BPF_PROG(tapio_tcp_receive_reset##suffix, struct sock *sk)                      \
	{                                                                                   \
		on_receive_reset(sk, slots);                                                \
		return 0;                                                                   \
	}                                                                                   \
                                                                                            \
	SEC("tp_btf/tcp_retransmit_skb")                                                    \
	int BPF_PROG(tapio_tcp_retransmit_skb##suffix, const struct sock *sk,               \
		     const struct sk_buff *skb)                                             \
	{                                                                                   \
		if (retransmit_failed(ctx))                                                 \
			return 0;                                                           \
		on_retransmit(sk, retransmit_segs(skb), slots);                             \
		return 0;                                                                   \
	}

TAPIO_NET_PROGRAMS(, false)
TAPIO_NET_PROGRAMS(_slots, true)
