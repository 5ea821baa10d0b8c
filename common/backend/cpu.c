/* backend/cpu.c — the CPU backend: OpenBLAS sgemm for every matrix product (or, switched to
 * bf16, oneDNN bf16 products: backend_cpu_set_bf16, bf16_gemm.h), one small pthread pool for all
 * parallel work. The readable reference for what each op in backend.h computes.
 *
 * Threads: OpenBLAS is set to one thread and the pool splits each product into row (or column)
 * blocks, one sgemm per thread; attention runs one (batch, head) pair per task, its products,
 * softmax and dropout back to back while the T x T block is in cache. So exactly `threads`
 * threads ever compute, and idle ones sleep on a condition variable: OpenBLAS's own workers
 * spin (sched_yield) between calls and would steal the cores the element-wise loops need. The
 * bf16 products run the same way, one single-threaded oneDNN call per block.
 * Must never: use OpenMP (same reason; oneDNN's OpenMP team is held to its caller alone),
 * allocate inside an op on the hot path (scratch is planned by the caller, or grown once to the
 * largest need), print or exit.
 */
/* Element-wise loops are written to vectorise (fast exp/erf below, no calls into libm in the hot
 * loops); -O2 alone leaves most of them scalar, so this file asks for the vectoriser. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
/* -march=native on these Xeons (and gcc's tuning for several AVX-512 parts) prefers 256-bit
 * vectors; the element-wise loops here measured up to 1.4x faster with 512-bit ones (bench_ops:
 * gelu backward 4.0 -> 2.7 ms, attention backward 7.5 -> 5.7 ms at BERT-Mini 32 x 128). Only a
 * preference: without AVX-512 the compiler keeps to what the target has. */
#pragma GCC target("prefer-vector-width=512")
#define FINITE_MATH_FUNCTION __attribute__((optimize("finite-math-only", "no-signed-zeros")))
#else
#define FINITE_MATH_FUNCTION
#endif
#include "backend/backend.h"
#include "backend/bf16_gemm.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// thread pool: parallel_for over [0, total), threads taking blocks from a shared counter

typedef void (*pool_fn)(void *ctx, size_t begin, size_t end);

typedef struct cpu_state {
    int threads;
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;
    int pending, quit;
    pool_fn fn;
    void *ctx;
    size_t total, grain;
    atomic_size_t next;          /* first item not yet taken */
    void *partials;              /* per-block partial sums of the reductions, grown once */
    size_t partials_bytes;
    float *ones;                 /* a column of 1s for bias gradients */
    size_t ones_len;
    struct cpu_bf16 *bf16;       /* bf16 products (backend_cpu_set_bf16); NULL: fp32 */
    const float *planned;        /* the model's product weights (plan_weights) */
    size_t planned_n;
} cpu_state;

/* Take blocks until none is left. Blocks are handed out dynamically rather than split evenly
 * up front: on a machine shared with other work one core is often slower, and a fixed split
 * would leave the other waiting. */
static void take_blocks(cpu_state *st, pool_fn fn, void *ctx, size_t total, size_t grain) {
    for (;;) {
        size_t begin = atomic_fetch_add(&st->next, grain);
        if (begin >= total) return;
        fn(ctx, begin, begin + grain < total ? begin + grain : total);
    }
}

static void *pool_worker(void *arg) {
    cpu_state *st = arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&st->mu);
        while (st->generation == seen && !st->quit) pthread_cond_wait(&st->wake, &st->mu);
        if (st->quit) { pthread_mutex_unlock(&st->mu); return NULL; }
        seen = st->generation;
        pool_fn fn = st->fn;
        void *ctx = st->ctx;
        size_t total = st->total, grain = st->grain;
        pthread_mutex_unlock(&st->mu);
        take_blocks(st, fn, ctx, total, grain);
        pthread_mutex_lock(&st->mu);
        if (--st->pending == 0) pthread_cond_signal(&st->done);
        pthread_mutex_unlock(&st->mu);
    }
}

/* Items per block for `total` items: about total / (4 * threads), or one block when the work
 * is smaller than `serial_below` (waking a worker costs more than a short loop). Blocks depend
 * only on (total, threads), never on which thread takes them, so reductions that keep one
 * partial sum per block and add them in block order give the same bits on every run (exact
 * resume needs that). */
static size_t block_size(const cpu_state *st, size_t total, size_t serial_below) {
    if (st->threads <= 1 || total < serial_below || total < (size_t)st->threads) return total > 0 ? total : 1;
    size_t grain = total / (4 * (size_t)st->threads);
    return grain > 0 ? grain : 1;
}

/* Run fn over [0, total) in blocks of `grain` items, the calling thread taking blocks too. */
static void parallel_for_grain(backend *be, size_t total, size_t grain, pool_fn fn, void *ctx) {
    cpu_state *st = be->state;
    if (grain >= total) {
        if (total) fn(ctx, 0, total);
        return;
    }
    pthread_mutex_lock(&st->mu);
    st->fn = fn;
    st->ctx = ctx;
    st->total = total;
    st->grain = grain;
    atomic_store(&st->next, 0);
    st->pending = st->threads - 1;
    st->generation++;
    pthread_cond_broadcast(&st->wake);
    pthread_mutex_unlock(&st->mu);
    take_blocks(st, fn, ctx, total, grain);
    pthread_mutex_lock(&st->mu);
    while (st->pending > 0) pthread_cond_wait(&st->done, &st->mu);
    pthread_mutex_unlock(&st->mu);
}

static void parallel_for(backend *be, size_t total, size_t serial_below, pool_fn fn, void *ctx) {
    parallel_for_grain(be, total, block_size(be->state, total, serial_below), fn, ctx);
}

/* Scratch for per-block partial sums, grown once to the largest need; NULL when out of memory
 * (the caller then runs as one block). */
static void *partials_scratch(backend *be, size_t bytes) {
    cpu_state *st = be->state;
    if (st->partials_bytes < bytes) {
        void *grown = realloc(st->partials, bytes);
        if (!grown) return NULL;
        st->partials = grown;
        st->partials_bytes = bytes;
    }
    return st->partials;
}

// ----------------------------------------------------------------------------
// vectorisable exp and erf (float accuracy: exp ~2 ulp; erf 6.2e-7 absolute against libm, the
// A&S 7.1.26 form being 1.5e-7 in exact arithmetic, the rest cancellation near 0)

static inline float fast_expf(float x) {
    /* Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then a degree-7 polynomial. */
    /* plain comparisons and the 1.5 * 2^23 rounding trick instead of fminf/fmaxf/floorf:
     * those stay scalar and keep the loop from vectorising */
    /* written so that NaN lands in range too: converting NaN to int below would be UB */
    /* fmaf spelled out: in ISO C mode gcc fuses nothing on its own (-ffp-contract=off), and the
     * separate multiply and add doubled these loops' instruction count */
    float xc = x > -87.3f ? x : -87.3f;
    xc = xc < 88.3f ? xc : 88.3f;
    float n = fmaf(xc, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
    float r = fmaf(n, 2.12194440e-4f, fmaf(n, -0.693359375f, xc));
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < -87.3f ? 0.0f : y;      /* exp of the -FLT_MAX attention mask is exactly 0 */
    return x == x ? y : x;          /* NaN in, NaN out: a diverged loss must stay visible */
}

/* 1 / x for x in [1, 2.4] without a division, the slowest instruction of the GELU loops (one
 * per ~10 cycles per vector): the minimax linear first guess (relative error 9.3 %), then three
 * Newton steps, each squaring the error (8.6e-3, 7.4e-5, 5.4e-9: below float's epsilon). */
static inline float recip_1_to_2_4(float x) {
    float r = fmaf(-0.3780718f, x, 1.2854442f);
    r = r * fmaf(-x, r, 2.0f);
    r = r * fmaf(-x, r, 2.0f);
    return r * fmaf(-x, r, 2.0f);
}

/* erf(z) given a = |z| and e = exp(-a^2): Abramowitz & Stegun 7.1.26. Past |z| = 4.2 t is taken
 * at 4.2 (x <= 2.376 for the reciprocal): there e < 2.2e-8, so the term it scales is below
 * float resolution next to 1 either way. */
static inline float erf_from_exp(float z, float a, float e) {
    float ac = a < 4.2f ? a : 4.2f;
    float t = recip_1_to_2_4(fmaf(0.3275911f, ac, 1.0f));
    float poly = fmaf(t, 1.061405429f, -1.453152027f);
    poly = fmaf(poly, t, 1.421413741f);
    poly = fmaf(poly, t, -0.284496736f);
    poly = fmaf(poly, t, 0.254829592f) * t;
    float y = fmaf(-poly, e, 1.0f);
    return z < 0 ? -y : y;
}
static inline float fast_erff(float z) {
    float a = z < 0 ? -z : z;
    return erf_from_exp(z, a, fast_expf(-a * a));
}

/* Float sums in a fixed set of 16 lanes: lane l adds elements l, l + 16, l + 32, ... and the lanes
 * are added last, pairwise. A single running sum is a chain of dependent scalar adds the compiler
 * may not reorder (strict IEEE), which left the softmax, LayerNorm and their backwards' sums
 * scalar inside otherwise vector loops; 16 independent lanes are one vector register. The order
 * is fixed by n alone, so results do not depend on threads or alignment. */
#define SUM_LANES 16
static inline float lanes_total(float acc[SUM_LANES]) {
    for (int w = SUM_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}
static inline float lane_sum(const float *x, int n) {
    float acc[SUM_LANES] = { 0 };
    for (int i0 = 0; i0 < n; i0 += SUM_LANES) {
        int lanes = n - i0 < SUM_LANES ? n - i0 : SUM_LANES;
        for (int l = 0; l < lanes; l++) acc[l] += x[i0 + l];
    }
    return lanes_total(acc);
}
/* sum of x[i] * y[i] */
static inline float lane_dot(const float *x, const float *y, int n) {
    float acc[SUM_LANES] = { 0 };
    for (int i0 = 0; i0 < n; i0 += SUM_LANES) {
        int lanes = n - i0 < SUM_LANES ? n - i0 : SUM_LANES;
        for (int l = 0; l < lanes; l++) acc[l] += x[i0 + l] * y[i0 + l];
    }
    return lanes_total(acc);
}
/* sum of (x[i] - m)^2 */
static inline float lane_sqdev(const float *x, float m, int n) {
    float acc[SUM_LANES] = { 0 };
    for (int i0 = 0; i0 < n; i0 += SUM_LANES) {
        int lanes = n - i0 < SUM_LANES ? n - i0 : SUM_LANES;
        for (int l = 0; l < lanes; l++) { float d = x[i0 + l] - m; acc[l] += d * d; }
    }
    return lanes_total(acc);
}

/* backend_dropout_keep as an integer compare: bits / 2^24 >= p exactly when bits >= ceil(p 2^24),
 * p 2^24 being exact in float. The loops that draw masks then vectorise (64-bit multiplies, no
 * int-to-float conversion); with the float compare gcc left them scalar. */
static uint32_t dropout_threshold(float p) {
    if (p != p || p >= 1.0f) return 1u << 24;   /* none kept (bits < 2^24) */
    if (p <= 0.0f) return 0;                      /* all kept */
    return (uint32_t)ceilf(p * 16777216.0f);
}
/* keep_scale or 0 for element `index` under the dropout key (threshold from dropout_threshold):
 * a multiplier, so the loops that apply it stay branch-free */
static inline float dropout_factor(uint64_t key, uint64_t index, uint32_t threshold, float keep_scale) {
    return backend_dropout_bits(key, index) >= threshold ? keep_scale : 0.0f;
}

// ----------------------------------------------------------------------------
// memory

static void *cpu_alloc(backend *be, size_t bytes, bp_err *err) {
    void *p = NULL;
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0) {
        bp_err_set(err, "out of memory allocating %zu bytes (cpu backend)", bytes);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}
static void cpu_free(backend *be, void *p) { free(p); }
static void cpu_copy(backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
/* Large clears (the gradients before each step: 440 MB for BERT-Base) on every thread: one
 * thread's memset reaches a fraction of the memory bandwidth */
#define ZERO_BLOCK ((size_t)1 << 20)
static void zero_blocks(void *ctx, size_t begin, size_t end) {
    memset((char *)ctx + begin * ZERO_BLOCK, 0, (end - begin) * ZERO_BLOCK);
}
static void cpu_zero(backend *be, void *p, size_t bytes) {
    size_t blocks = bytes / ZERO_BLOCK;
    if (blocks >= 4) parallel_for(be, blocks, 4, zero_blocks, p);
    else blocks = 0;
    if (bytes > blocks * ZERO_BLOCK) memset((char *)p + blocks * ZERO_BLOCK, 0, bytes - blocks * ZERO_BLOCK);
}
static void cpu_copy_rows(backend *be, float *dst, int dst_stride, const float *src, int src_stride,
                          int rows, int cols) {
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * dst_stride, src + (size_t)r * src_stride, (size_t)cols * sizeof(float));
}

// ----------------------------------------------------------------------------
// sgemm split across the pool: C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C, row-major

typedef struct gemm_job {
    int trans_a, trans_b, M, N, K, lda, ldb, ldc, split_rows, parts;
    float alpha, beta;
    const float *A, *B;
    const uint16_t *A16, *B16;   /* bf16 operands instead of A, B (bf16 mode) */
    const float *bias;           /* bf16 mode: added to every row of C */
    float *C;
    struct cpu_bf16 *bf16;
    int b_fixed;                 /* bf16 mode: B16 is a planned weight, which may be packed */
    const bf16_packed_b *packed_b;   /* set by gemm_pool where it is */
} gemm_job;

static void bf16_part(gemm_job *g, int lo, int M, int N, float *C);
static void bf16_pack_b(gemm_job *g);

static void gemm_part(void *ctx, size_t begin, size_t end) {
    gemm_job *g = ctx;
    for (size_t part = begin; part < end; part++) {
        int total = g->split_rows ? g->M : g->N;
        int lo = (int)((size_t)total * part / g->parts), hi = (int)((size_t)total * (part + 1) / g->parts);
        if (lo >= hi) continue;
        if (g->bf16) {
            bf16_part(g, lo, g->split_rows ? hi - lo : g->M, g->split_rows ? g->N : hi - lo,
                      g->C + (g->split_rows ? (size_t)lo * g->ldc : (size_t)lo));
            continue;
        }
        const float *A = g->A, *B = g->B;
        float *C = g->C;
        int M = g->M, N = g->N;
        if (g->split_rows) {
            A += g->trans_a ? (size_t)lo : (size_t)lo * g->lda;
            C += (size_t)lo * g->ldc;
            M = hi - lo;
        } else {
            B += g->trans_b ? (size_t)lo * g->ldb : (size_t)lo;
            C += lo;
            N = hi - lo;
        }
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, M, N, g->K, g->alpha, A, g->lda, B,
                    g->ldb, g->beta, C, g->ldc);
    }
}

/* Run a product over the pool: the longer side split into a few blocks per thread (taken
 * dynamically), none thinner than 64 rows/columns; small products stay whole. */
static void gemm_pool(backend *be, gemm_job *g) {
    cpu_state *st = be->state;
    g->parts = 4 * st->threads;
    g->split_rows = g->M >= g->N || g->bf16;   /* bf16: whole rows keep every matrix dense (att_gemm16) */
    int side = g->split_rows ? g->M : g->N;
    if (side / 64 < g->parts) g->parts = side / 64;
    if ((double)g->M * g->N * g->K < 1e6 || g->parts < 2) g->parts = 1;
    if (g->bf16 && g->b_fixed) bf16_pack_b(g);
    parallel_for(be, (size_t)g->parts, 2, gemm_part, g);
}

static void sgemm_pool(backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_job g = { .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N, .K = K, .lda = lda,
                   .ldb = ldb, .ldc = ldc, .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C };
    gemm_pool(be, &g);
}

// ----------------------------------------------------------------------------
// linear layers

/* out = bias in every row (beta 1 for the product to add to), or beta 0 without a bias. */
static float bias_rows(float *out, const float *bias, int N, int OC) {
    if (!bias) return 0.0f;
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
    return 1.0f;
}

static void bf16_matmul_forward(backend *be, float *out, const float *inp, const float *weight,
                                const float *bias, int N, int IC, int OC, int gelu_input, uint16_t *keep);
static void bf16_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 int N, int IC, int OC, int accumulate_dinp, int gelu_input,
                                 const float *dout_pre, const uint16_t *kept);

static void cpu_matmul_forward(backend *be, float *out, const float *inp, const float *weight,
                               const float *bias, int N, int IC, int OC) {
    if (((cpu_state *)be->state)->bf16) {
        bf16_matmul_forward(be, out, inp, weight, bias, N, IC, OC, 0, NULL);
        return;
    }
    float beta = bias_rows(out, bias, N, OC);
    sgemm_pool(be, 0, 1, N, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
}

/* A column of n ones for bias gradients; grown once to the largest N seen, so only the first
 * backward of a shape allocates. NULL when out of memory (the caller then loops). */
static const float *ones_column(backend *be, size_t n) {
    cpu_state *st = be->state;
    if (st->ones_len < n) {
        float *grown = realloc(st->ones, n * sizeof(float));
        if (!grown) return NULL;
        st->ones = grown;
        for (size_t i = st->ones_len; i < n; i++) grown[i] = 1.0f;
        st->ones_len = n;
    }
    return st->ones;
}

/* dbias[OC] += column sums of dout[N, OC], in fp32 in every precision. */
static void bias_gradient(backend *be, float *dbias, const float *dout, int N, int OC) {
    const float *ones = ones_column(be, (size_t)N);
    if (ones) {
        /* dbias[1, OC] += ones[1, N] . dout[N, OC], split over OC */
        sgemm_pool(be, 0, 0, 1, OC, N, 1.0f, ones, N, dout, OC, 1.0f, dbias, OC);
    } else {   /* no memory for the ones column: the plain loop gives the same sums */
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) dbias[o] += dout[(size_t)n * OC + o];
    }
}

static void cpu_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias,
                                const float *dout, const float *inp, const float *weight,
                                int N, int IC, int OC, int accumulate_dinp) {
    if (((cpu_state *)be->state)->bf16) {
        bf16_matmul_backward(be, dinp, dweight, dbias, dout, inp, weight, N, IC, OC, accumulate_dinp, 0, NULL, NULL);
        return;
    }
    if (dinp)
        sgemm_pool(be, 0, 0, N, IC, OC, 1.0f, dout, OC, weight, IC, accumulate_dinp ? 1.0f : 0.0f, dinp, IC);
    sgemm_pool(be, 1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias) bias_gradient(be, dbias, dout, N, OC);
}

// ----------------------------------------------------------------------------
// embeddings

static void cpu_embedding_forward(backend *be, float *out, const int32_t *input_ids,
                                  const int32_t *token_type_ids, const float *wte, const float *wpe,
                                  const float *wtt, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t n = (size_t)b * T + t;
            const float *w = wte + (size_t)input_ids[n] * C;
            const float *p = wpe + (size_t)t * C;
            const float *s = wtt + (size_t)token_type_ids[n] * C;
            float *o = out + n * C;
            for (int c = 0; c < C; c++) o[c] = w[c] + p[c] + s[c];
        }
}

static void cpu_embedding_backward(backend *be, float *dwte, float *dwpe, float *dwtt,
                                   uint8_t *wte_touched, const float *dout,
                                   const int32_t *input_ids, const int32_t *token_type_ids,
                                   int B, int T, int C, int padding_idx) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t n = (size_t)b * T + t;
            const float *d = dout + n * C;
            float *p = dwpe + (size_t)t * C;
            float *s = dwtt + (size_t)token_type_ids[n] * C;
            for (int c = 0; c < C; c++) { p[c] += d[c]; s[c] += d[c]; }
            if (input_ids[n] == padding_idx) continue;
            float *w = dwte + (size_t)input_ids[n] * C;
            wte_touched[input_ids[n]] = 1;
            for (int c = 0; c < C; c++) w[c] += d[c];
        }
}

static void cpu_embedding_zero_grad(backend *be, float *dwte, uint8_t *wte_touched, int V, int C) {
    for (int v = 0; v < V; v++)
        if (wte_touched[v]) {
            memset(dwte + (size_t)v * C, 0, (size_t)C * sizeof(float));
            wte_touched[v] = 0;
        }
}

// ----------------------------------------------------------------------------
// residual + LayerNorm

typedef struct ln_job {
    float *out, *sum, *mean, *rstd, *dx, *dresidual, *dweight, *dbias;
    const float *x, *residual, *weight, *bias, *dout, *csum, *cmean, *crstd;
    int C;
    float eps, p;
    uint64_t key;
    float *partials;             /* [blocks][2][C]: dweight, dbias of each block of rows */
    size_t grain;                /* rows per block */
} ln_job;

static void ln_forward_rows(void *ctx, size_t begin, size_t end) {
    ln_job *j = ctx;
    int C = j->C;
    float p = j->p, keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    uint64_t key = j->key;
    uint32_t threshold = dropout_threshold(p);
    for (size_t n = begin; n < end; n++) {
        const float *x = j->x + n * C;
        float *s = j->sum + n * C;
        if (j->residual) {
            const float *r = j->residual + n * C;
            if (p > 0) {
                for (int c = 0; c < C; c++)
                    s[c] = r[c] + x[c] * dropout_factor(key, n * C + c, threshold, keep_scale);
            } else {
                for (int c = 0; c < C; c++) s[c] = r[c] + x[c];
            }
        } else if (s != x) {
            memcpy(s, x, (size_t)C * sizeof(float));
        }
        float m = lane_sum(s, C) / C;
        float var = lane_sqdev(s, m, C) / C;
        float rs = 1.0f / sqrtf(var + j->eps);
        float *o = j->out + n * C;
        for (int c = 0; c < C; c++) o[c] = (s[c] - m) * rs * j->weight[c] + j->bias[c];
        j->mean[n] = m;
        j->rstd[n] = rs;
    }
}

static void cpu_add_layernorm_forward(backend *be, float *out, float *sum, float *mean, float *rstd,
                                      const float *x, const float *residual, const float *weight,
                                      const float *bias, int N, int C, float eps,
                                      float dropout_p, uint64_t dropout_key) {
    ln_job j = { .out = out, .sum = sum, .mean = mean, .rstd = rstd, .x = x, .residual = residual,
                 .weight = weight, .bias = bias, .C = C, .eps = eps, .p = dropout_p, .key = dropout_key };
    parallel_for(be, (size_t)N, 64, ln_forward_rows, &j);
}

#define LN_MAX_C 8192

static void ln_backward_rows(void *ctx, size_t begin, size_t end) {
    ln_job *j = ctx;
    int C = j->C;
    float dw_local[LN_MAX_C], db_local[LN_MAX_C];
    memset(dw_local, 0, (size_t)C * sizeof(float));
    memset(db_local, 0, (size_t)C * sizeof(float));
    float p = j->p, keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    uint64_t key = j->key;
    uint32_t threshold = dropout_threshold(p);
    for (size_t n = begin; n < end; n++) {
        const float *s = j->csum + n * C;
        const float *d = j->dout + n * C;
        float m = j->cmean[n], rs = j->crstd[n];
        float acc_mean[SUM_LANES] = { 0 }, acc_xhat[SUM_LANES] = { 0 };
        for (int c0 = 0; c0 < C; c0 += SUM_LANES) {
            int lanes = C - c0 < SUM_LANES ? C - c0 : SUM_LANES;
            for (int l = 0; l < lanes; l++) {
                int c = c0 + l;
                float xhat = (s[c] - m) * rs;
                float dnorm = d[c] * j->weight[c];
                acc_mean[l] += dnorm;
                acc_xhat[l] += dnorm * xhat;
                db_local[c] += d[c];
                dw_local[c] += d[c] * xhat;
            }
        }
        float dnorm_mean = lanes_total(acc_mean) / C;
        float dnorm_xhat_mean = lanes_total(acc_xhat) / C;
        float *dx = j->dx + n * C;
        float *dr = j->dresidual ? j->dresidual + n * C : NULL;
        for (int c = 0; c < C; c++) {
            float xhat = (s[c] - m) * rs;
            float dsum = (d[c] * j->weight[c] - dnorm_mean - xhat * dnorm_xhat_mean) * rs;
            if (dr) dr[c] = dsum;
            dx[c] = p > 0 ? dsum * dropout_factor(key, n * C + c, threshold, keep_scale) : dsum;
        }
    }
    float *part = j->partials + (begin / j->grain) * 2 * (size_t)C;
    memcpy(part, dw_local, (size_t)C * sizeof(float));
    memcpy(part + C, db_local, (size_t)C * sizeof(float));
}

static void cpu_add_layernorm_backward(backend *be, float *dx, float *dresidual, float *dweight,
                                       float *dbias, const float *dout, const float *sum,
                                       const float *mean, const float *rstd, const float *weight,
                                       int N, int C, float dropout_p, uint64_t dropout_key) {
    size_t grain = block_size(be->state, (size_t)N, 64);
    size_t blocks = ((size_t)N + grain - 1) / grain;
    float *partials = partials_scratch(be, blocks * 2 * (size_t)C * sizeof(float));
    if (!partials) {   /* no scratch: one block, whose partial fits the smallest request */
        grain = (size_t)N;
        blocks = 1;
        partials = partials_scratch(be, 2 * (size_t)C * sizeof(float));
    }
    ln_job j = { .partials = partials, .grain = grain, .dx = dx, .dresidual = dresidual,
                 .dout = dout, .csum = sum, .cmean = mean, .crstd = rstd, .weight = weight, .C = C,
                 .p = dropout_p, .key = dropout_key };
    if (partials) {
        parallel_for_grain(be, (size_t)N, grain, ln_backward_rows, &j);
        for (size_t b = 0; b < blocks; b++)   /* block order: the same sum on every run */
            for (int c = 0; c < C; c++) {
                dweight[c] += partials[b * 2 * C + c];
                dbias[c] += partials[b * 2 * C + C + c];
            }
        return;
    }
    /* not even 2C floats to spare: partial sums on the stack, rows in one pass */
    float stack_partials[2 * LN_MAX_C];
    j.partials = stack_partials;
    ln_backward_rows(&j, 0, (size_t)N);
    for (int c = 0; c < C; c++) {
        dweight[c] += stack_partials[c];
        dbias[c] += stack_partials[C + c];
    }
}

// ----------------------------------------------------------------------------
// element-wise

typedef struct ew_job {
    float *out;
    const float *a, *b;
    float p;
    uint64_t key;
} ew_job;

#define EW_SERIAL_BELOW 32768

/* GELU with the exact erf, as torch's default */
static inline float gelu_exact(float x) { return 0.5f * x * (1.0f + fast_erff(x * 0.70710678118654752f)); }

/* Kernels copy the job's pointers into restrict locals: through the struct the compiler must
 * assume a store may change them, and gives up vectorising. */
static void gelu_fwd_range(void *ctx, size_t begin, size_t end) {
    ew_job *j = ctx;
    const float *restrict in = j->a;
    float *restrict out = j->out;
    for (size_t i = begin; i < end; i++) out[i] = gelu_exact(in[i]);
}
static void cpu_gelu_forward(backend *be, float *out, const float *inp, size_t n) {
    ew_job j = { .out = out, .a = inp };
    parallel_for(be, n, EW_SERIAL_BELOW, gelu_fwd_range, &j);
}

/* d GELU(x) / dx = cdf(x) + x pdf(x), with one exp: erf's exp(-z^2) at z = x / sqrt(2) is
 * exp(-x^2 / 2), the pdf's */
static inline float gelu_grad(float x) {
    float z = x * 0.70710678118654752f;
    float a = z < 0 ? -z : z;
    float e = fast_expf(-a * a);
    float cdf = 0.5f * (1.0f + erf_from_exp(z, a, e));
    return cdf + x * (e * 0.39894228040143268f);
}
static void gelu_bwd_range(void *ctx, size_t begin, size_t end) {
    ew_job *j = ctx;
    const float *in = j->a, *dout = j->b;   /* dinp may alias dout (in-place backward) */
    float *dinp = j->out;
    for (size_t i = begin; i < end; i++) dinp[i] = dout[i] * gelu_grad(in[i]);
}
static void cpu_gelu_backward(backend *be, float *dinp, const float *inp, const float *dout, size_t n) {
    ew_job j = { .out = dinp, .a = inp, .b = dout };
    parallel_for(be, n, EW_SERIAL_BELOW, gelu_bwd_range, &j);
}

static void cpu_tanh_forward(backend *be, float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = tanhf(inp[i]);
}
static void cpu_tanh_backward(backend *be, float *dinp, const float *out, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * (1.0f - out[i] * out[i]);
}

static void dropout_range(void *ctx, size_t begin, size_t end) {
    ew_job *j = ctx;
    float keep_scale = 1.0f / (1.0f - j->p), p = j->p;
    uint32_t threshold = dropout_threshold(p);
    uint64_t key = j->key;
    const float *in = j->a;   /* may alias out (in place) */
    float *out = j->out;
    for (size_t i = begin; i < end; i++) out[i] = in[i] * dropout_factor(key, i, threshold, keep_scale);
}
static void cpu_dropout(backend *be, float *out, const float *inp, size_t n, float p, uint64_t key) {
    if (p <= 0) {
        if (out != inp) memmove(out, inp, n * sizeof(float));
        return;
    }
    ew_job j = { .out = out, .a = inp, .p = p, .key = key };
    parallel_for(be, n, EW_SERIAL_BELOW, dropout_range, &j);
}

// ----------------------------------------------------------------------------
// attention

typedef struct att_job {
    float *ctx, *probs, *probs_dropped, *dqkv, *scratch;
    const float *qkv, *dctx, *cprobs;
    const int32_t *mask;
    int T, Tq, C, NH;
    float p;
    uint64_t key;
    /* bf16: operand copies, pair16_len per block of `grain` pairs; kept (attention_forward_keep):
     * each pair's q, k, v, [T, D] each, made by the forward and read by the backward */
    struct cpu_bf16 *bf16;
    uint16_t *pairs16, *kept;
    size_t pair16_len, grain;
} att_job;

/* Largest of n floats. Scores are finite (FLT_MAX masks, no infinities), which lets this one
 * reduction vectorise; the rest of the file keeps strict IEEE semantics. */
FINITE_MATH_FUNCTION
static float row_max(const float *x, int n) {
    float maxv = -FLT_MAX;
    for (int k = 0; k < n; k++) maxv = x[k] > maxv ? x[k] : maxv;
    return maxv;
}

/* Softmax of one (b, h) block of scores [Tq, klen] (row stride T) times `scale` in place, with the
 * additive padding mask; columns klen .. T-1 (keys past the last real one) are set to 0. */
static void softmax_block(float *S, const int32_t *mask, int Tq, int klen, int T, float scale) {
    for (int q = 0; q < Tq; q++) {
        float *x = S + (size_t)q * T;
        for (int k = 0; k < klen; k++) x[k] = mask[k] ? x[k] * scale : x[k] * scale + -FLT_MAX;
        float maxv = row_max(x, klen);
        float acc[SUM_LANES] = { 0 };
        for (int k0 = 0; k0 < klen; k0 += SUM_LANES) {
            int lanes = klen - k0 < SUM_LANES ? klen - k0 : SUM_LANES;
            for (int l = 0; l < lanes; l++) { x[k0 + l] = fast_expf(x[k0 + l] - maxv); acc[l] += x[k0 + l]; }
        }
        float inv = 1.0f / lanes_total(acc);
        for (int k = 0; k < klen; k++) x[k] *= inv;
        if (klen < T) memset(x + klen, 0, (size_t)(T - klen) * sizeof(float));
    }
}

/* Keys up to the last unmasked one; all masked means all T (HF then spreads attention evenly). */
static int key_length(const int32_t *mask, int T) {
    int last = T - 1;
    while (last >= 0 && !mask[last]) last--;
    return last < 0 ? T : last + 1;
}

/* Zero `rows` rows of D floats with row stride `stride`. */
static void zero_rows(float *x, int rows, int stride, int D) {
    for (int r = 0; r < rows; r++) memset(x + (size_t)r * stride, 0, (size_t)D * sizeof(float));
}

static void dropout_block(float *restrict out, const float *restrict in, size_t n, size_t first_index,
                          float p, uint64_t key) {
    float keep_scale = 1.0f / (1.0f - p);
    uint32_t threshold = dropout_threshold(p);
    for (size_t i = 0; i < n; i++) out[i] = in[i] * dropout_factor(key, first_index + i, threshold, keep_scale);
}

/* Softmax of the scores P of pair `pair` (sequence b) in place, then the probabilities the
 * context is made from: P itself, or its dropped copy in probs_dropped. */
static const float *softmax_dropout(const att_job *j, float *P, size_t b, size_t pair, int klen) {
    int T = j->T, Tq = j->Tq;
    size_t block = (size_t)Tq * T;
    softmax_block(P, j->mask + b * T, Tq, klen, T, 1.0f);   /* the product applied the scale */
    if (j->p <= 0) return P;
    float *dropped = j->probs_dropped + pair * block;
    for (int r = 0; r < Tq; r++)
        dropout_block(dropped + (size_t)r * T, P + (size_t)r * T, (size_t)klen, pair * block + (size_t)r * T, j->p,
                      j->key);
    return dropped;
}

/* Tasks are (b, h) pairs; each runs its two products, softmax and dropout back to back, on the
 * keys up to the last real one (the others have probability 0 exactly). Dropout indices are
 * positions in the full [Tq, T] block, so skipping keys never changes a mask. */
static void attention_forward_pairs(void *ctx, size_t begin, size_t end) {
    att_job *j = ctx;
    int T = j->T, Tq = j->Tq, C = j->C, NH = j->NH, D = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)D);
    size_t block = (size_t)Tq * T;
    for (size_t pair = begin; pair < end; pair++) {
        size_t b = pair / NH, h = pair % NH;
        int klen = key_length(j->mask + b * T, T);
        const float *q = j->qkv + b * T * C3 + h * D;
        float *P = j->probs + pair * block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, klen, D, scale, q, C3, q + C, C3, 0.0f, P, T);
        const float *Pd = softmax_dropout(j, P, b, pair, klen);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, D, klen, 1.0f, Pd, T, q + 2 * C, C3, 0.0f,
                    j->ctx + b * T * C + h * D, C);
    }
}

static void attention_forward_pairs_bf16(void *ctx, size_t begin, size_t end);
static void attention_backward_pairs_bf16(void *ctx, size_t begin, size_t end);
static void bf16_attention(backend *be, att_job *j, size_t pairs, pool_fn fn);

static void cpu_attention_forward(backend *be, float *ctx, float *probs, float *probs_dropped,
                                  const float *qkv, const int32_t *attention_mask, int B, int T,
                                  int Tq, int C, int NH, float dropout_p, uint64_t dropout_key) {
    att_job j = { .ctx = ctx, .probs = probs, .probs_dropped = probs_dropped, .qkv = qkv,
                  .mask = attention_mask, .T = T, .Tq = Tq, .C = C, .NH = NH, .p = dropout_p,
                  .key = dropout_key };
    if (((cpu_state *)be->state)->bf16) {
        bf16_attention(be, &j, (size_t)B * NH, attention_forward_pairs_bf16);
        return;
    }
    parallel_for(be, (size_t)B * NH, 2, attention_forward_pairs, &j);
}

/* backend.h attention_forward_keep, in the table while bf16 products are on: every pair's bf16
 * q, k, v are rounded into kept, where attention_backward_kept reads them. */
static void cpu_attention_forward_keep(backend *be, float *ctx, float *probs, float *probs_dropped, float *kept,
                                       const float *qkv, const int32_t *attention_mask, int B, int T, int Tq, int C,
                                       int NH, float dropout_p, uint64_t dropout_key) {
    att_job j = { .ctx = ctx, .probs = probs, .probs_dropped = probs_dropped, .qkv = qkv,
                  .mask = attention_mask, .T = T, .Tq = Tq, .C = C, .NH = NH, .p = dropout_p,
                  .key = dropout_key, .kept = (uint16_t *)(void *)kept };
    bf16_attention(be, &j, (size_t)B * NH, attention_forward_pairs_bf16);
}

/* d(probabilities) -> d(scores) of one softmax row P_r, in place */
static void softmax_grad_row(float *restrict dr, const float *restrict Pr, int klen) {
    float dot = lane_dot(dr, Pr, klen);
    for (int k = 0; k < klen; k++) dr[k] = Pr[k] * (dr[k] - dot);
}

/* d(probabilities) [Tq, klen] (row stride T) in place -> d(scores): back through the dropout
 * of the block (first element index `first`) and the softmax of P. (The bf16 products use
 * softmax_dropout_backward_row, below.) */
static void softmax_backward_block(float *dS, const float *P, int Tq, int klen, int T, float p, uint64_t key,
                                   size_t first) {
    float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    uint32_t threshold = dropout_threshold(p);
    for (int r = 0; r < Tq; r++) {
        const float *Pr = P + (size_t)r * T;
        float *dr = dS + (size_t)r * T;
        if (p > 0)
            for (int k = 0; k < klen; k++)
                dr[k] *= dropout_factor(key, first + (size_t)r * T + k, threshold, keep_scale);
        softmax_grad_row(dr, Pr, klen);
    }
}

static void attention_backward_pairs(void *ctx, size_t begin, size_t end) {
    att_job *j = ctx;
    int T = j->T, Tq = j->Tq, C = j->C, NH = j->NH, D = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)D);
    float p = j->p;
    uint64_t key = j->key;
    size_t block = (size_t)Tq * T;
    for (size_t pair = begin; pair < end; pair++) {
        size_t b = pair / NH, h = pair % NH;
        int klen = key_length(j->mask + b * T, T);
        size_t off = b * T * C3 + h * D;
        const float *q = j->qkv + off, *P = j->cprobs + pair * block;
        const float *dctx = j->dctx + b * T * C + h * D;
        float *dq = j->dqkv + off, *dS = j->scratch + pair * block;
        /* dV = P_dropped^T dctx (the dropped probabilities rebuilt from the key) */
        const float *Pd = P;
        if (p > 0) {
            for (int r = 0; r < Tq; r++)
                dropout_block(dS + (size_t)r * T, P + (size_t)r * T, (size_t)klen, pair * block + (size_t)r * T,
                              p, key);
            Pd = dS;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, klen, D, Tq, 1.0f, Pd, T, dctx, C, 0.0f,
                    dq + 2 * C, C3);
        zero_rows(dq + 2 * C + (size_t)klen * C3, T - klen, C3, D);
        /* dP = dctx V^T, back through dropout and softmax into d(scores) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, klen, D, 1.0f, dctx, C, q + 2 * C, C3, 0.0f,
                    dS, T);
        softmax_backward_block(dS, P, Tq, klen, T, p, key, pair * block);
        /* scores = scale Q K^T: dQ = scale dS K, dK = scale dS^T Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, D, klen, scale, dS, T, q + C, C3, 0.0f, dq, C3);
        zero_rows(dq + (size_t)Tq * C3, T - Tq, C3, D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, klen, D, Tq, scale, dS, T, q, C3, 0.0f, dq + C, C3);
        zero_rows(dq + C + (size_t)klen * C3, T - klen, C3, D);
    }
}

static void cpu_attention_backward(backend *be, float *dqkv, float *scratch, const float *dctx,
                                   const float *probs, const float *qkv, const int32_t *attention_mask,
                                   int B, int T, int Tq, int C, int NH, float dropout_p,
                                   uint64_t dropout_key) {
    att_job j = { .dqkv = dqkv, .scratch = scratch, .dctx = dctx, .cprobs = probs, .qkv = qkv,
                  .mask = attention_mask, .T = T, .Tq = Tq, .C = C, .NH = NH, .p = dropout_p,
                  .key = dropout_key };
    if (((cpu_state *)be->state)->bf16) {
        bf16_attention(be, &j, (size_t)B * NH, attention_backward_pairs_bf16);
        return;
    }
    parallel_for(be, (size_t)B * NH, 2, attention_backward_pairs, &j);
}

static void cpu_attention_backward_kept(backend *be, float *dqkv, float *scratch, const float *dctx,
                                        const float *probs, const float *qkv, const float *kept,
                                        const int32_t *attention_mask, int B, int T, int Tq, int C, int NH,
                                        float dropout_p, uint64_t dropout_key) {
    att_job j = { .dqkv = dqkv, .scratch = scratch, .dctx = dctx, .cprobs = probs, .qkv = qkv,
                  .mask = attention_mask, .T = T, .Tq = Tq, .C = C, .NH = NH, .p = dropout_p,
                  .key = dropout_key, .kept = (uint16_t *)(uintptr_t)(const void *)kept };   /* read only */
    bf16_attention(be, &j, (size_t)B * NH, attention_backward_pairs_bf16);
}

// ----------------------------------------------------------------------------
// bf16 products (backend_cpu_set_bf16): the autocast recipe. The operands of every matrix
// product, linear layers and attention alike, are rounded to bf16 and multiplied with fp32
// accumulation into an fp32 result (bf16_gemm.h); every other op and every tensor the model
// keeps stay fp32. Weights in the planned range are rounded once after each change
// (plan_weights, weights_changed), activations at the product that reads them.

typedef struct cpu_bf16 {
    bf16_gemm_engine *engine;
    uint16_t *operands;          /* the activations of one linear product, grown once */
    size_t operands_len;
    uint16_t *weight_copy;       /* a weight outside the planned range, rounded per product */
    size_t weight_copy_len;
    uint16_t *planned16;         /* the planned weights, rounded */
    size_t planned16_len;
    int planned_fresh;           /* planned16 matches the weights */
    uint16_t *pairs16;           /* attention operands, per block of (b, h) pairs */
    size_t pairs16_len;
    int pack;                    /* planned weights packed for the products (BERTPIPE_BF16_PACK) */
    pthread_mutex_t mu;          /* first_error is written by pool threads */
    int failed;
    bp_err first_error;
} cpu_bf16;

/* Keep the first failure; check reports it (sticky, as a failed CUDA backend). */
static void bf16_record(cpu_bf16 *b, const bp_err *err) {
    pthread_mutex_lock(&b->mu);
    if (!b->failed) {
        b->failed = 1;
        b->first_error = *err;
    }
    pthread_mutex_unlock(&b->mu);
}

/* A bf16 buffer of at least n values, grown once to the largest need; NULL (failure recorded,
 * `out` of rows x cols filled with NaN) when out of memory. */
static uint16_t *bf16_buffer(cpu_bf16 *b, uint16_t **buf, size_t *len, size_t n, float *out, size_t rows,
                             size_t cols, size_t ld) {
    if (*len < n) {
        void *grown = NULL;
        if (posix_memalign(&grown, 64, n * sizeof(uint16_t) + 64) != 0) {
            bp_err err;
            bp_err_set(&err, "out of memory for %zu bf16 operand values (cpu backend)", n);
            bf16_record(b, &err);
            for (size_t r = 0; out && r < rows; r++)
                for (size_t c = 0; c < cols; c++) out[r * ld + c] = NAN;
            return NULL;
        }
        free(*buf);
        *buf = grown;
        *len = n;
    }
    return *buf;
}

/* Rounding for the products, one job for every form of it: rows of v rounded to bf16, with v
 * the source itself (ROUND_PLAIN), GELU(src) (ROUND_GELU: gelu_matmul_forward/backward) or
 * src * GELU'(pre) (ROUND_GELU_GRAD: gelu_backward_matmul_backward), and with partials the
 * column sums of v per block of `grain` rows (the bias gradient). The derived values pass
 * through a small buffer in cache, never through memory in fp32. */
enum { ROUND_PLAIN, ROUND_GELU, ROUND_GELU_GRAD };
typedef struct convert_job {
    uint16_t *dst;
    const float *src, *pre;
    int kind, cols;
    size_t grain;
    float *partials;   /* [blocks, cols]; NULL: no sums */
} convert_job;

#define CONVERT_CHUNK 512
static void convert_rows(void *ctx, size_t begin, size_t end) {
    convert_job *j = ctx;
    int cols = j->cols;
    if (j->kind == ROUND_PLAIN && !j->partials) {
        bf16_from_f32_rows(j->dst + begin * cols, cols, j->src + begin * cols, cols, (int)(end - begin), cols);
        return;
    }
    float *part = j->partials ? j->partials + begin / j->grain * (size_t)cols : NULL;
    if (part) memset(part, 0, (size_t)cols * sizeof(float));
    float vals[CONVERT_CHUNK];
    for (size_t r = begin; r < end; r++)
        for (int c0 = 0; c0 < cols; c0 += CONVERT_CHUNK) {
            int n = cols - c0 < CONVERT_CHUNK ? cols - c0 : CONVERT_CHUNK;
            const float *row = j->src + r * (size_t)cols + c0;
            if (j->kind == ROUND_GELU) {
                for (int c = 0; c < n; c++) vals[c] = gelu_exact(row[c]);
                row = vals;
            } else if (j->kind == ROUND_GELU_GRAD) {   /* as gelu_bwd_range computes it */
                const float *pre = j->pre + r * (size_t)cols + c0;
                for (int c = 0; c < n; c++) vals[c] = row[c] * gelu_grad(pre[c]);
                row = vals;
            }
            bf16_from_f32_rows(j->dst + r * (size_t)cols + c0, 0, row, 0, 1, n);
            if (part)
                for (int c = 0; c < n; c++) part[c0 + c] += row[c];
        }
}

/* dst = bf16(v) for dense [rows, cols], over the pool (no sums). */
static void bf16_convert_as(backend *be, uint16_t *dst, const float *src, int kind, size_t rows, int cols) {
    convert_job j = { .dst = dst, .src = src, .kind = kind, .cols = cols };
    parallel_for(be, rows, EW_SERIAL_BELOW / (size_t)cols + 1, convert_rows, &j);
}
static void bf16_convert(backend *be, uint16_t *dst, const float *src, size_t rows, int cols) {
    bf16_convert_as(be, dst, src, ROUND_PLAIN, rows, cols);
}

/* dst = bf16(v) [rows, cols] with v = src (pre NULL) or src * GELU'(pre), and dbias (when not
 * NULL) += the column sums of v, in one pass. The blocks are 64 rows whatever the threads, and
 * their partials are added in block order: the same sums on every run and thread count. */
#define CONVERT_SUM_ROWS 64
static void bf16_convert_sum(backend *be, uint16_t *dst, float *dbias, const float *src, const float *pre,
                             size_t rows, int cols) {
    size_t blocks = (rows + CONVERT_SUM_ROWS - 1) / CONVERT_SUM_ROWS;
    float *partials = dbias ? partials_scratch(be, blocks * (size_t)cols * sizeof(float)) : NULL;
    if (dbias && !partials) {
        if (!pre) {   /* no scratch for the partials: the two passes apart */
            bf16_convert(be, dst, src, rows, cols);
            bias_gradient(be, dbias, src, (int)rows, cols);
            return;
        }
        bp_err err;
        bp_err_set(&err, "out of memory for %zu partial bias sums (cpu backend, bf16)", blocks * (size_t)cols);
        bf16_record(((cpu_state *)be->state)->bf16, &err);
        for (int c = 0; c < cols; c++) dbias[c] = NAN;
        return;
    }
    convert_job j = { .dst = dst, .src = src, .pre = pre, .kind = pre ? ROUND_GELU_GRAD : ROUND_PLAIN, .cols = cols,
                      .grain = CONVERT_SUM_ROWS, .partials = partials };
    parallel_for_grain(be, rows, CONVERT_SUM_ROWS, convert_rows, &j);
    for (size_t b = 0; dbias && b < blocks; b++)
        for (int c = 0; c < cols; c++) dbias[c] += partials[b * (size_t)cols + c];
}

/* bf16 copy of weight [n]: from the planned copy (made again after a change; *planned = 1), else
 * rounded now (*planned = 0). */
static const uint16_t *bf16_weight(backend *be, const float *weight, size_t n, float *out, size_t rows, size_t cols,
                                   int *planned) {
    cpu_state *st = be->state;
    cpu_bf16 *b = st->bf16;
    uintptr_t w = (uintptr_t)weight, lo = (uintptr_t)st->planned, hi = lo + st->planned_n * sizeof(float);
    if (st->planned && w >= lo && w + n * sizeof(float) <= hi) {
        if (!b->planned_fresh || b->planned16_len < st->planned_n) {
            if (!bf16_buffer(b, &b->planned16, &b->planned16_len, st->planned_n, out, rows, cols, cols)) return NULL;
            size_t row = 4096, full = st->planned_n / row, tail = st->planned_n - full * row;
            bf16_convert(be, b->planned16, st->planned, full, (int)row);
            if (tail) bf16_from_f32_rows(b->planned16 + full * row, 0, st->planned + full * row, 0, 1, (int)tail);
            b->planned_fresh = 1;
            bf16_gemm_packed_stale(b->engine);   /* their packed copies follow */
        }
        *planned = 1;
        return b->planned16 + (weight - st->planned);
    }
    *planned = 0;
    uint16_t *copy = bf16_buffer(b, &b->weight_copy, &b->weight_copy_len, n, out, rows, cols, cols);
    if (copy) bf16_convert(be, copy, weight, 1, (int)n);
    return copy;
}

/* One block of a split product (gemm_part): rows or columns from `lo`, C already offset. */
static void bf16_part(gemm_job *g, int lo, int M, int N, float *C) {
    const uint16_t *A = g->A16, *B = g->B16;
    if (g->split_rows) A += g->trans_a ? (size_t)lo : (size_t)lo * g->lda;
    else B += g->trans_b ? (size_t)lo * g->ldb : (size_t)lo;
    bp_err err;
    if (bf16_gemm_b_packed(g->bf16->engine, g->packed_b, g->trans_a, g->trans_b, M, N, g->K, g->alpha, A, g->lda, B,
                           g->ldb, g->bias, g->beta, C, g->ldc, &err) != 0)
        bf16_record(g->bf16, &err);
}

/* A planned weight's packed copy for the split product g (each block of about M / parts rows),
 * when packing is on: made once after each change of the weights (bf16_gemm.h says why). Only
 * the rows are split in bf16 (gemm_pool), so every block reads all of B. */
static void bf16_pack_b(gemm_job *g) {
    if (g->bf16->pack && g->split_rows)
        g->packed_b = bf16_gemm_pack_b(g->bf16->engine, g->trans_b, g->M / g->parts, g->N, g->K, g->B16, g->ldb);
}

/* keep not NULL: the rounded input goes there (N * IC values) rather than to scratch, for the
 * backward to reuse (gelu_matmul_forward's act) */
static void bf16_matmul_forward(backend *be, float *out, const float *inp, const float *weight,
                                const float *bias, int N, int IC, int OC, int gelu_input, uint16_t *keep) {
    cpu_bf16 *b = ((cpu_state *)be->state)->bf16;
    int planned;
    const uint16_t *w16 = bf16_weight(be, weight, (size_t)OC * IC, out, (size_t)N, (size_t)OC, &planned);
    uint16_t *x16 = !w16 ? NULL : keep ? keep : bf16_buffer(b, &b->operands, &b->operands_len, (size_t)N * IC, out,
                                                              (size_t)N, (size_t)OC, (size_t)OC);
    if (!x16) return;
    bf16_convert_as(be, x16, inp, gelu_input ? ROUND_GELU : ROUND_PLAIN, (size_t)N, IC);
    gemm_job g = { .trans_a = 0, .trans_b = 1, .M = N, .N = OC, .K = IC, .lda = IC, .ldb = IC, .ldc = OC,
                   .alpha = 1.0f, .beta = 0.0f, .A16 = x16, .B16 = w16, .bias = bias, .C = out, .bf16 = b,
                   .b_fixed = planned };
    gemm_pool(be, &g);
}

/* dout_pre not NULL: the gradient of the output is dout * GELU'(dout_pre), made in the rounding
 * pass (gelu_backward_matmul_backward). kept not NULL: the input as the forward rounded it
 * (bf16_matmul_forward's keep), used as it is. */
static void bf16_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 int N, int IC, int OC, int accumulate_dinp, int gelu_input,
                                 const float *dout_pre, const uint16_t *kept) {
    cpu_bf16 *b = ((cpu_state *)be->state)->bf16;
    uint16_t *d16 = bf16_buffer(b, &b->operands, &b->operands_len, (size_t)N * (OC + (kept ? 0 : IC)), dweight,
                                (size_t)OC, (size_t)IC, (size_t)IC);
    if (!d16) return;
    if (dbias || dout_pre) bf16_convert_sum(be, d16, dbias, dout, dout_pre, (size_t)N, OC);
    else bf16_convert(be, d16, dout, (size_t)N, OC);
    const uint16_t *x16 = kept;
    if (!kept) {
        uint16_t *made = d16 + (size_t)N * OC;
        bf16_convert_as(be, made, inp, gelu_input ? ROUND_GELU : ROUND_PLAIN, (size_t)N, IC);
        x16 = made;
    }
    if (dinp) {
        int planned;
        const uint16_t *w16 = bf16_weight(be, weight, (size_t)OC * IC, dinp, (size_t)N, (size_t)IC, &planned);
        if (!w16) return;
        gemm_job g = { .trans_a = 0, .trans_b = 0, .M = N, .N = IC, .K = OC, .lda = OC, .ldb = IC, .ldc = IC,
                       .alpha = 1.0f, .beta = accumulate_dinp ? 1.0f : 0.0f, .A16 = d16, .B16 = w16, .C = dinp,
                       .bf16 = b, .b_fixed = planned };
        gemm_pool(be, &g);
    }
    gemm_job g = { .trans_a = 1, .trans_b = 0, .M = OC, .N = IC, .K = N, .lda = OC, .ldb = IC, .ldc = IC,
                   .alpha = 1.0f, .beta = 1.0f, .A16 = d16, .B16 = x16, .C = dweight, .bf16 = b };
    gemm_pool(be, &g);
}

/* backend.h gelu_matmul_forward/backward, in the table while bf16 products are on. With act, the
 * forward's bf16 GELU(pre) is kept there and the backward's product reads it: no second GELU
 * and rounding pass over [N, IC]. */
static void cpu_gelu_matmul_forward(backend *be, float *out, float *act, const float *pre, const float *weight,
                                    const float *bias, int N, int IC, int OC) {
    bf16_matmul_forward(be, out, pre, weight, bias, N, IC, OC, 1, (uint16_t *)(void *)act);
}
static void cpu_gelu_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *pre, float *act, const float *weight, int N, int IC, int OC,
                                     int accumulate_dinp) {
    bf16_matmul_backward(be, dinp, dweight, dbias, dout, pre, weight, N, IC, OC, accumulate_dinp, 1, NULL,
                         (const uint16_t *)(void *)act);
}
static void cpu_gelu_backward_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias, float *dact,
                                              const float *pre, const float *inp, const float *kept,
                                              const float *weight, int N, int IC, int OC, int accumulate_dinp) {
    bf16_matmul_backward(be, dinp, dweight, dbias, dact, inp, weight, N, IC, OC, accumulate_dinp, 0, pre,
                         (const uint16_t *)(const void *)kept);
}

/* backend.h matmul_forward_keep / matmul_backward_kept, in the table while bf16 products are on:
 * the forward rounds its input into kept, where the backward's weight-gradient product reads it. */
static void cpu_matmul_forward_keep(backend *be, float *out, float *kept, const float *inp, const float *weight,
                                    const float *bias, int N, int IC, int OC) {
    bf16_matmul_forward(be, out, inp, weight, bias, N, IC, OC, 0, (uint16_t *)(void *)kept);
}
static void cpu_matmul_backward_kept(backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *kept, const float *weight, int N, int IC, int OC,
                                     int accumulate_dinp) {
    bf16_matmul_backward(be, dinp, dweight, dbias, dout, inp, weight, N, IC, OC, accumulate_dinp, 0, NULL,
                         (const uint16_t *)(const void *)kept);
}

/* Attention products of one (b, h) pair read bf16 copies of its slices, made per pair:
 * q [Tq, D], k and v [klen, D], dctx [Tq, D] (row stride D) and one [Tq, T] block of
 * probabilities or their gradient. */
typedef struct pair_operands {
    uint16_t *q, *k, *v, *dctx, *block, *block2;   /* block2: the backward's second [Tq, T] */
    float *result;               /* a product's result before it goes to its strided place:
                                    [T, D] or [Tq, T] floats */
} pair_operands;

static size_t pair_operands_len(int T, int Tq, int D) {
    size_t halves = (size_t)2 * Tq * D + (size_t)2 * T * D + (size_t)2 * Tq * T;
    size_t result = (size_t)T * D > (size_t)Tq * T ? (size_t)T * D : (size_t)Tq * T;
    return (halves + 31) / 32 * 32 + 2 * result;
}

static pair_operands pair_operands_of(const att_job *j, size_t begin) {
    int D = j->C / j->NH;
    pair_operands o;
    o.q = j->pairs16 + begin / j->grain * j->pair16_len;
    o.k = o.q + (size_t)j->Tq * D;
    o.v = o.k + (size_t)j->T * D;
    o.dctx = o.v + (size_t)j->T * D;
    o.block = o.dctx + (size_t)j->Tq * D;
    o.block2 = o.block + (size_t)j->Tq * j->T;
    size_t halves = (size_t)2 * j->Tq * D + (size_t)2 * j->T * D + (size_t)2 * j->Tq * j->T;
    o.result = (float *)(void *)(o.q + (halves + 31) / 32 * 32);
    return o;
}

/* Keys of a bf16 pair's products: klen rounded up to 16 (at most T), so that the products have
 * T / 16 shapes instead of T (each shape is a oneDNN primitive to make). The bf16 copies are
 * zero past klen, so the extra keys add exact zeros. */
static int padded_keys(int klen, int T) {
    int padded = (klen + 15) / 16 * 16;
    return padded < T ? padded : T;
}

/* bf16 copy of one row of `used` values, zero up to `width`. */
static void round_row_padded(uint16_t *dst, const float *x, int used, int width) {
    bf16_from_f32_rows(dst, 0, x, 0, 1, used);
    if (width > used) memset(dst + used, 0, (size_t)(width - used) * sizeof(uint16_t));
}

/* One row of probabilities as the context product reads them: dropped (p > 0, element indices
 * from `first`) and rounded, zero up to `width`. The dropped values pass through a small buffer
 * in cache, not a [Tq, T] block in memory. also (NULL: none) is a row multiplied by the same
 * dropout factors in the same pass, so that a caller needing the mask twice draws it once. */
#define DROPPED_CHUNK 512
static void round_dropped_row(uint16_t *dst, const float *x, int klen, int width, float p, uint64_t key,
                              size_t first, float *restrict also) {
    if (p <= 0) {
        round_row_padded(dst, x, klen, width);
        return;
    }
    float keep_scale = 1.0f / (1.0f - p), dropped[DROPPED_CHUNK];
    uint32_t threshold = dropout_threshold(p);
    for (int k0 = 0; k0 < klen; k0 += DROPPED_CHUNK) {
        int n = klen - k0 < DROPPED_CHUNK ? klen - k0 : DROPPED_CHUNK;
        if (!also) {
            dropout_block(dropped, x + k0, (size_t)n, first + (size_t)k0, p, key);
        } else {
            for (int c = 0; c < n; c++) {   /* dropout_block, with also scaled by the same factors */
                float f = dropout_factor(key, first + (size_t)(k0 + c), threshold, keep_scale);
                dropped[c] = x[k0 + c] * f;
                also[k0 + c] *= f;
            }
        }
        bf16_from_f32_rows(dst + k0, 0, dropped, 0, 1, n);
    }
    if (width > klen) memset(dst + klen, 0, (size_t)(width - klen) * sizeof(uint16_t));
}

/* The bf16 backward of one row through dropout and softmax, the mask drawn once for both of
 * its uses (a draw costs more than the rest of the row's work): the dropped probabilities,
 * rounded into pd16 (the dV product's operand), and d(scores) from d(dropped probabilities) dr
 * in place, rounded into ds16. Both zero from klen up to width. */
static void softmax_dropout_backward_row(float *dr, const float *Pr, int klen, int width, float p, uint64_t key,
                                         size_t first, uint16_t *pd16, uint16_t *ds16) {
    round_dropped_row(pd16, Pr, klen, width, p, key, first, dr);
    softmax_grad_row(dr, Pr, klen);
    round_row_padded(ds16, dr, klen, width);
}

/* C = alpha op(A) op(B) of one pair. oneDNN runs its AMX/brgemm kernels only when every matrix
 * is dense, so a result whose rows are strided (a head's columns of ctx or dqkv) is made in
 * o->result and copied to its place. */
static void att_gemm16(const att_job *j, const pair_operands *o, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb, float *C, int ldc) {
    bp_err err;
    float *dense = ldc == N ? C : o->result;
    if (bf16_gemm(j->bf16->engine, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, NULL, 0.0f, dense, N, &err) != 0)
        bf16_record(j->bf16, &err);
    if (dense == C) return;
    if (N == 64) {   /* the head size of every BERT: a copy of constant size is inlined, not a call per row */
        for (int r = 0; r < M; r++) memcpy(C + (size_t)r * ldc, dense + (size_t)r * 64, 64 * sizeof(float));
        return;
    }
    for (int r = 0; r < M; r++) memcpy(C + (size_t)r * ldc, dense + (size_t)r * N, (size_t)N * sizeof(float));
}

/* Point o's q, k, v at pair's block of j->kept: [T, D] each (q's first Tq rows used). */
static void kept_qkv(const att_job *j, pair_operands *o, size_t pair) {
    size_t TD = (size_t)j->T * (j->C / j->NH);
    o->q = j->kept + pair * 3 * TD;
    o->k = o->q + TD;
    o->v = o->k + TD;
}

/* Round pair's q [Tq, D], k and v [klen, D] out of its qkv columns (q: its first query), k and v
 * zero up to kpad keys: into j->kept when the forward keeps them, else o's own. */
static void round_qkv(const att_job *j, pair_operands *o, size_t pair, const float *q, int klen, int kpad) {
    int C = j->C, D = C / j->NH, C3 = 3 * C;
    if (j->kept) kept_qkv(j, o, pair);
    bf16_from_f32_rows(o->q, D, q, C3, j->Tq, D);
    bf16_from_f32_rows(o->k, D, q + C, C3, klen, D);
    bf16_from_f32_rows(o->v, D, q + 2 * C, C3, klen, D);
    memset(o->k + (size_t)klen * D, 0, (size_t)(kpad - klen) * D * sizeof(uint16_t));
    memset(o->v + (size_t)klen * D, 0, (size_t)(kpad - klen) * D * sizeof(uint16_t));
}

/* The fp32 pair loops (attention_forward_pairs, attention_backward_pairs) with bf16 products. */
static void attention_forward_pairs_bf16(void *ctx, size_t begin, size_t end) {
    att_job *j = ctx;
    int T = j->T, Tq = j->Tq, C = j->C, NH = j->NH, D = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)D);
    size_t block = (size_t)Tq * T;
    pair_operands o = pair_operands_of(j, begin);
    for (size_t pair = begin; pair < end; pair++) {
        size_t b = pair / NH, h = pair % NH;
        int klen = key_length(j->mask + b * T, T), kpad = padded_keys(klen, T);
        const float *q = j->qkv + b * T * C3 + h * D;
        float *P = j->probs + pair * block;
        round_qkv(j, &o, pair, q, klen, kpad);
        /* Q K^T unscaled, the scale applied by the softmax: oneDNN's output scale made this product
         * 1.3-1.4x slower than dctx V^T, the same shape without it (D = 64: the scale is 1/8, exact either way) */
        att_gemm16(j, &o, 0, 1, Tq, kpad, D, 1.0f, o.q, D, o.k, D, P, T);
        /* softmax in place (kept for the backward), then each row dropped and rounded at once */
        for (int r = 0; r < Tq; r++) {
            softmax_block(P + (size_t)r * T, j->mask + b * T, 1, klen, T, scale);
            round_dropped_row(o.block + (size_t)r * kpad, P + (size_t)r * T, klen, kpad, j->p, j->key,
                              pair * block + (size_t)r * T, NULL);
        }
        att_gemm16(j, &o, 0, 0, Tq, D, kpad, 1.0f, o.block, kpad, o.v, D, j->ctx + b * T * C + h * D, C);
    }
}

static void attention_backward_pairs_bf16(void *ctx, size_t begin, size_t end) {
    att_job *j = ctx;
    int T = j->T, Tq = j->Tq, C = j->C, NH = j->NH, D = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)D);
    float p = j->p;
    size_t block = (size_t)Tq * T;
    pair_operands o = pair_operands_of(j, begin);
    for (size_t pair = begin; pair < end; pair++) {
        size_t b = pair / NH, h = pair % NH;
        int klen = key_length(j->mask + b * T, T), kpad = padded_keys(klen, T);
        size_t off = b * T * C3 + h * D;
        const float *q = j->qkv + off, *P = j->cprobs + pair * block;
        float *dq = j->dqkv + off, *dS = j->scratch + pair * block;
        if (j->kept) kept_qkv(j, &o, pair);   /* as the forward rounded them */
        else round_qkv(j, &o, pair, q, klen, kpad);
        bf16_from_f32_rows(o.dctx, D, j->dctx + b * T * C + h * D, C, Tq, D);
        /* dP = dctx V^T first, then per row the mask once: the dropped probabilities (rounded, for
         * dV) and d(scores) (back through dropout and softmax, rounded, for dQ and dK) */
        att_gemm16(j, &o, 0, 1, Tq, kpad, D, 1.0f, o.dctx, D, o.v, D, dS, T);
        for (int r = 0; r < Tq; r++)
            softmax_dropout_backward_row(dS + (size_t)r * T, P + (size_t)r * T, klen, kpad, p, j->key,
                                         pair * block + (size_t)r * T, o.block2 + (size_t)r * kpad,
                                         o.block + (size_t)r * kpad);
        /* dV = P_dropped^T dctx; the padded keys' rows of dV, dK come out zero and are zeroed
         * again with the masked ones */
        att_gemm16(j, &o, 1, 0, kpad, D, Tq, 1.0f, o.block2, kpad, o.dctx, D, dq + 2 * C, C3);
        zero_rows(dq + 2 * C + (size_t)klen * C3, T - klen, C3, D);
        /* scores = scale Q K^T: dQ = scale dS K, dK = scale dS^T Q */
        att_gemm16(j, &o, 0, 0, Tq, D, kpad, scale, o.block, kpad, o.k, D, dq, C3);
        zero_rows(dq + (size_t)Tq * C3, T - Tq, C3, D);
        att_gemm16(j, &o, 1, 0, kpad, D, Tq, scale, o.block, kpad, o.q, D, dq + C, C3);
        zero_rows(dq + C + (size_t)klen * C3, T - klen, C3, D);
    }
}

/* Run one of the bf16 pair loops over `pairs` (b, h) pairs, each block of pairs with operand
 * space of its own. */
static void bf16_attention(backend *be, att_job *j, size_t pairs, pool_fn fn) {
    cpu_bf16 *b = ((cpu_state *)be->state)->bf16;
    j->bf16 = b;
    j->grain = block_size(be->state, pairs, 2);
    j->pair16_len = pair_operands_len(j->T, j->Tq, j->C / j->NH);
    size_t blocks = (pairs + j->grain - 1) / j->grain;
    float *out = j->ctx ? j->ctx : j->dqkv;   /* NaN there when no operand space */
    int out_cols = j->ctx ? j->C : 3 * j->C;
    j->pairs16 = bf16_buffer(b, &b->pairs16, &b->pairs16_len, blocks * j->pair16_len, out,
                             pairs / j->NH * (size_t)j->T, (size_t)out_cols, (size_t)out_cols);
    if (!j->pairs16) return;
    parallel_for_grain(be, pairs, j->grain, fn, j);
}

// ----------------------------------------------------------------------------
// losses

static void cpu_cross_entropy(backend *be, float *loss, float *dlogits, const float *logits,
                              const int32_t *targets, int rows, int V, int row_stride,
                              int class_stride, float scale, float grad_scale) {
    double total = 0.0;
    for (int r = 0; r < rows; r++) {
        const float *x = logits + (size_t)r * row_stride;
        float *dx = dlogits + (size_t)r * row_stride;
        int target = targets[r];
        if (target < 0 || target >= V) {
            for (int v = 0; v < V; v++) dx[(size_t)v * class_stride] = 0.0f;
            continue;
        }
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = fmaxf(maxv, x[(size_t)v * class_stride]);
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)x[(size_t)v * class_stride] - maxv);
        double logsum = log(sum) + maxv;
        total += logsum - x[(size_t)target * class_stride];
        for (int v = 0; v < V; v++) {
            double prob = exp((double)x[(size_t)v * class_stride] - logsum);
            dx[(size_t)v * class_stride] = (float)(grad_scale * (prob - (v == target ? 1.0 : 0.0)));
        }
    }
    *loss += (float)(scale * total);
}

static void cpu_mse(backend *be, float *loss, float *dlogits, const float *logits,
                    const float *targets, int rows, float scale, float grad_scale) {
    double total = 0.0;
    for (int r = 0; r < rows; r++) {
        double d = (double)logits[r] - targets[r];
        total += d * d;
        dlogits[r] = (float)(grad_scale * 2.0 * d);
    }
    *loss += (float)(scale * total);
}

// ----------------------------------------------------------------------------
// optimizer

typedef struct opt_job {
    float *param, *m, *v;
    const float *x, *grad;
    const uint8_t *touched;
    size_t row_len;
    const backend_adamw_args *a;
    const backend_sgd_args *sgd;
    double *partials;            /* sum of squares of each block of rows */
    size_t grain;
} opt_job;

static void sumsq_rows(void *ctx, size_t begin, size_t end) {
    opt_job *j = ctx;
    double acc = 0.0;
    for (size_t r = begin; r < end; r++) {
        if (j->touched && !j->touched[r]) continue;
        const float *x = j->x + r * j->row_len;
        acc += lane_dot(x, x, (int)j->row_len);   /* 16 lanes: a single chain of adds ran at one per 4 cycles */
    }
    j->partials[begin / j->grain] = acc;
}

/* Sum of squares of `rows` rows, per-block partials added in block order. */
static double sumsq_blocks(backend *be, opt_job *j, size_t rows) {
    if (rows == 0) return 0.0;
    size_t grain = block_size(be->state, rows, 16);
    size_t blocks = (rows + grain - 1) / grain;
    double single;
    j->partials = partials_scratch(be, blocks * sizeof(double));
    j->grain = grain;
    if (!j->partials) {   /* no scratch: one block */
        j->partials = &single;
        j->grain = rows;
        blocks = 1;
    }
    parallel_for_grain(be, rows, j->grain, sumsq_rows, j);
    double total = 0.0;
    for (size_t b = 0; b < blocks; b++) total += j->partials[b];
    return total;
}

static double cpu_sumsq(backend *be, const float *x, size_t rows, size_t row_len,
                        const uint8_t *touched) {
    opt_job j = { .x = x, .touched = touched, .row_len = row_len };
    /* rows of one element (a flat tensor) are regrouped so each task sums a long run */
    if (row_len == 1 && !touched) {
        size_t group = 4096, full = rows / group;
        j.row_len = group;
        double acc = sumsq_blocks(be, &j, full);
        for (size_t i = full * group; i < rows; i++) acc += (double)x[i] * x[i];
        return acc;
    }
    return sumsq_blocks(be, &j, rows);
}

/* torch.optim.AdamW (decoupled decay: p *= decay, l2 0) and torch.optim.Adam with weight decay
 * (g = grad_scale * g + l2 * p before the moments, decay 1), operation for operation; the other
 * one's term is exact (x * 1, x + 0). A row no gradient touched runs with g = 0: its moments only
 * decay. */
static void adam_rows(void *ctx, size_t begin, size_t end) {
    opt_job *j = ctx;
    const backend_adamw_args *a = j->a;
    float decay = a->decay, step_size = a->step_size, bc2_sqrt = a->bias_correction2_sqrt, l2 = a->l2;
    float one_minus_b1 = 1.0f - a->beta1, one_minus_b2 = 1.0f - a->beta2;
    size_t L = j->row_len;
    for (size_t r = begin; r < end; r++) {
        float *p = j->param + r * L, *m = j->m + r * L, *v = j->v + r * L;
        const float *g = j->touched && !j->touched[r] ? NULL : j->grad + r * L;
        for (size_t i = 0; i < L; i++) {
            float gi = (g ? g[i] * a->grad_scale : 0.0f) + l2 * p[i];
            p[i] *= decay;
            m[i] = m[i] * a->beta1 + gi * one_minus_b1;
            v[i] = v[i] * a->beta2 + gi * gi * one_minus_b2;
            float denom = sqrtf(v[i]) / bc2_sqrt + a->eps;
            p[i] += -step_size * (m[i] / denom);
        }
    }
}

/* Run an optimizer's row function over [rows, row_len]; a flat tensor (row_len 1) is split into
 * long rows so the pool gets few large tasks. */
static void optimizer_rows(backend *be, opt_job *j, size_t rows, pool_fn fn) {
    if (j->row_len == 1 && !j->touched && rows >= 4096) {
        size_t group = 1024, full = rows / group;
        j->row_len = group;
        parallel_for(be, full, 16, fn, j);
        j->param += full * group; j->grad += full * group;
        if (j->m) j->m += full * group;
        if (j->v) j->v += full * group;
        j->row_len = 1;
        fn(j, 0, rows - full * group);
        return;
    }
    parallel_for(be, rows, 16, fn, j);
}

static void cpu_adamw(backend *be, float *param, const float *grad, float *m, float *v, size_t rows,
                      size_t row_len, const uint8_t *touched, const backend_adamw_args *args) {
    opt_job j = { .param = param, .grad = grad, .m = m, .v = v, .touched = touched,
                  .row_len = row_len, .a = args };
    optimizer_rows(be, &j, rows, adam_rows);
}

/* torch.optim.SGD (_single_tensor_sgd), operation for operation */
static void sgd_rows(void *ctx, size_t begin, size_t end) {
    opt_job *j = ctx;
    const backend_sgd_args *a = j->sgd;
    float wd = a->weight_decay, mu = a->momentum, keep = 1.0f - a->dampening, lr = a->lr;
    size_t L = j->row_len;
    for (size_t r = begin; r < end; r++) {
        float *p = j->param + r * L, *buf = j->m ? j->m + r * L : NULL;
        const float *g = j->touched && !j->touched[r] ? NULL : j->grad + r * L;
        for (size_t i = 0; i < L; i++) {
            float d = g ? g[i] * a->grad_scale : 0.0f;
            if (wd != 0) d = d + wd * p[i];
            if (buf) {
                buf[i] = a->first ? d : buf[i] * mu + d * keep;
                d = a->nesterov ? d + mu * buf[i] : buf[i];
            }
            p[i] += -lr * d;
        }
    }
}

static void cpu_sgd(backend *be, float *param, const float *grad, float *momentum_buf, size_t rows,
                    size_t row_len, const uint8_t *touched, const backend_sgd_args *args) {
    opt_job j = { .param = param, .grad = grad, .m = args->momentum != 0 ? momentum_buf : NULL,
                  .touched = touched, .row_len = row_len, .sgd = args };
    optimizer_rows(be, &j, rows, sgd_rows);
}

// ----------------------------------------------------------------------------
// the model variants: frozen products, plain embeddings, ReLU, BCE

static void cpu_matmul_backward_input(backend *be, float *dinp, const float *dout, const float *weight,
                                      int N, int IC, int OC, int accumulate) {
    sgemm_pool(be, 0, 0, N, IC, OC, 1.0f, dout, OC, weight, IC, accumulate ? 1.0f : 0.0f, dinp, IC);
}

typedef struct lookup_job {
    float *out;
    const float *wte;
    const int32_t *ids;
    int C;
} lookup_job;

static void lookup_rows(void *ctx, size_t begin, size_t end) {
    lookup_job *j = ctx;
    for (size_t n = begin; n < end; n++)
        memcpy(j->out + n * j->C, j->wte + (size_t)j->ids[n] * j->C, (size_t)j->C * sizeof(float));
}

static void cpu_embedding_lookup_forward(backend *be, float *out, const int32_t *ids, const float *wte,
                                         int N, int C) {
    lookup_job j = { .out = out, .wte = wte, .ids = ids, .C = C };
    parallel_for(be, (size_t)N, 256, lookup_rows, &j);
}

static void cpu_embedding_lookup_backward(backend *be, float *dwte, uint8_t *wte_touched, const float *dout,
                                          const int32_t *ids, int N, int C, int padding_idx) {
    for (int n = 0; n < N; n++) {
        if (ids[n] == padding_idx) continue;
        const float *d = dout + (size_t)n * C;
        float *w = dwte + (size_t)ids[n] * C;
        wte_touched[ids[n]] = 1;
        for (int c = 0; c < C; c++) w[c] += d[c];
    }
}

static void relu_fwd_range(void *ctx, size_t begin, size_t end) {
    ew_job *j = ctx;
    const float *in = j->a;   /* may alias out */
    float *out = j->out;
    for (size_t i = begin; i < end; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}
static void cpu_relu_forward(backend *be, float *out, const float *inp, size_t n) {
    ew_job j = { .out = out, .a = inp };
    parallel_for(be, n, EW_SERIAL_BELOW, relu_fwd_range, &j);
}

static void relu_bwd_range(void *ctx, size_t begin, size_t end) {
    ew_job *j = ctx;
    const float *out = j->a, *dout = j->b;   /* dinp may alias dout */
    float *dinp = j->out;
    for (size_t i = begin; i < end; i++) dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}
static void cpu_relu_backward(backend *be, float *dinp, const float *out, const float *dout, size_t n) {
    ew_job j = { .out = dinp, .a = out, .b = dout };
    parallel_for(be, n, EW_SERIAL_BELOW, relu_bwd_range, &j);
}

static void cpu_bce_with_logits(backend *be, float *loss, float *dlogits, const float *logits,
                                const float *targets, int rows, float scale, float grad_scale) {
    double total = 0.0;
    for (int r = 0; r < rows; r++) {
        double x = logits[r], y = targets[r];
        total += (x > 0 ? x : 0) - x * y + log1p(exp(-fabs(x)));
        double sigmoid = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
        dlogits[r] = (float)(grad_scale * (sigmoid - y));
    }
    *loss += (float)(scale * total);
}

// ----------------------------------------------------------------------------
// recurrent layers: one [active, H] x [H, G*H] product per step, the gates fused in one pass

static inline float fast_sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }
/* tanh from one exp: 1.5e-7 absolute error (the cancellation near 0), vectorises */
static inline float fast_tanhf(float x) {
    float a = x < 0 ? -x : x;
    float t = fast_expf(-2.0f * a);
    float y = (1.0f - t) / (1.0f + t);
    return x < 0 ? -y : y;
}

typedef struct rnn_job {
    const backend_rnn_args *a;
    int step;
    float *h, *c, *hh;     /* sorted state [B, H] (c: LSTM), recurrent products [B, G*H] */
} rnn_job;

static int rnn_gates(const backend_rnn_args *a) { return a->kind == BACKEND_LSTM ? 4 : 3; }

/* Row `row` of sequence order[i] at step s. */
static size_t rnn_row(const backend_rnn_args *a, int i, int s) {
    int b = a->order[i], len = a->lengths[b];
    return (size_t)b * a->T + (size_t)(a->reverse ? len - 1 - s : s);
}

/* One step of one sequence, H units: the gate loops are functions of their own so that every
 * pointer is a restrict parameter (inside the row loop GCC does not vectorise them). */
static void gru_step(const float *restrict x, const float *restrict hh, const float *restrict hprev,
                     float *restrict gates, float *restrict h, float *restrict out, int H) {
    for (int k = 0; k < H; k++) {
        float r = fast_sigmoidf(x[k] + hh[k]);
        float z = fast_sigmoidf(x[H + k] + hh[H + k]);
        float hn = hh[2 * H + k];
        float n = fast_tanhf(x[2 * H + k] + r * hn);
        float next = (hprev[k] - n) * z + n;   /* torch's gru_cell: (h - n) z + n */
        gates[k] = r; gates[H + k] = z; gates[2 * H + k] = n; gates[3 * H + k] = hn;
        h[k] = next;
        out[k] = next;
    }
}

static void lstm_step(const float *restrict x, const float *restrict hh, float *restrict c, float *restrict cell,
                      float *restrict gates, float *restrict h, float *restrict out, int H) {
    for (int k = 0; k < H; k++) {
        float ig = fast_sigmoidf(x[k] + hh[k]);
        float fg = fast_sigmoidf(x[H + k] + hh[H + k]);
        float gg = fast_tanhf(x[2 * H + k] + hh[2 * H + k]);
        float og = fast_sigmoidf(x[3 * H + k] + hh[3 * H + k]);
        float cy = fg * c[k] + ig * gg;
        float next = og * fast_tanhf(cy);
        gates[k] = ig; gates[H + k] = fg; gates[2 * H + k] = gg; gates[3 * H + k] = og;
        c[k] = cy;
        cell[k] = cy;
        h[k] = next;
        out[k] = next;
    }
}

static void rnn_forward_rows(void *ctx, size_t begin, size_t end) {
    rnn_job *j = ctx;
    const backend_rnn_args *a = j->a;
    int H = a->H, G = rnn_gates(a);
    for (size_t i = begin; i < end; i++) {
        size_t row = rnn_row(a, (int)i, j->step);
        const float *x = a->xproj + row * a->xproj_stride, *hh = j->hh + i * (size_t)G * H;
        float *h = j->h + i * H, *gates = a->gates + row * 4 * (size_t)H;
        float *hprev = a->hprev + row * H, *out = a->out + row * a->out_stride;
        memcpy(hprev, h, (size_t)H * sizeof(float));
        if (a->kind == BACKEND_GRU) gru_step(x, hh, hprev, gates, h, out, H);
        else lstm_step(x, hh, j->c + i * H, a->cell + row * H, gates, h, out, H);
    }
}

/* Sequences still running at step s: the first n of `order` (lengths non-increasing). */
static int rnn_active(const backend_rnn_args *a, int n, int s) {
    while (n > 0 && a->sorted_lengths[n - 1] <= s) n--;
    return n;
}

static void cpu_rnn_forward(backend *be, const backend_rnn_args *a) {
    int B = a->B, H = a->H, G = rnn_gates(a), GH = G * H;
    rnn_job j = { .a = a, .h = a->scratch, .c = a->scratch + (size_t)B * H, .hh = a->scratch + 2 * (size_t)B * H };
    memset(a->scratch, 0, 2 * (size_t)B * H * sizeof(float));
    int n = B;
    for (int s = 0; s < a->T; s++) {
        n = rnn_active(a, n, s);
        if (n == 0) break;
        for (int i = 0; i < n; i++) memcpy(j.hh + (size_t)i * GH, a->b_hh, (size_t)GH * sizeof(float));
        sgemm_pool(be, 0, 1, n, GH, H, 1.0f, j.h, H, a->w_hh, H, 1.0f, j.hh, GH);
        j.step = s;
        parallel_for(be, (size_t)n, (size_t)(16384 / H + 1), rnn_forward_rows, &j);
    }
    if (a->h_last)
        for (int i = 0; i < B; i++)
            memcpy(a->h_last + (size_t)a->order[i] * a->h_last_stride, j.h + (size_t)i * H, (size_t)H * sizeof(float));
}

typedef struct rnn_back_job {
    const backend_rnn_args *a;
    int step;
    float *dh, *dc, *dhh_step;   /* sorted [B, H], [B, H], [B, G*H] */
} rnn_back_job;

/* Gate gradients of one step of one sequence (see gru_step on why these are functions). An
 * absent dout or cprev comes as a readable pointer with weight 0: a branch in the loop would
 * keep it scalar. */
static void gru_step_backward(const float *restrict gates, const float *restrict hprev, const float *dout,
                              float dout_weight, float *restrict dx, float *restrict dstep, float *dh, int H) {
    for (int k = 0; k < H; k++) {
        float r = gates[k], z = gates[H + k], n = gates[2 * H + k], hn = gates[3 * H + k];
        float g = dh[k] + dout_weight * dout[k];
        float dn = g * (1.0f - z) * (1.0f - n * n);
        float dz = g * (hprev[k] - n) * z * (1.0f - z);
        float dr = dn * hn * r * (1.0f - r);
        dx[k] = dr; dx[H + k] = dz; dx[2 * H + k] = dn;
        dstep[k] = dr; dstep[H + k] = dz; dstep[2 * H + k] = dn * r;
        dh[k] = g * z;
    }
}

/* The LSTM's xproj and W_hh gradients are the same: dstep only (the caller copies it to dxproj;
 * eight strided stores in one loop are more than GCC vectorises). */
static void lstm_step_backward(const float *restrict gates, const float *restrict cell, const float *cprev,
                               float cprev_weight, const float *dout, float dout_weight, float *restrict dstep,
                               float *dh, float *restrict dc, int H) {
    for (int k = 0; k < H; k++) {
        float ig = gates[k], fg = gates[H + k], gg = gates[2 * H + k], og = gates[3 * H + k];
        float tc = fast_tanhf(cell[k]);
        float g = dh[k] + dout_weight * dout[k];
        float dct = dc[k] + g * og * (1.0f - tc * tc);
        float di = dct * gg * ig * (1.0f - ig);
        float df = dct * (cprev_weight * cprev[k]) * fg * (1.0f - fg);
        float dg = dct * ig * (1.0f - gg * gg);
        float dog = g * tc * og * (1.0f - og);
        dstep[k] = di; dstep[H + k] = df; dstep[2 * H + k] = dg; dstep[3 * H + k] = dog;
        dc[k] = dct * fg;
        dh[k] = 0.0f;
    }
}

static void rnn_backward_rows(void *ctx, size_t begin, size_t end) {
    rnn_back_job *j = ctx;
    const backend_rnn_args *a = j->a;
    int H = a->H, G = rnn_gates(a), GH = G * H;
    for (size_t i = begin; i < end; i++) {
        size_t row = rnn_row(a, (int)i, j->step);
        const float *gates = a->gates + row * 4 * (size_t)H;
        float *dx = a->dxproj + row * a->dxproj_stride, *dstep = j->dhh_step + i * GH, *dh = j->dh + i * H;
        const float *dout = a->dout ? a->dout + row * a->dout_stride : dh;
        float dout_weight = a->dout ? 1.0f : 0.0f;
        if (a->kind == BACKEND_GRU) {
            gru_step_backward(gates, a->hprev + row * H, dout, dout_weight, dx, dstep, dh, H);
        } else {
            /* the cell state this step started from: the previous position's, or 0 at the start */
            const float *cell = a->cell + row * H, *cprev = j->step == 0 ? cell : a->cell + (a->reverse ? row + 1 : row - 1) * H;
            lstm_step_backward(gates, cell, cprev, j->step == 0 ? 0.0f : 1.0f, dout, dout_weight, dstep, dh,
                               j->dc + i * H, H);
            memcpy(dx, dstep, (size_t)GH * sizeof(float));
        }
        memcpy(a->dhh + row * GH, dstep, (size_t)GH * sizeof(float));
    }
}

static void cpu_rnn_backward(backend *be, const backend_rnn_args *a) {
    int B = a->B, H = a->H, G = rnn_gates(a), GH = G * H;
    rnn_back_job j = { .a = a, .dh = a->scratch, .dc = a->scratch + (size_t)B * H,
                       .dhh_step = a->scratch + 2 * (size_t)B * H };
    memset(a->scratch, 0, 2 * (size_t)B * H * sizeof(float));
    if (a->dh_last)
        for (int i = 0; i < B; i++)
            memcpy(j.dh + (size_t)i * H, a->dh_last + (size_t)a->order[i] * a->dh_last_stride, (size_t)H * sizeof(float));
    int longest = B > 0 ? a->sorted_lengths[0] : 0, n = 0;
    for (int s = longest - 1; s >= 0; s--) {
        while (n < B && a->sorted_lengths[n] > s) n++;
        j.step = s;
        parallel_for(be, (size_t)n, (size_t)(16384 / H + 1), rnn_backward_rows, &j);
        /* dh of the step before: the direct path (written above) + dhh . W_hh */
        sgemm_pool(be, 0, 0, n, H, GH, 1.0f, j.dhh_step, GH, a->w_hh, H, 1.0f, j.dh, H);
    }
}

// ----------------------------------------------------------------------------
// life cycle

/* Every op runs to completion before it returns: nothing is ever pending. In fp32 nothing can
 * fail either; a bf16 product can (oneDNN out of memory), and the first failure stays. */
static int cpu_check(backend *be, bp_err *err) {
    cpu_bf16 *b = ((cpu_state *)be->state)->bf16;
    if (!b) return 0;
    pthread_mutex_lock(&b->mu);
    int failed = b->failed;
    if (failed && err) *err = b->first_error;
    pthread_mutex_unlock(&b->mu);
    return failed ? -1 : 0;
}

static int cpu_plan_weights(backend *be, const float *weights, size_t n, bp_err *err) {
    cpu_state *st = be->state;
    if (n == 0) {   /* forget the range, if it is this one */
        if (st->planned == weights) { st->planned = NULL; st->planned_n = 0; }
    } else {
        st->planned = weights;
        st->planned_n = n;
    }
    if (st->bf16) st->bf16->planned_fresh = 0;
    return 0;
}

static void cpu_weights_changed(backend *be) {
    cpu_state *st = be->state;
    if (st->bf16) st->bf16->planned_fresh = 0;
}

static void bf16_free(cpu_bf16 *b) {
    if (!b) return;
    bf16_gemm_engine_free(b->engine);
    free(b->operands);
    free(b->weight_copy);
    free(b->planned16);
    free(b->pairs16);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int backend_cpu_bf16_available(char *why, size_t why_size) { return bf16_gemm_available(why, why_size); }
int backend_cpu_bf16_emulated(const backend *be) {
    return backend_cpu_bf16(be) && bf16_gemm_engine_emulated(((const cpu_state *)be->state)->bf16->engine);
}

int backend_cpu_set_bf16(backend *be, int on, bp_err *err) {
    if (!be || !be->name || strcmp(be->name, "cpu") != 0)
        return bp_err_set(err, "bf16 products are a cpu backend setting (backend is %s)", be && be->name ? be->name : "none");
    cpu_state *st = be->state;
    if (!on) {
        bf16_free(st->bf16);
        st->bf16 = NULL;
        be->gelu_matmul_forward = NULL;
        be->gelu_matmul_backward = NULL;
        be->gelu_backward_matmul_backward = NULL;
        be->matmul_forward_keep = NULL;
        be->matmul_backward_kept = NULL;
        be->attention_forward_keep = NULL;
        be->attention_backward_kept = NULL;
        return 0;
    }
    if (st->bf16) return 0;
    char why[256];
    if (!bf16_gemm_available(why, sizeof why)) return bp_err_set(err, "no bf16 products: %s (cpu backend)", why);
    cpu_bf16 *b = calloc(1, sizeof *b);
    if (!b) return bp_err_set(err, "out of memory enabling bf16 products (cpu backend)");
    b->engine = bf16_gemm_engine_create(err);
    if (!b->engine) {
        free(b);
        return -1;
    }
    pthread_mutex_init(&b->mu, NULL);
    const char *pack = getenv("BERTPIPE_BF16_PACK");
    b->pack = pack && *pack && strcmp(pack, "0") != 0;
    st->bf16 = b;
    /* the GELU fusions pay only where the product reads a bf16 copy anyway */
    be->gelu_matmul_forward = cpu_gelu_matmul_forward;
    be->gelu_matmul_backward = cpu_gelu_matmul_backward;
    be->gelu_backward_matmul_backward = cpu_gelu_backward_matmul_backward;
    /* and the operands a forward rounds, kept for its backward (fp32 has nothing to keep) */
    be->matmul_forward_keep = cpu_matmul_forward_keep;
    be->matmul_backward_kept = cpu_matmul_backward_kept;
    be->attention_forward_keep = cpu_attention_forward_keep;
    be->attention_backward_kept = cpu_attention_backward_kept;
    return 0;
}

int backend_cpu_set_bf16_packing(backend *be, int on) {
    if (!backend_cpu_bf16(be)) return -1;
    cpu_bf16 *b = ((cpu_state *)be->state)->bf16;
    b->pack = on != 0;
    return 0;
}

int backend_cpu_bf16_packing(const backend *be) {
    return backend_cpu_bf16(be) && ((const cpu_state *)be->state)->bf16->pack;
}

int backend_cpu_bf16_packed_weights(const backend *be) {
    return backend_cpu_bf16(be) ? bf16_gemm_packed_count(((const cpu_state *)be->state)->bf16->engine) : 0;
}

int backend_cpu_bf16(const backend *be) {
    return be && be->name && strcmp(be->name, "cpu") == 0 && ((const cpu_state *)be->state)->bf16 != NULL;
}

static void cpu_destroy(backend *be) {
    if (!be) return;
    cpu_state *st = be->state;
    if (st) {
        pthread_mutex_lock(&st->mu);
        st->quit = 1;
        pthread_cond_broadcast(&st->wake);
        pthread_mutex_unlock(&st->mu);
        for (int i = 0; i < st->threads - 1; i++) pthread_join(st->workers[i], NULL);
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->wake);
        pthread_cond_destroy(&st->done);
        free(st->workers);
        bf16_free(st->bf16);
        free(st->ones);
        free(st->partials);
        free(st);
    }
    free(be);
}

backend *backend_cpu_create(int threads, bp_err *err) {
    if (threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        threads = online > 0 ? (int)online : 1;
    }
    if (threads > 64) threads = 64;
    backend *be = calloc(1, sizeof *be);
    cpu_state *st = calloc(1, sizeof *st);
    if (!be || !st) {
        free(be); free(st);
        bp_err_set(err, "out of memory creating the cpu backend");
        return NULL;
    }
    st->threads = threads;
    atomic_init(&st->next, 0);
    /* the pool owns the parallelism (see the header comment): OpenBLAS stays single-threaded */
    openblas_set_num_threads(1);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->wake, NULL);
    pthread_cond_init(&st->done, NULL);
    be->state = st;
    be->name = "cpu";
    be->host_visible = 1;
    be->destroy = cpu_destroy;
    st->workers = calloc((size_t)threads, sizeof *st->workers);
    if (!st->workers) {
        st->threads = 1;
        cpu_destroy(be);
        bp_err_set(err, "out of memory creating the cpu backend");
        return NULL;
    }
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&st->workers[i - 1], NULL, pool_worker, st) != 0) {
            st->threads = i;   /* join only the ones that started */
            cpu_destroy(be);
            bp_err_set(err, "cannot start element-wise thread %d of %d (cpu backend)", i, threads);
            return NULL;
        }
    }
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->zero = cpu_zero;
    be->copy_rows = cpu_copy_rows;
    be->matmul_forward = cpu_matmul_forward;
    be->matmul_backward = cpu_matmul_backward;
    be->embedding_forward = cpu_embedding_forward;
    be->embedding_backward = cpu_embedding_backward;
    be->embedding_zero_grad = cpu_embedding_zero_grad;
    be->add_layernorm_forward = cpu_add_layernorm_forward;
    be->add_layernorm_backward = cpu_add_layernorm_backward;
    be->gelu_forward = cpu_gelu_forward;
    be->gelu_backward = cpu_gelu_backward;
    be->tanh_forward = cpu_tanh_forward;
    be->tanh_backward = cpu_tanh_backward;
    be->dropout = cpu_dropout;
    be->attention_forward = cpu_attention_forward;
    be->attention_backward = cpu_attention_backward;
    be->cross_entropy = cpu_cross_entropy;
    be->mse = cpu_mse;
    be->sumsq = cpu_sumsq;
    be->adamw = cpu_adamw;
    be->sgd = cpu_sgd;
    be->matmul_backward_input = cpu_matmul_backward_input;
    be->embedding_lookup_forward = cpu_embedding_lookup_forward;
    be->embedding_lookup_backward = cpu_embedding_lookup_backward;
    be->relu_forward = cpu_relu_forward;
    be->relu_backward = cpu_relu_backward;
    be->bce_with_logits = cpu_bce_with_logits;
    be->rnn_forward = cpu_rnn_forward;
    be->rnn_backward = cpu_rnn_backward;
    be->check = cpu_check;
    be->plan_weights = cpu_plan_weights;
    be->weights_changed = cpu_weights_changed;
    return be;
}
