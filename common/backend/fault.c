/* backend/fault.c — fault injection for tests (see fault.h): the armed backend's op table is
 * replaced by wrappers that count the target op's calls, skip the one that fails and, from then
 * on, act as a failed CUDA backend. The backend's own ops and state stay as they were, so
 * backend-specific calls (backend/cuda.h) keep working on it.
 *
 * One armed backend per process, held in a static: this is a test hook, and backends are driven
 * by one thread anyway (backend.h). Must never: hold any code outside BP_FAULT_INJECTION (the
 * release build compiles this file to nothing), print or exit.
 */
#include "backend/fault.h"

#ifdef BP_FAULT_INJECTION
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ops a fault can hit: every one that returns nothing (or sumsq's number), as those are the
 * ones whose CUDA errors only the check op reports. alloc reports its own errors. */
#define FAULT_OPS(X)                                                                               \
    X(upload) X(download) X(zero) X(copy_rows) X(matmul_forward) X(matmul_backward)              \
    X(embedding_forward) X(embedding_backward) X(embedding_zero_grad) X(add_layernorm_forward)   \
    X(add_layernorm_backward) X(gelu_forward) X(gelu_backward) X(tanh_forward) X(tanh_backward)  \
    X(dropout) X(attention_forward) X(attention_backward) X(cross_entropy) X(mse) X(sumsq)       \
    X(adamw) X(sgd) X(matmul_backward_input) X(embedding_lookup_forward)                          \
    X(embedding_lookup_backward) X(relu_forward) X(relu_backward) X(bce_with_logits)              \
    X(rnn_forward) X(rnn_backward) X(gelu_matmul_forward) X(gelu_matmul_backward)                \
    X(gelu_backward_matmul_backward) X(matmul_forward_keep) X(matmul_backward_kept)                \
    X(attention_forward_keep) X(attention_backward_kept)

#define AS_ENUM(op) OP_##op,
#define AS_NAME(op) #op,
enum { FAULT_OPS(AS_ENUM) OP_COUNT };
static const char *const op_names[OP_COUNT] = { FAULT_OPS(AS_NAME) };

static struct {
    backend *be;          /* the armed backend; NULL when none */
    backend inner;        /* its op table as the backend made it */
    int op;               /* the op that fails ... */
    long target, calls;   /* ... on its target-th call; its calls so far */
    int nan;              /* "nan:OP:N": that call runs and its result turns NaN; nothing fails */
    int fired;
    char spec[64];
    char message[192];    /* set when the fault fired */
} armed;

/* 1 when the op may run: the fault has not fired and this is not the call it fires on. A NaN
 * fault never stops an op (see poisoned). */
static int runs(int op) {
    if (armed.nan) return 1;
    if (armed.fired) return 0;
    if (op != armed.op || ++armed.calls != armed.target) return 1;
    armed.fired = 1;
    snprintf(armed.message, sizeof armed.message, "injected fault in %s call %ld (BERTPIPE_FAULT=%s)",
             op_names[op], armed.target, armed.spec);
    return 0;
}

/* NaN mode: 1 when this call of op is the one whose result turns NaN (once). */
static int poisoned(int op) {
    if (!armed.nan || armed.fired || op != armed.op || ++armed.calls != armed.target) return 0;
    armed.fired = 1;
    return 1;
}

/* Fill n floats of backend memory with NaN, through the backend's own upload (device memory on
 * cuda): a numeric blow-up, not a failure, so check stays quiet. */
static void fill_nan(backend *be, float *dst, size_t n) {
    float *host = malloc(n * sizeof *host);
    if (!host) return;
    for (size_t i = 0; i < n; i++) host[i] = NAN;
    armed.inner.upload(be, dst, host, n * sizeof *host);
    free(host);
}

// ----------------------------------------------------------------------------
// the wrapped table: each op runs the backend's own unless the fault stops it

static void fault_upload(backend *be, void *dst, const void *host_src, size_t bytes) {
    if (runs(OP_upload)) armed.inner.upload(be, dst, host_src, bytes);
}
static void fault_download(backend *be, void *host_dst, const void *src, size_t bytes) {
    if (runs(OP_download)) armed.inner.download(be, host_dst, src, bytes);
    else if (bytes) memset(host_dst, 0xff, bytes);   /* NaN, as a failed CUDA download */
}
static void fault_zero(backend *be, void *ptr, size_t bytes) {
    if (runs(OP_zero)) armed.inner.zero(be, ptr, bytes);
}
static void fault_copy_rows(backend *be, float *dst, int dst_stride, const float *src, int src_stride, int rows,
                            int cols) {
    if (runs(OP_copy_rows)) armed.inner.copy_rows(be, dst, dst_stride, src, src_stride, rows, cols);
}
static void fault_matmul_forward(backend *be, float *out, const float *inp, const float *weight, const float *bias,
                                 int N, int IC, int OC) {
    if (runs(OP_matmul_forward)) armed.inner.matmul_forward(be, out, inp, weight, bias, N, IC, OC);
    if (poisoned(OP_matmul_forward)) fill_nan(be, out, (size_t)N * (size_t)OC);
}
static void fault_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, int N, int IC, int OC, int accumulate_dinp) {
    if (runs(OP_matmul_backward))
        armed.inner.matmul_backward(be, dinp, dweight, dbias, dout, inp, weight, N, IC, OC, accumulate_dinp);
}
static void fault_embedding_forward(backend *be, float *out, const int32_t *input_ids, const int32_t *token_type_ids,
                                    const float *wte, const float *wpe, const float *wtt, int B, int T, int C) {
    if (runs(OP_embedding_forward))
        armed.inner.embedding_forward(be, out, input_ids, token_type_ids, wte, wpe, wtt, B, T, C);
}
static void fault_embedding_backward(backend *be, float *dwte, float *dwpe, float *dwtt, uint8_t *wte_touched,
                                     const float *dout, const int32_t *input_ids, const int32_t *token_type_ids,
                                     int B, int T, int C, int padding_idx) {
    if (runs(OP_embedding_backward))
        armed.inner.embedding_backward(be, dwte, dwpe, dwtt, wte_touched, dout, input_ids, token_type_ids, B, T, C,
                                       padding_idx);
}
static void fault_embedding_zero_grad(backend *be, float *dwte, uint8_t *wte_touched, int V, int C) {
    if (runs(OP_embedding_zero_grad)) armed.inner.embedding_zero_grad(be, dwte, wte_touched, V, C);
}
static void fault_add_layernorm_forward(backend *be, float *out, float *sum, float *mean, float *rstd, const float *x,
                                        const float *residual, const float *weight, const float *bias, int N, int C,
                                        float eps, float dropout_p, uint64_t dropout_key) {
    if (runs(OP_add_layernorm_forward))
        armed.inner.add_layernorm_forward(be, out, sum, mean, rstd, x, residual, weight, bias, N, C, eps, dropout_p,
                                          dropout_key);
}
static void fault_add_layernorm_backward(backend *be, float *dx, float *dresidual, float *dweight, float *dbias,
                                         const float *dout, const float *sum, const float *mean, const float *rstd,
                                         const float *weight, int N, int C, float dropout_p, uint64_t dropout_key) {
    if (runs(OP_add_layernorm_backward))
        armed.inner.add_layernorm_backward(be, dx, dresidual, dweight, dbias, dout, sum, mean, rstd, weight, N, C,
                                           dropout_p, dropout_key);
}
static void fault_gelu_forward(backend *be, float *out, const float *inp, size_t n) {
    if (runs(OP_gelu_forward)) armed.inner.gelu_forward(be, out, inp, n);
}
static void fault_gelu_backward(backend *be, float *dinp, const float *inp, const float *dout, size_t n) {
    if (runs(OP_gelu_backward)) armed.inner.gelu_backward(be, dinp, inp, dout, n);
}
static void fault_tanh_forward(backend *be, float *out, const float *inp, size_t n) {
    if (runs(OP_tanh_forward)) armed.inner.tanh_forward(be, out, inp, n);
}
static void fault_tanh_backward(backend *be, float *dinp, const float *out, const float *dout, size_t n) {
    if (runs(OP_tanh_backward)) armed.inner.tanh_backward(be, dinp, out, dout, n);
}
static void fault_dropout(backend *be, float *out, const float *inp, size_t n, float p, uint64_t key) {
    if (runs(OP_dropout)) armed.inner.dropout(be, out, inp, n, p, key);
}
static void fault_attention_forward(backend *be, float *ctx, float *probs, float *probs_dropped, const float *qkv,
                                    const int32_t *attention_mask, int B, int T, int Tq, int C, int NH,
                                    float dropout_p, uint64_t dropout_key) {
    if (runs(OP_attention_forward))
        armed.inner.attention_forward(be, ctx, probs, probs_dropped, qkv, attention_mask, B, T, Tq, C, NH, dropout_p,
                                      dropout_key);
}
static void fault_attention_backward(backend *be, float *dqkv, float *scratch, const float *dctx, const float *probs,
                                     const float *qkv, const int32_t *attention_mask, int B, int T, int Tq, int C,
                                     int NH, float dropout_p, uint64_t dropout_key) {
    if (runs(OP_attention_backward))
        armed.inner.attention_backward(be, dqkv, scratch, dctx, probs, qkv, attention_mask, B, T, Tq, C, NH,
                                       dropout_p, dropout_key);
}
static void fault_cross_entropy(backend *be, float *loss, float *dlogits, const float *logits, const int32_t *targets,
                                int rows, int V, int row_stride, int class_stride, float scale, float grad_scale) {
    if (runs(OP_cross_entropy))
        armed.inner.cross_entropy(be, loss, dlogits, logits, targets, rows, V, row_stride, class_stride, scale,
                                  grad_scale);
}
static void fault_mse(backend *be, float *loss, float *dlogits, const float *logits, const float *targets, int rows,
                      float scale, float grad_scale) {
    if (runs(OP_mse)) armed.inner.mse(be, loss, dlogits, logits, targets, rows, scale, grad_scale);
}
static double fault_sumsq(backend *be, const float *x, size_t rows, size_t row_len, const uint8_t *touched) {
    double sum = runs(OP_sumsq) ? armed.inner.sumsq(be, x, rows, row_len, touched) : NAN;
    return poisoned(OP_sumsq) ? NAN : sum;
}
static void fault_adamw(backend *be, float *param, const float *grad, float *m, float *v, size_t rows,
                        size_t row_len, const uint8_t *touched, const backend_adamw_args *args) {
    if (runs(OP_adamw)) armed.inner.adamw(be, param, grad, m, v, rows, row_len, touched, args);
    if (poisoned(OP_adamw)) fill_nan(be, param, rows * row_len);
}

static void fault_sgd(backend *be, float *param, const float *grad, float *momentum_buf, size_t rows, size_t row_len,
                      const uint8_t *touched, const backend_sgd_args *args) {
    if (runs(OP_sgd)) armed.inner.sgd(be, param, grad, momentum_buf, rows, row_len, touched, args);
}
static void fault_matmul_backward_input(backend *be, float *dinp, const float *dout, const float *weight, int N, int IC,
                                        int OC, int accumulate) {
    if (runs(OP_matmul_backward_input)) armed.inner.matmul_backward_input(be, dinp, dout, weight, N, IC, OC, accumulate);
}
static void fault_embedding_lookup_forward(backend *be, float *out, const int32_t *ids, const float *wte, int N, int C) {
    if (runs(OP_embedding_lookup_forward)) armed.inner.embedding_lookup_forward(be, out, ids, wte, N, C);
}
static void fault_embedding_lookup_backward(backend *be, float *dwte, uint8_t *wte_touched, const float *dout,
                                            const int32_t *ids, int N, int C, int padding_idx) {
    if (runs(OP_embedding_lookup_backward))
        armed.inner.embedding_lookup_backward(be, dwte, wte_touched, dout, ids, N, C, padding_idx);
}
static void fault_relu_forward(backend *be, float *out, const float *inp, size_t n) {
    if (runs(OP_relu_forward)) armed.inner.relu_forward(be, out, inp, n);
}
static void fault_relu_backward(backend *be, float *dinp, const float *out, const float *dout, size_t n) {
    if (runs(OP_relu_backward)) armed.inner.relu_backward(be, dinp, out, dout, n);
}
static void fault_bce_with_logits(backend *be, float *loss, float *dlogits, const float *logits, const float *targets,
                                  int rows, float scale, float grad_scale) {
    if (runs(OP_bce_with_logits)) armed.inner.bce_with_logits(be, loss, dlogits, logits, targets, rows, scale, grad_scale);
}
static void fault_rnn_forward(backend *be, const backend_rnn_args *args) {
    if (runs(OP_rnn_forward)) armed.inner.rnn_forward(be, args);
}
static void fault_rnn_backward(backend *be, const backend_rnn_args *args) {
    if (runs(OP_rnn_backward)) armed.inner.rnn_backward(be, args);
}

static void fault_gelu_matmul_forward(backend *be, float *out, float *act, const float *pre, const float *weight,
                                      const float *bias, int N, int IC, int OC) {
    if (runs(OP_gelu_matmul_forward)) armed.inner.gelu_matmul_forward(be, out, act, pre, weight, bias, N, IC, OC);
}
static void fault_gelu_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                       const float *pre, float *act, const float *weight, int N, int IC, int OC,
                                       int accumulate_dinp) {
    if (runs(OP_gelu_matmul_backward))
        armed.inner.gelu_matmul_backward(be, dinp, dweight, dbias, dout, pre, act, weight, N, IC, OC, accumulate_dinp);
}

static void fault_gelu_backward_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias, float *dact,
                                                const float *pre, const float *inp, const float *kept,
                                                const float *weight, int N, int IC, int OC, int accumulate_dinp) {
    if (runs(OP_gelu_backward_matmul_backward))
        armed.inner.gelu_backward_matmul_backward(be, dinp, dweight, dbias, dact, pre, inp, kept, weight, N, IC, OC,
                                                  accumulate_dinp);
}

static void fault_matmul_forward_keep(backend *be, float *out, float *kept, const float *inp, const float *weight,
                                      const float *bias, int N, int IC, int OC) {
    if (runs(OP_matmul_forward_keep)) armed.inner.matmul_forward_keep(be, out, kept, inp, weight, bias, N, IC, OC);
}
static void fault_matmul_backward_kept(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                       const float *inp, const float *kept, const float *weight, int N, int IC,
                                       int OC, int accumulate_dinp) {
    if (runs(OP_matmul_backward_kept))
        armed.inner.matmul_backward_kept(be, dinp, dweight, dbias, dout, inp, kept, weight, N, IC, OC, accumulate_dinp);
}
static void fault_attention_forward_keep(backend *be, float *ctx, float *probs, float *probs_dropped, float *kept,
                                         const float *qkv, const int32_t *attention_mask, int B, int T, int Tq,
                                         int C, int NH, float dropout_p, uint64_t dropout_key) {
    if (runs(OP_attention_forward_keep))
        armed.inner.attention_forward_keep(be, ctx, probs, probs_dropped, kept, qkv, attention_mask, B, T, Tq, C, NH,
                                           dropout_p, dropout_key);
}
static void fault_attention_backward_kept(backend *be, float *dqkv, float *scratch, const float *dctx,
                                          const float *probs, const float *qkv, const float *kept,
                                          const int32_t *attention_mask, int B, int T, int Tq, int C, int NH,
                                          float dropout_p, uint64_t dropout_key) {
    if (runs(OP_attention_backward_kept))
        armed.inner.attention_backward_kept(be, dqkv, scratch, dctx, probs, qkv, kept, attention_mask, B, T, Tq, C,
                                            NH, dropout_p, dropout_key);
}

/* A real failure the backend met before is the news; the injected one otherwise. */
static int fault_check(backend *be, bp_err *err) {
    int rc = armed.inner.check(be, err);
    if (rc != 0 || !armed.fired || armed.nan) return rc;
    return bp_err_set(err, "%s backend: %s", be->name, armed.message);
}

static void fault_destroy(backend *be) {
    void (*destroy)(backend *) = armed.inner.destroy;
    memset(&armed, 0, sizeof armed);
    destroy(be);
}

// ----------------------------------------------------------------------------
// arming

/* Index of the op named by [name, name + len), or -1. */
static int op_index(const char *name, size_t len) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strlen(op_names[i]) == len && strncmp(op_names[i], name, len) == 0) return i;
    return -1;
}

int backend_fault_arm(backend *be, const char *spec, bp_err *err) {
    if (armed.be)
        return bp_err_set(err, "fault injection is already armed on a backend, one at a time (BERTPIPE_FAULT=%s)", spec);
    int nan = strncmp(spec, "nan:", 4) == 0;
    const char *op = strncmp(spec, "backend:", 8) == 0 ? spec + 8 : nan ? spec + 4 : NULL;
    const char *colon = op ? strchr(op, ':') : NULL;
    int which = colon ? op_index(op, (size_t)(colon - op)) : -1;
    char *end = NULL;
    errno = 0;
    long n = colon && colon[1] ? strtol(colon + 1, &end, 10) : 0;
    if (nan && which != OP_matmul_forward && which != OP_adamw && which != OP_sumsq) which = -1;
    if (which < 0 || !end || *end || errno || n < 1 || strlen(spec) >= sizeof armed.spec) {
        char names[1024] = "";
        for (int i = 0; i < OP_COUNT; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? " " : "", op_names[i]);
        /* the value first: the list of ops is long enough to be cut at the end of the message */
        return bp_err_set(err, "BERTPIPE_FAULT wants backend:OP:N with N >= 1, got '%s'; OP one of %s; or nan:OP:N, "
                          "OP one of matmul_forward adamw sumsq", spec, names);
    }
    armed.be = be;
    armed.nan = nan;
    armed.inner = *be;
    armed.op = which;
    armed.target = n;
    snprintf(armed.spec, sizeof armed.spec, "%s", spec);
#define INSTALL(op) be->op = be->op ? fault_##op : NULL;   /* optional ops stay absent */
    FAULT_OPS(INSTALL)
#undef INSTALL
    be->check = fault_check;
    be->destroy = fault_destroy;
    return 0;
}

#endif
