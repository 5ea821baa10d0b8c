/* backend/device.c — --device auto|cuda|cpu (see device.h).
 * Must never: print (why auto chose the CPU goes to the caller's note), or hand back the CPU
 * when cuda was asked for. */
#include "backend/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/fault.h"
#ifdef BP_HAVE_CUDA
#include "backend/cuda.h"
#endif

static backend *open_backend(const char *device, int threads, const char *precision, char *note, size_t note_size,
                             bp_err *err) {
    char why[256] = "";
    if (!precision) precision = "fp32";
    if (strcmp(precision, "fp32") && strcmp(precision, "tf32") && strcmp(precision, "bf16")) {
        bp_err_set(err, "--precision wants fp32, tf32 or bf16, got '%s'", precision);
        return NULL;
    }
    if (note && note_size) note[0] = 0;
    if (strcmp(device, "cpu") && strcmp(device, "auto") && strcmp(device, "cuda")) {
        bp_err_set(err, "--device wants auto, cuda or cpu, got '%s'", device);
        return NULL;
    }
#ifdef BP_HAVE_CUDA
    if (strcmp(device, "cpu") != 0) {
        if (backend_cuda_available(why, sizeof why)) {
            backend *be = backend_cuda_create(err);
            backend_cuda_precision p;
            if (be && (backend_cuda_parse_precision(precision, &p, err) || backend_cuda_set_precision(be, p, err))) {
                be->destroy(be);
                return NULL;
            }
            if (be && note)
                snprintf(note, note_size, "device: cuda (%s, %s)", backend_cuda_device_name(be), backend_cuda_precision_name(be));
            return be;
        }
    }
#else
    snprintf(why, sizeof why, "this build has no CUDA backend (built without nvcc)");
#endif
    if (strcmp(device, "cuda") == 0) {
        bp_err_set(err, "--device cuda: %s", why);
        return NULL;
    }
    if (strcmp(precision, "fp32")) {
        bp_err_set(err, "--precision %s needs the cuda backend; the cpu computes in fp32 (%s)", precision, why);
        return NULL;
    }
    backend *be = backend_cpu_create(threads, err);
    if (be && note) {
        if (strcmp(device, "auto") == 0) snprintf(note, note_size, "device: cpu (%s)", why);
        else snprintf(note, note_size, "device: cpu");
    }
    return be;
}

backend *bp_backend_open(const char *device, int threads, const char *precision, char *note, size_t note_size,
                         bp_err *err) {
    backend *be = open_backend(device, threads, precision, note, note_size, err);
#ifdef BP_FAULT_INJECTION
    const char *fault = getenv("BERTPIPE_FAULT");
    if (be && fault && *fault && backend_fault_arm(be, fault, err) != 0) {
        be->destroy(be);
        return NULL;
    }
#endif
    return be;
}
