/* device.h — choosing the backend for --device auto|cuda|cpu, the same way in every stage.
 *
 * auto: the CUDA backend when this build has one and a GPU answers, else the CPU, with the
 * reason in *note ("no CUDA driver (cudaGetDeviceCount: error 35)", "built without nvcc").
 * cuda: that, or an error saying why not. cpu: always the CPU backend.
 * Never prints: the stage logs the note.
 */
#ifndef BP_DEVICE_H
#define BP_DEVICE_H
#include <stddef.h>

#include "backend.h"

/* threads: CPU element-wise threads (0 = all cores). note (may be NULL) gets one line about
 * the choice. Returns the backend (caller destroys it with be->destroy(be)) or NULL with err. */
backend *bp_backend_open(const char *device, int threads, char *note, size_t note_size, bp_err *err);

#ifdef BP_HAVE_CUDA
/* From the CUDA backend (common/backend_cuda.cu). 1 when a usable GPU exists, else 0 with why filled. */
int backend_cuda_available(char *why, size_t why_size);
backend *backend_cuda_create(bp_err *err);
#endif

#endif
