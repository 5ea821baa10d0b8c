/* backend/cuda.h — the CUDA backend (common/backend/cuda.cu): the backend.h interface on one
 * NVIDIA GPU with cuBLAS and a few kernels, plus the settings only this backend has.
 *
 * C-compatible so that stages and tests written in C can call it; the functions exist only in
 * builds with nvcc (BP_HAVE_CUDA defined), so callers guard their use with #ifdef BP_HAVE_CUDA.
 * Must never: print or exit (errors are stored in the backend and reported through
 * its check op, backend.h), or be driven by two threads at once (backend.h).
 *
 * Errors: backend.h's ops return nothing, so the first failing CUDA or cuBLAS call is recorded
 * in the backend ("cublasGemmEx failed: CUBLAS_STATUS_... (backend/cuda.cu:123)"); every later
 * op does nothing, downloads fill their destination with NaN and sumsq returns NaN, so a loss or
 * gradient norm turns non-finite and the caller's existing checks stop; be->check(be, err)
 * reports the recorded failure, and the model calls it at the end of every pass.
 */
#ifndef BP_BACKEND_CUDA_H
#define BP_BACKEND_CUDA_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {   /* log.h and backend.h are C headers without guards of their own */
#endif
#include "backend/backend.h"
#include "base/log.h"

/* Matrix-product precision. Every other op (LayerNorm, softmax, losses, AdamW) and every stored
 * tensor stays float32 in all three: bf16 rounds only the inputs of each product (fp32 master
 * weights, fp32 accumulation). */
typedef enum backend_cuda_precision {
    BACKEND_CUDA_FP32 = 0,   /* cuBLAS with CUBLAS_COMPUTE_32F: no tensor-core down-conversion */
    BACKEND_CUDA_TF32 = 1,   /* CUBLAS_COMPUTE_32F_FAST_TF32: inputs rounded to tf32 (10-bit mantissa) */
    BACKEND_CUDA_BF16 = 2,   /* inputs converted to bf16, fp32 accumulation and output */
} backend_cuda_precision;

/* 1 when a GPU answers on this machine and can run this build's kernels (sm_80 / sm_90
 * binaries), else 0 with one line in why: e.g. "no CUDA driver (cudaGetDeviceCount: error 35
 * cudaErrorInsufficientDriver ...)". Uses the first visible device (CUDA_VISIBLE_DEVICES picks). */
int backend_cuda_available(char *why, size_t why_size);

/* Create the CUDA backend on the first visible device: one stream, one cuBLAS handle, pinned
 * staging buffers. The precision starts from the environment variable BERTPIPE_PRECISION
 * (fp32 | tf32 | bf16; unset: fp32). Caller owns the result (be->destroy(be)).
 * NULL with err filled when no device answers or BERTPIPE_PRECISION is not one of those. */
backend *backend_cuda_create(bp_err *err);

/* Parse "fp32", "tf32" or "bf16". Returns 0 with *out set, or -1 with err naming the value. */
int backend_cuda_parse_precision(const char *name, backend_cuda_precision *out, bp_err *err);
/* Set the precision of later matrix products (takes effect at the next op). be must be a CUDA
 * backend. Returns 0, or -1 with err when it is not. */
int backend_cuda_set_precision(backend *be, backend_cuda_precision precision, bp_err *err);
/* "fp32", "tf32" or "bf16": the current precision of a CUDA backend. */
const char *backend_cuda_precision_name(const backend *be);

/* Name of the GPU the backend runs on ("NVIDIA H100 80GB HBM3"); static storage of the backend. */
const char *backend_cuda_device_name(const backend *be);

/* Measured throughput, in TFLOP/s, of this backend's own matrix product in its current
 * precision: C[m, n] = A[m, k] B[k, n], `reps` times after one warm-up, timed with CUDA events.
 * The GEMM ceiling benchmarks compare model throughput with. Allocates and frees its operands.
 * Returns the rate, or -1 with err filled. */
double backend_cuda_gemm_tflops(backend *be, int m, int n, int k, int reps, bp_err *err);

#ifdef __cplusplus
}
#endif
#endif
