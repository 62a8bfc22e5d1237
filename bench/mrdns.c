/* mrdns.c — the DNS bench's load generator: UDP queries the way glibc's resolver makes them, one socket
 * per query (socket, connect to the nameserver, send, receive the answer, close), K queries in flight on
 * one epoll loop; a query is good when its answer carries the query's ID, NOERROR and at least one
 * record. One socket per query means every query runs the capture's per-socket path (the eBPF connect,
 * recvmsg and release hooks; a new conntrack entry through the iptables DNAT) — what a pod's lookups
 * pay. Prints one JSON line in the shape of mrload's (checks.ts LoadResult): `conns` counts every query
 * sent, warm-up included, so that it can be set against the capture's counters. Unlike glibc, source
 * ports are taken in turn (see start()), from FIRST_PORT on; `next_port` says where the next run goes on.
 * Usage: mrdns ADDR:PORT NAME CONC SECONDS WARMUP [FIRST_PORT] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 256
#define TIMEOUT_NS 1000000000LL /* an answer later than 1 s is an error (a lost query) */

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static struct sockaddr_in target;
static unsigned char query[512];
static size_t qlen;

/* A query for NAME, type A, class IN, recursion desired; the ID is set per query. */
static void build_query(const char *name) {
  unsigned char *p = query;
  memset(p, 0, 12);
  p[2] = 0x01; /* RD */
  p[5] = 1;    /* QDCOUNT */
  p += 12;
  while (*name) {
    const char *dot = strchr(name, '.');
    size_t n = dot ? (size_t)(dot - name) : strlen(name);
    *p++ = (unsigned char)n;
    memcpy(p, name, n);
    p += n;
    name += n + (dot ? 1 : 0);
  }
  *p++ = 0;
  *p++ = 0, *p++ = 1; /* A */
  *p++ = 0, *p++ = 1; /* IN */
  qlen = (size_t)(p - query);
}

struct slot {
  int fd;
  uint16_t id;
  int64_t t0;
  int measured;
};

static struct slot slots[MAXC];
static int ep;
static uint16_t next_id = 1;
#define PORT_LO 1024
#define PORT_HI 65000
static uint16_t next_port = PORT_LO;
static long sent, requests, errors, err_connect, err_timeout, err_other;
static int64_t *lat;
static long nlat, caplat;

static int start(struct slot *s, int64_t t, int measured) {
  s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) return -1;
  /* Source ports in turn, not the kernel's random pick: a port comes back only after the whole range,
   * so no query finds the conntrack entry of an earlier one on the same 4-tuple (which would take it
   * past the nat table: captured, but not counted). */
  for (int tries = 0;; tries++) {
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(next_port)};
    next_port = next_port >= PORT_HI ? PORT_LO : next_port + 1;
    if (bind(s->fd, (struct sockaddr *)&src, sizeof src) == 0) break;
    if (errno != EADDRINUSE || tries > 1000) {
      close(s->fd);
      s->fd = -1;
      err_other++, errors++;
      return 0;
    }
  }
  if (connect(s->fd, (struct sockaddr *)&target, sizeof target) < 0) {
    close(s->fd);
    s->fd = -1;
    err_connect++, errors++;
    return 0;
  }
  s->id = next_id++;
  query[0] = (unsigned char)(s->id >> 8), query[1] = (unsigned char)s->id;
  s->t0 = t;
  s->measured = measured;
  sent++;
  if (send(s->fd, query, qlen, 0) != (ssize_t)qlen) {
    close(s->fd);
    s->fd = -1;
    err_other++, errors++;
    return 0;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
  epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
  return 0;
}

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static void finish(struct slot *s) {
  epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
  close(s->fd);
  s->fd = -1;
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: mrdns ADDR:PORT NAME CONC SECONDS WARMUP [FIRST_PORT]\n");
    return 2;
  }
  char host[64];
  const char *colon = strrchr(argv[1], ':');
  if (!colon || (size_t)(colon - argv[1]) >= sizeof host) return 2;
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = 0;
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &target.sin_addr) != 1) return 2;
  build_query(argv[2]);
  if (argc == 7 && atoi(argv[6]) >= PORT_LO && atoi(argv[6]) <= PORT_HI) next_port = (uint16_t)atoi(argv[6]);
  int conc = atoi(argv[3]);
  if (conc < 1 || conc > MAXC) return 2;
  double seconds = atof(argv[4]), warmup = atof(argv[5]);
  caplat = 1 << 20;
  lat = malloc(sizeof(int64_t) * (size_t)caplat);
  ep = epoll_create1(EPOLL_CLOEXEC);

  int64_t begin = now_ns();
  int64_t measure_from = begin + (int64_t)(warmup * 1e9);
  int64_t end = measure_from + (int64_t)(seconds * 1e9);
  for (int i = 0; i < conc; i++) slots[i].fd = -1;
  for (int i = 0; i < conc; i++)
    if (start(&slots[i], begin, 0) < 0) return perror("socket"), 1;

  struct epoll_event evs[MAXC];
  unsigned char buf[1500];
  for (;;) {
    int64_t t = now_ns();
    int live = 0;
    for (int i = 0; i < conc; i++) {
      struct slot *s = &slots[i];
      if (s->fd >= 0 && t - s->t0 > TIMEOUT_NS) {
        finish(s);
        err_timeout++, errors++;
      }
      if (s->fd < 0 && t < end && start(s, t, t >= measure_from) < 0) return perror("socket"), 1;
      live += s->fd >= 0;
    }
    if (!live) break;
    int n = epoll_wait(ep, evs, MAXC, 100);
    t = now_ns();
    for (int k = 0; k < n; k++) {
      struct slot *s = evs[k].data.ptr;
      ssize_t r = recv(s->fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EAGAIN) continue;
      int ok = r >= 12 && buf[0] == (s->id >> 8) && buf[1] == (s->id & 0xff) && (buf[3] & 0x0f) == 0 &&
               ((buf[6] << 8) | buf[7]) >= 1;
      if (!ok) {
        if (r < 0 && errno == ECONNREFUSED) err_connect++;
        else err_other++;
        errors++;
      } else if (s->measured && s->t0 < end) {
        requests++;
        if (nlat < caplat) lat[nlat++] = t - s->t0;
      }
      finish(s);
    }
  }
  double wall = (double)(now_ns() - begin) / 1e9;
  /* percentiles by sorting (a bench run is at most ~a million queries); err_reset: timeouts */
  qsort(lat, (size_t)nlat, sizeof *lat, cmp);
  double p50 = nlat ? lat[nlat / 2] / 1e3 : 0, p99 = nlat ? lat[(nlat * 99) / 100] / 1e3 : 0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double u = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, sy = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("{\"mode\":\"rr\",\"requests\":%ld,\"rate\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%ld,"
         "\"err_connect\":%ld,\"err_reset\":%ld,\"err_other\":%ld,\"conns\":%ld,\"client_user\":%.4f,"
         "\"client_sys\":%.4f,\"wall\":%.3f,\"bytes\":0,\"confirmed\":0,\"mbytes_s\":0,\"e2e_mbytes_s\":0,"
         "\"drain_ms\":0,\"next_port\":%u}\n",
         requests, requests / seconds, p50, p99, errors, err_connect, err_timeout, err_other, sent, u / wall,
         sy / wall, wall, (unsigned)next_port);
  return 0;
}
