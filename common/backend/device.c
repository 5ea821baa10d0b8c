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

/* The cpu backend in fp32, or with bf16 products (bf16; auto where the CPU has avx512_bf16).
 * why: the reason auto did not pick cuda, for the note. */
static backend *open_cpu(const char *device, int threads, const char *precision, const char *why, char *note,
                         size_t note_size, bp_err *err) {
    char no_bf16[256] = "";
    int bf16 = strcmp(precision, "fp32") != 0 && backend_cpu_bf16_available(no_bf16, sizeof no_bf16);
    if (strcmp(precision, "bf16") == 0 && !bf16) {
        bp_err_set(err, "--precision bf16 on the cpu: %s; use --precision fp32 (or auto)", no_bf16);
        return NULL;
    }
    backend *be = backend_cpu_create(threads, err);
    if (be && bf16 && backend_cpu_set_bf16(be, 1, err) != 0) {
        be->destroy(be);
        return NULL;
    }
    if (be && note) {
        char prec[300];
        if (bf16) snprintf(prec, sizeof prec, ", bf16 products%s%s",
                           backend_cpu_bf16_emulated(be) ? " (emulated: test build, BERTPIPE_EMULATE_BF16)" : "",
                           backend_cpu_bf16_packing(be) ? ", weights packed (BERTPIPE_BF16_PACK)" : "");
        else if (strcmp(precision, "auto") == 0) snprintf(prec, sizeof prec, ", fp32: %s", no_bf16);
        else prec[0] = 0;
        if (strcmp(device, "auto") == 0) snprintf(note, note_size, "device: cpu (%s)%s", why, prec);
        else snprintf(note, note_size, "device: cpu%s", prec);
    }
    return be;
}

static backend *open_backend(const char *device, int threads, const char *precision, char *note, size_t note_size,
                             bp_err *err) {
    char why[256] = "";
    if (!precision) precision = "fp32";
    if (strcmp(precision, "fp32") && strcmp(precision, "tf32") && strcmp(precision, "bf16") &&
        strcmp(precision, "auto")) {
        bp_err_set(err, "--precision wants fp32, tf32, bf16 or auto, got '%s'", precision);
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
            /* auto: bf16, which every GPU this build runs on (sm_80, sm_90) multiplies natively */
            const char *gpu_precision = strcmp(precision, "auto") ? precision : "bf16";
            if (be && (backend_cuda_parse_precision(gpu_precision, &p, err) || backend_cuda_set_precision(be, p, err))) {
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
    if (strcmp(precision, "tf32") == 0) {
        bp_err_set(err, "--precision tf32 needs the cuda backend; the cpu multiplies in fp32 or bf16 (%s)", why);
        return NULL;
    }
    return open_cpu(device, threads, precision, why, note, note_size, err);
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
