/* backend/backend.h — the compute interface the BERT model runs on: memory and the few fused ops it calls.
 *
 * The model (model/bert.c) and the optimizer (model/optim.c) never touch tensor memory
 * themselves: every buffer is an opaque device pointer owned by a backend, and every loop over
 * tensor elements is one of the ops below. backend/cpu.c implements them with OpenBLAS (or
 * oneDNN bf16 products) and a small thread pool; a CUDA backend (cuBLAS + kernels) fills the same
 * table, so one model code path and one set of tests serve both.
 *
 * Must never: know about frames, files or parameter names, or allocate inside an op (scratch
 * space is passed in by the caller, planned once from the config and the largest batch shape).
 *
 * Shape key used in the comments: N = rows (B*T tokens), B = batch, T = sequence length,
 * C = hidden size, NH = attention heads, D = C/NH, V = classes (vocabulary, labels or positions).
 * Matrices are row-major; Linear weights are [out, in] as in PyTorch.
 */
#ifndef BP_BACKEND_H
#define BP_BACKEND_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

#ifdef __CUDACC__
#define BK_HOSTDEV __host__ __device__
#else
#define BK_HOSTDEV
#endif

/* Floats that hold n 16-bit values, rounded up to 16 floats (a kept buffer: matmul_forward_keep) */
static inline size_t backend_kept_floats(size_t n) { return ((n + 1) / 2 + 15) / 16 * 16; }

/* Dropout randomness is counter based so that any backend reproduces it element by element:
 * element i of the tensor keyed `key` is kept when its uniform draw is >= p. The key itself is
 * derived by the model from (seed, step, layer, site) with backend_mix_key. */

static inline BK_HOSTDEV uint64_t backend_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
static inline BK_HOSTDEV uint64_t backend_mix_key(uint64_t a, uint64_t b) {
    return backend_splitmix64(a ^ backend_splitmix64(b));
}
/* The 24 random bits of element `index` under `key`; its uniform draw is bits / 2^24. */
static inline BK_HOSTDEV uint32_t backend_dropout_bits(uint64_t key, uint64_t index) {
    return (uint32_t)(backend_splitmix64(key + index * 0xD1B54A32D192ED03ull) >> 40);
}
/* 1 when element `index` survives dropout with probability p under `key`. */
static inline BK_HOSTDEV int backend_dropout_keep(uint64_t key, uint64_t index, float p) {
    float u = (float)backend_dropout_bits(key, index) * (1.0f / 16777216.0f);   /* exact in float */
    return u >= p;
}

/* Which optional work an optimizer update covers. A row-sparse segment (the word embedding)
 * has a per-row "touched" flag: rows whose flag is 0 have an all-zero gradient that is never
 * read (nor needs zeroing), yet AdamW still decays their moments and weights exactly. */
typedef struct backend_adamw_args {
    /* scalars are formed in double by the caller and rounded once, as torch does */
    float beta1, beta2, eps;
    float decay;                   /* 1 - lr * weight_decay */
    float step_size;               /* lr / (1 - beta1^t) */
    float bias_correction2_sqrt;   /* sqrt(1 - beta2^t) */
    float grad_scale;              /* clipping coefficient folded into g */
    float l2;                      /* Adam's L2 decay: g = grad_scale * grad + l2 * param (0: none) */
} backend_adamw_args;

/* One torch.optim.SGD step: d = grad_scale * g + weight_decay * p; with momentum,
 * buf = first ? d : momentum * buf + (1 - dampening) * d, and d = nesterov ? d + momentum * buf
 * : buf; then p -= lr * d. Untouched sparse rows take g = 0, as above. */
typedef struct backend_sgd_args {
    float lr, weight_decay, momentum, dampening;
    int nesterov;
    int first;                     /* the first step: the momentum buffer starts as d */
    float grad_scale;
} backend_sgd_args;

/* Recurrent layers (GRU, LSTM) over packed sequences, one direction per call. G = gates
 * (GRU 3: r, z, n; LSTM 4: i, f, g, o, torch's order), H = hidden size. Sequence b occupies rows
 * b*T .. b*T+len_b-1; the forward direction visits positions 0 .. len_b-1, the reverse one
 * len_b-1 .. 0, each starting from a zero state, as torch.nn.GRU/LSTM over a PackedSequence.
 * At step s the sequences still running are the first #{len > s} of `order`, so a backend can
 * run one [active, H] x [H, G*H] product per step. Forward reads xproj (W_ih x + b_ih of every
 * position, this direction's G*H columns at the pointer, row stride xproj_stride) and writes
 * out (h at every visited position; other rows untouched), h_last (the state after the last
 * step, may be NULL), and the saved state: gates [B*T, 4H] (GRU: r, z, n and
 * hn = W_hn h + b_hn; LSTM: i, f, g, o after their activations), hprev [B*T, H] (the state each
 * step started from) and cell [B*T, H] (LSTM: c after the step; unused by GRU). Rows of padded
 * positions are not written: the caller zeroes what it reads back.
 * Backward reads dout (gradient of out, may be NULL), dh_last (of h_last, may be NULL) and the
 * saved state, and writes dxproj (gradient of xproj, row stride dxproj_stride; padded rows
 * untouched) and dhh [B*T, G*H] (gradient of W_hh h + b_hh; padded rows untouched), from which
 * the caller forms the weight gradients with matmul_backward. scratch: B * (G + 2) * H floats. */
enum { BACKEND_GRU = 0, BACKEND_LSTM = 1 };
typedef struct backend_rnn_args {
    int kind;                     /* BACKEND_GRU or BACKEND_LSTM */
    int B, T, H, reverse;
    const int32_t *order;         /* device [B]: sequence indices by non-increasing length */
    const int32_t *lengths;       /* device [B]: length of each sequence, 1..T */
    const int *sorted_lengths;    /* host [B]: lengths in `order`, non-increasing */
    const float *xproj; int xproj_stride;
    const float *w_hh, *b_hh;     /* [G*H, H], [G*H] */
    float *out; int out_stride;
    float *h_last; int h_last_stride;
    float *gates, *hprev, *cell;
    const float *dout; int dout_stride;
    const float *dh_last; int dh_last_stride;
    float *dxproj; int dxproj_stride;
    float *dhh;
    float *scratch;
} backend_rnn_args;

/* One thread drives a backend at a time: ops are not reentrant (the CPU pool serves one op). */
typedef struct backend backend;
struct backend {
    const char *name;       /* "cpu", "cuda" */
    int host_visible;       /* device pointers are plain host memory (cpu) */
    void *state;            /* backend private: thread pool, handles */

    /* ---- memory: alloc returns zeroed memory or NULL (err filled); free(NULL) does nothing ---- */
    void *(*alloc)(backend *be, size_t bytes, bp_err *err);
    void (*free)(backend *be, void *ptr);
    void (*upload)(backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(backend *be, void *host_dst, const void *src, size_t bytes);
    void (*zero)(backend *be, void *ptr, size_t bytes);
    /* rows x cols floats from src (row stride src_stride) to dst (row stride dst_stride). */
    void (*copy_rows)(backend *be, float *dst, int dst_stride, const float *src, int src_stride,
                      int rows, int cols);

    /* ---- linear layers: weight [OC, IC], inp [N, IC], out [N, OC] ---- */
    /* out = inp . weight^T + bias (bias may be NULL). */
    void (*matmul_forward)(backend *be, float *out, const float *inp, const float *weight,
                           const float *bias, int N, int IC, int OC);
    /* dinp (= or += when accumulate_dinp) dout . weight; dweight += dout^T . inp;
     * dbias += column sums of dout. dinp and dbias may be NULL. */
    void (*matmul_backward)(backend *be, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight,
                            int N, int IC, int OC, int accumulate_dinp);

    /* ---- embeddings: ids int32 [B*T], positions 0..T-1 ---- */
    /* out[N, C] = wte[input_ids] + wpe[t] + wtt[token_type_ids] */
    void (*embedding_forward)(backend *be, float *out, const int32_t *input_ids,
                              const int32_t *token_type_ids, const float *wte, const float *wpe,
                              const float *wtt, int B, int T, int C);
    /* Scatter-add dout into the three tables; sets wte_touched[row] = 1 for every used row.
     * Tokens equal to padding_idx (-1: none) add nothing, as torch's Embedding(padding_idx). */
    void (*embedding_backward)(backend *be, float *dwte, float *dwpe, float *dwtt,
                               uint8_t *wte_touched, const float *dout, const int32_t *input_ids,
                               const int32_t *token_type_ids, int B, int T, int C,
                               int padding_idx);
    /* Zero the rows of dwte whose touched flag is set, and clear the flags. */
    void (*embedding_zero_grad)(backend *be, float *dwte, uint8_t *wte_touched, int V, int C);

    /* ---- residual + LayerNorm, post-LN as BERT: sum = residual + dropout(x); out = LN(sum).
     * residual NULL: sum = x (sum may alias x). mean/rstd [N] are kept for the backward. */
    void (*add_layernorm_forward)(backend *be, float *out, float *sum, float *mean, float *rstd,
                                  const float *x, const float *residual, const float *weight,
                                  const float *bias, int N, int C, float eps,
                                  float dropout_p, uint64_t dropout_key);
    /* From dout: dsum = LN backward; dresidual = dsum (written, may be NULL);
     * dx = dropout backward of dsum (written); dweight, dbias accumulated. */
    void (*add_layernorm_backward)(backend *be, float *dx, float *dresidual, float *dweight,
                                   float *dbias, const float *dout, const float *sum,
                                   const float *mean, const float *rstd, const float *weight,
                                   int N, int C, float dropout_p, uint64_t dropout_key);

    /* ---- optional fusions: NULL where a backend has none (the model then calls the plain ops) ----
     * gelu_matmul_forward: out = GELU(pre) . weight^T + bias, what gelu_forward into act followed
     * by matmul_forward from act computes.
     * gelu_matmul_backward: matmul_backward with inp = GELU(pre).
     * act is NULL or room for N * IC 16-bit values (N * IC / 2 floats, rounded up) kept for the
     * pair: the forward may leave there what the backward needs (the cpu backend: GELU(pre) as
     * its products' bf16 operand), and the backward reads it, so the caller passes the same act,
     * untouched in between, to both. With NULL the backward makes it again from pre.
     * The cpu backend has these three while bf16 products are on: GELU's output (or its
     * gradient) then goes straight into the products' bf16 operand in cache, not through
     * memory as fp32. */
    void (*gelu_matmul_forward)(backend *be, float *out, float *act, const float *pre, const float *weight,
                                const float *bias, int N, int IC, int OC);
    void (*gelu_matmul_backward)(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *pre, float *act, const float *weight, int N, int IC, int OC,
                                 int accumulate_dinp);
    /* gelu_backward_matmul_backward: the layer whose output pre goes into a GELU, from the
     * gradient dact of the GELU's output: gelu_backward(dact, pre, dact) in place, then
     * matmul_backward with dout = dact. dact's contents are unspecified after. kept: NULL, or
     * the kept of the matmul_forward_keep that made pre from inp (below). */
    void (*gelu_backward_matmul_backward)(backend *be, float *dinp, float *dweight, float *dbias, float *dact,
                                          const float *pre, const float *inp, const float *kept,
                                          const float *weight, int N, int IC, int OC, int accumulate_dinp);

    /* ---- optional: what a forward leaves for its backward (NULL where a backend has none) ----
     * matmul_forward_keep is matmul_forward, matmul_backward_kept is matmul_backward, and
     * attention_forward_keep / attention_backward_kept are attention_forward / backward, each
     * with kept: room the forward may leave what its backward needs in, and the backward reads
     * instead of making it again, so the caller passes the same kept, untouched in between, and
     * the same inputs (unchanged) and shape to both. Room: backend_kept_floats(N * IC) floats
     * (matmul) or backend_kept_floats(N * 3C) (attention, N = B * T). The cpu backend has them while bf16 products are on: the
     * products' bf16 operands (the linear layer's input; every head's q, k, v, one block per
     * head) are rounded once in the forward, not again in the backward. */
    void (*matmul_forward_keep)(backend *be, float *out, float *kept, const float *inp, const float *weight,
                                const float *bias, int N, int IC, int OC);
    void (*matmul_backward_kept)(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *kept, const float *weight, int N, int IC, int OC,
                                 int accumulate_dinp);
    void (*attention_forward_keep)(backend *be, float *ctx, float *probs, float *probs_dropped, float *kept,
                                   const float *qkv, const int32_t *attention_mask, int B, int T, int Tq, int C,
                                   int NH, float dropout_p, uint64_t dropout_key);
    void (*attention_backward_kept)(backend *be, float *dqkv, float *scratch, const float *dctx, const float *probs,
                                    const float *qkv, const float *kept, const int32_t *attention_mask, int B,
                                    int T, int Tq, int C, int NH, float dropout_p, uint64_t dropout_key);

    /* ---- element-wise ---- */
    void (*gelu_forward)(backend *be, float *out, const float *inp, size_t n);    /* exact erf */
    void (*gelu_backward)(backend *be, float *dinp, const float *inp, const float *dout, size_t n);
    void (*tanh_forward)(backend *be, float *out, const float *inp, size_t n);
    void (*tanh_backward)(backend *be, float *dinp, const float *out, const float *dout, size_t n);
    /* out = inp * keep / (1 - p); in place allowed. Backward is the same op on gradients. */
    void (*dropout)(backend *be, float *out, const float *inp, size_t n, float p, uint64_t key);

    /* ---- self-attention over a fused qkv [N, 3C] (query | key | value columns) ----
     * attention_mask int32 [B, T]: 0 marks a padded key, which gets the additive
     * -FLT_MAX as Hugging Face does. Only the first Tq queries of each sequence are computed
     * (Tq = T normally; 1 when only [CLS] is needed). probs [B, NH, Tq, T] (before dropout) is
     * kept for the backward; probs_dropped is scratch of the same size, used only when
     * dropout_p > 0. ctx [N, C] has head h in columns h*D .. h*D+D-1; rows t >= Tq untouched.
     * Keys after a sequence's last unmasked one get probability exactly 0 (exp(-FLT_MAX)), so
     * a backend may skip them; their probs entries are then written as 0. */
    void (*attention_forward)(backend *be, float *ctx, float *probs, float *probs_dropped,
                              const float *qkv, const int32_t *attention_mask, int B, int T,
                              int Tq, int C, int NH, float dropout_p, uint64_t dropout_key);
    /* dqkv [N, 3C] written (query rows t >= Tq get 0); dctx rows t < Tq are read.
     * scratch: [B, NH, Tq, T] floats. */
    void (*attention_backward)(backend *be, float *dqkv, float *scratch, const float *dctx,
                               const float *probs, const float *qkv, const int32_t *attention_mask,
                               int B, int T, int Tq, int C, int NH, float dropout_p,
                               uint64_t dropout_key);

    /* ---- losses: each adds its loss to *loss (a device float) and writes dlogits ----
     * Cross-entropy over rows: class v of row r is logits[r*row_stride + v*class_stride].
     * targets int32 [rows]; a target outside [0, V) is ignored (no loss, zero gradient).
     * loss += scale * sum of row losses; dlogits = grad_scale * d(sum of row losses). */
    void (*cross_entropy)(backend *be, float *loss, float *dlogits, const float *logits,
                          const int32_t *targets, int rows, int V, int row_stride,
                          int class_stride, float scale, float grad_scale);
    /* Mean-squared error of logits [rows] against float targets, same scale convention. */
    void (*mse)(backend *be, float *loss, float *dlogits, const float *logits,
                const float *targets, int rows, float scale, float grad_scale);

    /* ---- optimizer ----
     * Sum of squares of x [rows, row_len]; touched (may be NULL) skips rows flagged 0. */
    double (*sumsq)(backend *be, const float *x, size_t rows, size_t row_len,
                    const uint8_t *touched);
    /* One AdamW step (torch.optim.AdamW) over param/grad/m/v [rows, row_len]. */
    void (*adamw)(backend *be, float *param, const float *grad, float *m, float *v, size_t rows,
                  size_t row_len, const uint8_t *touched, const backend_adamw_args *args);
    /* One SGD step (torch.optim.SGD) over param/grad [rows, row_len]; momentum_buf may be NULL
     * when args->momentum is 0. */
    void (*sgd)(backend *be, float *param, const float *grad, float *momentum_buf, size_t rows,
                size_t row_len, const uint8_t *touched, const backend_sgd_args *args);

    /* ---- the model variants' layers (heads, recurrent layers, baselines) ----
     * dinp (= or += when accumulate) dout [N, OC] . weight [OC, IC]: matmul_backward for a frozen
     * layer, whose weights get no gradient. */
    void (*matmul_backward_input)(backend *be, float *dinp, const float *dout, const float *weight,
                                  int N, int IC, int OC, int accumulate);
    /* out[N, C] = wte[ids] (a plain torch Embedding: no positions, no token types). */
    void (*embedding_lookup_forward)(backend *be, float *out, const int32_t *ids, const float *wte,
                                     int N, int C);
    /* dwte[ids[n]] += dout[n] and wte_touched[ids[n]] = 1, skipping ids equal to padding_idx. */
    void (*embedding_lookup_backward)(backend *be, float *dwte, uint8_t *wte_touched, const float *dout,
                                      const int32_t *ids, int N, int C, int padding_idx);
    /* out = max(x, 0) (in place allowed); backward dinp = dout where out > 0, else 0 (dinp may
     * alias dout). */
    void (*relu_forward)(backend *be, float *out, const float *inp, size_t n);
    void (*relu_backward)(backend *be, float *dinp, const float *out, const float *dout, size_t n);
    /* torch's BCEWithLogits of logits [rows] against float targets: row loss
     * max(x, 0) - x y + log(1 + exp(-|x|)); loss += scale * sum of row losses;
     * dlogits = grad_scale * (sigmoid(x) - y). */
    void (*bce_with_logits)(backend *be, float *loss, float *dlogits, const float *logits,
                            const float *targets, int rows, float scale, float grad_scale);
    /* One direction of a GRU or LSTM layer, forward and backward (backend_rnn_args above). */
    void (*rnn_forward)(backend *be, const backend_rnn_args *args);
    void (*rnn_backward)(backend *be, const backend_rnn_args *args);

    /* ---- errors ----
     * Ops return nothing, so a backend whose work can fail (cuda: any CUDA or cuBLAS call)
     * records the first failure and from then on does nothing: downloads fill their destination
     * with NaN (all bits set), sumsq returns NaN. check waits until every queued op has finished,
     * then reports: 0, or -1 with err filled with that first failure, its name and where it
     * happened ("cuda backend: cublasGemmEx failed: CUBLAS_STATUS_EXECUTION_FAILED: ...
     * (backend/cuda.cu:276)"). The failure is sticky, as a faulted CUDA context is: every later
     * check reports it again. cpu: its ops cannot fail, so check returns 0 at no cost. Callers
     * check where a result is consumed; the model does at the end of every forward, backward and
     * optimizer step (backend/fault.h makes an op fail on purpose, to test them). */
    int (*check)(backend *be, bp_err *err);

    /* ---- product weights (may be NULL: a backend that needs no notice) ----
     * The model's weight matrices lie in [weights, weights + n) and change only when the model
     * says so with weights_changed (loaded, initialised, an optimizer step). A backend whose
     * products round their operands (cpu in bf16) rounds that range once after each change
     * instead of at every product; a weight outside it is rounded at the product. n = 0 forgets
     * the range when it starts at `weights`. plan_weights returns 0, or -1 with err. */
    int (*plan_weights)(backend *be, const float *weights, size_t n, bp_err *err);
    void (*weights_changed)(backend *be);

    /* ---- data-parallel collectives (may be NULL: cpu, whose memory the caller sums with MPI) ----
     * A run of `size` processes, one backend each, sums gradients where they lie (cuda: NCCL).
     * collective_id (rank 0 only) writes the run's id into id (*len bytes, at most cap) for the
     * caller to send to every rank; collective_init joins the run with it (every rank, at once).
     * Both return 0, or -1 with err. allreduce_sum: x[i] = the sum of every rank's x[i], in
     * place, on the device; allreduce_or: the bitwise or of row flags. They queue work and fail
     * as the other ops do: check reports it. */
    int (*collective_id)(backend *be, void *id, size_t cap, size_t *len, bp_err *err);
    int (*collective_init)(backend *be, int rank, int size, const void *id, size_t len, bp_err *err);
    void (*allreduce_sum)(backend *be, float *x, size_t n);
    void (*allreduce_or)(backend *be, uint8_t *x, size_t n);

    /* Release the backend itself (state, pools). */
    void (*destroy)(backend *be);
};

/* Create the CPU backend (OpenBLAS sgemm + `threads` element-wise threads; 0 = number of
 * online CPUs). Caller owns the result and releases it with be->destroy(be).
 * Returns NULL with err filled when threads cannot be started. */
backend *backend_cpu_create(int threads, bp_err *err);

/* bf16 matrix products on the cpu backend, the torch.autocast("cpu", torch.bfloat16) recipe:
 * the operands of every product (linear layers, attention) are rounded to bf16 and multiplied
 * with fp32 accumulation into an fp32 result; weights stay fp32 masters, and LayerNorm,
 * softmax, losses and the optimizer stay fp32. Runs on oneDNN (AMX or AVX512-BF16).
 * available: 1 when this CPU (cpuid avx512_bf16) and build (oneDNN) can, else 0 with one line
 * in why. set_bf16: switch on (1) or off (0); -1 with err when unavailable or be is not a cpu
 * backend. backend_cpu_bf16: 1 when on. */
int backend_cpu_bf16_available(char *why, size_t why_size);
/* 1 when be's bf16 products are on and emulated (test build, BERTPIPE_EMULATE_BF16 set when they
 * were switched on; backend/bf16_gemm.h), else 0 */
int backend_cpu_bf16_emulated(const backend *be);
int backend_cpu_set_bf16(backend *be, int on, bp_err *err);
int backend_cpu_bf16(const backend *be);
/* Packed weights for the bf16 products (backend/bf16_gemm.h bf16_gemm_pack_b): each planned
 * weight laid out once per change as oneDNN's kernels read it, instead of by every product. Off
 * unless BERTPIPE_BF16_PACK is set (not "0") when bf16 is switched on: without AMX it gained
 * nothing beyond noise (docs/benchmarks-bf16.md, 2026-12-04); with AMX it is not yet measured.
 * set_bf16_packing: on (1) or off (0); -1 when be has no bf16 products. bf16_packing: 1 when
 * on. packed_weights: the packed copies kept (for tests). */
int backend_cpu_set_bf16_packing(backend *be, int on);
int backend_cpu_bf16_packing(const backend *be);
int backend_cpu_bf16_packed_weights(const backend *be);

#endif
