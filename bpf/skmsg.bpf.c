/* skmsg.bpf.c — sk_msg on mr_sockhash: a message between an application and its local proxy goes
 * straight to the peer socket's receive queue, skipping the TCP/IP stack (opt-in per policy). */
#include "mr_common.h"

SEC("sk_msg")
int mr_skmsg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st || (st->flags & MR_SK_SLOWPATH))
		return SK_PASS;
	/* A socket with an upper-layer protocol (kTLS, set after it was accelerated) must not have its
	 * plaintext redirected past the TLS layer: it leaves the fast path for good. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->inet_conn.icsk_ulp_ops) {
		st->flags |= MR_SK_SLOWPATH;
		MR_COUNT(st->orig.slot, msg_slow);
		return SK_PASS;
	}

	__u32 local[4] = {}, remote[4] = {};
	int v4;
	MR_READ_ADDRS(msg, local_ip4, remote_ip4, local_ip6, remote_ip6, local, remote, v4);
	/* The peer's key mirrors ours: its local end is our remote end. */
	struct mr_tuple_key peer;
	mr_tuple(&peer, v4, remote, (__be16)(msg->remote_port >> 16), local,
		 bpf_htons((__u16)msg->local_port), 0);
	struct mr_dst rd = { .family = peer.family };
	__builtin_memcpy(rd.addr, remote, 16);
	peer.netns = mr_is_loopback(&rd) ? bpf_get_netns_cookie(msg) : 0;

	if (bpf_msg_redirect_hash(msg, &mr_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		MR_COUNT(st->orig.slot, msg_fast);
		return SK_PASS;
	}
	/* No peer (not inserted, or gone): this message takes TCP, and so will every later one, or a
	 * redirected message could be read before this one. */
	st->flags |= MR_SK_SLOWPATH;
	MR_COUNT(st->orig.slot, msg_slow);
	return SK_PASS;
}
