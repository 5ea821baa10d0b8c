/* stage/stage.c — shared option handling for stage executables (see stage.h).
 * Must never: return a bad option or a failed open to its caller: it prints the one error
 * line and exits, which is why only stages link it. */
#include "stage/stage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bp_stage_init(bp_io_opts *io, char **argv) {
    bp_set_stage(argv[0]);
    io->in = "-";
    io->out = "-";
    io->producers = 1;
}

int bp_io_option(bp_io_opts *io, int opt, const char *arg) {
    switch (opt) {
    case BP_OPT_IN: io->in = arg; return 1;
    case BP_OPT_OUT: io->out = arg; return 1;
    case BP_OPT_PRODUCERS: io->producers = (int)bp_opt_long("--producers", arg, 1, 4096); return 1;
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

/* The output every fatal error tells first (one per stage). */
static bp_out *stage_out;

static void abort_stage_out(const char *message) {
    bp_out *out = stage_out;
    stage_out = NULL;
    bp_out_abort(out, message);
}

bp_out *bp_open_out(const bp_io_opts *io) {
    bp_err err;
    bp_out *out = bp_out_open(io->out, &err);
    if (!out) bp_die_err(&err);
    stage_out = out;
    bp_set_die_hook(abort_stage_out);
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
    if (stage_out != out) return;
    stage_out = NULL;
    bp_set_die_hook(NULL);
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

void bp_usage_error(void) {
    bp_die(2, NULL, "bad usage (see %s --help)", bp_stage());
}
