/* zmqraw — send files' bytes as ZeroMQ messages, unchecked, or touch an endpoint without
 * speaking ZeroMQ: for tests of what a consumer does with input no stage would send.
 *
 *   zmqraw --out ENDPOINT [--hold-ms N] [--linger-ms N] [--curve-server PUB] FILE...
 *                                                 connect a PUSH socket, send each FILE as one
 *                                                 message, wait N ms (default 500), give what
 *                                                 is still queued --linger-ms (default 10000)
 *                                                 to leave, exit; with
 *                                                 --curve-server, as a CURVE client that trusts
 *                                                 the public key in PUB (a throwaway key pair
 *                                                 of its own): a forger that has some key
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

#include "wire/curve.h"

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

/* Make sock a CURVE client of the server whose public key is in pub_path. */
static int curve_client(void *sock, const char *pub_path) {
    bp_curve_keypair server, mine;
    bp_err err;
    if (bp_curve_read_file(pub_path, 0, &server, &err) || bp_curve_new_keypair(&mine, &err)) return fail(err.msg, pub_path);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server.public_key, BP_CURVE_Z85_LEN + 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, mine.public_key, BP_CURVE_Z85_LEN + 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, mine.secret_key, BP_CURVE_Z85_LEN + 1))
        return fail(zmq_strerror(zmq_errno()), pub_path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--stray") == 0) return stray(argv[2]);
    if (argc < 3 || strcmp(argv[1], "--out") != 0) {
        fprintf(stderr, "usage: zmqraw --out ENDPOINT [--hold-ms N] [--linger-ms N] [--curve-server PUB] FILE... | zmqraw --stray ADDRESS\n");
        return 2;
    }
    const char *endpoint = argv[2], *server_pub = NULL;
    int first = 3, hold_ms = 500, linger = 10000;
    for (;;) {
        if (argc > first + 1 && strcmp(argv[first], "--hold-ms") == 0) hold_ms = atoi(argv[first + 1]);
        else if (argc > first + 1 && strcmp(argv[first], "--linger-ms") == 0) linger = atoi(argv[first + 1]);
        else if (argc > first + 1 && strcmp(argv[first], "--curve-server") == 0) server_pub = argv[first + 1];
        else break;
        first += 2;
    }
    void *ctx = zmq_ctx_new(), *sock = ctx ? zmq_socket(ctx, ZMQ_PUSH) : NULL;
    if (!sock) return fail(zmq_strerror(zmq_errno()), endpoint);
    if (server_pub && curve_client(sock, server_pub)) return 1;
    if (zmq_connect(sock, endpoint)) return fail(zmq_strerror(zmq_errno()), endpoint);
    /* A connect makes the queue at once, so these return whether or not a handshake ever
     * completes: a refused forger's frames stay queued here until the linger below ends. */
    for (int i = first; i < argc; i++) {
        size_t len = 0;
        char *bytes = slurp(argv[i], &len);
        if (!bytes) return fail("cannot read", argv[i]);
        if (zmq_send(sock, bytes, len, 0) < 0) return fail(zmq_strerror(zmq_errno()), endpoint);
        free(bytes);
    }
    usleep((useconds_t)hold_ms * 1000);
    /* frames still queued (a consumer slow to bind on a loaded machine) get 10 s to leave */
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
