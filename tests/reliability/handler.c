/* A tiny per-connection handler for the ipcserverd tests (compiled static by the `handler` fixture).
 *
 * handler ok          write "ok\n", exit 0 (the fast handler of the load tests)
 * handler sleep MS    sleep MS milliseconds, then write "ok\n"
 * handler hold        write "PID\n", then echo stdin to stdout until EOF; on SIGTERM write
 *                     "TERM\n" and exit 0 (shows which signal a child received)
 * handler exit N      exit with code N
 * handler segv        kill itself with SIGSEGV (no core file)
 * handler cmd         write "PID\n", read one line: "exit N" exits N, "segv" dies of SIGSEGV,
 *                     anything else or EOF exits 0 (one server, several kinds of endings)
 * handler env         write the environment, one VAR=value per line, in environ order
 * handler state       write "fd N TARGET FLAGS" for every open fd (not the one used to list them),
 *                     then the Uid/Gid/Groups/SigBlk/SigIgn lines of /proc/self/status
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void put(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(1, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_term(int sig) {
    (void)sig;
    static const char msg[] = "TERM\n";
    if (write(1, msg, sizeof msg - 1) < 0) _exit(1);
    _exit(0);
}

static void fdflags(const char *fd, char *out, size_t len) {
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%s", fd);
    snprintf(out, len, "?");
    FILE *f = fopen(path, "re");
    if (!f) return;
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "flags:", 6)) {
            char *p = buf + 6;
            while (*p == ' ' || *p == '\t') p++;
            p[strcspn(p, "\n")] = 0;
            snprintf(out, len, "%s", p);
        }
    fclose(f);
}

static int state(void) {
    char line[1400], target[512], flags[512];
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 111;
    int own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == own) continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        fdflags(e->d_name, flags, sizeof flags);
        snprintf(line, sizeof line, "fd %s %s %s\n", e->d_name, target, flags);
        put(line);
    }
    closedir(d);
    FILE *f = fopen("/proc/self/status", "re");
    if (!f) return 111;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) || !strncmp(line, "Groups:", 7)
            || !strncmp(line, "SigBlk:", 7) || !strncmp(line, "SigIgn:", 7))
            put(line);
    fclose(f);
    return 0;
}

static int segv(void) {
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    kill(getpid(), SIGSEGV);
    return 1;
}

static int cmd(void) {
    char buf[256];
    size_t got = 0;
    snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    put(buf);
    while (got < sizeof buf - 1) {
        ssize_t r = read(0, buf + got, 1);
        if (r <= 0 || buf[got] == '\n') break;
        got++;
    }
    buf[got] = 0;
    if (!strncmp(buf, "exit ", 5)) return atoi(buf + 5);
    if (!strcmp(buf, "segv")) return segv();
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "ok";
    if (!strcmp(mode, "ok")) {
        put("ok\n");
        return 0;
    }
    if (!strcmp(mode, "sleep") && argc > 2) {
        long ms = atol(argv[2]);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, 0);
        put("ok\n");
        return 0;
    }
    if (!strcmp(mode, "hold")) {
        char buf[4096];
        signal(SIGTERM, on_term);
        snprintf(buf, sizeof buf, "%d\n", (int)getpid());
        put(buf);
        for (;;) {
            ssize_t r = read(0, buf, sizeof buf - 1);
            if (r <= 0) return 0;
            buf[r] = 0;
            put(buf);
        }
    }
    if (!strcmp(mode, "exit") && argc > 2) return atoi(argv[2]);
    if (!strcmp(mode, "segv")) return segv();
    if (!strcmp(mode, "cmd")) return cmd();
    if (!strcmp(mode, "env")) {
        for (char **e = environ; *e; e++) {
            put(*e);
            put("\n");
        }
        return 0;
    }
    if (!strcmp(mode, "state")) return state();
    put("bad mode\n");
    return 100;
}
