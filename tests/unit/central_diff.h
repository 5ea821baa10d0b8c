/* central_diff.h — the gradient check the model tests share: central differences of a loss that
 * is a fixed function of the parameters (dropout masks fixed by resetting the counter) against
 * the analytic gradient. Header-only, static: each test binary has its own copy.
 */
#ifndef BP_CENTRAL_DIFF_H
#define BP_CENTRAL_DIFF_H
#include <math.h>
#include <stddef.h>

#include "tap.h"

/* Loads params into the model, runs the forward and returns its loss. */
typedef double (*loss_at_fn)(void *ctx, const float *params);

typedef struct central_diff {
    int checked, bad;
    double worst;   /* the largest |numeric - analytic| as a share of its limit */
} central_diff;

/* Every stride-th parameter (a zero gradient below skip_zero_below is skipped: embedding rows no
 * token uses, frozen tensors): (loss(p + eps) - loss(p - eps)) / 2 eps against grads, within
 * 2e-3 + 3e-2 |grad|. params is restored before it returns; each miss is a TAP diagnostic. */
static inline central_diff central_differences(const char *label, float *params, const float *grads, size_t n,
                                               size_t stride, size_t skip_zero_below, float eps, loss_at_fn loss_at,
                                               void *ctx) {
    central_diff r = { 0, 0, 0.0 };
    for (size_t i = 0; i < n; i += stride) {
        if (i < skip_zero_below && grads[i] == 0.0f) continue;
        float saved = params[i];
        params[i] = saved + eps;
        double up = loss_at(ctx, params);
        params[i] = saved - eps;
        double down = loss_at(ctx, params);
        params[i] = saved;
        double numeric = (up - down) / (2.0 * eps), diff = fabs(numeric - grads[i]);
        double limit = 2e-3 + 3e-2 * fabs(grads[i]);
        if (diff / limit > r.worst) r.worst = diff / limit;
        if (diff > limit) {
            r.bad++;
            tap_diag("%s param %zu: analytic %.6f numeric %.6f", label, i, grads[i], numeric);
        }
        r.checked++;
    }
    return r;
}

#endif
