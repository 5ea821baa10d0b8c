/* parity.h — what the GPU parity tests share: seeded random inputs, a tensor held on both
 * backends (inputs from random_inputs.h), the error measure (max |cuda - cpu| / max |cpu|) and one TAP line per tensor.
 * Header-only, static: each test binary has its own copy. Only compiled with BP_HAVE_CUDA.
 */
#ifndef BP_GPU_PARITY_H
#define BP_GPU_PARITY_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/bert.h"
#include "random_inputs.h"
#include "tap.h"

/* One host tensor and its copies on both backends. */
typedef struct pair {
    backend *cpu, *gpu;
    void *c, *g;
    size_t bytes;
} pair;

static inline pair pair_make(backend *cpu, backend *gpu, const void *host, size_t bytes) {
    bp_err err;
    pair p = { cpu, gpu, cpu->alloc(cpu, bytes, &err), gpu->alloc(gpu, bytes, &err), bytes };
    if (!p.c || !p.g) { fprintf(stderr, "alloc: %s\n", err.msg); exit(2); }
    if (host) {
        cpu->upload(cpu, p.c, host, bytes);
        gpu->upload(gpu, p.g, host, bytes);
    }
    return p;
}
static inline void pair_free(pair *p) { p->cpu->free(p->cpu, p->c); p->gpu->free(p->gpu, p->g); }
static inline float *F(const pair *p, int gpu) { return (float *)(gpu ? p->g : p->c); }
static inline int32_t *I(const pair *p, int gpu) { return (int32_t *)(gpu ? p->g : p->c); }

/* max |gpu - cpu| / max |cpu| over the tensor (0 when both are all zero). */
static inline double pair_error(const pair *p) {
    size_t n = p->bytes / sizeof(float);
    float *g = malloc(p->bytes);
    if (!g) exit(2);
    p->gpu->download(p->gpu, g, p->g, p->bytes);
    const float *c = p->c;
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - c[i]);
        if (!(d <= diff)) diff = d;   /* NaN counts as the largest */
        if (fabs(c[i]) > scale) scale = fabs(c[i]);
    }
    free(g);
    return scale > 0 ? diff / scale : diff;
}

/* Report one tensor against a limit. */
static inline void check(const pair *p, double limit, const char *what, const char *precision) {
    double e = pair_error(p);
    if (!tap_ok(e <= limit, "%s %s: max relative error %.2e <= %.0e", precision, what, e, limit))
        tap_diag("  %s exceeds the limit", what);
}

/* Same zeros in both: dropout masks agree element for element. */
static inline void check_same_zeros(const pair *p, const char *what) {
    size_t n = p->bytes / sizeof(float), differ = 0;
    float *g = malloc(p->bytes);
    if (!g) exit(2);
    p->gpu->download(p->gpu, g, p->g, p->bytes);
    const float *c = p->c;
    for (size_t i = 0; i < n; i++) differ += (g[i] == 0.0f) != (c[i] == 0.0f);
    free(g);
    if (!tap_ok(differ == 0, "%s: dropout mask identical to the cpu's", what)) tap_diag("  %zu elements differ", differ);
}

static inline void gpu_ok(backend *gpu, const char *after) {
    bp_err err;
    if (gpu->check(gpu, &err) != 0) {
        tap_ok(0, "no cuda error after %s", after);
        tap_diag("  %s", err.msg);
    }
}

#define BOTH(call) do { backend *be = cpu; int gpu_side = 0; call; be = gpu; gpu_side = 1; call; (void)gpu_side; } while (0)

typedef struct host_batch {
    int32_t ids[4 * 24], types[4 * 24], mask[4 * 24], labels[4], starts[4], ends[4];
    bert_batch b;
} host_batch;

/* Batch k: four sequences of different lengths (padding in all but the first), labels cycling
 * through `labels` classes (2 when 1), or start/end positions (qa). */
static inline void make_batch(host_batch *h, int k, int T, int vocab, int qa, int labels) {
    memset(h, 0, sizeof *h);
    for (int s = 0; s < 4; s++) {
        int len = T - (s * 5 + k) % (T / 2);
        for (int t = 0; t < len; t++) {
            h->ids[s * T + t] = 1 + (s * 31 + t * 7 + k * 3) % (vocab - 1);
            h->types[s * T + t] = t >= len / 2;
            h->mask[s * T + t] = 1;
        }
        h->labels[s] = (s + k) % (labels > 1 ? labels : 2);
        h->starts[s] = (s + k) % len;
        h->ends[s] = (s * 2 + k) % len;
    }
    h->b = (bert_batch){ .B = 4, .T = T, .input_ids = h->ids, .token_type_ids = h->types, .attention_mask = h->mask };
    if (qa) { h->b.start_positions = h->starts; h->b.end_positions = h->ends; }
    else h->b.labels = h->labels;
}

#endif
