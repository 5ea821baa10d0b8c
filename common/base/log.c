/* base/log.c — stderr logging, the single error format and the progress bar (see log.h).
 * Must never: write to stdout (it carries frames). */
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char stage_name[64] = "bertpipe";
static bp_die_hook die_hook;

int bp_err_set(bp_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* One line whatever a library's message held (libarchive ends some with "\n"). */
        char *out = err->msg;
        for (const char *in = err->msg; *in; in++) {
            if (*in == '\n' || *in == '\r') {
                if (out > err->msg && out[-1] != ' ' && in[1] && in[1] != ' ' && in[1] != ')') *out++ = ' ';
                continue;
            }
            *out++ = *in;
        }
        *out = '\0';
    }
    return -1;
}

void bp_set_stage(const char *argv0) {
    const char *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    snprintf(stage_name, sizeof stage_name, "%s", base);
}

const char *bp_stage(void) { return stage_name; }

void bp_set_die_hook(bp_die_hook hook) { die_hook = hook; }

/* Print "STAGE: error: WHAT (WHERE)"; the "WHAT (WHERE)" part goes to line (one line). */
static void verror(char *line, size_t size, const char *where, const char *fmt, va_list ap) {
    char what[1024];
    vsnprintf(what, sizeof what, fmt, ap);
    if (where && *where)
        snprintf(line, size, "%s (%s)", what, where);
    else
        snprintf(line, size, "%s", what);
    /* Keep it one line whatever the message holds. */
    for (char *c = line; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    fprintf(stderr, "%s: error: %s\n", stage_name, line);
    fflush(stderr);
}

static void die(int code, const char *line) __attribute__((noreturn));
static void die(int code, const char *line) {
    bp_die_hook hook = die_hook;
    die_hook = NULL;
    if (hook) hook(line);
    exit(code);
}

void bp_error(const char *where, const char *fmt, ...) {
    char line[1600];
    va_list ap;
    va_start(ap, fmt);
    verror(line, sizeof line, where, fmt, ap);
    va_end(ap);
}

void bp_die(int code, const char *where, const char *fmt, ...) {
    char line[1600];
    va_list ap;
    va_start(ap, fmt);
    verror(line, sizeof line, where, fmt, ap);
    va_end(ap);
    die(code, line);
}

void bp_die_err(const bp_err *err) {
    bp_die(1, NULL, "%s", err->msg[0] ? err->msg : "unknown error");
}

static int env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

/* "STAGE: " + kind + the message + newline, as one write: lines of stages sharing a log (or
 * a pipeline's drawer) never break into each other's. */
static void vline(const char *kind, const char *fmt, va_list ap) {
    char line[2048];
    int n = snprintf(line, sizeof line, "%s: %s", stage_name, kind);
    if (n < 0) return;
    if ((size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    if (len == sizeof line - 1) len--;   /* cut: keep room for the newline */
    line[len] = '\n';
    fwrite(line, 1, len + 1, stderr);
}

/* bp_set_echo: this process repeats another's lines (a data-parallel rank > 0). */
static int echo;
void bp_set_echo(int on) { echo = on; }

void bp_log(const char *fmt, ...) {
    if (echo || env_is("BERTPIPE_QUIET", "1")) return;
    va_list ap;
    va_start(ap, fmt);
    vline("", fmt, ap);
    va_end(ap);
}

void bp_summary(const char *fmt, ...) {
    if (echo) return;
    va_list ap;
    va_start(ap, fmt);
    vline("", fmt, ap);
    va_end(ap);
}

void bp_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vline("warning: ", fmt, ap);
    va_end(ap);
}

double bp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds between progress lines in a log: BERTPIPE_PROGRESS_EVERY, else 10. */
static double progress_every(void) {
    const char *text = getenv("BERTPIPE_PROGRESS_EVERY");
    char *end;
    double every = text ? strtod(text, &end) : 0;
    return text && end != text && !*end && every > 0 && every < 1e6 ? every : 10;
}

void bp_progress_start(bp_progress *p, const char *label, int64_t total) {
    const char *status_dir = getenv("BERTPIPE_STATUS_DIR");
    memset(p, 0, sizeof *p);
    p->label = label;
    if (echo) return;   /* enabled 0: no bar, no lines */
    p->total = total;
    p->start = bp_now();
    p->tty = isatty(2);
    p->forced = env_is("BERTPIPE_PROGRESS", "1");
    p->every = progress_every();
    if (status_dir && *status_dir && !p->tty)
        snprintf(p->status_path, sizeof p->status_path, "%s/%s.%ld.bar", status_dir, stage_name, (long)getpid());
    p->enabled = p->tty || p->status_path[0] || p->forced || !env_is("BERTPIPE_QUIET", "1");
    if (env_is("BERTPIPE_PROGRESS", "0")) p->enabled = 0;
    p->last_draw = p->start;   /* a log's first line comes after one interval, not at once */
}

/* Replace the status file path with "STAGE: line" (write a temporary, rename): the pipeline
 * that draws it never reads half a line. A failure only loses one update of a display. */
static void write_status(const char *path, const char *line) {
    char tmp[560];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    int bad = fprintf(f, "%s: %s\n", stage_name, line) < 0;
    if (fclose(f) || bad || rename(tmp, path)) remove(tmp);
}

/* ---- live frame counts for the status block -------------------------------------------- */

static struct {
    int state;                  /* 0: not looked at yet, 1: writing DIR/STAGE.PID, -1: off */
    char path[512];
    int64_t in, out;            /* data frames so far */
    int64_t in_shown, out_shown;   /* at the last write */
    double shown_at;
} live;

static void remove_live_file(void) {
    if (live.state == 1) remove(live.path);
}

static void format_rate(char *buf, size_t n, double rate) {
    snprintf(buf, n, rate >= 100 ? "%.0f/s" : "%.1f/s", rate);
}

static void write_live(double now) {
    double span = now - live.shown_at;
    char in_rate[32], out_rate[32], line[160];
    format_rate(in_rate, sizeof in_rate, span > 0 ? (double)(live.in - live.in_shown) / span : 0);
    format_rate(out_rate, sizeof out_rate, span > 0 ? (double)(live.out - live.out_shown) / span : 0);
    snprintf(line, sizeof line, "frames in %lld (%s) out %lld (%s)", (long long)live.in, in_rate,
             (long long)live.out, out_rate);
    write_status(live.path, line);
    live.in_shown = live.in;
    live.out_shown = live.out;
    live.shown_at = now;
}

void bp_status_frames(int64_t in, int64_t out) {
    if (live.state == 0) {
        const char *dir = getenv("BERTPIPE_STATUS_DIR");
        live.state = -1;
        if (dir && *dir && !env_is("BERTPIPE_PROGRESS", "0") &&
            snprintf(live.path, sizeof live.path, "%s/%s.%ld", dir, stage_name, (long)getpid()) <
                (int)sizeof live.path &&
            atexit(remove_live_file) == 0) {
            live.state = 1;
            live.shown_at = bp_now();
            write_live(live.shown_at);   /* the stage shows up at once, before its first frame */
        }
    }
    live.in += in;
    live.out += out;
    if (live.state != 1) return;
    double now = bp_now();
    if (now - live.shown_at >= 0.25) write_live(now);
}

static void format_duration(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) { snprintf(buf, n, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

static void draw(bp_progress *p, const char *extra, int final) {
    double now = bp_now(), elapsed = now - p->start;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    char el[32], eta[32];
    format_duration(el, sizeof el, elapsed);
    char line[256];
    if (p->total > 0) {
        int width = p->status_path[0] ? 12 : 24, filled;   /* a block line must fit 80 columns */
        filled = (int)((double)width * (double)p->done / (double)p->total);
        if (filled > width) filled = width;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
        bar[width] = 0;
        format_duration(eta, sizeof eta, rate > 0 ? (double)(p->total - p->done) / rate : -1);
        snprintf(line, sizeof line, "%s [%s] %lld/%lld %.1f/s %s<%s %s", p->label, bar,
                 (long long)p->done, (long long)p->total, rate, el, eta, extra ? extra : "");
    } else {
        snprintf(line, sizeof line, "%s %lld %.1f/s %s %s", p->label, (long long)p->done, rate, el,
                 extra ? extra : "");
    }
    if (p->status_path[0] && !final) {
        write_status(p->status_path, line);
    } else if (p->tty) {
        fprintf(stderr, "\r%s: %s\033[K%s", stage_name, line, final ? "\n" : "");
    } else {
        fprintf(stderr, "%s: %s\n", stage_name, line);
        p->lines++;
    }
    fflush(stderr);
    p->last_draw = now;
}

void bp_progress_update(bp_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (!p->enabled) return;
    if (bp_now() - p->last_draw < (p->tty || p->status_path[0] ? 0.25 : p->every)) return;
    draw(p, extra, 0);
}

void bp_progress_finish(bp_progress *p, const char *extra) {
    if (!p->enabled) return;
    if (p->status_path[0]) {
        remove(p->status_path);
        if (env_is("BERTPIPE_QUIET", "1") && !p->forced) return;
    } else if (!p->tty && !p->lines && !p->forced) {
        return;   /* a log that had no progress line needs no final one: the stage's summary follows */
    }
    draw(p, extra, 1);
}
