/* fuzz_safetensors.c — st_open on arbitrary bytes: header length, JSON header, dtypes, shapes,
 * offsets (ckpt/safetensors.h). */
#include "ckpt/safetensors.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bp_err err;
    st_file *file = st_open(fuzz_input_file(data, size), &err);
    if (file) {
        /* Touch every tensor's bytes and metadata: they must lie inside the mapping. */
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < file->n_tensors; i++)
            if (file->tensors[i].nbytes)
                sink ^= ((const unsigned char *)file->tensors[i].data)[file->tensors[i].nbytes - 1];
        for (size_t i = 0; i < file->n_metadata; i++) (void)st_metadata(file, file->metadata_keys[i]);
        (void)sink;
    }
    st_close(file);
    return 0;
}
