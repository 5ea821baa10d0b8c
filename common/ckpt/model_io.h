/* ckpt/model_io.h — a model variant (model/model.h) to and from a checkpoint directory:
 * config.json (the variant in its "bertpipe_variant" block, which transformers ignores),
 * model.safetensors under the names of the notebook's torch module (its state_dict loads with
 * load_state_dict(strict=True)), vocab.txt, and optimizer.safetensors with what an exact resume
 * needs (the optimizer's state per optimized tensor, step, dropout RNG, data position).
 *
 * Plain BERT (its linear head, nothing frozen, the default loss) writes exactly what
 * transformers' BertForSequenceClassification / BertForQuestionAnswering load: no variant block.
 * BERT under another head saves architectures ["BertModel"], so transformers' BertModel still
 * takes the encoder out of the same folder. Train, eval and the predict tools call this.
 * Must never: write a checkpoint file other than through base/atomic_file.h, print, or exit.
 */
#ifndef BP_MODEL_IO_H
#define BP_MODEL_IO_H
#include "ckpt/bert_io.h"
#include "ckpt/hfconfig.h"
#include "model/model.h"

/* The model configuration of a parsed config.json: BERT's hyper-parameters (bert_io.h) for the
 * task (`task`: BERT_HEAD_CLASSIFICATION or BERT_HEAD_QA; num_labels <= 0 keeps the config's)
 * and the variant block, when there is one. Returns 0, or -1 with err naming the key. */
int model_config_from_hf(const hfc_config *hf, bert_head task, int num_labels, model_config *out, bp_err *err);

/* config.json of a checkpoint directory, or a config file, into *out (as above). *is_dir
 * (may be NULL) says which it was. Returns 0, or -1 with err naming the file. */
int model_read_config(const char *source, bert_head task, int num_labels, model_config *out, int *is_dir, bp_err *err);

/* The variant block of cfg as compact JSON (malloc'd), or NULL for plain BERT (none is
 * written) or when out of memory (err says which; err->msg is "" for plain BERT). */
char *model_variant_json(const model_config *cfg, bp_err *err);

/* The class name messages use: BertForSequenceClassification, BertForQuestionAnswering, or a
 * name for the variant ("BertWithGRUHead", "TransformerForQuestionAnswering", ...). */
const char *model_class_name(const model_config *cfg);

/* Create the model for cfg (model_create), fresh weights for `seed`, then every tensor the
 * checkpoint `weights` (a directory or weights file as ckpt_open reads them; NULL: none) has
 * under the same name, as transformers' from_pretrained matches them (a BertModel checkpoint
 * without the bert. prefix fills the bert.* tensors). *notes (malloc'd, may be NULL when there
 * is nothing to say) receives transformers' lines about unused and newly initialised weights.
 * NULL with err on failure (a shape mismatch names the tensor). */
model *model_open(const model_config *cfg, const char *weights, model_use use, backend *be, int max_B, int max_T,
                  uint64_t seed, char **notes, bp_err *err);

/* Save DIR/model.safetensors, DIR/config.json (labels: the dataset's class names) and a copy of
 * vocab_path as DIR/vocab.txt (when not NULL). DIR is created. Returns 0 or -1 with err. */
int model_save_pretrained(model *m, const char *dir, const char *const *labels, int n_labels, const char *vocab_path,
                          bp_err *err);

/* DIR/optimizer.safetensors: the optimizer's state under torch's names ("exp_avg.NAME",
 * "exp_avg_sq.NAME", "momentum_buffer.NAME") for every optimized tensor, the optimizer kind and
 * the state below as metadata. Returns 0 or -1 with err. */
int model_save_train_state(model *m, optimizer *opt, const char *dir, const bert_train_state *state, bp_err *err);
/* Restore it (opt->step, the model's dropout RNG too). The file must be of the same optimizer
 * kind (a file without one is AdamW's) and hold exactly the tensors this run optimizes.
 * Returns 0, or -1 with err naming the file and the tensor or key at fault. */
int model_load_train_state(model *m, optimizer *opt, const char *dir, bert_train_state *state, bp_err *err);

#endif
