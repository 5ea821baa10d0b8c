/* bench_ops.c — time each backend op of one BERT layer on the cpu backend, fp32 or bf16.
 *
 *   build/bench/bench_ops [--precision fp32|bf16] [--batch B] [--seq T] [--hidden C]
 *                         [--intermediate I] [--heads A] [--reps R] [--threads N]
 *
 * Defaults: a BERT-Mini layer at classification training (batch 32, seq 128, C 256, I 1024,
 * 4 heads, dropout 0.1), 2 threads, best of 20 repetitions of each op (each repetition runs it
 * 4 times). Prints one line per op: `precision op ms`, the best time of one call, for the ops a
 * training step calls per layer: the four linear layers forward and backward, attention,
 * GELU, LayerNorm, and with bf16 the GELU fusions (backend.h) the model then uses instead of
 * GELU + fc2 and GELU backward + fc. Inputs are fixed pseudo-random values; results are not
 * checked here (test_bf16 and test_bert do that). Use: where a step's time goes per op, and
 * what a change to one op gives, with less noise than a whole training step.
 * Must never: be part of the test suite.
 */
#include "backend/backend.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_batches.h"

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* n floats of backend memory, values in [-0.5, 0.5) from a fixed formula */
static float *values(backend *be, size_t n, float scale) {
    bp_err err;
    float *p = be->alloc(be, n * sizeof(float), &err);
    if (!p) bp_die_err(&err);
    for (size_t i = 0; i < n; i++) p[i] = scale * ((float)((i * 2654435761u) % 1000u) / 1000.0f - 0.5f);
    return p;
}

typedef struct timing {
    int reps;
    const char *precision;
} timing;

#define TIME_OP(t, name, call)                                                        \
    do {                                                                              \
        double best_ = 1e30;                                                          \
        for (int r_ = 0; r_ < (t)->reps; r_++) {                                      \
            double t0_ = seconds();                                                   \
            for (int k_ = 0; k_ < 4; k_++) { call; }                                  \
            double dt_ = (seconds() - t0_) / 4;                                       \
            if (dt_ < best_) best_ = dt_;                                             \
        }                                                                             \
        printf("%s %-30s %9.3f ms\n", (t)->precision, name, best_ * 1e3);            \
    } while (0)

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    const char *precision = arg_str(argc, argv, "--precision", "fp32");
    int bf16 = strcmp(precision, "bf16") == 0;
    if (!bf16 && strcmp(precision, "fp32") != 0) bp_die(2, NULL, "--precision must be fp32 or bf16, not %s", precision);
    int B = (int)arg_int(argc, argv, "--batch", 32), T = (int)arg_int(argc, argv, "--seq", 128);
    int C = (int)arg_int(argc, argv, "--hidden", 256), I = (int)arg_int(argc, argv, "--intermediate", 1024);
    int NH = (int)arg_int(argc, argv, "--heads", 4), threads = (int)arg_int(argc, argv, "--threads", 2);
    timing t = { .reps = (int)arg_int(argc, argv, "--reps", 20), .precision = precision };
    if (B <= 0 || T <= 0 || C <= 0 || I <= 0 || NH <= 0 || C % NH || t.reps <= 0)
        bp_die(2, NULL, "--batch, --seq, --hidden, --intermediate, --heads (dividing --hidden), --reps must be positive");
    bp_err err;
    backend *be = backend_cpu_create(threads, &err);
    if (!be || (bf16 && backend_cpu_set_bf16(be, 1, &err) != 0)) bp_die_err(&err);
    int N = B * T, W = I > 3 * C ? I : 3 * C;   /* W: the widest activation */
    float *x = values(be, (size_t)N * W, 1.0f), *y = values(be, (size_t)N * W, 1.0f);
    float *dx = values(be, (size_t)N * W, 1.0f), *act = values(be, (size_t)N * W, 1.0f);
    float *w = values(be, (size_t)W * C, 0.1f), *dw = values(be, (size_t)W * C, 0.0f);
    float *bias = values(be, (size_t)W, 0.1f), *db = values(be, (size_t)W, 0.0f);
    float *qkv = values(be, (size_t)N * 3 * C, 0.6f), *dqkv = values(be, (size_t)N * 3 * C, 0.0f);
    float *ctx = values(be, (size_t)N * C, 1.0f), *sum = values(be, (size_t)N * C, 1.0f);
    float *probs = values(be, (size_t)B * NH * T * T, 0.0f), *scratch = values(be, (size_t)B * NH * T * T, 0.0f);
    float *mean = values(be, (size_t)N, 0.0f), *rstd = values(be, (size_t)N, 0.0f);
    int32_t *mask = be->alloc(be, (size_t)N * sizeof(int32_t), &err);
    if (!mask) bp_die_err(&err);
    for (int i = 0; i < N; i++) mask[i] = 1;

    struct { const char *name; int IC, OC; } linear[] = {
        { "qkv", C, 3 * C }, { "attention output", C, C }, { "fc", C, I }, { "fc2", I, C },
    };
    char name[64];
    for (size_t l = 0; l < sizeof linear / sizeof linear[0]; l++) {
        int IC = linear[l].IC, OC = linear[l].OC;
        snprintf(name, sizeof name, "%s forward", linear[l].name);
        TIME_OP(&t, name, be->matmul_forward(be, y, x, w, bias, N, IC, OC));
        snprintf(name, sizeof name, "%s backward", linear[l].name);
        TIME_OP(&t, name, be->matmul_backward(be, dx, dw, db, y, x, w, N, IC, OC, 0));
    }
    TIME_OP(&t, "attention forward", be->attention_forward(be, ctx, probs, scratch, qkv, mask, B, T, T, C, NH, 0.1f, 7));
    TIME_OP(&t, "attention backward",
            be->attention_backward(be, dqkv, scratch, ctx, probs, qkv, mask, B, T, T, C, NH, 0.1f, 7));
    TIME_OP(&t, "gelu forward", be->gelu_forward(be, y, x, (size_t)N * I));
    TIME_OP(&t, "gelu backward", be->gelu_backward(be, dx, x, y, (size_t)N * I));
    TIME_OP(&t, "layernorm forward",
            be->add_layernorm_forward(be, y, sum, mean, rstd, x, ctx, w, bias, N, C, 1e-12f, 0.1f, 3));
    TIME_OP(&t, "layernorm backward",
            be->add_layernorm_backward(be, dx, y, dw, db, ctx, sum, mean, rstd, w, N, C, 0.1f, 3));
    if (be->gelu_matmul_forward) {
        TIME_OP(&t, "gelu + fc2 forward (fused)", be->gelu_matmul_forward(be, y, act, x, w, bias, N, I, C));
        TIME_OP(&t, "gelu + fc2 backward (fused)",
                be->gelu_matmul_backward(be, dx, dw, db, y, x, act, w, N, I, C, 0));
        TIME_OP(&t, "gelu backward + fc backward (fused)",
                be->gelu_backward_matmul_backward(be, dx, dw, db, y, x, act, NULL, w, N, C, I, 0));
    }
    if (be->matmul_forward_keep) {   /* the forward's rounded operands kept for the backward (bf16) */
        for (size_t l = 0; l < sizeof linear / sizeof linear[0]; l++) {
            int IC = linear[l].IC, OC = linear[l].OC;
            snprintf(name, sizeof name, "%s forward (input kept)", linear[l].name);
            TIME_OP(&t, name, be->matmul_forward_keep(be, y, act, x, w, bias, N, IC, OC));
            snprintf(name, sizeof name, "%s backward (input kept)", linear[l].name);
            TIME_OP(&t, name, be->matmul_backward_kept(be, dx, dw, db, y, x, act, w, N, IC, OC, 0));
        }
        TIME_OP(&t, "attention forward (q, k, v kept)",
                be->attention_forward_keep(be, ctx, probs, scratch, act, qkv, mask, B, T, T, C, NH, 0.1f, 7));
        TIME_OP(&t, "attention backward (q, k, v kept)",
                be->attention_backward_kept(be, dqkv, scratch, ctx, probs, qkv, act, mask, B, T, T, C, NH, 0.1f, 7));
    }
    if (be->check(be, &err) != 0) bp_die_err(&err);
    be->destroy(be);
    return 0;
}
