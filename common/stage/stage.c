/* stage/stage.c — shared option handling for stage executables (see stage.h).
 * Must never: return a bad option or a failed open to its caller: it prints the one error
 * line and exits, which is why only stages link it. */
#include "stage/stage.h"

#include "wire/curve.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BP_VERSION
#error "build with -DBP_VERSION='\"X.Y.Z\"' (the Makefile takes it from the VERSION file)"
#endif

/* The output every fatal error tells first (one per stage). */
static bp_out *stage_out;

static void (*stop_hook)(int sig);

void bp_set_stop_hook(void (*hook)(int sig)) { stop_hook = hook; }

/* Every fatal error, wherever in the stage it happens: downstream is told, then the exit
 * status says whose failure it was (a stop signal, upstream, downstream; else the caller's). */
static void on_die(const char *message) {
    bp_out *out = stage_out;
    stage_out = NULL;
    int sig = bp_endpoint_interrupted();
    void (*hook)(int) = stop_hook;
    stop_hook = NULL;
    if (sig && hook) hook(sig);   /* before the error frame: downstream learns the save is done */
    bp_out_abort(out, message);
    if (sig) exit(128 + sig);
    if (bp_endpoint_failure() == BP_FAIL_UPSTREAM) exit(BP_EXIT_UPSTREAM);
    if (bp_endpoint_failure() == BP_FAIL_DOWNSTREAM) exit(BP_EXIT_DOWNSTREAM);
}

static void on_stop_signal(int sig) { bp_endpoint_interrupt(sig); }

/* --curve-key / --curve-server FILE (or their environment settings, named by `from`): read
 * now, so a bad file stops the stage before it binds or connects anything. */
static void use_curve_file(int opt, const char *path, const char *from) {
    if (!path || !*path) return;
    bp_err err;
    int rc = opt == BP_OPT_CURVE_KEY ? bp_curve_set_key_file(path, &err) : bp_curve_set_server_file(path, &err);
    if (rc) bp_die(2, NULL, "%s: %s", from, err.msg);
}

void bp_stage_init(bp_io_opts *io, char **argv) {
    bp_set_stage(argv[0]);
    io->in = "-";
    io->out = "-";
    io->producers = 1;
    /* No SA_RESTART: a blocking call returns EINTR, and the endpoint waits look at the flag
     * every 100 ms besides, so an idle stage stops within a second. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bp_set_die_hook(on_die);
    use_curve_file(BP_OPT_CURVE_KEY, getenv("BERTPIPE_CURVE_KEY"), "BERTPIPE_CURVE_KEY");
    use_curve_file(BP_OPT_CURVE_SERVER, getenv("BERTPIPE_CURVE_SERVER"), "BERTPIPE_CURVE_SERVER");
    bp_status_frames(0, 0);   /* in a pipeline's status block from the start (base/log.h) */
}

int bp_stop_signal(void) { return bp_endpoint_interrupted(); }

const char *bp_stop_reason(void) {
    static char reason[48];
    int sig = bp_endpoint_interrupted();
    if (!sig) return NULL;
    snprintf(reason, sizeof reason, "interrupted by %s", sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a signal");
    return reason;
}

int bp_io_option(bp_io_opts *io, int opt, const char *arg) {
    switch (opt) {
    case BP_OPT_IN: io->in = arg; return 1;
    case BP_OPT_OUT: io->out = arg; return 1;
    case BP_OPT_PRODUCERS: io->producers = (int)bp_opt_long("--producers", arg, 1, 4096); return 1;
    case BP_OPT_CURVE_KEY: use_curve_file(opt, arg, "--curve-key"); return 1;
    case BP_OPT_CURVE_SERVER: use_curve_file(opt, arg, "--curve-server"); return 1;
    case BP_OPT_VERSION:
        if (printf("%s (bertpipe) %s\n", bp_stage(), BP_VERSION) < 0 || fflush(stdout)) exit(1);
        exit(0);
    default: return 0;
    }
}

bp_in *bp_open_in(const bp_io_opts *io) {
    bp_err err;
    bp_in *in = bp_in_open(io->in, io->producers, &err);
    if (!in) bp_die_err(&err);
    return in;
}

bp_in *bp_open_in_hello(const bp_io_opts *io, const bp_frame **hello) {
    bp_in *in = bp_open_in(io);
    if (!(*hello = bp_in_wait_hello(in))) bp_die_err(bp_in_err(in));
    return in;
}

int bp_stream_is_qa(const bp_frame *hello) {
    bp_err err;
    int qa = bp_hello_is_qa(hello, &err);
    if (qa < 0) bp_die_err(&err);
    return qa;
}

bp_out *bp_open_out(const bp_io_opts *io) {
    bp_err err;
    bp_out *out = bp_out_open(io->out, &err);
    if (!out) bp_die_err(&err);
    stage_out = out;
    return out;
}

void bp_send_hello(bp_out *out, bp_writer *w) {
    if (bp_out_hello(out, w)) bp_die_err(bp_out_err(out));
}

void bp_send(bp_out *out, bp_writer *w) {
    if (bp_out_send(out, w)) bp_die_err(bp_out_err(out));
}

/* Forget `out` as the stage's output: it is being closed. */
static void release_stage_out(bp_out *out) {
    if (stage_out == out) stage_out = NULL;
}

void bp_close_out(bp_out *out) {
    release_stage_out(out);
    bp_err err;
    if (bp_out_close(out, &err)) bp_die_err(&err);
}

void bp_abort_out(bp_out *out, const char *message) {
    release_stage_out(out);
    bp_out_abort(out, message);
}

long bp_opt_long(const char *name, const char *text, long min, long max) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        bp_die(2, NULL, "%s wants an integer in [%ld, %ld], got '%s'", name, min, max, text);
    return v;
}

double bp_opt_double(const char *name, const char *text, double min, double max) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max))
        bp_die(2, NULL, "%s wants a number in [%g, %g], got '%s'", name, min, max, text);
    return v;
}

static const char *stage_usage;

void bp_set_usage(const char *usage) { stage_usage = usage; }

/* The leading lines of the help that show how to call the stage: those starting "usage:" and
 * their continuations (indented by spaces). */
static void print_synopsis(void) {
    const char *line = stage_usage;
    while (line && *line && (strncmp(line, "usage:", 6) == 0 || (line != stage_usage && *line == ' '))) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        fprintf(stderr, "%.*s\n", (int)len, line);
        if (!end) break;
        line = end + 1;
    }
}

void bp_usage_die(const char *fmt, ...) {
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    print_synopsis();
    bp_die(2, NULL, "%s (see %s --help)", what, bp_stage());
}

void bp_usage_error(void) { bp_usage_die("bad usage"); }
