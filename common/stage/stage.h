/* stage/stage.h — what every stage's main() shares: the --in/--out/--producers options, opening
 * endpoints or dying with the one error format, stop signals, exit statuses, and strict
 * number parsing for options.
 *
 * The stage's output: once bp_open_out has opened it, every fatal error (bp_die, bp_die_err,
 * from anywhere in the stage) first sends an error frame with the error line's text on it,
 * then exits, so the consumer fails naming this stage instead of waiting or taking a short
 * stream for a whole one. bp_close_out and bp_abort_out end that. Open the output before
 * waiting for the input, so that a failure there reaches downstream too (an error frame may
 * come before any hello: proto/frames.md, section 4).
 *
 * Exit statuses (proto/frames.md, section 4), so a supervisor can name the stage whose
 * failure caused the others: 0 success; 1 the stage's own error; 2 usage; BP_EXIT_UPSTREAM (3)
 * the stage stopped because it received an upstream error frame; BP_EXIT_DOWNSTREAM (4) its
 * consumer went away (a closed pipe, a disconnect); 128 + N after stop signal N.
 *
 * Stop signals: bp_stage_init catches SIGINT and SIGTERM. Every endpoint wait then fails
 * within 100 ms ("interrupted by SIGTERM"), so even an idle stage sends its error frame and
 * exits 128 + N within a second; a stage with work to save (train) asks bp_stop_signal()
 * when its input fails, and saves before it goes.
 *
 * Only stages include this; library code never exits.
 *
 * Must never: be included by library code (everything here may exit).
 */
#ifndef BP_STAGE_H
#define BP_STAGE_H
#include <getopt.h>

#include "wire/endpoint.h"

typedef struct bp_io_opts {
    const char *in, *out;   /* endpoint specs, "-" by default */
    int producers;          /* eos frames that end the input (fan-in), default 1 */
} bp_io_opts;

/* Long options every stage accepts; put BP_IO_LONGOPTS inside the stage's option table. */
#define BP_OPT_IN 0x1001
#define BP_OPT_OUT 0x1002
#define BP_OPT_PRODUCERS 0x1003
#define BP_OPT_VERSION 0x1004
#define BP_OPT_CURVE_KEY 0x1005
#define BP_OPT_CURVE_SERVER 0x1006
#define BP_IO_LONGOPTS                                          \
    {"in", required_argument, 0, BP_OPT_IN},                    \
    {"out", required_argument, 0, BP_OPT_OUT},                  \
    {"producers", required_argument, 0, BP_OPT_PRODUCERS},      \
    {"curve-key", required_argument, 0, BP_OPT_CURVE_KEY},      \
    {"curve-server", required_argument, 0, BP_OPT_CURVE_SERVER}, \
    {"version", no_argument, 0, BP_OPT_VERSION}
/* CURVE on tcp endpoints (wire/curve.h): for every stage's --help, with or without BP_IO_USAGE. */
#define BP_CURVE_USAGE \
    "  --curve-key FILE  this side's key pair (NAME.key from keygen; or BERTPIPE_CURVE_KEY): every\n" \
    "                    tcp endpoint is CURVE-encrypted, and a tcp bind is its CURVE server\n"         \
    "  --curve-server FILE  the binding side's public key (NAME.pub; or BERTPIPE_CURVE_SERVER),\n"    \
    "                    needed to connect over tcp with CURVE (ipc, file: and - are not changed)\n"
#define BP_IO_USAGE \
    "  --in SPEC         input endpoint (default -: stdin; ipc://PATH, tcp://HOST:PORT, @bind, >connect)\n" \
    "  --out SPEC        output endpoint (default -: stdout; A,B,... fans out)\n"                          \
    "  --producers N     input streams to wait for (fan-in; default 1)\n"                                  \
    BP_CURVE_USAGE                                                                                         \
    "  --version         print \"STAGE (bertpipe) VERSION\" and exit\n"

#define BP_EXIT_UPSTREAM 3
#define BP_EXIT_DOWNSTREAM 4

/* Set the stage name from argv[0] and the io defaults; catch SIGINT and SIGTERM (see above);
 * take BERTPIPE_CURVE_KEY and BERTPIPE_CURVE_SERVER as --curve-key and --curve-server (which
 * override them). A key file that cannot be used is a usage error (exit 2) naming the file. */
void bp_stage_init(bp_io_opts *io, char **argv);
/* The stop signal received (SIGINT, SIGTERM), 0 when none. */
int bp_stop_signal(void);
/* "interrupted by SIGTERM" once a stop signal came, else NULL: the error of a stage's own
 * blocking read (stdin through stdio) that the signal cut short. */
const char *bp_stop_reason(void);
/* Run hook(sig) once when the stage dies of an error caused by a stop signal (any wait or
 * send it was in), before it exits 128 + N: where train saves its checkpoint, whichever call
 * the signal interrupted. NULL clears it. */
void bp_set_stop_hook(void (*hook)(int sig));
/* The stage's --help text: bp_usage_die and bp_usage_error print its synopsis (the leading
 * "usage:" lines) on stderr before the error line, as a usage error should. */
void bp_set_usage(const char *usage);
/* Handle one getopt result if it is an io option (--version included: it prints the version
 * line compiled in from the VERSION file and exits 0; --curve-key and --curve-server read their
 * file at once): returns 1 when handled. */
int bp_io_option(bp_io_opts *io, int opt, const char *arg);

bp_in *bp_open_in(const bp_io_opts *io);     /* dies on error */
/* Open the input and wait for its hello (returned; valid until bp_in_close). Dies on error. */
bp_in *bp_open_in_hello(const bp_io_opts *io, const bp_frame **hello);

/* The task of a stream's hello: 1 QA, 0 classification; dies naming the field otherwise. */
int bp_stream_is_qa(const bp_frame *hello);

/* Open the stage's output (see above); dies on error. */
bp_out *bp_open_out(const bp_io_opts *io);
/* Send the hello / a data frame; dies on error. */
void bp_send_hello(bp_out *out, bp_writer *w);
void bp_send(bp_out *out, bp_writer *w);
/* Send the eos and close (bp_out_close); dies on error. */
void bp_close_out(bp_out *out);
/* Send an error frame with `message` and close (bp_out_abort), for a stage that stops without
 * dying (a signal). */
void bp_abort_out(bp_out *out, const char *message);

/* Strict option parsing: the whole text must be a number in [min, max], else die naming
 * the option. */
long bp_opt_long(const char *name, const char *text, long min, long max);
double bp_opt_double(const char *name, const char *text, double min, double max);

/* A usage error: the synopsis, then "STAGE: error: WHAT (see STAGE --help)" on stderr, exit 2. */
void bp_usage_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* The same for getopt's '?' (getopt has printed what was wrong). */
void bp_usage_error(void) __attribute__((noreturn));

#endif
