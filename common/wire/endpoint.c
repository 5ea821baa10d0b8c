/* wire/endpoint.c — stdio and ZeroMQ transports plus the hello/eos stream rules (see endpoint.h).
 *
 * The only file that knows ZeroMQ. Every failure comes back as an error the stage prints
 * and exits on.
 * Must never: interpret a frame's fields beyond hello/eos/error, or drop, reorder within one
 * producer, or invent frames.
 */
#include "wire/endpoint.h"

#include "wire/codec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

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
    /* zeromq */
    void *sock, *monitor;
    int connections, disconnects;
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
    zmq_setsockopt(in->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
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
            size_t size = bp_msgpack_size(in->buf + in->start, have);
            if (size == (size_t)-1) return in_fail(in, "malformed MessagePack after %lld frames", (long long)in->data);
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
        ssize_t r = read(in->fd, in->buf + in->end, in->cap - in->end);
        if (r < 0) {
            if (errno == EINTR) continue;
            return in_fail(in, "read failed: %s", strerror(errno));
        }
        if (r == 0) in->eof = 1;
        in->end += (size_t)r;
    }
}

static void drain_monitor(bp_in *in) {
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, in->monitor, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); return; }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {
            zmq_msg_init(&addr);
            zmq_msg_recv(&addr, in->monitor, 0);
            zmq_msg_close(&addr);
        }
        if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED) in->connections++;
        else if (event == ZMQ_EVENT_DISCONNECTED) in->disconnects++;
    }
}

static void free_zmq_msg(void *msg) {
    zmq_msg_close(msg);
    free(msg);
}

/* zmq: next message. 1 ok (frame decoded), 0 never, -1 error. */
static int read_zmq(bp_in *in, bp_frame *f) {
    const int grace_ms = 500;
    int timeout_s = env_int("BERTPIPE_TIMEOUT", 0);
    double idle_since = bp_now();
    for (;;) {
        if (in->disconnects <= in->eos_seen) {
            zmq_msg_t *fast = malloc(sizeof *fast);
            if (!fast) return in_fail(in, "out of memory");
            zmq_msg_init(fast);
            if (zmq_msg_recv(fast, in->sock, ZMQ_DONTWAIT) >= 0) {
                bp_err derr;
                if (bp_frame_decode(f, zmq_msg_data(fast), zmq_msg_size(fast), free_zmq_msg, fast, &derr)) {
                    free_zmq_msg(fast);
                    return in_fail(in, "%s, after %lld frames", derr.msg, (long long)in->data);
                }
                return 1;
            }
            free_zmq_msg(fast);
        }
        zmq_pollitem_t items[2] = {{in->sock, 0, ZMQ_POLLIN, 0}, {in->monitor, 0, ZMQ_POLLIN, 0}};
        /* Producers that went away without their eos: give their last frames a moment to
         * surface (the disconnect event can overtake them), then fail. */
        int lost = in->disconnects > in->eos_seen;
        long wait_ms = lost ? grace_ms : (timeout_s > 0 ? 1000 : -1);
        int rc = zmq_poll(items, 2, wait_ms);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return in_fail(in, "poll failed: %s", zmq_strerror(errno));
        }
        if (items[1].revents & ZMQ_POLLIN) drain_monitor(in);
        if (items[0].revents & ZMQ_POLLIN) {
            zmq_msg_t *msg = malloc(sizeof *msg);
            if (!msg) return in_fail(in, "out of memory");
            zmq_msg_init(msg);
            if (zmq_msg_recv(msg, in->sock, ZMQ_DONTWAIT) < 0) {
                free_zmq_msg(msg);
                if (errno == EAGAIN || errno == EINTR) continue;
                return in_fail(in, "receive failed: %s", zmq_strerror(errno));
            }
            bp_err derr;
            if (bp_frame_decode(f, zmq_msg_data(msg), zmq_msg_size(msg), free_zmq_msg, msg, &derr)) {
                free_zmq_msg(msg);
                return in_fail(in, "%s, after %lld frames", derr.msg, (long long)in->data);
            }
            return 1;
        }
        if (rc == 0 && lost) {
            int missing = in->producers - in->eos_seen;
            return in_fail(in, "a producer disconnected before its eos: %d of %d eos received after %lld frames; "
                               "%d eos missing", in->eos_seen, in->producers, (long long)in->data, missing);
        }
        if (rc == 0 && timeout_s > 0 && bp_now() - idle_since > timeout_s)
            return in_fail(in, "no frame for %d s (BERTPIPE_TIMEOUT): %d of %d eos received after %lld frames",
                           timeout_s, in->eos_seen, in->producers, (long long)in->data);
        if (rc > 0 && !(items[0].revents & ZMQ_POLLIN)) continue;
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
    int *connections, *disconnects;   /* per socket, from its monitor */
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
        if ((out->fd = open(out->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
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
    if (!out->socks || !out->monitors || !out->per_sock || !out->connections || !out->disconnects) {
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
        if (zmq_socket_monitor(sock, mon_addr, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) ||
            !(mon = zmq_socket(ctx, ZMQ_PAIR)) || zmq_connect(mon, mon_addr)) {
            if (mon) zmq_close(mon);
            bp_err_set(err, "cannot monitor ZeroMQ socket: %s (%s)", zmq_strerror(errno), spec);
            goto fail;
        }
        int zero = 0;
        zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
        out->monitors[i] = mon;
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

static int write_all(bp_out *out, const char *p, size_t len) {
    while (len) {
        ssize_t w = write(out->fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE) return out_fail(out, "downstream closed the pipe after %lld frames", (long long)out->data);
            return out_fail(out, "write failed: %s", strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int zsend(bp_out *out, void *sock, const char *p, size_t len) {
    while (zmq_send(sock, p, len, 0) < 0) {
        if (errno == EINTR) continue;
        return out_fail(out, "send failed: %s", zmq_strerror(errno));
    }
    return 0;
}

/* Send to every socket (hello, eos) — the same bytes. */
static int send_all_socks(bp_out *out, const char *p, size_t len) {
    if (out->fd >= 0) return write_all(out, p, len);
    for (int i = 0; i < out->nsocks; i++)
        if (zsend(out, out->socks[i], p, len)) return -1;
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
            for (;;) {
                zmq_pollitem_t items[64];
                int n = out->nsocks < 64 ? out->nsocks : 64;
                for (int i = 0; i < n; i++) {
                    items[i].socket = out->socks[(out->next_sock + i) % out->nsocks];
                    items[i].fd = 0;
                    items[i].events = ZMQ_POLLOUT;
                    items[i].revents = 0;
                }
                if (zmq_poll(items, n, -1) < 0) {
                    if (errno == EINTR) continue;
                    free(owned);
                    return out_fail(out, "poll failed: %s", zmq_strerror(errno));
                }
                int found = -1;
                for (int i = 0; i < n && found < 0; i++)
                    if (items[i].revents & ZMQ_POLLOUT) found = (out->next_sock + i) % out->nsocks;
                if (found >= 0) { which = found; break; }
            }
            out->next_sock = (which + 1) % out->nsocks;
        }
        if (owned) {
            zmq_msg_t msg;
            if (zmq_msg_init_data(&msg, (void *)p, len, free_hint, owned)) {
                free(owned);
                return out_fail(out, "cannot wrap message: %s", zmq_strerror(errno));
            }
            int rc;
            while ((rc = zmq_msg_send(&msg, out->socks[which], 0)) < 0 && errno == EINTR) {}
            if (rc < 0) {
                zmq_msg_close(&msg);
                return out_fail(out, "send failed: %s", zmq_strerror(errno));
            }
        } else if (zsend(out, out->socks[which], p, len)) {
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
    free(out->spec);
    free(out);
}

/* Count connection events of output socket i (non-blocking). */
static void drain_out_monitor(bp_out *out, int i) {
    for (;;) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, out->monitors[i], ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); return; }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {
            zmq_msg_init(&ev);
            zmq_msg_recv(&ev, out->monitors[i], 0);
            zmq_msg_close(&ev);
        }
        if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED) out->connections[i]++;
        else if (event == ZMQ_EVENT_DISCONNECTED) out->disconnects[i]++;
    }
}

/* After the eos: hold every connection open until its consumer hangs up. ZeroMQ drops what
 * is still in the kernel buffer when the sender closes while the receiver is stalled at its
 * high-water mark, so closing first could lose the tail of the stream (the eos above all).
 * The consumer closes as soon as it has read its last eos, so this wait is short. */
static void wait_for_consumers(bp_out *out) {
    for (;;) {
        int waiting = 0;
        zmq_pollitem_t items[64];
        int n = out->nsocks < 64 ? out->nsocks : 64;
        for (int i = 0; i < n; i++) {
            drain_out_monitor(out, i);
            if (out->connections[i] == 0 || out->disconnects[i] < out->connections[i]) waiting = 1;
            items[i].socket = out->monitors[i];
            items[i].fd = 0;
            items[i].events = ZMQ_POLLIN;
            items[i].revents = 0;
        }
        if (!waiting) return;
        if (zmq_poll(items, n, -1) < 0 && errno != EINTR) return;
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
            rc = out->fd >= 0 ? write_all(out, p, len) : zsend(out, out->socks[i], p, len);
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
    if (rc == 0 && out->fd < 0 && !out->tmp_path) {
        wait_for_consumers(out);
        /* Everything was read: nothing may linger (a reconnect loop would never end). */
        int zero = 0;
        for (int i = 0; i < out->nsocks; i++) zmq_setsockopt(out->socks[i], ZMQ_LINGER, &zero, sizeof zero);
    }
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
    if (out->fd >= 0) {
        write_all(out, p, len);
    } else {
        /* Do not wait for ever on a consumer that is gone: a short linger is enough. */
        int linger = 2000;
        for (int i = 0; i < out->nsocks; i++) {
            zmq_send(out->socks[i], p, len, ZMQ_DONTWAIT);
            zmq_setsockopt(out->socks[i], ZMQ_LINGER, &linger, sizeof linger);
        }
    }
    bp_writer_free(&w);
    close_socks(out);
    out_free(out);
}
