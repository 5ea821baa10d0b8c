/* backend/device.h — choosing the backend for --device auto|cuda|cpu, the same way in every stage.
 *
 * auto: the CUDA backend when this build has one and a GPU answers, else the CPU, with the
 * reason in *note ("no CUDA driver (cudaGetDeviceCount: error 35)", "built without nvcc").
 * cuda: that, or an error saying why not. cpu: always the CPU backend.
 * Must never: print (the stage logs the note), or fall back to the CPU when cuda was asked for.
 */
#ifndef BP_DEVICE_H
#define BP_DEVICE_H
#include <stddef.h>

#include "backend/backend.h"

/* threads: CPU element-wise threads (0 = all cores). precision: "fp32", "tf32", "bf16" or
 * "auto" (NULL = fp32): tf32 needs the CUDA backend; bf16 runs on cuda, or on the cpu when it has
 * avx512_bf16 (else an error saying so); auto is bf16 where the device has it, else fp32.
 * note (may be NULL) gets one line about the choice (for auto on a CPU without bf16, why). In the test build (BP_FAULT_INJECTION) a BERTPIPE_FAULT in the environment arms
 * backend/fault.h on the result; a malformed one is an error. Returns the backend (caller
 * destroys it with be->destroy(be)) or NULL with err. */
backend *bp_backend_open(const char *device, int threads, const char *precision, char *note, size_t note_size,
                         bp_err *err);

#endif
