/* skmsg.bpf.c — sk_msg on mr_sockhash: a message between an application and its local proxy goes
 * straight to the peer socket's receive queue, skipping the TCP/IP stack (opt-in per policy). */
#include "mr_common.h"
#include <bpf/bpf_core_read.h>

/* The fields of the kernel's psock this program reads, relocated at load (CO-RE). */
struct sk_psock___mr {
	__u32 msg_tot_len; /* bytes redirected to the socket and not read yet */
} __attribute__((preserve_access_index));

/* This message goes by TCP, and the later ones too until the peer has read every byte sent that
 * way: a redirected message is read before anything in the peer's TCP queue, so it must not overtake
 * one that went by TCP. */
static __always_inline int mr_slow(struct mr_sk *st)
{
	st->flags |= MR_SK_SLOWPATH;
	MR_COUNT(st->orig.slot, msg_slow);
	return SK_PASS;
}

/* Whether the peer may take `size` more bytes through its fast-path queue: what it has not read yet
 * stays within what TCP would let it buffer (net.ipv4.tcp_rmem's maximum, of the peer's netns) — the
 * fast path has no flow control of its own: past this bound the sender takes TCP, whose window then
 * makes it wait. (An upper-layer protocol cannot appear on the peer: mr_setsockopt refuses TCP_ULP on
 * accelerated sockets.) One probe read per message. */
static __always_inline int mr_room_at(const struct mr_peer *pe, __u32 size)
{
	if (!bpf_core_field_exists(struct sk_psock___mr, msg_tot_len))
		return 1; /* older kernels: the agent does not apply accelerate there */
	struct sk_psock___mr *ps = (struct sk_psock___mr *)pe->psock;
	__u32 queued = 0;
	bpf_core_read(&queued, sizeof(queued), &ps->msg_tot_len);
	return queued + size <= pe->limit;
}

/* The peer's key and description, cached in our storage at the first message that finds the peer on
 * the fast path (the peer of a connection never changes; if it goes, the redirect fails). */
static __always_inline int mr_find_peer(struct sk_msg_md *msg, struct mr_sk *st)
{
	if (st->flags & MR_SK_PEER)
		return 1;
	__u32 local[4] = {}, remote[4] = {};
	int v4;
	MR_READ_ADDRS(msg, local_ip4, remote_ip4, local_ip6, remote_ip6, local, remote, v4);
	/* The peer's key mirrors ours: its local end is our remote end. mr_tuple decides the netns part
	 * from both ends, as sockops did when the peer inserted itself (an application bound to its pod
	 * address talking to a loopback proxy: only one end is loopback, whichever side asks). */
	struct mr_tuple_key key;
	mr_tuple(&key, v4, remote, (__be16)(msg->remote_port >> 16), local,
		 bpf_htons((__u16)msg->local_port), bpf_get_netns_cookie(msg));
	struct mr_peer *pe = bpf_map_lookup_elem(&mr_peers, &key);
	if (!pe || !pe->psock)
		return 0; /* not on the fast path (yet, or at all) */
	st->peer_key = key;
	st->peer = *pe;
	st->flags |= MR_SK_PEER;
	return 1;
}

/* After a detour by TCP: whether every byte this socket sent that way has been acknowledged and read
 * by the peer's application, so that a redirected message can no longer overtake one. */
static __always_inline int mr_drained(struct tcp_sock *own, const struct mr_peer *pe)
{
	if (own->snd_una != own->write_seq)
		return 0;
	struct tcp_sock *peer = (struct tcp_sock *)pe->sk;
	return BPF_CORE_READ(peer, copied_seq) == BPF_CORE_READ(peer, rcv_nxt) &&
	       BPF_CORE_READ(peer, inet_conn.icsk_inet.sk.sk_receive_queue.qlen) == 0;
}

SEC("sk_msg")
int mr_skmsg(struct sk_msg_md *msg)
{
	MR_PROF_SK(MR_HP_SKMSG, 0, msg->sk);
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
	/* No peer (not inserted, or gone), or a peer that must not take this message: TCP. */
	if (!mr_find_peer(msg, st) || !mr_room_at(&st->peer, msg->size))
		return mr_slow(st);
	if (st->flags & (MR_SK_SLOWPATH | MR_SK_FRESH)) {
		int fresh = st->flags & MR_SK_FRESH;
		st->flags &= ~MR_SK_FRESH;
		if (!mr_drained(tp, &st->peer))
			return mr_slow(st);
		if (!fresh || (st->flags & MR_SK_SLOWPATH))
			MR_COUNT(st->orig.slot, msg_resumed);
		st->flags &= ~MR_SK_SLOWPATH;
	}
	if (bpf_msg_redirect_hash(msg, &mr_sockhash, &st->peer_key, BPF_F_INGRESS) != SK_PASS)
		return mr_slow(st);
	MR_COUNT(st->orig.slot, msg_fast);
	return SK_PASS;
}
