/* xfer.c — checksummed echo transfers for the fast-path kernel tests, run inside a pod.
 *
 *   xfer HOST PORT [--size N] [--parallel N] [--chunk N] [--blocking] [--pace-ms N]
 *                  [--read-pause-ms N] [--rst] [--hold] [--deadline S] [--bind ADDR] [--tfo]
 *
 * Each connection sends SIZE bytes of its own pseudo-random stream (never repeating, so a reordered or
 * lost block is caught), half-closes (shutdown SHUT_WR), and reads the echo to EOF, checking every byte
 * against the same stream. Non-blocking by default (one epoll loop; short writes and EAGAIN counted),
 * or --blocking (a writer and a reader thread per connection). --pace-ms sleeps between writes,
 * --read-pause-ms stops reading that long after each read (a slow reader), --rst resets the connection
 * after the first echoed byte, --hold keeps every socket open (also failed ones) until stdin closes,
 * after the report. --bind binds each socket to ADDR (port 0) before connecting; --tfo connects with TCP
 * Fast Open (TCP_FASTOPEN_CONNECT: the SYN leaves with the first write, carrying its data). Always prints one JSON line and exits 0 (exit 2 on bad usage): at the deadline the
 * report says which connections stalled, by local port. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { P_CONNECT, P_SEND, P_DRAIN, P_DONE, P_FAILED };
static const char *phase_name[] = { "connect", "send", "half-closed", "done", "failed" };

struct conn {
	int i, fd, lport;
	enum phase phase;
	uint64_t wgen, rgen;     /* stream generators: writer and checker */
	uint64_t sent, received;
	uint64_t mismatch_at;    /* first wrong byte + 1, or 0 */
	int err;                 /* errno of a failure */
	unsigned char *wbuf;     /* the block being written (kept until fully sent) */
	size_t woff, wlen;
	int64_t next_write_ms, read_resume_ms;
	int reset;
};

static struct sockaddr_storage dst;
static socklen_t dstlen;
static uint64_t size = 1 << 20;
static int parallel = 1, blocking, rst, hold;
static size_t chunk = 65536;
static int pace_ms, read_pause_ms, deadline_s = 60, tfo;
static struct sockaddr_storage src;
static socklen_t srclen;
static struct conn *conns;
static uint64_t partial_writes, eagains;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* xorshift64*: one byte at a time from a 64-bit state. */
static unsigned char next_byte(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (unsigned char)((*s * 0x2545F4914F6CDD1DULL) >> 56);
}

static void fill(struct conn *c)
{
	size_t n = chunk;
	if (n > size - c->sent)
		n = size - c->sent;
	for (size_t k = 0; k < n; k++)
		c->wbuf[k] = next_byte(&c->wgen);
	c->woff = 0;
	c->wlen = n;
}

static void check(struct conn *c, const unsigned char *b, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		unsigned char want = next_byte(&c->rgen);
		if (!c->mismatch_at && b[k] != want)
			c->mismatch_at = c->received + k + 1;
	}
	c->received += n;
}

static void report(int at_deadline)
{
	pthread_mutex_lock(&mu);
	int ok = !at_deadline, n = 0;
	printf("{\"n\":%d,\"partial_writes\":%llu,\"eagain\":%llu,\"bad\":[", parallel,
	       (unsigned long long)partial_writes, (unsigned long long)eagains);
	for (int i = 0; i < parallel; i++) {
		struct conn *c = &conns[i];
		int good = c->phase == P_DONE && !c->mismatch_at && (c->reset || c->received == size);
		if (good || (at_deadline && c->phase != P_FAILED && c->phase != P_DONE))
			continue;
		ok = 0;
		if (n++ < 10)
			printf("%s{\"i\":%d,\"lport\":%d,\"phase\":\"%s\",\"error\":\"%s\",\"sent\":%llu,\"received\":%llu,\"mismatch_at\":%llu}",
			       n > 1 ? "," : "", c->i, c->lport, phase_name[c->phase], c->err ? strerrorname_np(c->err) : "",
			       (unsigned long long)c->sent, (unsigned long long)c->received, (unsigned long long)c->mismatch_at);
	}
	printf("],\"stalled\":[");
	n = 0;
	for (int i = 0; at_deadline && i < parallel; i++) {
		struct conn *c = &conns[i];
		if (c->phase == P_DONE || c->phase == P_FAILED)
			continue;
		if (n++ < 20)
			printf("%s{\"i\":%d,\"lport\":%d,\"phase\":\"%s\",\"sent\":%llu,\"received\":%llu}", n > 1 ? "," : "", c->i,
			       c->lport, phase_name[c->phase], (unsigned long long)c->sent, (unsigned long long)c->received);
	}
	printf("],\"ok\":%s}\n", ok ? "true" : "false");
	fflush(stdout);
	pthread_mutex_unlock(&mu);
}

static void wait_stdin_then_exit(void)
{
	char b[256];
	while (read(0, b, sizeof(b)) > 0)
		;
	exit(0);
}

static void *deadline_thread(void *arg)
{
	(void)arg;
	sleep(deadline_s);
	report(1);
	if (hold)
		wait_stdin_then_exit();
	exit(0);
}

static void fail(struct conn *c, int err)
{
	c->err = err;
	c->phase = P_FAILED;
}

static int open_conn(struct conn *c, int nonblock)
{
	c->fd = socket(dst.ss_family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (c->fd < 0)
		return -1;
	if (srclen && bind(c->fd, (struct sockaddr *)&src, srclen) < 0) {
		fail(c, errno);
		return 0;
	}
	int one = 1;
	if (tfo && setsockopt(c->fd, IPPROTO_TCP, 30 /* TCP_FASTOPEN_CONNECT */, &one, sizeof(one)) < 0) {
		fail(c, errno);
		return 0;
	}
	if (connect(c->fd, (struct sockaddr *)&dst, dstlen) < 0 && errno != EINPROGRESS) {
		fail(c, errno);
		return 0;
	}
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);
	if (getsockname(c->fd, (struct sockaddr *)&me, &ml) == 0)
		c->lport = ntohs(me.ss_family == AF_INET ? ((struct sockaddr_in *)&me)->sin_port : ((struct sockaddr_in6 *)&me)->sin6_port);
	return 0;
}

static void do_reset(struct conn *c)
{
	struct linger l = { 1, 0 };
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(c->fd);
	c->fd = -1;
	c->reset = 1;
	c->phase = P_DONE;
}

/* ---- blocking: a writer and a reader thread per connection ---- */
static void *writer(void *arg)
{
	struct conn *c = arg;
	while (c->sent < size) {
		fill(c);
		while (c->woff < c->wlen) {
			ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				pthread_mutex_lock(&mu);
				fail(c, errno);
				pthread_mutex_unlock(&mu);
				return NULL;
			}
			if ((size_t)w < c->wlen - c->woff)
				__atomic_add_fetch(&partial_writes, 1, __ATOMIC_RELAXED);
			c->woff += w;
			c->sent += w;
		}
		c->wlen = 0;
		if (pace_ms)
			usleep(pace_ms * 1000);
	}
	shutdown(c->fd, SHUT_WR);
	pthread_mutex_lock(&mu);
	if (c->phase == P_SEND)
		c->phase = P_DRAIN;
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void *reader(void *arg)
{
	struct conn *c = arg;
	unsigned char *b = malloc(1 << 16);
	for (;;) {
		ssize_t r = recv(c->fd, b, 1 << 16, 0);
		if (r < 0 && errno == EINTR)
			continue;
		pthread_mutex_lock(&mu);
		if (r < 0) {
			fail(c, errno);
		} else if (r == 0) {
			if (c->phase != P_FAILED)
				c->phase = P_DONE;
		} else {
			check(c, b, r);
		}
		pthread_mutex_unlock(&mu);
		if (r <= 0)
			break;
		if (read_pause_ms)
			usleep(read_pause_ms * 1000);
	}
	free(b);
	return NULL;
}

static void run_blocking(void)
{
	pthread_t *t = calloc(2 * parallel, sizeof(pthread_t));
	for (int i = 0; i < parallel; i++) {
		struct conn *c = &conns[i];
		if (open_conn(c, 0) < 0 || c->phase == P_FAILED) {
			if (c->phase != P_FAILED)
				fail(c, errno);
			continue;
		}
		c->phase = P_SEND;
		pthread_create(&t[2 * i], NULL, writer, c);
		pthread_create(&t[2 * i + 1], NULL, reader, c);
	}
	for (int i = 0; i < parallel; i++) {
		if (t[2 * i])
			pthread_join(t[2 * i], NULL);
		if (t[2 * i + 1])
			pthread_join(t[2 * i + 1], NULL);
	}
}

/* ---- non-blocking: one epoll loop ---- */
static void arm(int ep, struct conn *c, int64_t now)
{
	uint32_t ev = 0;
	if (c->phase == P_CONNECT)
		ev = EPOLLOUT;
	else if (c->phase == P_SEND || c->phase == P_DRAIN) {
		if (now >= c->read_resume_ms)
			ev |= EPOLLIN;
		if (c->phase == P_SEND && now >= c->next_write_ms)
			ev |= EPOLLOUT;
	}
	struct epoll_event e = { .events = ev, .data.ptr = c };
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void on_write(struct conn *c, int64_t now)
{
	while (c->phase == P_SEND) {
		if (c->woff == c->wlen) {
			if (c->sent == size) {
				shutdown(c->fd, SHUT_WR);
				c->phase = P_DRAIN;
				return;
			}
			if (pace_ms && c->wlen) {
				c->wlen = c->woff = 0;
				c->next_write_ms = now + pace_ms;
				return;
			}
			fill(c);
		}
		ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN) {
				eagains++;
				return;
			}
			fail(c, errno);
			return;
		}
		if ((size_t)w < c->wlen - c->woff)
			partial_writes++;
		c->woff += w;
		c->sent += w;
	}
}

static void on_read(struct conn *c, int64_t now)
{
	static unsigned char b[1 << 16];
	ssize_t r = recv(c->fd, b, sizeof(b), 0);
	if (r < 0) {
		if (errno != EAGAIN)
			fail(c, errno);
		return;
	}
	if (r == 0) {
		c->phase = c->sent == size ? P_DONE : P_FAILED;
		if (c->phase == P_FAILED)
			c->err = EPIPE;
		return;
	}
	check(c, b, r);
	if (rst) {
		do_reset(c);
		return;
	}
	if (read_pause_ms)
		c->read_resume_ms = now + read_pause_ms;
}

static void run_nonblocking(void)
{
	int ep = epoll_create1(0);
	int left = parallel;
	for (int i = 0; i < parallel; i++) {
		struct conn *c = &conns[i];
		if (open_conn(c, 1) < 0) {
			fail(c, errno);
			left--;
			continue;
		}
		if (c->phase == P_FAILED) {
			left--;
			continue;
		}
		struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
	}
	struct epoll_event evs[256];
	while (left > 0) {
		int n = epoll_wait(ep, evs, 256, (pace_ms || read_pause_ms) ? 5 : 1000);
		int64_t now = now_ms();
		pthread_mutex_lock(&mu);
		for (int k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;
			if (c->phase == P_CONNECT) {
				int err = 0;
				socklen_t l = sizeof(err);
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
				if (err)
					fail(c, err);
				else
					c->phase = P_SEND;
			}
			if ((evs[k].events & EPOLLOUT) && c->phase == P_SEND)
				on_write(c, now);
			if ((evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (c->phase == P_SEND || c->phase == P_DRAIN))
				on_read(c, now);
			if (c->phase == P_DONE || c->phase == P_FAILED) {
				if (c->fd >= 0)
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				if (c->fd >= 0 && !hold) {
					close(c->fd);
					c->fd = -1;
				}
				left--;
			} else
				arm(ep, c, now);
		}
		/* With timers (pacing, paused reads), every connection is re-armed on every turn. */
		for (int i = 0; (pace_ms || read_pause_ms) && i < parallel; i++)
			if (conns[i].fd >= 0 && (conns[i].phase == P_SEND || conns[i].phase == P_DRAIN))
				arm(ep, &conns[i], now);
		pthread_mutex_unlock(&mu);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: xfer HOST PORT [--size N] [--parallel N] [--chunk N] [--blocking] [--pace-ms N]\n"
			"            [--read-pause-ms N] [--rst] [--hold] [--deadline S] [--bind ADDR] [--tfo]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		usage();
	struct sockaddr_in *s4 = (struct sockaddr_in *)&dst;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&dst;
	int port = atoi(argv[2]);
	if (inet_pton(AF_INET, argv[1], &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		dstlen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		dstlen = sizeof(*s6);
	} else
		usage();
	for (int a = 3; a < argc; a++) {
		const char *o = argv[a];
		const char *v = a + 1 < argc ? argv[a + 1] : NULL;
		if (!strcmp(o, "--blocking"))
			blocking = 1;
		else if (!strcmp(o, "--rst"))
			rst = 1;
		else if (!strcmp(o, "--hold"))
			hold = 1;
		else if (v && !strcmp(o, "--size"))
			size = strtoull(v, NULL, 0), a++;
		else if (v && !strcmp(o, "--parallel"))
			parallel = atoi(v), a++;
		else if (v && !strcmp(o, "--chunk"))
			chunk = strtoul(v, NULL, 0), a++;
		else if (v && !strcmp(o, "--pace-ms"))
			pace_ms = atoi(v), a++;
		else if (v && !strcmp(o, "--read-pause-ms"))
			read_pause_ms = atoi(v), a++;
		else if (v && !strcmp(o, "--deadline"))
			deadline_s = atoi(v), a++;
		else if (!strcmp(o, "--tfo"))
			tfo = 1;
		else if (v && !strcmp(o, "--bind")) {
			struct sockaddr_in *b4 = (struct sockaddr_in *)&src;
			struct sockaddr_in6 *b6 = (struct sockaddr_in6 *)&src;
			if (inet_pton(AF_INET, v, &b4->sin_addr) == 1)
				b4->sin_family = AF_INET, srclen = sizeof(*b4);
			else if (inet_pton(AF_INET6, v, &b6->sin6_addr) == 1)
				b6->sin6_family = AF_INET6, srclen = sizeof(*b6);
			else
				usage();
			a++;
		}
		else
			usage();
	}
	if (parallel < 1 || chunk < 1 || (blocking && (rst || parallel > 64)))
		usage();
	signal(SIGPIPE, SIG_IGN);
	conns = calloc(parallel, sizeof(*conns));
	for (int i = 0; i < parallel; i++) {
		conns[i].i = i;
		conns[i].fd = -1;
		conns[i].wgen = conns[i].rgen = (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL;
		conns[i].wbuf = malloc(chunk);
	}
	pthread_t dl;
	pthread_create(&dl, NULL, deadline_thread, NULL);
	if (blocking)
		run_blocking();
	else
		run_nonblocking();
	report(0);
	if (hold)
		wait_stdin_then_exit();
	return 0;
}
