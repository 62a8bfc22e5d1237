/* mr_dns.h — DNS capture: its maps and the helpers that the connect, sendmsg, recvmsg, getpeername
 * and sock_release hooks call (docs/dns-design.md). connect4/6 and getpeername4/6 call in here first;
 * a call that is not a captured query goes on exactly as before. */
#ifndef MR_DNS_H
#define MR_DNS_H

#include "mr_common.h"

#define SOCK_DGRAM 2
#define MR_DNS_NOT_MINE (-1) /* mr_dns_connect: not a captured query, the caller decides */

/* Per policy slot: the DNS proxy and what is captured. A hash for the same reason as mr_policies: an
 * update replaces the whole value at once. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mr_dns_policy);
	__uint(max_entries, MR_MAX_POLICIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_dns_pol SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_dns_ns_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_dns_ns SEC(".maps") __weak;

/* Captured sockets, by socket cookie; cgroup/sock_release deletes an entry when its socket is closed.
 * A hash (not socket storage) so that user space can pin it, re-adopt it across restarts and count it
 * (status: captured sockets open now). Preallocated: a capture never fails for want of memory, only
 * when this many captured sockets are open at once (then the call fails: fail closed). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct mr_dns_sock);
	__uint(max_entries, 16384);
} mr_dns_socks SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mr_dns_stats);
	__uint(max_entries, MR_MAX_POLICIES);
} mr_dns_stats SEC(".maps") __weak;

#define MR_DNS_COUNT(slot, field)                                                  \
	do {                                                                       \
		__u32 __k = (slot);                                                \
		struct mr_dns_stats *__s = bpf_map_lookup_elem(&mr_dns_stats, &__k); \
		if (__s)                                                           \
			__sync_fetch_and_add(&__s->field, 1);                      \
		MR_TRACE_NOTE(MR_TRACE_T_DNS, __k,                                 \
			      __builtin_offsetof(struct mr_dns_stats, field) / sizeof(__u64)); \
	} while (0)

static __always_inline int mr_dns_port(__u32 user_port)
{
	return (__be16)user_port == bpf_htons(53);
}

/* Whether a port-53 query to d on socket sk by the calling task is captured; sets *slot and *pol when
 * it is. TCP without MR_DNS_F_TCP is not decided here (nor counted): it follows the outbound decision.
 * The bypass is the outbound decision's: cgroup, mark, uid/gid. */
static __always_inline int mr_dns_decide(const struct bpf_sock *sk, const struct mr_dst *d, int tcp, __u32 *slot,
					 struct mr_dns_policy **pol)
{
	struct mr_cg_entry *cg = mr_task_cgroup();
	if (!cg)
		return 0;
	__u32 s = cg->slot;
	struct mr_dns_policy *p = bpf_map_lookup_elem(&mr_dns_pol, &s);
	if (!p || (tcp && !(p->flags & MR_DNS_F_TCP)))
		return 0;
	if (cg->kind == MR_CG_BYPASS) {
		MR_DNS_COUNT(s, bypass_cgroup);
		return 0;
	}
	int v4 = d->family == AF_INET;
	if (v4 ? !(p->flags & MR_DNS_F_PROXY4) : !(p->flags & MR_DNS_F_PROXY6)) {
		MR_DNS_COUNT(s, bypass_dest);
		return 0;
	}
	/* A query to the proxy itself (one listening on port 53) is already where it would go. */
	if (v4 ? (d->addr[0] == p->proxy4_addr && d->port == p->proxy4_port)
	       : (d->port == p->proxy6_port && mr_eq6(d->addr, p->proxy6_addr))) {
		MR_DNS_COUNT(s, bypass_dest);
		return 0;
	}
	/* The policy's bypass marks, as the outbound decision reads them (a DNS-only policy has its
	 * mr_policies entry too: the marks and flags live there). */
	struct mr_policy *op = bpf_map_lookup_elem(&mr_policies, &s);
	if (op && mr_mark_bypass(sk, op)) {
		MR_DNS_COUNT(s, bypass_mark);
		return 0;
	}
	__u64 ugid = bpf_get_current_uid_gid();
	struct mr_owner_key ok = { .slot = s, .kind = MR_OWNER_UID, .id = (__u32)ugid };
	if (bpf_map_lookup_elem(&mr_owners, &ok)) {
		MR_DNS_COUNT(s, bypass_owner);
		return 0;
	}
	ok.kind = MR_OWNER_GID;
	ok.id = (__u32)(ugid >> 32);
	if (bpf_map_lookup_elem(&mr_owners, &ok)) {
		MR_DNS_COUNT(s, bypass_owner);
		return 0;
	}
	if (!(p->flags & MR_DNS_F_ALL)) {
		struct mr_dns_ns_key nk = { .slot = s, .family = d->family };
		__builtin_memcpy(nk.addr, d->addr, 16);
		if (!bpf_map_lookup_elem(&mr_dns_ns, &nk)) {
			MR_DNS_COUNT(s, bypass_dest);
			return 0;
		}
	}
	*slot = s;
	*pol = p;
	return 1;
}

/* The destination of a sock_addr context: IPv4, IPv6, or v4-mapped (then decided as IPv4). */
static __always_inline void mr_dns_dst(struct bpf_sock_addr *ctx, int v6, struct mr_dst *d, int *mapped)
{
	__builtin_memset(d, 0, sizeof(*d));
	d->port = (__be16)ctx->user_port;
	*mapped = 0;
	if (!v6) {
		d->family = AF_INET;
		d->addr[0] = ctx->user_ip4;
		return;
	}
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	if (mr_is_v4_mapped(a)) {
		*mapped = 1;
		d->family = AF_INET;
		d->addr[0] = a[3];
	} else {
		d->family = AF_INET6;
		__builtin_memcpy(d->addr, a, 16);
	}
}

static __always_inline void mr_dns_ep(struct mr_dns_ep *e, __u8 family, const __u32 addr[4], __be16 port)
{
	__builtin_memset(e, 0, sizeof(*e));
	e->family = family;
	e->port = port;
	if (family == AF_INET)
		__builtin_memcpy(e->addr, addr, 4);
	else
		__builtin_memcpy(e->addr, addr, 16);
}

/* Remembers on the socket's entry that a query to orig went to proxy (and, for a connect, that orig is
 * the socket's peer). 0 when the entry cannot be made: the caller fails the call (fail closed), since a
 * reply that does not seem to come from the nameserver asked would be dropped by the resolver anyway. */
static __always_inline int mr_dns_note(void *ctx, __u32 slot, const struct mr_dst *orig, const struct mr_dns_policy *p,
				       int connect, int tcp)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mr_dns_sock *st = bpf_map_lookup_elem(&mr_dns_socks, &cookie);
	if (!st) {
		struct mr_dns_sock fresh = {};
		bpf_map_update_elem(&mr_dns_socks, &cookie, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&mr_dns_socks, &cookie);
		if (!st) {
			MR_DNS_COUNT(slot, err_full);
			return 0;
		}
	}
	st->slot = slot;
	if (tcp)
		st->flags |= MR_DNS_S_TCP;
	struct mr_dns_last *l;
	if (orig->family == AF_INET) {
		l = &st->last[0];
		mr_dns_ep(&l->proxy, AF_INET, (const __u32[4]){ p->proxy4_addr }, p->proxy4_port);
		st->flags |= MR_DNS_S_LAST4;
	} else {
		__u32 px[4];
		__builtin_memcpy(px, p->proxy6_addr, 16);
		l = &st->last[1];
		mr_dns_ep(&l->proxy, AF_INET6, px, p->proxy6_port);
		st->flags |= MR_DNS_S_LAST6;
	}
	mr_dns_ep(&l->orig, orig->family, orig->addr, orig->port);
	if (connect) {
		st->conn = l->orig;
		st->flags |= MR_DNS_S_CONNECTED;
	}
	return 1;
}

/* Sends the call to the DNS proxy of the destination's family (v4-mapped stays mapped). */
static __always_inline void mr_dns_rewrite(struct bpf_sock_addr *ctx, int v6, int mapped, const struct mr_dns_policy *p)
{
	if (!v6) {
		ctx->user_ip4 = p->proxy4_addr;
		ctx->user_port = p->proxy4_port;
	} else if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = p->proxy4_addr;
		ctx->user_port = p->proxy4_port;
	} else {
		__u32 px[4];
		__builtin_memcpy(px, p->proxy6_addr, 16);
		ctx->user_ip6[0] = px[0];
		ctx->user_ip6[1] = px[1];
		ctx->user_ip6[2] = px[2];
		ctx->user_ip6[3] = px[3];
		ctx->user_port = p->proxy6_port;
	}
}

/* connect4/6: a UDP connect to a captured nameserver's port 53 (glibc and c-ares connect their UDP
 * sockets), or a TCP one when the policy captures TCP, goes to the DNS proxy. Returns the hook's verdict
 * (1: go on, 0: EPERM) or MR_DNS_NOT_MINE, where the caller goes on as without DNS capture. TCP is not
 * recorded for SO_ORIGINAL_DST: DNS proxies answer by name, never by where the query was going. */
static __always_inline int mr_dns_connect(struct bpf_sock_addr *ctx, int v6)
{
	int udp = ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP;
	int tcp = ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
	struct bpf_sock *sk = ctx->sk;
	if ((!udp && !tcp) || !sk)
		return MR_DNS_NOT_MINE;
	struct mr_dst d;
	int mapped;
	mr_dns_dst(ctx, v6, &d, &mapped);
	__u32 slot = 0;
	struct mr_dns_policy *p = 0;
	if (!mr_dns_port(ctx->user_port) || !mr_dns_decide(sk, &d, tcp, &slot, &p) || !p) {
		/* A UDP socket connected again elsewhere: its peer is no longer the nameserver it asked. */
		if (udp) {
			__u64 cookie = bpf_get_socket_cookie(ctx);
			struct mr_dns_sock *st = bpf_map_lookup_elem(&mr_dns_socks, &cookie);
			if (st)
				st->flags &= ~MR_DNS_S_CONNECTED;
		}
		return MR_DNS_NOT_MINE;
	}
	/* A captured TCP socket is marked in its storage: the sock_release and getpeername hooks, which
	 * run for every TCP socket, look for an entry only on marked ones. Without storage, no capture. */
	if (tcp) {
		struct mr_sk *own = bpf_sk_storage_get(&mr_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!own) {
			MR_DNS_COUNT(slot, err_full);
			return 0;
		}
		own->flags |= MR_SK_DNS;
	}
	if (!mr_dns_note(ctx, slot, &d, p, 1, tcp))
		return 0;
	mr_dns_rewrite(ctx, v6, mapped, p);
	if (tcp)
		MR_DNS_COUNT(slot, tcp_connect);
	else
		MR_DNS_COUNT(slot, udp_connect);
	return 1;
}

/* sendmsg4/6: an unconnected sendto()/sendmsg() to a captured nameserver's port 53. */
static __always_inline int mr_dns_sendmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct bpf_sock *sk = ctx->sk;
	if (!mr_dns_port(ctx->user_port) || ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP || !sk)
		return 1;
	struct mr_dst d;
	int mapped;
	mr_dns_dst(ctx, v6, &d, &mapped);
	__u32 slot = 0;
	struct mr_dns_policy *p = 0;
	if (!mr_dns_decide(sk, &d, 0, &slot, &p) || !p)
		return 1;
	if (!mr_dns_note(ctx, slot, &d, p, 0, 0))
		return 0;
	mr_dns_rewrite(ctx, v6, mapped, p);
	MR_DNS_COUNT(slot, udp_sendmsg);
	return 1;
}

static __always_inline int mr_dns_ep_is(const struct mr_dns_ep *e, const __u32 a[4], __be16 port, int v4)
{
	if (e->port != port)
		return 0;
	if (v4)
		return e->family == AF_INET && a[0] == ((const __u32 *)e->addr)[0];
	return e->family == AF_INET6 && mr_eq6(a, e->addr);
}

/* Writes an endpoint into an IPv6 context field set (v4 as v4-mapped). */
#define MR_DNS_PUT6(ctx, field, e)                                                       \
	do {                                                                             \
		__u32 __a[4];                                                            \
		__builtin_memcpy(__a, (e)->addr, 16);                                    \
		if ((e)->family == AF_INET) {                                            \
			__a[3] = __a[0];                                                 \
			__a[0] = 0;                                                      \
			__a[1] = 0;                                                      \
			__a[2] = bpf_htonl(0x0000ffff);                                  \
		}                                                                        \
		(ctx)->field[0] = __a[0];                                                \
		(ctx)->field[1] = __a[1];                                                \
		(ctx)->field[2] = __a[2];                                                \
		(ctx)->field[3] = __a[3];                                                \
	} while (0)

/* recvmsg4/6: a datagram from the DNS proxy that a captured query went to is shown as coming from the
 * nameserver that query was sent to (resolvers drop replies from any other address). */
static __always_inline void mr_dns_recvmsg(struct bpf_sock_addr *ctx, int v6)
{
	/* The socket cookie helper takes the context's socket itself (always set in these hooks); reading
	 * ctx->sk here too lets clang merge it with the caller's read into a ctx offset the verifier rejects. */
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mr_dns_sock *st = bpf_map_lookup_elem(&mr_dns_socks, &cookie);
	if (!st)
		return;
	struct mr_dst src;
	int mapped;
	mr_dns_dst(ctx, v6, &src, &mapped);
	int v4 = src.family == AF_INET;
	struct mr_dns_last *l = v4 ? &st->last[0] : &st->last[1];
	if (!(st->flags & (v4 ? MR_DNS_S_LAST4 : MR_DNS_S_LAST6)) || !mr_dns_ep_is(&l->proxy, src.addr, src.port, v4))
		return;
	if (!v6) {
		ctx->user_ip4 = ((__u32 *)l->orig.addr)[0];
	} else {
		MR_DNS_PUT6(ctx, user_ip6, &l->orig);
	}
	ctx->user_port = l->orig.port;
	MR_DNS_COUNT(st->slot, replies);
}

/* getpeername4/6: a socket whose connect() was captured shows the nameserver it asked. 1 when answered. */
static __always_inline int mr_dns_getpeername(struct bpf_sock_addr *ctx, int v6)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mr_dns_sock *st = bpf_map_lookup_elem(&mr_dns_socks, &cookie);
	if (!st || !(st->flags & MR_DNS_S_CONNECTED))
		return 0;
	if (!v6) {
		if (st->conn.family != AF_INET)
			return 0;
		ctx->user_ip4 = ((__u32 *)st->conn.addr)[0];
	} else {
		MR_DNS_PUT6(ctx, user_ip6, &st->conn);
	}
	ctx->user_port = st->conn.port;
	MR_DNS_COUNT(st->slot, peername);
	return 1;
}

#endif
