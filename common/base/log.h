/* base/log.h — the one error printer, logger and progress bar of every bertpipe stage.
 *
 * Everything here writes to stderr only: stdout belongs to frames. An error is always
 * one line, "STAGE: error: WHAT (WHERE)". Library code (tokenizer, model, readers)
 * never prints: it fills a bp_err and returns failure; the stage decides to print.
 * Must never: write to stdout, which belongs to frames.
 */
#ifndef BP_LOG_H
#define BP_LOG_H
#include <stdarg.h>
#include <stdint.h>

/* A library error: "WHAT (WHERE)" text, filled by the function that failed. */
typedef struct bp_err { char msg[512]; } bp_err;

/* Fill err (if not NULL) from a printf format, line breaks removed so the message stays one
 * line whatever text it quotes. Always returns -1, so `return bp_err_set(err, ...)` reads
 * naturally. */
int bp_err_set(bp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Name used as the prefix of every line; set once from argv[0] (basename taken). */
void bp_set_stage(const char *argv0);
const char *bp_stage(void);

/* "STAGE: error: WHAT (WHERE)". where may be NULL. */
void bp_error(const char *where, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, then exit(code). */
void bp_die(int code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* Print a library error and exit(1). */
void bp_die_err(const bp_err *err) __attribute__((noreturn));
/* Run by bp_die and bp_die_err after the error line is printed and before the exit, with the
 * line's "WHAT (WHERE)": how a stage tells whoever reads its output that it failed (the stage
 * kit sends an error frame). One hook at a time; NULL clears it. It runs at most once, so a
 * hook that itself dies cannot loop. This file knows nothing of what the hook does. */
typedef void (*bp_die_hook)(const char *message);
void bp_set_die_hook(bp_die_hook hook);
/* "STAGE: message" — informational; suppressed when BERTPIPE_QUIET=1. */
void bp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "STAGE: warning: message" — never suppressed. */
void bp_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Progress of a long stage (total 0: unknown, no bar and no ETA), shown one of three ways:
 *   - stderr a terminal: a bar redrawn in place at most 4 times a second;
 *   - BERTPIPE_STATUS_DIR set (a pipeline draws one status block on its terminal): the line
 *     is written, 4 times a second at most, to DIR/STAGE.PID.bar (replaced whole, by rename) for
 *     the pipeline to draw, and nothing is printed until the final line, an ordinary one;
 *   - otherwise (a log file): one line every BERTPIPE_PROGRESS_EVERY seconds (default 10),
 *     the first after that long, and a final line when any came before.
 * BERTPIPE_PROGRESS=0 turns it off, =1 forces lines in a log even with BERTPIPE_QUIET=1 (which
 * otherwise silences progress lines in logs; a terminal still shows the live bar). */
typedef struct bp_progress {
    const char *label;
    int64_t total, done;
    double start, last_draw, every;
    int enabled, tty, forced;
    long lines;              /* lines printed to a log so far */
    char status_path[512];   /* the status file, "" when not drawing one */
} bp_progress;
void bp_progress_start(bp_progress *p, const char *label, int64_t total);
/* extra: optional short text after the bar (e.g. "loss 0.693"). */
void bp_progress_update(bp_progress *p, int64_t done, const char *extra);
void bp_progress_finish(bp_progress *p, const char *extra);
/* The live frame counts of the status block: the endpoints (wire/endpoint.c) call this for every
 * data frame a stage reads (in) and sends (out). With BERTPIPE_STATUS_DIR set (and not
 * BERTPIPE_PROGRESS=0), the first call writes "STAGE: frames in N (R/s) out M (R/s)" to
 * DIR/STAGE.PID, and later calls rewrite it (by rename) at most 4 times a second, the rates
 * over the time since the last write; the file goes when the process exits. Otherwise it only
 * counts. A progress bar of the same stage is DIR/STAGE.PID.bar, drawn below it. Cheap: two
 * additions and a clock read per call. Can't fail (a failed write loses one update). */
void bp_status_frames(int64_t in, int64_t out);

/* "STAGE: message" that BERTPIPE_QUIET=1 keeps: the summaries a quiet run is for (each
 * epoch's results, the final metrics). */
void bp_summary(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* on = 1: this process only repeats another's work (a data-parallel rank other than 0), so
 * bp_log, bp_summary and progress print nothing; warnings and errors still do. */
void bp_set_echo(int on);

/* Monotonic seconds. */
double bp_now(void);

#endif
