/* skmsg.bpf.c — sk_msg on mr_sockhash: a message between an application and its local proxy goes
 * straight to the peer socket's receive queue, skipping the TCP/IP stack (opt-in per policy). */
#include "mr_common.h"
#include <bpf/bpf_core_read.h>

/* The fields of the kernel's psock this program reads, relocated at load (CO-RE). */
struct sk_psock___mr {
	__u32 msg_tot_len; /* bytes redirected to the socket and not read yet */
} __attribute__((preserve_access_index));

#define MR_SK_USER_DATA_PTRMASK (~7ul) /* sk_user_data carries flag bits (NOCOPY, BPF, PSOCK) */
#define MR_INGRESS_MIN (4u << 20)      /* the bound when the peer's netns cannot be read */

/* This message goes by TCP, and the later ones too until the peer has read every byte sent that
 * way: a redirected message is read before anything in the peer's TCP queue, so it must not overtake
 * one that went by TCP. */
static __always_inline int mr_slow(struct mr_sk *st)
{
	st->flags |= MR_SK_SLOWPATH;
	MR_COUNT(st->orig.slot, msg_slow);
	return SK_PASS;
}

/* Whether the peer may take `size` more bytes through its fast-path queue: it has no upper-layer
 * protocol (kTLS would hand redirected bytes to the application as if it had decrypted them), and
 * what it has not read yet stays within what TCP would let it buffer (net.ipv4.tcp_rmem's maximum,
 * of the peer's netns) — the fast path has no flow control of its own: past this bound the sender
 * takes TCP, whose window then makes it wait. Returns the peer (a hint, see mr_abi.h) or 0. */
static __always_inline struct tcp_sock *mr_peer_ok(const struct mr_tuple_key *peer, __u32 size)
{
	__u64 *addr = bpf_map_lookup_elem(&mr_peers, peer);
	if (!addr)
		return 0;
	struct tcp_sock *tp = (struct tcp_sock *)*addr;
	if (BPF_CORE_READ(tp, inet_conn.icsk_ulp_ops))
		return 0;
	if (!bpf_core_field_exists(struct sk_psock___mr, msg_tot_len))
		return tp; /* older kernels: no way to see the queue */
	unsigned long ud = (unsigned long)BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_user_data);
	struct sk_psock___mr *ps = (struct sk_psock___mr *)(ud & MR_SK_USER_DATA_PTRMASK);
	if (!ps)
		return 0;
	__u32 queued = BPF_CORE_READ(ps, msg_tot_len);
	int rmem[3] = {};
	struct net *net = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.__sk_common.skc_net.net);
	bpf_core_read(&rmem, sizeof(rmem), &net->ipv4.sysctl_tcp_rmem);
	__u32 limit = rmem[2] > (int)MR_INGRESS_MIN ? (__u32)rmem[2] : MR_INGRESS_MIN;
	return queued + size <= limit ? tp : 0;
}

/* After a detour by TCP: whether every byte this socket sent that way has been acknowledged and read
 * by the peer's application, so that a redirected message can no longer overtake one. */
static __always_inline int mr_drained(struct tcp_sock *own, struct tcp_sock *peer)
{
	if (own->snd_una != own->write_seq)
		return 0;
	return BPF_CORE_READ(peer, copied_seq) == BPF_CORE_READ(peer, rcv_nxt) &&
	       BPF_CORE_READ(peer, inet_conn.icsk_inet.sk.sk_receive_queue.qlen) == 0;
}

SEC("sk_msg")
int mr_skmsg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st)
		return SK_PASS;
	/* A socket with an upper-layer protocol (kTLS, set after it was accelerated) must not have its
	 * plaintext redirected past the TLS layer: it leaves the fast path for good. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->inet_conn.icsk_ulp_ops)
		return mr_slow(st);

	__u32 local[4] = {}, remote[4] = {};
	int v4;
	MR_READ_ADDRS(msg, local_ip4, remote_ip4, local_ip6, remote_ip6, local, remote, v4);
	/* The peer's key mirrors ours: its local end is our remote end. */
	struct mr_tuple_key key;
	mr_tuple(&key, v4, remote, (__be16)(msg->remote_port >> 16), local,
		 bpf_htons((__u16)msg->local_port), 0);
	struct mr_dst rd = { .family = key.family };
	__builtin_memcpy(rd.addr, remote, 16);
	key.netns = mr_is_loopback(&rd) ? bpf_get_netns_cookie(msg) : 0;

	/* No peer (not inserted, or gone), or a peer that must not take this message: TCP. */
	struct tcp_sock *peer = mr_peer_ok(&key, msg->size);
	if (!peer)
		return mr_slow(st);
	if (st->flags & (MR_SK_SLOWPATH | MR_SK_FRESH)) {
		int fresh = st->flags & MR_SK_FRESH;
		st->flags &= ~MR_SK_FRESH;
		if (!mr_drained(tp, peer))
			return mr_slow(st);
		if (!fresh || (st->flags & MR_SK_SLOWPATH))
			MR_COUNT(st->orig.slot, msg_resumed);
		st->flags &= ~MR_SK_SLOWPATH;
	}
	if (bpf_msg_redirect_hash(msg, &mr_sockhash, &key, BPF_F_INGRESS) != SK_PASS)
		return mr_slow(st);
	MR_COUNT(st->orig.slot, msg_fast);
	return SK_PASS;
}
