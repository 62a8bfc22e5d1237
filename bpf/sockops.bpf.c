/* sockops.bpf.c — sockops: when a redirected connection is established, publishes its original
 * destination under the tuple the proxy will see; removes it when the connection closes. */
#include "mr_common.h"

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
	if (bpf_map_update_elem(&mr_orig, &st->key, &o, BPF_ANY)) {
		MR_COUNT(o.slot, err_orig);
		return;
	}
	st->flags |= MR_SK_RECORDED;
	MR_COUNT(o.slot, established);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void mr_on_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct mr_sk *st = bpf_sk_storage_get(&mr_sk, sk, 0, 0);
	if (!st || !(st->flags & MR_SK_RECORDED))
		return;
	bpf_map_delete_elem(&mr_orig, &st->key);
	st->flags &= ~MR_SK_RECORDED;
}

SEC("sockops")
int mr_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		mr_on_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			mr_on_close(skops);
		break;
	}
	return 1;
}
