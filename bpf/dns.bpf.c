/* dns.bpf.c — DNS capture's own hooks: unconnected sendto() to the DNS proxy (cgroup/sendmsg4|6),
 * replies shown as from the nameserver asked (cgroup/recvmsg4|6), and the captured socket's entry
 * deleted when it is closed (cgroup/sock_release). connect4/6 and getpeername4/6 call mr_dns.h too. */
#define MR_TRACE_DECISIONS /* bpf/mr_trace.h: unconnected sends to port 53 and relabelled replies are traced */
#include "mr_dns.h"
#include "mr_inwatch.h"

/* Not inlined into the traced hooks below: the verifier refuses the computed ctx pointer the compiler may
 * share between the trace wrapper's reads and these (a static subprogram is verified with v6 known). */
static __noinline int mr_dns_send(struct bpf_sock_addr *ctx, int v6)
{
	return mr_dns_sendmsg(ctx, v6);
}

SEC("cgroup/sendmsg4")
int mr_dns_send4(struct bpf_sock_addr *ctx)
{
	struct mr_trace_run t;
	mr_trace_connect_begin(&t, ctx, 0);
	int ret = mr_dns_send(ctx, 0);
	if (t.ctl)
		mr_trace_connect(&t, ctx, MR_TRACE_H_SENDMSG4, 0, ret);
	return ret;
}

SEC("cgroup/sendmsg6")
int mr_dns_send6(struct bpf_sock_addr *ctx)
{
	struct mr_trace_run t;
	mr_trace_connect_begin(&t, ctx, 1);
	int ret = mr_dns_send(ctx, 1);
	if (t.ctl)
		mr_trace_connect(&t, ctx, MR_TRACE_H_SENDMSG6, 1, ret);
	return ret;
}

static __noinline int mr_dns_recv(struct bpf_sock_addr *ctx, int v6)
{
	mr_dns_recvmsg(ctx, v6);
	return 1;
}

/* recvmsg programs must return 1 (the verifier says so): they can only rewrite the source. Traced: a
 * reply whose source was rewritten (counted in `replies`); other datagrams count nothing and emit nothing. */
SEC("cgroup/recvmsg4")
int mr_dns_recv4(struct bpf_sock_addr *ctx)
{
	struct mr_trace_run t;
	mr_trace_connect_begin(&t, ctx, 0);
	int ret = mr_dns_recv(ctx, 0);
	if (t.ctl)
		mr_trace_connect(&t, ctx, MR_TRACE_H_RECVMSG4, 0, ret);
	return 1;
}

SEC("cgroup/recvmsg6")
int mr_dns_recv6(struct bpf_sock_addr *ctx)
{
	struct mr_trace_run t;
	mr_trace_connect_begin(&t, ctx, 1);
	int ret = mr_dns_recv(ctx, 1);
	if (t.ctl)
		mr_trace_connect(&t, ctx, MR_TRACE_H_RECVMSG6, 1, ret);
	return 1;
}

/* Runs for every inet socket of the subtree as it is closed. A TCP socket has an entry only when its
 * connect was captured, which marked its storage (MR_SK_DNS): the others cost one storage read, not a
 * hash lookup (a cold bucket and the cookie: ~220 ns on every TCP close, 2 to 4 per proxied
 * connection). Socket storage is readable here from Linux 5.12 (BPF_FUNC_check_mtu's release: the
 * verifier drops the branch on older kernels, which look every socket up). A socket with an entry is
 * looked up before the delete: a hash delete takes its bucket's lock even for a key that is absent. */
SEC("cgroup/sock_release")
int mr_dns_release(struct bpf_sock *ctx)
{
	/* Read once: after the inlined watch below, clang would re-read it through a moved ctx pointer,
	 * which the verifier refuses. */
	__u32 proto = ctx->protocol;
	if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
		return 1;
	mr_in_released(ctx); /* the inbound watch shares this hook: one compare for a socket not listening */
	if (proto == IPPROTO_TCP && bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_check_mtu)) {
		struct mr_sk *st = bpf_sk_storage_get(&mr_sk, ctx, 0, 0);
		if (!st || !(st->flags & MR_SK_DNS))
			return 1;
	}
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_lookup_elem(&mr_dns_socks, &cookie))
		bpf_map_delete_elem(&mr_dns_socks, &cookie);
	return 1;
}
