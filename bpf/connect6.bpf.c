/* connect6.bpf.c — cgroup/connect6: IPv6 TCP connects to the IPv6 proxy; v4-mapped ones as IPv4. */
#define MR_TRACE_DECISIONS /* bpf/mr_trace.h: this hook's decisions are traced */
#include "mr_common.h"
#include "mr_dns.h"

static __always_inline int mr_connect6_decide(struct bpf_sock_addr *ctx)
{
	int dns = mr_dns_connect(ctx, 1); /* UDP (and TCP) port 53 to the DNS proxy: bpf/mr_dns.h */
	if (dns != MR_DNS_NOT_MINE)
		return dns;
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP || !ctx->sk)
		return 1;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	struct mr_dst d = { .port = (__be16)ctx->user_port };
	int mapped = mr_is_v4_mapped(ip6);
	if (mapped) {
		d.family = AF_INET;
		d.addr[0] = ip6[3];
	} else {
		d.family = AF_INET6;
		__builtin_memcpy(d.addr, ip6, 16);
	}
	__u32 slot = 0;
	struct mr_policy *p = 0;
	int v = mr_decide(ctx->sk, &d, &slot, &p);
	if (v == MR_REFUSE)
		return 0; /* an unclassified pod: fail closed until the agent has decided */
	if (v != MR_REDIRECT || !p) {
		mr_forget(ctx->sk);
		return 1;
	}
	/* Recorded as the application gave it (v4-mapped stays mapped for getpeername6). Fail closed. */
	if (!mr_netns_ok(ctx->sk, p, slot) || !mr_room(slot, p) || !mr_record(ctx->sk, AF_INET6, ip6, d.port, slot, p))
		return 0;
	if (mapped) {
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
	return 1;
}

SEC("cgroup/connect6")
int mr_connect6(struct bpf_sock_addr *ctx)
{
	MR_PROF_START();
	struct mr_trace_run t;
	mr_trace_connect_begin(&t, ctx, 1);
	int ret = mr_connect6_decide(ctx);
	if (t.ctl)
		mr_trace_connect(&t, ctx, MR_TRACE_H_CONNECT6, 1, ret);
	MR_PROF_TASK_TIMED(MR_HP_CONNECT6, 0);
	return ret;
}
