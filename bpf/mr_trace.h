/* mr_trace.h — `meshredir trace`: the connect and getsockopt programs write one event per decision to
 * mr_trace_ring, only while a tracer holds the lease in mr_trace_ctl (docs/trace.md).
 *
 * The reason of an event is the counter its decision incremented: MR_COUNT / MR_DNS_COUNT note it
 * (MR_TRACE_NOTE) in a per-CPU scratch that the hook's wrapper armed, so the decision code itself is not
 * touched and a new counter is traced under its metric's name with nothing added here. Only the units
 * that define MR_TRACE_DECISIONS before their includes (connect4/6, getsockopt, DNS's sendmsg/recvmsg:
 * process context) note, and only into a run armed by the same task;
 * in every other program MR_TRACE_NOTE is empty, so softirq programs (sockops, sk_msg) that interrupt a
 * traced run cannot overwrite its note. A traced run preempted by another traced run on the same CPU
 * (preemptible kernels) finds its note taken (owner differs) and emits with table 0: reason unknown.
 *
 * Cost when nobody traces: one array lookup (inlined by the verifier) and a test per hook call, and a
 * per-CPU lookup and a test per counted decision. */
#ifndef MR_TRACE_H
#define MR_TRACE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mr_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mr_trace_ctl);
	__uint(max_entries, 1);
} mr_trace_ctl SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mr_trace_cpu);
	__uint(max_entries, 1);
} mr_trace_cpu SEC(".maps") __weak;

/* 256 KiB: about 2,700 events in flight before the tracer reads them (it reads every 100 ms). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} mr_trace_ring SEC(".maps") __weak;

static __always_inline struct mr_trace_cpu *mr_trace_scratch(void)
{
	__u32 z = 0;
	return bpf_map_lookup_elem(&mr_trace_cpu, &z);
}

#ifdef MR_TRACE_DECISIONS
/* Called by the counting macros with the counter's table, slot and field index. */
#define MR_TRACE_NOTE(tbl, slot_, index)                                       \
	do {                                                                   \
		struct mr_trace_cpu *__t = mr_trace_scratch();                 \
		if (__t && __t->armed && __t->owner == bpf_get_current_pid_tgid()) { \
			__t->table = (tbl);                                    \
			__t->field = (index);                                  \
			__t->slot = (slot_);                                   \
		}                                                              \
	} while (0)
#else
#define MR_TRACE_NOTE(tbl, slot_, index) do { } while (0)
#endif

/* A hook's traced run, from its start (mr_trace_begin) to its event (mr_trace_emit). */
struct mr_trace_run {
	struct mr_trace_ctl *ctl; /* null: not traced */
	__u32 addr[4];            /* connect: the destination as asked */
	__be16 port;
	__u8 family;
};

/* Starts a run when a tracer holds a live lease and the caller passes the cheap filters (process,
 * cgroup); arms the note. Returns 0 (and costs one lookup) when nobody traces. */
static __always_inline int mr_trace_begin(struct mr_trace_run *r)
{
	__u32 z = 0;
	r->ctl = 0;
	struct mr_trace_ctl *c = bpf_map_lookup_elem(&mr_trace_ctl, &z);
	if (!c || !c->on)
		return 0;
	if (bpf_ktime_get_ns() > c->expires_ns)
		return 0; /* a tracer that died: its lease lapsed */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((c->filters & MR_TRACE_F_PID) && (__u32)(pid_tgid >> 32) != c->pid)
		return 0;
	if ((c->filters & MR_TRACE_F_CGROUP) &&
	    bpf_get_current_ancestor_cgroup_id(c->cgroup_level) != c->cgroup_id)
		return 0;
	struct mr_trace_cpu *t = mr_trace_scratch();
	if (!t)
		return 0;
	t->armed = 1;
	t->table = 0;
	t->field = 0;
	t->slot = 0;
	t->owner = pid_tgid;
	r->ctl = c;
	return 1;
}

/* Ends a run: takes the note back and, when the decision counted something and the policy filter
 * passes, reserves and fills an event (the caller fills the addresses, then mr_trace_submit). Returns
 * null when there is nothing to write or no room (counted as lost). */
static __always_inline struct mr_trace_event *mr_trace_end(struct mr_trace_run *r, __u8 hook, __u8 verdict)
{
	struct mr_trace_cpu *t = mr_trace_scratch();
	if (!t || !r->ctl)
		return 0;
	t->armed = 0;
	__u8 table = t->table, field = t->field;
	__u32 slot = t->slot;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (t->owner != pid_tgid)
		table = 0; /* another traced run took the note meanwhile: the reason is unknown */
	else if (table == 0)
		return 0; /* nothing counted: a connection no policy covers, or not TCP/DNS */
	if ((r->ctl->filters & MR_TRACE_F_SLOT) && slot != r->ctl->slot)
		return 0;
	struct mr_trace_event *e = bpf_ringbuf_reserve(&mr_trace_ring, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&t->lost, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = pid_tgid >> 32;
	e->slot = slot;
	e->hook = hook;
	e->verdict = verdict;
	e->table = table;
	e->field = field;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

static __always_inline void mr_trace_submit(struct mr_trace_event *e)
{
	struct mr_trace_cpu *t = mr_trace_scratch();
	if (t)
		__sync_fetch_and_add(&t->emitted, 1);
	bpf_ringbuf_submit(e, 0);
}

/* The wrapper of connect4/6 and sendmsg4/6: ctx holds where the connection (or datagram) goes now; r
 * what the application asked. Of recvmsg4/6 (DNS replies): r the datagram's source, ctx the source shown. */
static __always_inline void mr_trace_connect(struct mr_trace_run *r, struct bpf_sock_addr *ctx, __u8 hook, int v6,
					     int ret)
{
	__u32 to[4] = {};
	__u8 to_family;
	if (v6) {
		to[0] = ctx->user_ip6[0];
		to[1] = ctx->user_ip6[1];
		to[2] = ctx->user_ip6[2];
		to[3] = ctx->user_ip6[3];
		to_family = AF_INET6;
	} else {
		to[0] = ctx->user_ip4;
		to_family = AF_INET;
	}
	__be16 to_port = (__be16)ctx->user_port;
	int moved = to_port != r->port || to[0] != r->addr[0] || to[1] != r->addr[1] || to[2] != r->addr[2] ||
		    to[3] != r->addr[3];
	__u8 verdict = ret == 0 ? MR_TRACE_V_REFUSE : moved ? MR_TRACE_V_REDIRECT : MR_TRACE_V_PASS;
	if (hook == MR_TRACE_H_RECVMSG4 || hook == MR_TRACE_H_RECVMSG6)
		verdict = MR_TRACE_V_RELABEL; /* a constant per hook: folded away in the others */
	struct mr_trace_event *e = mr_trace_end(r, hook, verdict);
	if (!e)
		return;
	e->cookie = bpf_get_socket_cookie(ctx);
	e->family = r->family;
	e->port = r->port;
	__builtin_memcpy(e->addr, r->addr, 16);
	e->to_family = to_family;
	e->to_port = to_port;
	__builtin_memcpy(e->to_addr, to, 16);
	mr_trace_submit(e);
}

/* An event of sk_lookup (inbound), which runs for a packet, in softirq, outside any process: no note (its
 * caller passes the counter its decision incremented), no pid, comm, cgroup or cookie. Shown to a trace
 * without a process filter (--pid, --cgroup), with --policy by slot. The caller fills the addresses and
 * submits. Null when nobody traces, the filters say no, or the ring is full (counted as lost). */
static __always_inline struct mr_trace_event *mr_trace_noproc(__u32 slot, __u8 hook, __u8 verdict, __u8 table,
							      __u8 field)
{
	__u32 z = 0;
	struct mr_trace_ctl *c = bpf_map_lookup_elem(&mr_trace_ctl, &z);
	if (!c || !c->on || bpf_ktime_get_ns() > c->expires_ns)
		return 0;
	if ((c->filters & (MR_TRACE_F_PID | MR_TRACE_F_CGROUP)) ||
	    ((c->filters & MR_TRACE_F_SLOT) && slot != c->slot))
		return 0;
	struct mr_trace_event *e = bpf_ringbuf_reserve(&mr_trace_ring, sizeof(*e), 0);
	if (!e) {
		struct mr_trace_cpu *t = mr_trace_scratch();
		if (t)
			__sync_fetch_and_add(&t->lost, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->slot = slot;
	e->hook = hook;
	e->verdict = verdict;
	e->table = table;
	e->field = field;
	return e;
}

/* Starts a connect run, keeping the destination as the application gave it. */
static __always_inline void mr_trace_connect_begin(struct mr_trace_run *r, struct bpf_sock_addr *ctx, int v6)
{
	if (!mr_trace_begin(r))
		return;
	r->port = (__be16)ctx->user_port;
	if (v6) {
		r->family = AF_INET6;
		r->addr[0] = ctx->user_ip6[0];
		r->addr[1] = ctx->user_ip6[1];
		r->addr[2] = ctx->user_ip6[2];
		r->addr[3] = ctx->user_ip6[3];
	} else {
		r->family = AF_INET;
		r->addr[0] = ctx->user_ip4;
		r->addr[1] = r->addr[2] = r->addr[3] = 0;
	}
}

/* The wrapper of getsockopt, for SO_ORIGINAL_DST calls: the original destination as answered (read back
 * from optval), and the proxy socket's own address (read by the caller: local[], v4) as where it went. */
static __always_inline void mr_trace_origdst(struct mr_trace_run *r, struct bpf_sockopt *ctx, int v4,
					     const __u32 local[4], __be16 local_port)
{
	struct mr_trace_cpu *t = mr_trace_scratch();
	__u8 verdict = t && t->table == MR_TRACE_T_STATS &&
				t->field == __builtin_offsetof(struct mr_stats, origdst_served) / sizeof(__u64)
			       ? MR_TRACE_V_ANSWER
			       : MR_TRACE_V_UNKNOWN;
	struct mr_trace_event *e = mr_trace_end(r, MR_TRACE_H_GETSOCKOPT, verdict);
	if (!e)
		return;
	e->to_family = v4 ? AF_INET : AF_INET6;
	e->to_port = local_port;
	__builtin_memcpy(e->to_addr, local, 16);
	/* Each ctx field read once, unconditionally: the verifier refuses a ctx pointer the compiler computed
	 * to share one load between branches. */
	__u8 *b = ctx->optval;
	__u8 *b_end = ctx->optval_end;
	int level = ctx->level;
	if (verdict == MR_TRACE_V_ANSWER) {
		if (level == SOL_IP) {
			if (b + sizeof(struct sockaddr_in) <= b_end) {
				struct sockaddr_in *sin = (void *)b;
				e->family = AF_INET;
				e->port = sin->sin_port;
				((__u32 *)e->addr)[0] = sin->sin_addr.s_addr;
			}
		} else if (b + sizeof(struct sockaddr_in6) <= b_end) {
			struct sockaddr_in6 *sin6 = (void *)b;
			e->family = AF_INET6;
			e->port = sin6->sin6_port;
			__builtin_memcpy(e->addr, &sin6->sin6_addr, 16);
		}
	}
	mr_trace_submit(e);
}

#endif
