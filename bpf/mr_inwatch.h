/* mr_inwatch.h — tells the agent (ring mr_in_ring) when a listener opens on a watched inbound proxy port,
 * or closes in a watched pod netns, so that it reconciles then instead of scanning every pod's
 * sockets each second. Called from hooks that already run (sockops' TCP_LISTEN_CB, which the kernel calls
 * on listen(2) only, and sock_release, where a socket that is not listening costs one compare). The
 * sock_release hook is attached only while DNS capture needs it: without it the agent finds closes by a
 * lookup of its registered listeners each second (src/modes/ebpf/inbound-watch.ts). */
#ifndef MR_INWATCH_H
#define MR_INWATCH_H

#include "mr_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_in_watch_key);
	__type(value, __u32);
	__uint(max_entries, 16384);
} mr_in_watch SEC(".maps") __weak;

/* 16 KiB: hundreds of records. A full ring loses records, never a reconcile: the agent reconciles on any
 * record, and that reconcile reads the state the lost ones announced. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024);
} mr_in_ring SEC(".maps") __weak;

static __always_inline int mr_in_tell(__u64 netns, __u32 port, __u32 kind, __u64 cookie)
{
	struct mr_in_watch_key k = { .netns = netns, .port = port };
	__u32 *slot = bpf_map_lookup_elem(&mr_in_watch, &k);
	if (!slot)
		return 0;
	struct mr_in_event e = { .kind = kind, .slot = *slot, .port = port, .netns = cookie };
	bpf_ringbuf_output(&mr_in_ring, &e, sizeof(e), 0);
	return 1;
}

/* sockops BPF_SOCK_OPS_TCP_LISTEN_CB: the socket listens (in the listening hash already). */
static __always_inline void mr_in_listening(struct bpf_sock_ops *skops)
{
	mr_in_tell(0, skops->local_port, MR_IN_EV_LISTEN, 0);
}

/* sock_release: a listener of a watched pod netns goes (the proxy's, or the app's as the pod goes). The
 * release hook cannot read the port (only post_bind can), so this is keyed by the netns alone. */
static __always_inline void mr_in_released(struct bpf_sock *ctx)
{
	if (ctx->state != BPF_TCP_LISTEN)
		return;
	__u64 netns = bpf_get_netns_cookie(ctx);
	mr_in_tell(netns, 0, MR_IN_EV_CLOSE, netns);
}

#endif
