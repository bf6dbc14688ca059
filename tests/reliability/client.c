/* Sequential load client: `client PATH N` makes N connections to the Unix socket PATH, one after
 * the other; each reads until EOF and must have received some bytes. Prints "served failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 100;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
    long n = atol(argv[2]), served = 0, failed = 0;
    char buf[256];
    for (long i = 0; i < n; i++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
            failed++;
            if (s >= 0) close(s);
            continue;
        }
        ssize_t r, got = 0;
        while ((r = read(s, buf, sizeof buf)) > 0) got += r;
        if (got > 0) served++; else failed++;
        close(s);
    }
    printf("%ld %ld\n", served, failed);
    return 0;
}
