/* mr_fastpath.h — what the fast path's two programs share (sk_msg in skmsg.bpf.c, sockops in
 * sockops.bpf.c): the psock fields they read, and how a socket leaves the sockhash for good without
 * losing a byte (a one-way stream: every socket in a sockhash pays the kernel's sockmap send path, even
 * for a message that goes by TCP; only leaving gives it TCP's own send path back). */
#ifndef MR_FASTPATH_H
#define MR_FASTPATH_H

#include "mr_common.h"

/* The fields of the kernel's psock these programs read, relocated at load (CO-RE). */
struct sk_psock___mr {
	__u32 msg_tot_len; /* bytes redirected to the socket and not read yet */
	refcount_t refcnt; /* one per sockhash link, plus one per send/receive call in progress on it */
} __attribute__((preserve_access_index));

/* A stream leaves the fast path for good at its MR_STREAM_LEAVE-th back-off, or when it is still
 * outrunning its reader once its first hold is over. From then on the sk_msg program is asked to see
 * its messages only every MR_LEAVE_APPLY bytes (all of them go by TCP) until the socket has left. */
#define MR_STREAM_LEAVE 2
#define MR_LEAVE_APPLY 0xffffffffu
/* mr_fast.hold, set by the peer of a leaving socket (skmsg.bpf.c: mr_peer_left). */
#define MR_HOLD_ON 1u   /* it saw the `leave` flag and may still redirect to the leaving socket */
#define MR_HOLD_DONE 2u /* it takes TCP for good: never redirects there again */

/* The bytes redirected to a socket that it has not read yet, by its psock's address (one probe read). */
static __always_inline __u32 mr_psock_queued(__u64 psock)
{
	if (!bpf_core_field_exists(struct sk_psock___mr, msg_tot_len))
		return 0; /* older kernels: the agent does not apply accelerate there */
	struct sk_psock___mr *ps = (struct sk_psock___mr *)psock;
	__u32 queued = 0;
	bpf_core_read(&queued, sizeof(queued), &ps->msg_tot_len);
	return queued;
}

/* The references held on a psock (0 when it cannot be read). */
static __always_inline __u32 mr_psock_refs(__u64 psock)
{
	struct sk_psock___mr *ps = (struct sk_psock___mr *)psock;
	__u32 refs = 0;
	bpf_core_read(&refs, sizeof(refs), &ps->refcnt);
	return refs;
}

/* A peer's mr_fast field, by the address its mr_peers entry gave (0 when there is none). */
#define MR_PEER_FAST_U32(pe, field)                                                                      \
	({                                                                                               \
		__u32 v_ = 0;                                                                            \
		if ((pe)->fast)                                                                          \
			bpf_probe_read_kernel(&v_, sizeof(v_), &((struct mr_fast *)(pe)->fast)->field); \
		v_;                                                                                      \
	})

/* Whether the peer is leaving the sockhash (its mr_fast.leave, by the address its mr_peers entry gave:
 * a stale address reads another object's numbers at worst, and non-zero only makes this side take TCP). */
static __always_inline __u32 mr_peer_leaving(const struct mr_peer *pe)
{
	return MR_PEER_FAST_U32(pe, leave);
}

/* Sockops, at each ACK of a socket whose sk_msg program asked to leave (RTT_CB): takes it out of the
 * sockhash once no byte can be lost by it. The kernel drops a socket's psock when its last reference
 * goes: the messages still queued to it are freed unread, and a peer's redirect that chose it before
 * it left and queues to it afterwards is freed too (or fails the peer's send with EPIPE).
 * The peer must not simply switch to TCP when it sees the flag, either: bytes it sends by TCP behind
 * its own unread fast-path bytes reach a reader whose recv() returns the fast-path bytes alone (a short
 * read: net/ipv4/tcp_bpf.c, tcp_bpf_recvmsg reads the psock's queue or the TCP queue, never both in one
 * call). Once the peer's FIN has come too, a reader that takes a short read after EPOLLRDHUP for the
 * end (HAProxy: raw_sock_to_buf, `ret < try` with FD_POLL_HUP -> read0) closes with the TCP bytes
 * unread: the connection is reset (TCP_ABORT_ON_CLOSE). So the peer, seeing the flag, keeps redirecting
 * while this socket holds unread bytes of its own (and says so: hold = MR_HOLD_ON, before it reads how
 * many), and takes TCP for good at the first message that finds none (hold |= MR_HOLD_DONE).
 * It leaves only when, in this order:
 *  1. its `leave` flag was set (sk_msg, under its socket lock, with an atomic add);
 *  2. the peer's hold is not MR_HOLD_ON alone: it never saw the flag (then it never redirects here
 *     again once it does, unless it finds unread bytes here: step 5), or it is done;
 *  3. the peer's psock holds exactly its one sockhash reference: no send call of the peer is in
 *     progress, so none that chose this socket is still on its way here (a send call holds the
 *     reference from before its program runs until after its redirect has queued the message; the
 *     peer's reference taken with an atomic read-modify-write, before its program reads step 1's flag,
 *     this socket's flag before the read here: one of the two sees the other);
 *  4. its own psock has no unread redirected byte (read after step 3: whatever was queued before is
 *     counted, and nothing is queued after but by a send that reads them first);
 *  5. the peer's hold read again is still 0 when it was 0 at step 2: a send of the peer that began
 *     after step 3 and found unread bytes here (before step 4 read none: the count only falls in
 *     between) set MR_HOLD_ON before reading them, so this read sees it, and waits for its done.
 * Anything else holding the peer's psock (a receive call in progress, a blocked reader) only delays the
 * leave to a later ACK; a stream that stops before it can leave stays in the sockhash, on TCP. */
static __always_inline int mr_leave_safe(struct bpf_sock *sk, const struct mr_fast *fp)
{
	if (!(fp->flags & MR_FP_PEER) || !bpf_core_field_exists(struct sk_psock___mr, msg_tot_len))
		return 0;
	__u32 hold = MR_PEER_FAST_U32(&fp->peer, hold);
	if (hold == MR_HOLD_ON)
		return 0;
	if (mr_psock_refs(fp->peer.psock) != 1)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	__u64 own = (__u64)tp->inet_conn.icsk_inet.sk.sk_user_data & MR_SK_USER_DATA_PTRMASK;
	if (!own || mr_psock_queued(own) != 0)
		return 0;
	return hold || !MR_PEER_FAST_U32(&fp->peer, hold);
}

static __always_inline void mr_leave_try(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct mr_fast *fp = bpf_sk_storage_get(&mr_fast, sk, 0, 0);
	if (!fp || !fp->leave)
		return;
	if (!mr_leave_safe(sk, fp)) {
		/* Its own unread bytes (the peer's answers) drain as its application reads, which sends
		 * ACKs but gets none: each packet it sends tries again (HDR_OPT_LEN_CB, reserving nothing). */
		if (!(skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
								 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		return;
	}
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st || !(st->flags & MR_SK_ACCEL))
		return;
	if (bpf_map_delete_elem(&mr_sockhash, &st->key) != 0)
		return;
	/* Out of the sockhash: the psock goes with its last reference (now, or at the end of the send or
	 * receive call in progress), and with it the sockmap's send path. The gauge counts it out now. */
	bpf_map_delete_elem(&mr_peers, &st->key);
	st->flags &= ~MR_SK_ACCEL;
	MR_DEC(st->orig.slot, accel_open);
	MR_COUNT(st->orig.slot, accel_left);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
						 ~(BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG));
}

#endif
