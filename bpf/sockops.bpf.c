/* sockops.bpf.c — sockops: when a redirected connection is established, publishes its original
 * destination under the tuple the proxy will see; removes it when the connection closes. With a
 * policy's `accelerate`, puts both ends of the app↔proxy connection in the sockhash. */
#include "mr_common.h"
#include "mr_inwatch.h"

/* Puts the socket in the sockhash, with the fast path's own storage (mr_fast: its sk_msg program finds
 * nothing else per message), created first: a socket without it stays on TCP. kTLS cannot be on yet
 * (no ULP is set before the handshake completes) and the kernel refuses sockets it cannot hold; a full
 * sockhash leaves the connection on the normal path. The close of an accelerated socket is watched,
 * for the open-sockets gauge. */
static __always_inline int mr_accelerate(struct bpf_sock_ops *skops, struct bpf_sock *sk, struct mr_sk *st,
					 __u32 slot, struct mr_tuple_key *key)
{
	struct mr_fast *fp = bpf_sk_storage_get(&mr_fast, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!fp)
		return 0;
	/* Its first message checks that no byte went by TCP before it joined (TCP Fast Open). */
	fp->flags = MR_FP_FRESH;
	fp->slot = slot;
	if (bpf_sock_hash_update(skops, &mr_sockhash, key, BPF_NOEXIST) == 0) {
		/* What the peer's sk_msg program reads of this socket: taken once here, so that each
		 * message costs one probe read (the psock's unread bytes), not a walk through the socket. */
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		if (tp) {
			struct mr_peer pe = { .sk = (__u64)tp };
			pe.psock = (__u64)tp->inet_conn.icsk_inet.sk.sk_user_data & MR_SK_USER_DATA_PTRMASK;
			struct net *net = tp->inet_conn.icsk_inet.sk.__sk_common.skc_net.net;
			int rmax = net ? net->ipv4.sysctl_tcp_rmem[2] : 0;
			pe.limit = rmax > (int)MR_INGRESS_MIN ? (__u32)rmax : MR_INGRESS_MIN;
			bpf_map_update_elem(&mr_peers, key, &pe, BPF_ANY);
		}
		if (key != &st->key)
			st->key = *key; /* the proxy's socket: its own key, for the close */
		st->flags |= MR_SK_ACCEL;
		MR_COUNT(slot, accel_sockets);
		MR_COUNT(slot, accel_open);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	bpf_sk_storage_delete(&mr_fast, sk);
	return 0;
}

/* Whether the socket's file is in non-blocking mode. A blocking reader on the fast path can get EAGAIN
 * from recv(): the kernel's sockmap receive path waits once and gives up on any wakeup that brought no
 * data (a write-space or state-change wakeup, say), where TCP's own receive path waits again. */
static __always_inline int mr_nonblocking(struct bpf_sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	struct socket *so = tp->inet_conn.icsk_inet.sk.sk_socket;
	if (!so)
		return 0;
	struct file *f = so->file;
	return f && (f->f_flags & 04000 /* O_NONBLOCK */);
}

/* Publishes the application socket's record under the tuple the proxy will see. Called when the SYN
 * is about to leave (TCP_CONNECT_CB: so the record exists before any proxy-side socket can, TCP Fast
 * Open included, and counts against the limits while the handshake is in flight), or at
 * ACTIVE_ESTABLISHED for a connect that sent no SYN (TCP_REPAIR: `meshredir verify`). Whether the
 * connection takes the fast path is decided here, in the record, so that the proxy's side knows it
 * whenever its socket is created (with Fast Open, when the SYN arrives: before this side is
 * established). */
static __always_inline void mr_publish(struct bpf_sock_ops *skops, struct bpf_sock *sk, struct mr_sk *st,
				       const int fast)
{
	__u32 local[4] = {}, remote[4] = {};
	int v4;
	MR_READ_ADDRS(skops, local_ip4, remote_ip4, local_ip6, remote_ip6, local, remote, v4);
	/* remote_port holds the network-order port in its upper 16 bits (little-endian hosts). */
	mr_tuple(&st->key, v4, local, bpf_htons((__u16)skops->local_port), remote,
		 (__be16)(skops->remote_port >> 16), bpf_get_netns_cookie(skops));

	struct mr_orig o = st->orig;
	if (o.family == AF_INET6 && mr_is_v4_mapped((__u32 *)o.addr)) {
		__u32 a = ((__u32 *)o.addr)[3];
		__builtin_memset(o.addr, 0, 16);
		((__u32 *)o.addr)[0] = a;
		o.family = AF_INET;
	}
	o.cookie = bpf_get_socket_cookie(skops);
	/* The connect hook noted the policy's accelerate; a blocking socket stays on TCP. */
	if (fast && (o.flags & MR_O_ACCEL) && !mr_nonblocking(sk)) {
		o.flags &= ~MR_O_ACCEL;
		MR_COUNT(o.slot, accel_blocking);
	}
	if (!fast)
		o.flags &= ~MR_O_ACCEL;
	if (mr_orig_put(&st->key, &o))
		return;
	st->orig.cookie = o.cookie;
	st->orig.flags = o.flags;
	st->flags |= MR_SK_RECORDED;
	/* The close of the socket (also of a handshake that fails) deletes an unclaimed record. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline struct mr_sk *mr_app_storage(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 0;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	return st && (st->flags & MR_SK_APP) ? st : 0;
}

static __always_inline void mr_on_connect(struct bpf_sock_ops *skops, const int fast)
{
	struct bpf_sock *sk = skops->sk;
	struct mr_sk *st = mr_app_storage(skops);
	if (sk && st && !(st->flags & MR_SK_RECORDED))
		mr_publish(skops, sk, st, fast);
}

static __always_inline void mr_on_established(struct bpf_sock_ops *skops, const int fast)
{
	struct bpf_sock *sk = skops->sk;
	struct mr_sk *st = mr_app_storage(skops);
	if (!sk || !st)
		return;
	if (!(st->flags & MR_SK_RECORDED))
		mr_publish(skops, sk, st, fast);
	if (!(st->flags & MR_SK_RECORDED))
		return;
	__u32 slot = st->orig.slot;
	MR_COUNT(slot, established);
	/* The fast path, as the record told the proxy's side (a socket made blocking since then stays on
	 * TCP: its proxy's side, if it joined, then finds no peer and uses TCP too). */
	if (fast && (st->orig.flags & MR_O_ACCEL)) {
		if (mr_nonblocking(sk))
			mr_accelerate(skops, sk, st, slot, &st->key);
		else
			MR_COUNT(slot, accel_blocking);
	}
}

/* The proxy's side of a redirected connection, as soon as its kernel completes the handshake (before
 * accept(); with Fast Open, when the SYN arrives): the record moves onto the accepted socket, where
 * SO_ORIGINAL_DST reads it however late the proxy gets to it and whatever the application did
 * meanwhile (even closed). The table then only holds handshakes in flight. Only a socket of one of the
 * policy's bypass (proxy) cgroups may take it: any other listener with that tuple (in a netns that gave
 * itself the proxy's and the application's addresses) gets nothing, and the record waits for the real
 * proxy. A spoiled record (two sockets published the tuple) is given to nobody. With the application's
 * side on the fast path, this end joins it. */
static __always_inline void mr_on_passive(struct bpf_sock_ops *skops, const int fast)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	/* No record anywhere (the node's gauge: only ever above their number, when deleted from outside):
	 * nothing to claim, and no hash lookup (a cold bucket) for every connection accepted below the
	 * attach point. A record is counted before its SYN leaves, so before its proxy's side can run. */
	__u64 *pending = mr_gauge(MR_G_PENDING);
	if (pending && *pending == 0)
		return;
	__u32 local[4] = {}, remote[4] = {};
	int v4;
	MR_READ_ADDRS(skops, local_ip4, remote_ip4, local_ip6, remote_ip6, local, remote, v4);
	__u64 cookie = bpf_get_netns_cookie(skops);
	__be16 lport = bpf_htons((__u16)skops->local_port);
	__be16 rport = (__be16)(skops->remote_port >> 16);
	struct mr_tuple_key k;
	mr_tuple(&k, v4, remote, rport, local, lport, cookie); /* as the application published it */
	struct mr_orig o;
	if (!mr_orig_peek(&k, &o) || (o.flags & MR_O_CONFLICT))
		return;
	__u32 slot = o.slot;
	if (!mr_sock_is_proxy(sk, slot)) {
		MR_COUNT(slot, origdst_denied);
		return;
	}
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return; /* the record stays in the table: getsockopt finds it there */
	if (!mr_orig_claim(&k, &o))
		return; /* gone meanwhile (its application closed), and the copy is not to be trusted */
	st->orig = o;
	st->flags |= MR_SK_SERVED;
	if (fast && (o.flags & MR_O_ACCEL)) {
		struct mr_tuple_key own;
		mr_tuple(&own, v4, local, lport, remote, rport, cookie);
		mr_accelerate(skops, sk, st, slot, &own);
	}
}

static __always_inline void mr_on_close(struct bpf_sock_ops *skops, const int fast)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st)
		return;
	if (st->flags & MR_SK_RECORDED) {
		/* Gone already when the proxy's side claimed it; and never another socket's record. */
		struct mr_orig *rec = bpf_map_lookup_elem(&mr_orig, &st->key);
		if (rec && rec->cookie == st->orig.cookie)
			mr_orig_del(&st->key, st->orig.slot);
		st->flags &= ~MR_SK_RECORDED;
	}
	/* The kernel takes a closing socket out of the sockhash itself; this keeps the gauge. */
	if (fast && (st->flags & MR_SK_ACCEL)) {
		bpf_map_delete_elem(&mr_peers, &st->key);
		st->flags &= ~MR_SK_ACCEL;
		MR_DEC(st->orig.slot, accel_open);
	}
}

/* The application's connection leaves ESTABLISHED (FIN_WAIT1 on its own close, CLOSE_WAIT on the
 * peer's): by then the proxy's side has normally claimed the record. Once the record is verifiably gone
 * the socket's remaining state changes (FIN_WAIT2, TIME_WAIT/CLOSE; LAST_ACK, CLOSE) have nothing to
 * do, so STATE_CB goes off: a graceful close then costs one state callback instead of three. A record
 * still there (no proxy socket claimed it yet) keeps the watch for the close that deletes it; a socket on
 * the fast path keeps it for its gauge. */
static __always_inline void mr_on_closing(struct bpf_sock_ops *skops, const int fast)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	/* Only a watch that mr_publish turned on (a recorded socket) is turned off here. */
	if (!st || !(st->flags & MR_SK_RECORDED) || (fast && (st->flags & MR_SK_ACCEL)))
		return;
	struct mr_orig *rec = bpf_map_lookup_elem(&mr_orig, &st->key);
	if (rec && rec->cookie == st->orig.cookie)
		return;
	st->flags &= ~MR_SK_RECORDED;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline int mr_sockops_run(struct bpf_sock_ops *skops, const int fast)
{
	MR_PROF_START();
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		mr_on_connect(skops, fast);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		mr_on_established(skops, fast);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		mr_on_passive(skops, fast);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* args[0]: the old state, args[1]: the new one. */
		if (skops->args[1] == BPF_TCP_CLOSE)
			mr_on_close(skops, fast);
		else if (skops->args[0] == BPF_TCP_ESTABLISHED)
			mr_on_closing(skops, fast);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB: /* listen(2) only: an inbound proxy may be back (mr_inwatch.h) */
		mr_in_listening(skops);
		break;
	}
	MR_PROF_SOCKOPS(skops);
	return 1;
}

/* The loader attaches one of the two: with the fast path (sockhash, sk_msg), or without any reference
 * to it, for a kernel where the fast path's maps or programs cannot load (it is optional; redirection
 * is not). */
SEC("sockops")
int mr_sockops(struct bpf_sock_ops *skops)
{
	return mr_sockops_run(skops, 1);
}

SEC("sockops")
int mr_sockops_base(struct bpf_sock_ops *skops)
{
	return mr_sockops_run(skops, 0);
}
