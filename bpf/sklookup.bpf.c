/* sklookup.bpf.c — sk_lookup, attached to each pod's network namespace: a TCP connection arriving for
 * one of the pod's addresses is handed to the proxy's listening socket (no NAT: the proxy's accepted
 * socket has the client as peer and the pod's address and port as local address). */
#include "mr_inbound.h"

/* Reads an address of the lookup into key form (IPv4 in the first word). Each field is read in its
 * own branch: the verifier refuses a computed offset into the context. */
#define MR_IN_ADDR(ctx, k, F4, F6)                                             \
	do {                                                                   \
		__u32 *__a = (__u32 *)(k)->addr;                               \
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

SEC("sk_lookup")
int mr_sklookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	struct mr_in_addr_key local = { .family = ctx->family };
	MR_IN_ADDR(ctx, &local, local_ip4, local_ip6);
	struct mr_in_dest *d = bpf_map_lookup_elem(&mr_in_addrs, &local);
	if (!d)
		return SK_PASS; /* not an address of a pod with inbound interception (e.g. loopback) */
	__u32 slot = d->slot;
	__u32 flags = d->flags;

	struct mr_in_addr_key remote = { .family = ctx->family };
	MR_IN_ADDR(ctx, &remote, remote_ip4, remote_ip6);
	if (mr_in_from_pod(ctx, &remote, slot)) {
		MR_IN_COUNT(slot, bypass_local);
		return SK_PASS;
	}
	if (flags & MR_IN_F_BYPASS_SRCS) {
		struct mr_cidr_key ck = { .prefixlen = 32 + 8 + (ctx->family == AF_INET ? 32 : 128),
					  .slot = bpf_htonl(slot), .family = (__u8)ctx->family };
		__builtin_memcpy(ck.addr, remote.addr, 16);
		__u8 *sa = bpf_map_lookup_elem(&mr_in_srcs, &ck);
		if (sa && *sa == MR_ACT_EXCLUDE) {
			MR_IN_COUNT(slot, bypass_source);
			return SK_PASS;
		}
	}
	struct mr_port_key pk = { .slot = slot, .port = (__u16)ctx->local_port };
	__u8 *pa = bpf_map_lookup_elem(&mr_in_ports, &pk);
	if ((pa && *pa == MR_ACT_EXCLUDE) || (!pa && (flags & MR_IN_F_INCLUDE_PORTS))) {
		MR_IN_COUNT(slot, bypass_port);
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
			MR_IN_COUNT(slot, intercepted);
			return SK_PASS;
		}
		MR_IN_COUNT(slot, err_assign);
	}
	/* No proxy to take it (none registered, or its socket closed: the kernel drops a closed socket
	 * from the sockhash). Refusing keeps unproxied traffic from reaching the app. */
	if (flags & MR_IN_F_PASS) {
		MR_IN_COUNT(slot, no_proxy_passed);
		return SK_PASS;
	}
	MR_IN_COUNT(slot, no_proxy_refused);
	return SK_DROP;
}
