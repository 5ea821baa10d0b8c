/* tap.h — the smallest TAP producer for bertpipe's C unit tests.
 *
 * Each check prints "ok N - what" or "not ok N - what" on stdout; tap_done() prints the
 * plan and returns the exit status. scripts/run-tests counts these lines, so a test
 * binary must never print a line starting with "ok" or "not ok" any other way.
 * Diagnostics go to stdout prefixed with "# ".
 */
#ifndef BP_TAP_H
#define BP_TAP_H
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <math.h>

static int tap_count, tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...) {
    va_list ap;
    tap_count++;
    if (!cond) tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

static inline void tap_diag(const char *fmt, ...) {
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline int tap_done(void) {
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

#define TAP_EQ_INT(got, want, ...) do { long long g_ = (long long)(got), w_ = (long long)(want); \
    if (!tap_ok(g_ == w_, __VA_ARGS__)) tap_diag("  got %lld, want %lld", g_, w_); } while (0)
#define TAP_EQ_STR(got, want, ...) do { const char *g_ = (got), *w_ = (want); \
    int same_ = g_ && w_ && strcmp(g_, w_) == 0; \
    if (!tap_ok(same_, __VA_ARGS__)) tap_diag("  got \"%s\", want \"%s\"", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } while (0)
#define TAP_NEAR(got, want, tol, ...) do { double g_ = (got), w_ = (want); \
    if (!tap_ok(fabs(g_ - w_) <= (tol), __VA_ARGS__)) tap_diag("  got %.9g, want %.9g (tol %g)", g_, w_, (double)(tol)); } while (0)

#endif
