/* fuzz_ptb.c — the SST PTB tree reader on arbitrary bytes, five-class and binary, PTB escapes
 * undone and kept (data/datasets.h). */
#include "data/datasets.h"
#include "fuzz_common.h"

static int consume(const ds_example *example, void *user, bp_err *err) {
    size_t *total = user;
    *total += strlen(example->text) + (size_t)example->label;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file(data, size);
    for (int variant = 0; variant < 2; variant++) {
        size_t total = 0;
        bp_err err;
        ds_options o = {.format = DS_FORMAT_SST_TREES, .binary = variant, .keep_ptb_escapes = !variant};
        ds_read(path, &o, consume, &total, NULL, &err);
    }
    return 0;
}
