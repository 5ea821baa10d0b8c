/* zmqraw — send files' bytes as ZeroMQ messages, unchecked, or touch an endpoint without
 * speaking ZeroMQ: for tests of what a consumer does with input no stage would send.
 *
 *   zmqraw --out ENDPOINT [--hold-ms N] FILE...   connect a PUSH socket, send each FILE as one
 *                                                 message, wait N ms (default 500), exit
 *   zmqraw --stray ipc://PATH | tcp://HOST:PORT   open a plain socket to the address and close
 *                                                 it at once (a port scan, a health check)
 *
 * A test tool: it goes around common/wire on purpose, so it never sends through bertpipe's
 * checks, and it is never used by a pipeline.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

static int fail(const char *what, const char *where) {
    fprintf(stderr, "zmqraw: error: %s (%s)\n", what, where);
    return 1;
}

/* Connect a plain socket to an ipc:// or tcp://127.0.0.1:PORT address, then close it. */
static int stray_once(const char *addr) {
    int fd = -1, rc = -1;
    if (strncmp(addr, "ipc://", 6) == 0) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", addr + 6);
        if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0) rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    } else if (strncmp(addr, "tcp://", 6) == 0) {
        char host[256];
        snprintf(host, sizeof host, "%s", addr + 6);
        char *colon = strrchr(host, ':');
        if (!colon) return fail("want tcp://HOST:PORT", addr);
        *colon = 0;
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) return fail("want a numeric IPv4 host", addr);
        if ((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0) rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    } else {
        return fail("want ipc:// or tcp://", addr);
    }
    if (fd >= 0) close(fd);
    return rc == 0 ? 0 : -1;
}

/* The consumer may still be starting: try for 10 s. */
static int stray(const char *addr) {
    for (int i = 0; i < 100; i++) {
        int rc = stray_once(addr);
        if (rc >= 0) return rc;
        usleep(100 * 1000);
    }
    return fail("cannot connect", addr);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap && !(buf = realloc(buf, cap *= 2))) break;
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--stray") == 0) return stray(argv[2]);
    if (argc < 3 || strcmp(argv[1], "--out") != 0) {
        fprintf(stderr, "usage: zmqraw --out ENDPOINT [--hold-ms N] FILE... | zmqraw --stray ADDRESS\n");
        return 2;
    }
    const char *endpoint = argv[2];
    int first = 3, hold_ms = 500;
    if (argc > 4 && strcmp(argv[3], "--hold-ms") == 0) {
        hold_ms = atoi(argv[4]);
        first = 5;
    }
    void *ctx = zmq_ctx_new(), *sock = ctx ? zmq_socket(ctx, ZMQ_PUSH) : NULL;
    if (!sock || zmq_connect(sock, endpoint)) return fail(zmq_strerror(zmq_errno()), endpoint);
    for (int i = first; i < argc; i++) {
        size_t len = 0;
        char *bytes = slurp(argv[i], &len);
        if (!bytes) return fail("cannot read", argv[i]);
        if (zmq_send(sock, bytes, len, 0) < 0) return fail(zmq_strerror(zmq_errno()), endpoint);
        free(bytes);
    }
    usleep((useconds_t)hold_ms * 1000);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
