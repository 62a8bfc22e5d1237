/* sockops.bpf.c — sockops: when a redirected connection is established, publishes its original
 * destination under the tuple the proxy will see; removes it when the connection closes. */
#include "mr_common.h"

/* Puts the socket in the sockhash when its policy asks for the fast path. kTLS cannot be on yet
 * (no ULP is set before the handshake completes) and the kernel refuses sockets it cannot hold;
 * a full sockhash leaves the connection on the normal path. */
static __always_inline void mr_accelerate(struct bpf_sock_ops *skops, struct mr_sk *st, __u32 slot,
					  struct mr_tuple_key *key)
{
	struct mr_policy *p = bpf_map_lookup_elem(&mr_policies, &slot);
	if (!p || !(p->flags & MR_F_ACCELERATE))
		return;
	if (bpf_sock_hash_update(skops, &mr_sockhash, key, BPF_NOEXIST) == 0) {
		st->flags |= MR_SK_ACCEL;
		MR_COUNT(slot, accel_sockets);
	}
}

static __always_inline void mr_on_established(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st || !(st->flags & MR_SK_APP))
		return;

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
	if (mr_orig_put(&st->key, &o)) {
		MR_COUNT(o.slot, err_orig);
		return;
	}
	st->flags |= MR_SK_RECORDED;
	MR_COUNT(o.slot, established);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	mr_accelerate(skops, st, o.slot, &st->key);
}

/* The proxy's side of a redirected connection: accelerated when the application's policy asks. */
static __always_inline void mr_on_passive(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	__u32 local[4] = {}, remote[4] = {};
	int v4;
	MR_READ_ADDRS(skops, local_ip4, remote_ip4, local_ip6, remote_ip6, local, remote, v4);
	__u64 cookie = bpf_get_netns_cookie(skops);
	__be16 lport = bpf_htons((__u16)skops->local_port);
	__be16 rport = (__be16)(skops->remote_port >> 16);
	struct mr_tuple_key k;
	mr_tuple(&k, v4, remote, rport, local, lport, cookie); /* as the application published it */
	struct mr_orig *o = bpf_map_lookup_elem(&mr_orig, &k);
	if (!o)
		return;
	__u32 slot = o->slot;
	struct mr_policy *p = bpf_map_lookup_elem(&mr_policies, &slot);
	if (!p || !(p->flags & MR_F_ACCELERATE))
		return; /* nothing to do for this connection: no storage allocated on the proxy's socket */
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	st->orig.slot = slot;
	struct mr_tuple_key own;
	mr_tuple(&own, v4, local, lport, remote, rport, cookie);
	mr_accelerate(skops, st, slot, &own);
}

static __always_inline void mr_on_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st || !(st->flags & MR_SK_RECORDED))
		return;
	mr_orig_del(&st->key);
	st->flags &= ~MR_SK_RECORDED;
}

SEC("sockops")
int mr_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		mr_on_established(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		mr_on_passive(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			mr_on_close(skops);
		break;
	}
	return 1;
}
