/* mr_prof.h — call counting for the bench's per-hook profile, compiled in only with -DMR_HOOKPROF
 * (build/meshredir-prof.bpf.o; never the object the agent loads by default): each program counts its
 * calls by callback (sockops op, sockopt level/optname) and by the cgroup of the socket it ran for, or
 * of the task, in process context. The bench reads mr_hookprof and names the cgroups (client, proxy,
 * server side). Counting costs time of its own: the bench takes program times from the plain object.
 * sockops, whose one program serves every callback, and connect4/6, which serve the application and
 * the proxy alike, also add each call's run time (bpf_ktime_get_ns around the program's work, the
 * counting excluded) under its key: what each callback costs, on which side, which the run-time
 * statistics (one total per program) cannot tell. */
#ifndef MR_PROF_H
#define MR_PROF_H

enum mr_hp_prog {
	MR_HP_SOCKOPS,
	MR_HP_CONNECT4,
	MR_HP_CONNECT6,
	MR_HP_GETPEERNAME4,
	MR_HP_GETPEERNAME6,
	MR_HP_GETSOCKOPT,
	MR_HP_SETSOCKOPT,
	MR_HP_SKMSG,
};

#ifdef MR_HOOKPROF
struct mr_hp_key {
	__u32 prog;
	__u32 op;
	__u64 cgroup;
};

/* calls, and the nanoseconds they took where the program times them (sockops; 0 elsewhere). */
struct mr_hp_val {
	__u64 calls;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_hp_key);
	__type(value, struct mr_hp_val);
	__uint(max_entries, 4096);
} mr_hookprof SEC(".maps") __weak;

static __always_inline void mr_hp_add(__u32 prog, __u32 op, __u64 cgroup, __u64 ns)
{
	struct mr_hp_key k = { .prog = prog, .op = op, .cgroup = cgroup };
	struct mr_hp_val *v = bpf_map_lookup_elem(&mr_hookprof, &k);
	if (!v) {
		struct mr_hp_val zero = {};
		bpf_map_update_elem(&mr_hookprof, &k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&mr_hookprof, &k);
	}
	if (v) {
		__sync_fetch_and_add(&v->calls, 1);
		if (ns)
			__sync_fetch_and_add(&v->ns, ns);
	}
}

static __always_inline void mr_hp_count(__u32 prog, __u32 op, __u64 cgroup)
{
	mr_hp_add(prog, op, cgroup, 0);
}

/* The cgroup the socket was created in (an accepted socket: its listener's). */
static __always_inline __u64 mr_hp_sk_cgroup(struct bpf_sock *sk)
{
	struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : 0;
	struct cgroup *cg = tp ? tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup : 0;
	return cg ? cg->kn->id : 0;
}

#define MR_PROF_TASK(prog, op) mr_hp_count(prog, op, bpf_get_current_cgroup_id())
/* A process-context program timed as a whole (connect4/6): START at its top, TASK_TIMED at its one exit. */
#define MR_PROF_START() __u64 __mr_hp_t0 = bpf_ktime_get_ns()
#define MR_PROF_TASK_TIMED(prog, op)                                          \
	do {                                                                  \
		__u64 __mr_hp_dt = bpf_ktime_get_ns() - __mr_hp_t0;           \
		mr_hp_add(prog, op, bpf_get_current_cgroup_id(), __mr_hp_dt ?: 1); \
	} while (0)
#define MR_PROF_SK(prog, op, sk) mr_hp_count(prog, op, mr_hp_sk_cgroup(sk))
/* sockops: MR_PROF_START at the top of the program, MR_PROF_SOCKOPS once its work is done (the
 * time between them is added: read before the key, whose socket cgroup costs a lookup). The callbacks of a handshake not yet complete run for a request socket,
 * which has no cgroup of its own: counted under its local port instead (bit 63 set), which the bench
 * knows. */
#define MR_PROF_SOCKOPS(skops)                                                                           \
	do {                                                                                             \
		__u64 __mr_hp_dt = bpf_ktime_get_ns() - __mr_hp_t0;                                      \
		mr_hp_add(MR_HP_SOCKOPS, (skops)->op,                                                    \
			  (skops)->is_fullsock ? mr_hp_sk_cgroup((skops)->sk) : (1ull << 63) | (skops)->local_port, \
			  __mr_hp_dt ?: 1);                                                              \
	} while (0)
#else
#define MR_PROF_TASK(prog, op) \
	do {                   \
	} while (0)
#define MR_PROF_SK(prog, op, sk) \
	do {                     \
	} while (0)
#define MR_PROF_START() \
	do {             \
	} while (0)
#define MR_PROF_TASK_TIMED(prog, op) \
	do {                         \
	} while (0)
#define MR_PROF_SOCKOPS(skops) \
	do {                   \
	} while (0)
#endif

#endif
