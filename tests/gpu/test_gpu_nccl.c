/* test_gpu_nccl.c — the cuda backend's data-parallel collectives (backend.h: collective_id,
 * collective_init, allreduce_sum, allreduce_or) on NCCL, in a run of one rank on one GPU: the id
 * and the communicator come up, a sum over one rank leaves every float as it was (bit for bit,
 * odd sizes included), the or of 0/1 flags too, and a sum before collective_init is a failure
 * the check op reports by name. Sums over two ranks are tests/gpu/data_parallel.bats' (2 GPUs).
 * Built and run only by `make test-gpu` (tests/gpu/gpu.mk); with no usable GPU, or a build
 * without nvcc or NCCL, it prints one skipped check and exits 0.
 * Must never need /work/shared or files outside tests/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/log.h"
#include "tap.h"
#ifdef BP_HAVE_CUDA
#include "backend/cuda.h"
#endif

#ifdef BP_HAVE_CUDA
/* x through allreduce_sum (one rank) and back: the same floats. */
static void sum_unchanged(backend *be, size_t n) {
    bp_err err;
    float *host = malloc(n * sizeof *host), *back = malloc(n * sizeof *back);
    float *dev = be->alloc(be, n * sizeof *dev, &err);
    if (!tap_ok(host && back && dev, "%zu floats allocated", n)) goto done;
    for (size_t i = 0; i < n; i++) host[i] = (float)((double)(i % 977) * 0.37 - 100.0);
    be->upload(be, dev, host, n * sizeof *host);
    be->allreduce_sum(be, dev, n);
    int ok = be->check(be, &err) == 0;
    if (!tap_ok(ok, "allreduce_sum of %zu floats over one rank runs", n)) tap_diag("%s", err.msg);
    be->download(be, back, dev, n * sizeof *back);
    tap_ok(memcmp(host, back, n * sizeof *host) == 0, "allreduce_sum over one rank leaves %zu floats as they were", n);
done:
    be->free(be, dev);
    free(host);
    free(back);
}

static void or_unchanged(backend *be) {
    bp_err err;
    uint8_t flags[1001], back[1001];
    for (int i = 0; i < 1001; i++) flags[i] = (uint8_t)(i % 3 == 0);
    uint8_t *dev = be->alloc(be, sizeof flags, &err);
    if (!tap_ok(dev != NULL, "flags allocated")) return;
    be->upload(be, dev, flags, sizeof flags);
    be->allreduce_or(be, dev, sizeof flags);
    be->download(be, back, dev, sizeof back);
    tap_ok(be->check(be, &err) == 0 && memcmp(flags, back, sizeof flags) == 0, "allreduce_or over one rank keeps 0/1 flags");
    be->free(be, dev);
}

int main(void) {
    char why[512] = "";
    if (!backend_cuda_available(why, sizeof why)) {
        tap_ok(1, "NCCL collectives # skip no GPU: %s", why);
        return tap_done();
    }
    bp_err err;
    backend *be = backend_cuda_create(&err);
    if (!tap_ok(be != NULL, "cuda backend created")) return tap_diag("%s", err.msg), tap_done();
    if (!be->collective_init) {
        tap_ok(1, "NCCL collectives # skip this build has no NCCL (no nccl.h under CUDA_HOME)");
        be->destroy(be);
        return tap_done();
    }
    char id[512];
    size_t len = 0;
    int ok = be->collective_id(be, id, sizeof id, &len, &err) == 0 && be->collective_init(be, 0, 1, id, len, &err) == 0;
    if (!tap_ok(ok, "an NCCL id of %zu bytes and a communicator of one rank", len)) tap_diag("%s", err.msg);
    tap_ok(be->collective_init(be, 0, 1, id, len, &err) == -1 && strstr(err.msg, "already"), "a second collective_init is refused");
    if (ok) {
        sum_unchanged(be, 1);
        sum_unchanged(be, 1000003);
        or_unchanged(be);
    }
    be->destroy(be);
    /* a sum before collective_init: recorded, then reported by check with its name */
    backend *fresh = backend_cuda_create(&err);
    if (tap_ok(fresh != NULL, "a second cuda backend")) {
        float *x = fresh->alloc(fresh, 16 * sizeof *x, &err);
        fresh->allreduce_sum(fresh, x, 16);
        int rc = fresh->check(fresh, &err);
        tap_ok(rc == -1 && strstr(err.msg, "allreduce_sum before collective_init"), "a sum with no communicator fails: %s",
               rc ? err.msg : "(no error)");
        fresh->free(fresh, x);
        fresh->destroy(fresh);
    }
    return tap_done();
}
#else
int main(void) {
    tap_ok(1, "NCCL collectives # skip built without nvcc");
    return tap_done();
}
#endif
