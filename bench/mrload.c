/* mrload.c — meshredir's load generator and echo server for the benchmark: TCP_CRR (a new connection
 * per request, like netperf's) or RR (ping-pong on persistent connections), K requests in flight on
 * one epoll loop, latency percentiles; one JSON line out. `server` answers each request with the same
 * number of bytes; in CRR mode the client closes with RST (SO_LINGER 0) so no TIME_WAIT piles up. */
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
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

/* ---- server: echo requests of `size` bytes back, any number per connection ---- */
static int run_server(const char *ep, int size)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_ep(ep, &ss, &len) < 0) {
		fprintf(stderr, "mrload: bad address %s\n", ep);
		return 2;
	}
	int l = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&ss, len) < 0 || listen(l, 4096) < 0) {
		perror("mrload: bind/listen");
		return 1;
	}
	int ep_fd = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = l };
	epoll_ctl(ep_fd, EPOLL_CTL_ADD, l, &ev);
	fprintf(stderr, "mrload: serving on %s\n", ep);
	fflush(stderr);
	char *buf = malloc(size > 65536 ? size : 65536);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep_fd, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == l) {
				int c;
				while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					struct epoll_event ce = { .events = EPOLLIN, .data.fd = c };
					epoll_ctl(ep_fd, EPOLL_CTL_ADD, c, &ce);
				}
				continue;
			}
			ssize_t r = read(fd, buf, 65536);
			if (r <= 0) {
				if (r == 0 || (errno != EAGAIN && errno != EINTR))
					close(fd);
				continue;
			}
			/* Echo exactly what arrived: request/response sizes stay matched. */
			ssize_t off = 0;
			while (off < r) {
				ssize_t w = write(fd, buf + off, r - off);
				if (w < 0) {
					if (errno == EAGAIN)
						continue;
					close(fd);
					break;
				}
				off += w;
			}
		}
	}
}

/* ---- client ---- */
struct slot {
	int fd;
	int got, sent;
	double t0;
};

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int run_client(const char *ep, int crr, int conc, double duration, double warmup, int size)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_ep(ep, &ss, &len) < 0) {
		fprintf(stderr, "mrload: bad address %s\n", ep);
		return 2;
	}
	int efd = epoll_create1(0), one = 1;
	struct slot *s = calloc(conc, sizeof(*s));
	char *req = malloc(size), *buf = malloc(size > 65536 ? size : 65536);
	memset(req, 'x', size);
	size_t cap = 1 << 20, nlat = 0;
	double *lat = malloc(cap * sizeof(double));
	long done = 0, errors = 0;
	struct linger lg = { 1, 0 };
	double start = now(), measure_from = start + warmup, end = measure_from + duration;

	for (int i = 0; i < conc; i++)
		s[i].fd = -1;
	/* (Re)starts slot i: a new connection in CRR mode, or a new request on the open one in RR. */
#define START(i)                                                                                   \
	do {                                                                                       \
		struct slot *x = &s[i];                                                            \
		x->got = x->sent = 0;                                                              \
		x->t0 = now();                                                                     \
		if (x->fd < 0) {                                                                   \
			x->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);              \
			setsockopt(x->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));            \
			if (crr)                                                                   \
				setsockopt(x->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));         \
			int rc = connect(x->fd, (struct sockaddr *)&ss, len);                      \
			if (rc < 0 && errno != EINPROGRESS) {                                      \
				errors++;                                                          \
				close(x->fd);                                                      \
				x->fd = -1;                                                        \
				break;                                                             \
			}                                                                          \
			struct epoll_event e = { .events = EPOLLOUT | EPOLLIN, .data.u32 = i };    \
			epoll_ctl(efd, EPOLL_CTL_ADD, x->fd, &e);                                  \
		} else {                                                                           \
			ssize_t w = write(x->fd, req, size);                                       \
			if (w > 0)                                                                 \
				x->sent = w;                                                       \
		}                                                                                  \
	} while (0)

	for (int i = 0; i < conc; i++)
		START(i);
	struct epoll_event evs[512];
	while (now() < end) {
		int n = epoll_wait(efd, evs, 512, 100);
		for (int k = 0; k < n; k++) {
			int i = evs[k].data.u32;
			struct slot *x = &s[i];
			if (x->fd < 0)
				continue;
			if (evs[k].events & (EPOLLERR | EPOLLHUP) && !(evs[k].events & EPOLLIN)) {
				errors++;
				close(x->fd);
				x->fd = -1;
				START(i);
				continue;
			}
			if (x->sent < size && (evs[k].events & EPOLLOUT)) {
				ssize_t w = write(x->fd, req + x->sent, size - x->sent);
				if (w > 0)
					x->sent += w;
				if (x->sent == size) {
					struct epoll_event e = { .events = EPOLLIN, .data.u32 = i };
					epoll_ctl(efd, EPOLL_CTL_MOD, x->fd, &e);
				}
			}
			if (evs[k].events & EPOLLIN) {
				ssize_t r = read(x->fd, buf, 65536);
				if (r <= 0) {
					if (r < 0 && errno == EAGAIN)
						continue;
					errors++;
					close(x->fd);
					x->fd = -1;
					START(i);
					continue;
				}
				x->got += r;
				if (x->got >= size) {
					double t = now();
					if (t >= measure_from) {
						done++;
						if (nlat == cap) {
							cap *= 2;
							lat = realloc(lat, cap * sizeof(double));
						}
						lat[nlat++] = t - x->t0;
					}
					if (crr) {
						close(x->fd); /* RST: SO_LINGER 0 */
						x->fd = -1;
					}
					START(i);
				}
			}
		}
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	qsort(lat, nlat, sizeof(double), cmp_d);
	double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
	printf("{\"mode\":\"%s\",\"requests\":%ld,\"seconds\":%.3f,\"rate\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%ld,\"client_cpu\":%.2f}\n",
	       crr ? "crr" : "rr", done, duration, done / duration, p50 * 1e6, p99 * 1e6, errors, cpu / (now() - start));
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return run_server(argv[2], argc > 3 ? atoi(argv[3]) : 1);
	if (argc >= 3 && !strcmp(argv[1], "client")) {
		/* client ADDR:PORT crr|rr CONCURRENCY DURATION WARMUP SIZE */
		int crr = argc > 3 ? !strcmp(argv[3], "crr") : 1;
		int conc = argc > 4 ? atoi(argv[4]) : 16;
		double dur = argc > 5 ? atof(argv[5]) : 5, warm = argc > 6 ? atof(argv[6]) : 0.5;
		int size = argc > 7 ? atoi(argv[7]) : 1;
		return run_client(argv[2], crr, conc, dur, warm, size);
	}
	fprintf(stderr, "usage: mrload server ADDR:PORT [SIZE] | mrload client ADDR:PORT crr|rr CONC DURATION WARMUP SIZE\n");
	return 2;
}
