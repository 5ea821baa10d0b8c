/* bench_gemm_bf16.c — the bf16 GEMM ceiling on this CPU, and the candidates for the cpu backend's
 * bf16 products, measured on the linear-layer shapes of BERT-Mini (4096 tokens: seq 128 x batch
 * 32) and BERT-Base (1024 tokens: seq 128 x batch 8), C[M, N] = A[M, K] W[N, K]^T:
 *
 *   sgemm      OpenBLAS cblas_sgemm, fp32 (what the fp32 backend runs)
 *   sbgemm     OpenBLAS cblas_sbgemm, bf16 in, fp32 out, when the library exports it
 *   onednn     oneDNN matmul (backend/bf16_gemm.h: what the bf16 backend runs), one call a thread
 *   onednn-4x  the same in 4 calls a thread, as the backend's pool splits a product
 *   onednn-packed  oneDNN matmul with W reordered once, before the clock, into the layout the
 *              primitive asks for (weights format "any"), where the backend passes W plain unless
 *              BERTPIPE_BF16_PACK (backend.h backend_cpu_set_bf16_packing) says otherwise, and
 *              oneDNN 2.6 copies it into its blocked layout again for every chunk of rows
 *   own        a hand-written AVX512-BF16 kernel (vdpbf16ps, 8 x 32 register tile, B packed in
 *              32-column panels of k-pairs), kept here as llm.c keeps kernel versions in dev/
 *   backend    the backend's own linear ops, forward + backward (dinp, dweight, dbias) as the
 *              model calls them, fp32 and bf16: conversions of the activations included
 *
 *   build/bench/bench_gemm_bf16 [--threads N] [--reps R]
 *
 * Each candidate splits M in `threads` row blocks on as many threads; operands are converted
 * (and W packed) before the clock starts, as the backend rounds weights once per step. Best of R
 * runs after one warm-up. Prints one line per (shape, candidate): "gemm SHAPE CAND GFLOP/s" and
 * last "bf16 gemm ceiling: X GFLOP/s (CAND), fp32 sgemm Y GFLOP/s". Run it with
 * DNNL_MAX_CPU_ISA=AVX512_CORE_BF16 to see oneDNN without AMX (what a Zen 4/5 CPU gets).
 * Must never: be part of the test suite, or run a bf16 instruction on a CPU without avx512_bf16
 * (it prints "skipped" lines there).
 */
#include "backend/backend.h"
#include "backend/bf16_gemm.h"
#include "base/log.h"

#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BP_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#include <immintrin.h>
#define HAVE_OWN_KERNEL 1
#endif

typedef struct shape {
    const char *name;
    int M, N, K;
} shape;

typedef struct operands {
    int M, N, K;
    float *A, *W, *C;            /* fp32: A [M, K], W [N, K], C [M, N] */
    uint16_t *A16, *W16;         /* bf16 copies */
    uint32_t *panels;            /* own kernel: W16 packed in 32-column panels of k-pairs */
} operands;

typedef void (*candidate_fn)(const operands *o, bf16_gemm_engine *e, int m0, int m1);

// ----------------------------------------------------------------------------
// candidates, each on rows [m0, m1)

static void run_sgemm(const operands *o, bf16_gemm_engine *e, int m0, int m1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m1 - m0, o->N, o->K, 1.0f, o->A + (size_t)m0 * o->K, o->K, o->W,
                o->K, 0.0f, o->C + (size_t)m0 * o->N, o->N);
}

typedef void (*sbgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                          const uint16_t *B, int ldb, float beta, float *C, int ldc);
static sbgemm_fn sbgemm;

static void run_sbgemm(const operands *o, bf16_gemm_engine *e, int m0, int m1) {
    sbgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m1 - m0, o->N, o->K, 1.0f, o->A16 + (size_t)m0 * o->K, o->K, o->W16,
           o->K, 0.0f, o->C + (size_t)m0 * o->N, o->N);
}

static void run_onednn(const operands *o, bf16_gemm_engine *e, int m0, int m1) {
    bp_err err;
    if (bf16_gemm(e, 0, 1, m1 - m0, o->N, o->K, 1.0f, o->A16 + (size_t)m0 * o->K, o->K, o->W16, o->K, NULL, 0.0f,
                  o->C + (size_t)m0 * o->N, o->N, &err) != 0)
        bp_die_err(&err);
}

/* onednn with each thread's rows in 4 calls, as the backend's pool splits a product (4 parts a
 * thread, cpu.c gemm_pool): each call packs all of W again for its rows, so against onednn
 * (one call a thread) this measures what the extra calls cost. */
static void run_onednn_parts(const operands *o, bf16_gemm_engine *e, int m0, int m1) {
    int tiles = (m1 - m0) / 8;
    for (int p = 0; p < 4; p++) run_onednn(o, e, m0 + tiles * p / 4 * 8, p == 3 ? m1 : m0 + tiles * (p + 1) / 4 * 8);
}

#ifdef BP_HAVE_DNNL
/* onednn-packed: per thread, a primitive for its block of rows whose weights descriptor is left
 * to oneDNN (dnnl_format_tag_any), W reordered once into that layout, a stream and a scratchpad.
 * Made before the clock (packed_prepare), as a backend would pack each weight once per step. */
#define PACKED_MAX 64
static struct {
    int threads, m0[PACKED_MAX];
    dnnl_engine_t engine;
    dnnl_stream_t stream[PACKED_MAX];
    dnnl_primitive_t prim[PACKED_MAX];
    dnnl_memory_desc_t a[PACKED_MAX], c[PACKED_MAX], w[PACKED_MAX], scratch[PACKED_MAX];
    void *packed_w[PACKED_MAX], *scratch_buf[PACKED_MAX];
} packed;

static void dnnl_ok(dnnl_status_t st, const char *what) {
    if (st != dnnl_success) bp_die(1, NULL, "oneDNN: %s failed (status %d)", what, (int)st);
}

static void packed_free(void) {
    for (int t = 0; t < packed.threads; t++) {
        if (packed.prim[t]) dnnl_primitive_destroy(packed.prim[t]);
        if (packed.stream[t]) dnnl_stream_destroy(packed.stream[t]);
        free(packed.packed_w[t]);
        free(packed.scratch_buf[t]);
    }
    if (packed.engine) dnnl_engine_destroy(packed.engine);
    memset(&packed, 0, sizeof packed);
}

/* Thread t's block: rows [m0, m1) as time_candidate splits them (whole 8-row tiles). */
static void packed_prepare(const operands *o, int threads) {
    packed_free();
    packed.threads = threads;
    omp_set_num_threads(1);   /* each primitive runs on its caller's thread alone, as the backend's */
    dnnl_ok(dnnl_engine_create(&packed.engine, dnnl_cpu, 0), "dnnl_engine_create");
    int tiles = o->M / 8;
    dnnl_dims_t b_dims = { o->K, o->N }, w_plain_strides = { 1, o->K };   /* W [N, K] read as B [K, N] */
    dnnl_memory_desc_t w_plain;
    dnnl_ok(dnnl_memory_desc_init_by_strides(&w_plain, 2, b_dims, dnnl_bf16, w_plain_strides), "weights desc");
    for (int t = 0; t < threads; t++) {
        int m0 = tiles * t / threads * 8, m1 = tiles * (t + 1) / threads * 8;
        packed.m0[t] = m0;
        dnnl_dims_t a_dims = { m1 - m0, o->K }, a_strides = { o->K, 1 }, c_dims = { m1 - m0, o->N }, c_strides = { o->N, 1 };
        dnnl_memory_desc_t w_any;
        dnnl_ok(dnnl_memory_desc_init_by_strides(&packed.a[t], 2, a_dims, dnnl_bf16, a_strides), "src desc");
        dnnl_ok(dnnl_memory_desc_init_by_strides(&packed.c[t], 2, c_dims, dnnl_f32, c_strides), "dst desc");
        dnnl_ok(dnnl_memory_desc_init_by_tag(&w_any, 2, b_dims, dnnl_bf16, dnnl_format_tag_any), "weights any");
        dnnl_matmul_desc_t md;
        dnnl_ok(dnnl_matmul_desc_init(&md, &packed.a[t], &w_any, NULL, &packed.c[t]), "dnnl_matmul_desc_init");
        dnnl_primitive_attr_t attr;
        dnnl_ok(dnnl_primitive_attr_create(&attr), "attr");
        dnnl_ok(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode");
        dnnl_primitive_desc_t pd;
        dnnl_ok(dnnl_primitive_desc_create(&pd, &md, attr, packed.engine, NULL), "matmul primitive desc");
        dnnl_primitive_attr_destroy(attr);
        packed.w[t] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        packed.scratch[t] = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        dnnl_ok(dnnl_primitive_create(&packed.prim[t], pd), "matmul primitive");
        dnnl_primitive_desc_destroy(pd);
        dnnl_ok(dnnl_stream_create(&packed.stream[t], packed.engine, dnnl_stream_default_flags), "stream");
        size_t wbytes = dnnl_memory_desc_get_size(&packed.w[t]), sbytes = dnnl_memory_desc_get_size(&packed.scratch[t]);
        packed.packed_w[t] = aligned_alloc(64, (wbytes + 63) / 64 * 64);
        packed.scratch_buf[t] = aligned_alloc(64, (sbytes + 63) / 64 * 64 + 64);
        if (!packed.packed_w[t] || !packed.scratch_buf[t]) bp_die(1, NULL, "out of memory");
        /* W plain -> the primitive's layout, once */
        dnnl_primitive_desc_t rpd;
        dnnl_ok(dnnl_reorder_primitive_desc_create(&rpd, &w_plain, packed.engine, &packed.w[t], packed.engine, NULL),
                "reorder primitive desc");
        dnnl_primitive_t reorder;
        dnnl_ok(dnnl_primitive_create(&reorder, rpd), "reorder primitive");
        dnnl_primitive_desc_destroy(rpd);
        dnnl_memory_t from, to;
        dnnl_ok(dnnl_memory_create(&from, &w_plain, packed.engine, o->W16), "memory");
        dnnl_ok(dnnl_memory_create(&to, &packed.w[t], packed.engine, packed.packed_w[t]), "memory");
        dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
        dnnl_ok(dnnl_primitive_execute(reorder, packed.stream[t], 2, args), "reorder");
        dnnl_ok(dnnl_stream_wait(packed.stream[t]), "stream wait");
        dnnl_memory_destroy(from);
        dnnl_memory_destroy(to);
        dnnl_primitive_destroy(reorder);
    }
}

static void run_onednn_packed(const operands *o, bf16_gemm_engine *e, int m0, int m1) {
    int t = 0;
    while (t < packed.threads - 1 && packed.m0[t] != m0) t++;
    omp_set_num_threads(1);
    dnnl_memory_t mem[4];
    dnnl_ok(dnnl_memory_create(&mem[0], &packed.a[t], packed.engine, o->A16 + (size_t)m0 * o->K), "memory");
    dnnl_ok(dnnl_memory_create(&mem[1], &packed.w[t], packed.engine, packed.packed_w[t]), "memory");
    dnnl_ok(dnnl_memory_create(&mem[2], &packed.c[t], packed.engine, o->C + (size_t)m0 * o->N), "memory");
    dnnl_ok(dnnl_memory_create(&mem[3], &packed.scratch[t], packed.engine, packed.scratch_buf[t]), "memory");
    dnnl_exec_arg_t args[4] = { { DNNL_ARG_SRC, mem[0] }, { DNNL_ARG_WEIGHTS, mem[1] }, { DNNL_ARG_DST, mem[2] },
                                { DNNL_ARG_SCRATCHPAD, mem[3] } };
    dnnl_ok(dnnl_primitive_execute(packed.prim[t], packed.stream[t], 4, args), "matmul");
    for (int i = 0; i < 4; i++) dnnl_memory_destroy(mem[i]);
}
#endif

#ifdef HAVE_OWN_KERNEL
/* panel p, k-pair kk, column j: the two bf16 of W[32p + j][2kk .. 2kk + 1] as one 32-bit word */
static void pack_panels(operands *o) {
    int K2 = o->K / 2;
    for (int p = 0; p < o->N / 32; p++)
        for (int kk = 0; kk < K2; kk++)
            for (int j = 0; j < 32; j++)
                memcpy(&o->panels[((size_t)p * K2 + kk) * 32 + j], o->W16 + (size_t)(32 * p + j) * o->K + 2 * kk, 4);
}

/* C[8, 32] = A[8 rows, K] . panel: 16 accumulators, per k-pair 2 loads of B, 8 broadcasts of A */
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))
static void own_tile(const uint16_t *A, int lda, const uint32_t *panel, int K2, float *C, int ldc) {
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int kk = 0; kk < K2; kk++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + (size_t)kk * 32);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + (size_t)kk * 32 + 16);
        for (int r = 0; r < 8; r++) {
            uint32_t pair;
            memcpy(&pair, A + (size_t)r * lda + 2 * kk, 4);
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
    for (int r = 0; r < 8; r++) {
        _mm512_storeu_ps(C + (size_t)r * ldc, acc[r][0]);
        _mm512_storeu_ps(C + (size_t)r * ldc + 16, acc[r][1]);
    }
}

static void run_own(const operands *o, bf16_gemm_engine *e, int m0, int m1) {
    int K2 = o->K / 2;
    /* blocks of 64 rows of A (64 x K stays in L1/L2) against every panel, 8-row tiles inner */
    for (int mb = m0; mb < m1; mb += 64)
        for (int p = 0; p < o->N / 32; p++)
            for (int m = mb; m + 8 <= m1 && m < mb + 64; m += 8)
                own_tile(o->A16 + (size_t)m * o->K, o->K, o->panels + (size_t)p * K2 * 32, K2,
                         o->C + (size_t)m * o->N + 32 * p, o->N);
}
#endif

// ----------------------------------------------------------------------------
// timing over `threads` row blocks

typedef struct worker {
    candidate_fn fn;
    const operands *o;
    bf16_gemm_engine *e;
    int m0, m1;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    w->fn(w->o, w->e, w->m0, w->m1);
    return NULL;
}

static double time_candidate(candidate_fn fn, const operands *o, bf16_gemm_engine *e, int threads, int reps) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        pthread_t tids[64];
        worker ws[64];
        double t0 = bp_now();
        for (int t = 0; t < threads; t++) {
            /* blocks of whole 8-row tiles */
            int tiles = o->M / 8;
            ws[t] = (worker){ fn, o, e, tiles * t / threads * 8, tiles * (t + 1) / threads * 8 };
            if (t > 0 && pthread_create(&tids[t], NULL, work, &ws[t]) != 0) bp_die(1, NULL, "pthread_create failed");
        }
        work(&ws[0]);
        for (int t = 1; t < threads; t++) pthread_join(tids[t], NULL);
        double dt = bp_now() - t0;
        if (r > 0 && dt < best) best = dt;   /* run 0 warms up */
    }
    return 2.0 * o->M * o->N * o->K / best / 1e9;
}

/* The backend's linear ops as the model calls them: forward, then backward with dinp, dweight
 * and dbias; 3 products of 2MNK each. */
static double time_backend(backend *be, const operands *o, int reps) {
    bp_err err;
    size_t M = (size_t)o->M, N = (size_t)o->N, K = (size_t)o->K;
    float *out = be->alloc(be, M * N * 4, &err), *dout = be->alloc(be, M * N * 4, &err);
    float *dinp = be->alloc(be, M * K * 4, &err), *dw = be->alloc(be, N * K * 4, &err), *bias = be->alloc(be, N * 4, &err);
    float *db = be->alloc(be, N * 4, &err);
    if (!out || !dout || !dinp || !dw || !bias || !db) bp_die_err(&err);
    memcpy(dout, o->C, M * N * 4);
    if (be->plan_weights(be, o->W, N * K, &err) != 0) bp_die_err(&err);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = bp_now();
        be->matmul_forward(be, out, o->A, o->W, bias, o->M, o->K, o->N);
        be->matmul_backward(be, dinp, dw, db, dout, o->A, o->W, o->M, o->K, o->N, 0);
        if (be->check(be, &err) != 0) bp_die_err(&err);
        double dt = bp_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    be->plan_weights(be, o->W, 0, NULL);
    float *all[] = { out, dout, dinp, dw, bias, db };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(be, all[i]);
    return 3 * 2.0 * o->M * o->N * o->K / best / 1e9;
}

static long arg_int(int argc, char **argv, const char *name, long fallback) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return strtol(argv[i + 1], NULL, 10);
    return fallback;
}

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    int threads = (int)arg_int(argc, argv, "--threads", 2), reps = (int)arg_int(argc, argv, "--reps", 5);
    if (threads < 1 || threads > 64 || reps < 1) bp_die(2, NULL, "--threads 1..64 and --reps >= 1");
    openblas_set_num_threads(1);
    char why[256];
    int bf16 = backend_cpu_bf16_available(why, sizeof why);
    void *blas = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (!blas) blas = dlopen("libopenblas.so.0", RTLD_NOW);
    sbgemm = blas ? (sbgemm_fn)dlsym(blas, "cblas_sbgemm") : NULL;
    printf("bench-gemm: %d threads, best of %d; bf16 products: %s\n", threads, reps,
           bf16 ? bf16_gemm_isa() : why);
    if (!sbgemm) printf("gemm - sbgemm skipped: this OpenBLAS (libopenblas.so.0) exports no cblas_sbgemm\n");
    bp_err err;
    bf16_gemm_engine *engine = bf16 ? bf16_gemm_engine_create(&err) : NULL;
    if (bf16 && !engine) bp_die_err(&err);
    backend *fp32 = backend_cpu_create(threads, &err), *b16 = fp32 ? backend_cpu_create(threads, &err) : NULL;
    if (!fp32 || !b16 || (bf16 && backend_cpu_set_bf16(b16, 1, &err) != 0)) bp_die_err(&err);

    static const shape shapes[] = {
        { "mini-qkv", 4096, 768, 256 }, { "mini-fc", 4096, 1024, 256 }, { "mini-fc2", 4096, 256, 1024 },
        { "base-qkv", 1024, 2304, 768 }, { "base-fc", 1024, 3072, 768 }, { "base-fc2", 1024, 768, 3072 },
    };
    double best16 = 0, best32 = 0;
    const char *best16_name = "-";
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        operands o = { .M = shapes[s].M, .N = shapes[s].N, .K = shapes[s].K };
        size_t nA = (size_t)o.M * o.K, nW = (size_t)o.N * o.K, nC = (size_t)o.M * o.N;
        o.A = malloc(nA * 4); o.W = malloc(nW * 4); o.C = malloc(nC * 4);
        o.A16 = malloc(nA * 2); o.W16 = malloc(nW * 2); o.panels = malloc(nW * 2);
        float *reference = malloc(nC * 4);
        if (!o.A || !o.W || !o.C || !o.A16 || !o.W16 || !o.panels || !reference) bp_die(1, NULL, "out of memory");
        for (size_t i = 0; i < nA; i++) o.A[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        for (size_t i = 0; i < nW; i++) o.W[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        for (size_t i = 0; i < nC; i++) o.C[i] = (float)((i * 31) % 100) / 100.0f - 0.5f;
        for (size_t i = 0; i < nA; i++) o.A16[i] = bf16_round(o.A[i]);
        for (size_t i = 0; i < nW; i++) o.W16[i] = bf16_round(o.W[i]);
        struct { const char *name; candidate_fn fn; int needs_bf16; } cands[] = {
            { "sgemm", run_sgemm, 0 }, { "sbgemm", sbgemm ? run_sbgemm : NULL, 1 }, { "onednn", run_onednn, 1 },
            { "onednn-4x", run_onednn_parts, 1 },
#ifdef BP_HAVE_DNNL
            { "onednn-packed", run_onednn_packed, 1 },
#endif
#ifdef HAVE_OWN_KERNEL
            { "own", run_own, 1 },
#endif
        };
#ifdef HAVE_OWN_KERNEL
        pack_panels(&o);
#endif
#ifdef BP_HAVE_DNNL
        if (bf16) packed_prepare(&o, threads);
#endif
        for (size_t c = 0; c < sizeof cands / sizeof cands[0]; c++) {
            if (!cands[c].fn) continue;
            if (cands[c].needs_bf16 && !bf16) {
                printf("gemm %-9s %-8s skipped: %s\n", shapes[s].name, cands[c].name, why);
                continue;
            }
            double g = time_candidate(cands[c].fn, &o, engine, threads, reps);
            /* each candidate's C against sgemm's: a wrong kernel must not win */
            double diff = 0, scale = 0;
            if (c == 0) memcpy(reference, o.C, nC * 4);
            for (size_t i = 0; i < nC; i++) {
                double d = fabs((double)o.C[i] - reference[i]);
                if (!(d <= diff)) diff = d;
                if (fabs(reference[i]) > scale) scale = fabs(reference[i]);
            }
            if (!(diff <= 2e-2 * scale)) {
                printf("gemm %-9s %-8s wrong result (error %.1e of the largest)\n", shapes[s].name, cands[c].name,
                       diff / scale);
                continue;
            }
            printf("gemm %-9s %-8s %8.1f GFLOP/s\n", shapes[s].name, cands[c].name, g);
            if (cands[c].needs_bf16 && g > best16) { best16 = g; best16_name = cands[c].name; }
            if (!cands[c].needs_bf16 && g > best32) best32 = g;
        }
        printf("gemm %-9s %-8s %8.1f GFLOP/s (forward + backward, fp32)\n", shapes[s].name, "backend", time_backend(fp32, &o, reps));
        if (bf16)
            printf("gemm %-9s %-8s %8.1f GFLOP/s (forward + backward, bf16)\n", shapes[s].name, "backend",
                   time_backend(b16, &o, reps));
        free(o.A); free(o.W); free(o.C); free(o.A16); free(o.W16); free(o.panels); free(reference);
    }
    printf("bf16 gemm ceiling: %.1f GFLOP/s (%s), fp32 sgemm %.1f GFLOP/s, %d threads\n", best16, best16_name, best32,
           threads);
#ifdef BP_HAVE_DNNL
    packed_free();
#endif
    bf16_gemm_engine_free(engine);
    b16->destroy(b16);
    fp32->destroy(fp32);
    return 0;
}
