/* mr_abi.h — the structs and constants that cross the kernel/user boundary: the layout of every
 * meshredir map and the values stored in it. The TypeScript codecs and constants in src/bpf/abi.ts
 * mirror these and are checked against the object's BTF at load, so a change here without the
 * matching change there fails loudly. Constants are enumerators, not #defines, so that they reach BTF:
 * each enum is the type of a field of struct mr_abi at the end of this file. */
#ifndef MR_ABI_H
#define MR_ABI_H

enum mr_limit {
	MR_MAX_POLICIES = 4096,   /* policy slots; slot 0 is the global (no policy) counter slot */
	MR_MAX_CGROUP_DEPTH = 32, /* how far up the cgroup tree a policy lookup walks */
	MR_MAX_MARKS = 8,         /* bypass marks per policy (spec.proxy.bypass.marks), kept in mr_policy */
};

/* mr_cgroups value: what a cgroup id means to us. */
enum mr_cg_kind {
	MR_CG_POLICY = 1, /* connections from this cgroup (and descendants) follow policy `slot` */
	MR_CG_BYPASS = 2, /* the proxy's cgroup: never redirected (loop avoidance, not spoofable) */
	MR_CG_GUARD = 3,  /* a parent of pod cgroups (kubepods QoS): connections from a cgroup below it
			   * that has no entry of its own are refused (EPERM) until the agent has
			   * classified the pod (fail closed against the start race) */
	MR_CG_PASS = 4,   /* a classified pod that is not enrolled: never redirected, not guarded */
};

struct mr_cg_entry {
	__u32 kind;
	__u32 slot;
};

/* mr_policy.flags: bits (the field stays a __u32, a set of these). */
enum mr_policy_flag {
	MR_F_PROXY4 = 1u << 0,            /* proxy4_* set: IPv4 (and v4-mapped) connects are redirected */
	MR_F_PROXY6 = 1u << 1,            /* proxy6_* set: IPv6 connects are redirected */
	MR_F_INCLUDE_PORTS = 1u << 2,     /* only ports with MR_ACT_INCLUDE in mr_ports are redirected */
	MR_F_INCLUDE_CIDRS = 1u << 3,     /* only destinations whose longest match is MR_ACT_INCLUDE */
	MR_F_REDIRECT_LOOPBACK = 1u << 4, /* loopback destinations are redirected too */
	MR_F_ACCELERATE = 1u << 5,        /* reserved for the sk_msg fast path */
	MR_F_BYPASS_MARKS = 1u << 6,      /* marks[] holds bypass marks: only then is the socket's mark read */
	MR_F_OWNERS = 1u << 7,            /* the policy has uid/gid bypass entries in mr_owners */
	MR_F_PORTS = 1u << 8,             /* the policy has entries in mr_ports */
	MR_F_CIDRS = 1u << 9,             /* the policy has entries in mr_cidrs */
	/* (Without OWNERS/PORTS/CIDRS a connect skips those lookups: a policy pays only for what it uses.) */
};

/* A socket mark that bypasses: (SO_MARK & mask) == value, as iptables' -m mark --mark value/mask. */
struct mr_mark {
	__u32 value;
	__u32 mask; /* 0 ends the list (the schema refuses a zero mask, which would match every socket) */
};

struct mr_policy {
	__u32 flags;
	__be32 proxy4_addr;
	__u8 proxy6_addr[16];
	__be16 proxy4_port;
	__be16 proxy6_port;
	struct mr_mark marks[MR_MAX_MARKS]; /* in the value, not a map of its own: no lookup per connect */
	__u32 pending_max; /* the policy's budget of handshakes in flight (records); 0: no budget of its own */
	__u32 netns_ino;   /* the pod's netns (inode number); 0: not known. A connect from another netns is
			    * refused: it could give itself a victim's address and publish under its tuple */
};

/* mr_owners key: uid/gid bypass of a policy slot. Value: __u8 1. */
enum mr_owner_kind { MR_OWNER_UID = 1, MR_OWNER_GID = 2 };
struct mr_owner_key {
	__u32 slot;
	__u32 kind;
	__u32 id;
};

/* mr_proxies key: a cgroup that is a bypass (proxy) cgroup of policy `slot`. Value: __u8 1. A proxy
 * cgroup may serve several policies (mr_cgroups keeps one entry per cgroup): sockops reads this one to
 * accelerate a proxy's socket only for a policy that names that proxy. */
struct mr_proxy_key {
	__u64 cgroup_id;
	__u32 slot;
	__u32 pad;
};

/* mr_ports / mr_cidrs values */
enum mr_action { MR_ACT_INCLUDE = 1, MR_ACT_EXCLUDE = 2 };

struct mr_port_key {
	__u32 slot;
	__u16 port; /* host byte order */
	__u16 pad;
};

/* LPM key: prefixlen counts the bits of slot (32) + family (8) + the address prefix. */
struct mr_cidr_key {
	__u32 prefixlen;
	__be32 slot;    /* big-endian so the trie matches it bit by bit, most significant first */
	__u8 family;    /* AF_INET or AF_INET6 */
	__u8 addr[16];  /* IPv4 in the first 4 bytes */
	__u8 pad[3];
};

/* mr_orig key: a redirected connection as the proxy sees it on its accepted socket.
 * netns is the netns cookie when either end is a loopback address (the connection then never leaves
 * that netns, and identical loopback tuples of two pods must not collide), 0 otherwise (a routable
 * address is unique on the node, so the tuple alone identifies the connection; a process that gives
 * its own netns a victim's addresses can only collide with it: see MR_O_CONFLICT). The same rule,
 * symmetric in the two ends, keys mr_sockhash. */
struct mr_tuple_key {
	__u64 netns;
	__u8 saddr[16]; /* the connecting application's address */
	__u8 daddr[16]; /* the proxy's address */
	__be16 sport;
	__be16 dport;
	__u8 family;    /* AF_INET (v4 and v4-mapped) or AF_INET6 */
	__u8 pad[3];
};

/* An original destination. */
enum mr_orig_flag {
	MR_O_ACCEL = 1u << 0,    /* mr_orig.flags: the application's socket joins the fast path */
	MR_O_CONFLICT = 1u << 1, /* two sockets published this tuple: nobody is given this record */
};
struct mr_orig {
	__u8 family;
	__u8 flags;
	__be16 port;
	__u32 slot;
	__u8 addr[16];
	__u64 cookie; /* the application socket's cookie: whose record it is (close deletes only its own;
		       * a copy is checked against it, as a preallocated element is reused at once) */
};

/* mr_peers: the same keys as mr_sockhash, each with what a peer's sk_msg program needs to know of
 * this socket. sk_msg programs cannot take a reference on a sockhash entry (no bpf_sk_release there), so
 * the socket is described by addresses taken when it joined the fast path and read with probe reads: a
 * hint that is only trusted to choose TCP, never to redirect (the redirect itself goes through the
 * sockhash). TCP sockets are freed RCU-type-safe and psocks after an RCU grace period, so a stale
 * address reads another object's numbers at worst. */
struct mr_peer {
	__u64 sk;     /* struct tcp_sock * */
	__u64 psock;  /* struct sk_psock * (its msg_tot_len: bytes redirected to it and not read yet) */
	__u32 limit;  /* unread fast-path bytes it may hold: tcp_rmem's maximum in its netns, >= 4 MiB */
	__u32 pad;
	__u64 fast;   /* struct mr_fast * of it (its `leave`: it is leaving the sockhash, take TCP) */
};

/* mr_sk: per-socket storage (freed by the kernel with the socket), on two kinds of socket: the
 * application's redirected socket (MR_SK_APP) and the proxy's accepted socket once it has read the
 * original destination (MR_SK_SERVED; repeated reads are answered from here). The fast path's own
 * state is in mr_fast, so that a socket that never joins it carries nothing of it. */
enum mr_sk_flag {
	MR_SK_RECORDED = 1u << 0, /* key is in mr_orig and must be deleted on close */
	MR_SK_APP = 1u << 1,      /* the application's socket: getpeername answers with orig */
	MR_SK_SERVED = 1u << 2,   /* the proxy's accepted socket: orig is its original destination */
	MR_SK_ACCEL = 1u << 3,    /* in mr_sockhash (orig.slot names the policy; mr_fast exists) */
	MR_SK_DNS = 1u << 7,      /* a TCP socket whose connect DNS capture took: it has an mr_dns_socks entry */
};
struct mr_sk {
	struct mr_orig orig;      /* APP: as the application gave it; SERVED: as the proxy reads it */
	struct mr_tuple_key key;  /* valid when MR_SK_RECORDED, and (its own) when MR_SK_ACCEL */
	__u32 flags;
	__u32 pad;
};

/* mr_fast: the fast path's per-socket storage, created when a socket joins mr_sockhash (sockops) and
 * read by every message it sends (sk_msg: the only storage lookup per message). */
enum mr_fast_flag {
	MR_FP_SLOWPATH = 1u << 0, /* a message went by TCP: stay on TCP until the peer has read all of it */
	MR_FP_FRESH = 1u << 1,    /* just accelerated: bytes may have gone by TCP before (TFO data) */
	MR_FP_PEER = 1u << 2,     /* peer_key and peer are cached */
	MR_FP_BACKOFF = 1u << 3,  /* a one-way stream: on TCP until `until` (then back once TCP drained) */
	MR_FP_PEER_LEFT = 1u << 4, /* the peer is leaving the sockhash: TCP for good, never redirect to it */
};
struct mr_fast {
	__u32 flags;
	__u32 slot;    /* the policy (its counters) */
	__u32 streak;  /* messages in a row that found the peer with fast-path bytes it had not read yet */
	__u32 backoffs; /* times it backed off (a second one: a stream, it leaves the fast path) */
	__u32 leave;   /* non-zero: leaving the sockhash for good (skmsg.bpf.c: mr_leave); the peer's program
			* reads it through its mr_peer.fast, and stops redirecting to this socket (below) */
	__u32 hold;    /* its peer is leaving: a sequence, bumped (fully ordered) by each message that sees the
			* peer's `leave` before it reads the peer's unread bytes (skmsg.bpf.c: mr_peer_left) */
	__u64 until;   /* MR_FP_BACKOFF: bpf_ktime_get_ns() before which every message takes TCP; otherwise,
			* once the streak is full, the time of its last queued write (skmsg.bpf.c: mr_backoff) */
	struct mr_tuple_key peer_key; /* MR_FP_PEER: the peer's sockhash key ... */
	struct mr_peer peer;          /* ... and its description, from mr_peers (cached: one lookup) */
};

/* mr_pending: per policy slot, its records in mr_orig now (handshakes in flight), checked against
 * mr_policy.pending_max at connect. One cache line per slot: pods do not share a counter. */
struct mr_pending {
	__s64 now;
	__u64 pad[7];
};

/* mr_gauges: global values shared by every hook (array of __u64). */
enum mr_gauge {
	MR_G_PENDING = 0, /* records in mr_orig now (atomically kept by the programs) */
	MR_G_LIMIT = 1,   /* set by the agent: past this many pending records a connect is refused */
	MR_G_MAX = 2,
};

/* mr_stats: per-CPU counters per policy slot (slot 0: events not tied to a policy). */
struct mr_stats {
	__u64 redirected;
	__u64 bypass_cgroup;   /* caller is in a bypass (proxy) cgroup */
	__u64 bypass_owner;    /* uid/gid bypass */
	__u64 bypass_port;
	__u64 bypass_cidr;
	__u64 bypass_loopback;
	__u64 bypass_family;   /* no proxy for this address family */
	__u64 bypass_proxy;    /* the destination is the proxy itself */
	__u64 err_storage;     /* no socket storage: connect() refused (fail closed) */
	__u64 err_orig;        /* could not record the connection for the proxy */
	__u64 err_full;        /* connect() refused: the record table reached its limit (fail closed) */
	__u64 established;     /* redirected connections that completed the handshake */
	__u64 origdst_served;  /* SO_ORIGINAL_DST answered from our records */
	__u64 origdst_unknown; /* SO_ORIGINAL_DST asked for a connection we did not redirect (slot 0) */
	__u64 accel_sockets;   /* sockets put in the sockhash (app and proxy side) */
	__u64 accel_open;      /* of those, open now (+1 in, -1 at close: the sum over CPUs is exact) */
	__u64 accel_blocking;  /* app sockets left off the fast path: blocking at the handshake */
	__u64 msg_fast;        /* messages the sk_msg program sent straight to the peer socket */
	__u64 msg_slow;        /* messages of accelerated sockets that took the TCP path */
	__u64 msg_resumed;     /* times a socket went back to the fast path once TCP had drained */
	__u64 ulp_refused;     /* setsockopt(TCP_ULP) (kTLS) refused on an accelerated socket */
	__u64 bypass_mark;     /* the socket's mark (SO_MARK) is a bypass mark */
	__u64 guard_refused;   /* connect() refused: an unclassified pod cgroup under a guard (slot 0) */
	__u64 err_netns;       /* connect() refused: from another netns than the policy's pod */
	__u64 err_conflict;    /* a publish found another socket's record under its tuple: both spoiled */
	__u64 origdst_denied;  /* SO_ORIGINAL_DST or a claim by a socket outside the policy's bypass cgroups */
	__u64 msg_backoff;     /* times a fast-path socket backed off to TCP: a one-way stream outran its reader */
	__u64 accel_left;      /* sockets that left the sockhash for good (a stream): TCP's own send path again */
};

/* mr_sockhash key: a local socket by its own view of the connection, as struct mr_tuple_key with
 * saddr/sport = the socket's local end and daddr/dport = its remote end; netns as in mr_orig (the
 * cookie when the remote address is loopback, else 0). The peer of a socket has the mirrored key. */

/* mr_slots: user-space bookkeeping (no program reads it): which policy owns a slot, so that slots
 * stay stable across agent restarts and `status` can name policies from the pins alone. */
struct mr_slot_meta {
	__u64 cgroup_id;
	char name[256]; /* metadata.name (at most 253 characters) and its NUL: never truncated */
};

/* ---- Inbound (sk_lookup): the pod's incoming connections land on its proxy's listening socket. ----
 * sk_lookup programs cannot learn which netns they run in (no bpf_get_netns_cookie there), so the
 * state is keyed by the pod's own addresses, which are unique on a node. */

/* mr_in_addrs key: an address of a pod with an inbound policy. */
struct mr_in_addr_key {
	__u32 family;  /* AF_INET or AF_INET6 */
	__u8 addr[16]; /* network byte order; IPv4 in the first 4 bytes, the rest zero */
};

/* mr_in_dest.flags: bits. */
enum mr_in_flag {
	MR_IN_F_PASS = 1u << 0,          /* no proxy socket registered: deliver to the app (default: refuse) */
	MR_IN_F_INCLUDE_PORTS = 1u << 1, /* only ports with MR_ACT_INCLUDE in mr_in_ports are intercepted */
	MR_IN_F_BYPASS_SRCS = 1u << 2,   /* sources in mr_in_srcs (longest match MR_ACT_EXCLUDE) go to the app */
};
/* mr_in_addrs value */
struct mr_in_dest {
	__u32 slot;
	__u32 flags;
};

/* mr_in_ports key: struct mr_port_key (slot, port in host byte order); value: enum mr_action.
 * mr_in_srcs key: struct mr_cidr_key of the source address; value: enum mr_action. */

/* mr_in_socks key: the proxy's inbound listener of policy `slot` for connections of `family` (a
 * dual-stack socket is registered under both families). Value: the socket (fd from user space). */
struct mr_in_sock_key {
	__u32 slot;
	__u32 family;
};

/* mr_in_sk: socket storage that user space puts on a registered listener; the kernel copies it onto
 * every socket accepted from that listener (BPF_F_CLONE), which is how mr_in_origdst knows them. */
enum mr_in_sk_flag {
	MR_IN_SK_LISTENER = 1u << 0, /* set by user space; the accepted sockets keep the copy */
};
struct mr_in_sk {
	__u32 slot;
	__u32 flags;
};

/* mr_in_watch key: what the agent waits on between reconciles (bpf/mr_inwatch.h). {0, port}: a listener
 * opened on the port of an inbound proxy (any netns below the attach point); {netns cookie, 0}: any
 * listener closed in a pod netns (the proxy's, or the app's as the pod goes). Value: the policy slot. */
struct mr_in_watch_key {
	__u64 netns;
	__u32 port; /* host byte order */
	__u32 pad;
};
/* mr_in_ring records. */
enum mr_in_event_kind {
	MR_IN_EV_LISTEN = 1, /* listen(2) on a watched port (sockops TCP_LISTEN_CB) */
	MR_IN_EV_CLOSE = 2,  /* a listener released in a watched netns (sock_release) */
};
struct mr_in_event {
	__u32 kind; /* enum mr_in_event_kind */
	__u32 slot;
	__u32 port;  /* 0 for a close (not readable at release) */
	__u32 pad;
	__u64 netns; /* the netns cookie (0: not read, for a listen) */
};

/* mr_in_stats: per-CPU counters per policy slot. */
struct mr_in_stats {
	__u64 intercepted;      /* delivered to the proxy's listener */
	__u64 bypass_local;     /* from the pod itself (its own address, loopback): e.g. the proxy to the app */
	__u64 bypass_port;      /* port excluded, or not included */
	__u64 bypass_source;    /* source in mr_in_srcs */
	__u64 no_proxy_refused; /* no usable proxy socket: refused (the default) */
	__u64 no_proxy_passed;  /* no usable proxy socket: delivered to the app (MR_IN_F_PASS) */
	__u64 err_assign;       /* a registered socket refused the connection (family, state); also counted above */
	__u64 origdst_served;   /* SO_ORIGINAL_DST answered with the local address of an accepted socket */
};

/* ---- DNS capture (bpf/mr_dns.h, bpf/dns.bpf.c; docs/dns-design.md) ---- */

/* mr_dns_pol: a policy slot's DNS capture. Port-53 queries of the slot's cgroups go to the DNS proxy of
 * their family: UDP by connect (connected sockets) and sendmsg (unconnected sendto), TCP by connect
 * when MR_DNS_F_TCP. Which destinations: every one (MR_DNS_F_ALL) or those in mr_dns_ns. */
enum mr_dns_flag {
	MR_DNS_F_PROXY4 = 1u << 0, /* proxy4_* set: IPv4 (and v4-mapped) queries are captured */
	MR_DNS_F_PROXY6 = 1u << 1, /* proxy6_* set: IPv6 queries are captured */
	MR_DNS_F_ALL = 1u << 2,    /* any destination on port 53, not only mr_dns_ns */
	MR_DNS_F_TCP = 1u << 3,    /* TCP port 53 too (else TCP 53 follows the outbound decision) */
};

struct mr_dns_policy {
	__u32 flags;
	__be32 proxy4_addr;
	__u8 proxy6_addr[16];
	__be16 proxy4_port;
	__be16 proxy6_port;
};

/* mr_dns_ns key: a nameserver whose port-53 queries a slot captures. Value: __u8 1. */
struct mr_dns_ns_key {
	__u32 slot;
	__u8 family;   /* AF_INET (v4-mapped destinations are looked up as IPv4) or AF_INET6 */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
};

/* An address and port; IPv4 (also v4-mapped, unmapped) in addr[0..3] with family AF_INET. */
struct mr_dns_ep {
	__u8 family;
	__u8 pad;
	__be16 port;
	__u8 addr[16];
};

/* mr_dns_socks: one entry per captured socket, keyed by its socket cookie (__u64), written by the
 * connect/sendmsg hooks and deleted by cgroup/sock_release when the socket is closed. A datagram
 * socket has one entry per proxy family (last[0]: IPv4 proxy, last[1]: IPv6 proxy) holding the
 * nameserver it last sent to through that proxy: replies from that proxy are shown as coming from it
 * (recvmsg). A socket whose connect() was captured also has conn (getpeername). */
enum mr_dns_sock_flag {
	MR_DNS_S_CONNECTED = 1u << 0, /* conn is the original peer of a captured connect() */
	MR_DNS_S_LAST4 = 1u << 1,     /* last[0] is set */
	MR_DNS_S_LAST6 = 1u << 2,     /* last[1] is set */
	MR_DNS_S_TCP = 1u << 3,       /* a TCP socket (captured connect to TCP port 53) */
};
struct mr_dns_last {
	struct mr_dns_ep orig;  /* the nameserver the application asked */
	struct mr_dns_ep proxy; /* where the query went instead */
};
struct mr_dns_sock {
	__u32 slot;
	__u32 flags;
	struct mr_dns_ep conn;
	struct mr_dns_last last[2];
};

/* mr_dns_stats: per-CPU counters per policy slot (slot 0: events not tied to a policy). Only port-53
 * traffic of covered cgroups is counted. */
struct mr_dns_stats {
	__u64 udp_connect;   /* UDP connect() sent to the DNS proxy */
	__u64 udp_sendmsg;   /* unconnected sendto()/sendmsg() sent to the DNS proxy */
	__u64 tcp_connect;   /* TCP connect() sent to the DNS proxy */
	__u64 replies;       /* datagrams from the DNS proxy shown as from the nameserver asked */
	__u64 peername;      /* getpeername() answered with the nameserver asked */
	__u64 bypass_cgroup; /* port 53 from a bypass (proxy) cgroup */
	__u64 bypass_owner;  /* port 53 from a bypass uid/gid */
	__u64 bypass_dest;   /* port 53 to a destination not captured (not listed, proxy itself, family) */
	__u64 err_full;      /* mr_dns_socks full (or no memory): the call failed with EPERM (fail closed) */
	__u64 bypass_mark;   /* port 53 from a socket with a bypass mark (SO_MARK) */
};

/* ---- Trace (bpf/mr_trace.h, docs/trace.md): `meshredir trace` reads the decisions of the connect and
 * getsockopt programs from a ring buffer, which the programs write to only while a tracer holds the lease
 * in mr_trace_ctl. ---- */

/* mr_trace_ctl.filters: which of the filters below the programs apply before reserving an event. */
enum mr_trace_filter {
	MR_TRACE_F_SLOT = 1u << 0,   /* only events of policy slot `slot` */
	MR_TRACE_F_CGROUP = 1u << 1, /* only callers in cgroup `cgroup_id` (at level cgroup_level) or below */
	MR_TRACE_F_PID = 1u << 2,    /* only callers of process (tgid) `pid` */
};

/* mr_trace_ctl[0], written by the tracer only. Programs emit while on != 0 and the lease has not lapsed:
 * a tracer renews expires_ns every second and clears `on` when it exits; one killed without a chance to
 * do so stops the events when its lease lapses, and the agent clears the lapsed entry at its next pass. */
struct mr_trace_ctl {
	__u32 on;
	__u32 filters;
	__u64 expires_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) past which the lease has lapsed */
	__u64 cgroup_id;
	__u32 cgroup_level; /* the filter cgroup's depth below the cgroup2 root */
	__u32 slot;
	__u32 pid;
	__u32 tracer;       /* pid of the tracer holding the lease (bookkeeping, no program reads it) */
};

/* mr_trace_cpu: per-CPU, one entry. Counters, and the note a program run keeps of the counter its
 * decision incremented (the event's reason) between the decision and the event. */
struct mr_trace_cpu {
	__u64 emitted; /* events written to mr_trace_ring */
	__u64 lost;    /* events not written: the ring was full (the tracer is behind) */
	__u64 owner;   /* bpf_get_current_pid_tgid() of the run that armed the note */
	__u32 armed;   /* a traced run is between its start and its event */
	__u32 slot;    /* the noted counter's slot */
	__u8 table;    /* enum mr_trace_table of the noted counter, 0: none */
	__u8 field;    /* the noted counter's index among the __u64 fields of its table's struct */
	__u8 pad[6];
};

/* mr_trace_event.hook */
enum mr_trace_hook {
	MR_TRACE_H_CONNECT4 = 1,
	MR_TRACE_H_CONNECT6 = 2,
	MR_TRACE_H_GETSOCKOPT = 3,
	MR_TRACE_H_SENDMSG4 = 4, /* DNS capture: an unconnected sendto()/sendmsg() to port 53 */
	MR_TRACE_H_SENDMSG6 = 5,
	MR_TRACE_H_RECVMSG4 = 6, /* DNS capture: a reply from the DNS proxy, its source rewritten */
	MR_TRACE_H_RECVMSG6 = 7,
	MR_TRACE_H_SKLOOKUP = 8, /* inbound: a TCP connection arriving in a pod netns (no process) */
};
/* mr_trace_event.verdict: what the hook did with the call. */
enum mr_trace_verdict {
	MR_TRACE_V_PASS = 1,     /* connect: left as the application gave it */
	MR_TRACE_V_REDIRECT = 2, /* connect (sendmsg): sent elsewhere (to the proxy, or to the DNS proxy) */
	MR_TRACE_V_REFUSE = 3,   /* connect: refused with EPERM (fail closed) */
	MR_TRACE_V_ANSWER = 4,   /* getsockopt: SO_ORIGINAL_DST answered from our records */
	MR_TRACE_V_UNKNOWN = 5,  /* getsockopt: SO_ORIGINAL_DST on a connection we did not redirect */
	MR_TRACE_V_RELABEL = 6,  /* recvmsg: a reply's source (the DNS proxy) shown as the nameserver asked */
};
/* The counter struct a reason indexes: the reason of an event is the counter the decision incremented,
 * so it has the metric's name (docs/metrics.md). */
enum mr_trace_table {
	MR_TRACE_T_STATS = 1,   /* struct mr_stats */
	MR_TRACE_T_DNS = 2,     /* struct mr_dns_stats */
	MR_TRACE_T_INBOUND = 3, /* struct mr_in_stats */
};

/* One record of mr_trace_ring. Addresses in network byte order, IPv4 in the first 4 bytes. */
struct mr_trace_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns() */
	__u64 cgroup_id; /* the caller's cgroup */
	__u64 cookie;    /* the socket's cookie */
	__u32 pid;       /* tgid */
	__u32 slot;
	__u8 hook;       /* enum mr_trace_hook */
	__u8 verdict;    /* enum mr_trace_verdict */
	__u8 table;      /* enum mr_trace_table; 0: the run's note was lost (preempted by another traced run) */
	__u8 field;
	__u8 family;     /* the original destination (connect: as asked; getsockopt: as answered) */
	__u8 to_family;  /* connect: where the connection went; getsockopt: the proxy socket's local address */
	__be16 port;
	__be16 to_port;
	__be16 from_port; /* sk_lookup: the client's port (connect hooks: 0) */
	__u8 addr[16];
	__u8 to_addr[16];
	__u8 from_addr[16]; /* sk_lookup: the client's address, of `family` (connect hooks: zeros) */
	char comm[16];
	__u32 pad2;
};

/* One field per enum above. clang puts in BTF only the types that something emitted refers to, and
 * no map stores these enums as such (the fields that hold them are __u32/__u8, so pinned maps keep
 * their BTF): the read-only global mr_abi of this type (abi.bpf.c) is what brings them into the
 * object's BTF, where the agent checks src/bpf/abi.ts against them. A new enum here needs its field. */
struct mr_abi {
	enum mr_limit limit;
	enum mr_cg_kind cg_kind;
	enum mr_policy_flag policy_flag;
	enum mr_owner_kind owner_kind;
	enum mr_action action;
	enum mr_orig_flag orig_flag;
	enum mr_sk_flag sk_flag;
	enum mr_fast_flag fast_flag;
	enum mr_gauge gauge;
	enum mr_in_flag in_flag;
	enum mr_in_sk_flag in_sk_flag;
	enum mr_dns_flag dns_flag;
	enum mr_dns_sock_flag dns_sock_flag;
	enum mr_trace_filter trace_filter;
	enum mr_trace_hook trace_hook;
	enum mr_trace_verdict trace_verdict;
	enum mr_trace_table trace_table;
	struct mr_trace_event trace_event; /* no map stores it as its value: brought into BTF here */
	enum mr_in_event_kind in_event_kind;
	struct mr_in_event in_event; /* a ring record, like trace_event */
};

#endif
