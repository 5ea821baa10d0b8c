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

bp_out *bp_open_out(const bp_io_opts *io) {
    bp_err err;
    bp_out *out = bp_out_open(io->out, &err);
    if (!out) bp_die_err(&err);
    return out;
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
