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
/* A streak (skmsg.bpf.c: mr_backoff) whose last queued write is older than this at the write that finds
 * the peer with nothing unread is stale: the burst ended long before, and this write starts a new one
 * (the next response of a keep-alive connection), which must neither back off nor count towards
 * leaving. 10 ms: a stream's writer that was merely scheduled out while its reader caught up comes back
 * well within it (a time slice is a few ms: EEVDF's base slice 0.75 ms x (1 + log2 CPUs), a tick 4 ms
 * at HZ=250), so a real stream keeps its streak; a tenth of MR_STREAM_HOLD_NS, so a false back-off
 * would cost at most a hold per 10 ms of bursts; and shorter than the think time of anything but a
 * benchmark loop between a response and the next request. */
#define MR_STREAM_STALE_NS (10ull * 1000 * 1000)

/* A fully ordered atomic add on an mr_fast field another CPU reads, returning the old value. Clang emits
 * the value-returning (BPF_FETCH) form only when the old value is used (otherwise a plain BPF_ADD, which
 * arm64's LSE JIT makes STADD: ordered with nothing), hence the empty asm that uses it. The kernel runs
 * BPF_ADD|BPF_FETCH as atomic_fetch_add (kernel/bpf/core.c), fully ordered like every value-returning
 * atomic (Documentation/atomic_t.txt): lock xadd on x86, LDADDAL on arm64 with LSE, an LL/SC loop with
 * a full barrier without. Needs -mcpu=v3 for 32-bit operands (Makefile) and Linux 5.12 (the fast path
 * needs 6.10 anyway). */
static __always_inline __u32 mr_add_mb(__u32 *p, __u32 v)
{
	__u32 old = __sync_fetch_and_add(p, v);
	asm volatile("" : : "r"(old));
	return old;
}

/* A full memory barrier in a BPF program, which has no fence instruction: a value-returning atomic that
 * changes nothing, on a 64-bit field of the socket's own storage (64-bit: no -mcpu=v3 needed; clang
 * turns the add of 0 into a fetch-or of 0, fully ordered too: LDSETAL on arm64). */
static __always_inline void mr_fence(__u64 *p)
{
	__u64 old = __sync_fetch_and_add(p, 0);
	asm volatile("" : : "r"(old));
}

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
 * while this socket holds unread bytes of its own, and takes TCP for good at the first message that
 * finds none (skmsg.bpf.c: mr_peer_left). Each of those messages first bumps the peer's `hold`, a
 * sequence (a fully ordered atomic add), and only then reads the count. Nothing waits for the peer to
 * send again: a peer that sent once while this socket held its bytes and then went quiet does not keep
 * this socket in the sockhash (its redirected bytes are counted here, and leaving waits for them only).
 * It leaves only when, in this order:
 *  1. its `leave` flag was set (sk_msg, under its socket lock, with a fully ordered atomic add);
 *  2. the peer's hold sequence is read (s1);
 *  3. the peer's psock holds exactly its one sockhash reference: no send call of the peer is in
 *     progress, so none that chose this socket is still on its way here (a send call holds the
 *     reference from before its program runs until after its redirect has queued the message);
 *  4. its own psock has no unread redirected byte: whatever a send that ended before step 3 queued is
 *     counted (its reference is dropped with release ordering after the queueing, and this read is
 *     ordered after step 3's), and after step 3 only a send that reads the count first can queue;
 *  5. the peer's hold sequence read again equals s1: a send of the peer that began after step 3 and
 *     found unread bytes here (before step 4 read none: only this socket's reader changes the count in
 *     between, down) bumped the sequence before reading them, fully ordered, so this read, ordered
 *     after step 4's, sees the bump, and the leave waits for a later ACK. A send that found none never
 *     redirects here again. A bump seen at step 2 already was ordered after its send's reference:
 *     step 3 then sees the reference, or the send has ended and step 4 counts what it queued.
 * The reads are ordered by mr_fence between them (a BPF program has no fence instruction; on x86 loads
 * are not reordered with loads anyway, on arm64 they are). What this relies on: the peer's atomics are
 * value-returning (fully ordered), and so is this socket's setting of `leave`. Step 1 against step 3 is
 * a store-buffering pattern: this socket's flag before its read of the reference, the peer's reference
 * (taken by the kernel before its program runs) before its read of the flag; the kernel takes it with
 * refcount_inc_not_zero, relaxed: x86's locked cmpxchg orders it, arm64's does not, and a peer's send
 * could then read the flag unset while step 3 misses its reference. That predates this handshake and
 * is the kernel's (sk_psock_get); it is documented here, not worked around (a fence in every message of
 * the peer would cost the fast path's common case).
 * Anything else holding the peer's psock (a receive call in progress, a blocked reader) only delays the
 * leave to a later ACK; a stream that stops before it can leave stays in the sockhash, on TCP. */
static __always_inline int mr_leave_safe(struct bpf_sock *sk, struct mr_fast *fp)
{
	if (!(fp->flags & MR_FP_PEER) || !bpf_core_field_exists(struct sk_psock___mr, msg_tot_len))
		return 0;
	/* (A kernel without msg_tot_len never reaches the fences below: CO-RE made the branch dead, and the
	 * verifier does not explore it, so their value-returning atomics, Linux 5.12, ask nothing of it.) */
	__u32 s1 = MR_PEER_FAST_U32(&fp->peer, hold);
	mr_fence(&fp->until);
	if (mr_psock_refs(fp->peer.psock) != 1)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	__u64 own = (__u64)tp->inet_conn.icsk_inet.sk.sk_user_data & MR_SK_USER_DATA_PTRMASK;
	if (!own)
		return 0;
	mr_fence(&fp->until);
	if (mr_psock_queued(own) != 0)
		return 0;
	mr_fence(&fp->until);
	return MR_PEER_FAST_U32(&fp->peer, hold) == s1;
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
