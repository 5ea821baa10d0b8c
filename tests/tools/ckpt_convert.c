/* ckpt_convert — rewrite a checkpoint's tensors as model.safetensors with bertpipe's writer.
 *
 *   build/tools/ckpt_convert IN OUT.safetensors
 *
 * IN is a pytorch_model.bin, a model.safetensors or a directory holding one. Every tensor is
 * copied unchanged (names, dtypes, values). Used to check the C writer against the Python
 * reference (tests/reference/make_checkpoint_fixtures.py --check) and to convert a
 * pytorch_model.bin for tools that only read safetensors. Never modifies IN.
 */
#include <stdio.h>

#include "ckpt/load.h"
#include "base/log.h"
#include "ckpt/safetensors.h"

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT.safetensors\n", argv[0]);
        return 2;
    }
    bp_err err = {{0}};
    ckpt_source *source = ckpt_open(argv[1], &err);
    if (!source) bp_die_err(&err);
    /* Keep the source's own metadata when it has any (a safetensors input). */
    const char *const *keys = NULL, *const *values = NULL;
    size_t n_meta = 0;
    if (source->st) {
        keys = (const char *const *)source->st->metadata_keys;
        values = (const char *const *)source->st->metadata_values;
        n_meta = source->st->n_metadata;
    }
    if (st_write(argv[2], source->tensors, source->n_tensors, keys, values, n_meta, &err) != 0) {
        ckpt_close(source);
        bp_die_err(&err);
    }
    bp_log("wrote %zu tensors from %s (%s) to %s", source->n_tensors, source->path, source->format, argv[2]);
    ckpt_close(source);
    return 0;
}
