/* A daemon's view of socket activation through libsystemd: sd_listen_fds_with_names(3).
 * Prints one line per fd ("FD NAME FAMILY LISTENING"), then "pid PID LISTEN_PID=... n N".
 * With an argument, serves HTTP-ish "ok\n" on the first fd once (for checks that it really accepts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

int main(int argc, char **argv) {
    const char *pid_env = getenv("LISTEN_PID");
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", (long)getpid());
    int pid_matches = pid_env && strcmp(pid_env, buf) == 0;
    char **names = NULL;
    int n = sd_listen_fds_with_names(0, &names);
    if (n < 0) { fprintf(stderr, "sdlisten: sd_listen_fds_with_names: %s\n", strerror(-n)); return 111; }
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        int unix_ = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1) > 0;
        int inet = sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) > 0;
        printf("%d %s %s\n", fd, names ? names[i] : "-", unix_ ? "unix-listening" : inet ? "inet-listening" : "other");
    }
    printf("pid-matches %d n %d\n", pid_matches, n);
    fflush(stdout);
    if (argc > 1 && n > 0) {
        int c = accept(SD_LISTEN_FDS_START, NULL, NULL);
        if (c >= 0) { write(c, "ok\n", 3); close(c); }
    }
    return 0;
}
