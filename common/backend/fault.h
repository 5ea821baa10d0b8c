/* backend/fault.h — fault injection for tests: the Nth call of one backend op fails as a CUDA
 * error would, on any backend, so that the paths that report a GPU fault (the check op, the
 * model's -1, the stage's one error line) are tested on machines without a GPU.
 *
 * Compiled in only with BP_FAULT_INJECTION, which the test build (`make san`, build/san/) defines
 * and the release build in bin/ never does. Stages arm it from the environment through
 * bp_backend_open (backend/device.h): BERTPIPE_FAULT=backend:OP:N.
 * Must never: be compiled into a release build, print or exit.
 */
#ifndef BP_BACKEND_FAULT_H
#define BP_BACKEND_FAULT_H

#include "backend/backend.h"
#include "base/log.h"

#ifdef BP_FAULT_INJECTION
/* Arm `be` from a spec "backend:OP:N": OP is an op of backend.h (upload, download, zero,
 * copy_rows, matmul_forward, ..., sumsq, adamw) and N >= 1 counts OP's calls from now. That call
 * does nothing and records "injected fault in OP call N", and from then on the backend acts as a
 * failed CUDA backend does (backend.h, errors): every op does nothing, downloads fill their
 * destination with NaN, sumsq returns NaN, and check reports the fault, for good. Until then
 * every op runs as before. "nan:OP:N" (OP one of matmul_forward, adamw, sumsq) is a numeric
 * blow-up instead of a failure: call N runs, then its result (the output, the updated
 * parameters, the sum) turns NaN, and nothing else changes: check stays quiet, as it does when
 * training itself diverges. The wrapping ends with be->destroy. One backend at a time.
 * Returns 0, or -1 with err naming the spec when it is malformed or another backend is armed. */
int backend_fault_arm(backend *be, const char *spec, bp_err *err);
#endif

#endif
