/* getsockopt.bpf.c — cgroup/getsockopt: answers SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on a proxy's
 * accepted socket from our records, exactly as the kernel's NAT would; every other call, and the same
 * call on a socket that is not the record's policy's proxy, untouched. */
#define MR_TRACE_DECISIONS /* bpf/mr_trace.h: SO_ORIGINAL_DST answers are traced */
#include "mr_common.h"

/* Leaves the call as the kernel answered it. The program sees at most a page of optval: for a longer
 * one, optlen 0 tells the kernel to return its own buffer untouched (kernels before 6.5 otherwise
 * fail such calls with EFAULT — every getsockopt of every socket under the attach point). */
static __always_inline int mr_pass(struct bpf_sockopt *ctx)
{
	if (ctx->optlen > MR_PAGE_SIZE)
		ctx->optlen = 0;
	return 1;
}

/* Not inlined: its ctx accesses must stay fixed-offset, which the compiler may not keep when the trace wrapper
 * reads the same fields (the verifier refuses a computed ctx pointer). */
static __noinline int mr_getsockopt_answer(struct bpf_sockopt *ctx)
{
	MR_PROF_TASK(MR_HP_GETSOCKOPT, ((__u32)ctx->level << 16) | (__u32)ctx->optname);
	if (ctx->optname != SO_ORIGINAL_DST || (ctx->level != SOL_IP && ctx->level != SOL_IPV6))
		goto pass;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->protocol != IPPROTO_TCP)
		goto pass;

	struct mr_orig o;
	struct mr_sk *served = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (served && (served->flags & MR_SK_SERVED)) {
		o = served->orig;
	} else {
		__u32 local[4] = {}, remote[4] = {};
		int v4;
		MR_READ_ADDRS(sk, src_ip4, dst_ip4, src_ip6, dst_ip6, local, remote, v4);
		struct mr_tuple_key k;
		mr_tuple(&k, v4, remote, sk->dst_port, local, bpf_htons((__u16)sk->src_port),
			 bpf_get_netns_cookie(ctx));
		struct mr_orig *rec = bpf_map_lookup_elem(&mr_orig, &k);
		if (!rec) {
			MR_COUNT(0, origdst_unknown);
			goto pass;
		}
		o = *rec;
		/* Only the policy's proxy is given the destination (the claim at the handshake checked the
		 * socket's cgroup; this record is here because that socket had no storage then): here, the
		 * cgroup of the process asking. */
		if ((o.flags & MR_O_CONFLICT) || !mr_task_is_proxy(o.slot)) {
			MR_COUNT(o.slot, origdst_denied);
			goto pass;
		}
		/* Move the record onto the accepted socket: later reads are answered from there, and the
		 * table keeps room for connections still waiting for accept. Without storage it stays in
		 * the table until the application closes. Either way the copy is checked to be this
		 * connection's record (the element may have been reused since the lookup). */
		struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st ? !mr_orig_claim(&k, &o) : !mr_orig_still(&k, rec, &o)) {
			MR_COUNT(0, origdst_unknown);
			goto pass;
		}
		if (st) {
			st->orig = o;
			st->flags |= MR_SK_SERVED;
		}
	}

	__u8 *buf = ctx->optval;
	if (ctx->level == SOL_IP) {
		struct sockaddr_in sin = {};
		if (o.family != AF_INET || buf + sizeof(sin) > (__u8 *)ctx->optval_end)
			goto pass;
		sin.sin_family = AF_INET;
		sin.sin_port = o.port;
		sin.sin_addr.s_addr = ((__u32 *)o.addr)[0];
		__builtin_memcpy(buf, &sin, sizeof(sin));
		ctx->optlen = sizeof(sin);
	} else {
		struct sockaddr_in6 sin6 = {};
		if (buf + sizeof(sin6) > (__u8 *)ctx->optval_end)
			goto pass;
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = o.port;
		if (o.family == AF_INET) {
			sin6.sin6_addr.in6_u.u6_addr32[2] = bpf_htonl(0x0000ffff);
			sin6.sin6_addr.in6_u.u6_addr32[3] = ((__u32 *)o.addr)[0];
		} else {
			__builtin_memcpy(&sin6.sin6_addr, o.addr, 16);
		}
		__builtin_memcpy(buf, &sin6, sizeof(sin6));
		ctx->optlen = sizeof(sin6);
	}
	ctx->retval = 0;
	MR_COUNT(o.slot, origdst_served);
	return 1;
pass:
	/* One exit for every untouched call: the compiler must not share a computed &ctx->optlen
	 * between several (the verifier refuses a modified context pointer). */
	return mr_pass(ctx);
}

SEC("cgroup/getsockopt")
int mr_getsockopt(struct bpf_sockopt *ctx)
{
	struct mr_trace_run t = {};
	if (ctx->optname == SO_ORIGINAL_DST)
		mr_trace_begin(&t);
	int ret = mr_getsockopt_answer(ctx);
	if (t.ctl) {
		__u32 local[4] = {}, remote[4] = {};
		int v4 = 1;
		struct bpf_sock *sk = ctx->sk;
		__be16 port = 0;
		if (sk) {
			MR_READ_ADDRS(sk, src_ip4, dst_ip4, src_ip6, dst_ip6, local, remote, v4);
			port = bpf_htons((__u16)sk->src_port);
		}
		mr_trace_origdst(&t, ctx, v4, local, port);
	}
	return ret;
}
