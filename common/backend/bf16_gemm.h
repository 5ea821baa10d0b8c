/* backend/bf16_gemm.h — bf16 matrix products for the cpu backend (bf16_gemm.c): operands in
 * bfloat16, accumulation and result in float32, on oneDNN's matmul primitives (AMX tiles where
 * the CPU has them, else AVX512-BF16), plus the float32 -> bfloat16 conversion that feeds them.
 *
 * The cpu backend (cpu.c) owns the threads: every product here runs on the calling thread alone,
 * so the backend's pool can run several at once (one per block of rows, one per attention head).
 * Must never: start threads of its own (oneDNN's OpenMP team is held to one thread per caller),
 * use a bf16 instruction before bf16_gemm_available said yes, print or exit.
 */
#ifndef BP_BF16_GEMM_H
#define BP_BF16_GEMM_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

/* 1 when this build and this CPU can run bf16 products: the CPU reports avx512_bf16 (cpuid) and
 * the build has oneDNN. Else 0 with one line in why ("this CPU has no avx512_bf16 (...)").
 * Can't fail. */
int bf16_gemm_available(char *why, size_t why_size);

/* 1 in the test build when BERTPIPE_EMULATE_BF16 is set (not "0"): bf16_gemm_available says yes
 * on any CPU and the products run as sgemm on the widened bf16 operands (bf16_gemm.c's header).
 * Always 0 outside the test build. Can't fail. */
int bf16_gemm_emulated(void);

/* The instruction set oneDNN runs the products with ("avx512_core_amx", "avx512_core_bf16"), or
 * "none" in a build without oneDNN, or a line starting "emulated" under BERTPIPE_EMULATE_BF16.
 * Static storage. */
const char *bf16_gemm_isa(void);

/* Products share one engine: its oneDNN engine, a cache of primitives by shape (creating one
 * costs about a millisecond, running a small one microseconds) and a few streams. */
typedef struct bf16_gemm_engine bf16_gemm_engine;

/* NULL with err filled when oneDNN cannot start or memory runs out. */
bf16_gemm_engine *bf16_gemm_engine_create(bp_err *err);
void bf16_gemm_engine_free(bf16_gemm_engine *e);
/* 1 when e's products are emulated (bf16_gemm_emulated() held when e was made), else 0 */
int bf16_gemm_engine_emulated(const bf16_gemm_engine *e);

/* C[M, N] = alpha (op(A)[M, K] op(B)[K, N] + bias) + beta C, row-major, as cblas_sgemm: trans_a
 * means A is stored [K, M] (row stride lda), trans_b that B is stored [N, K]; bias [N] fp32 is
 * added to every row (NULL: none). beta is 0 or 1. oneDNN's fast (brgemm, AMX) kernels need
 * every matrix dense (lda, ldb, ldc equal to the row lengths); other strides work, slower.
 * Safe to call from several threads at once (on different C). Returns 0, or -1 with err filled
 * (a primitive could not be made: out of memory; C then holds NaN, so the failure cannot pass
 * unnoticed). */
int bf16_gemm(bf16_gemm_engine *e, int trans_a, int trans_b, int M, int N, int K, float alpha,
              const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias, float beta, float *C,
              int ldc, bp_err *err);

/* Packed weights. oneDNN's fast kernels read B in a blocked layout of their own; given B plain,
 * they copy it into that layout inside every product, again for each chunk of rows (with AMX for
 * every B, without it for a transposed one; oneDNN 2.6, brgemm matmul). A B that stays the same
 * across many products (a weight, until the optimizer changes it) can be packed once instead.
 *
 * bf16_gemm_pack_b: B as bf16_gemm would read it (trans_b, [K, N], row stride ldb), for products
 * of about M rows: its copy in the layout oneDNN picks for such a product, made now or kept from
 * an earlier call (the same B, trans_b, N, K, ldb) while still fresh. NULL when there is nothing to
 * gain (oneDNN reads B's own layout), or the copy could not be made (out of memory, more than 4096
 * of them): products then read B as it is. The copy is the engine's, until it is freed.
 * bf16_gemm_packed_stale: every copy is stale (the B values behind them changed); the next
 * pack_b of each makes it again. bf16_gemm_packed_count: copies kept (for tests).
 * Not to be called while products run on other threads. */
typedef struct bf16_packed_b bf16_packed_b;
const bf16_packed_b *bf16_gemm_pack_b(bf16_gemm_engine *e, int trans_b, int M, int N, int K, const uint16_t *B,
                                      int ldb);
void bf16_gemm_packed_stale(bf16_gemm_engine *e);
int bf16_gemm_packed_count(bf16_gemm_engine *e);

/* bf16_gemm reading B from pb (bf16_gemm_pack_b of this B, trans_b, N, K, ldb), where a kernel
 * for these M rows reads pb's layout; else, or with pb NULL, stale or made for another B, from B
 * itself. The same products; their fp32 sums may run in another order where oneDNN's kernel for
 * the packed layout is not the one it picks for B plain. */
int bf16_gemm_b_packed(bf16_gemm_engine *e, const bf16_packed_b *pb, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb, const float *bias,
                       float beta, float *C, int ldc, bp_err *err);

/* dst[r * dst_stride + c] = bf16(src[r * src_stride + c]) for rows x cols, rounded to nearest
 * even (NaN stays NaN) as torch's .to(torch.bfloat16). Uses vcvtneps2bf16 when the CPU has it.
 * Can't fail. */
void bf16_from_f32_rows(uint16_t *dst, int dst_stride, const float *src, int src_stride, int rows,
                        int cols);

/* The same rounding, one value, in portable C: the reference the vector path is tested against. */
static inline uint16_t bf16_round(float x) {
    union { float f; uint32_t u; } v = { x };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);   /* quiet NaN */
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}
static inline float bf16_to_float(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

#endif
