/* skmsg.bpf.c — sk_msg on mr_sockhash: a message between an application and its local proxy goes
 * straight to the peer socket's receive queue, skipping the TCP/IP stack (opt-in per policy). */
#include "mr_fastpath.h"
#include <bpf/bpf_core_read.h>

/* This message goes by TCP, and the later ones too until the peer has read every byte sent that
 * way: a redirected message is read before anything in the peer's TCP queue, so it must not overtake
 * one that went by TCP. */
static __always_inline int mr_slow(struct mr_fast *fp)
{
	fp->flags |= MR_FP_SLOWPATH;
	MR_COUNT(fp->slot, msg_slow);
	return SK_PASS;
}

/* The bytes redirected to the peer that it has not read yet (one probe read per message). */
static __always_inline __u32 mr_queued(const struct mr_peer *pe)
{
	return mr_psock_queued(pe->psock);
}

/* This socket leaves the fast path for good (a one-way stream): every message by TCP from now on, the
 * program seeing one per MR_LEAVE_APPLY bytes, while sockops takes the socket out of the sockhash at an
 * ACK once no byte can be lost (mr_fastpath.h: mr_leave_try). The flag is set with a fully ordered
 * atomic add (mr_add_mb): the peer's program reads it before each redirect, and sockops's later reads
 * (mr_leave_safe, step 3) are ordered after it. */
static __always_inline int mr_leave(struct sk_msg_md *msg, struct mr_fast *fp)
{
	if (!fp->leave)
		mr_add_mb(&fp->leave, 1);
	bpf_msg_apply_bytes(msg, MR_LEAVE_APPLY);
	return mr_slow(fp);
}

/* The peer is leaving: whether this message and every later one take TCP. Not while the peer still
 * holds unread bytes of ours: bytes sent by TCP behind them can be lost to a proxy that takes the short
 * read of those for the end once our FIN has come (mr_fastpath.h: mr_leave_safe). Each call first bumps
 * `hold` (a sequence, fully ordered: mr_add_mb) and only then reads the count: a leaving peer's sockops
 * that read no unread byte and the same sequence before and after knows no send of ours chose it
 * meanwhile (mr_leave_safe, steps 2 and 5). Nothing to wait for once we are quiet: a send that found
 * nothing unread takes TCP for good; one that redirected is counted in the peer's unread bytes. */
static __always_inline int mr_peer_left(struct sk_msg_md *msg, struct mr_fast *fp)
{
	mr_add_mb(&fp->hold, 1);
	if (mr_queued(&fp->peer))
		return 0;
	fp->flags |= MR_FP_PEER_LEFT;
	bpf_msg_apply_bytes(msg, MR_LEAVE_APPLY);
	return 1;
}

/* The peer's key and description, cached in our storage at the first message that finds the peer on
 * the fast path (the peer of a connection never changes; if it goes, the redirect fails). */
static __always_inline int mr_find_peer(struct sk_msg_md *msg, struct mr_fast *fp)
{
	if (fp->flags & MR_FP_PEER)
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
	fp->peer_key = key;
	fp->peer = *pe;
	fp->flags |= MR_FP_PEER;
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

/* A one-way stream that outruns its reader loses on the fast path: each message is queued to the peer
 * on its own and wakes it, where TCP coalesces small writes (autocork, Nagle) and the reader takes many
 * at once. Request/response never sends while the peer still has unread fast-path bytes (it waits for
 * the answer, which the peer sends after reading); a stream does, message after message. Past
 * MR_STREAM_STREAK of those in a row (messages up to MR_STREAM_SMALL), the socket backs off to TCP for
 * at least MR_STREAM_HOLD_NS, and until TCP has drained (the program skipping MR_STREAM_APPLY bytes at a
 * time meanwhile: each message it sees costs ~0.5 µs), then tries the fast path again. It switches at
 * the first message after the streak that finds the peer with nothing unread, never behind unread
 * fast-path bytes: a reader's recv() returns those alone (tcp_bpf_recvmsg), and a proxy that takes such
 * a short read after our FIN for the end loses the TCP bytes behind them (mr_fastpath.h: mr_leave_safe).
 * A stream to a blocked reader stays on the fast path meanwhile, up to the bound on unread bytes.
 * Whether the peer is still reading is the signal (no timer, no cork: a cork would hold a request back
 * until more bytes come); the clock only ages the streak: one whose last queued write is more than
 * MR_STREAM_STALE_NS before that clean write is over (mr_fastpath.h), and starts again from 0. */
static __always_inline int mr_backoff(struct sk_msg_md *msg, struct mr_fast *fp, __u32 queued, __u32 size)
{
	if (size > MR_STREAM_SMALL) {
		fp->streak = 0;
		return 0;
	}
	if (queued) {
		if (fp->streak < MR_STREAM_STREAK && ++fp->streak < MR_STREAM_STREAK)
			return 0;
		/* Past the streak: when its last queued write was (`until` is free: MR_FP_BACKOFF is off). The
		 * clock is read only here, by a socket already MR_STREAM_STREAK queued writes into a stream. */
		fp->until = bpf_ktime_get_ns();
		return 0;
	}
	if (fp->streak < MR_STREAM_STREAK) {
		fp->streak = 0;
		return 0;
	}
	fp->streak = 0;
	/* A streak gone stale (its last queued write more than MR_STREAM_STALE_NS ago: the burst is over,
	 * this is a new one, e.g. the next response of a keep-alive connection) neither backs off nor counts. */
	__u64 now = bpf_ktime_get_ns();
	if (now - fp->until > MR_STREAM_STALE_NS)
		return 0;
	if (++fp->backoffs >= MR_STREAM_LEAVE)
		return 2; /* a stream again: it leaves */
	fp->flags |= MR_FP_BACKOFF;
	fp->until = now + MR_STREAM_HOLD_NS;
	MR_COUNT(fp->slot, msg_backoff);
	bpf_msg_apply_bytes(msg, MR_STREAM_APPLY);
	return 1;
}

SEC("sk_msg")
int mr_skmsg(struct sk_msg_md *msg)
{
	MR_PROF_SK(MR_HP_SKMSG, 0, msg->sk);
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct mr_fast *fp = bpf_sk_storage_get(&mr_fast, sk, 0, 0);
	if (!fp)
		return SK_PASS;
	/* A socket with an upper-layer protocol (kTLS, set after it was accelerated) must not have its
	 * plaintext redirected past the TLS layer: it leaves the fast path for good. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->inet_conn.icsk_ulp_ops)
		return mr_slow(fp);
	/* Leaving the sockhash (a stream), or its peer is: TCP for good. */
	if (fp->leave || (fp->flags & MR_FP_PEER_LEFT)) {
		bpf_msg_apply_bytes(msg, MR_LEAVE_APPLY);
		return mr_slow(fp);
	}
	/* Backed off (a one-way stream): TCP until the hold is over and TCP has drained, the program
	 * looking again only every MR_STREAM_APPLY bytes. Still not drained once the hold is over: the
	 * stream still outruns its reader, and leaves the fast path for good. */
	if (fp->flags & MR_FP_BACKOFF) {
		if (bpf_ktime_get_ns() < fp->until) {
			bpf_msg_apply_bytes(msg, MR_STREAM_APPLY);
			return mr_slow(fp);
		}
		if (!(fp->flags & MR_FP_PEER) || !mr_drained(tp, &fp->peer))
			return mr_leave(msg, fp);
		fp->flags &= ~MR_FP_BACKOFF;
	}
	/* No peer (not inserted, or gone), or a peer that must not take this message: the fast path has
	 * no flow control of its own, so the peer's unread fast-path bytes stay within what TCP would let
	 * it buffer (net.ipv4.tcp_rmem's maximum, of the peer's netns): past that the sender takes TCP,
	 * whose window then makes it wait. (An upper-layer protocol cannot appear on the peer:
	 * mr_setsockopt refuses TCP_ULP on accelerated sockets.) */
	if (!mr_find_peer(msg, fp))
		return mr_slow(fp);
	/* The peer is leaving the sockhash: TCP for good, but only once the peer has read every byte this
	 * socket redirected to it (until then it stays in the sockhash: mr_fastpath.h, mr_leave_safe). */
	if (mr_peer_leaving(&fp->peer) && mr_peer_left(msg, fp))
		return mr_slow(fp);
	__u32 queued = mr_queued(&fp->peer);
	__u32 size = msg->size;
	if (queued + size > fp->peer.limit)
		return mr_slow(fp);
	if (fp->flags & (MR_FP_SLOWPATH | MR_FP_FRESH)) {
		int fresh = fp->flags & MR_FP_FRESH;
		fp->flags &= ~MR_FP_FRESH;
		if (!mr_drained(tp, &fp->peer))
			return mr_slow(fp);
		if (!fresh || (fp->flags & MR_FP_SLOWPATH))
			MR_COUNT(fp->slot, msg_resumed);
		fp->flags &= ~MR_FP_SLOWPATH;
	}
	int back = mr_backoff(msg, fp, queued, size);
	if (back == 2)
		return mr_leave(msg, fp);
	if (back)
		return mr_slow(fp);
	if (bpf_msg_redirect_hash(msg, &mr_sockhash, &fp->peer_key, BPF_F_INGRESS) != SK_PASS)
		return mr_slow(fp);
	MR_COUNT(fp->slot, msg_fast);
	return SK_PASS;
}
