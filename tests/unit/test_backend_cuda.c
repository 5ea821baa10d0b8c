/* test_backend_cuda.c — the parts of the CUDA backend that answer without a GPU: precision
 * names, the BERTPIPE_PRECISION check, device probing that reports why (error 35 with no
 * driver) instead of crashing, and the cuda-only setters refusing another backend. The numeric
 * parity of every op needs a GPU and lives in tests/gpu/test_gpu_parity.c (make test-gpu).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/log.h"
#include "tap.h"
#ifdef BP_HAVE_CUDA
#include "backend/cuda.h"
#endif

int main(void) {
#ifndef BP_HAVE_CUDA
    tap_ok(1, "cuda backend # skip this build has no CUDA backend (built without nvcc)");
#else
    bp_err err;
    backend_cuda_precision p = BACKEND_CUDA_BF16;
    const char *names[] = { "fp32", "tf32", "bf16" };
    for (int i = 0; i < 3; i++) {
        int rc = backend_cuda_parse_precision(names[i], &p, &err);
        tap_ok(rc == 0 && (int)p == i, "precision '%s' parses", names[i]);
    }
    err.msg[0] = 0;
    tap_ok(backend_cuda_parse_precision("fp16", &p, &err) == -1 && strstr(err.msg, "'fp16'"),
           "precision 'fp16' is refused, naming it: %s", err.msg);
    tap_ok(backend_cuda_parse_precision(NULL, &p, &err) == -1, "a missing precision is refused");

    /* an unknown BERTPIPE_PRECISION stops creation before any device is touched */
    setenv("BERTPIPE_PRECISION", "float8", 1);
    err.msg[0] = 0;
    backend *be = backend_cuda_create(&err);
    tap_ok(be == NULL && strstr(err.msg, "BERTPIPE_PRECISION") && strstr(err.msg, "float8"),
           "BERTPIPE_PRECISION=float8 is an error: %s", err.msg);
    if (be) be->destroy(be);
    unsetenv("BERTPIPE_PRECISION");

    char why[512] = "";
    int available = backend_cuda_available(why, sizeof why);
    tap_ok(why[0] != 0, "backend_cuda_available says something either way: %s", why);
    err.msg[0] = 0;
    be = backend_cuda_create(&err);
    if (available) {
        tap_ok(be != NULL && strcmp(be->name, "cuda") == 0, "a GPU answers: the cuda backend starts");
        tap_ok(be && strcmp(backend_cuda_precision_name(be), "fp32") == 0, "precision starts at fp32");
        tap_ok(be && be->check(be, &err) == 0, "no error recorded after creation");
    } else {
        /* no usable GPU: creation fails with one line saying which call failed, no crash */
        tap_ok(be == NULL && err.msg[0] != 0 && !strchr(err.msg, '\n'),
               "without a GPU creation fails with one line: %s", err.msg);
    }
    if (be) be->destroy(be);

    backend *cpu = backend_cpu_create(1, &err);
    if (tap_ok(cpu != NULL, "cpu backend")) {
        tap_ok(backend_cuda_set_precision(cpu, BACKEND_CUDA_BF16, &err) == -1 && strstr(err.msg, "cpu"),
               "setting a precision on the cpu backend is refused: %s", err.msg);
        tap_ok(backend_cuda_gemm_tflops(cpu, 8, 8, 8, 1, &err) < 0, "gemm rate refuses the cpu backend");
        cpu->destroy(cpu);
    }
#endif
    return tap_done();
}
