/* device.c — --device auto|cuda|cpu (see device.h). */
#include "device.h"

#include <stdio.h>
#include <string.h>

backend *bp_backend_open(const char *device, int threads, char *note, size_t note_size, bp_err *err) {
    char why[256] = "";
    if (note && note_size) note[0] = 0;
    if (strcmp(device, "cpu") && strcmp(device, "auto") && strcmp(device, "cuda")) {
        bp_err_set(err, "--device wants auto, cuda or cpu, got '%s'", device);
        return NULL;
    }
#ifdef BP_HAVE_CUDA
    if (strcmp(device, "cpu") != 0) {
        if (backend_cuda_available(why, sizeof why)) {
            backend *be = backend_cuda_create(err);
            if (be && note) snprintf(note, note_size, "device: cuda");
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
    backend *be = backend_cpu_create(threads, err);
    if (be && note) {
        if (strcmp(device, "auto") == 0) snprintf(note, note_size, "device: cpu (%s)", why);
        else snprintf(note, note_size, "device: cpu");
    }
    return be;
}
