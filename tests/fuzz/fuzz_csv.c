/* fuzz_csv.c — the CSV/TSV reader (and GLUE SST-2 as its preset) on arbitrary bytes. The
 * first byte picks the options: delimiter, header, label map, empty-text policy, validation
 * split, sample, the SST-2 preset; the rest is the file (data/datasets.h). */
#include "data/datasets.h"
#include "fuzz_common.h"

static int consume(const ds_example *example, void *user, bp_err *err) {
    size_t *total = user;
    *total += strlen(example->text) + strlen(example->id);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t flags = data[0];
    ds_options o = {.format = flags & 0x80 ? DS_FORMAT_SST2 : DS_FORMAT_CSV, .seed = 7};
    o.delimiter = flags & 1 ? '\t' : ',';
    o.no_header = (flags >> 1) & 1;
    if (o.no_header) {
        o.text_column = "0";
        o.label_column = "1";
    }
    if (flags & 4) o.label_map = flags & 1 ? "negative,positive" : "-1,0,1,2";
    o.skip_empty = (flags >> 3) & 1;
    if ((flags & 0x90) == 0x10) o.validation_ratio = 0.5, o.split = "validation";
    if (flags & 0x20) o.sample = 3;
    if (flags & 0x40) o.limit = 2;
    size_t total = 0;
    bp_err err;
    ds_stats stats;
    ds_read(fuzz_input_file(data + 1, size - 1), &o, consume, &total, &stats, &err);
    return 0;
}
