/* backend/bf16_gemm.c — bf16 products on oneDNN matmul primitives (see bf16_gemm.h).
 *
 * Why oneDNN: measured on the BERT shapes (docs/benchmarks-bf16.md), its matmul runs AMX tiles
 * where the CPU has them and AVX512-BF16 elsewhere, and beat OpenBLAS (whose Debian build
 * exports no sbgemm) and a hand-written AVX512-BF16 kernel. A primitive is made for one shape
 * (dimensions, strides, alpha, beta), so they are cached by shape; the attention products have
 * one shape per key length, a few hundred in all. Each product runs on the calling thread with
 * an OpenMP team of one: the cpu backend's pool owns the cores (cpu.c's header says why).
 * The test build (BP_FAULT_INJECTION) can also emulate the products (BERTPIPE_EMULATE_BF16=1):
 * the bf16 operands widened to fp32, which is exact, and multiplied by a oneDNN fp32 matmul made
 * and run by the same engine code (cache, streams, scratchpads, memory objects), so the same
 * products and fp32 sums in another order; in a build without oneDNN, by one sgemm. That lets
 * `make test` check the whole bf16 path (roundings, fusions, parity with fp32 and autocast, the
 * engine) on a CPU without avx512_bf16; only oneDNN's bf16 kernels go untested.
 * bin/ never has it, and neither do the benchmarks, so no rate is ever measured on it.
 * Must never: run a bf16 instruction unless bf16_gemm_available said yes (every entry point
 * that does is reached only from the cpu backend in bf16 mode, which asks first), print or exit.
 */
#include "backend/bf16_gemm.h"

#include <cblas.h>
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
#define BF16_X86 1
#include <immintrin.h>
#endif

// ----------------------------------------------------------------------------
// CPU check and conversion

static int cpu_has_avx512_bf16(void) {
#ifdef BF16_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

int bf16_gemm_emulated(void) {
#ifdef BP_FAULT_INJECTION
    const char *v = getenv("BERTPIPE_EMULATE_BF16");
    return v && *v && strcmp(v, "0") != 0;
#else
    return 0;
#endif
}

int bf16_gemm_available(char *why, size_t why_size) {
    if (why && why_size) why[0] = 0;
#ifdef BP_FAULT_INJECTION
    /* the test build can play a CPU without bf16, to test the refusal on one that has it */
    if (getenv("BERTPIPE_HIDE_BF16") && *getenv("BERTPIPE_HIDE_BF16")) {
        if (why) snprintf(why, why_size, "this CPU has no avx512_bf16 (hidden by BERTPIPE_HIDE_BF16)");
        return 0;
    }
#endif
    if (bf16_gemm_emulated()) return 1;
    if (!cpu_has_avx512_bf16()) {
        if (why) snprintf(why, why_size, "this CPU has no avx512_bf16 (cpuid), which bf16 products need");
        return 0;
    }
#ifndef BP_HAVE_DNNL
    if (why) snprintf(why, why_size, "this build has no oneDNN (install libdnnl-dev and rebuild)");
    return 0;
#else
    return 1;
#endif
}

const char *bf16_gemm_isa(void) {
#ifdef BP_HAVE_DNNL
    if (bf16_gemm_emulated()) return "emulated (test build, BERTPIPE_EMULATE_BF16: oneDNN fp32 on bf16 operands)";
#else
    if (bf16_gemm_emulated()) return "emulated (test build, BERTPIPE_EMULATE_BF16: sgemm on bf16 operands)";
#endif
#ifdef BP_HAVE_DNNL
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    default: return "below avx512_core_bf16";
    }
#else
    return "none";
#endif
}

#ifdef BF16_X86
/* 32 floats at a time with vcvtne2ps2bf16; reached only when the CPU has avx512_bf16. */
__attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw")))
static void row_to_bf16_avx512(uint16_t *dst, const float *src, int n) {
    int c = 0;
    for (; c + 32 <= n; c += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16), _mm512_loadu_ps(src + c));
        _mm512_storeu_si512((void *)(dst + c), (__m512i)h);
    }
    if (c < n) {   /* tail: masked loads, so nothing past the row is read */
        int left = n - c;
        __mmask16 lo = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __mmask16 hi = left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + c + 16), _mm512_maskz_loadu_ps(lo, src + c));
        _mm512_mask_storeu_epi16(dst + c, ((__mmask32)hi << 16) | lo, (__m512i)h);
    }
}
#endif

static void row_to_bf16_portable(uint16_t *dst, const float *src, int n) {
    for (int c = 0; c < n; c++) dst[c] = bf16_round(src[c]);
}

void bf16_from_f32_rows(uint16_t *dst, int dst_stride, const float *src, int src_stride, int rows, int cols) {
#ifdef BF16_X86
    static int fast = -1;   /* racy first write of the same value: harmless */
    if (fast < 0) fast = cpu_has_avx512_bf16();
    if (fast) {
        for (int r = 0; r < rows; r++)
            row_to_bf16_avx512(dst + (size_t)r * dst_stride, src + (size_t)r * src_stride, cols);
        return;
    }
#endif
    for (int r = 0; r < rows; r++)
        row_to_bf16_portable(dst + (size_t)r * dst_stride, src + (size_t)r * src_stride, cols);
}

/* An empty sum (K = 0): C = bias + beta C, what sgemm with the bias gives. */
static void empty_sum(int M, int N, const float *bias, float beta, float *C, int ldc) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            C[(size_t)m * ldc + n] = (bias ? bias[n] : 0.0f) + (beta != 0.0f ? C[(size_t)m * ldc + n] : 0.0f);
}

static void fill_nan(float *C, int M, int N, int ldc) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) C[(size_t)m * ldc + n] = NAN;
}

#ifndef BP_HAVE_DNNL
/* The emulated product of a build without oneDNN (test build only, see the header comment):
 * op(A) and op(B) widened to dense fp32 copies, then C = alpha op(A) op(B) + (alpha bias + beta C)
 * in one sgemm. */
static int emulated_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                         const uint16_t *B, int ldb, const float *bias, float beta, float *C, int ldc, bp_err *err) {
    float *a = malloc((size_t)M * K * sizeof *a), *b = malloc((size_t)K * N * sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        fill_nan(C, M, N, ldc);
        return bp_err_set(err, "out of memory in an emulated bf16 product %dx%dx%d (cpu backend)", M, N, K);
    }
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++)
            a[(size_t)m * K + k] = bf16_to_float(trans_a ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++)
            b[(size_t)k * N + n] = bf16_to_float(trans_b ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
    if (bias) {
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float *c = &C[(size_t)m * ldc + n];
                *c = alpha * bias[n] + (beta != 0.0f ? beta * *c : 0.0f);
            }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alpha, a, K, b, N, beta, C, ldc);
    free(a);
    free(b);
    return 0;
}
#endif

// ----------------------------------------------------------------------------
// the engine: oneDNN engine, primitive cache, streams

#ifdef BP_HAVE_DNNL

typedef struct gemm_shape {
    int trans_a, trans_b, M, N, K, lda, ldb, ldc, accumulate, bias;
    int layout;                   /* B in e->layouts[layout] (a packed copy), or -1: as ldb says */
    float alpha;
} gemm_shape;

#define CACHE_SLOTS 4096          /* open addressing; about 600 shapes in a SQuAD run */
#define MAX_STREAMS 64            /* one per thread computing at once (the pool has <= 64) */
#define NUM_ARGS 5                /* a, b, c, scratchpad, bias */
#define MAX_LAYOUTS 64            /* packed layouts of B: a handful per model */
#define MAX_PACKS 4096            /* packed copies: two per weight matrix (BERT-Large has 96) */

typedef struct cached_primitive {
    gemm_shape shape;
    dnnl_primitive_t primitive;   /* NULL: empty slot, unless refused */
    int refused;                  /* no kernel reads this shape's packed layout: B goes plain */
    dnnl_memory_desc_t a, b, c, bias, scratch;
    size_t scratch_bytes;
    /* memory objects of its arguments per stream, made on first use and pointed at each call's
     * matrices: making and destroying five of them took about 2.2 us a call (0.45 us each,
     * measured with fp32 primitives), as long as a 128 x 128 x 64 attention product takes on
     * AMX. NULL until a stream first runs it (and for a temporary primitive). */
    dnnl_memory_t (*mem)[NUM_ARGS];
} cached_primitive;

struct bf16_gemm_engine {
    int emulated;                 /* fp32 primitives on widened operands (the header comment) */
    dnnl_data_type_t operands;    /* of A and B: dnnl_bf16, or dnnl_f32 when emulated */
    dnnl_engine_t engine;
    pthread_mutex_t mu;
    cached_primitive *cache;
    int cached;
    /* a stream and a scratchpad per product running at once: with oneDNN's own (library)
     * scratchpad, two threads running one primitive at once overwrote each other's packed
     * operands (measured: wrong gradients on 2 threads, right ones on 1) */
    dnnl_stream_t streams[MAX_STREAMS];
    void *scratch[MAX_STREAMS];
    size_t scratch_len[MAX_STREAMS];
    int free_streams[MAX_STREAMS], nfree, nstreams;
    /* packed copies of B (bf16_gemm_pack_b), each in one of the layouts oneDNN asked for */
    dnnl_memory_desc_t layouts[MAX_LAYOUTS];
    int nlayouts;
    bf16_packed_b *packs[MAX_PACKS];
    int npacks;
    dnnl_stream_t pack_stream;    /* the reorders', made on first use */
};

/* A packed copy of one B (bf16_gemm.h). layout -1: B is read as it is (oneDNN asked for its own
 * strides, or packing failed), and nothing is kept. */
struct bf16_packed_b {
    const uint16_t *src;
    int trans_b, N, K, ldb, layout;
    dnnl_memory_desc_t plain;     /* B as stored (fp32 when emulated: the widened copy) */
    dnnl_primitive_t reorder;     /* plain -> layouts[layout] */
    void *data;
    int fresh;                    /* data holds B's current values */
};

static const char *status_name(dnnl_status_t s) {
    switch (s) {
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "unimplemented";
    default: return "failure";
    }
}

bf16_gemm_engine *bf16_gemm_engine_create(bp_err *err) {
    bf16_gemm_engine *e = calloc(1, sizeof *e);
    if (e) e->cache = calloc(CACHE_SLOTS, sizeof *e->cache);
    if (!e || !e->cache) {
        free(e);
        bp_err_set(err, "out of memory creating the bf16 product engine (cpu backend)");
        return NULL;
    }
    e->emulated = bf16_gemm_emulated();
    e->operands = e->emulated ? dnnl_f32 : dnnl_bf16;
    dnnl_status_t s = dnnl_engine_create(&e->engine, dnnl_cpu, 0);
    if (s != dnnl_success) {
        free(e->cache);
        free(e);
        bp_err_set(err, "oneDNN: dnnl_engine_create failed: %s (cpu backend, bf16)", status_name(s));
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    return e;
}

int bf16_gemm_engine_emulated(const bf16_gemm_engine *e) { return e && e->emulated; }

void bf16_gemm_engine_free(bf16_gemm_engine *e) {
    if (!e) return;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        cached_primitive *slot = &e->cache[i];
        if (slot->mem)
            for (int st = 0; st < MAX_STREAMS; st++)
                for (int k = 0; k < NUM_ARGS; k++)
                    if (slot->mem[st][k]) dnnl_memory_destroy(slot->mem[st][k]);
        free(slot->mem);
        if (slot->primitive) dnnl_primitive_destroy(slot->primitive);
    }
    for (int i = 0; i < e->nstreams; i++) {
        dnnl_stream_destroy(e->streams[i]);
        free(e->scratch[i]);
    }
    for (int i = 0; i < e->npacks; i++) {
        if (e->packs[i]->reorder) dnnl_primitive_destroy(e->packs[i]->reorder);
        free(e->packs[i]->data);
        free(e->packs[i]);
    }
    if (e->pack_stream) dnnl_stream_destroy(e->pack_stream);
    dnnl_engine_destroy(e->engine);
    pthread_mutex_destroy(&e->mu);
    free(e->cache);
    free(e);
}

static uint64_t shape_hash(const gemm_shape *s) {
    uint32_t alpha_bits;
    memcpy(&alpha_bits, &s->alpha, sizeof alpha_bits);
    int64_t fields[] = { s->trans_a, s->trans_b, s->M, s->N, s->K, s->lda, s->ldb, s->ldc, s->accumulate, s->bias,
                         s->layout, alpha_bits };
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        h ^= (uint64_t)fields[i] + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
        h *= 0xBF58476D1CE4E5B9ull;
    }
    return h ^ (h >> 31);
}

static int same_shape(const gemm_shape *a, const gemm_shape *b) {
    return a->trans_a == b->trans_a && a->trans_b == b->trans_b && a->M == b->M && a->N == b->N && a->K == b->K &&
           a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc && a->accumulate == b->accumulate &&
           a->bias == b->bias && a->layout == b->layout &&
           memcmp(&a->alpha, &b->alpha, sizeof a->alpha) == 0;
}

/* The primitive of one shape, made on first use. Called with the engine's mutex held. */
static int make_primitive(bf16_gemm_engine *e, const gemm_shape *s, cached_primitive *slot, bp_err *err) {
    /* op(A)[M, K] with A stored [K, M] when transposed; likewise B */
    dnnl_dims_t a_dims = { s->M, s->K }, b_dims = { s->K, s->N }, c_dims = { s->M, s->N };
    dnnl_dims_t a_strides = { s->trans_a ? 1 : s->lda, s->trans_a ? s->lda : 1 };
    dnnl_dims_t b_strides = { s->trans_b ? 1 : s->ldb, s->trans_b ? s->ldb : 1 };
    dnnl_dims_t c_strides = { s->ldc, 1 }, bias_dims = { 1, s->N }, bias_strides = { s->N, 1 };
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    const char *step = "dnnl_memory_desc_init_by_strides";
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(&slot->a, 2, a_dims, e->operands, a_strides);
    if (st == dnnl_success && s->layout >= 0) slot->b = e->layouts[s->layout];
    else if (st == dnnl_success) st = dnnl_memory_desc_init_by_strides(&slot->b, 2, b_dims, e->operands, b_strides);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_strides(&slot->c, 2, c_dims, dnnl_f32, c_strides);
    if (st == dnnl_success && s->bias) st = dnnl_memory_desc_init_by_strides(&slot->bias, 2, bias_dims, dnnl_f32, bias_strides);
    if (st == dnnl_success) {
        step = "dnnl_matmul_desc_init";
        st = dnnl_matmul_desc_init(&desc, &slot->a, &slot->b, s->bias ? &slot->bias : NULL, &slot->c);
    }
    if (st == dnnl_success) { step = "dnnl_primitive_attr_create"; st = dnnl_primitive_attr_create(&attr); }
    if (st == dnnl_success) {
        step = "dnnl_primitive_attr_set_scratchpad_mode";
        st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    }
    if (st == dnnl_success && s->alpha != 1.0f) {
        step = "dnnl_primitive_attr_set_output_scales";
        st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &s->alpha);
    }
    if (st == dnnl_success && s->accumulate) {
        step = "dnnl_post_ops_append_sum";
        st = dnnl_post_ops_create(&post_ops);
        if (st == dnnl_success) st = dnnl_post_ops_append_sum(post_ops, 1.0f);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, post_ops);
    }
    if (st == dnnl_success) { step = "dnnl_primitive_desc_create"; st = dnnl_primitive_desc_create(&pd, &desc, attr, e->engine, NULL); }
    if (st == dnnl_success) {
        const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        slot->scratch = *scratch;
        slot->scratch_bytes = dnnl_memory_desc_get_size(scratch);
        step = "dnnl_primitive_create";
        st = dnnl_primitive_create(&slot->primitive, pd);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post_ops) dnnl_post_ops_destroy(post_ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) {
        slot->primitive = NULL;
        return bp_err_set(err, "oneDNN: %s failed: %s (cpu backend, bf16 product %dx%dx%d)", step, status_name(st),
                          s->M, s->N, s->K);
    }
    slot->shape = *s;
    return 0;
}

/* The cached primitive for a shape (made on first use) and a free stream, under the mutex.
 * Past CACHE_SLOTS / 2 shapes (more than a run of BERT meets) a new shape gets a primitive of its
 * own in *temp, which the caller destroys after use: cached ones may be running on other
 * threads, so the cache is never emptied while the engine lives. */
static cached_primitive *lookup(bf16_gemm_engine *e, const gemm_shape *s, cached_primitive *temp,
                                int *stream, bp_err *err) {
    cached_primitive *found = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->nfree == 0 && e->nstreams < MAX_STREAMS) {
        dnnl_status_t st = dnnl_stream_create(&e->streams[e->nstreams], e->engine, dnnl_stream_default_flags);
        if (st != dnnl_success) {
            bp_err_set(err, "oneDNN: dnnl_stream_create failed: %s (cpu backend, bf16)", status_name(st));
            goto out;
        }
        e->free_streams[e->nfree++] = e->nstreams++;
    }
    if (e->nfree == 0) {
        bp_err_set(err, "more than %d threads in bf16 products at once (cpu backend)", MAX_STREAMS);
        goto out;
    }
    for (uint64_t i = shape_hash(s) % CACHE_SLOTS;; i = (i + 1) % CACHE_SLOTS) {
        cached_primitive *slot = &e->cache[i];
        if ((slot->primitive || slot->refused) && same_shape(&slot->shape, s)) { found = slot; break; }
        if (!slot->primitive && !slot->refused) {
            cached_primitive *into = e->cached < CACHE_SLOTS / 2 ? slot : temp;
            if (make_primitive(e, s, into, err) == 0) found = into;
            else if (s->layout >= 0 && into == slot) {   /* remembered, so it is asked once */
                slot->shape = *s;
                slot->refused = 1;
                e->cached++;
            }
            if (found == slot) e->cached++;
            break;
        }
    }
    if (found && found->refused) {
        bp_err_set(err, "no oneDNN kernel reads this packed B for %d rows (cpu backend, bf16)", s->M);
        found = NULL;
        goto out;
    }
    if (found) {   /* a stream, and its scratchpad grown to this primitive's need */
        int i = e->free_streams[e->nfree - 1];
        if (e->scratch_len[i] < found->scratch_bytes) {
            void *grown = NULL;
            if (posix_memalign(&grown, 64, found->scratch_bytes) != 0) {
                bp_err_set(err, "out of memory for a %zu-byte oneDNN scratchpad (cpu backend, bf16)", found->scratch_bytes);
                if (found == temp) dnnl_primitive_destroy(temp->primitive);
                temp->primitive = NULL;
                found = NULL;
                goto out;
            }
            free(e->scratch[i]);
            e->scratch[i] = grown;
            e->scratch_len[i] = found->scratch_bytes;
        }
        e->nfree--;
        *stream = i;
        /* room for its memory objects on every stream; without it (out of memory) each call
         * makes its own */
        if (found != temp && !found->mem) found->mem = calloc(MAX_STREAMS, sizeof *found->mem);
    }
out:
    pthread_mutex_unlock(&e->mu);
    return found;
}

static void release_stream(bf16_gemm_engine *e, int stream) {
    pthread_mutex_lock(&e->mu);
    e->free_streams[e->nfree++] = stream;
    pthread_mutex_unlock(&e->mu);
}

/* B's [rows, cols] values with row stride ld widened to fp32 (the emulation's operands); NULL when
 * out of memory. */
static float *widened(const uint16_t *src, size_t rows, size_t cols, size_t ld) {
    float *w = malloc(rows * ld * sizeof(float));
    if (!w) return NULL;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) w[r * ld + c] = bf16_to_float(src[r * ld + c]);
    return w;
}

/* bf16_gemm, with B's packed copy pb when not NULL (the shape then names pb's layout) */
static int gemm_run(bf16_gemm_engine *e, const bf16_packed_b *pb, int trans_a, int trans_b, int M, int N, int K,
                    float alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias, float beta,
                    float *C, int ldc, bp_err *err) {
    /* emulated: A and B widened to fp32 in their own layout (rows of lda, ldb values); a packed B
     * was widened when it was packed */
    float *wide[2] = { NULL, NULL };
    if (e->emulated) {
        const uint16_t *src[2] = { A, B };
        size_t rows[2] = { (size_t)(trans_a ? K : M), (size_t)(trans_b ? N : K) }, ld[2] = { (size_t)lda, (size_t)ldb };
        size_t cols[2] = { (size_t)(trans_a ? M : K), (size_t)(trans_b ? K : N) };
        for (int i = 0; i < (pb ? 1 : 2); i++) {
            wide[i] = widened(src[i], rows[i], cols[i], ld[i]);
            if (!wide[i]) {
                free(wide[0]);
                fill_nan(C, M, N, ldc);
                return bp_err_set(err, "out of memory in an emulated bf16 product %dx%dx%d (cpu backend)", M, N, K);
            }
        }
    }
    /* oneDNN with OpenMP sizes its work by omp_get_max_threads(), a per-thread setting: one here,
     * on whichever pool thread runs this product */
    omp_set_num_threads(1);
    gemm_shape s = { .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                     .ldc = ldc, .accumulate = beta != 0.0f, .bias = bias != NULL, .layout = pb ? pb->layout : -1,
                     .alpha = alpha };
    int stream = -1;
    cached_primitive temp = { .primitive = NULL };
    cached_primitive *p = lookup(e, &s, &temp, &stream, err);
    if (!p) {
        free(wide[0]);
        free(wide[1]);
        if (pb) return -2;   /* C untouched: the caller runs the product on B as it is */
        fill_nan(C, M, N, ldc);
        return -1;
    }
    /* the arguments' memory objects: this stream's of the cached primitive, pointed at this call's
     * matrices (made on its first call), else made for this call and destroyed after */
    void *b_data = pb ? pb->data : wide[1] ? (void *)wide[1] : (void *)B;
    void *handles[NUM_ARGS] = { wide[0] ? (void *)wide[0] : (void *)A, b_data, C, e->scratch[stream], (void *)bias };
    const dnnl_memory_desc_t *descs[NUM_ARGS] = { &p->a, &p->b, &p->c, &p->scratch, &p->bias };
    dnnl_memory_t local[NUM_ARGS] = { NULL, NULL, NULL, NULL, NULL };
    dnnl_memory_t *mem = p->mem ? p->mem[stream] : local;
    int nargs = bias ? NUM_ARGS : NUM_ARGS - 1;
    dnnl_status_t st = dnnl_success;
    for (int k = 0; k < nargs && st == dnnl_success; k++) {
        if (mem[k]) {
            st = dnnl_memory_set_data_handle(mem[k], handles[k]);
        } else {
            st = dnnl_memory_create(&mem[k], descs[k], e->engine, handles[k]);
            if (st != dnnl_success) mem[k] = NULL;
        }
    }
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[NUM_ARGS] = { { DNNL_ARG_SRC, mem[0] }, { DNNL_ARG_WEIGHTS, mem[1] },
                                           { DNNL_ARG_DST, mem[2] }, { DNNL_ARG_SCRATCHPAD, mem[3] },
                                           { DNNL_ARG_BIAS, mem[4] } };
        st = dnnl_primitive_execute(p->primitive, e->streams[stream], nargs, args);
    }
    if (mem == local)
        for (int k = 0; k < NUM_ARGS; k++)
            if (local[k]) dnnl_memory_destroy(local[k]);
    release_stream(e, stream);
    free(wide[0]);
    free(wide[1]);
    if (temp.primitive) dnnl_primitive_destroy(temp.primitive);
    if (st != dnnl_success) {
        fill_nan(C, M, N, ldc);
        return bp_err_set(err, "oneDNN: bf16 product %dx%dx%d failed: %s (cpu backend)", M, N, K, status_name(st));
    }
    return 0;
}

int bf16_gemm(bf16_gemm_engine *e, int trans_a, int trans_b, int M, int N, int K, float alpha,
              const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias, float beta, float *C,
              int ldc, bp_err *err) {
    return bf16_gemm_b_packed(e, NULL, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, bias, beta, C, ldc, err);
}

int bf16_gemm_b_packed(bf16_gemm_engine *e, const bf16_packed_b *pb, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias,
                       float beta, float *C, int ldc, bp_err *err) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        empty_sum(M, N, bias, beta, C, ldc);
        return 0;
    }
    if (pb && (pb->layout < 0 || !pb->fresh || pb->src != B || pb->trans_b != trans_b || pb->N != N || pb->K != K ||
               pb->ldb != ldb))
        pb = NULL;   /* not this B's current copy: B as it is */
    if (pb) {
        int rc = gemm_run(e, pb, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, bias, beta, C, ldc, err);
        if (rc != -2) return rc;
        /* no kernel for these rows reads the packed layout (a refused shape is remembered): B as it is */
    }
    return gemm_run(e, NULL, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, bias, beta, C, ldc, err);
}

// ----------------------------------------------------------------------------
// packed B: a weight laid out once as the kernels read it

/* pb's layout: the weights layout oneDNN picks for a product of M rows with B left to it
 * (dnnl_format_tag_any), or -1 when that is B's own strides or cannot be had. Mutex held. */
static int choose_layout(bf16_gemm_engine *e, bf16_packed_b *pb, int M) {
    dnnl_dims_t a_dims = { M, pb->K }, a_strides = { pb->K, 1 }, b_dims = { pb->K, pb->N };
    dnnl_dims_t c_dims = { M, pb->N }, c_strides = { pb->N, 1 };
    dnnl_dims_t b_strides = { pb->trans_b ? 1 : pb->ldb, pb->trans_b ? pb->ldb : 1 };
    dnnl_memory_desc_t a, b_any, c;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int layout = -1;
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(&pb->plain, 2, b_dims, e->operands, b_strides);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_strides(&a, 2, a_dims, e->operands, a_strides);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&b_any, 2, b_dims, e->operands, dnnl_format_tag_any);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_strides(&c, 2, c_dims, dnnl_f32, c_strides);
    if (st == dnnl_success) st = dnnl_matmul_desc_init(&desc, &a, &b_any, NULL, &c);
    if (st == dnnl_success) st = dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, e->engine, NULL);
    if (st == dnnl_success) {
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        if (want && !dnnl_memory_desc_equal(want, &pb->plain)) {
            for (int i = 0; i < e->nlayouts && layout < 0; i++)
                if (dnnl_memory_desc_equal(want, &e->layouts[i])) layout = i;
            if (layout < 0 && e->nlayouts < MAX_LAYOUTS) {
                e->layouts[e->nlayouts] = *want;
                layout = e->nlayouts++;
            }
        }
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (layout < 0) return -1;
    /* its room and its reorder, made once */
    dnnl_primitive_desc_t rpd = NULL;
    size_t bytes = dnnl_memory_desc_get_size(&e->layouts[layout]);
    if (posix_memalign(&pb->data, 64, bytes + 64) != 0) {
        pb->data = NULL;
        return -1;
    }
    st = dnnl_reorder_primitive_desc_create(&rpd, &pb->plain, e->engine, &e->layouts[layout], e->engine, NULL);
    if (st == dnnl_success) st = dnnl_primitive_create(&pb->reorder, rpd);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (st != dnnl_success) {
        pb->reorder = NULL;
        free(pb->data);
        pb->data = NULL;
        return -1;
    }
    return layout;
}

/* pb->data = B in pb's layout (fresh on success). Mutex held. */
static void repack(bf16_gemm_engine *e, bf16_packed_b *pb) {
    size_t rows = (size_t)(pb->trans_b ? pb->N : pb->K), cols = (size_t)(pb->trans_b ? pb->K : pb->N);
    float *wide = e->emulated ? widened(pb->src, rows, cols, (size_t)pb->ldb) : NULL;
    if (e->emulated && !wide) return;
    dnnl_memory_t from = NULL, to = NULL;
    dnnl_status_t st = dnnl_success;
    if (!e->pack_stream) st = dnnl_stream_create(&e->pack_stream, e->engine, dnnl_stream_default_flags);
    if (st == dnnl_success) st = dnnl_memory_create(&from, &pb->plain, e->engine, wide ? (void *)wide : (void *)pb->src);
    if (st == dnnl_success) st = dnnl_memory_create(&to, &e->layouts[pb->layout], e->engine, pb->data);
    if (st == dnnl_success) {
        omp_set_num_threads(1);   /* on the caller's thread alone, as every product */
        dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
        st = dnnl_primitive_execute(pb->reorder, e->pack_stream, 2, args);
        if (st == dnnl_success) st = dnnl_stream_wait(e->pack_stream);
    }
    if (from) dnnl_memory_destroy(from);
    if (to) dnnl_memory_destroy(to);
    free(wide);
    pb->fresh = st == dnnl_success;
}

const bf16_packed_b *bf16_gemm_pack_b(bf16_gemm_engine *e, int trans_b, int M, int N, int K, const uint16_t *B,
                                      int ldb) {
    if (!e || M <= 0 || N <= 0 || K <= 0) return NULL;
    pthread_mutex_lock(&e->mu);
    bf16_packed_b *pb = NULL;
    for (int i = 0; i < e->npacks && !pb; i++) {
        bf16_packed_b *q = e->packs[i];
        if (q->src == B && q->trans_b == trans_b && q->N == N && q->K == K && q->ldb == ldb) pb = q;
    }
    if (!pb && e->npacks < MAX_PACKS && (pb = calloc(1, sizeof *pb)) != NULL) {
        *pb = (bf16_packed_b){ .src = B, .trans_b = trans_b, .N = N, .K = K, .ldb = ldb };
        pb->layout = choose_layout(e, pb, M);
        e->packs[e->npacks++] = pb;
    }
    if (pb && pb->layout >= 0 && !pb->fresh) repack(e, pb);
    const bf16_packed_b *out = pb && pb->layout >= 0 && pb->fresh ? pb : NULL;
    pthread_mutex_unlock(&e->mu);
    return out;
}

void bf16_gemm_packed_stale(bf16_gemm_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->npacks; i++) e->packs[i]->fresh = 0;
    pthread_mutex_unlock(&e->mu);
}

int bf16_gemm_packed_count(bf16_gemm_engine *e) {
    if (!e) return 0;
    pthread_mutex_lock(&e->mu);
    int n = 0;
    for (int i = 0; i < e->npacks; i++) n += e->packs[i]->layout >= 0;
    pthread_mutex_unlock(&e->mu);
    return n;
}

#else   /* no oneDNN in this build: bf16_gemm_available says so; below, only the test build's emulation computes */

struct bf16_gemm_engine { int emulated; };

bf16_gemm_engine *bf16_gemm_engine_create(bp_err *err) {
    if (!bf16_gemm_emulated()) {
        bp_err_set(err, "this build has no oneDNN: no bf16 products (cpu backend)");
        return NULL;
    }
    bf16_gemm_engine *e = calloc(1, sizeof *e);
    if (!e) bp_err_set(err, "out of memory creating the bf16 product engine (cpu backend)");
    else e->emulated = 1;
    return e;
}
void bf16_gemm_engine_free(bf16_gemm_engine *e) { free(e); }
int bf16_gemm_engine_emulated(const bf16_gemm_engine *e) { return e && e->emulated; }
/* without oneDNN there are no layouts to pack into: every product reads B as it is */
const bf16_packed_b *bf16_gemm_pack_b(bf16_gemm_engine *e, int trans_b, int M, int N, int K, const uint16_t *B,
                                      int ldb) {
    return NULL;
}
void bf16_gemm_packed_stale(bf16_gemm_engine *e) {}
int bf16_gemm_packed_count(bf16_gemm_engine *e) { return 0; }
int bf16_gemm_b_packed(bf16_gemm_engine *e, const bf16_packed_b *pb, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias,
                       float beta, float *C, int ldc, bp_err *err) {
    return bf16_gemm(e, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, bias, beta, C, ldc, err);
}
int bf16_gemm(bf16_gemm_engine *e, int trans_a, int trans_b, int M, int N, int K, float alpha,
              const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias, float beta, float *C,
              int ldc, bp_err *err) {
    if (M <= 0 || N <= 0) return 0;
    if (!e || !e->emulated) return bp_err_set(err, "this build has no oneDNN: no bf16 products (cpu backend)");
    if (K <= 0) {
        empty_sum(M, N, bias, beta, C, ldc);
        return 0;
    }
    return emulated_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, bias, beta, C, ldc, err);
}

#endif
