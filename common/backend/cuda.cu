/* backend/cuda.cu — the CUDA backend: every op of backend.h on one NVIDIA GPU, cuBLAS for the
 * matrix products and small kernels for the rest, with the semantics of backend/cpu.c (read that
 * file for what each op computes; comments here say only how the GPU version differs).
 *
 * All work is queued on one stream in call order, so ops need no synchronisation between them;
 * only download and sumsq (which return data to the host) wait for the stream. Uploads go through
 * two pinned staging buffers used in turn, so the host copy of the next chunk (and the caller's
 * next ops) overlap the transfer of the previous one.
 *
 * Reproducibility: dropout uses backend.h's counter-based keys, so masks equal the CPU's element
 * by element. Every reduction (bias, LayerNorm parameter and position embedding gradients,
 * losses, the gradient norm) sums in a fixed order: runs repeat bit for bit, except for the word
 * and token-type embedding gradients, whose rows are scatter-added with atomics (a row used
 * more than once in a batch sums in arrival order: a difference in the last bits).
 *
 * Must never: print, exit, allocate on the hot path except when a scratch buffer first grows to
 * a new largest size, or continue after a failed CUDA/cuBLAS call (the first error is kept; see
 * backend/cuda.h).
 */
#include "backend/cuda.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#ifdef BP_HAVE_NCCL
#include <nccl.h>
#endif
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// state and error recording

#define STAGING_BYTES ((size_t)8 << 20)   /* per pinned buffer: large enough to hide latency */
#define SUMSQ_BLOCKS 1024                 /* partial sums of the gradient norm */
#define BF16_SLOTS 3                      /* operands converted at once (dout, weight, input) */

typedef struct cuda_state {
    int device;
    char device_name[256];
    cudaStream_t stream;
    cublasHandle_t cublas;
    backend_cuda_precision precision;
    int failed;                      /* a call failed: later ops do nothing */
    char error[512];                 /* the first failure, one line */
    void *staging[2];                /* pinned host buffers for upload/download */
    cudaEvent_t staging_free[2];     /* recorded after the transfer that reads/writes each one */
    double *d_partials;              /* [SUMSQ_BLOCKS + 1] device doubles, last one the result */
    double *h_result;                /* pinned host double for sumsq */
    float *colsum;                   /* partial column sums, grown to the largest need */
    size_t colsum_len;
    __nv_bfloat16 *bf16[BF16_SLOTS]; /* bf16 copies of product operands */
    size_t bf16_len[BF16_SLOTS];
    void **pair_ptrs;                /* device pointer arrays of one attention product */
    size_t pair_ptrs_len;
#ifdef BP_HAVE_NCCL
    ncclComm_t nccl;                 /* the data-parallel run's communicator (collective_init) */
#endif
} cuda_state;

static cuda_state *state_of(backend *be) { return (cuda_state *)be->state; }

/* The source file as the docs name it: its layer folder and name ("backend/cuda.cu"). */
static const char *source_name(const char *file) {
    const char *last = strrchr(file, '/');
    if (!last) return file;
    const char *folder = last;
    while (folder > file && folder[-1] != '/') folder--;
    return folder;
}

/* Keep the first failure; a later one is usually its consequence. */
static void record_error(cuda_state *st, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void record_error(cuda_state *st, const char *file, int line, const char *fmt, ...) {
    if (st->failed) return;
    st->failed = 1;
    /* the place goes first, so that a long message can never push it out of the buffer */
    char where[96];
    snprintf(where, sizeof where, " (%s:%d)", source_name(file), line);
    size_t room = sizeof st->error - strlen(where);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(st->error, room, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < room ? (size_t)n : room - 1;
    memcpy(st->error + len, where, strlen(where) + 1);
}

/* The called function's name out of a call's source text ("cublasGemmEx(st->cublas, ...)"). */
static int name_length(const char *call) { return (int)strcspn(call, "("); }

static int check_cuda(cuda_state *st, cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    record_error(st, file, line, "%.*s failed: %s: %s", name_length(call), call, cudaGetErrorName(e),
                 cudaGetErrorString(e));
    return -1;
}
static int check_cublas(cuda_state *st, cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    record_error(st, file, line, "%.*s failed: %s: %s", name_length(call), call, cublasGetStatusName(s),
                 cublasGetStatusString(s));
    return -1;
}
/* CUDA_OK(st, call): 0, or -1 with the called function, the error name and file:line recorded. */
#define CUDA_OK(st, call) check_cuda((st), (call), #call, __FILE__, __LINE__)
#define CUBLAS_OK(st, call) check_cublas((st), (call), #call, __FILE__, __LINE__)
/* After a kernel launch: a bad configuration or a missing kernel image shows up here. */
#define LAUNCHED(st, name) check_cuda((st), cudaGetLastError(), "launching " name, __FILE__, __LINE__)

static unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 16u) b = 65535u * 16u;   /* grid-stride loops cover the rest */
    return b ? (unsigned)b : 1u;
}

/* A device scratch buffer of at least `need` elements of `size` bytes: grows (freeing the old
 * one) only when a larger shape first appears. NULL after recording the error. */
static void *grow(cuda_state *st, void **buf, size_t *len, size_t need, size_t size) {
    if (*len >= need) return *buf;
    /* queued ops may still read the old buffer */
    if (*buf && CUDA_OK(st, cudaStreamSynchronize(st->stream)) == 0) CUDA_OK(st, cudaFree(*buf));
    *buf = NULL;
    *len = 0;
    if (CUDA_OK(st, cudaMalloc(buf, need * size)) != 0) { *buf = NULL; return NULL; }
    *len = need;
    return *buf;
}

// ----------------------------------------------------------------------------
// small device helpers

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide sums and maximum for blocks of up to 1024 threads (32 warps); every thread gets
 * the result. `shared` holds 32 values of the type. */
__device__ float block_max(float v, float *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : -FLT_MAX;
    return warp_max(v);
}
__device__ double block_sum_d(double v, double *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : 0.0;
    return warp_sum_d(v);
}

/* keep_scale or 0 for element `index` under `key`: backend/cpu.c's dropout_factor. */
__device__ __forceinline__ float dropout_factor(uint64_t key, uint64_t index, float p, float keep_scale) {
    return backend_dropout_keep(key, index, p) ? keep_scale : 0.0f;
}

__global__ void probe_kernel(int *out) { *out = 1; }

// ----------------------------------------------------------------------------
// memory

static void *cuda_alloc(backend *be, size_t bytes, bp_err *err) {
    cuda_state *st = state_of(be);
    void *p = NULL;
    size_t rounded = bytes ? (bytes + 255) / 256 * 256 : 256;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
        cudaGetLastError();   /* an out-of-memory is not sticky: clear it, the caller decides */
        bp_err_set(err, "out of GPU memory allocating %zu bytes (cuda backend: %s)", bytes, cudaGetErrorName(e));
        return NULL;
    }
    if (CUDA_OK(st, cudaMemsetAsync(p, 0, rounded, st->stream)) != 0) {
        cudaFree(p);
        bp_err_set(err, "%s", st->error);
        return NULL;
    }
    return p;
}

static void cuda_free(backend *be, void *p) {
    if (p) CUDA_OK(state_of(be), cudaFree(p));
}

/* Host to device through the pinned buffers in turn: wait until a buffer's previous transfer is
 * done, fill it, queue its transfer. The caller's memory is free to reuse on return. */
static void cuda_upload(backend *be, void *dst, const void *host_src, size_t bytes) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    for (size_t off = 0, i = 0; off < bytes; off += STAGING_BYTES, i++) {
        size_t n = bytes - off < STAGING_BYTES ? bytes - off : STAGING_BYTES;
        int s = (int)(i & 1);
        if (CUDA_OK(st, cudaEventSynchronize(st->staging_free[s])) != 0) return;
        memcpy(st->staging[s], (const char *)host_src + off, n);
        if (CUDA_OK(st, cudaMemcpyAsync((char *)dst + off, st->staging[s], n, cudaMemcpyHostToDevice, st->stream)) != 0 ||
            CUDA_OK(st, cudaEventRecord(st->staging_free[s], st->stream)) != 0)
            return;
    }
}

/* Device to host: queue chunk i into one pinned buffer, then copy chunk i-1 out of the other
 * while it transfers. After a failure the destination is filled with NaN (all bits set). */
static void cuda_download(backend *be, void *host_dst, const void *src, size_t bytes) {
    cuda_state *st = state_of(be);
    size_t chunks = (bytes + STAGING_BYTES - 1) / STAGING_BYTES;
    for (size_t i = 0; i <= chunks && !st->failed; i++) {
        if (i < chunks) {
            size_t off = i * STAGING_BYTES, n = bytes - off < STAGING_BYTES ? bytes - off : STAGING_BYTES;
            int s = (int)(i & 1);
            if (CUDA_OK(st, cudaMemcpyAsync(st->staging[s], (const char *)src + off, n, cudaMemcpyDeviceToHost,
                                            st->stream)) != 0 ||
                CUDA_OK(st, cudaEventRecord(st->staging_free[s], st->stream)) != 0)
                break;
        }
        if (i > 0) {
            size_t prev = i - 1, off = prev * STAGING_BYTES;
            size_t n = bytes - off < STAGING_BYTES ? bytes - off : STAGING_BYTES;
            int s = (int)(prev & 1);
            if (CUDA_OK(st, cudaEventSynchronize(st->staging_free[s])) != 0) break;
            memcpy((char *)host_dst + off, st->staging[s], n);
        }
    }
    if (st->failed && bytes) memset(host_dst, 0xff, bytes);
}

static void cuda_zero(backend *be, void *p, size_t bytes) {
    cuda_state *st = state_of(be);
    if (!st->failed && bytes) CUDA_OK(st, cudaMemsetAsync(p, 0, bytes, st->stream));
}

static void cuda_copy_rows(backend *be, float *dst, int dst_stride, const float *src, int src_stride,
                           int rows, int cols) {
    cuda_state *st = state_of(be);
    if (st->failed || rows <= 0 || cols <= 0) return;
    CUDA_OK(st, cudaMemcpy2DAsync(dst, (size_t)dst_stride * sizeof(float), src, (size_t)src_stride * sizeof(float),
                                  (size_t)cols * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice, st->stream));
}

// ----------------------------------------------------------------------------
// matrix products: one helper over cuBLAS's column-major view, in the backend's precision

__global__ void to_bf16_kernel(__nv_bfloat16 *out, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(in[i]);
}

/* A bf16 copy of n contiguous floats in scratch slot `slot`; NULL after an error. */
static const __nv_bfloat16 *as_bf16(cuda_state *st, int slot, const float *x, size_t n) {
    if (!grow(st, (void **)&st->bf16[slot], &st->bf16_len[slot], n, sizeof(__nv_bfloat16))) return NULL;
    to_bf16_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(st->bf16[slot], x, n);
    if (LAUNCHED(st, "to_bf16_kernel") != 0) return NULL;
    return st->bf16[slot];
}

/* Column-major C = alpha op(A) op(B) + beta C in the backend's precision. In bf16 A16/B16 are
 * the operands' bf16 copies at the same layout (A, B unused). */
static void gemm(cuda_state *st, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const float *A, const __nv_bfloat16 *A16, int lda, const float *B, const __nv_bfloat16 *B16, int ldb,
                 float beta, float *C, int ldc) {
    if (st->failed || m <= 0 || n <= 0) return;
    int bf16 = st->precision == BACKEND_CUDA_BF16;
    cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute = st->precision == BACKEND_CUDA_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_OK(st, cublasGemmEx(st->cublas, ta, tb, m, n, k, &alpha, bf16 ? (const void *)A16 : (const void *)A, in_type,
                               lda, bf16 ? (const void *)B16 : (const void *)B, in_type, ldb, &beta, C, CUDA_R_32F, ldc,
                               compute, CUBLAS_GEMM_DEFAULT));
}

/* bf16 copies of two operands when the precision asks for them (else NULL, unused). */
static int operands_bf16(cuda_state *st, const float *x, size_t nx, const __nv_bfloat16 **x16, int slot_x,
                         const float *y, size_t ny, const __nv_bfloat16 **y16, int slot_y) {
    *x16 = *y16 = NULL;
    if (st->precision != BACKEND_CUDA_BF16) return 0;
    *x16 = as_bf16(st, slot_x, x, nx);
    *y16 = as_bf16(st, slot_y, y, ny);
    return *x16 && *y16 ? 0 : -1;
}

/* Operand addresses of one product per (sequence, head) pair: element offsets
 * seq * per_seq + head * per_head from each base, in bytes of each operand's type. */
typedef struct pair_operand { const char *base; size_t per_seq, per_head; } pair_operand;

__global__ void pair_pointers_kernel(void **out, pair_operand a, pair_operand b, pair_operand c, int B, int NH) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, count = B * NH;
    if (i >= count) return;
    size_t seq = (size_t)(i / NH), head = (size_t)(i % NH);
    out[i] = (void *)(a.base + seq * a.per_seq + head * a.per_head);
    out[count + i] = (void *)(b.base + seq * b.per_seq + head * b.per_head);
    out[2 * count + i] = (void *)(c.base + seq * c.per_seq + head * c.per_head);
}

/* Column-major C = alpha op(A) op(B) + beta C for every (sequence, head) pair in one cuBLAS
 * call. Heads of a sequence are D floats apart but sequences T*3C apart, which no single batch
 * stride covers, so the operands go as pointer arrays (built on the GPU, in stream order).
 * Strides are in elements: *_seq between sequences, *_head between heads. */
static void gemm_pairs(cuda_state *st, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                       const float *A, const __nv_bfloat16 *A16, int lda, size_t a_seq, size_t a_head,
                       const float *B, const __nv_bfloat16 *B16, int ldb, size_t b_seq, size_t b_head, float beta,
                       float *C, int ldc, size_t c_seq, size_t c_head, int sequences, int heads) {
    if (st->failed || m <= 0 || n <= 0 || sequences <= 0) return;
    int bf16 = st->precision == BACKEND_CUDA_BF16, count = sequences * heads;
    size_t in_size = bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    void **ptrs = (void **)grow(st, (void **)&st->pair_ptrs, &st->pair_ptrs_len, 3 * (size_t)count, sizeof(void *));
    if (!ptrs) return;
    pair_operand a = { bf16 ? (const char *)A16 : (const char *)A, a_seq * in_size, a_head * in_size };
    pair_operand b = { bf16 ? (const char *)B16 : (const char *)B, b_seq * in_size, b_head * in_size };
    pair_operand c = { (const char *)C, c_seq * sizeof(float), c_head * sizeof(float) };
    pair_pointers_kernel<<<(count + 127) / 128, 128, 0, st->stream>>>(ptrs, a, b, c, sequences, heads);
    if (LAUNCHED(st, "pair_pointers_kernel") != 0) return;
    cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute = st->precision == BACKEND_CUDA_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_OK(st, cublasGemmBatchedEx(st->cublas, ta, tb, m, n, k, &alpha, (const void *const *)ptrs, in_type, lda,
                                      (const void *const *)(ptrs + count), in_type, ldb, &beta, ptrs + 2 * count,
                                      CUDA_R_32F, ldc, count, compute, CUBLAS_GEMM_DEFAULT));
}

__global__ void add_bias_kernel(float *out, const float *bias, size_t N, int OC) {
    size_t total = N * (size_t)OC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

static void cuda_matmul_forward(backend *be, float *out, const float *inp, const float *weight,
                                const float *bias, int N, int IC, int OC) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    const __nv_bfloat16 *w16, *x16;
    if (operands_bf16(st, weight, (size_t)OC * IC, &w16, 0, inp, (size_t)N * IC, &x16, 1) != 0) return;
    /* row-major out[N, OC] = inp . weight^T is column-major out^T = weight . inp^T */
    gemm(st, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, 1.0f, weight, w16, IC, inp, x16, IC, 0.0f, out, OC);
    if (bias && !st->failed) {
        add_bias_kernel<<<blocks_for((size_t)N * OC, 256), 256, 0, st->stream>>>(out, bias, (size_t)N, OC);
        LAUNCHED(st, "add_bias_kernel");
    }
}

/* Column sums in a fixed order, in two passes: blocks of 32 columns x one chunk of rows write
 * partial sums, then one thread per column adds the chunks in order. What is summed: */
enum colsum_mode {
    COLSUM_PLAIN = 0,   /* x[n, c] (bias gradients) */
    COLSUM_LN = 1,      /* x[n, c] * xhat[n, c] and x[n, c] (LayerNorm weight and bias gradients) */
};
#define COLSUM_ROWS_Y 8

template <int MODE>
__global__ void colsum_partial_kernel(float *partial, const float *x, const float *sum, const float *mean,
                                      const float *rstd, int N, int C, int rows_per_chunk, int chunks) {
    __shared__ float acc_a[COLSUM_ROWS_Y][32], acc_b[COLSUM_ROWS_Y][32];
    int c = blockIdx.x * 32 + threadIdx.x, chunk = blockIdx.y;
    int begin = chunk * rows_per_chunk, end = min(N, begin + rows_per_chunk);
    float a = 0.0f, b = 0.0f;
    if (c < C)
        for (int n = begin + threadIdx.y; n < end; n += COLSUM_ROWS_Y) {
            float v = x[(size_t)n * C + c];
            if (MODE == COLSUM_LN) {
                a += v * ((sum[(size_t)n * C + c] - mean[n]) * rstd[n]);
                b += v;
            } else {
                a += v;
            }
        }
    acc_a[threadIdx.y][threadIdx.x] = a;
    acc_b[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int y = 1; y < COLSUM_ROWS_Y; y++) { a += acc_a[y][threadIdx.x]; b += acc_b[y][threadIdx.x]; }
        partial[(size_t)chunk * C + c] = a;
        if (MODE == COLSUM_LN) partial[((size_t)chunks + chunk) * C + c] = b;
    }
}

__global__ void colsum_final_kernel(float *out_a, float *out_b, const float *partial, int C, int chunks) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < chunks; k++) a += partial[(size_t)k * C + c];
    out_a[c] += a;
    if (out_b) {
        for (int k = 0; k < chunks; k++) b += partial[((size_t)chunks + k) * C + c];
        out_b[c] += b;
    }
}

/* out_a[c] (+ out_b[c] for COLSUM_LN) += the column sums of x [N, C] described by mode. */
static void column_sums(cuda_state *st, int mode, float *out_a, float *out_b, const float *x, const float *sum,
                        const float *mean, const float *rstd, int N, int C) {
    if (st->failed || N <= 0 || C <= 0) return;
    int chunks = (N + 127) / 128;
    if (chunks > 64) chunks = 64;
    int rows_per_chunk = (N + chunks - 1) / chunks;
    float *partial = (float *)grow(st, (void **)&st->colsum, &st->colsum_len, 2 * (size_t)chunks * C, sizeof(float));
    if (!partial) return;
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)chunks), block(32, COLSUM_ROWS_Y);
    if (mode == COLSUM_LN)
        colsum_partial_kernel<COLSUM_LN><<<grid, block, 0, st->stream>>>(partial, x, sum, mean, rstd, N,
                                                                         C, rows_per_chunk, chunks);
    else
        colsum_partial_kernel<COLSUM_PLAIN><<<grid, block, 0, st->stream>>>(partial, x, sum, mean, rstd, N, C,
                                                                            rows_per_chunk, chunks);
    if (LAUNCHED(st, "colsum_partial_kernel") != 0) return;
    colsum_final_kernel<<<(C + 255) / 256, 256, 0, st->stream>>>(out_a, mode == COLSUM_LN ? out_b : NULL, partial, C,
                                                                 chunks);
    LAUNCHED(st, "colsum_final_kernel");
}

static void cuda_matmul_backward(backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 int N, int IC, int OC, int accumulate_dinp) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    const __nv_bfloat16 *d16 = NULL, *w16 = NULL, *x16 = NULL;
    if (st->precision == BACKEND_CUDA_BF16) {
        d16 = as_bf16(st, 0, dout, (size_t)N * OC);
        w16 = dinp ? as_bf16(st, 1, weight, (size_t)OC * IC) : NULL;
        x16 = as_bf16(st, 2, inp, (size_t)N * IC);
        if (st->failed) return;
    }
    /* as on the CPU, dinp must not alias dout: the dweight product below still reads dout */
    if (dbias) column_sums(st, COLSUM_PLAIN, dbias, NULL, dout, NULL, NULL, NULL, N, OC);
    /* dinp^T [IC, N] = weight^T . dout^T (column-major view of row-major dinp = dout . weight) */
    if (dinp)
        gemm(st, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, 1.0f, weight, w16, IC, dout, d16, OC,
             accumulate_dinp ? 1.0f : 0.0f, dinp, IC);
    /* dweight^T [IC, OC] += inp^T . dout (row-major dweight += dout^T . inp) */
    gemm(st, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, 1.0f, inp, x16, IC, dout, d16, OC, 1.0f, dweight, IC);
}

// ----------------------------------------------------------------------------
// embeddings

__global__ void embedding_forward_kernel(float *out, const int32_t *ids, const int32_t *types, const float *wte,
                                         const float *wpe, const float *wtt, int B, int T, int C) {
    size_t total = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / C;
        int c = (int)(i % C), t = (int)(n % T);
        out[i] = wte[(size_t)ids[n] * C + c] + wpe[(size_t)t * C + c] + wtt[(size_t)types[n] * C + c];
    }
}

static void cuda_embedding_forward(backend *be, float *out, const int32_t *input_ids,
                                   const int32_t *token_type_ids, const float *wte, const float *wpe,
                                   const float *wtt, int B, int T, int C) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    embedding_forward_kernel<<<blocks_for((size_t)B * T * C, 256), 256, 0, st->stream>>>(out, input_ids,
                                                                                        token_type_ids, wte, wpe,
                                                                                        wtt, B, T, C);
    LAUNCHED(st, "embedding_forward_kernel");
}

/* Word rows: scatter-add with atomics (see the header comment), flagging each row touched. */
__global__ void embedding_backward_wte_kernel(float *dwte, uint8_t *touched, const float *dout, const int32_t *ids,
                                              size_t N, int C, int padding_idx) {
    size_t total = N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / C;
        int c = (int)(i % C), id = ids[n];
        if (id == padding_idx) continue;
        atomicAdd(&dwte[(size_t)id * C + c], dout[i]);
        if (c == 0) touched[id] = 1;
    }
}

/* Position rows: one thread per (t, c) sums the batch in order. */
__global__ void embedding_backward_wpe_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    size_t total = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * T * C + i];
        dwpe[i] += acc;
    }
}

/* Token-type rows: thread (chunk, c) sums runs of equal type over TYPE_CHUNK_ROWS rows and
 * adds each run with one atomic (a handful per thread instead of one per row). */
#define TYPE_CHUNK_ROWS 128
__global__ void embedding_backward_wtt_kernel(float *dwtt, const float *dout, const int32_t *types, size_t N, int C) {
    size_t chunks = (N + TYPE_CHUNK_ROWS - 1) / TYPE_CHUNK_ROWS, total = chunks * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t chunk = i / C, begin = chunk * TYPE_CHUNK_ROWS;
        size_t end = begin + TYPE_CHUNK_ROWS < N ? begin + TYPE_CHUNK_ROWS : N;
        int c = (int)(i % C), run_type = types[begin];
        float acc = 0.0f;
        for (size_t n = begin; n < end; n++) {
            if (types[n] != run_type) {
                atomicAdd(&dwtt[(size_t)run_type * C + c], acc);
                run_type = types[n];
                acc = 0.0f;
            }
            acc += dout[n * C + c];
        }
        atomicAdd(&dwtt[(size_t)run_type * C + c], acc);
    }
}

static void cuda_embedding_backward(backend *be, float *dwte, float *dwpe, float *dwtt,
                                    uint8_t *wte_touched, const float *dout, const int32_t *input_ids,
                                    const int32_t *token_type_ids, int B, int T, int C, int padding_idx) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    size_t N = (size_t)B * T;
    embedding_backward_wte_kernel<<<blocks_for(N * C, 256), 256, 0, st->stream>>>(dwte, wte_touched, dout,
                                                                                  input_ids, N, C, padding_idx);
    if (LAUNCHED(st, "embedding_backward_wte_kernel") != 0) return;
    embedding_backward_wpe_kernel<<<blocks_for((size_t)T * C, 256), 256, 0, st->stream>>>(dwpe, dout, B, T, C);
    if (LAUNCHED(st, "embedding_backward_wpe_kernel") != 0) return;
    /* token types: the backend is not told the type vocabulary size, so each thread owns one
     * column of a chunk of rows and adds runs of equal type (a sequence is two runs) */
    size_t chunks = (N + TYPE_CHUNK_ROWS - 1) / TYPE_CHUNK_ROWS;
    embedding_backward_wtt_kernel<<<blocks_for(chunks * C, 256), 256, 0, st->stream>>>(dwtt, dout, token_type_ids,
                                                                                        N, C);
    LAUNCHED(st, "embedding_backward_wtt_kernel");
}

/* One block per vocabulary row: rows whose flag is set are zeroed; the flags are cleared after. */
__global__ void embedding_zero_grad_kernel(float *dwte, const uint8_t *touched, int C) {
    size_t v = blockIdx.x;
    if (!touched[v]) return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dwte[v * C + c] = 0.0f;
}

static void cuda_embedding_zero_grad(backend *be, float *dwte, uint8_t *wte_touched, int V, int C) {
    cuda_state *st = state_of(be);
    if (st->failed || V <= 0) return;
    embedding_zero_grad_kernel<<<(unsigned)V, 128, 0, st->stream>>>(dwte, wte_touched, C);
    if (LAUNCHED(st, "embedding_zero_grad_kernel") != 0) return;
    CUDA_OK(st, cudaMemsetAsync(wte_touched, 0, (size_t)V, st->stream));
}

// ----------------------------------------------------------------------------
// residual + LayerNorm: one warp per row

#define ROWS_PER_BLOCK 8   /* warps per block in the row kernels */

__global__ void layernorm_forward_kernel(float *out, float *sum, float *mean, float *rstd, const float *x,
                                         const float *residual, const float *weight, const float *bias, int N,
                                         int C, float eps, float p, uint64_t key) {
    int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    size_t base = (size_t)row * C;
    float acc = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float s;
        if (residual)
            s = residual[base + c] + (p > 0 ? x[base + c] * dropout_factor(key, base + c, p, keep_scale) : x[base + c]);
        else
            s = x[base + c];
        sum[base + c] = s;   /* sum may alias x: each element is read before it is written */
        acc += s;
    }
    float m = warp_sum(acc) / C;
    float var = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = sum[base + c] - m; var += d * d; }
    float rs = 1.0f / sqrtf(warp_sum(var) / C + eps);
    for (int c = lane; c < C; c += 32) out[base + c] = (sum[base + c] - m) * rs * weight[c] + bias[c];
    if (lane == 0) { mean[row] = m; rstd[row] = rs; }
}

static void cuda_add_layernorm_forward(backend *be, float *out, float *sum, float *mean, float *rstd,
                                       const float *x, const float *residual, const float *weight,
                                       const float *bias, int N, int C, float eps, float dropout_p,
                                       uint64_t dropout_key) {
    cuda_state *st = state_of(be);
    if (st->failed || N <= 0) return;
    layernorm_forward_kernel<<<(N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK, 0, st->stream>>>(
        out, sum, mean, rstd, x, residual, weight, bias, N, C, eps, dropout_p, dropout_key);
    LAUNCHED(st, "layernorm_forward_kernel");
}

__global__ void layernorm_backward_kernel(float *dx, float *dresidual, const float *dout, const float *sum,
                                          const float *mean, const float *rstd, const float *weight, int N, int C,
                                          float p, uint64_t key) {
    int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    size_t base = (size_t)row * C;
    float m = mean[row], rs = rstd[row];
    float dnorm_mean = 0.0f, dnorm_xhat_mean = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (sum[base + c] - m) * rs, dnorm = dout[base + c] * weight[c];
        dnorm_mean += dnorm;
        dnorm_xhat_mean += dnorm * xhat;
    }
    dnorm_mean = warp_sum(dnorm_mean) / C;
    dnorm_xhat_mean = warp_sum(dnorm_xhat_mean) / C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (sum[base + c] - m) * rs;
        float dsum = (dout[base + c] * weight[c] - dnorm_mean - xhat * dnorm_xhat_mean) * rs;
        if (dresidual) dresidual[base + c] = dsum;
        dx[base + c] = p > 0 ? dsum * dropout_factor(key, base + c, p, keep_scale) : dsum;
    }
}

static void cuda_add_layernorm_backward(backend *be, float *dx, float *dresidual, float *dweight,
                                        float *dbias, const float *dout, const float *sum,
                                        const float *mean, const float *rstd, const float *weight,
                                        int N, int C, float dropout_p, uint64_t dropout_key) {
    cuda_state *st = state_of(be);
    if (st->failed || N <= 0) return;
    /* parameter gradients first, so dx or dresidual may alias dout as on the CPU */
    column_sums(st, COLSUM_LN, dweight, dbias, dout, sum, mean, rstd, N, C);
    if (st->failed) return;
    layernorm_backward_kernel<<<(N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK, 0, st->stream>>>(
        dx, dresidual, dout, sum, mean, rstd, weight, N, C, dropout_p, dropout_key);
    LAUNCHED(st, "layernorm_backward_kernel");
}

// ----------------------------------------------------------------------------
// element-wise

#define EACH(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
                        i += (size_t)gridDim.x * blockDim.x)

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    EACH(i, n) { float x = inp[i]; out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
}
__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    EACH(i, n) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}
__global__ void tanh_forward_kernel(float *out, const float *inp, size_t n) {
    EACH(i, n) out[i] = tanhf(inp[i]);
}
__global__ void tanh_backward_kernel(float *dinp, const float *out, const float *dout, size_t n) {
    EACH(i, n) dinp[i] = dout[i] * (1.0f - out[i] * out[i]);
}
/* Element i is kept by its own counter-based draw (backend.h); in place allowed. */
__global__ void dropout_kernel(float *out, const float *inp, size_t n, float p, uint64_t key) {
    float keep_scale = 1.0f / (1.0f - p);
    EACH(i, n) out[i] = inp[i] * dropout_factor(key, i, p, keep_scale);
}

static void cuda_gelu_forward(backend *be, float *out, const float *inp, size_t n) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    gelu_forward_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, inp, n);
    LAUNCHED(st, "gelu_forward_kernel");
}
static void cuda_gelu_backward(backend *be, float *dinp, const float *inp, const float *dout, size_t n) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    gelu_backward_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(dinp, inp, dout, n);
    LAUNCHED(st, "gelu_backward_kernel");
}
static void cuda_tanh_forward(backend *be, float *out, const float *inp, size_t n) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    tanh_forward_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, inp, n);
    LAUNCHED(st, "tanh_forward_kernel");
}
static void cuda_tanh_backward(backend *be, float *dinp, const float *out, const float *dout, size_t n) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    tanh_backward_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(dinp, out, dout, n);
    LAUNCHED(st, "tanh_backward_kernel");
}
static void cuda_dropout(backend *be, float *out, const float *inp, size_t n, float p, uint64_t key) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    if (p <= 0) {
        if (out != inp) CUDA_OK(st, cudaMemcpyAsync(out, inp, n * sizeof(float), cudaMemcpyDeviceToDevice, st->stream));
        return;
    }
    dropout_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, inp, n, p, key);
    LAUNCHED(st, "dropout_kernel");
}

// ----------------------------------------------------------------------------
// attention: one batched product over all (sequence, head) pairs per step (gemm_pairs), and one
// warp per score row for the softmax.
//
// Unlike the CPU this computes every key, also those after a sequence's last real one: their
// score gets -FLT_MAX and its exponential is exactly 0, so probabilities and products agree.

/* Masked softmax of score rows [B*NH*Tq, T] in place; with dropout also writes the dropped
 * probabilities, keyed by the row's position in the full [B, NH, Tq, T] tensor (as the CPU). */
__global__ void softmax_forward_kernel(float *probs, float *dropped, const int32_t *mask, int rows, int NH, int Tq,
                                       int T, float p, uint64_t key) {
    int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int b = row / (NH * Tq);
    const int32_t *m = mask + (size_t)b * T;
    float *x = probs + (size_t)row * T;
    float maxv = -FLT_MAX;
    for (int k = lane; k < T; k += 32) {
        float s = m[k] ? x[k] : x[k] + -FLT_MAX;
        x[k] = s;
        maxv = fmaxf(maxv, s);
    }
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int k = lane; k < T; k += 32) { float e = expf(x[k] - maxv); x[k] = e; sum += e; }
    float inv = 1.0f / warp_sum(sum);
    float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    for (int k = lane; k < T; k += 32) {
        float v = x[k] * inv;
        x[k] = v;
        if (p > 0) dropped[(size_t)row * T + k] = v * dropout_factor(key, (size_t)row * T + k, p, keep_scale);
    }
}

/* d(scores) from d(dropped probabilities) in place: back through dropout, then softmax. */
__global__ void softmax_backward_kernel(float *dscores, const float *probs, int rows, int T, float p, uint64_t key) {
    int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    float *d = dscores + (size_t)row * T;
    const float *P = probs + (size_t)row * T;
    float dot = 0.0f;
    for (int k = lane; k < T; k += 32) {
        float v = d[k];
        if (p > 0) v *= dropout_factor(key, (size_t)row * T + k, p, keep_scale);
        d[k] = v;
        dot += v * P[k];
    }
    dot = warp_sum(dot);
    for (int k = lane; k < T; k += 32) d[k] = P[k] * (d[k] - dot);
}

static void cuda_attention_forward(backend *be, float *ctx, float *probs, float *probs_dropped,
                                   const float *qkv, const int32_t *attention_mask, int B, int T,
                                   int Tq, int C, int NH, float dropout_p, uint64_t dropout_key) {
    cuda_state *st = state_of(be);
    if (st->failed || B <= 0) return;
    int D = C / NH, C3 = 3 * C;
    size_t block = (size_t)Tq * T;
    float scale = 1.0f / sqrtf((float)D);
    int bf16 = st->precision == BACKEND_CUDA_BF16;
    const __nv_bfloat16 *qkv16 = bf16 ? as_bf16(st, 0, qkv, (size_t)B * T * C3) : NULL;
    /* scores[Tq, T] = scale Q K^T, column-major: scores^T [T, Tq] = K (as D x T, transposed) . Q */
    size_t seq3 = (size_t)T * C3, seqc = (size_t)T * C, seqp = (size_t)NH * block;
    gemm_pairs(st, CUBLAS_OP_T, CUBLAS_OP_N, T, Tq, D, scale, qkv + C, qkv16 ? qkv16 + C : NULL, C3, seq3, D,
               qkv, qkv16, C3, seq3, D, 0.0f, probs, T, seqp, block, B, NH);
    if (st->failed) return;
    int rows = B * NH * Tq;
    float *used = dropout_p > 0 ? probs_dropped : probs;
    softmax_forward_kernel<<<(rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK, 0, st->stream>>>(
        probs, probs_dropped, attention_mask, rows, NH, Tq, T, dropout_p, dropout_key);
    if (LAUNCHED(st, "softmax_forward_kernel") != 0) return;
    const __nv_bfloat16 *used16 = bf16 ? as_bf16(st, 1, used, (size_t)rows * T) : NULL;
    /* ctx[Tq, D] = P V, column-major: ctx^T [D, Tq] = V^T (D x T) . P^T (T x Tq) */
    gemm_pairs(st, CUBLAS_OP_N, CUBLAS_OP_N, D, Tq, T, 1.0f, qkv + 2 * C, qkv16 ? qkv16 + 2 * C : NULL, C3, seq3, D,
               used, used16, T, seqp, block, 0.0f, ctx, C, seqc, D, B, NH);
}

static void cuda_attention_backward(backend *be, float *dqkv, float *scratch, const float *dctx,
                                    const float *probs, const float *qkv, const int32_t *attention_mask,
                                    int B, int T, int Tq, int C, int NH, float dropout_p,
                                    uint64_t dropout_key) {
    cuda_state *st = state_of(be);
    if (st->failed || B <= 0) return;
    int D = C / NH, C3 = 3 * C, rows = B * NH * Tq;
    size_t block = (size_t)Tq * T;
    size_t all = (size_t)rows * T;
    float scale = 1.0f / sqrtf((float)D);
    int bf16 = st->precision == BACKEND_CUDA_BF16;
    /* query rows t >= Tq get no product below: zero them (and everything) first */
    if (Tq < T) CUDA_OK(st, cudaMemsetAsync(dqkv, 0, (size_t)B * T * C3 * sizeof(float), st->stream));
    /* the dropped probabilities, rebuilt from their key into scratch */
    const float *used = probs;
    if (dropout_p > 0) {
        dropout_kernel<<<blocks_for(all, 256), 256, 0, st->stream>>>(scratch, probs, all, dropout_p, dropout_key);
        if (LAUNCHED(st, "dropout_kernel") != 0) return;
        used = scratch;
    }
    const __nv_bfloat16 *qkv16 = bf16 ? as_bf16(st, 0, qkv, (size_t)B * T * C3) : NULL;
    const __nv_bfloat16 *used16 = bf16 ? as_bf16(st, 1, used, all) : NULL;
    const __nv_bfloat16 *dctx16 = bf16 ? as_bf16(st, 2, dctx, (size_t)B * T * C) : NULL;
    if (st->failed) return;
    size_t seq3 = (size_t)T * C3, seqc = (size_t)T * C, seqp = (size_t)NH * block;
    /* dV[T, D] = Pd^T dctx: column-major dV^T [D, T] = dctx^T (D x Tq) . Pd (Tq x T) */
    gemm_pairs(st, CUBLAS_OP_N, CUBLAS_OP_T, D, T, Tq, 1.0f, dctx, dctx16, C, seqc, D, used, used16, T, seqp, block,
               0.0f, dqkv + 2 * C, C3, seq3, D, B, NH);
    /* dP[Tq, T] = dctx V^T: column-major dP^T [T, Tq] = V (as D x T, transposed) . dctx^T. It
     * overwrites scratch, which may hold Pd: the product above has read it by then (stream order) */
    gemm_pairs(st, CUBLAS_OP_T, CUBLAS_OP_N, T, Tq, D, 1.0f, qkv + 2 * C, qkv16 ? qkv16 + 2 * C : NULL, C3, seq3, D,
               dctx, dctx16, C, seqc, D, 0.0f, scratch, T, seqp, block, B, NH);
    if (st->failed) return;
    softmax_backward_kernel<<<(rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK, 0, st->stream>>>(
        scratch, probs, rows, T, dropout_p, dropout_key);
    if (LAUNCHED(st, "softmax_backward_kernel") != 0) return;
    const __nv_bfloat16 *ds16 = bf16 ? as_bf16(st, 1, scratch, all) : NULL;
    /* dQ[Tq, D] = scale dS K: column-major dQ^T [D, Tq] = K^T (D x T) . dS^T (T x Tq) */
    gemm_pairs(st, CUBLAS_OP_N, CUBLAS_OP_N, D, Tq, T, scale, qkv + C, qkv16 ? qkv16 + C : NULL, C3, seq3, D, scratch,
               ds16, T, seqp, block, 0.0f, dqkv, C3, seq3, D, B, NH);
    /* dK[T, D] = scale dS^T Q: column-major dK^T [D, T] = Q^T (D x Tq) . dS (Tq x T) */
    gemm_pairs(st, CUBLAS_OP_N, CUBLAS_OP_T, D, T, Tq, scale, qkv, qkv16, C3, seq3, D, scratch, ds16, T, seqp, block,
               0.0f, dqkv + C, C3, seq3, D, B, NH);
}

// ----------------------------------------------------------------------------
// losses: one block walks the rows in order, so the sum is the same every run

#define LOSS_THREADS 256

__global__ void cross_entropy_kernel(float *loss, float *dlogits, const float *logits, const int32_t *targets,
                                     int rows, int V, int row_stride, int class_stride, float scale,
                                     float grad_scale) {
    __shared__ float shared_f[32];
    __shared__ double shared_d[32];
    double total = 0.0;
    for (int r = 0; r < rows; r++) {
        const float *x = logits + (size_t)r * row_stride;
        float *dx = dlogits + (size_t)r * row_stride;
        int target = targets[r];
        if (target < 0 || target >= V) {   /* the same for every thread: no divergence */
            for (int v = threadIdx.x; v < V; v += blockDim.x) dx[(size_t)v * class_stride] = 0.0f;
            continue;
        }
        float maxv = -INFINITY;
        for (int v = threadIdx.x; v < V; v += blockDim.x) maxv = fmaxf(maxv, x[(size_t)v * class_stride]);
        maxv = block_max(maxv, shared_f);
        double sum = 0.0;
        for (int v = threadIdx.x; v < V; v += blockDim.x) sum += exp((double)x[(size_t)v * class_stride] - maxv);
        sum = block_sum_d(sum, shared_d);
        double logsum = log(sum) + maxv;
        total += logsum - x[(size_t)target * class_stride];
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            double prob = exp((double)x[(size_t)v * class_stride] - logsum);
            dx[(size_t)v * class_stride] = (float)(grad_scale * (prob - (v == target ? 1.0 : 0.0)));
        }
    }
    if (threadIdx.x == 0) *loss += (float)(scale * total);
}

static void cuda_cross_entropy(backend *be, float *loss, float *dlogits, const float *logits,
                               const int32_t *targets, int rows, int V, int row_stride,
                               int class_stride, float scale, float grad_scale) {
    cuda_state *st = state_of(be);
    if (st->failed || rows <= 0) return;
    cross_entropy_kernel<<<1, LOSS_THREADS, 0, st->stream>>>(loss, dlogits, logits, targets, rows, V, row_stride,
                                                             class_stride, scale, grad_scale);
    LAUNCHED(st, "cross_entropy_kernel");
}

__global__ void mse_kernel(float *loss, float *dlogits, const float *logits, const float *targets, int rows,
                           float scale, float grad_scale) {
    __shared__ double shared_d[32];
    double total = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        double d = (double)logits[r] - targets[r];
        total += d * d;
        dlogits[r] = (float)(grad_scale * 2.0 * d);
    }
    total = block_sum_d(total, shared_d);
    if (threadIdx.x == 0) *loss += (float)(scale * total);
}

static void cuda_mse(backend *be, float *loss, float *dlogits, const float *logits,
                     const float *targets, int rows, float scale, float grad_scale) {
    cuda_state *st = state_of(be);
    if (st->failed || rows <= 0) return;
    mse_kernel<<<1, LOSS_THREADS, 0, st->stream>>>(loss, dlogits, logits, targets, rows, scale, grad_scale);
    LAUNCHED(st, "mse_kernel");
}

// ----------------------------------------------------------------------------
// optimizer

/* Block partial sums of squares (double per thread) over rows whose touched flag is set. */
__global__ void sumsq_partial_kernel(double *partials, const float *x, size_t rows, size_t row_len,
                                     const uint8_t *touched) {
    __shared__ double shared_d[32];
    double acc = 0.0;
    size_t n = rows * row_len;
    EACH(i, n) {
        if (touched && !touched[i / row_len]) continue;
        float v = x[i];
        acc += (double)(v * v);
    }
    acc = block_sum_d(acc, shared_d);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}
__global__ void sumsq_final_kernel(double *result, const double *partials, int count) {
    double acc = 0.0;
    for (int i = 0; i < count; i++) acc += partials[i];
    *result = acc;
}

static double cuda_sumsq(backend *be, const float *x, size_t rows, size_t row_len, const uint8_t *touched) {
    cuda_state *st = state_of(be);
    if (st->failed) return NAN;
    size_t n = rows * row_len;
    if (!n) return 0.0;
    unsigned blocks = blocks_for(n, 256);
    if (blocks > SUMSQ_BLOCKS) blocks = SUMSQ_BLOCKS;
    sumsq_partial_kernel<<<blocks, 256, 0, st->stream>>>(st->d_partials, x, rows, row_len, touched);
    if (LAUNCHED(st, "sumsq_partial_kernel") != 0) return NAN;
    sumsq_final_kernel<<<1, 1, 0, st->stream>>>(st->d_partials + SUMSQ_BLOCKS, st->d_partials, (int)blocks);
    if (LAUNCHED(st, "sumsq_final_kernel") != 0 ||
        CUDA_OK(st, cudaMemcpyAsync(st->h_result, st->d_partials + SUMSQ_BLOCKS, sizeof(double),
                                    cudaMemcpyDeviceToHost, st->stream)) != 0 ||
        CUDA_OK(st, cudaStreamSynchronize(st->stream)) != 0)
        return NAN;
    return *st->h_result;
}

/* torch.optim.AdamW, operation for operation as backend/cpu.c; the _rn intrinsics keep nvcc
 * from fusing multiply-adds, which the CPU build (ISO C, no contraction) does not do either,
 * so updates match the CPU's bit for bit given the same gradients. */
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n, size_t row_len,
                             const uint8_t *touched, backend_adamw_args a) {
    float one_minus_b1 = __fsub_rn(1.0f, a.beta1), one_minus_b2 = __fsub_rn(1.0f, a.beta2);
    EACH(i, n) {
        float p = __fmul_rn(param[i], a.decay), mi, vi;
        int untouched = touched && !touched[i / row_len];
        if (untouched && a.l2 == 0.0f) {   /* zero gradient: the moments only decay */
            mi = __fmul_rn(m[i], a.beta1);
            vi = __fmul_rn(v[i], a.beta2);
        } else {
            /* Adam's L2 decay joins the gradient (backend.h); decay is 1 then */
            float g = untouched ? 0.0f : __fmul_rn(grad[i], a.grad_scale);
            if (a.l2 != 0.0f) g = __fadd_rn(g, __fmul_rn(a.l2, param[i]));
            mi = __fadd_rn(__fmul_rn(m[i], a.beta1), __fmul_rn(g, one_minus_b1));
            vi = __fadd_rn(__fmul_rn(v[i], a.beta2), __fmul_rn(__fmul_rn(g, g), one_minus_b2));
        }
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bias_correction2_sqrt), a.eps);
        param[i] = __fadd_rn(p, __fmul_rn(-a.step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
    }
}

static void cuda_adamw(backend *be, float *param, const float *grad, float *m, float *v, size_t rows,
                       size_t row_len, const uint8_t *touched, const backend_adamw_args *args) {
    cuda_state *st = state_of(be);
    size_t n = rows * row_len;
    if (st->failed || !n) return;
    adamw_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(param, grad, m, v, n, row_len, touched, *args);
    LAUNCHED(st, "adamw_kernel");
}

/* torch.optim.SGD, operation for operation as backend/cpu.c */
__global__ void sgd_kernel(float *param, const float *grad, float *buf, size_t n, size_t row_len,
                           const uint8_t *touched, backend_sgd_args a) {
    float keep = __fsub_rn(1.0f, a.dampening);
    EACH(i, n) {
        float d = touched && !touched[i / row_len] ? 0.0f : __fmul_rn(grad[i], a.grad_scale);
        if (a.weight_decay != 0.0f) d = __fadd_rn(d, __fmul_rn(a.weight_decay, param[i]));
        if (buf) {
            float b = a.first ? d : __fadd_rn(__fmul_rn(buf[i], a.momentum), __fmul_rn(d, keep));
            buf[i] = b;
            d = a.nesterov ? __fadd_rn(d, __fmul_rn(a.momentum, b)) : b;
        }
        param[i] = __fadd_rn(param[i], __fmul_rn(-a.lr, d));
    }
}

static void cuda_sgd(backend *be, float *param, const float *grad, float *momentum_buf, size_t rows,
                     size_t row_len, const uint8_t *touched, const backend_sgd_args *args) {
    cuda_state *st = state_of(be);
    size_t n = rows * row_len;
    if (st->failed || !n) return;
    sgd_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(param, grad, args->momentum != 0 ? momentum_buf : NULL, n,
                                                           row_len, touched, *args);
    LAUNCHED(st, "sgd_kernel");
}

// ----------------------------------------------------------------------------
// the model variants: frozen products, plain embeddings, ReLU, BCE

static void cuda_matmul_backward_input(backend *be, float *dinp, const float *dout, const float *weight,
                                       int N, int IC, int OC, int accumulate) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    const __nv_bfloat16 *d16, *w16;
    if (operands_bf16(st, dout, (size_t)N * OC, &d16, 0, weight, (size_t)OC * IC, &w16, 1) != 0) return;
    gemm(st, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, 1.0f, weight, w16, IC, dout, d16, OC, accumulate ? 1.0f : 0.0f,
         dinp, IC);
}

__global__ void embedding_lookup_forward_kernel(float *out, const int32_t *ids, const float *wte, size_t N, int C) {
    EACH(i, N * C) out[i] = wte[(size_t)ids[i / C] * C + i % C];
}

static void cuda_embedding_lookup_forward(backend *be, float *out, const int32_t *ids, const float *wte, int N, int C) {
    cuda_state *st = state_of(be);
    if (st->failed || N <= 0) return;
    embedding_lookup_forward_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, st->stream>>>(out, ids, wte, (size_t)N, C);
    LAUNCHED(st, "embedding_lookup_forward_kernel");
}

static void cuda_embedding_lookup_backward(backend *be, float *dwte, uint8_t *wte_touched, const float *dout,
                                           const int32_t *ids, int N, int C, int padding_idx) {
    cuda_state *st = state_of(be);
    if (st->failed || N <= 0) return;
    embedding_backward_wte_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, st->stream>>>(dwte, wte_touched, dout, ids,
                                                                                        (size_t)N, C, padding_idx);
    LAUNCHED(st, "embedding_backward_wte_kernel");
}

__global__ void relu_forward_kernel(float *out, const float *inp, size_t n) {
    EACH(i, n) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}
__global__ void relu_backward_kernel(float *dinp, const float *out, const float *dout, size_t n) {
    EACH(i, n) dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

static void cuda_relu_forward(backend *be, float *out, const float *inp, size_t n) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    relu_forward_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, inp, n);
    LAUNCHED(st, "relu_forward_kernel");
}
static void cuda_relu_backward(backend *be, float *dinp, const float *out, const float *dout, size_t n) {
    cuda_state *st = state_of(be);
    if (st->failed || !n) return;
    relu_backward_kernel<<<blocks_for(n, 256), 256, 0, st->stream>>>(dinp, out, dout, n);
    LAUNCHED(st, "relu_backward_kernel");
}

__global__ void bce_kernel(float *loss, float *dlogits, const float *logits, const float *targets, int rows,
                           float scale, float grad_scale) {
    __shared__ double shared_d[32];
    double total = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        double x = logits[r], y = targets[r];
        total += (x > 0 ? x : 0) - x * y + log1p(exp(-fabs(x)));
        double sigmoid = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
        dlogits[r] = (float)(grad_scale * (sigmoid - y));
    }
    total = block_sum_d(total, shared_d);
    if (threadIdx.x == 0) *loss += (float)(scale * total);
}

static void cuda_bce_with_logits(backend *be, float *loss, float *dlogits, const float *logits, const float *targets,
                                 int rows, float scale, float grad_scale) {
    cuda_state *st = state_of(be);
    if (st->failed || rows <= 0) return;
    bce_kernel<<<1, LOSS_THREADS, 0, st->stream>>>(loss, dlogits, logits, targets, rows, scale, grad_scale);
    LAUNCHED(st, "bce_kernel");
}

// ----------------------------------------------------------------------------
// recurrent layers: per step one cuBLAS product over the running sequences (the first n of
// `order`: the host knows n from sorted_lengths) and one kernel for the gates

/* The state rows i < n and their sequences' rows at step s (backend/cpu.c's rnn_row). */
__device__ __forceinline__ size_t rnn_row(const int32_t *order, const int32_t *lengths, int i, int s, int T,
                                          int reverse) {
    int b = order[i], len = lengths[b];
    return (size_t)b * T + (size_t)(reverse ? len - 1 - s : s);
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

/* hh [n, G*H] = h W_hh^T (no bias yet); gates, state and outputs of step s. */
__global__ void rnn_forward_kernel(backend_rnn_args a, int n, int s, float *h, float *c, const float *hh) {
    int H = a.H, G = a.kind == BACKEND_LSTM ? 4 : 3;
    EACH(e, (size_t)n * H) {
        int i = (int)(e / H), k = (int)(e % H);
        size_t row = rnn_row(a.order, a.lengths, i, s, a.T, a.reverse);
        const float *x = a.xproj + row * a.xproj_stride, *hr = hh + (size_t)i * G * H;
        float *gates = a.gates + row * 4 * (size_t)H, hp = h[(size_t)i * H + k], next;
        a.hprev[row * H + k] = hp;
        if (a.kind == BACKEND_GRU) {
            float r = sigmoid_f(x[k] + hr[k] + a.b_hh[k]);
            float z = sigmoid_f(x[H + k] + hr[H + k] + a.b_hh[H + k]);
            float hn = hr[2 * H + k] + a.b_hh[2 * H + k];
            float nn = tanhf(x[2 * H + k] + r * hn);
            next = (hp - nn) * z + nn;
            gates[k] = r; gates[H + k] = z; gates[2 * H + k] = nn; gates[3 * H + k] = hn;
        } else {
            float ig = sigmoid_f(x[k] + hr[k] + a.b_hh[k]);
            float fg = sigmoid_f(x[H + k] + hr[H + k] + a.b_hh[H + k]);
            float gg = tanhf(x[2 * H + k] + hr[2 * H + k] + a.b_hh[2 * H + k]);
            float og = sigmoid_f(x[3 * H + k] + hr[3 * H + k] + a.b_hh[3 * H + k]);
            float cy = fg * c[(size_t)i * H + k] + ig * gg;
            next = og * tanhf(cy);
            gates[k] = ig; gates[H + k] = fg; gates[2 * H + k] = gg; gates[3 * H + k] = og;
            c[(size_t)i * H + k] = cy;
            a.cell[row * H + k] = cy;
        }
        h[(size_t)i * H + k] = next;
        a.out[row * a.out_stride + k] = next;
    }
}

/* rows[order[i]] (stride) <-> state[i] (H floats), one direction or the other */
__global__ void rnn_scatter_kernel(float *rows, int stride, float *state, const int32_t *order, int B, int H,
                                   int to_rows) {
    EACH(e, (size_t)B * H) {
        int i = (int)(e / H), k = (int)(e % H);
        float *r = rows + (size_t)order[i] * stride + k;
        if (to_rows) *r = state[e];
        else state[e] = *r;
    }
}

/* The running count at step s from the host's sorted lengths. */
static int rnn_active(const backend_rnn_args *a, int n, int s) {
    while (n > 0 && a->sorted_lengths[n - 1] <= s) n--;
    return n;
}

static void cuda_rnn_forward(backend *be, const backend_rnn_args *a) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    int B = a->B, H = a->H, GH = (a->kind == BACKEND_LSTM ? 4 : 3) * H;
    float *h = a->scratch, *c = h + (size_t)B * H, *hh = c + (size_t)B * H;
    if (CUDA_OK(st, cudaMemsetAsync(h, 0, 2 * (size_t)B * H * sizeof(float), st->stream)) != 0) return;
    const __nv_bfloat16 *w16 = st->precision == BACKEND_CUDA_BF16 ? as_bf16(st, 0, a->w_hh, (size_t)GH * H) : NULL;
    int n = B;
    for (int s = 0; s < a->T && !st->failed; s++) {
        n = rnn_active(a, n, s);
        if (n == 0) break;
        const __nv_bfloat16 *h16 = w16 ? as_bf16(st, 1, h, (size_t)n * H) : NULL;
        gemm(st, CUBLAS_OP_T, CUBLAS_OP_N, GH, n, H, 1.0f, a->w_hh, w16, H, h, h16, H, 0.0f, hh, GH);
        rnn_forward_kernel<<<blocks_for((size_t)n * H, 256), 256, 0, st->stream>>>(*a, n, s, h, c, hh);
        if (LAUNCHED(st, "rnn_forward_kernel") != 0) return;
    }
    if (a->h_last && !st->failed) {
        rnn_scatter_kernel<<<blocks_for((size_t)B * H, 256), 256, 0, st->stream>>>(a->h_last, a->h_last_stride, h,
                                                                                   a->order, B, H, 1);
        LAUNCHED(st, "rnn_scatter_kernel");
    }
}

/* Gate gradients of step s (backend/cpu.c's rnn_backward_rows): dxproj and dhh rows, this step's
 * dhh rows for the product below, and dh's direct part (GRU: g z; LSTM: 0), dc. */
__global__ void rnn_backward_kernel(backend_rnn_args a, int n, int s, float *dh, float *dc, float *dstep) {
    int H = a.H, G = a.kind == BACKEND_LSTM ? 4 : 3, GH = G * H;
    EACH(e, (size_t)n * H) {
        int i = (int)(e / H), k = (int)(e % H);
        size_t row = rnn_row(a.order, a.lengths, i, s, a.T, a.reverse);
        const float *gates = a.gates + row * 4 * (size_t)H;
        float *dx = a.dxproj + row * a.dxproj_stride, *dhh = a.dhh + row * GH, *ds = dstep + (size_t)i * GH;
        float g = dh[e] + (a.dout ? a.dout[row * a.dout_stride + k] : 0.0f);
        if (a.kind == BACKEND_GRU) {
            float r = gates[k], z = gates[H + k], nn = gates[2 * H + k], hn = gates[3 * H + k];
            float hp = a.hprev[row * H + k];
            float dn = g * (1.0f - z) * (1.0f - nn * nn);
            float dz = g * (hp - nn) * z * (1.0f - z);
            float dr = dn * hn * r * (1.0f - r);
            dx[k] = dr; dx[H + k] = dz; dx[2 * H + k] = dn;
            ds[k] = dhh[k] = dr; ds[H + k] = dhh[H + k] = dz; ds[2 * H + k] = dhh[2 * H + k] = dn * r;
            dh[e] = g * z;
        } else {
            float ig = gates[k], fg = gates[H + k], gg = gates[2 * H + k], og = gates[3 * H + k];
            float tc = tanhf(a.cell[row * H + k]);
            float cp = s == 0 ? 0.0f : a.cell[(a.reverse ? row + 1 : row - 1) * H + k];
            float dct = dc[e] + g * og * (1.0f - tc * tc);
            float di = dct * gg * ig * (1.0f - ig), df = dct * cp * fg * (1.0f - fg);
            float dg = dct * ig * (1.0f - gg * gg), dog = g * tc * og * (1.0f - og);
            dx[k] = di; dx[H + k] = df; dx[2 * H + k] = dg; dx[3 * H + k] = dog;
            ds[k] = dhh[k] = di; ds[H + k] = dhh[H + k] = df; ds[2 * H + k] = dhh[2 * H + k] = dg;
            ds[3 * H + k] = dhh[3 * H + k] = dog;
            dc[e] = dct * fg;
            dh[e] = 0.0f;
        }
    }
}

static void cuda_rnn_backward(backend *be, const backend_rnn_args *a) {
    cuda_state *st = state_of(be);
    if (st->failed) return;
    int B = a->B, H = a->H, GH = (a->kind == BACKEND_LSTM ? 4 : 3) * H;
    float *dh = a->scratch, *dc = dh + (size_t)B * H, *dstep = dc + (size_t)B * H;
    if (CUDA_OK(st, cudaMemsetAsync(dh, 0, 2 * (size_t)B * H * sizeof(float), st->stream)) != 0) return;
    if (a->dh_last) {
        rnn_scatter_kernel<<<blocks_for((size_t)B * H, 256), 256, 0, st->stream>>>((float *)a->dh_last,
                                                                                   a->dh_last_stride, dh, a->order,
                                                                                   B, H, 0);
        if (LAUNCHED(st, "rnn_scatter_kernel") != 0) return;
    }
    const __nv_bfloat16 *w16 = st->precision == BACKEND_CUDA_BF16 ? as_bf16(st, 0, a->w_hh, (size_t)GH * H) : NULL;
    int longest = B > 0 ? a->sorted_lengths[0] : 0, n = 0;
    for (int s = longest - 1; s >= 0 && !st->failed; s--) {
        while (n < B && a->sorted_lengths[n] > s) n++;
        rnn_backward_kernel<<<blocks_for((size_t)n * H, 256), 256, 0, st->stream>>>(*a, n, s, dh, dc, dstep);
        if (LAUNCHED(st, "rnn_backward_kernel") != 0) return;
        const __nv_bfloat16 *d16 = w16 ? as_bf16(st, 1, dstep, (size_t)n * GH) : NULL;
        /* dh[n, H] += dstep[n, GH] . W_hh: the column-major view of matmul_backward's dinp */
        gemm(st, CUBLAS_OP_N, CUBLAS_OP_N, H, n, GH, 1.0f, a->w_hh, w16, H, dstep, d16, GH, 1.0f, dh, H);
    }
}

// ----------------------------------------------------------------------------
// data-parallel collectives (NCCL)

#ifdef BP_HAVE_NCCL
static int check_nccl(cuda_state *st, ncclResult_t r, const char *call, const char *file, int line) {
    if (r == ncclSuccess) return 0;
    record_error(st, file, line, "%.*s failed: %s", name_length(call), call, ncclGetErrorString(r));
    return -1;
}
/* NCCL_OK(st, call): 0, or -1 with the called function and NCCL's text recorded. */
#define NCCL_OK(st, call) check_nccl((st), (call), #call, __FILE__, __LINE__)

/* backend.h: rank 0's ncclUniqueId, for the caller to send to every rank. */
static int cuda_collective_id(backend *be, void *id, size_t cap, size_t *len, bp_err *err) {
    cuda_state *st = state_of(be);
    ncclUniqueId unique;
    if (cap < sizeof unique) return bp_err_set(err, "cuda backend: an NCCL id needs %zu bytes", sizeof unique);
    if (NCCL_OK(st, ncclGetUniqueId(&unique))) return bp_err_set(err, "cuda backend: %s", st->error);
    memcpy(id, &unique, sizeof unique);
    *len = sizeof unique;
    return 0;
}

/* backend.h: this rank's communicator of the run, on this backend's device. */
static int cuda_collective_init(backend *be, int rank, int size, const void *id, size_t len, bp_err *err) {
    cuda_state *st = state_of(be);
    ncclUniqueId unique;
    if (len != sizeof unique) return bp_err_set(err, "cuda backend: an NCCL id of %zu bytes, not %zu", len, sizeof unique);
    if (st->nccl) return bp_err_set(err, "cuda backend: already in a data-parallel run");
    memcpy(&unique, id, sizeof unique);
    if (NCCL_OK(st, ncclCommInitRank(&st->nccl, size, unique, rank))) return bp_err_set(err, "cuda backend: %s", st->error);
    return 0;
}

/* backend.h: in place, on the backend's stream, so the sums queue behind the backward. */
static void nccl_allreduce(backend *be, void *x, size_t n, ncclDataType_t type, ncclRedOp_t op, const char *name) {
    cuda_state *st = state_of(be);
    if (st->failed || n == 0) return;
    if (!st->nccl) {
        record_error(st, __FILE__, __LINE__, "%s before collective_init", name);
        return;
    }
    NCCL_OK(st, ncclAllReduce(x, x, n, type, op, st->nccl, st->stream));
}
static void cuda_allreduce_sum(backend *be, float *x, size_t n) {
    nccl_allreduce(be, x, n, ncclFloat32, ncclSum, "allreduce_sum");
}
/* Row flags are 0 or 1, so their maximum is their or. */
static void cuda_allreduce_or(backend *be, uint8_t *x, size_t n) {
    nccl_allreduce(be, x, n, ncclUint8, ncclMax, "allreduce_or");
}

/* A failure NCCL saw after the call returned (a peer gone, a network error). */
static void nccl_async_check(cuda_state *st) {
    ncclResult_t async = ncclSuccess;
    if (st->nccl && !st->failed && NCCL_OK(st, ncclCommGetAsyncError(st->nccl, &async)) == 0)
        NCCL_OK(st, async);
}
#endif

// ----------------------------------------------------------------------------
// life cycle

/* backend.h: wait for the queue, then the first failure, kept for good (a CUDA context that met
 * a device fault is unusable; and a cuBLAS or argument error leaves results the model reads). */
static int cuda_check(backend *be, bp_err *err) {
    cuda_state *st = state_of(be);
    if (!st->failed) CUDA_OK(st, cudaStreamSynchronize(st->stream));
#ifdef BP_HAVE_NCCL
    nccl_async_check(st);
#endif
    if (!st->failed) return 0;
    return bp_err_set(err, "cuda backend: %s", st->error);
}

static void cuda_destroy(backend *be) {
    if (!be) return;
    cuda_state *st = state_of(be);
    if (st) {
        /* best effort: the process is usually ending, and there is nobody to report to */
        if (st->stream) cudaStreamSynchronize(st->stream);
        for (int i = 0; i < BF16_SLOTS; i++) cudaFree(st->bf16[i]);
        cudaFree(st->pair_ptrs);
        cudaFree(st->colsum);
        cudaFree(st->d_partials);
        if (st->h_result) cudaFreeHost(st->h_result);
        for (int i = 0; i < 2; i++) {
            if (st->staging[i]) cudaFreeHost(st->staging[i]);
            if (st->staging_free[i]) cudaEventDestroy(st->staging_free[i]);
        }
        if (st->cublas) cublasDestroy(st->cublas);
#ifdef BP_HAVE_NCCL
        if (st->nccl) ncclCommDestroy(st->nccl);
#endif
        if (st->stream) cudaStreamDestroy(st->stream);
        cudaGetLastError();
        free(st);
    }
    free(be);
}

/* Copy at most size-1 bytes of a formatted line into buf (when there is one). */
static void say(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t size, const char *fmt, ...) {
    if (!buf || !size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

extern "C" int backend_cuda_available(char *why, size_t why_size) {
    int count = 0;   /* with no driver cudaGetDeviceCount fails and leaves this untouched */
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        const char *what = e == cudaErrorInsufficientDriver ? "no CUDA driver"
                         : e == cudaErrorNoDevice ? "no CUDA device" : "CUDA unusable";
        say(why, why_size, "%s (cudaGetDeviceCount: error %d %s: %s)", what, (int)e, cudaGetErrorName(e),
            cudaGetErrorString(e));
        cudaGetLastError();
        return 0;
    }
    if (count <= 0) {
        say(why, why_size, "no CUDA device (cudaGetDeviceCount found 0)");
        return 0;
    }
    /* a device that is listed may still be unusable (exclusive mode, no kernel image for its
     * architecture): run one tiny kernel on it */
    cudaDeviceProp prop;
    int *flag = NULL, host_flag = 0;
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess ||
        (e = cudaMalloc((void **)&flag, sizeof(int))) != cudaSuccess) {
        say(why, why_size, "CUDA device 0 unusable (error %d %s: %s)", (int)e, cudaGetErrorName(e), cudaGetErrorString(e));
        cudaGetLastError();
        return 0;
    }
    probe_kernel<<<1, 1>>>(flag);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(&host_flag, flag, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(flag);
    if (e != cudaSuccess || host_flag != 1) {
        say(why, why_size, "CUDA device 0 (%s, sm_%d%d) cannot run this build's kernels (sm_80, sm_90): error %d %s",
            prop.name, prop.major, prop.minor, (int)e, cudaGetErrorName(e));
        cudaGetLastError();
        return 0;
    }
    say(why, why_size, "%s", prop.name);
    return 1;
}

extern "C" int backend_cuda_parse_precision(const char *name, backend_cuda_precision *out, bp_err *err) {
    if (name && strcmp(name, "fp32") == 0) *out = BACKEND_CUDA_FP32;
    else if (name && strcmp(name, "tf32") == 0) *out = BACKEND_CUDA_TF32;
    else if (name && strcmp(name, "bf16") == 0) *out = BACKEND_CUDA_BF16;
    else return bp_err_set(err, "precision wants fp32, tf32 or bf16, got '%s'", name ? name : "(null)");
    return 0;
}

static int is_cuda(const backend *be) { return be && be->name && strcmp(be->name, "cuda") == 0; }

extern "C" int backend_cuda_set_precision(backend *be, backend_cuda_precision precision, bp_err *err) {
    if (!is_cuda(be)) return bp_err_set(err, "precision is a cuda backend setting (backend is %s)", be ? be->name : "none");
    if (precision < BACKEND_CUDA_FP32 || precision > BACKEND_CUDA_BF16)
        return bp_err_set(err, "unknown cuda precision %d", (int)precision);
    state_of(be)->precision = precision;
    return 0;
}

extern "C" const char *backend_cuda_precision_name(const backend *be) {
    static const char *names[] = { "fp32", "tf32", "bf16" };
    return is_cuda(be) ? names[((const cuda_state *)be->state)->precision] : "fp32";
}

extern "C" const char *backend_cuda_device_name(const backend *be) {
    return is_cuda(be) ? ((const cuda_state *)be->state)->device_name : "";
}


/* Fill n floats with a pattern that is not all zeros (the product's speed does not depend on
 * the values, but zeros could let a library take a shortcut). */
__global__ void fill_kernel(float *x, size_t n, float scale) {
    EACH(i, n) x[i] = scale * (float)((i * 2654435761u) % 1000u) * 1e-3f;
}

extern "C" double backend_cuda_gemm_tflops(backend *be, int m, int n, int k, int reps, bp_err *err) {
    if (!is_cuda(be)) { bp_err_set(err, "gemm rate needs the cuda backend"); return -1; }
    cuda_state *st = state_of(be);
    if (m <= 0 || n <= 0 || k <= 0 || reps <= 0) { bp_err_set(err, "gemm rate: bad shape"); return -1; }
    float *A = (float *)cuda_alloc(be, (size_t)m * k * sizeof(float), err);
    float *B = A ? (float *)cuda_alloc(be, (size_t)k * n * sizeof(float), err) : NULL;
    float *C = B ? (float *)cuda_alloc(be, (size_t)m * n * sizeof(float), err) : NULL;
    cudaEvent_t start = NULL, stop = NULL;
    double tflops = -1;
    if (C && CUDA_OK(st, cudaEventCreate(&start)) == 0 && CUDA_OK(st, cudaEventCreate(&stop)) == 0) {
        fill_kernel<<<blocks_for((size_t)m * k, 256), 256, 0, st->stream>>>(A, (size_t)m * k, 1.0f);
        fill_kernel<<<blocks_for((size_t)k * n, 256), 256, 0, st->stream>>>(B, (size_t)k * n, -1.0f);
        LAUNCHED(st, "fill_kernel");
        /* the operand conversion is part of a bf16 product in this backend, so it is timed too */
        float ms = 0;
        for (int r = -1; r < reps && !st->failed; r++) {
            if (r == 0) CUDA_OK(st, cudaEventRecord(start, st->stream));
            const __nv_bfloat16 *a16, *b16;
            if (operands_bf16(st, A, (size_t)m * k, &a16, 0, B, (size_t)k * n, &b16, 1) != 0) break;
            gemm(st, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, 1.0f, A, a16, m, B, b16, k, 0.0f, C, m);
        }
        if (!st->failed && CUDA_OK(st, cudaEventRecord(stop, st->stream)) == 0 &&
            CUDA_OK(st, cudaEventSynchronize(stop)) == 0 && CUDA_OK(st, cudaEventElapsedTime(&ms, start, stop)) == 0 &&
            ms > 0)
            tflops = 2.0 * m * n * k * reps / (ms * 1e-3) / 1e12;
    }
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    cuda_free(be, A);
    cuda_free(be, B);
    cuda_free(be, C);
    if (tflops < 0 && st->failed) bp_err_set(err, "gemm rate: %s", st->error);
    return tflops;
}

extern "C" backend *backend_cuda_create(bp_err *err) {
    backend_cuda_precision precision = BACKEND_CUDA_FP32;
    const char *env = getenv("BERTPIPE_PRECISION");
    if (env && *env && backend_cuda_parse_precision(env, &precision, err) != 0) {
        bp_err_set(err, "BERTPIPE_PRECISION wants fp32, tf32 or bf16, got '%s'", env);
        return NULL;
    }
    backend *be = (backend *)calloc(1, sizeof *be);
    cuda_state *st = (cuda_state *)calloc(1, sizeof *st);
    if (!be || !st) {
        free(be);
        free(st);
        bp_err_set(err, "out of memory creating the cuda backend");
        return NULL;
    }
    be->state = st;
    be->name = "cuda";
    be->host_visible = 0;
    be->destroy = cuda_destroy;
    st->precision = precision;
    cudaDeviceProp prop;
    if (CUDA_OK(st, cudaSetDevice(0)) == 0 && CUDA_OK(st, cudaGetDeviceProperties(&prop, 0)) == 0)
        snprintf(st->device_name, sizeof st->device_name, "%s", prop.name);
    if (!st->failed) CUDA_OK(st, cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    if (!st->failed) CUBLAS_OK(st, cublasCreate(&st->cublas));
    if (!st->failed) CUBLAS_OK(st, cublasSetStream(st->cublas, st->stream));
    for (int i = 0; i < 2 && !st->failed; i++) {
        CUDA_OK(st, cudaMallocHost(&st->staging[i], STAGING_BYTES));
        if (!st->failed) CUDA_OK(st, cudaEventCreateWithFlags(&st->staging_free[i], cudaEventDisableTiming));
    }
    if (!st->failed) CUDA_OK(st, cudaMalloc((void **)&st->d_partials, (SUMSQ_BLOCKS + 1) * sizeof(double)));
    if (!st->failed) CUDA_OK(st, cudaMallocHost((void **)&st->h_result, sizeof(double)));
    if (st->failed) {
        bp_err_set(err, "cannot start the cuda backend: %s", st->error);
        cuda_destroy(be);
        return NULL;
    }
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->zero = cuda_zero;
    be->copy_rows = cuda_copy_rows;
    be->matmul_forward = cuda_matmul_forward;
    be->matmul_backward = cuda_matmul_backward;
    be->embedding_forward = cuda_embedding_forward;
    be->embedding_backward = cuda_embedding_backward;
    be->embedding_zero_grad = cuda_embedding_zero_grad;
    be->add_layernorm_forward = cuda_add_layernorm_forward;
    be->add_layernorm_backward = cuda_add_layernorm_backward;
    be->gelu_forward = cuda_gelu_forward;
    be->gelu_backward = cuda_gelu_backward;
    be->tanh_forward = cuda_tanh_forward;
    be->tanh_backward = cuda_tanh_backward;
    be->dropout = cuda_dropout;
    be->attention_forward = cuda_attention_forward;
    be->attention_backward = cuda_attention_backward;
    be->cross_entropy = cuda_cross_entropy;
    be->mse = cuda_mse;
    be->sumsq = cuda_sumsq;
    be->adamw = cuda_adamw;
    be->sgd = cuda_sgd;
    be->matmul_backward_input = cuda_matmul_backward_input;
    be->embedding_lookup_forward = cuda_embedding_lookup_forward;
    be->embedding_lookup_backward = cuda_embedding_lookup_backward;
    be->relu_forward = cuda_relu_forward;
    be->relu_backward = cuda_relu_backward;
    be->bce_with_logits = cuda_bce_with_logits;
    be->rnn_forward = cuda_rnn_forward;
    be->rnn_backward = cuda_rnn_backward;
    be->check = cuda_check;
#ifdef BP_HAVE_NCCL
    be->collective_id = cuda_collective_id;
    be->collective_init = cuda_collective_init;
    be->allreduce_sum = cuda_allreduce_sum;
    be->allreduce_or = cuda_allreduce_or;
#endif
    return be;
}
