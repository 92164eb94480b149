/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Storage observer: slow and failed block requests.
 *
 * block_rq_issue records each request, keyed by its struct request
 * pointer, in a bounded hash; block_rq_complete matches it.
 *  - A key issued again while still in flight is ambiguous: its
 *    completion could belong to either issue, so it is dropped and counted
 *    (ambiguous_inflight_io), never matched by guess.
 *  - The map is a plain hash, not an LRU: an LRU would evict silently,
 *    and a full map must be counted (inflight_map_full), once: the
 *    request's completion is then not also a completion without issue.
 *  - A completion for fewer bytes than remain is partial: the entry stays
 *    and only the final completion reports, once.
 *  - block_rq_requeue hands a request back to the queue: its next issue
 *    is not ambiguous (the issue time of the first one is kept).
 *  - A completion with no recorded issue is counted, not reported: apart
 *    when the request never reached the driver (an empty flush on a device
 *    without a write cache is ended at once) or was in flight at attach;
 *    as completion_without_issue otherwise.
 *
 * pid/comm are not recorded: at issue time the current task is often a
 * kworker or the block layer's plug flush, not the submitter.
 */
#include "common.bpf.h"

TAPIO_KEEP_RECORD_BTF(tapio_storage_event)

#define TAPIO_INFLIGHT_MAX 8192
#define REQ_OP_MASK 0xff
#define REQ_OP_READ 0
#define REQ_OP_WRITE 1
#define REQ_OP_FLUSH 2
#define REQ_OP_DISCARD 3

struct inflight {
	__u64 issue_ns;
	__u64 sector;
	__u32 bytes;
	__u32 remaining;
	__u32 dev_major;
	__u32 dev_minor;
	__u8 op;
	__u8 ambiguous;
	__u8 requeued;
	__u8 _pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_INFLIGHT_MAX);
	__type(key, __u64); /* struct request * */
	__type(value, struct inflight);
} inflight SEC(".maps");

/*
 * Requests whose issue found `inflight` full, already counted as
 * inflight_map_full: their completion must not be counted a second time as
 * a completion without issue. Bounded too; a refusal it cannot remember is
 * left to the completion to count (as completion_without_issue), so every
 * lost request is counted exactly once either way.
 */
#define TAPIO_REFUSED_MAX 1024
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_REFUSED_MAX);
	__type(key, __u64); /* struct request * */
	__type(value, __u8);
} refused SEC(".maps");

/* CLOCK_MONOTONIC (the clock of request.start_time_ns) just after the
 * programs were attached, written by the agent; 0 until then. A completion
 * with no recorded issue whose request started before it was in flight
 * at attach: not a correlation failure, and counted apart. (A value set
 * from user space, not a compare-and-swap here: BPF atomics other than
 * add need 5.12, and 5.10 is supported.) */
__u64 attached_ns = 0;

static __always_inline __u8 op_of(__u32 cmd_flags)
{
	switch (cmd_flags & REQ_OP_MASK) {
	case REQ_OP_READ:
		return TAPIO_OP_READ;
	case REQ_OP_WRITE:
		return TAPIO_OP_WRITE;
	case REQ_OP_FLUSH:
		return TAPIO_OP_FLUSH;
	case REQ_OP_DISCARD:
		return TAPIO_OP_DISCARD;
	default:
		return TAPIO_OP_OTHER;
	}
}

static __always_inline void record_issue(struct request *rq, __u64 key)
{
	struct inflight v = {};
	struct gendisk *disk;
	int err;

	/* The disk hangs off the request before 5.15, off its queue after. */
	if (bpf_core_field_exists(rq->rq_disk))
		disk = rq->rq_disk;
	else
		disk = rq->q->disk;

	v.issue_ns = bpf_ktime_get_boot_ns();
	v.sector = rq->__sector;
	v.bytes = rq->__data_len;
	v.remaining = v.bytes;
	v.op = op_of(rq->cmd_flags);
	if (disk) {
		v.dev_major = disk->major;
		v.dev_minor = disk->first_minor;
	}
	err = tapio_map_update(&inflight, &key, &v, BPF_NOEXIST);
	if (err == -EEXIST) {
		struct inflight *old = bpf_map_lookup_elem(&inflight, &key);

		if (old && old->requeued)
			old->requeued = 0; /* the same request, dispatched again */
		else if (old)
			old->ambiguous = 1;
	} else if (err) {
		__u8 one = 1;

		if (!tapio_map_update(&refused, &key, &one, BPF_ANY))
			tapio_count(TAPIO_CNT_CORR_STATE_FULL);
	} else {
		/* Recorded: a refusal of an earlier dispatch of this request
		 * (requeued, then issued again) no longer stands. Looked up
		 * before it is deleted: a lookup takes no lock, a delete takes
		 * the bucket's, and there is almost never one. */
		if (bpf_map_lookup_elem(&refused, &key))
			bpf_map_delete_elem(&refused, &key);
	}
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(tapio_block_rq_issue, struct request *rq)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg_inline(&snap);
	__u64 key = (__u64)rq;

	if (!cfg || !cfg->storage_enabled)
		return 0;
	record_issue(rq, key);
#ifdef TAPIO_TEST_HOOKS
	/* Test hook (the test-hooks feature only, build.rs): a duplicate key. */
	if (cfg->test_flags & TAPIO_TEST_DOUBLE_ISSUE)
		record_issue(rq, key);
#endif
	return 0;
}

SEC("tp_btf/block_rq_requeue")
int BPF_PROG(tapio_block_rq_requeue, struct request *rq)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg(&snap);
	__u64 key = (__u64)rq;
	struct inflight *e;

	if (!cfg || !cfg->storage_enabled)
		return 0;
	e = bpf_map_lookup_elem(&inflight, &key);
	if (e)
		e->requeued = 1;
	return 0;
}

/*
 * A write with PREFLUSH or FUA runs through the block layer's flush
 * sequence. Its data completion is traced (and reported) like any other;
 * on kernels before the flush rework the sequence then ends the same
 * request a second time, with 0 bytes left (seen on 6.1 with ext4 on
 * virtio-blk). The sequence strips PREFLUSH (and FUA where the device
 * lacks it) from the request, so the mark is what is left: a dispatched
 * write ended with 0 bytes. A write that carries data never completes with
 * 0 bytes, and a data-less flush write is never dispatched itself (its
 * end is counted as not dispatched).
 */
static __always_inline bool flush_sequence_end(struct request *rq, unsigned int nr_bytes)
{
	return !nr_bytes && (rq->cmd_flags & REQ_OP_MASK) == REQ_OP_WRITE;
}

/* Started before the agent attached. A request without a start time (the
 * queue keeps no I/O statistics: start_time_ns is 0) cannot be placed, and
 * is never filed as informational: it stays a completion_without_issue. */
static __always_inline bool in_flight_at_attach(struct request *rq, __u64 attached)
{
	__u64 start = rq->start_time_ns;

	return start && start < attached;
}

static __always_inline int on_complete(struct request *rq, __u8 error, __u8 eflags, unsigned int nr_bytes)
{
	struct tapio_config snap;
	const struct tapio_config *cfg = tapio_cfg_inline(&snap);
	struct tapio_storage_event *ev;
	void *ring;
	struct inflight *e, v;
	__u64 key = (__u64)rq;
	__u64 latency, attached;

	if (!cfg || !cfg->storage_enabled)
		return 0;
	e = bpf_map_lookup_elem(&inflight, &key);
	if (!e) {
		/* One count per request, at its final completion (a partial
		 * one leaves the rest of the request in flight). */
		if (!error && nr_bytes < rq->__data_len)
			return 0;
		if (bpf_map_lookup_elem(&refused, &key)) {
			/* Counted as inflight_map_full at issue. */
			bpf_map_delete_elem(&refused, &key);
			return 0;
		}
		attached = attached_ns;
		if (rq->state == MQ_RQ_IDLE)
			tapio_count(TAPIO_CNT_NOT_DISPATCHED);
		else if (flush_sequence_end(rq, nr_bytes))
			tapio_count(TAPIO_CNT_FLUSH_SEQ_END);
		else if (!attached || in_flight_at_attach(rq, attached))
			tapio_count(TAPIO_CNT_INFLIGHT_AT_ATTACH);
		else
			tapio_count(TAPIO_CNT_CORR_NO_ISSUE);
		return 0;
	}
	if (e->ambiguous) {
		bpf_map_delete_elem(&inflight, &key);
		tapio_count(TAPIO_CNT_CORR_AMBIGUOUS_IO);
		return 0;
	}
	if (!error && nr_bytes < e->remaining) {
		e->remaining -= nr_bytes; /* partial: the final completion reports */
		return 0;
	}
	v = *e;
	bpf_map_delete_elem(&inflight, &key);
	latency = bpf_ktime_get_boot_ns() - v.issue_ns;
	if (!error && latency < cfg->slow_io_threshold_ns)
		return 0;
	ev = tapio_reserve(cfg, sizeof(*ev), error ? TAPIO_EV_STORAGE_IO_ERROR : TAPIO_EV_STORAGE_SLOW_IO, &ring);
	if (!ev)
		return 0;
	ev->sector = v.sector;
	ev->bytes = v.bytes;
	ev->dev_major = v.dev_major;
	ev->dev_minor = v.dev_minor;
	ev->op = v.op;
	ev->error = error;
	ev->flags = eflags;
	ev->latency_ns = latency;
	/* Severity under the config this record is stamped with. */
	if (!error && latency >= cfg->slow_io_critical_ns)
		ev->flags |= TAPIO_F_CRITICAL;
	tapio_submit(cfg, ev, ring);
	return 0;
}

/* block_rq_complete(rq, blk_status_t error, nr_bytes). */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(tapio_block_rq_complete, struct request *rq, u8 error, unsigned int nr_bytes)
{
	return on_complete(rq, error, 0, nr_bytes);
}

/* block_rq_complete(rq, int error, nr_bytes), older kernels: a negative
 * errno. The agent loads one of the two, from the tracepoint's prototype
 * in the kernel's BTF. */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(tapio_block_rq_complete_errno, struct request *rq, int error, unsigned int nr_bytes)
{
	int e = error < 0 ? -error : error;

	return on_complete(rq, e > 255 ? 255 : e, error ? TAPIO_F_ERRNO : 0, nr_bytes);
}
