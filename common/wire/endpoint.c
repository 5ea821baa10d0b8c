/* wire/endpoint.c — stdio and ZeroMQ transports plus the hello/eos stream rules (see endpoint.h).
 *
 * The only file that knows ZeroMQ. Every failure comes back as an error the stage prints
 * and exits on.
 * Must never: interpret a frame's fields beyond hello/eos/error, or drop, reorder within one
 * producer, or invent frames.
 */
#include "wire/endpoint.h"

#include "wire/codec.h"
#include "wire/curve.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* ---- stopping, and why a stream failed ---------------------------------------------- */

/* Every wait below sleeps at most this long before it looks at the stop flag and its
 * deadline again: a signal that lands on another thread, or between a check and a blocking
 * call, is still seen within a slice. */
#define WAIT_SLICE_MS 100

static volatile sig_atomic_t stop_signal;
static bp_stream_failure first_failure;

void bp_endpoint_interrupt(int sig) {
    if (!stop_signal) stop_signal = sig;
}

int bp_endpoint_interrupted(void) { return stop_signal; }

bp_stream_failure bp_endpoint_failure(void) { return first_failure; }

static void note_failure(bp_stream_failure why) {
    if (first_failure == BP_FAIL_NONE) first_failure = why;
}

static const char *signal_name(int sig) {
    static char buf[32];
    if (sig == SIGTERM) return "SIGTERM";
    if (sig == SIGINT) return "SIGINT";
    snprintf(buf, sizeof buf, "signal %d", sig);
    return buf;
}

/* BERTPIPE_TIMEOUT in seconds (0: no limit). */
static int timeout_seconds(void);

/* Wait until fd is ready for `events` (POLLIN / POLLOUT): 1 ready, 0 stopped by a signal,
 * 2 when timeout_s (> 0) passed, -1 with errno. */
static int wait_fd(int fd, short events, int timeout_s) {
    double deadline = timeout_s > 0 ? bp_now() + timeout_s : 0;
    for (;;) {
        if (stop_signal) return 0;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, WAIT_SLICE_MS);
        if (rc > 0) return 1;
        if (rc < 0 && errno != EINTR) return -1;
        if (deadline && bp_now() > deadline) return 2;
    }
}

/* ---- shared ZeroMQ context -------------------------------------------------------- */

static void *zctx;
static int zctx_users;

static void *ctx_acquire(void) {
    if (!zctx) {
        zctx = zmq_ctx_new();
        if (!zctx) return NULL;
    }
    zctx_users++;
    return zctx;
}

/* The context is terminated when its last socket is closed: zmq_ctx_term waits for the
 * lingering messages (the final eos) to leave. */
static void ctx_release(void) {
    if (--zctx_users == 0 && zctx) {
        while (zmq_ctx_term(zctx) == -1 && errno == EINTR) {}
        zctx = NULL;
    }
}

static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    if (!v || !*v) return fallback;
    char *end;
    long n = strtol(v, &end, 10);
    return *end ? fallback : (int)n;
}

static int timeout_seconds(void) {
    int t = env_int("BERTPIPE_TIMEOUT", 0);
    return t > 0 ? t : 0;
}

/* BERTPIPE_CONNECT_TIMEOUT in seconds (0: no limit): how long a ZeroMQ endpoint waits for its
 * peers to come up at all (an input for its producers to connect, an output for a consumer to
 * complete a handshake), counted from its opening. Unlike BERTPIPE_TIMEOUT it never bounds a
 * wait on a peer that is there but busy (a trainer evaluating), so a multi-host run can set it
 * low: a node that never came up is named within seconds. */
static int connect_timeout_seconds(void) {
    int t = env_int("BERTPIPE_CONNECT_TIMEOUT", 0);
    return t > 0 ? t : 0;
}

typedef struct endpoint_part { char *addr; int bind; } endpoint_part;

/* Split "A,B" into parts; each may start with '@' (bind) or '>' (connect). */
static int parse_spec(const char *spec, int default_bind, endpoint_part **parts_out, int *n_out, bp_err *err) {
    int n = 1;
    for (const char *c = spec; *c; c++) n += *c == ',';
    endpoint_part *parts = calloc((size_t)n, sizeof *parts);
    char *copy = strdup(spec);
    if (!parts || !copy) { free(parts); free(copy); return bp_err_set(err, "out of memory (%s)", spec); }
    int i = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int bind = default_bind;
        if (*tok == '@') { bind = 1; tok++; }
        else if (*tok == '>') { bind = 0; tok++; }
        if (strncmp(tok, "ipc://", 6) && strncmp(tok, "tcp://", 6) && strncmp(tok, "inproc://", 9)) {
            for (int j = 0; j < i; j++) free(parts[j].addr);
            free(parts); free(copy);
            return bp_err_set(err, "unknown endpoint '%s' (want -, ipc://PATH or tcp://HOST:PORT, optionally after @ or >)", spec);
        }
        parts[i].addr = strdup(tok);
        parts[i].bind = bind;
        if (!parts[i].addr) { free(copy); return bp_err_set(err, "out of memory (%s)", spec); }
        i++;
    }
    free(copy);
    if (i == 0) { free(parts); return bp_err_set(err, "empty endpoint"); }
    *parts_out = parts;
    *n_out = i;
    return 0;
}

static void free_parts(endpoint_part *parts, int n) {
    for (int i = 0; i < n; i++) free(parts[i].addr);
    free(parts);
}

/* ---- input ------------------------------------------------------------------------ */

/* One connection of a ZeroMQ input. A peer that never sent a hello is not a producer (a port
 * scanner, a health check): its coming and going means nothing. One that sent its hello and
 * went away before its eos is a lost producer. */
struct peer {
    int fd;
    int said_hello, said_eos, gone;
    double gone_at;
};

struct bp_in {
    char *spec;
    int producers, raw;
    bp_err err;
    int failed;               /* an error was returned; keep returning it */
    /* stdio */
    int fd;
    char *buf;
    size_t start, end, cap;
    int eof;
    /* zeromq: every connection, known by its file descriptor (the monitor's events and each
     * message's ZMQ_SRCFD name it), so a peer that goes away is judged by what it sent */
    void *sock, *monitor;
    struct peer *peers;
    int n_peers, cap_peers;
    int connected;            /* connections ever accepted or made (BERTPIPE_CONNECT_TIMEOUT) */
    double opened_at;
    /* stream state */
    bp_frame hello;
    int have_hello, hellos, eos_seen;
    int64_t eos_total, data, by_kind[BP_KIND_COUNT];
    bp_frame pending;         /* a data frame read while waiting for the hello */
    int have_pending;
    int upstream_error;       /* raw mode: an error frame was returned; fail next call */
};

static int in_fail(bp_in *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int in_fail(bp_in *in, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    bp_err_set(&in->err, "%s (%s)", what, in->spec);
    in->failed = 1;
    return -1;
}

/* A stop signal ends the read. A stream that had begun is incomplete: say how far it got, as
 * a lost producer or a timeout does, so that the line of a consumer stopped while it still
 * drained what a killed producer had sent names the missing eos too (the supervisor stops
 * such a consumer after its grace, before it could reach the end of that backlog). */
static int in_interrupted(bp_in *in) {
    if (in->hellos == 0 && in->data == 0) return in_fail(in, "interrupted by %s", signal_name(stop_signal));
    return in_fail(in, "interrupted by %s: %d of %d eos received after %lld frames; %d eos missing",
                   signal_name(stop_signal), in->eos_seen, in->producers, (long long)in->data,
                   in->producers - in->eos_seen);
}

/* A pipe holds 64 KB by default, so a 1 MB frame costs 16 writes, 16 reads and as many
 * context switches. Ask for the largest size an unprivileged process may set (fs.pipe-max-size,
 * 1 MB by default); when that is refused the pipe keeps its size, which is only slower. */
static void widen_pipe(int fd) {
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
}

static int monitor_seq;
static void in_close_socket(bp_in *in);

bp_in *bp_in_open(const char *spec, int producers, bp_err *err) {
    if (producers < 1) { bp_err_set(err, "producers must be at least 1 (%s)", spec); return NULL; }
    bp_in *in = calloc(1, sizeof *in);
    if (!in || !(in->spec = strdup(spec))) { free(in); bp_err_set(err, "out of memory"); return NULL; }
    in->producers = producers;
    in->fd = -1;
    in->opened_at = bp_now();
    int is_file = strncmp(spec, "file:", 5) == 0;
    if (strcmp(spec, "-") == 0 || is_file) {
        in->fd = 0;
        if (is_file && (in->fd = open(spec + 5, O_RDONLY | O_CLOEXEC)) < 0) {
            bp_err_set(err, "cannot open: %s (%s)", strerror(errno), spec + 5);
            free(in->spec);
            free(in);
            return NULL;
        }
        widen_pipe(in->fd);
        in->cap = 1 << 20;
        in->buf = malloc(in->cap);
        if (!in->buf) { free(in->spec); free(in); bp_err_set(err, "out of memory"); return NULL; }
        return in;
    }
    endpoint_part *parts;
    int n;
    if (parse_spec(spec, 1, &parts, &n, err)) { free(in->spec); free(in); return NULL; }
    void *ctx = ctx_acquire();
    in->sock = ctx ? zmq_socket(ctx, ZMQ_PULL) : NULL;
    if (!in->sock) {
        bp_err_set(err, "cannot create ZeroMQ socket: %s (%s)", zmq_strerror(errno), spec);
        goto fail;
    }
    int hwm = env_int("BERTPIPE_HWM", 256), linger = 0;
    int64_t max_message = (int64_t)BP_FRAME_MAX_BYTES;   /* a peer announcing more is dropped before it is buffered */
    zmq_setsockopt(in->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(in->sock, ZMQ_MAXMSGSIZE, &max_message, sizeof max_message);
    zmq_setsockopt(in->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* Watch connections come and go: a producer that disconnects before its eos is lost data. */
    char mon_addr[64];
    snprintf(mon_addr, sizeof mon_addr, "inproc://bp-monitor-%d-%d", (int)getpid(), monitor_seq++);
    if (zmq_socket_monitor(in->sock, mon_addr, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED)) {
        bp_err_set(err, "cannot monitor ZeroMQ socket: %s (%s)", zmq_strerror(errno), spec);
        goto fail;
    }
    in->monitor = zmq_socket(ctx, ZMQ_PAIR);
    if (!in->monitor || zmq_connect(in->monitor, mon_addr)) {
        bp_err_set(err, "cannot connect ZeroMQ monitor: %s (%s)", zmq_strerror(errno), spec);
        goto fail;
    }
    zmq_setsockopt(in->monitor, ZMQ_LINGER, &linger, sizeof linger);
    for (int i = 0; i < n; i++) {
        if (bp_curve_prepare_socket(in->sock, parts[i].addr, parts[i].bind, err)) goto fail;
        int rc = parts[i].bind ? zmq_bind(in->sock, parts[i].addr) : zmq_connect(in->sock, parts[i].addr);
        if (rc) {
            bp_err_set(err, "cannot %s %s: %s", parts[i].bind ? "bind" : "connect", parts[i].addr, zmq_strerror(errno));
            goto fail;
        }
    }
    free_parts(parts, n);
    return in;
fail:
    free_parts(parts, n);
    if (in->monitor) zmq_close(in->monitor);
    if (in->sock) zmq_close(in->sock);
    if (ctx) ctx_release();
    free(in->spec);
    free(in);
    return NULL;
}

void bp_in_set_raw(bp_in *in, int raw) { in->raw = raw; }
const char *bp_in_error(const bp_in *in) { return in->err.msg; }
const bp_err *bp_in_err(const bp_in *in) { return &in->err; }
const bp_frame *bp_in_hello(const bp_in *in) { return in->have_hello ? &in->hello : NULL; }
int64_t bp_in_count(const bp_in *in) { return in->data; }
int64_t bp_in_count_kind(const bp_in *in, bp_kind kind) { return in->by_kind[kind]; }

/* stdio: read the next frame's exact bytes into a malloc'd block. 1 ok, 0 clean EOF, -1 error. */
static int read_stdio(bp_in *in, char **bytes, size_t *len) {
    for (;;) {
        size_t have = in->end - in->start;
        if (have) {
            bp_err werr;
            size_t size = bp_msgpack_size(in->buf + in->start, have, &werr);
            if (size == (size_t)-1) return in_fail(in, "%s, after %lld frames", werr.msg, (long long)in->data);
            if (size) {
                char *copy = malloc(size);
                if (!copy) return in_fail(in, "out of memory for a %zu-byte frame", size);
                memcpy(copy, in->buf + in->start, size);
                in->start += size;
                *bytes = copy;
                *len = size;
                return 1;
            }
        }
        if (in->eof) {
            if (have) return in_fail(in, "stream ends inside a frame (%zu bytes left over)", have);
            return 0;
        }
        /* Make room: move the partial frame to the front, grow when it fills the buffer. */
        if (in->start) {
            memmove(in->buf, in->buf + in->start, have);
            in->start = 0;
            in->end = have;
        }
        if (in->end == in->cap) {
            size_t cap = in->cap * 2;
            char *grown = realloc(in->buf, cap);
            if (!grown) return in_fail(in, "out of memory for a frame over %zu bytes", in->cap);
            in->buf = grown;
            in->cap = cap;
        }
        int ready = wait_fd(in->fd, POLLIN, timeout_seconds());
        if (ready == 0) return in_interrupted(in);
        if (ready == 2)
            return in_fail(in, "no frame for %d s (BERTPIPE_TIMEOUT): %d of %d eos received after %lld frames",
                           timeout_seconds(), in->eos_seen, in->producers, (long long)in->data);
        if (ready < 0) return in_fail(in, "poll failed: %s", strerror(errno));
        ssize_t r = read(in->fd, in->buf + in->end, in->cap - in->end);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return in_fail(in, "read failed: %s", strerror(errno));
        }
        if (r == 0) in->eof = 1;
        in->end += (size_t)r;
    }
}

/* A new record for connection fd (NULL when out of memory: the peer then goes unwatched). */
static struct peer *peer_add(bp_in *in, int fd) {
    if (in->n_peers == in->cap_peers) {
        int cap = in->cap_peers ? 2 * in->cap_peers : 8;
        struct peer *grown = realloc(in->peers, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        in->peers = grown;
        in->cap_peers = cap;
    }
    struct peer *p = &in->peers[in->n_peers++];
    *p = (struct peer){.fd = fd};
    return p;
}

/* The record of connection fd: the live one, else one gone within the grace period (its
 * last frames may surface after the event that said it left), else NULL. */
static struct peer *peer_find(bp_in *in, int fd) {
    struct peer *gone = NULL;
    for (int i = in->n_peers - 1; i >= 0; i--) {
        if (in->peers[i].fd != fd) continue;
        if (!in->peers[i].gone) return &in->peers[i];
        if (!gone) gone = &in->peers[i];
    }
    return gone;
}

/* A monitor event: its id and value (the connection's fd for connect, accept, disconnect). */
static int monitor_event(void *monitor, uint16_t *event, uint32_t *value) {
    zmq_msg_t ev;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        return 0;
    }
    *event = 0;
    *value = 0;
    if (zmq_msg_size(&ev) >= 6) {
        memcpy(event, zmq_msg_data(&ev), 2);
        memcpy(value, (char *)zmq_msg_data(&ev) + 2, 4);
    }
    int more = zmq_msg_more(&ev);
    zmq_msg_close(&ev);
    if (more) {   /* the endpoint's address: not needed */
        zmq_msg_init(&ev);
        zmq_msg_recv(&ev, monitor, 0);
        zmq_msg_close(&ev);
    }
    return 1;
}

static void drain_monitor(bp_in *in) {
    uint16_t event;
    uint32_t fd;
    while (monitor_event(in->monitor, &event, &fd)) {
        if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED) {
            struct peer *p = peer_find(in, (int)fd);
            if (!p || p->gone) peer_add(in, (int)fd);   /* else its first frame came before the event */
            in->connected++;
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            struct peer *p = peer_find(in, (int)fd);
            if (p && !p->gone) {
                p->gone = 1;
                p->gone_at = bp_now();
            }
        }
    }
}

/* A frame arrived on connection fd: a hello makes it a producer, an eos a finished one. */
static void peer_sent(bp_in *in, int fd, bp_kind kind) {
    if (fd < 0 || (kind != BP_HELLO && kind != BP_EOS)) return;
    struct peer *p = peer_find(in, fd);
    if (!p && !(p = peer_add(in, fd))) return;
    if (kind == BP_HELLO) p->said_hello = 1;
    else p->said_eos = 1;
}

/* Producers that went away without their eos, once their last frames had time to surface
 * (the disconnect event can overtake them): returns 1 when one is lost. Gone peers that are
 * settled (finished, or never producers) are forgotten. *next_ms: when to look again. */
static int lost_producer(bp_in *in, double grace_s, long *next_ms) {
    double now = bp_now();
    int kept = 0, lost = 0;
    for (int i = 0; i < in->n_peers; i++) {
        struct peer *p = &in->peers[i];
        if (p->gone) {
            double wait = p->gone_at + grace_s - now;
            if (wait > 0) {
                long ms = (long)(wait * 1000) + 1;
                if (ms < *next_ms) *next_ms = ms;
            } else if (p->said_hello && !p->said_eos) {
                lost = 1;
            } else {
                continue;   /* settled: forget it */
            }
        }
        in->peers[kept++] = *p;
    }
    in->n_peers = kept;
    return lost;
}

static void free_zmq_msg(void *msg) {
    zmq_msg_close(msg);
    free(msg);
}

/* zmq: one message if one is waiting: 1 (frame decoded), 0 none, -1 error. */
static int receive_zmq(bp_in *in, bp_frame *f) {
    zmq_msg_t *msg = malloc(sizeof *msg);
    if (!msg) return in_fail(in, "out of memory");
    zmq_msg_init(msg);
    if (zmq_msg_recv(msg, in->sock, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        free_zmq_msg(msg);
        if (e == EAGAIN || e == EINTR) return 0;
        return in_fail(in, "receive failed: %s", zmq_strerror(e));
    }
    int fd = zmq_msg_get(msg, ZMQ_SRCFD);
    bp_err derr;
    if (bp_frame_decode(f, zmq_msg_data(msg), zmq_msg_size(msg), free_zmq_msg, msg, &derr)) {
        free_zmq_msg(msg);
        return in_fail(in, "%s, after %lld frames", derr.msg, (long long)in->data);
    }
    peer_sent(in, fd, f->kind);
    return 1;
}

/* zmq: next message. 1 ok (frame decoded), 0 never, -1 error. Waits in slices: a stop
 * signal, BERTPIPE_TIMEOUT or a lost producer ends the wait. */
static int read_zmq(bp_in *in, bp_frame *f) {
    const double grace_s = 0.5;
    int timeout_s = timeout_seconds();
    double idle_since = bp_now();
    for (;;) {
        if (stop_signal) return in_interrupted(in);
        int r = receive_zmq(in, f);
        if (r) return r;
        drain_monitor(in);
        long wait_ms = WAIT_SLICE_MS;
        if (lost_producer(in, grace_s, &wait_ms)) {
            int missing = in->producers - in->eos_seen;
            return in_fail(in, "a producer disconnected before its eos: %d of %d eos received after %lld frames; "
                               "%d eos missing", in->eos_seen, in->producers, (long long)in->data, missing);
        }
        if (timeout_s > 0 && bp_now() - idle_since > timeout_s)
            return in_fail(in, "no frame for %d s (BERTPIPE_TIMEOUT): %d of %d eos received after %lld frames",
                           timeout_s, in->eos_seen, in->producers, (long long)in->data);
        int came = in->connected > in->hellos ? in->connected : in->hellos;
        if (came < in->producers && connect_timeout_seconds() > 0 &&
            bp_now() - in->opened_at > connect_timeout_seconds())
            return in_fail(in, "%d of %d producers connected within %d s (BERTPIPE_CONNECT_TIMEOUT): is every producer "
                               "started, and is this address reachable from it?",
                           came, in->producers, connect_timeout_seconds());
        zmq_pollitem_t items[2] = {{in->sock, 0, ZMQ_POLLIN, 0}, {in->monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, wait_ms) < 0 && errno != EINTR)
            return in_fail(in, "poll failed: %s", zmq_strerror(errno));
    }
}

/* Read and decode one frame from whichever transport. 1 frame, 0 clean end of bytes, -1 error. */
static int read_frame(bp_in *in, bp_frame *f) {
    if (in->fd >= 0) {
        char *bytes = NULL;
        size_t len = 0;
        int r = read_stdio(in, &bytes, &len);
        if (r <= 0) return r;
        bp_err derr;
        if (bp_frame_decode(f, bytes, len, free, bytes, &derr)) {
            free(bytes);
            return in_fail(in, "%s, after %lld frames", derr.msg, (long long)in->data);
        }
        return 1;
    }
    return read_zmq(in, f);
}

/* Apply the stream rules to one frame. Returns 1 to hand it to the caller, 0 to swallow it
 * (hello/eos outside raw mode), -1 on a violation. */
static int account(bp_in *in, bp_frame *f) {
    bp_err ferr;
    switch (f->kind) {
    case BP_HELLO:
        if (++in->hellos > in->producers)
            return in_fail(in, "more hello frames than the %d producer(s) expected", in->producers);
        f->index = in->hellos - 1;
        if (!in->have_hello) {
            in->hello = *f;    /* keep the first hello: it describes the stream */
            in->have_hello = 1;
            if (in->raw) {
                /* The caller gets a view of the kept hello; its release is a no-op. */
                f->borrowed = 1;
                return 1;
            }
            memset(f, 0, sizeof *f);
            return 0;
        }
        return in->raw ? 1 : (bp_frame_release(f), 0);
    case BP_EOS: {
        int64_t count;
        if (!in->have_hello) return in_fail(in, "eos before any hello");
        if (bp_get_int(f, "count", 0, INT64_MAX, &count, &ferr))
            return in_fail(in, "eos frame without a valid 'count'");
        /* A producer's data frames all arrive before its eos, so the counts of the eos so far
         * can never add up to more than the frames that arrived: checked as each eos comes, the
         * sum cannot overflow (counts adding up to 2^64 + 1 would wrap to 1). */
        if (count > in->data - in->eos_total)
            return in_fail(in, "eos count mismatch: eos says %llu data frames, %lld arrived",
                           (unsigned long long)in->eos_total + (unsigned long long)count, (long long)in->data);
        f->index = in->eos_seen++;
        in->eos_total += count;
        if (in->eos_seen > in->producers)
            return in_fail(in, "more eos frames than the %d producer(s) expected", in->producers);
        if (in->eos_seen == in->producers && in->eos_total != in->data)
            return in_fail(in, "eos count mismatch: eos says %lld data frames, %lld arrived",
                           (long long)in->eos_total, (long long)in->data);
        return in->raw ? 1 : (bp_frame_release(f), 0);
    }
    case BP_ERROR: {
        const char *msg = "(no message)", *from = "upstream";
        size_t mlen = strlen(msg), flen = strlen(from);
        bp_get_str(f, "message", &msg, &mlen, &ferr);
        bp_get_str(f, "from", &from, &flen, &ferr);
        bp_err_set(&in->err, "upstream stage %.*s failed: %.*s (%s)", (int)flen, from, (int)mlen, msg, in->spec);
        note_failure(BP_FAIL_UPSTREAM);
        if (in->raw) {
            in->upstream_error = 1;
            return 1;
        }
        in->failed = 1;
        bp_frame_release(f);
        return -1;
    }
    default:
        if (!in->have_hello)
            return in_fail(in, "%s frame before any hello (every stream starts with a hello)", bp_kind_name(f->kind));
        if (in->eos_seen == in->producers)
            return in_fail(in, "%s frame after the final eos", bp_kind_name(f->kind));
        in->data++;
        bp_status_frames(1, 0);
        f->index = in->by_kind[f->kind]++;
        return 1;
    }
}

int bp_in_next(bp_in *in, bp_frame *f) {
    memset(f, 0, sizeof *f);
    if (in->failed) return -1;
    if (in->upstream_error) { in->failed = 1; return -1; }
    if (in->have_pending) {
        *f = in->pending;
        in->have_pending = 0;
        return 1;
    }
    for (;;) {
        if (in->eos_seen == in->producers) {
            /* On stdio nothing may follow the last eos. */
            if (in->fd >= 0) {
                bp_frame extra;
                int r = read_frame(in, &extra);
                if (r < 0) return -1;
                if (r > 0) {
                    bp_kind k = extra.kind;
                    bp_frame_release(&extra);
                    return in_fail(in, "%s frame after the final eos", bp_kind_name(k));
                }
            }
            in_close_socket(in);   /* lets the producers, who wait for us to hang up, exit */
            return 0;
        }
        int r = read_frame(in, f);
        if (r < 0) return -1;
        if (r == 0)
            return in_fail(in, "stream ended without eos: %d of %d eos received after %lld frames",
                           in->eos_seen, in->producers, (long long)in->data);
        r = account(in, f);
        if (r < 0) {
            bp_frame_release(f);
            return -1;
        }
        if (r > 0) return 1;
    }
}

static void in_close_socket(bp_in *in) {
    if (!in->sock) return;
    zmq_socket_monitor(in->sock, NULL, 0);
    zmq_close(in->monitor);
    zmq_close(in->sock);
    in->sock = in->monitor = NULL;
    ctx_release();
}

const bp_frame *bp_in_wait_hello(bp_in *in) {
    if (in->have_hello) return &in->hello;
    if (in->raw) return NULL;
    bp_frame f;
    int r = bp_in_next(in, &f);
    if (r < 0) return NULL;
    if (r == 0) {
        /* hello then eos: an empty stream is still a stream */
        if (in->have_hello) return &in->hello;
        in_fail(in, "stream ended before any hello");
        return NULL;
    }
    in->pending = f;
    in->have_pending = 1;
    return &in->hello;
}

void bp_in_close(bp_in *in) {
    if (!in) return;
    char kinds[256] = "";
    size_t used = 0;
    for (int k = 0; k < BP_KIND_COUNT; k++)
        if (in->by_kind[k])
            used += (size_t)snprintf(kinds + used, sizeof kinds - used, "%s%lld %s", used ? ", " : "",
                                     (long long)in->by_kind[k], bp_kind_name((bp_kind)k));
    bp_log("in: %lld frames%s%s%s from %s", (long long)in->data, used ? " (" : "", kinds, used ? ")" : "", in->spec);
    if (in->have_pending) bp_frame_release(&in->pending);
    if (in->have_hello) bp_frame_release(&in->hello);
    in_close_socket(in);
    if (in->fd > 0) close(in->fd);
    free(in->peers);
    free(in->buf);
    free(in->spec);
    free(in);
}

/* ---- output ----------------------------------------------------------------------- */

struct bp_out {
    char *spec;
    int raw, said_hello, fd;
    bp_err err;
    void **socks, **monitors;
    int nsocks, next_sock;
    /* per socket, from its monitor: consumers that completed the ZeroMQ handshake, and those
     * that went away (a connection that failed its handshake, e.g. a port scan, counts in
     * neither) */
    int *connections, *disconnects;
    /* per socket: the last failed handshake's event and value (0: none) and when the first
     * failure came, which fail the stream while no handshake of that socket has succeeded
     * (see handshake_refused) */
    uint32_t *refusal_event, *refusal_value;
    double *refusing_since;
    int gone;                /* downstream went away: nothing more is sent */
    double opened_at;        /* BERTPIPE_CONNECT_TIMEOUT counts from here */
    int64_t data, by_kind[BP_KIND_COUNT];
    int64_t *per_sock;       /* data frames sent on each fan-out socket (their eos counts) */
    char *path, *tmp_path;   /* file: outputs */
    int raw_eos_held;        /* raw fan-out: an eos was passed in; close sends one per branch */
    int merge_eos;           /* bp_out_merge_eos: hold every eos, hellos after the first dropped */
};

static void close_socks(bp_out *out);
static void out_free(bp_out *out);

static int out_fail(bp_out *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int out_fail(bp_out *out, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    bp_err_set(&out->err, "%s (%s)", what, out->spec);
    return -1;
}

bp_out *bp_out_open(const char *spec, bp_err *err) {
    bp_out *out = calloc(1, sizeof *out);
    if (!out || !(out->spec = strdup(spec))) { free(out); bp_err_set(err, "out of memory"); return NULL; }
    out->opened_at = bp_now();
    out->fd = -1;
    /* A closed downstream must be an error from write(), not a silent death by SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    if (strncmp(spec, "file:", 5) == 0) {
        /* Written under a temporary name and renamed by a successful close, so a failed
         * stage never leaves a recording that looks complete. */
        const char *path = spec + 5;
        size_t n = strlen(path) + 32;
        if (!(out->path = malloc(n)) || !(out->tmp_path = malloc(n))) goto oom;
        snprintf(out->path, n, "%s", path);
        snprintf(out->tmp_path, n, "%s.tmp-%d", path, (int)getpid());
        if ((out->fd = open(out->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
            bp_err_set(err, "cannot create: %s (%s)", strerror(errno), out->tmp_path);
            out_free(out);
            return NULL;
        }
        out->nsocks = 1;
        out->per_sock = calloc(1, sizeof *out->per_sock);
        if (!out->per_sock) goto oom;
        return out;
    }
    if (strcmp(spec, "-") == 0) {
        out->fd = 1;
        widen_pipe(out->fd);
        out->nsocks = 1;
        out->per_sock = calloc(1, sizeof *out->per_sock);
        if (!out->per_sock) goto oom;
        return out;
    }
    endpoint_part *parts;
    int n;
    if (parse_spec(spec, 0, &parts, &n, err)) { free(out->spec); free(out); return NULL; }
    out->socks = calloc((size_t)n, sizeof *out->socks);
    out->monitors = calloc((size_t)n, sizeof *out->monitors);
    out->per_sock = calloc((size_t)n, sizeof *out->per_sock);
    out->connections = calloc((size_t)n, sizeof *out->connections);
    out->disconnects = calloc((size_t)n, sizeof *out->disconnects);
    out->refusal_event = calloc((size_t)n, sizeof *out->refusal_event);
    out->refusal_value = calloc((size_t)n, sizeof *out->refusal_value);
    out->refusing_since = calloc((size_t)n, sizeof *out->refusing_since);
    if (!out->socks || !out->monitors || !out->per_sock || !out->connections || !out->disconnects ||
        !out->refusal_event || !out->refusal_value || !out->refusing_since) {
        free_parts(parts, n);
        goto oom;
    }
    int hwm = env_int("BERTPIPE_HWM", 256), linger = env_int("BERTPIPE_LINGER_MS", -1);
    for (int i = 0; i < n; i++) {
        void *ctx = ctx_acquire();
        void *sock = ctx ? zmq_socket(ctx, ZMQ_PUSH) : NULL;
        if (!sock) {
            if (ctx) ctx_release();
            bp_err_set(err, "cannot create ZeroMQ socket: %s (%s)", zmq_strerror(errno), spec);
            goto fail;
        }
        out->socks[out->nsocks++] = sock;
        zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        /* Watched so close can wait for the consumer to hang up first (see bp_out_close). */
        char mon_addr[64];
        snprintf(mon_addr, sizeof mon_addr, "inproc://bp-monitor-%d-%d", (int)getpid(), monitor_seq++);
        void *mon = NULL;
        if (zmq_socket_monitor(sock, mon_addr, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                                   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                                   ZMQ_EVENT_DISCONNECTED) ||
            !(mon = zmq_socket(ctx, ZMQ_PAIR)) || zmq_connect(mon, mon_addr)) {
            if (mon) zmq_close(mon);
            bp_err_set(err, "cannot monitor ZeroMQ socket: %s (%s)", zmq_strerror(errno), spec);
            goto fail;
        }
        int zero = 0;
        zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
        out->monitors[i] = mon;
        if (bp_curve_prepare_socket(sock, parts[i].addr, parts[i].bind, err)) goto fail;
        int rc = parts[i].bind ? zmq_bind(sock, parts[i].addr) : zmq_connect(sock, parts[i].addr);
        if (rc) {
            bp_err_set(err, "cannot %s %s: %s", parts[i].bind ? "bind" : "connect", parts[i].addr, zmq_strerror(errno));
            goto fail;
        }
    }
    free_parts(parts, n);
    return out;
fail:
    free_parts(parts, n);
    for (int i = 0; i < out->nsocks; i++) {
        int zero = 0;
        zmq_setsockopt(out->socks[i], ZMQ_LINGER, &zero, sizeof zero);
    }
    close_socks(out);
    out_free(out);
    return NULL;
oom:
    out_free(out);
    bp_err_set(err, "out of memory");
    return NULL;
}

void bp_out_set_raw(bp_out *out, int raw) { out->raw = raw; }
void bp_out_merge_eos(bp_out *out) { out->merge_eos = 1; }
const char *bp_out_error(const bp_out *out) { return out->err.msg; }
const bp_err *bp_out_err(const bp_out *out) { return &out->err; }
int64_t bp_out_count(const bp_out *out) { return out->data; }

/* The consumer is gone: fail (exit status 4 for a stage, see bp_endpoint_failure). */
static int downstream_gone(bp_out *out, const char *fmt, long long frames) __attribute__((format(printf, 2, 0)));
static int downstream_gone(bp_out *out, const char *fmt, long long frames) {
    out->gone = 1;
    note_failure(BP_FAIL_DOWNSTREAM);
    return out_fail(out, fmt, frames);
}

static int out_interrupted(bp_out *out) { return out_fail(out, "interrupted by %s", signal_name(stop_signal)); }

static int out_timed_out(bp_out *out) {
    return out_fail(out, "no consumer took a frame for %d s (BERTPIPE_TIMEOUT) after %lld frames", timeout_seconds(),
                    (long long)out->data);
}

static int write_all(bp_out *out, const char *p, size_t len) {
    while (len) {
        int ready = wait_fd(out->fd, POLLOUT, timeout_seconds());
        if (ready == 0) return out_interrupted(out);
        if (ready == 2) return out_timed_out(out);
        if (ready < 0) return out_fail(out, "poll failed: %s", strerror(errno));
        ssize_t w = write(out->fd, p, len);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            if (errno == EPIPE) return downstream_gone(out, "downstream closed the pipe after %lld frames", (long long)out->data);
            return out_fail(out, "write failed: %s", strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void drain_out_monitor(bp_out *out, int i);
static int handshake_refused(bp_out *out, int i);

/* No consumer of socket i completed a handshake within BERTPIPE_CONNECT_TIMEOUT of the opening. */
static int never_connected(bp_out *out, int i) {
    int limit = connect_timeout_seconds();
    return limit > 0 && out->connections[i] == 0 && bp_now() - out->opened_at > limit;
}

static int out_not_connected(bp_out *out) {
    return out_fail(out, "no consumer connected within %d s (BERTPIPE_CONNECT_TIMEOUT) after %lld frames: is the consumer "
                         "started, and is this address reachable from here?", connect_timeout_seconds(), (long long)out->data);
}

/* A consumer of socket i that completed its handshake and left again, before this stream's
 * eos was sent: it died (a consumer hangs up only after its last eos). */
static int consumer_left(bp_out *out, int i) {
    drain_out_monitor(out, i);
    return out->connections[i] > 0 && out->disconnects[i] >= out->connections[i];
}

/* Wait until socket i can take a message: 0, or -1 when a stop signal, BERTPIPE_TIMEOUT or
 * the consumer leaving ends the wait. */
static int wait_writable(bp_out *out, int i) {
    int timeout_s = timeout_seconds();
    double deadline = timeout_s > 0 ? bp_now() + timeout_s : 0;
    for (;;) {
        if (stop_signal) return out_interrupted(out);
        if (consumer_left(out, i))
            return downstream_gone(out, "the consumer disconnected before the end of the stream, after %lld frames",
                                   (long long)out->data);
        if (handshake_refused(out, i)) return -1;
        zmq_pollitem_t items[2] = {{out->socks[i], 0, ZMQ_POLLOUT, 0}, {out->monitors[i], 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, WAIT_SLICE_MS);
        if (rc < 0 && errno != EINTR) return out_fail(out, "poll failed: %s", zmq_strerror(errno));
        if (rc > 0 && (items[0].revents & ZMQ_POLLOUT)) return 0;
        if (deadline && bp_now() > deadline) return out_timed_out(out);
        if (never_connected(out, i)) return out_not_connected(out);
    }
}

/* Send on socket i, never blocking past what wait_writable allows. msg: a zmq message to
 * send (consumed on success), or NULL to send the bytes p[0..len). */
static int zsend_on(bp_out *out, int i, const char *p, size_t len, zmq_msg_t *msg) {
    for (;;) {
        if (wait_writable(out, i)) return -1;
        int rc = msg ? zmq_msg_send(msg, out->socks[i], ZMQ_DONTWAIT) : zmq_send(out->socks[i], p, len, ZMQ_DONTWAIT);
        if (rc >= 0) return 0;
        if (errno != EAGAIN && errno != EINTR) return out_fail(out, "send failed: %s", zmq_strerror(errno));
    }
}

/* Send to every socket (hello, eos) — the same bytes. */
static int send_all_socks(bp_out *out, const char *p, size_t len) {
    if (out->fd >= 0) return write_all(out, p, len);
    for (int i = 0; i < out->nsocks; i++)
        if (zsend_on(out, i, p, len, NULL)) return -1;
    return 0;
}

static void free_hint(void *data, void *hint) { free(hint); }

/* One data frame to one consumer: stdio, the single socket, or the first fan-out socket that
 * has room (blocking on all of them when none has). Takes ownership of `owned` if not NULL. */
static int send_data(bp_out *out, const char *p, size_t len, char *owned) {
    int which = 0;
    if (out->fd >= 0) {
        int rc = write_all(out, p, len);
        free(owned);
        if (rc) return -1;
    } else {
        if (out->nsocks > 1) {
            int timeout_s = timeout_seconds();
            double deadline = timeout_s > 0 ? bp_now() + timeout_s : 0;
            for (;;) {
                if (stop_signal) {
                    free(owned);
                    return out_interrupted(out);
                }
                zmq_pollitem_t items[64];
                int n = out->nsocks < 64 ? out->nsocks : 64;
                for (int i = 0; i < n; i++) {
                    items[i].socket = out->socks[(out->next_sock + i) % out->nsocks];
                    items[i].fd = 0;
                    items[i].events = ZMQ_POLLOUT;
                    items[i].revents = 0;
                }
                if (zmq_poll(items, n, WAIT_SLICE_MS) < 0 && errno != EINTR) {
                    free(owned);
                    return out_fail(out, "poll failed: %s", zmq_strerror(errno));
                }
                int found = -1;
                for (int i = 0; i < n && found < 0; i++)
                    if (items[i].revents & ZMQ_POLLOUT) found = (out->next_sock + i) % out->nsocks;
                if (found >= 0) { which = found; break; }
                for (int i = 0; i < out->nsocks; i++) {
                    if (consumer_left(out, i)) {
                        free(owned);
                        return downstream_gone(out, "a consumer disconnected before the end of the stream, after %lld frames",
                                               (long long)out->data);
                    }
                    if (handshake_refused(out, i)) {
                        free(owned);
                        return -1;
                    }
                }
                if (deadline && bp_now() > deadline) {
                    free(owned);
                    return out_timed_out(out);
                }
            }
            out->next_sock = (which + 1) % out->nsocks;
        }
        if (owned) {
            zmq_msg_t msg;
            if (zmq_msg_init_data(&msg, (void *)p, len, free_hint, owned)) {
                free(owned);
                return out_fail(out, "cannot wrap message: %s", zmq_strerror(errno));
            }
            if (zsend_on(out, which, NULL, 0, &msg)) {
                zmq_msg_close(&msg);
                return -1;
            }
        } else if (zsend_on(out, which, p, len, NULL)) {
            return -1;
        }
    }
    out->per_sock[which]++;
    return 0;
}

void bp_hello_begin(bp_writer *w) {
    bp_begin(w, BP_HELLO);
    bp_put_str(w, "from", bp_stage());
    bp_put_int(w, "pid", (int64_t)getpid());
}

void bp_hello_begin_from(bp_writer *w, const bp_frame *upstream, const char *const *keys) {
    bp_hello_begin(w);
    for (; *keys; keys++) bp_put_copy(w, upstream, *keys);
}

int bp_out_hello(bp_out *out, bp_writer *w) {
    if (out->said_hello) return out_fail(out, "hello sent twice");
    if (bp_writer_failed(w)) return out_fail(out, "out of memory building the hello");
    size_t len;
    const char *p = bp_finish(w, &len);
    out->said_hello = 1;
    return send_all_socks(out, p, len);
}

int bp_out_send(bp_out *out, bp_writer *w) {
    if (!out->raw && !out->said_hello) return out_fail(out, "data frame sent before the hello");
    bp_kind kind = w->kind;
    if (bp_writer_failed(w)) return out_fail(out, "out of memory building a %s frame", bp_kind_name(kind));
    size_t len;
    const char *p;
    int rc;
    if (out->fd >= 0) {
        p = bp_finish(w, &len);
        rc = send_data(out, p, len, NULL);
    } else {
        /* Hand the buffer to ZeroMQ without a copy; w starts a new one. */
        char *owned = bp_writer_take(w, &p, &len);
        rc = send_data(out, p, len, owned);
    }
    if (rc) return -1;
    out->data++;
    bp_status_frames(0, 1);
    out->by_kind[kind]++;
    return 0;
}

int bp_out_send_frame(bp_out *out, const bp_frame *f) {
    if (f->kind == BP_HELLO && out->merge_eos && out->said_hello) return 0;   /* one stream out */
    if (f->kind == BP_EOS && out->raw && (out->nsocks > 1 || out->merge_eos)) {
        /* Fanning a stream out splits its frames: each branch gets its own count at close. */
        out->raw_eos_held = 1;
        return 0;
    }
    if (f->kind == BP_HELLO || f->kind == BP_EOS || f->kind == BP_ERROR) {
        if (f->kind == BP_HELLO) out->said_hello = 1;
        return send_all_socks(out, f->raw, f->raw_len);
    }
    if (!out->raw && !out->said_hello) return out_fail(out, "data frame sent before the hello");
    if (send_data(out, f->raw, f->raw_len, NULL)) return -1;
    out->data++;
    bp_status_frames(0, 1);
    out->by_kind[f->kind]++;
    return 0;
}

static void close_socks(bp_out *out) {
    for (int i = 0; i < out->nsocks && out->socks; i++) {
        if (out->monitors && out->monitors[i]) {
            zmq_socket_monitor(out->socks[i], NULL, 0);
            zmq_close(out->monitors[i]);
        }
        zmq_close(out->socks[i]);
        ctx_release();
    }
    out->nsocks = 0;
}

static void out_free(bp_out *out) {
    if (out->tmp_path) {
        if (out->fd > 1) close(out->fd);
        unlink(out->tmp_path);   /* still there only when the stream was not completed */
    }
    free(out->path);
    free(out->tmp_path);
    free(out->socks);
    free(out->monitors);
    free(out->per_sock);
    free(out->connections);
    free(out->disconnects);
    free(out->refusal_event);
    free(out->refusal_value);
    free(out->refusing_since);
    free(out->spec);
    free(out);
}

/* Count connection events of output socket i (non-blocking). A connection that fails its
 * handshake is followed by one disconnect, which it cancels. */
static void drain_out_monitor(bp_out *out, int i) {
    uint16_t event;
    uint32_t value;
    while (monitor_event(out->monitors[i], &event, &value)) {
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) out->connections[i]++;
        else if (event == ZMQ_EVENT_DISCONNECTED) out->disconnects[i]++;
        else if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                          ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)) {
            out->disconnects[i]--;
            if (!out->refusal_event[i]) out->refusing_since[i] = bp_now();
            out->refusal_event[i] = event;
            out->refusal_value[i] = value;
        }
    }
}

/* Socket i's consumer refused every handshake so far (CURVE on one side only, a wrong server
 * key): fail, saying which, instead of retrying until BERTPIPE_TIMEOUT (for ever by default).
 * A protocol error is definite and fails at once. A peer that only hung up mid-handshake
 * (what a CURVE server does with a wrong key, but also a tcp proxy whose consumer is not up
 * yet) fails once that has gone on for REFUSAL_GRACE_S. A consumer that took a handshake once
 * is judged by its disconnects instead. */
#define REFUSAL_GRACE_S 5.0
static int handshake_refused(bp_out *out, int i) {
    if (out->connections[i] > 0 || !out->refusal_event[i]) return 0;
    uint32_t value = out->refusal_value[i];
    if (out->refusal_event[i] == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && bp_now() - out->refusing_since[i] < REFUSAL_GRACE_S)
        return 0;
    if (out->refusal_event[i] == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        return out_fail(out, "the consumer refused the ZeroMQ handshake: security mismatch, CURVE on one side and plain "
                             "tcp on the other (--curve-key/--curve-server on both or neither)");
    if (out->refusal_event[i] == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
        return out_fail(out, "the CURVE handshake with the consumer failed: is --curve-server the public key of "
                             "the consumer's --curve-key?");
    if (out->refusal_event[i] == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && bp_curve_enabled())
        return out_fail(out, "the consumer refused the ZeroMQ handshake (it hung up: %s, for %g s): is --curve-server "
                             "the public key of the consumer's --curve-key, and does the consumer use CURVE?",
                        zmq_strerror((int)value), REFUSAL_GRACE_S);
    if (out->refusal_event[i] == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        return out_fail(out, "the consumer refused the ZeroMQ handshake (it hung up: %s, for %g s): if it uses CURVE, "
                             "give --curve-server its public key", zmq_strerror((int)value), REFUSAL_GRACE_S);
    return out_fail(out, "the ZeroMQ handshake with the consumer failed (event 0x%x, value 0x%x)",
                    (unsigned)out->refusal_event[i], (unsigned)value);
}

/* After the eos: hold every connection open until its consumer hangs up. ZeroMQ drops what
 * is still in the kernel buffer when the sender closes while the receiver is stalled at its
 * high-water mark, so closing first could lose the tail of the stream (the eos above all).
 * The consumer closes as soon as it has read its last eos, so this wait is short. */
static int wait_for_consumers(bp_out *out) {
    int timeout_s = timeout_seconds();
    double deadline = timeout_s > 0 ? bp_now() + timeout_s : 0;
    for (;;) {
        int waiting = 0;
        zmq_pollitem_t items[64];
        int n = out->nsocks < 64 ? out->nsocks : 64;
        for (int i = 0; i < n; i++) {
            drain_out_monitor(out, i);
            if (handshake_refused(out, i)) return -1;
            if (out->connections[i] == 0 || out->disconnects[i] < out->connections[i]) waiting = 1;
            if (never_connected(out, i)) return out_not_connected(out);
            items[i].socket = out->monitors[i];
            items[i].fd = 0;
            items[i].events = ZMQ_POLLIN;
            items[i].revents = 0;
        }
        if (!waiting) return 0;
        if (stop_signal) return out_interrupted(out);
        if (deadline && bp_now() > deadline)
            return out_fail(out, "the consumer did not hang up within %d s of the eos (BERTPIPE_TIMEOUT)", timeout_s);
        if (zmq_poll(items, n, WAIT_SLICE_MS) < 0 && errno != EINTR) return out_fail(out, "poll failed: %s", zmq_strerror(errno));
    }
}

int bp_out_close(bp_out *out, bp_err *err) {
    int rc = 0;
    if (!out->raw || out->raw_eos_held) {
        bp_writer w;
        bp_writer_init(&w);
        if (!out->said_hello) {
            /* A stage that produced nothing still owes a well-formed (empty) stream. */
            bp_hello_begin(&w);
            if (bp_out_hello(out, &w)) rc = -1;
        }
        for (int i = 0; i < out->nsocks && rc == 0; i++) {
            bp_begin(&w, BP_EOS);
            bp_put_str(&w, "from", bp_stage());
            bp_put_int(&w, "count", out->per_sock[i]);
            size_t len;
            const char *p = bp_finish(&w, &len);
            rc = out->fd >= 0 ? write_all(out, p, len) : zsend_on(out, i, p, len, NULL);
        }
        bp_writer_free(&w);
    }
    char kinds[256] = "";
    size_t used = 0;
    for (int k = 0; k < BP_KIND_COUNT; k++)
        if (out->by_kind[k])
            used += (size_t)snprintf(kinds + used, sizeof kinds - used, "%s%lld %s", used ? ", " : "",
                                     (long long)out->by_kind[k], bp_kind_name((bp_kind)k));
    bp_log("out: %lld frames%s%s%s to %s", (long long)out->data, used ? " (" : "", kinds, used ? ")" : "", out->spec);
    if (rc && err) *err = out->err;
    if (rc == 0 && out->tmp_path) {
        if (fsync(out->fd) && errno != EINVAL) rc = out_fail(out, "fsync failed: %s", strerror(errno));
        if (close(out->fd)) rc = out_fail(out, "close failed: %s", strerror(errno));
        out->fd = -1;
        if (rc == 0 && rename(out->tmp_path, out->path)) rc = out_fail(out, "cannot rename into place: %s", strerror(errno));
        if (rc && err) *err = out->err;
    }
    if (rc == 0 && out->fd < 0 && !out->tmp_path && wait_for_consumers(out)) {
        rc = -1;
        if (err) *err = out->err;
    }
    /* Everything was read, or the stream failed: nothing may linger (a reconnect loop to a
     * consumer that is gone would never end, and closing would wait for it). */
    int zero = 0;
    for (int i = 0; i < out->nsocks && out->socks; i++) zmq_setsockopt(out->socks[i], ZMQ_LINGER, &zero, sizeof zero);
    close_socks(out);
    out_free(out);
    return rc;
}

void bp_out_abort(bp_out *out, const char *message) {
    if (!out) return;
    bp_writer w;
    bp_writer_init(&w);
    bp_begin(&w, BP_ERROR);
    bp_put_str(&w, "from", bp_stage());
    bp_put_str(&w, "message", message ? message : "failed");
    size_t len;
    const char *p = bp_finish(&w, &len);
    /* Never wait for ever on a consumer that is gone or stuck: what is still queued gets a
     * second to leave (the error frame behind it, for a consumer that reads), none when the
     * consumer is known to be gone. */
    int linger = out->gone ? 0 : 1000;
    for (int i = 0; i < out->nsocks && out->socks; i++) zmq_setsockopt(out->socks[i], ZMQ_LINGER, &linger, sizeof linger);
    if (out->gone) {
        /* nobody to tell */
    } else if (out->fd >= 0) {
        /* best effort within a second, stop signal or not: telling downstream is the point */
        double deadline = bp_now() + 1.0;
        for (size_t done = 0; done < len && bp_now() < deadline;) {
            struct pollfd pfd = {out->fd, POLLOUT, 0};
            if (poll(&pfd, 1, WAIT_SLICE_MS) <= 0) continue;
            ssize_t wrote = write(out->fd, p + done, len - done);
            if (wrote < 0 && errno != EINTR && errno != EAGAIN) break;
            if (wrote > 0) done += (size_t)wrote;
        }
    } else {
        for (int i = 0; i < out->nsocks; i++) zmq_send(out->socks[i], p, len, ZMQ_DONTWAIT);
    }
    bp_writer_free(&w);
    close_socks(out);
    out_free(out);
}
