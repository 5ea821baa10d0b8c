/* tcprelay — a man in the middle on loopback: forward one TCP connection's bytes both ways
 * and keep a copy of everything that passed, to check what a stream looks like on the wire.
 *
 *   tcprelay --listen PORT --to PORT --dump FILE [--seconds N]
 *
 * Listens on 127.0.0.1:PORT; each accepted connection is joined to a new connection to
 * 127.0.0.1:TO (a connection whose far side is not there yet is dropped: ZeroMQ reconnects).
 * Every byte either way is appended to FILE. Exits 0 when a joined pair that carried bytes
 * both ways has closed, 1 after N seconds (default 30) without one.
 * A test tool: never used by a pipeline.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what) {
    fprintf(stderr, "tcprelay: error: %s: %s\n", what, strerror(errno));
    return 1;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* Copy what is readable on from to `to` and the dump: bytes moved, 0 at EOF, -1 on error. */
static ssize_t pass(int from, int to, FILE *dump) {
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) return n < 0 && errno == EINTR ? 1 : n;
    if (fwrite(buf, 1, (size_t)n, dump) != (size_t)n || fflush(dump)) return -1;
    for (ssize_t done = 0; done < n;) {
        ssize_t w = write(to, buf + done, (size_t)(n - done));
        if (w < 0 && errno != EINTR) return -1;
        if (w > 0) done += w;
    }
    return n;
}

/* Relay between a and b until either side closes. 1 when bytes went both ways. */
static int relay(int a, int b, FILE *dump, double deadline) {
    long long ab = 0, ba = 0;
    while (now() < deadline) {
        struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
        if (poll(p, 2, 100) < 0 && errno != EINTR) break;
        ssize_t n = 0;
        if (p[0].revents && (n = pass(a, b, dump)) > 0) ab += n;
        if (n <= 0 && p[0].revents) break;
        if (p[1].revents && (n = pass(b, a, dump)) > 0) ba += n;
        if (n <= 0 && p[1].revents) break;
    }
    close(a);
    close(b);
    return ab > 0 && ba > 0;
}

int main(int argc, char **argv) {
    int listen_port = 0, to_port = 0, seconds = 30;
    const char *dump_path = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen")) listen_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--to")) to_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dump")) dump_path = argv[i + 1];
        else if (!strcmp(argv[i], "--seconds")) seconds = atoi(argv[i + 1]);
    }
    if (listen_port <= 0 || to_port <= 0 || !dump_path) {
        fprintf(stderr, "usage: tcprelay --listen PORT --to PORT --dump FILE [--seconds N]\n");
        return 2;
    }
    FILE *dump = fopen(dump_path, "wb");
    if (!dump) return fail(dump_path);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in at = loopback(listen_port);
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(ls, (struct sockaddr *)&at, sizeof at) || listen(ls, 8))
        return fail("listen");
    double deadline = now() + seconds;
    while (now() < deadline) {
        struct pollfd p = {ls, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        int a = accept(ls, NULL, NULL);
        if (a < 0) continue;
        int b = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = loopback(to_port);
        if (b < 0 || connect(b, (struct sockaddr *)&to, sizeof to)) {
            if (b >= 0) close(b);
            close(a);
            continue;
        }
        if (relay(a, b, dump, deadline)) {
            fclose(dump);
            return 0;
        }
    }
    fprintf(stderr, "tcprelay: error: no connection carried bytes both ways within %d s\n", seconds);
    return 1;
}
