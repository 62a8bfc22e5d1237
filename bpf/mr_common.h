/* mr_common.h — the maps every hook shares and the inline helpers they use (BPF side only).
 * Maps are declared weak so that the per-hook objects link into one object with one copy each. */
#ifndef MR_COMMON_H
#define MR_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "mr_abi.h"
#include "mr_prof.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80 /* == IP6T_SO_ORIGINAL_DST */
#define SOL_TCP 6
#define TCP_ULP 31
#define MR_PAGE_SIZE 4096
#define MR_SK_USER_DATA_PTRMASK (~7ul) /* sk_user_data carries flag bits (NOCOPY, BPF, PSOCK) */
#define MR_INGRESS_MIN (4u << 20)      /* the smallest bound on a peer's unread fast-path bytes */
/* The fast path's back-off for one-way streams (skmsg.bpf.c): after this many messages in a row that
 * found the peer still holding unread fast-path bytes, the socket takes TCP for MR_STREAM_HOLD_NS, the
 * program skipping its next MR_STREAM_APPLY bytes (bpf_msg_apply_bytes). */
#define MR_STREAM_STREAK 32
#define MR_STREAM_SMALL (32u << 10) /* only messages up to this size count: at 64 KiB the fast path wins */
#define MR_STREAM_HOLD_NS (100ull * 1000 * 1000)
#define MR_STREAM_APPLY (256u << 10)

#include "mr_trace.h" /* MR_COUNT notes the counter it increments for `meshredir trace` */

char LICENSE[] SEC("license") __weak = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct mr_cg_entry);
	__uint(max_entries, 65536);
} mr_cgroups SEC(".maps") __weak;

/* A hash, not an array: an update replaces the whole value at once (the old one is freed after an
 * RCU grace period), so a connect racing a policy edit reads the old or the new policy, never a mix. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mr_policy);
	__uint(max_entries, MR_MAX_POLICIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_policies SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_owner_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
} mr_owners SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_proxy_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
} mr_proxies SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_port_key);
	__type(value, __u8);
	__uint(max_entries, 262144);
} mr_ports SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mr_cidr_key);
	__type(value, __u8);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_cidrs SEC(".maps") __weak;

/* Records of redirected connections whose handshake is in flight: published by sockops as the SYN
 * leaves, moved onto the proxy's accepted socket (mr_sk) when the proxy's kernel completes the
 * handshake, and deleted by the application's close if no proxy socket ever claimed them (a failed
 * handshake; a connect in TCP_REPAIR mode, as `meshredir verify` does). So this table holds only
 * handshakes in flight, whatever the number of open connections. A connect is refused (fail closed)
 * once its policy has pending_max records (a proxy whose accept queue is full drops SYNs, and the
 * connects wait: that pod's budget, never another's), or once the node has mr_gauges[MR_G_LIMIT],
 * because a redirected connection without a record would make a proxy such as HAProxy, whose
 * SO_ORIGINAL_DST read fails, forward the connection to its own address. The table is twice the node's
 * limit: the other half is headroom for connects between the check and the SYN. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_tuple_key);
	__type(value, struct mr_orig);
	__uint(max_entries, 32768);
} mr_orig SEC(".maps") __weak; /* preallocated: a record must not fail for want of memory */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, MR_G_MAX);
} mr_gauges SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mr_pending);
	__uint(max_entries, MR_MAX_POLICIES);
} mr_pending SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__type(key, int);
	__type(value, struct mr_sk);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_sk SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__type(key, int);
	__type(value, struct mr_fast);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_fast SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mr_stats);
	__uint(max_entries, MR_MAX_POLICIES);
} mr_stats SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mr_slot_meta);
	__uint(max_entries, MR_MAX_POLICIES);
} mr_slots SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct mr_tuple_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
} mr_sockhash SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_tuple_key);
	__type(value, struct mr_peer);
	__uint(max_entries, 65536);
} mr_peers SEC(".maps") __weak;

/* Counters are per CPU, but a program in process context can be interrupted on its CPU by one in
 * softirq context that counts the same field: the add is atomic so that no update is lost (a gauge
 * such as accel_open would otherwise keep the error for good). */
#define MR_COUNT(slot, field)                                                  \
	do {                                                                   \
		__u32 __k = (slot);                                            \
		struct mr_stats *__s = bpf_map_lookup_elem(&mr_stats, &__k);  \
		if (__s)                                                       \
			__sync_fetch_and_add(&__s->field, 1);                  \
		MR_TRACE_NOTE(MR_TRACE_T_STATS, __k,                           \
			      __builtin_offsetof(struct mr_stats, field) / sizeof(__u64)); \
	} while (0)

#define MR_DEC(slot, field)                                                    \
	do {                                                                   \
		__u32 __k = (slot);                                            \
		struct mr_stats *__s = bpf_map_lookup_elem(&mr_stats, &__k);  \
		if (__s)                                                       \
			__sync_fetch_and_add(&__s->field, -1);                 \
	} while (0)

static __always_inline int mr_is_v4_mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* Destination as the decision sees it; IPv4 (and v4-mapped) in addr[0..3]. */
struct mr_dst {
	__u8 family;
	__be16 port;
	__u32 addr[4];
};

/* Host-local destinations: 127/8 and ::1, and also 0.0.0.0/8 and ::, which the kernel turns into a
 * connection to the caller's own host only after the connect hook has run. */
static __always_inline int mr_is_loopback(const struct mr_dst *d)
{
	if (d->family == AF_INET) {
		__u32 first = bpf_ntohl(d->addr[0]) >> 24;
		return first == 127 || first == 0;
	}
	return d->addr[0] == 0 && d->addr[1] == 0 && d->addr[2] == 0 &&
	       (d->addr[3] == bpf_htonl(1) || d->addr[3] == 0);
}

static __always_inline int mr_eq6(const __u32 a[4], const __u8 b8[16])
{
	__u32 b[4];
	__builtin_memcpy(b, b8, 16);
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* Finds the entry of the calling task's cgroup, or of its nearest ancestor that has one (DNS capture:
 * UDP sockets, which mr_sock_cgroup cannot reach). */
static __always_inline struct mr_cg_entry *mr_task_cgroup(void)
{
	__u64 self = bpf_get_current_cgroup_id();
	struct mr_cg_entry *e = bpf_map_lookup_elem(&mr_cgroups, &self);
	if (e)
		return e;
	for (int lvl = MR_MAX_CGROUP_DEPTH - 1; lvl >= 0; lvl--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(lvl);
		if (id == 0 || id == self)
			continue;
		e = bpf_map_lookup_elem(&mr_cgroups, &id);
		if (e)
			return e;
	}
	return 0;
}

/* Finds the entry of the socket's cgroup, or of its nearest ancestor that has one: the cgroup the
 * kernel itself chose these programs by (the one the socket was created in: the caller's, normally).
 * Walked up by parent pointers from the socket's cgroup, one lookup per level until the nearest entry,
 * so a container one level below its pod's policy costs two lookups. */
static __always_inline struct mr_cg_entry *mr_sock_cgroup(struct bpf_sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	struct cgroup *cg = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	for (int i = 0; i < MR_MAX_CGROUP_DEPTH; i++) {
		if (!cg)
			return 0;
		__u64 id = cg->kn->id;
		struct mr_cg_entry *e = bpf_map_lookup_elem(&mr_cgroups, &id);
		if (e)
			return e;
		struct cgroup_subsys_state *parent = cg->self.parent;
		if (!parent)
			return 0;
		cg = parent->cgroup;
	}
	return 0;
}

/* Whether the socket's mark (SO_MARK, set before connect) is one of the policy's bypass marks. Read only
 * for a policy that has marks (MR_F_BYPASS_MARKS): the others pay one flag test. The sock_addr context's
 * sk (Linux 5.3) is a struct bpf_sock, whose mark field the verifier lets these programs read. */
static __always_inline int mr_mark_bypass(const struct bpf_sock *sk, const struct mr_policy *p)
{
	if (!(p->flags & MR_F_BYPASS_MARKS) || !sk)
		return 0;
	__u32 mark = sk->mark;
	for (int i = 0; i < MR_MAX_MARKS; i++) {
		if (p->marks[i].mask == 0)
			return 0;
		if ((mark & p->marks[i].mask) == p->marks[i].value)
			return 1;
	}
	return 0;
}

/* Whether the socket was created in a bypass (proxy) cgroup of policy `slot`, or below one. Only such a
 * socket may claim a record of that policy, read it (SO_ORIGINAL_DST) or join its fast path: anybody
 * else with the same tuple (a listener that gave its own netns the proxy's address) gets nothing. An
 * accepted socket is handled in softirq context, where the current task means nothing: the cgroup is
 * the one the socket was created in (sk_cgrp_data; an accepted socket inherits its listener's), walked
 * up like a task's. */
static __always_inline int mr_sock_is_proxy(struct bpf_sock *sk, __u32 slot)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	struct cgroup *cg = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	struct mr_proxy_key k = { .slot = slot };
	for (int i = 0; i < MR_MAX_CGROUP_DEPTH; i++) {
		if (!cg)
			return 0;
		k.cgroup_id = cg->kn->id;
		if (bpf_map_lookup_elem(&mr_proxies, &k))
			return 1;
		struct cgroup_subsys_state *parent = cg->self.parent;
		if (!parent)
			return 0;
		cg = parent->cgroup;
	}
	return 0;
}

/* Whether the calling task is in a bypass (proxy) cgroup of policy `slot`, or below one: the same
 * question as mr_sock_is_proxy, asked in process context (getsockopt programs cannot reach the socket's
 * cgroup), of the process asking. */
static __always_inline int mr_task_is_proxy(__u32 slot)
{
	struct mr_proxy_key k = { .slot = slot, .cgroup_id = bpf_get_current_cgroup_id() };
	if (bpf_map_lookup_elem(&mr_proxies, &k))
		return 1;
	for (int lvl = MR_MAX_CGROUP_DEPTH - 1; lvl >= 0; lvl--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(lvl);
		if (id == 0)
			continue;
		k.cgroup_id = id;
		if (bpf_map_lookup_elem(&mr_proxies, &k))
			return 1;
	}
	return 0;
}

/* Whether a connect of policy `slot` comes from the policy's own pod netns, when the agent knows it
 * (a process may make a netns of its own, give it a victim's address and publish under its tuple). */
static __always_inline int mr_netns_ok(struct bpf_sock *sk, const struct mr_policy *p, __u32 slot)
{
	if (!p->netns_ino)
		return 1;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		struct net *net = tp->inet_conn.icsk_inet.sk.__sk_common.skc_net.net;
		if (net && net->ns.inum == p->netns_ino)
			return 1;
	}
	MR_COUNT(slot, err_netns);
	return 0;
}

enum mr_verdict { MR_PASS = 0, MR_REDIRECT = 1, MR_REFUSE = 2 };

/* Decides whether a connect of socket sk to d is redirected. On MR_REDIRECT, *slot and *pol are set.
 * Counts every bypass under its reason. MR_REFUSE: the nearest entry is a guard (a pod cgroup the agent
 * has not classified yet): the caller fails the connect. */
static __always_inline int mr_decide(struct bpf_sock *sk, const struct mr_dst *d, __u32 *slot,
				     struct mr_policy **pol)
{
	struct mr_cg_entry *cg = mr_sock_cgroup(sk);
	if (!cg)
		return MR_PASS;
	__u32 s = cg->slot;
	if (cg->kind == MR_CG_GUARD) {
		MR_COUNT(0, guard_refused);
		return MR_REFUSE;
	}
	if (cg->kind == MR_CG_PASS)
		return MR_PASS;
	if (cg->kind == MR_CG_BYPASS) {
		MR_COUNT(s, bypass_cgroup);
		return MR_PASS;
	}
	struct mr_policy *p = bpf_map_lookup_elem(&mr_policies, &s);
	if (!p)
		return MR_PASS;

	if (d->family == AF_INET ? !(p->flags & MR_F_PROXY4) : !(p->flags & MR_F_PROXY6)) {
		MR_COUNT(s, bypass_family);
		return MR_PASS;
	}
	/* A workload dialling the proxy explicitly is already where we would send it. */
	if (d->family == AF_INET ? (d->addr[0] == p->proxy4_addr && d->port == p->proxy4_port)
				 : (d->port == p->proxy6_port && mr_eq6(d->addr, p->proxy6_addr))) {
		MR_COUNT(s, bypass_proxy);
		return MR_PASS;
	}

	if (mr_mark_bypass(sk, p)) {
		MR_COUNT(s, bypass_mark);
		return MR_PASS;
	}

	if (p->flags & MR_F_OWNERS) {
		__u64 ugid = bpf_get_current_uid_gid();
		struct mr_owner_key ok = { .slot = s, .kind = MR_OWNER_UID, .id = (__u32)ugid };
		if (bpf_map_lookup_elem(&mr_owners, &ok)) {
			MR_COUNT(s, bypass_owner);
			return MR_PASS;
		}
		ok.kind = MR_OWNER_GID;
		ok.id = (__u32)(ugid >> 32);
		if (bpf_map_lookup_elem(&mr_owners, &ok)) {
			MR_COUNT(s, bypass_owner);
			return MR_PASS;
		}
	}

	if (!(p->flags & MR_F_REDIRECT_LOOPBACK) && mr_is_loopback(d)) {
		MR_COUNT(s, bypass_loopback);
		return MR_PASS;
	}

	if (p->flags & MR_F_PORTS) {
		struct mr_port_key pk = { .slot = s, .port = bpf_ntohs(d->port) };
		__u8 *pa = bpf_map_lookup_elem(&mr_ports, &pk);
		if ((pa && *pa == MR_ACT_EXCLUDE) || (!pa && (p->flags & MR_F_INCLUDE_PORTS))) {
			MR_COUNT(s, bypass_port);
			return MR_PASS;
		}
	}

	if (p->flags & MR_F_CIDRS) {
		struct mr_cidr_key ck = { .prefixlen = 32 + 8 + (d->family == AF_INET ? 32 : 128),
					  .slot = bpf_htonl(s), .family = d->family };
		__builtin_memcpy(ck.addr, d->addr, 16);
		__u8 *ca = bpf_map_lookup_elem(&mr_cidrs, &ck);
		if ((ca && *ca == MR_ACT_EXCLUDE) || (!ca && (p->flags & MR_F_INCLUDE_CIDRS))) {
			MR_COUNT(s, bypass_cidr);
			return MR_PASS;
		}
	}

	*slot = s;
	*pol = p;
	return MR_REDIRECT;
}

static __always_inline __u64 *mr_gauge(__u32 which)
{
	return bpf_map_lookup_elem(&mr_gauges, &which);
}

static __always_inline struct mr_pending *mr_slot_pending(__u32 slot)
{
	return bpf_map_lookup_elem(&mr_pending, &slot);
}

/* Whether a new redirected connection may be recorded: within its policy's budget and the node's
 * limit; counts the refusal when it may not. Signed: a gauge pushed below zero from outside must not
 * read as a full table. */
static __always_inline int mr_room(__u32 slot, const struct mr_policy *p)
{
	struct mr_pending *mine = mr_slot_pending(slot);
	if (mine && p->pending_max && mine->now >= (__s64)p->pending_max) {
		MR_COUNT(slot, err_full);
		return 0;
	}
	__u64 *limit = mr_gauge(MR_G_LIMIT);
	__u64 *pending = mr_gauge(MR_G_PENDING);
	if (!limit || !pending || *limit == 0 || (__s64)*pending < (__s64)*limit)
		return 1;
	MR_COUNT(slot, err_full);
	return 0;
}

static __always_inline void mr_pending_add(__u32 slot, __s64 d)
{
	__u64 *pending = mr_gauge(MR_G_PENDING);
	if (pending)
		__sync_fetch_and_add(pending, d);
	struct mr_pending *mine = mr_slot_pending(slot);
	if (mine)
		__sync_fetch_and_add(&mine->now, d);
}

/* Adds a record (never replaces one: a tuple someone else published is not ours to take over),
 * keeping the node's and the policy's gauges equal to their numbers of records. 0 when added. When
 * another socket's record is there, both are spoiled (MR_O_CONFLICT): the two cannot be told apart
 * (one gave its own netns the other's addresses), and a proxy given neither destination fails the
 * connection instead of sending it where the other one asked. */
static __always_inline int mr_orig_put(const struct mr_tuple_key *k, const struct mr_orig *o)
{
	if (bpf_map_update_elem(&mr_orig, k, o, BPF_NOEXIST) == 0) {
		mr_pending_add(o->slot, 1);
		return 0;
	}
	struct mr_orig *cur = bpf_map_lookup_elem(&mr_orig, k);
	if (cur && cur->cookie != o->cookie) {
		cur->flags |= MR_O_CONFLICT;
		MR_COUNT(o->slot, err_conflict);
		return 1;
	}
	MR_COUNT(o->slot, err_orig);
	return 1;
}

/* Deletes a record of policy `slot`; only the caller that really removed it decrements the gauges. */
static __always_inline void mr_orig_del(const struct mr_tuple_key *k, __u32 slot)
{
	if (bpf_map_delete_elem(&mr_orig, k) == 0)
		mr_pending_add(slot, -1);
}

/* Copies the record under k into *out; 0 when there is none. mr_orig is preallocated, and the kernel
 * reuses a deleted element at once: between the lookup and the copy, another CPU may delete this record
 * (its application closed) and publish another one into the same memory. So a copy is used only once it
 * is known to be the record of k: taken with mr_orig_claim (whose delete finds k only if the element
 * was not reused meanwhile), or, where the record stays, checked with mr_orig_still
 * (test/tools/elemreuse.bpf.c shows the reuse and both checks on the real map type). */
static __always_inline int mr_orig_peek(const struct mr_tuple_key *k, struct mr_orig *out)
{
	struct mr_orig *p = bpf_map_lookup_elem(&mr_orig, k);
	if (!p)
		return 0;
	*out = *p;
	return 1;
}

/* Whether the copy *copy of the element p is still k's record (the key finds the same element with the
 * same application socket's record). */
static __always_inline int mr_orig_still(const struct mr_tuple_key *k, const struct mr_orig *p,
					 const struct mr_orig *copy)
{
	struct mr_orig *again = bpf_map_lookup_elem(&mr_orig, k);
	return again && again == p && again->cookie == copy->cookie;
}

/* Takes the record mr_orig_peek copied into *o out of the table: 1 when the delete found it (then *o is
 * that record's copy: an element reused since the peek would have lost key k), 0 otherwise. */
static __always_inline int mr_orig_claim(const struct mr_tuple_key *k, const struct mr_orig *o)
{
	if (bpf_map_delete_elem(&mr_orig, k))
		return 0;
	mr_pending_add(o->slot, -1);
	return 1;
}

/* A connect that is not redirected: a socket reconnected after connect(AF_UNSPEC) must not keep
 * answering getpeername with the destination of its earlier, redirected connection. */
static __always_inline void mr_forget(struct bpf_sock *sk)
{
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (st)
		st->flags &= ~MR_SK_APP;
}

/* Records the original destination on the socket; 0 when the kernel has no storage for it. */
static __always_inline int mr_record(struct bpf_sock *sk, __u8 family, const __u32 addr[4],
				     __be16 port, __u32 slot, const struct mr_policy *p)
{
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		MR_COUNT(slot, err_storage);
		return 0;
	}
	st->orig.family = family;
	/* The policy's wish, for sockops to confirm when it publishes (no second policy lookup there). */
	st->orig.flags = (p->flags & MR_F_ACCELERATE) ? MR_O_ACCEL : 0;
	st->orig.port = port;
	st->orig.slot = slot;
	__builtin_memcpy(st->orig.addr, addr, 16);
	st->orig.cookie = 0;
	st->flags = MR_SK_APP | (st->flags & MR_SK_DNS); /* DNS: its mr_dns_socks entry is still there */
	/* MPTCP: the hook runs on the first subflow, a TCP socket (which sockops publishes); the
	 * application's getpeername asks the MPTCP socket, so that one answers with the destination too. */
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_skc_to_mptcp_sock)) {
		struct mptcp_sock *msk = bpf_skc_to_mptcp_sock(sk);
		if (msk) {
			struct mr_sk *m = bpf_sk_storage_get(&mr_sk, msk, 0, BPF_SK_STORAGE_GET_F_CREATE);
			if (m) {
				m->orig = st->orig;
				m->flags = MR_SK_APP;
			}
		}
	}
	MR_COUNT(slot, redirected);
	return 1;
}

/* Reads a socket's local and remote addresses into local[4]/remote[4] (zeroed by the caller) and sets
 * v4 (IPv4, or IPv6 socket with v4-mapped addresses, unmapped here). A macro because the contexts
 * name the fields differently; each field is read in its own branch because the verifier rejects
 * a computed offset into the socket context (which is what a ternary on the family compiles to). */
#define MR_READ_ADDRS(ctx, L4, R4, L6, R6, local, remote, v4)                   \
	do {                                                                   \
		v4 = 1;                                                        \
		if ((ctx)->family == AF_INET) {                                \
			local[0] = (ctx)->L4;                                  \
			remote[0] = (ctx)->R4;                                 \
		} else {                                                       \
			local[0] = (ctx)->L6[0];                               \
			local[1] = (ctx)->L6[1];                               \
			local[2] = (ctx)->L6[2];                               \
			local[3] = (ctx)->L6[3];                               \
			remote[0] = (ctx)->R6[0];                              \
			remote[1] = (ctx)->R6[1];                              \
			remote[2] = (ctx)->R6[2];                              \
			remote[3] = (ctx)->R6[3];                              \
			v4 = mr_is_v4_mapped(remote);                          \
			if (v4) {                                              \
				local[0] = local[3];                           \
				remote[0] = remote[3];                         \
				local[1] = local[2] = local[3] = 0;            \
				remote[1] = remote[2] = remote[3] = 0;         \
			}                                                      \
		}                                                              \
	} while (0)

/* Builds the mr_orig (and mr_sockhash) key of a connection from the addresses of one of its sockets. For the
 * application's socket `local` is the application; for the proxy's accepted socket it is the proxy.
 * Addresses are v4 (in [0]) when v4 is set, v4-mapped addresses having been unmapped by the caller. */
static __always_inline void mr_tuple(struct mr_tuple_key *k, int v4, const __u32 app[4],
				     __be16 app_port, const __u32 proxy[4], __be16 proxy_port,
				     __u64 netns_cookie)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = v4 ? AF_INET : AF_INET6;
	__builtin_memcpy(k->saddr, app, 16); /* v4: callers leave [1..3] zero */
	__builtin_memcpy(k->daddr, proxy, 16);
	k->sport = app_port;
	k->dport = proxy_port;
	/* Symmetric in the two ends: the key a socket gives itself (mr_sockhash) and the one its peer
	 * computes for it must agree whichever end is loopback (an application bound to its pod address
	 * talking to a proxy on 127.0.0.1, say). */
	struct mr_dst pd = { .family = k->family }, ad = { .family = k->family };
	__builtin_memcpy(pd.addr, proxy, 16);
	__builtin_memcpy(ad.addr, app, 16);
	k->netns = mr_is_loopback(&pd) || mr_is_loopback(&ad) ? netns_cookie : 0;
}

#endif
