/* inorigdst.bpf.c — cgroup/getsockopt for inbound: SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on a socket
 * accepted from a registered inbound listener answers its local address (sk_lookup delivers without
 * NAT: the local address is the original destination), so a proxy that asks works unchanged. A
 * program of its own beside mr_getsockopt (multi-attach): outbound's records are never touched and it
 * runs only where inbound is in use. Whatever an earlier program or the kernel answered is kept. */
#include "mr_inbound.h"

static __always_inline int mr_in_pass(struct bpf_sockopt *ctx)
{
	if (ctx->optlen > MR_PAGE_SIZE)
		ctx->optlen = 0; /* see getsockopt.bpf.c: past a page, keep the kernel's buffer */
	return 1;
}

SEC("cgroup/getsockopt")
int mr_in_origdst(struct bpf_sockopt *ctx)
{
	if (ctx->optname != SO_ORIGINAL_DST || (ctx->level != SOL_IP && ctx->level != SOL_IPV6))
		return mr_in_pass(ctx);
	if (ctx->retval == 0)
		return mr_in_pass(ctx); /* answered already: outbound's record, or the kernel's NAT */
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->protocol != IPPROTO_TCP || sk->state == BPF_TCP_LISTEN)
		return mr_in_pass(ctx);
	struct mr_in_sk *st = bpf_sk_storage_get(&mr_in_sk, sk, 0, 0);
	if (!st)
		return mr_in_pass(ctx);

	__u32 a[4] = {};
	int v4 = 1;
	if (sk->family == AF_INET) {
		a[0] = sk->src_ip4;
	} else {
		a[0] = sk->src_ip6[0];
		a[1] = sk->src_ip6[1];
		a[2] = sk->src_ip6[2];
		a[3] = sk->src_ip6[3];
		v4 = mr_is_v4_mapped(a);
	}
	__be16 port = bpf_htons((__u16)sk->src_port);
	__u8 *buf = ctx->optval;
	if (ctx->level == SOL_IP) {
		struct sockaddr_in sin = {};
		if (!v4 || buf + sizeof(sin) > (__u8 *)ctx->optval_end)
			return mr_in_pass(ctx);
		sin.sin_family = AF_INET;
		sin.sin_port = port;
		sin.sin_addr.s_addr = sk->family == AF_INET ? a[0] : a[3];
		__builtin_memcpy(buf, &sin, sizeof(sin));
		ctx->optlen = sizeof(sin);
	} else {
		struct sockaddr_in6 sin6 = {};
		if (buf + sizeof(sin6) > (__u8 *)ctx->optval_end)
			return mr_in_pass(ctx);
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = port;
		if (sk->family == AF_INET) {
			sin6.sin6_addr.in6_u.u6_addr32[2] = bpf_htonl(0x0000ffff);
			sin6.sin6_addr.in6_u.u6_addr32[3] = a[0];
		} else {
			__builtin_memcpy(&sin6.sin6_addr, a, 16);
		}
		__builtin_memcpy(buf, &sin6, sizeof(sin6));
		ctx->optlen = sizeof(sin6);
	}
	ctx->retval = 0;
	MR_IN_COUNT(st->slot, origdst_served);
	return 1;
}
