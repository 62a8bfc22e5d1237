/* setsockopt.bpf.c — cgroup/setsockopt: a socket on the fast path refuses an upper-layer protocol.
 * kTLS reads whatever sits in a socket's fast-path queue as if it had already decrypted it, and bytes
 * of the peer (a TLS 1.3 session ticket right after the handshake, say) can be queued there before
 * the application turns kTLS on. setsockopt(TCP_ULP) therefore fails with EPERM on an accelerated
 * socket; TLS libraries then keep TLS in user space. Every other call passes untouched. */
#include "mr_common.h"

SEC("cgroup/setsockopt")
int mr_setsockopt(struct bpf_sockopt *ctx)
{
	MR_PROF_TASK(MR_HP_SETSOCKOPT, ((__u32)ctx->level << 16) | (__u32)ctx->optname);
	if (ctx->level == SOL_TCP && ctx->optname == TCP_ULP && ctx->sk) {
		struct mr_sk *st = bpf_sk_storage_get(&mr_sk, ctx->sk, 0, 0);
		if (st && (st->flags & MR_SK_ACCEL)) {
			MR_COUNT(st->orig.slot, ulp_refused);
			return 0;
		}
	}
	/* Past a page the program sees only part of optval: optlen 0 keeps the caller's buffer. */
	if (ctx->optlen > MR_PAGE_SIZE)
		ctx->optlen = 0;
	return 1;
}
