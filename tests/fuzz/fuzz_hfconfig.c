/* fuzz_hfconfig.c — config.json parsing and validation on arbitrary bytes, and writing back
 * what was accepted (ckpt/hfconfig.h). */
#include "ckpt/hfconfig.h"
#include "fuzz_common.h"

static char out_path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!out_path[0]) snprintf(out_path, sizeof out_path, "/tmp/bp-fuzz-config-%d.json", (int)getpid());
    bp_err err;
    hfc_config cfg;
    if (hfc_read(fuzz_input_file(data, size), &cfg, &err) == 0) {
        if (hfc_write(out_path, &cfg, &err) == 0) {
            hfc_config back;
            if (hfc_read(out_path, &back, &err) == 0) hfc_free(&back);
        }
        hfc_free(&cfg);
    }
    unlink(out_path);
    return 0;
}
