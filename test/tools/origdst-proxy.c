/* origdst-proxy.c — test/benchmark stand-in for a mesh sidecar (Envoy/HAProxy): recovers each connection's pre-redirect destination with SO_ORIGINAL_DST and reports or forwards to it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Spelled out so that the tool builds without the netfilter headers installed. */
#ifndef SOL_IP
#define SOL_IP 0
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 41
#endif
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#define IP6T_SO_ORIGINAL_DST_OPT 80

#define BUF_SIZE (64 * 1024)
#define BACKLOG 4096
#define MAX_EVENTS 256
#define ACCEPTS_PER_WAKEUP 256
#define REPORT_LINGER_MS 1000
/* Out of fds: stop accepting for a moment instead of spinning on a listener that stays readable. */
#define ACCEPT_PAUSE_MS 100

enum kind { K_LISTEN, K_SIGNAL, K_REPORT, K_FWD };
enum mode { MODE_REPORT, MODE_FORWARD };

union addr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
	struct sockaddr_storage ss;
};

struct conn;

/* What epoll hands back: one per fd, so a forwarded connection has two. */
struct ep {
	int kind;
	int side;
	int fd;
	int registered;
	uint32_t events;
	struct conn *c;
};

struct ring {
	size_t head, len;
	char data[BUF_SIZE];
};

struct conn {
	struct conn *prev, *next;   /* every live connection, so that exit can release them */
	struct conn *tprev, *tnext; /* report connections, oldest deadline first */
	struct conn *gnext;         /* freed after the current event batch */
	int dead;
	int timed;
	struct ep ep[2]; /* [0] client, [1] original destination (forward mode) */

	/* report mode */
	uint64_t deadline;
	int draining;
	size_t line_len, line_off;
	char line[160];

	/* forward mode: ring[d] carries bytes read from ep[d] towards ep[!d] */
	int connecting;
	int eof[2];  /* read EOF from ep[d] */
	int shut[2]; /* FIN for direction d passed on to ep[!d] */
	struct ring *ring;
};

static int epfd = -1;
static enum mode mode = MODE_REPORT;
static int log_reports; /* --log: report lines also go to stdout (the client may be gone) */
static struct ep listeners[2];
static int nlisteners;
static struct ep sigep;
static volatile int running = 1;
static struct conn conns = { .prev = &conns, .next = &conns };
static struct conn timers = { .tprev = &timers, .tnext = &timers };
static struct conn *graveyard;
static uint64_t accept_paused_until;
static char scratch[BUF_SIZE];

static void die(const char *what)
{
	fprintf(stderr, "origdst-proxy: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *errno_name(int e)
{
	switch (e) {
#define E(x) case x: return #x;
	E(ENOENT) E(ENOPROTOOPT) E(EOPNOTSUPP) E(EINVAL) E(ENOTCONN) E(EPERM) E(EACCES)
	E(EFAULT) E(ENOTSOCK) E(EBADF) E(ENOMEM) E(ENOBUFS) E(EAFNOSUPPORT) E(ENOSYS)
	E(ENODEV) E(ENXIO) E(EAGAIN)
#undef E
	}
	return strerror(e);
}

static int ep_set(struct ep *e, uint32_t want)
{
	struct epoll_event ev = { .events = want, .data.ptr = e };

	if (e->registered ? want == e->events : want == 0)
		return 0;
	/* Deregister rather than MOD to 0: EPOLLHUP/EPOLLERR are reported regardless of the mask, and a
	 * half-closed socket we cannot read from yet (full buffer) would wake the loop forever. */
	if (want == 0) {
		if (epoll_ctl(epfd, EPOLL_CTL_DEL, e->fd, NULL) < 0)
			return -1;
		e->registered = 0;
		e->events = 0;
		return 0;
	}
	if (epoll_ctl(epfd, e->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, e->fd, &ev) < 0)
		return -1;
	e->registered = 1;
	e->events = want;
	return 0;
}

static void fmt_addr(const union addr *a, char *ip, size_t iplen, unsigned *port)
{
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->in4.sin_addr, ip, iplen);
		*port = ntohs(a->in4.sin_port);
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, iplen);
		*port = ntohs(a->in6.sin6_port);
	} else {
		snprintf(ip, iplen, "?");
		*port = 0;
	}
}

static int same_addr(const union addr *a, const union addr *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return 0;
	if (a->sa.sa_family == AF_INET)
		return a->in4.sin_port == b->in4.sin_port &&
		       a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
	if (a->sa.sa_family == AF_INET6)
		return a->in6.sin6_port == b->in6.sin6_port &&
		       !memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr));
	return 0;
}

/* ---- connection lifetime ---- */

static struct conn *conn_new(int kind, int cfd)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	for (int i = 0; i < 2; i++) {
		c->ep[i].kind = kind;
		c->ep[i].side = i;
		c->ep[i].fd = -1;
		c->ep[i].c = c;
	}
	c->ep[0].fd = cfd;
	c->next = &conns;
	c->prev = conns.prev;
	conns.prev->next = c;
	conns.prev = c;
	return c;
}

static void timer_unlink(struct conn *c)
{
	if (!c->timed)
		return;
	c->tprev->tnext = c->tnext;
	c->tnext->tprev = c->tprev;
	c->timed = 0;
}

/* Deadlines are always now + a constant, so appending keeps the list sorted. */
static void timer_add(struct conn *c, uint64_t deadline)
{
	timer_unlink(c);
	c->deadline = deadline;
	c->tnext = &timers;
	c->tprev = timers.tprev;
	timers.tprev->tnext = c;
	timers.tprev = c;
	c->timed = 1;
}

/* rst: SO_LINGER 0, so that a peer sees the failure as a reset rather than a clean end of stream. */
static void conn_close(struct conn *c, int rst)
{
	if (c->dead)
		return;
	for (int i = 0; i < 2; i++) {
		if (c->ep[i].fd < 0)
			continue;
		if (rst) {
			struct linger l = { .l_onoff = 1, .l_linger = 0 };
			setsockopt(c->ep[i].fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		}
		close(c->ep[i].fd);
		c->ep[i].fd = -1;
	}
	timer_unlink(c);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	/* The other fd of this connection may still have an event in the current batch. */
	c->dead = 1;
	c->gnext = graveyard;
	graveyard = c;
}

static void reap(void)
{
	while (graveyard) {
		struct conn *c = graveyard;
		graveyard = c->gnext;
		free(c->ring);
		free(c);
	}
}

/* ---- report mode ---- */

static void report_drain(struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->ep[0].fd, scratch, sizeof(scratch), 0);
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		conn_close(c, 0);
		return;
	}
}

static void report_write(struct conn *c)
{
	while (c->line_off < c->line_len) {
		ssize_t n = send(c->ep[0].fd, c->line + c->line_off, c->line_len - c->line_off,
				 MSG_NOSIGNAL);
		if (n > 0) {
			c->line_off += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (ep_set(&c->ep[0], EPOLLOUT) < 0)
				conn_close(c, 1);
			return;
		}
		conn_close(c, 1);
		return;
	}
	/* Closing with unread client data in the queue would reset the connection and could destroy
	 * the line before the client reads it; so send FIN and swallow input until the client closes. */
	shutdown(c->ep[0].fd, SHUT_WR);
	c->draining = 1;
	if (ep_set(&c->ep[0], EPOLLIN) < 0) {
		conn_close(c, 1);
		return;
	}
	report_drain(c);
}

static void report_start(int fd, const char *fmt_line)
{
	struct conn *c = conn_new(K_REPORT, fd);
	if (!c) {
		close(fd);
		return;
	}
	snprintf(c->line, sizeof(c->line), "%s", fmt_line);
	c->line_len = strlen(c->line);
	timer_add(c, now_ms() + REPORT_LINGER_MS);
	report_write(c);
}

static void report_event(struct conn *c, uint32_t ev)
{
	if (!c->draining) {
		if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			report_write(c);
		return;
	}
	report_drain(c);
}

/* ---- forward mode ---- */

static size_t ring_free_iov(struct ring *r, struct iovec iov[2])
{
	size_t tail = (r->head + r->len) % BUF_SIZE, space = BUF_SIZE - r->len;
	size_t first = BUF_SIZE - tail < space ? BUF_SIZE - tail : space;

	iov[0].iov_base = r->data + tail;
	iov[0].iov_len = first;
	iov[1].iov_base = r->data;
	iov[1].iov_len = space - first;
	return space > first ? 2 : 1;
}

static size_t ring_data_iov(struct ring *r, struct iovec iov[2])
{
	size_t first = BUF_SIZE - r->head < r->len ? BUF_SIZE - r->head : r->len;

	iov[0].iov_base = r->data + r->head;
	iov[0].iov_len = first;
	iov[1].iov_base = r->data;
	iov[1].iov_len = r->len - first;
	return r->len > first ? 2 : 1;
}

/* One read per wakeup: level-triggered epoll calls again, and other connections get their turn. */
static int fwd_read(struct conn *c, int d)
{
	struct ring *r = &c->ring[d];
	struct iovec iov[2];
	struct msghdr m = { .msg_iov = iov };
	ssize_t n;

	if (c->eof[d] || r->len == BUF_SIZE || (d == 1 && c->connecting))
		return 0;
	m.msg_iovlen = ring_free_iov(r, iov);
	do
		n = recvmsg(c->ep[d].fd, &m, 0);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		r->len += n;
	else if (n == 0)
		c->eof[d] = 1;
	else if (errno != EAGAIN && errno != EWOULDBLOCK)
		return -1;
	return 0;
}

/* Flush ring[!s] into ep[s]; once that direction has seen EOF and is empty, pass the FIN on. */
static int fwd_write(struct conn *c, int s)
{
	int d = !s;
	struct ring *r = &c->ring[d];

	if (s == 1 && c->connecting)
		return 0;
	while (r->len > 0) {
		struct iovec iov[2];
		struct msghdr m = { .msg_iov = iov };
		ssize_t n;

		m.msg_iovlen = ring_data_iov(r, iov);
		n = sendmsg(c->ep[s].fd, &m, MSG_NOSIGNAL);
		if (n > 0) {
			r->head = (r->head + n) % BUF_SIZE;
			r->len -= n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		return -1;
	}
	if (r->len == 0)
		r->head = 0;
	if (r->len == 0 && c->eof[d] && !c->shut[d]) {
		if (shutdown(c->ep[s].fd, SHUT_WR) < 0)
			return -1;
		c->shut[d] = 1;
	}
	return 0;
}

static int fwd_update(struct conn *c)
{
	for (int i = 0; i < 2; i++) {
		uint32_t want = 0;

		if (i == 1 && c->connecting) {
			want = EPOLLOUT;
		} else {
			if (!c->eof[i] && c->ring[i].len < BUF_SIZE)
				want |= EPOLLIN;
			if (c->ring[!i].len > 0)
				want |= EPOLLOUT;
		}
		if (ep_set(&c->ep[i], want) < 0)
			return -1;
	}
	return 0;
}

static void fwd_event(struct conn *c, int i, uint32_t ev)
{
	if (i == 1 && c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(c->ep[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		/* Only EPOLLOUT was asked for; a hang-up without it is a failed connect whose error was
		 * already consumed, and ignoring it would spin on the level-triggered HUP. */
		if (err || !(ev & EPOLLOUT)) {
			fprintf(stderr, "origdst-proxy: connect: %s\n", strerror(err ? err : ECONNRESET));
			conn_close(c, 1);
			return;
		}
		c->connecting = 0;
	}
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && fwd_read(c, i) < 0)
		goto reset;
	/* Pass freshly read bytes (or the EOF) on without waiting for another epoll round. */
	if (fwd_write(c, !i) < 0)
		goto reset;
	if ((ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && fwd_write(c, i) < 0)
		goto reset;
	if (c->shut[0] && c->shut[1]) {
		conn_close(c, 0);
		return;
	}
	if (fwd_update(c) < 0)
		goto reset;
	return;
reset:
	conn_close(c, 1);
}

static void fwd_start(int cfd, const union addr *dst, socklen_t dlen)
{
	struct conn *c = conn_new(K_FWD, cfd);
	int one = 1, sfd;

	if (!c) {
		close(cfd);
		return;
	}
	c->ring = malloc(2 * sizeof(*c->ring));
	if (!c->ring)
		goto fail;
	c->ring[0].head = c->ring[0].len = c->ring[1].head = c->ring[1].len = 0;

	sfd = socket(dst->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sfd < 0) {
		fprintf(stderr, "origdst-proxy: socket: %s\n", strerror(errno));
		goto fail;
	}
	c->ep[1].fd = sfd;
	/* Request/response benchmarks would otherwise measure Nagle, not the redirection. */
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (dst->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&dst->in6.sin6_addr)) {
		/* The IPv6 answer carries IPv4 destinations as ::ffff:a.b.c.d; net.ipv6.bindv6only must not
		 * decide whether those are reachable. */
		int zero = 0;
		setsockopt(sfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	if (connect(sfd, &dst->sa, dlen) == 0) {
		c->connecting = 0;
	} else if (errno == EINPROGRESS) {
		c->connecting = 1;
	} else {
		char ip[INET6_ADDRSTRLEN];
		unsigned port;
		fmt_addr(dst, ip, sizeof(ip), &port);
		fprintf(stderr, "origdst-proxy: connect %s port %u: %s\n", ip, port, strerror(errno));
		goto fail;
	}
	if (fwd_update(c) < 0)
		goto fail;
	return;
fail:
	conn_close(c, 1);
}

/* ---- accepting ---- */

static void handle_accepted(int fd, int family, const union addr *peer)
{
	union addr dst, local;
	socklen_t dlen = family == AF_INET ? sizeof(dst.in4) : sizeof(dst.in6);
	socklen_t llen = sizeof(local);
	char line[160], dip[INET6_ADDRSTRLEN], pip[INET6_ADDRSTRLEN];
	unsigned dport, pport;
	int rc, err;

	memset(&dst, 0, sizeof(dst));
	if (family == AF_INET)
		rc = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst.in4, &dlen);
	else
		rc = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST_OPT, &dst.in6, &dlen);
	err = errno;
	/* Anything but a complete sockaddr of a known family would be a wrong destination. */
	if (rc == 0 && !((dst.sa.sa_family == AF_INET && dlen >= sizeof(dst.in4)) ||
			 (dst.sa.sa_family == AF_INET6 && dlen >= sizeof(dst.in6)))) {
		rc = -1;
		err = EAFNOSUPPORT;
	}
	if (rc < 0) {
		fprintf(stderr, "origdst-proxy: getsockopt: %s\n", strerror(err));
		if (mode == MODE_REPORT) {
			snprintf(line, sizeof(line), "ERR %s\n", errno_name(err));
			if (log_reports) {
				fputs(line, stdout);
				fflush(stdout);
			}
			report_start(fd, line);
		} else {
			close(fd);
		}
		return;
	}
	dlen = dst.sa.sa_family == AF_INET ? sizeof(dst.in4) : sizeof(dst.in6);

	if (mode == MODE_REPORT) {
		fmt_addr(&dst, dip, sizeof(dip), &dport);
		fmt_addr(peer, pip, sizeof(pip), &pport);
		snprintf(line, sizeof(line), "ORIGDST %s %u PEER %s %u\n", dip, dport, pip, pport);
		if (log_reports) {
			fputs(line, stdout);
			fflush(stdout);
		}
		report_start(fd, line);
		return;
	}
	/* Without a NAT or BPF record behind it, conntrack can answer with our own address; dialling
	 * that would accept, ask, and dial again until the fds run out. */
	if (getsockname(fd, &local.sa, &llen) == 0 && same_addr(&dst, &local)) {
		fprintf(stderr, "origdst-proxy: original destination is this proxy, refusing to loop\n");
		close(fd);
		return;
	}
	fwd_start(fd, &dst, dlen);
}

static void listeners_enable(int on)
{
	for (int i = 0; i < nlisteners; i++)
		if (ep_set(&listeners[i], on ? EPOLLIN : 0) < 0)
			die("epoll_ctl");
}

static void accept_event(struct ep *l)
{
	for (int k = 0; k < ACCEPTS_PER_WAKEUP; k++) {
		union addr peer;
		socklen_t plen = sizeof(peer);
		int fd = accept4(l->fd, &peer.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			handle_accepted(fd, l->side, &peer);
			continue;
		}
		switch (errno) {
		case EAGAIN:
			return;
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
		case EPERM:
			continue;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			fprintf(stderr, "origdst-proxy: accept: %s (pausing)\n", strerror(errno));
			listeners_enable(0);
			accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
			return;
		default:
			fprintf(stderr, "origdst-proxy: accept: %s\n", strerror(errno));
			return;
		}
	}
}

/* ---- setup ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: origdst-proxy --listen ADDR:PORT [--listen6 [ADDR6]:PORT]\n"
		"                     [--mode forward|report] [--log] [--ready-fd N]\n");
	exit(2);
}

static int parse_port(const char *s, in_port_t *out)
{
	char *end;
	unsigned long v;

	if (!*s)
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535 || *s == '-' || *s == '+')
		return -1;
	*out = htons((uint16_t)v);
	return 0;
}

/* "A.B.C.D:PORT" or ":PORT" (any). */
static int parse_listen4(const char *arg, union addr *a)
{
	char host[64];
	const char *colon = strrchr(arg, ':');
	size_t hl;

	memset(a, 0, sizeof(*a));
	a->in4.sin_family = AF_INET;
	if (!colon || (hl = colon - arg) >= sizeof(host))
		return -1;
	memcpy(host, arg, hl);
	host[hl] = 0;
	if (hl == 0)
		a->in4.sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, host, &a->in4.sin_addr) != 1)
		return -1;
	return parse_port(colon + 1, &a->in4.sin_port);
}

/* "[ADDR6]:PORT", "[]:PORT" or ":PORT" (any), or unbracketed with the port after the last colon. */
static int parse_listen6(const char *arg, union addr *a)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *hs = arg, *he, *port;
	size_t hl;

	memset(a, 0, sizeof(*a));
	a->in6.sin6_family = AF_INET6;
	if (*arg == '[') {
		hs = arg + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return -1;
		port = he + 2;
	} else {
		he = strrchr(arg, ':');
		if (!he)
			return -1;
		port = he + 1;
	}
	if ((hl = he - hs) >= sizeof(host))
		return -1;
	memcpy(host, hs, hl);
	host[hl] = 0;
	if (hl == 0)
		a->in6.sin6_addr = in6addr_any;
	else if (inet_pton(AF_INET6, host, &a->in6.sin6_addr) != 1)
		return -1;
	return parse_port(port, &a->in6.sin6_port);
}

static void open_listener(const union addr *a, char *desc, size_t desclen)
{
	int one = 1, fd;
	union addr bound;
	socklen_t blen = sizeof(bound);
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	size_t used = strlen(desc);
	struct ep *l = &listeners[nlisteners++];

	fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt SO_REUSEADDR");
	/* The IPv4 listener owns IPv4; a dual-stack socket here would also collide with its port. */
	if (a->sa.sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		die("setsockopt IPV6_V6ONLY");
	if (bind(fd, &a->sa, a->sa.sa_family == AF_INET ? sizeof(a->in4) : sizeof(a->in6)) < 0)
		die("bind");
	if (listen(fd, BACKLOG) < 0)
		die("listen");
	/* Port 0 picks an ephemeral port; tests learn the real one from this line. */
	if (getsockname(fd, &bound.sa, &blen) < 0)
		die("getsockname");
	fmt_addr(&bound, ip, sizeof(ip), &port);
	snprintf(desc + used, desclen - used, a->sa.sa_family == AF_INET ? "%s%s:%u" : "%s[%s]:%u",
		 used ? " " : "", ip, port);
	l->kind = K_LISTEN;
	l->side = a->sa.sa_family;
	l->fd = fd;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	/* Forwarding takes two fds per connection; the usual soft limit of 1024 would cap it near 500. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	union addr a4, a6;
	int have4 = 0, have6 = 0, ready_fd = -1;
	char desc[256] = "";
	sigset_t sigs;
	struct epoll_event evs[MAX_EVENTS];

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val;
		char *eq = strchr(argv[i], '=');
		size_t ol = eq ? (size_t)(eq - opt) : strlen(opt);

		if (!strcmp(opt, "-h") || !strcmp(opt, "--help"))
			usage();
		if (!strcmp(opt, "--log")) { /* the one flag without a value */
			log_reports = 1;
			continue;
		}
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			usage();
#define IS(name) (ol == strlen(name) && !strncmp(opt, name, ol))
		if (IS("--listen")) {
			if (parse_listen4(val, &a4) < 0) {
				fprintf(stderr, "origdst-proxy: bad --listen %s (want ADDR:PORT)\n", val);
				usage();
			}
			have4 = 1;
		} else if (IS("--listen6")) {
			if (parse_listen6(val, &a6) < 0) {
				fprintf(stderr, "origdst-proxy: bad --listen6 %s (want [ADDR6]:PORT)\n", val);
				usage();
			}
			have6 = 1;
		} else if (IS("--mode")) {
			if (!strcmp(val, "report"))
				mode = MODE_REPORT;
			else if (!strcmp(val, "forward"))
				mode = MODE_FORWARD;
			else
				usage();
		} else if (IS("--ready-fd")) {
			char *end;
			long v = strtol(val, &end, 10);
			if (!*val || *end || v < 0 || v > 1 << 30)
				usage();
			ready_fd = (int)v;
		} else {
			fprintf(stderr, "origdst-proxy: unknown option %s\n", opt);
			usage();
		}
#undef IS
	}
	if (!have4 && !have6)
		usage();

	signal(SIGPIPE, SIG_IGN);
	/* Via signalfd, so that a stop request is just another event and never interrupts a handler. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0)
		die("sigprocmask");
	raise_nofile();

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	sigep.kind = K_SIGNAL;
	sigep.fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigep.fd < 0)
		die("signalfd");
	if (ep_set(&sigep, EPOLLIN) < 0)
		die("epoll_ctl");

	if (have4)
		open_listener(&a4, desc, sizeof(desc));
	if (have6)
		open_listener(&a6, desc, sizeof(desc));
	listeners_enable(1);
	fprintf(stderr, "origdst-proxy: listening on %s (mode %s)\n", desc,
		mode == MODE_REPORT ? "report" : "forward");
	if (ready_fd >= 0) {
		ssize_t n;
		do
			n = write(ready_fd, "R", 1);
		while (n < 0 && errno == EINTR);
		if (n != 1)
			die("write --ready-fd");
		close(ready_fd);
	}

	while (running) {
		int timeout = -1, n;
		uint64_t now = now_ms();

		if (timers.tnext != &timers)
			timeout = timers.tnext->deadline > now ? (int)(timers.tnext->deadline - now) : 0;
		if (accept_paused_until) {
			int t = accept_paused_until > now ? (int)(accept_paused_until - now) : 0;
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
		n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct ep *e = evs[i].data.ptr;
			uint32_t ev = evs[i].events;

			switch (e->kind) {
			case K_SIGNAL: {
				struct signalfd_siginfo si;
				while (read(e->fd, &si, sizeof(si)) == sizeof(si))
					running = 0;
				break;
			}
			case K_LISTEN:
				accept_event(e);
				break;
			case K_REPORT:
				if (!e->c->dead)
					report_event(e->c, ev);
				break;
			case K_FWD:
				if (!e->c->dead)
					fwd_event(e->c, e->side, ev);
				break;
			}
		}
		now = now_ms();
		while (timers.tnext != &timers && timers.tnext->deadline <= now)
			conn_close(timers.tnext, 0);
		if (accept_paused_until && accept_paused_until <= now) {
			accept_paused_until = 0;
			listeners_enable(1);
		}
		reap();
	}

	while (conns.next != &conns)
		conn_close(conns.next, 0);
	reap();
	for (int i = 0; i < nlisteners; i++)
		close(listeners[i].fd);
	close(sigep.fd);
	close(epfd);
	return 0;
}
