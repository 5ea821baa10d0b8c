/* base/tensor.h — element types and named host tensors, shared by frames, model and checkpoints.
 *
 * A bp_named_tensor describes (does not own) a contiguous little-endian array. Checkpoint
 * readers hand these to the model loader; the model lists its parameters as these for the
 * writers.
 * Must never: allocate or own tensor data (a bp_named_tensor only points at it).
 */
#ifndef BP_TENSOR_H
#define BP_TENSOR_H
#include <stddef.h>
#include <stdint.h>

typedef enum bp_dtype {
    BP_F32 = 0, BP_F64, BP_F16, BP_BF16, BP_I64, BP_I32, BP_I16, BP_I8, BP_U8, BP_BOOL,
    BP_DTYPE_COUNT
} bp_dtype;

#define BP_MAX_DIMS 8

/* Bytes per element. */
size_t bp_dtype_size(bp_dtype t);
/* Frame-protocol name: "f32", "f64", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool". */
const char *bp_dtype_name(bp_dtype t);
/* Parse a frame-protocol name; returns 0 and sets *out, or -1 when unknown. */
int bp_dtype_parse(const char *name, size_t len, bp_dtype *out);

typedef struct bp_named_tensor {
    char name[160];
    bp_dtype dtype;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
    void *data;        /* not owned */
    size_t nbytes;
} bp_named_tensor;

/* Number of elements (product of shape; 1 for a scalar). */
int64_t bp_numel(const int64_t *shape, int ndim);

/* f16 / bf16 <-> f32 conversion (round to nearest even on the way down). */
float bp_f16_to_f32(uint16_t h);
float bp_bf16_to_f32(uint16_t b);
uint16_t bp_f32_to_bf16(float f);
uint16_t bp_f32_to_f16(float f);

#endif
