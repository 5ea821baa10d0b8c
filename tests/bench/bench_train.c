/* bench_train.c — training and evaluation throughput of the C BERT on the cpu backend.
 *
 *   build/bench/bench_train --head cls|qa [--batch B] [--seq T] [--steps K] [--threads N]
 *                           [--layers L --hidden H --heads A --intermediate I --vocab V]
 *                           [--precision fp32|bf16] [--profile]
 *
 * Defaults: BERT-Mini (L4 H256 A4 I1024, vocab 30522), random weights (seed 1), dropout 0.1,
 * fp32 (bf16: the cpu backend's bf16 products, backend.h). The batches are a fixed formula
 * shared with tests/reference/bench_train_torch.py, so both sides run the same token ids,
 * padding and targets. Prints one line:
 *   impl c head cls batch 32 seq 128 train_seq_s X eval_seq_s Y peak_rss_mb Z ...
 * (impl c-bf16 in bf16).
 * A training step is forward + backward + clip + AdamW (+ zero grad); eval is a forward pass.
 * --profile also prints, on stderr, the wall time per timed training step spent in each of the
 * backend ops that take most of it (the rest as "other"): where a step goes.
 * Must never: be part of the test suite (it runs for tens of seconds).
 */
#include "backend/backend.h"
#include "model/bert.h"
#include "base/log.h"
#include "model/optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_batches.h"

/* --profile: the backend's ops wrapped with a clock while `on` */
static struct {
    backend inner;
    int on;
    double seconds[32];
    const char *names[32];
    int count;
} prof;

static void prof_add(int *id, const char *name, double t0) {
    if (*id < 0 && prof.count < 32) {
        *id = prof.count++;
        prof.names[*id] = name;
    }
    if (prof.on && *id >= 0) prof.seconds[*id] += bp_now() - t0;
}
#define PROF_WRAP(op, params, args)                                                   \
    static void prof_##op params {                                                    \
        static int id = -1;                                                           \
        double t0 = bp_now();                                                         \
        prof.inner.op args;                                                           \
        prof_add(&id, #op, t0);                                                       \
    }
PROF_WRAP(matmul_forward, (backend *be, float *out, const float *inp, const float *weight, const float *bias, int N,
                           int IC, int OC), (be, out, inp, weight, bias, N, IC, OC))
PROF_WRAP(matmul_backward, (backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC, int acc),
          (be, dinp, dweight, dbias, dout, inp, weight, N, IC, OC, acc))
PROF_WRAP(gelu_matmul_forward, (backend *be, float *out, float *act, const float *pre, const float *weight,
                                const float *bias, int N, int IC, int OC), (be, out, act, pre, weight, bias, N, IC, OC))
PROF_WRAP(gelu_matmul_backward, (backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *pre, float *act, const float *weight, int N, int IC, int OC, int acc),
          (be, dinp, dweight, dbias, dout, pre, act, weight, N, IC, OC, acc))
PROF_WRAP(gelu_backward_matmul_backward, (backend *be, float *dinp, float *dweight, float *dbias, float *dact,
                                          const float *pre, const float *inp, const float *kept, const float *weight,
                                          int N, int IC, int OC, int acc),
          (be, dinp, dweight, dbias, dact, pre, inp, kept, weight, N, IC, OC, acc))
PROF_WRAP(matmul_forward_keep, (backend *be, float *out, float *kept, const float *inp, const float *weight,
                                const float *bias, int N, int IC, int OC), (be, out, kept, inp, weight, bias, N, IC, OC))
PROF_WRAP(matmul_backward_kept, (backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *kept, const float *weight, int N, int IC, int OC,
                                 int acc), (be, dinp, dweight, dbias, dout, inp, kept, weight, N, IC, OC, acc))
PROF_WRAP(attention_forward_keep, (backend *be, float *ctx, float *probs, float *pd, float *kept, const float *qkv,
                                   const int32_t *mask, int B, int T, int Tq, int C, int NH, float p, uint64_t key),
          (be, ctx, probs, pd, kept, qkv, mask, B, T, Tq, C, NH, p, key))
PROF_WRAP(attention_backward_kept, (backend *be, float *dqkv, float *scratch, const float *dctx, const float *probs,
                                    const float *qkv, const float *kept, const int32_t *mask, int B, int T, int Tq,
                                    int C, int NH, float p, uint64_t key),
          (be, dqkv, scratch, dctx, probs, qkv, kept, mask, B, T, Tq, C, NH, p, key))
PROF_WRAP(attention_forward, (backend *be, float *ctx, float *probs, float *pd, const float *qkv, const int32_t *mask,
                              int B, int T, int Tq, int C, int NH, float p, uint64_t key),
          (be, ctx, probs, pd, qkv, mask, B, T, Tq, C, NH, p, key))
PROF_WRAP(attention_backward, (backend *be, float *dqkv, float *scratch, const float *dctx, const float *probs,
                               const float *qkv, const int32_t *mask, int B, int T, int Tq, int C, int NH, float p,
                               uint64_t key), (be, dqkv, scratch, dctx, probs, qkv, mask, B, T, Tq, C, NH, p, key))
PROF_WRAP(add_layernorm_forward, (backend *be, float *out, float *sum, float *mean, float *rstd, const float *x,
                                  const float *residual, const float *weight, const float *bias, int N, int C,
                                  float eps, float p, uint64_t key),
          (be, out, sum, mean, rstd, x, residual, weight, bias, N, C, eps, p, key))
PROF_WRAP(add_layernorm_backward, (backend *be, float *dx, float *dres, float *dweight, float *dbias,
                                   const float *dout, const float *sum, const float *mean, const float *rstd,
                                   const float *weight, int N, int C, float p, uint64_t key),
          (be, dx, dres, dweight, dbias, dout, sum, mean, rstd, weight, N, C, p, key))
PROF_WRAP(gelu_forward, (backend *be, float *out, const float *inp, size_t n), (be, out, inp, n))
PROF_WRAP(gelu_backward, (backend *be, float *dinp, const float *inp, const float *dout, size_t n),
          (be, dinp, inp, dout, n))
PROF_WRAP(adamw, (backend *be, float *param, const float *grad, float *m, float *v, size_t rows, size_t row_len,
                  const uint8_t *touched, const backend_adamw_args *args), (be, param, grad, m, v, rows, row_len, touched, args))

/* Wrap the ops the backend has (an optional fusion it lacks stays absent). */
static void prof_install(backend *be) {
    prof.inner = *be;
#define PROF_INSTALL(op) if (be->op) be->op = prof_##op;
    PROF_INSTALL(matmul_forward) PROF_INSTALL(matmul_backward) PROF_INSTALL(gelu_matmul_forward)
    PROF_INSTALL(gelu_matmul_backward) PROF_INSTALL(gelu_backward_matmul_backward) PROF_INSTALL(attention_forward)
    PROF_INSTALL(attention_backward) PROF_INSTALL(add_layernorm_forward) PROF_INSTALL(add_layernorm_backward)
    PROF_INSTALL(gelu_forward) PROF_INSTALL(gelu_backward) PROF_INSTALL(adamw) PROF_INSTALL(matmul_forward_keep)
    PROF_INSTALL(matmul_backward_kept) PROF_INSTALL(attention_forward_keep) PROF_INSTALL(attention_backward_kept)
#undef PROF_INSTALL
}

static void prof_report(int steps, double train_time) {
    double listed = 0;
    for (int i = 0; i < prof.count; i++) {
        fprintf(stderr, "profile %-30s %9.2f ms/step %5.1f %%\n", prof.names[i], prof.seconds[i] * 1e3 / steps,
                100 * prof.seconds[i] / train_time);
        listed += prof.seconds[i];
    }
    fprintf(stderr, "profile %-30s %9.2f ms/step %5.1f %%\n", "other", (train_time - listed) * 1e3 / steps,
            100 * (train_time - listed) / train_time);
}

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    const char *head = arg_str(argc, argv, "--head", "cls");
    int qa = strcmp(head, "qa") == 0;
    if (!qa && strcmp(head, "cls") != 0) bp_die(2, NULL, "--head must be cls or qa, not %s", head);
    int B = (int)arg_int(argc, argv, "--batch", qa ? 12 : 32);
    int T = (int)arg_int(argc, argv, "--seq", qa ? 384 : 128);
    int steps = (int)arg_int(argc, argv, "--steps", 10);
    int threads = (int)arg_int(argc, argv, "--threads", 2);
    bert_config cfg;
    bert_config_default(&cfg);
    cfg.num_hidden_layers = (int)arg_int(argc, argv, "--layers", 4);
    cfg.hidden_size = (int)arg_int(argc, argv, "--hidden", 256);
    cfg.num_attention_heads = (int)arg_int(argc, argv, "--heads", 4);
    cfg.intermediate_size = (int)arg_int(argc, argv, "--intermediate", 1024);
    cfg.vocab_size = (int)arg_int(argc, argv, "--vocab", 30522);
    cfg.head = qa ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    cfg.num_labels = 2;
    if (B <= 0 || T < 4 || steps <= 0) bp_die(2, NULL, "--batch, --seq (>= 4) and --steps must be positive");

    const char *precision = arg_str(argc, argv, "--precision", "fp32");
    int bf16 = strcmp(precision, "bf16") == 0;
    if (!bf16 && strcmp(precision, "fp32") != 0) bp_die(2, NULL, "--precision must be fp32 or bf16, not %s", precision);
    bp_err err;
    backend *be = backend_cpu_create(threads, &err);
    if (!be || (bf16 && backend_cpu_set_bf16(be, 1, &err) != 0)) bp_die_err(&err);
    int profile = 0;
    for (int i = 1; i < argc; i++) profile |= strcmp(argv[i], "--profile") == 0;
    if (profile) prof_install(be);
    bert_model *m = bert_create(&cfg, be, B, T, &err);
    if (!m || bert_init_weights(m, 1, 0, &err) != 0) bp_die_err(&err);
    optim_config oc;
    optim_config_default(&oc);
    oc.lr = 5e-5f;
    oc.weight_decay = 0.01f;
    oc.warmup_steps = 2;
    oc.total_steps = 1000;
    optim_adamw *opt = bert_optim_create(m, &oc, &err);
    if (!opt) bp_die_err(&err);

    bench_inputs in;
    bench_inputs_alloc(&in, B, T, qa);
    bert_batch batch = in.batch;

    /* 2 warm-up steps, then the timed ones; CPU seconds too, a measure less sensitive than wall
     * time to other users of the machine */
    double train_time = 0, eval_time = 0, last_loss = 0, cpu_start = 0;
    for (int k = 0; k < steps + 2; k++) {
        bench_inputs_fill(&in, k, cfg.vocab_size, cfg.num_labels);
        if (k == 2) {
            cpu_start = cpu_seconds();
            prof.on = profile;
        }
        double t0 = bp_now();
        if (bert_forward(m, &batch, 1, &err) || bert_backward(m, 1.0f, &err) ||
            bert_optim_step(m, opt, NULL, NULL, &err))
            bp_die_err(&err);
        if (k >= 2) train_time += bp_now() - t0;
        last_loss = bert_loss(m);
    }
    double train_cpu = cpu_seconds() - cpu_start;
    prof.on = 0;
    if (profile) prof_report(steps, train_time);
    for (int k = 0; k < steps + 1; k++) {
        bench_inputs_fill(&in, k, cfg.vocab_size, cfg.num_labels);
        double t0 = bp_now();
        if (bert_forward(m, &batch, 0, &err)) bp_die_err(&err);
        if (k >= 1) eval_time += bp_now() - t0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("impl %s head %s batch %d seq %d train_seq_s %.2f eval_seq_s %.2f peak_rss_mb %.0f loss %.4f "
           "train_cpu_s_per_step %.3f\n", bf16 ? "c-bf16" : "c", head, B, T, steps * B / train_time, steps * B / eval_time,
           ru.ru_maxrss / 1024.0, last_loss, train_cpu / steps);
    bench_inputs_free(&in);
    optim_free(opt);
    bert_free(m);
    be->destroy(be);
    return 0;
}
