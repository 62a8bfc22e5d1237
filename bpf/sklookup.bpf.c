/* sklookup.bpf.c — sk_lookup, attached to each pod's network namespace: a TCP connection arriving for
 * one of the pod's addresses is handed to the proxy's listening socket (no NAT: the proxy's accepted
 * socket has the client as peer and the pod's address and port as local address). */
#include "mr_inbound.h"

/* Reads an address of the lookup into 16 bytes at `dst` (IPv4 in the first word): a key's or a trace
 * event's. Each field is read in its own branch: the verifier refuses a computed offset into the
 * context. */
#define MR_IN_ADDR(ctx, dst, F4, F6)                                           \
	do {                                                                   \
		__u32 *__a = (__u32 *)(dst);                                   \
		if ((ctx)->family == AF_INET) {                                \
			__a[0] = (ctx)->F4;                                    \
		} else {                                                       \
			__a[0] = (ctx)->F6[0];                                 \
			__a[1] = (ctx)->F6[1];                                 \
			__a[2] = (ctx)->F6[2];                                 \
			__a[3] = (ctx)->F6[3];                                 \
		}                                                              \
	} while (0)

static __always_inline int mr_in_loopback(const struct mr_in_addr_key *k)
{
	const __u32 *a = (const __u32 *)k->addr;
	if (k->family == AF_INET)
		return (bpf_ntohl(a[0]) >> 24) == 127;
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

/* Whether the connection comes from inside the pod: from one of its own addresses (or loopback). That
 * is the proxy's own connection to the app (and the app calling itself). Locally generated packets
 * to the pod's address do travel over lo, but sk_lookup's ingress_ifindex names the device that
 * owns the address (the input route of a looped-back packet is its output route, whose rt_iif is
 * that device), so ifindex 1 only catches loopback destinations. A SYN from outside that forges the
 * pod's own address gets its SYN-ACK delivered inside the pod: no handshake can complete. */
static __always_inline int mr_in_from_pod(struct bpf_sk_lookup *ctx, const struct mr_in_addr_key *remote,
					  __u32 slot)
{
	if (ctx->ingress_ifindex == MR_LOOPBACK_IFINDEX || mr_in_loopback(remote))
		return 1;
	struct mr_in_dest *own = bpf_map_lookup_elem(&mr_in_addrs, remote);
	return own && own->slot == slot;
}

/* The counter a lookup's decision incremented, kept for `meshredir trace` (the reason of its event). */
struct mr_in_note {
	__u32 slot;
	__u8 field; /* index among struct mr_in_stats's __u64 fields */
	__u8 set;
};

#define MR_IN_DECIDED(slot_, f)                                                          \
	do {                                                                             \
		MR_IN_COUNT(slot_, f);                                                   \
		n->slot = (slot_);                                                       \
		n->field = __builtin_offsetof(struct mr_in_stats, f) / sizeof(__u64);    \
		n->set = 1;                                                              \
	} while (0)

static __always_inline int mr_sklookup_decide(struct bpf_sk_lookup *ctx, struct mr_in_note *n)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	struct mr_in_addr_key local = { .family = ctx->family };
	MR_IN_ADDR(ctx, local.addr, local_ip4, local_ip6);
	struct mr_in_dest *d = bpf_map_lookup_elem(&mr_in_addrs, &local);
	if (!d)
		return SK_PASS; /* not an address of a pod with inbound interception (e.g. loopback) */
	__u32 slot = d->slot;
	__u32 flags = d->flags;

	struct mr_in_addr_key remote = { .family = ctx->family };
	MR_IN_ADDR(ctx, remote.addr, remote_ip4, remote_ip6);
	if (mr_in_from_pod(ctx, &remote, slot)) {
		MR_IN_DECIDED(slot, bypass_local);
		return SK_PASS;
	}
	if (flags & MR_IN_F_BYPASS_SRCS) {
		struct mr_cidr_key ck = { .prefixlen = 32 + 8 + (ctx->family == AF_INET ? 32 : 128),
					  .slot = bpf_htonl(slot), .family = (__u8)ctx->family };
		__builtin_memcpy(ck.addr, remote.addr, 16);
		__u8 *sa = bpf_map_lookup_elem(&mr_in_srcs, &ck);
		if (sa && *sa == MR_ACT_EXCLUDE) {
			MR_IN_DECIDED(slot, bypass_source);
			return SK_PASS;
		}
	}
	struct mr_port_key pk = { .slot = slot, .port = (__u16)ctx->local_port };
	__u8 *pa = bpf_map_lookup_elem(&mr_in_ports, &pk);
	if ((pa && *pa == MR_ACT_EXCLUDE) || (!pa && (flags & MR_IN_F_INCLUDE_PORTS))) {
		MR_IN_DECIDED(slot, bypass_port);
		return SK_PASS;
	}

	struct mr_in_sock_key sk_key = { .slot = slot, .family = ctx->family };
	struct bpf_sock *sk = bpf_map_lookup_elem(&mr_in_socks, &sk_key);
	if (sk) {
		/* No BPF_SK_LOOKUP_F_NO_REUSEPORT: a proxy with one SO_REUSEPORT listener per worker
		 * (Envoy's default) gets connections spread over its whole group. */
		long err = bpf_sk_assign(ctx, sk, 0);
		bpf_sk_release(sk);
		if (err == 0) {
			MR_IN_DECIDED(slot, intercepted);
			return SK_PASS;
		}
		MR_IN_DECIDED(slot, err_assign);
	}
	/* No proxy to take it (none registered, or its socket closed: the kernel drops a closed socket
	 * from the sockhash). Refusing keeps unproxied traffic from reaching the app. */
	if (flags & MR_IN_F_PASS) {
		MR_IN_DECIDED(slot, no_proxy_passed);
		return SK_PASS;
	}
	MR_IN_DECIDED(slot, no_proxy_refused);
	return SK_DROP;
}

/* `meshredir trace`: one event per counted decision, while a trace runs (bpf/mr_trace.h). The original
 * destination is the pod's address and port; where it went, the proxy's listener (intercepted) or the same. */
static __noinline void mr_sklookup_trace(struct bpf_sk_lookup *ctx, const struct mr_in_note *n, int ret)
{
	__u8 verdict = n->field == __builtin_offsetof(struct mr_in_stats, intercepted) / sizeof(__u64)
			       ? MR_TRACE_V_REDIRECT
		       : ret == SK_DROP ? MR_TRACE_V_REFUSE
					: MR_TRACE_V_PASS;
	struct mr_trace_event *e = mr_trace_noproc(n->slot, MR_TRACE_H_SKLOOKUP, verdict, MR_TRACE_T_INBOUND, n->field);
	if (!e)
		return;
	__u8 family = ctx->family == AF_INET ? AF_INET : AF_INET6;
	e->family = family;
	e->port = bpf_htons((__u16)ctx->local_port);
	e->from_port = ctx->remote_port;
	MR_IN_ADDR(ctx, e->addr, local_ip4, local_ip6);
	MR_IN_ADDR(ctx, e->from_addr, remote_ip4, remote_ip6);
	e->to_family = family;
	e->to_port = e->port;
	__builtin_memcpy(e->to_addr, e->addr, 16);
	struct bpf_sock *sk = ctx->sk;
	if (verdict == MR_TRACE_V_REDIRECT && sk) {
		/* Every field read on its own (MR_SK_BARRIER between the reads): the verifier refuses a socket
		 * pointer the compiler offsets to the array src_ip6 to share one base between its loads. */
#define MR_SK_BARRIER asm volatile("" : "+r"(sk))
		__u32 sfam = sk->family, sport = sk->src_port, s4 = sk->src_ip4;
		MR_SK_BARRIER;
		__u32 s6_0 = sk->src_ip6[0];
		MR_SK_BARRIER;
		__u32 s6_1 = sk->src_ip6[1];
		MR_SK_BARRIER;
		__u32 s6_2 = sk->src_ip6[2];
		MR_SK_BARRIER;
		__u32 s6_3 = sk->src_ip6[3];
#undef MR_SK_BARRIER
		__u32 *to = (__u32 *)e->to_addr;
		e->to_port = bpf_htons((__u16)sport);
		e->to_family = sfam == AF_INET ? AF_INET : AF_INET6;
		to[0] = sfam == AF_INET ? s4 : s6_0;
		to[1] = sfam == AF_INET ? 0 : s6_1;
		to[2] = sfam == AF_INET ? 0 : s6_2;
		to[3] = sfam == AF_INET ? 0 : s6_3;
	}
	mr_trace_submit(e);
}

SEC("sk_lookup")
int mr_sklookup(struct bpf_sk_lookup *ctx)
{
	struct mr_in_note n = {};
	int ret = mr_sklookup_decide(ctx, &n);
	if (n.set)
		mr_sklookup_trace(ctx, &n, ret);
	return ret;
}
