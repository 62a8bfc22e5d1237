/* connect4.bpf.c — cgroup/connect4: sends a covered workload's IPv4 TCP connects to its proxy. */
#define MR_TRACE_DECISIONS /* bpf/mr_trace.h: this hook's decisions are traced */
#include "mr_common.h"
#include "mr_dns.h"

static __always_inline int mr_connect4_decide(struct bpf_sock_addr *ctx)
{
	int dns = mr_dns_connect(ctx, 0); /* UDP (and TCP) port 53 to the DNS proxy: bpf/mr_dns.h */
	if (dns != MR_DNS_NOT_MINE)
		return dns;
	/* TCP only: SCTP stream sockets have no record path (sockops is TCP's). An MPTCP socket's connect
	 * runs this hook on its first subflow, a TCP socket: redirected like TCP (see mr_record). */
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP || !ctx->sk)
		return 1;
	struct mr_dst d = { .family = AF_INET, .port = (__be16)ctx->user_port };
	d.addr[0] = ctx->user_ip4;
	__u32 slot = 0;
	struct mr_policy *p = 0;
	int v = mr_decide(ctx->sk, &d, &slot, &p);
	if (v == MR_REFUSE)
		return 0; /* an unclassified pod: fail closed until the agent has decided */
	if (v != MR_REDIRECT || !p) {
		mr_forget(ctx->sk);
		return 1;
	}
	/* Fail closed: without a record the proxy could not learn the destination; a connect from another
	 * netns than the policy's pod, or past the policy's budget of handshakes in flight, is refused. */
	if (!mr_netns_ok(ctx->sk, p, slot) || !mr_room(slot, p) || !mr_record(ctx->sk, AF_INET, d.addr, d.port, slot, p))
		return 0;
	ctx->user_ip4 = p->proxy4_addr;
	ctx->user_port = p->proxy4_port;
	return 1;
}

SEC("cgroup/connect4")
int mr_connect4(struct bpf_sock_addr *ctx)
{
	MR_PROF_START();
	struct mr_trace_run t;
	mr_trace_connect_begin(&t, ctx, 0);
	int ret = mr_connect4_decide(ctx);
	if (t.ctl)
		mr_trace_connect(&t, ctx, MR_TRACE_H_CONNECT4, 0, ret);
	MR_PROF_TASK_TIMED(MR_HP_CONNECT4, 0);
	return ret;
}
