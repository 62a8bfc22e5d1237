/* getpeername.bpf.c — cgroup/getpeername4|6: a redirected application sees its original destination
 * as its peer, as it would under NAT. */
#include "mr_common.h"
#include "mr_dns.h"

SEC("cgroup/getpeername4")
int mr_getpeername4(struct bpf_sock_addr *ctx)
{
	MR_PROF_TASK(MR_HP_GETPEERNAME4, 0);
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	/* A captured DNS socket (bpf/mr_dns.h): a TCP one only if marked (no hash lookup for the others). */
	if ((sk->protocol != IPPROTO_TCP || (st && (st->flags & MR_SK_DNS))) && mr_dns_getpeername(ctx, 0))
		return 1;
	if (!st || !(st->flags & MR_SK_APP) || st->orig.family != AF_INET)
		return 1;
	ctx->user_ip4 = ((__u32 *)st->orig.addr)[0];
	ctx->user_port = st->orig.port;
	return 1;
}

SEC("cgroup/getpeername6")
int mr_getpeername6(struct bpf_sock_addr *ctx)
{
	MR_PROF_TASK(MR_HP_GETPEERNAME6, 0);
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	/* A captured DNS socket (bpf/mr_dns.h): a TCP one only if marked (no hash lookup for the others). */
	if ((sk->protocol != IPPROTO_TCP || (st && (st->flags & MR_SK_DNS))) && mr_dns_getpeername(ctx, 1))
		return 1;
	if (!st || !(st->flags & MR_SK_APP) || st->orig.family != AF_INET6)
		return 1;
	__u32 a[4];
	__builtin_memcpy(a, st->orig.addr, 16);
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = st->orig.port;
	return 1;
}
