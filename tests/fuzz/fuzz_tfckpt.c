/* fuzz_tfckpt.c — the TF checkpoint reader on an arbitrary .index (LevelDB table, block
 * handles, prefix-compressed keys, BundleEntryProto), against the fixture's data file so the
 * data offsets and CRC checks are reached too (ckpt/tfckpt.h). */
#include <errno.h>
#include <sys/stat.h>

#include "ckpt/tfckpt.h"
#include "fuzz_common.h"

static char prefix[256], folder[64];

static void cleanup(void) {
    char path[300];
    snprintf(path, sizeof path, "%s.index", prefix);
    unlink(path);
    snprintf(path, sizeof path, "%s.data-00000-of-00001", prefix);
    unlink(path);
    rmdir(folder);
}

/* A temporary folder holding the fixture's data file under PREFIX, and PREFIX.index as a
 * link to the in-memory input file. */
static void setup(void) {
    char dir[] = "/tmp/bp-fuzz-tf-XXXXXX";
    if (!mkdtemp(dir)) exit(2);
    snprintf(folder, sizeof folder, "%s", dir);
    snprintf(prefix, sizeof prefix, "%s/bert_model.ckpt", dir);
    atexit(cleanup);
    FILE *in = fopen(fuzz_repo_path("tests/fixtures/ckpt/tf/bert_model.ckpt.data-00000-of-00001"), "rb");
    char data_path[300];
    snprintf(data_path, sizeof data_path, "%s.data-00000-of-00001", prefix);
    FILE *out = fopen(data_path, "wb");
    if (!in || !out) {
        fprintf(stderr, "fuzz_tfckpt: cannot copy the fixture data file (run from the repository root)\n");
        exit(2);
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    if (fclose(out) != 0) exit(2);
    char index_path[300];
    snprintf(index_path, sizeof index_path, "%s.index", prefix);
    if (symlink(fuzz_input_file(NULL, 0), index_path) != 0) exit(2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!prefix[0]) setup();
    fuzz_input_file(data, size);
    bp_err err;
    tf_checkpoint *ckpt = tf_open(prefix, &err);
    volatile unsigned char sink = 0;
    for (size_t i = 0; ckpt && i < ckpt->n_tensors; i++)
        if (ckpt->tensors[i].nbytes) sink ^= ((const unsigned char *)ckpt->tensors[i].data)[ckpt->tensors[i].nbytes - 1];
    (void)sink;
    tf_close(ckpt);
    tf_close(tf_open_index(prefix, &err));
    return 0;
}
