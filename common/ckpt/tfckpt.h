/* ckpt/tfckpt.h — read Google's original TensorFlow BERT checkpoints (bert_model.ckpt.index +
 * bert_model.ckpt.data-00000-of-00001, as in the unzipped uncased_L-*_H-*_A-*.zip).
 *
 * The index is a LevelDB-format table (uncompressed blocks, prefix-compressed keys) mapping
 * each variable name to a BundleEntryProto (dtype, shape, offset, size, masked CRC32C);
 * the data file holds the raw little-endian tensors. Tensors come out under Hugging Face
 * names, converted the way transformers' load_tf_weights_in_bert converts them
 * ("bert/encoder/layer_0/attention/self/query/kernel" -> "bert.encoder.layer.0.attention.
 * self.query.weight", gamma/beta -> weight/bias, "*_embeddings" -> ".weight", kernels
 * transposed from TF's [in, out] to [out, in]); optimizer slots and global_step are skipped.
 *
 * Must never: print, exit, or know the model.
 */
#ifndef BP_TFCKPT_H
#define BP_TFCKPT_H
#include <stddef.h>

#include "base/log.h"
#include "base/tensor.h"

struct tf_owned;

/* A loaded checkpoint. Fields are read-only for callers. */
typedef struct tf_checkpoint {
    char *prefix;                /* e.g. "dir/bert_model.ckpt" */
    bp_named_tensor *tensors;    /* index (name) order, HF names; data owned by the checkpoint */
    size_t n_tensors;
    struct tf_owned *owned;      /* private */
} tf_checkpoint;

/* Open the checkpoint PREFIX (PREFIX.index and PREFIX.data-00000-of-00001; a trailing
 * ".index" on PREFIX is accepted). Every tensor's size and CRC32C are checked.
 * Returns a checkpoint to free with tf_close, or NULL with err = one line naming the file and
 * variable at fault (unsupported dtype, sharded or partitioned variables, bad table, ...). */
tf_checkpoint *tf_open(const char *prefix, bp_err *err);

/* The index alone: names (HF), dtypes, shapes (kernels already [out, in]) and nbytes of
 * every variable, without reading or checking the data file (data pointers are NULL). For
 * inspecting a checkpoint whose data file is elsewhere. Same errors as tf_open otherwise. */
tf_checkpoint *tf_open_index(const char *prefix, bp_err *err);

/* Free everything; NULL is fine. */
void tf_close(tf_checkpoint *ckpt);

/* The HF name for TF variable TF_NAME into OUT (size CAP); returns 1 when it is a kernel to
 * transpose, 0 when not, -1 when the variable is skipped (optimizer state, global_step) or
 * the name does not fit. Exposed for tests and tools. */
int tf_hf_name(const char *tf_name, char *out, size_t cap);

/* CRC32C (Castagnoli) of N bytes, and LevelDB/TF's "masked" form of a CRC. Can't fail. */
unsigned tf_crc32c(const void *bytes, size_t n);
unsigned tf_crc32c_mask(unsigned crc);

#endif
