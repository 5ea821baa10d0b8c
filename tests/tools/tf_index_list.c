/* tf_index_list — list a TF checkpoint's variables from its .index alone, as bertpipe names them.
 *
 *   build/tools/tf_index_list PREFIX      (PREFIX.index; the data file is not read)
 *
 * One line per variable: HF name, dtype, [shape] (kernels already [out, in]), bytes.
 * scripts/parity-tfckpt compares this with the listing of Google's real BERT-Mini index.
 */
#include <stdio.h>

#include "base/log.h"
#include "ckpt/tfckpt.h"

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    if (argc != 2) {
        fprintf(stderr, "usage: %s PREFIX\n", argv[0]);
        return 2;
    }
    bp_err err = {{0}};
    tf_checkpoint *ckpt = tf_open_index(argv[1], &err);
    if (!ckpt) bp_die_err(&err);
    for (size_t i = 0; i < ckpt->n_tensors; i++) {
        const bp_named_tensor *t = &ckpt->tensors[i];
        printf("%s\t%s\t[", t->name, bp_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("]\t%zu\n", t->nbytes);
    }
    tf_close(ckpt);
    return 0;
}
