/* elemreuse.bpf.c — test program (BPF_PROG_TEST_RUN, no socket involved): shows on mr_orig's own map
 * type (a preallocated hash) that a deleted element is reused at once by the next insert, so a pointer
 * taken by a lookup can end up reading another record (what another CPU's delete + publish does to a
 * claim in flight), and that both checks a copy goes through refuse such a copy (mr_orig_still, where
 * the record stays; mr_orig_claim, whose delete no longer finds the key) and accept an undisturbed one.
 * Returns a bit mask: 1 reuse seen, 2 reused copy refused by mr_orig_still, 4 and by mr_orig_claim,
 * 8 undisturbed copy accepted by both (15: all as expected); 100+ a setup step failed. */
#include "mr_common.h"

SEC("tc")
int mr_t_reuse(struct __sk_buff *skb)
{
	struct mr_tuple_key k1 = { .family = AF_INET, .sport = 1 }, k2 = { .family = AF_INET, .sport = 2 };
	struct mr_orig o1 = { .family = AF_INET, .port = 1, .cookie = 111 };
	struct mr_orig o2 = { .family = AF_INET, .port = 2, .cookie = 222 };
	int ret = 0;

	bpf_map_delete_elem(&mr_orig, &k1);
	bpf_map_delete_elem(&mr_orig, &k2);
	if (bpf_map_update_elem(&mr_orig, &k1, &o1, BPF_NOEXIST))
		return 100;
	struct mr_orig *p = bpf_map_lookup_elem(&mr_orig, &k1);
	if (!p)
		return 101;
	struct mr_orig copy = *p;
	/* What another CPU may do between a claim's lookup and its copy: the record goes, another comes. */
	bpf_map_delete_elem(&mr_orig, &k1);
	if (bpf_map_update_elem(&mr_orig, &k2, &o2, BPF_NOEXIST))
		return 102;
	if (p->cookie == 222 && p->port == 2)
		ret |= 1; /* the element looked up for k1 now holds k2's record */
	if (!mr_orig_still(&k1, p, &copy))
		ret |= 2;
	if (!mr_orig_claim(&k1, &copy))
		ret |= 4;
	struct mr_orig c2 = {};
	struct mr_orig *p2 = bpf_map_lookup_elem(&mr_orig, &k2);
	if (p2 && mr_orig_peek(&k2, &c2) && mr_orig_still(&k2, p2, &c2) && mr_orig_claim(&k2, &c2) &&
	    c2.cookie == 222)
		ret |= 8;
	bpf_map_delete_elem(&mr_orig, &k2);
	return ret;
}
