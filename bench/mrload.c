/* mrload.c — meshredir's load generator and servers for the benchmark. Client modes: TCP_CRR (a new
 * connection per request, like netperf's), RR (ping-pong on persistent connections) and STREAM (one
 * direction, non-blocking writes of SIZE bytes as fast as the socket takes them); K connections on one
 * epoll loop; latency percentiles; one JSON line out. `server` echoes every byte back; `sink` reads
 * and discards, and on the client's EOF answers with the byte count it read, so a stream's bytes are
 * confirmed by the receiver. Every socket is non-blocking (the sk_msg fast path never accelerates a
 * blocking application socket). In CRR mode the client closes with RST (SO_LINGER 0) so no TIME_WAIT
 * piles up. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RBUF (256 * 1024)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int parse_ep(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	if (!colon || colon - s >= (long)sizeof(host))
		return -1;
	memcpy(host, s, colon - s);
	host[colon - s] = 0;
	int port = atoi(colon + 1);
	memset(ss, 0, sizeof(*ss));
	char *h = host;
	if (h[0] == '[') {
		h++;
		h[strlen(h) - 1] = 0;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		*len = sizeof(*a6);
		return 0;
	}
	return -1;
}

static void raise_nofile(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

/* ---- servers: `server` echoes, `sink` counts; neither ever spins on EAGAIN ---- */
struct conn {
	int fd;
	char *pend; /* echo bytes the socket did not take yet (reading pauses until they are out) */
	size_t plen, poff;
	long long count; /* sink: bytes read */
};

static void conn_close(int efd, struct conn *c)
{
	epoll_ctl(efd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->pend);
	free(c);
}

static void conn_events(int efd, struct conn *c, unsigned ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };
	epoll_ctl(efd, EPOLL_CTL_MOD, c->fd, &e);
}

static int run_server(const char *ep, int sink, int transparent)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_ep(ep, &ss, &len) < 0) {
		fprintf(stderr, "mrload: bad address %s\n", ep);
		return 2;
	}
	int l = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* The inbound bench's proxy: TPROXY hands connections only to a transparent listener. */
	if (transparent &&
	    (ss.ss_family == AF_INET ? setsockopt(l, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
				     : setsockopt(l, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))) < 0) {
		perror("mrload: IP_TRANSPARENT");
		return 1;
	}
	if (bind(l, (struct sockaddr *)&ss, len) < 0 || listen(l, 4096) < 0) {
		perror("mrload: bind/listen");
		return 1;
	}
	int efd = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(efd, EPOLL_CTL_ADD, l, &ev);
	fprintf(stderr, "mrload: %s on %s\n", sink ? "sink" : "echo", ep);
	fflush(stderr);
	char *buf = malloc(RBUF);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(efd, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				int fd;
				while ((fd = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c = calloc(1, sizeof(*c));
					c->fd = fd;
					struct epoll_event ce = { .events = EPOLLIN, .data.ptr = c };
					epoll_ctl(efd, EPOLL_CTL_ADD, fd, &ce);
				}
				continue;
			}
			if (c->plen) { /* echo: finish the pending bytes first */
				ssize_t w = write(c->fd, c->pend + c->poff, c->plen - c->poff);
				if (w < 0 && errno != EAGAIN && errno != EINTR) {
					conn_close(efd, c);
					continue;
				}
				if (w > 0)
					c->poff += w;
				if (c->poff == c->plen) {
					c->plen = c->poff = 0;
					conn_events(efd, c, EPOLLIN);
				}
				continue;
			}
			ssize_t r = read(c->fd, buf, sink ? RBUF : 65536);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0) {
				if (r == 0 && sink) {
					/* The client's EOF: tell it how many bytes arrived (a few bytes into an
					 * empty send buffer: they go out at once). */
					char line[32];
					int k = snprintf(line, sizeof(line), "%lld\n", c->count);
					if (write(c->fd, line, k) != k)
						fprintf(stderr, "mrload: sink could not confirm %lld bytes\n", c->count);
				}
				conn_close(efd, c);
				continue;
			}
			if (sink) {
				c->count += r;
				continue;
			}
			/* Echo exactly what arrived: request/response sizes stay matched. */
			ssize_t w = write(c->fd, buf, r);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				conn_close(efd, c);
				continue;
			}
			if (w < 0)
				w = 0;
			if (w < r) {
				c->pend = realloc(c->pend, r - w);
				memcpy(c->pend, buf + w, r - w);
				c->plen = r - w;
				c->poff = 0;
				conn_events(efd, c, EPOLLOUT);
			}
		}
	}
}

/* ---- client ---- */
enum kind { CRR, RR, STREAM };

struct slot {
	int fd;
	long got, sent;     /* this request: bytes received, bytes sent */
	long long total;    /* stream: bytes the kernel took on this connection */
	int answered;       /* a response arrived on this connection (it reached a server) */
	int out;            /* EPOLLOUT is armed */
	double t0, retry_at;
	long long confirmed; /* stream: what the sink said it read, -1 until it answered */
};

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static struct {
	int efd, conc, size;
	enum kind kind;
	struct sockaddr_storage ss;
	socklen_t len;
	struct slot *s;
	char *req;
	long err_connect, err_reset, err_other, conns;
} C;

static void arm(int i, int out)
{
	struct slot *x = &C.s[i];
	if (x->out == out)
		return;
	struct epoll_event e = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u32 = i };
	epoll_ctl(C.efd, EPOLL_CTL_MOD, x->fd, &e);
	x->out = out;
}

static void drop(int i, long *err)
{
	struct slot *x = &C.s[i];
	if (err)
		(*err)++;
	if (x->fd >= 0) {
		epoll_ctl(C.efd, EPOLL_CTL_DEL, x->fd, NULL);
		close(x->fd);
	}
	x->fd = -1;
	x->retry_at = 0;
}

/* Sends what is left of the current request; arms EPOLLOUT only while something is left. */
static void push(int i)
{
	struct slot *x = &C.s[i];
	while (x->sent < C.size) {
		ssize_t w = write(x->fd, C.req + x->sent, C.size - x->sent);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			drop(i, errno == ECONNRESET || errno == EPIPE ? &C.err_reset : &C.err_other);
			return;
		}
		x->sent += w;
	}
	arm(i, x->sent < C.size);
}

/* A new connection in slot i; a connect() that fails is counted and retried a millisecond later. */
static void open_slot(int i)
{
	struct slot *x = &C.s[i];
	static const struct linger lg = { 1, 0 };
	int one = 1;
	x->got = x->sent = 0;
	x->total = 0;
	x->answered = 0;
	x->confirmed = -1;
	x->t0 = now();
	x->fd = socket(C.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (x->fd < 0) {
		C.err_connect++;
		x->retry_at = now() + 0.001;
		return;
	}
	/* A stream keeps Nagle, as bulk senders (iperf3) do; request/response turns it off. */
	if (C.kind != STREAM)
		setsockopt(x->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (C.kind == CRR)
		setsockopt(x->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (connect(x->fd, (struct sockaddr *)&C.ss, C.len) < 0 && errno != EINPROGRESS) {
		close(x->fd);
		x->fd = -1;
		C.err_connect++;
		x->retry_at = now() + 0.001;
		return;
	}
	struct epoll_event e = { .events = EPOLLIN | EPOLLOUT, .data.u32 = i };
	epoll_ctl(C.efd, EPOLL_CTL_ADD, x->fd, &e);
	x->out = 1;
}

static double cpu_of(struct timeval t)
{
	return t.tv_sec + t.tv_usec / 1e6;
}

static int run_client(const char *ep, enum kind kind, int conc, double duration, double warmup, int size)
{
	if (parse_ep(ep, &C.ss, &C.len) < 0) {
		fprintf(stderr, "mrload: bad address %s\n", ep);
		return 2;
	}
	if (size < 1 || conc < 1) {
		fprintf(stderr, "mrload: size and concurrency must be >= 1\n");
		return 2;
	}
	C.efd = epoll_create1(0);
	C.kind = kind;
	C.conc = conc;
	C.size = size;
	C.s = calloc(conc, sizeof(*C.s));
	C.req = malloc(size);
	memset(C.req, 'x', size);
	char *buf = malloc(RBUF);
	size_t cap = 1 << 20, nlat = 0;
	double *lat = malloc(cap * sizeof(double));
	long done = 0;
	long long window_bytes = 0;
	double start = now(), measure_from = start + warmup, end = measure_from + duration;

	for (int i = 0; i < conc; i++)
		open_slot(i);
	struct epoll_event evs[512];
	for (;;) {
		double t = now();
		if (t >= end)
			break;
		int dead = 0;
		for (int i = 0; i < conc; i++) {
			if (C.s[i].fd >= 0)
				continue;
			if (t >= C.s[i].retry_at)
				open_slot(i);
			if (C.s[i].fd < 0)
				dead = 1;
		}
		int n = epoll_wait(C.efd, evs, 512, dead ? 1 : 50);
		for (int k = 0; k < n; k++) {
			int i = evs[k].data.u32;
			struct slot *x = &C.s[i];
			if (x->fd < 0)
				continue;
			unsigned e = evs[k].events;
			if ((e & (EPOLLERR | EPOLLHUP)) && !(e & EPOLLIN)) {
				drop(i, x->answered || x->total ? &C.err_reset : &C.err_connect);
				continue;
			}
			if (kind == STREAM) {
				if (e & EPOLLIN) { /* the sink never speaks during a stream: EOF or an error */
					drop(i, x->total ? &C.err_reset : &C.err_connect);
					continue;
				}
				if (e & EPOLLOUT) {
					int bursts = 64;
					while (bursts--) {
						ssize_t w = write(x->fd, C.req + x->sent, size - x->sent);
						if (w < 0) {
							if (errno != EAGAIN && errno != EINTR)
								drop(i, x->total ? &C.err_reset : &C.err_connect);
							break;
						}
						if (!x->total)
							C.conns++;
						x->total += w;
						x->sent = (x->sent + w) % size;
						double tw = now();
						if (tw >= measure_from && tw < end)
							window_bytes += w;
					}
				}
				continue;
			}
			if (e & EPOLLOUT) {
				push(i);
				if (x->fd < 0)
					continue;
			}
			if (!(e & EPOLLIN))
				continue;
			ssize_t r = read(x->fd, buf, RBUF);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0) {
				/* Nothing back yet on this connection: it never reached a server (refused, timed
				 * out, unreachable, or closed at once by a proxy that could not forward it). */
				drop(i, !(x->answered || x->got) ? &C.err_connect
				     : r == 0 || errno == ECONNRESET ? &C.err_reset : &C.err_other);
				continue;
			}
			x->got += r;
			if (x->got < size)
				continue;
			double t1 = now();
			if (!x->answered) {
				x->answered = 1;
				C.conns++;
			}
			if (t1 >= measure_from) {
				done++;
				if (nlat == cap) {
					cap *= 2;
					lat = realloc(lat, cap * sizeof(double));
				}
				lat[nlat++] = t1 - x->t0;
			}
			if (kind == CRR) {
				drop(i, NULL); /* RST: SO_LINGER 0 */
				open_slot(i);
			} else { /* the next request on the open connection */
				x->got = x->sent = 0;
				x->t0 = t1;
				push(i);
			}
		}
	}
	double t_end = now();
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double wall = t_end - start;

	/* A stream ends with EOF; each sink answers with what it read: the bytes must match. */
	double drain = 0, e2e = 0;
	long long total = 0, confirmed = 0;
	if (kind == STREAM) {
		for (int i = 0; i < conc; i++) {
			struct slot *x = &C.s[i];
			if (x->fd < 0)
				continue;
			shutdown(x->fd, SHUT_WR);
			struct epoll_event e = { .events = EPOLLIN, .data.u32 = i };
			epoll_ctl(C.efd, EPOLL_CTL_MOD, x->fd, &e);
			x->got = 0;
		}
		char line[64];
		int waiting = 0;
		for (int i = 0; i < conc; i++)
			waiting += C.s[i].fd >= 0;
		while (waiting && now() < t_end + 10) {
			int n = epoll_wait(C.efd, evs, 512, 100);
			for (int k = 0; k < n; k++) {
				int i = evs[k].data.u32;
				struct slot *x = &C.s[i];
				if (x->fd < 0)
					continue;
				ssize_t r = read(x->fd, line + x->got, sizeof(line) - 1 - x->got);
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				if (r > 0) {
					x->got += r;
					line[x->got] = 0;
					if (!strchr(line, '\n'))
						continue;
					x->confirmed = atoll(line);
				}
				waiting--;
				epoll_ctl(C.efd, EPOLL_CTL_DEL, x->fd, NULL);
				close(x->fd);
				x->fd = -1;
			}
		}
		drain = now() - t_end;
		for (int i = 0; i < conc; i++) {
			struct slot *x = &C.s[i];
			total += x->total;
			if (x->confirmed < 0) {
				if (x->total)
					C.err_other++; /* no confirmation: the bytes' arrival is unknown */
			} else {
				confirmed += x->confirmed;
				if (x->confirmed != x->total)
					C.err_other++; /* the sink read another number of bytes than were sent */
			}
		}
		e2e = confirmed / (now() - start);
	}
	/* Where the scheduler ran the client: how often it moved it to another CPU (the bench's noise) */
	long migr = -1;
	FILE *sf = fopen("/proc/self/sched", "r");
	if (sf) {
		char ln[256];
		while (fgets(ln, sizeof(ln), sf))
			if (sscanf(ln, "se.nr_migrations : %ld", &migr) == 1)
				break;
		fclose(sf);
	}
	qsort(lat, nlat, sizeof(double), cmp_d);
	double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
	long errors = C.err_connect + C.err_reset + C.err_other;
	static const char *names[] = { "crr", "rr", "stream" };
	printf("{\"mode\":\"%s\",\"requests\":%ld,\"seconds\":%.3f,\"rate\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	       "\"errors\":%ld,\"err_connect\":%ld,\"err_reset\":%ld,\"err_other\":%ld,\"conns\":%ld,"
	       "\"client_user\":%.4f,\"client_sys\":%.4f,\"wall\":%.3f,"
	       "\"bytes\":%lld,\"confirmed\":%lld,\"mbytes_s\":%.2f,\"e2e_mbytes_s\":%.2f,\"drain_ms\":%.2f,"
	       "\"migrations\":%ld,\"nivcsw\":%ld}\n",
	       names[kind], done, duration, done / duration, p50 * 1e6, p99 * 1e6, errors, C.err_connect, C.err_reset,
	       C.err_other, C.conns, cpu_of(ru.ru_utime) / wall, cpu_of(ru.ru_stime) / wall, wall, total, confirmed,
	       window_bytes / duration / 1e6, e2e / 1e6, drain * 1e3, migr, ru.ru_nivcsw);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return run_server(argv[2], 0, argc >= 4 && !strcmp(argv[3], "transparent"));
	if (argc >= 3 && !strcmp(argv[1], "sink"))
		return run_server(argv[2], 1, 0);
	if (argc >= 3 && !strcmp(argv[1], "client")) {
		/* client ADDR:PORT crr|rr|stream CONCURRENCY DURATION WARMUP SIZE */
		const char *m = argc > 3 ? argv[3] : "crr";
		enum kind kind = !strcmp(m, "rr") ? RR : !strcmp(m, "stream") ? STREAM : CRR;
		if (strcmp(m, "rr") && strcmp(m, "stream") && strcmp(m, "crr")) {
			fprintf(stderr, "mrload: unknown client mode %s\n", m);
			return 2;
		}
		int conc = argc > 4 ? atoi(argv[4]) : 16;
		double dur = argc > 5 ? atof(argv[5]) : 5, warm = argc > 6 ? atof(argv[6]) : 0.5;
		int size = argc > 7 ? atoi(argv[7]) : 1;
		return run_client(argv[2], kind, conc, dur, warm, size);
	}
	fprintf(stderr, "usage: mrload server ADDR:PORT [transparent] | mrload sink ADDR:PORT |\n"
			"       mrload client ADDR:PORT crr|rr|stream CONC DURATION WARMUP SIZE\n");
	return 2;
}
