/* Open-loop paced client for the flood benchmark (bench/flood.py).
 *
 * flood tcp PORT SOURCE RATE SECONDS THREADS EXPECTED   (connects to 127.0.0.1:PORT from SOURCE)
 * flood unix PATH - RATE SECONDS THREADS EXPECTED
 *
 * THREADS threads share the schedule: attempt i is due at start + i / RATE; a thread that is late
 * goes at once (an attempt is never skipped), so the load does not fall when the server is slow.
 * An attempt: socket, [bind SOURCE], connect, read to EOF (5 s timeout), close. It is "served" when
 * it read EXPECTED bytes, "closed" when it read nothing (closed at once by the server), "short"
 * otherwise; "errors" are failed connects or reads. Latency: connect to EOF, served attempts only.
 * Prints one line: "attempts N served S closed C short H errors E p50_us X p99_us Y max_us Z lag_ms L"
 * (lag: how late the last attempt started).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif
#define MAXLAT 1000000

static int tcp;
static struct sockaddr_in to4, from4;
static struct sockaddr_un toun;
static double rate, seconds, start;
static long expected, total;
static long next_attempt;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long served, closed_, shorts, errors_;
static unsigned *lat;
static long nlat;
static double lag;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void attempt(void) {
  int fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);
  int outcome; /* 0 served, 1 closed, 2 short, 3 error */
  double t0 = now(), t1;
  if (fd < 0) { outcome = 3; goto done; }
  struct timeval tv = { 5, 0 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (tcp) {
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&from4, sizeof from4) < 0) { close(fd); outcome = 3; goto done; }
  }
  if (connect(fd, tcp ? (struct sockaddr *)&to4 : (struct sockaddr *)&toun, tcp ? sizeof to4 : sizeof toun) < 0) {
    close(fd); outcome = 3; goto done;
  }
  char buf[512]; long got = 0; ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) got += r;
  close(fd);
  if (r < 0) outcome = 3;
  else if (got == expected) outcome = 0;
  else if (got == 0) outcome = 1;
  else outcome = 2;
done:
  t1 = now();
  pthread_mutex_lock(&lock);
  if (outcome == 0) { served++; if (nlat < MAXLAT) lat[nlat++] = (unsigned)((t1 - t0) * 1e6); }
  else if (outcome == 1) closed_++;
  else if (outcome == 2) shorts++;
  else errors_++;
  pthread_mutex_unlock(&lock);
}

static void *run(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&lock);
    long i = next_attempt < total ? next_attempt++ : -1;
    pthread_mutex_unlock(&lock);
    if (i < 0) return NULL;
    double due = start + i / rate, t = now();
    if (due > t) {
      struct timespec ts = { (time_t)(due - t), (long)(((due - t) - (time_t)(due - t)) * 1e9) };
      nanosleep(&ts, NULL);
    } else if (i == total - 1) lag = t - due;
    attempt();
  }
}

static int cmp(const void *a, const void *b) { unsigned x = *(const unsigned *)a, y = *(const unsigned *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
  if (argc != 8) { fprintf(stderr, "usage: flood tcp|unix PORT|PATH SOURCE|- RATE SECONDS THREADS EXPECTED\n"); return 100; }
  tcp = !strcmp(argv[1], "tcp");
  if (tcp) {
    to4.sin_family = AF_INET; to4.sin_port = htons(atoi(argv[2])); inet_pton(AF_INET, "127.0.0.1", &to4.sin_addr);
    from4.sin_family = AF_INET; from4.sin_port = 0;
    if (inet_pton(AF_INET, argv[3], &from4.sin_addr) != 1) { fprintf(stderr, "flood: bad source\n"); return 100; }
  } else {
    toun.sun_family = AF_UNIX; strncpy(toun.sun_path, argv[2], sizeof toun.sun_path - 1);
  }
  rate = atof(argv[4]); seconds = atof(argv[5]); expected = atol(argv[7]);
  int threads = atoi(argv[6]);
  total = (long)(rate * seconds);
  lat = malloc(sizeof *lat * MAXLAT);
  pthread_t th[256];
  if (threads < 1 || threads > 256 || !lat) return 100;
  start = now();
  for (int k = 0; k < threads; k++) pthread_create(&th[k], NULL, run, NULL);
  for (int k = 0; k < threads; k++) pthread_join(th[k], NULL);
  qsort(lat, nlat, sizeof *lat, cmp);
  unsigned p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(nlat * 99) / 100 < nlat ? (nlat * 99) / 100 : nlat - 1] : 0;
  printf("attempts %ld served %ld closed %ld short %ld errors %ld p50_us %u p99_us %u max_us %u lag_ms %.1f\n",
         total, served, closed_, shorts, errors_, p50, p99, nlat ? lat[nlat - 1] : 0, lag * 1000);
  return 0;
}
