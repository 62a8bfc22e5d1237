/* mr_inbound.h — the maps of inbound interception (sk_lookup) and the helpers its programs share
 * (BPF side only). Weak, like mr_common.h's, so that the per-hook objects link into one object. */
#ifndef MR_INBOUND_H
#define MR_INBOUND_H

#include "mr_common.h"

#define MR_LOOPBACK_IFINDEX 1 /* lo has ifindex 1 in every network namespace */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_in_addr_key);
	__type(value, struct mr_in_dest);
	__uint(max_entries, 16384);
} mr_in_addrs SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mr_port_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
} mr_in_ports SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mr_cidr_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mr_in_srcs SEC(".maps") __weak;

/* No sk_msg/sk_skb program is ever attached to this one: it only holds listeners for bpf_sk_assign. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct mr_in_sock_key);
	__type(value, __u64);
	__uint(max_entries, 8192);
} mr_in_socks SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__type(key, int);
	__type(value, struct mr_in_sk);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
} mr_in_sk SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mr_in_stats);
	__uint(max_entries, MR_MAX_POLICIES);
} mr_in_stats SEC(".maps") __weak;

/* Atomic for the same reason as MR_COUNT: softirq (sk_lookup) can interrupt process context. */
#define MR_IN_COUNT(slot, field)                                               \
	do {                                                                   \
		__u32 __k = (slot);                                            \
		struct mr_in_stats *__s = bpf_map_lookup_elem(&mr_in_stats, &__k); \
		if (__s)                                                       \
			__sync_fetch_and_add(&__s->field, 1);                  \
	} while (0)

#endif
