/* Closed-loop load generator for Unix stream and TCP servers.
 *
 * loadgen PATH CONCURRENCY SECONDS EXPECTED_BYTES      (PATH: a socket path, or tcp:IPV4:PORT)
 * CONCURRENCY threads each loop: socket, connect, read to EOF, close; a connection counts as good when
 * it read EXPECTED_BYTES. Prints one line: "conns N errors E refused R short S p50_us X p99_us Y".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXLAT 4000000
static const char *path;
static int tcp;
static struct sockaddr_in sin;
static double seconds;
static long expected;
static struct timespec start;

struct worker { long conns, errors, refused, shorts; unsigned *lat; long nlat; };

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void *run(void *arg) {
  struct worker *w = arg;
  struct sockaddr_un sa; memset(&sa, 0, sizeof sa); sa.sun_family = AF_UNIX;
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  struct sockaddr *to = tcp ? (struct sockaddr *)&sin : (struct sockaddr *)&sa;
  socklen_t tolen = tcp ? sizeof sin : sizeof sa;
  double end = start.tv_sec + start.tv_nsec / 1e9 + seconds;
  char buf[4096];
  while (now() < end) {
    double t0 = now();
    int fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) { w->errors++; continue; }
    if (connect(fd, to, tolen) < 0) {
      if (errno == ECONNREFUSED || errno == ENOENT || errno == EAGAIN) w->refused++; else w->errors++;
      close(fd); continue;
    }
    long got = 0; ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) got += r;
    close(fd);
    if (r < 0) { w->errors++; continue; }
    if (got != expected) { w->shorts++; continue; }
    w->conns++;
    if (w->nlat < MAXLAT) w->lat[w->nlat++] = (unsigned)((now() - t0) * 1e6);
  }
  return 0;
}

static int cmp(const void *a, const void *b) { unsigned x = *(const unsigned *)a, y = *(const unsigned *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: loadgen PATH CONCURRENCY SECONDS EXPECTED_BYTES\n"); return 100; }
  path = argv[1]; int n = atoi(argv[2]);
  if (!strncmp(path, "tcp:", 4)) {
    char host[64]; const char *colon = strrchr(path + 4, ':');
    if (!colon || colon - path - 4 >= (long)sizeof host) { fprintf(stderr, "loadgen: bad tcp:IP:PORT\n"); return 100; }
    memcpy(host, path + 4, colon - path - 4); host[colon - path - 4] = 0;
    tcp = 1; sin.sin_family = AF_INET; sin.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) { fprintf(stderr, "loadgen: bad IPv4 address\n"); return 100; }
  } seconds = atof(argv[3]); expected = atol(argv[4]);
  struct worker *w = calloc(n, sizeof *w); pthread_t *t = calloc(n, sizeof *t);
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < n; i++) { w[i].lat = malloc(sizeof(unsigned) * MAXLAT / n); pthread_create(&t[i], 0, run, &w[i]); }
  long conns = 0, errors = 0, refused = 0, shorts = 0, nlat = 0;
  for (int i = 0; i < n; i++) { pthread_join(t[i], 0); conns += w[i].conns; errors += w[i].errors; refused += w[i].refused; shorts += w[i].shorts; }
  unsigned *all = malloc(sizeof(unsigned) * (MAXLAT + 1));
  for (int i = 0; i < n; i++) for (long j = 0; j < w[i].nlat && nlat < MAXLAT; j++) all[nlat++] = w[i].lat[j];
  qsort(all, nlat, sizeof *all, cmp);
  printf("conns %ld errors %ld refused %ld short %ld p50_us %u p99_us %u\n", conns, errors, refused, shorts,
         nlat ? all[nlat / 2] : 0, nlat ? all[(long)(nlat * 0.99)] : 0);
  return 0;
}
