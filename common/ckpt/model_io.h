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
 * Must never: write a checkpoint file other than through base/atomic_file.h or a folder other
 * than through base/atomic_dir.h, print, or exit.
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

/* config.json of a checkpoint directory, or a config file, into *out (as above), after finishing
 * a folder swap a stopped save left half done (ad_recover). *is_dir (may be NULL) says which it
 * was. Returns 0, or -1 with err naming the file. */
int model_read_config(const char *source, bert_head task, int num_labels, model_config *out, int *is_dir, bp_err *err);

/* The variant block of cfg as compact JSON (malloc'd), or NULL for plain BERT (none is
 * written) or when out of memory (err says which; err->msg is "" for plain BERT). */
char *model_variant_json(const model_config *cfg, bp_err *err);

/* The class name messages use: BertForSequenceClassification, BertForQuestionAnswering, or a
 * name for the variant ("BertWithGRUHead", "TransformerForQuestionAnswering", ...). */
const char *model_class_name(const model_config *cfg);

/* model_open's `load`: a checkpoint tensor of another shape is refused (the default), or, as
 * transformers' ignore_mismatched_sizes=True, left at its fresh weights and named in the notes
 * (a head for another label count). */
typedef enum model_load { MODEL_LOAD_MATCHING = 0, MODEL_LOAD_IGNORE_MISMATCHED_SIZES = 1 } model_load;

/* Create the model for cfg (model_create), fresh weights for `seed`, then every tensor the
 * checkpoint `weights` (a directory or weights file as ckpt_open reads them; NULL: none) has
 * under the same name, as transformers' from_pretrained matches them (a BertModel checkpoint
 * without the bert. prefix fills the bert.* tensors). *notes (malloc'd, may be NULL when there
 * is nothing to say) receives transformers' lines about unused, newly initialised and (with
 * MODEL_LOAD_IGNORE_MISMATCHED_SIZES) mismatched weights. A checkpoint folder that a stopped
 * save left mid-swap is recovered first (ad_recover). NULL with err on failure (a shape
 * mismatch names the tensor). */
model *model_open(const model_config *cfg, const char *weights, model_load load, model_use use, backend *be, int max_B,
                  int max_T, uint64_t seed, char **notes, bp_err *err);

/* The whole checkpoint folder DIR in one atomic step (base/atomic_dir.h): DIR/model.safetensors,
 * DIR/config.json (labels: the dataset's class names), a copy of vocab_path as DIR/vocab.txt
 * (when not NULL) and, when opt is not NULL, DIR/optimizer.safetensors (model_save_train_state's
 * file). The new folder is written beside DIR and swapped in, so a save that fails (full disk)
 * or is killed leaves DIR the whole previous checkpoint; other files of DIR (a README,
 * tokenizer_config.json) are kept, weights in another format and an optimizer state this save
 * does not write are dropped. DIR must not hold sub-folders; its parent must exist. Returns 0,
 * or -1 with err naming the file at fault. */
int model_save_checkpoint(model *m, optimizer *opt, const bert_train_state *state, const char *dir,
                          const char *const *labels, int n_labels, const char *vocab_path, bp_err *err);

/* model_save_checkpoint without optimizer state (DIR loses any optimizer.safetensors it had). */
int model_save_pretrained(model *m, const char *dir, const char *const *labels, int n_labels, const char *vocab_path,
                          bp_err *err);

/* The files of model_save_checkpoint written into FOLDER as they are, not atomically: for a
 * caller that makes FOLDER part of its own atomic save (ckpt/trainer_dir.h's checkpoint-STEP,
 * which holds more files). FOLDER must exist. Returns 0, or -1 with err naming the file. */
int model_write_checkpoint_files(model *m, optimizer *opt, const bert_train_state *state, const char *folder,
                                 const char *const *labels, int n_labels, const char *vocab_path, bp_err *err);

/* DIR/optimizer.safetensors alone, written in place (atomically as a file, not together with the
 * weights: model_save_checkpoint is the save a resume can trust): the optimizer's state under
 * torch's names ("exp_avg.NAME", "exp_avg_sq.NAME", "momentum_buffer.NAME") for every optimized
 * tensor, the optimizer kind and STATE (its dropout seed and counter too) as metadata. DIR is
 * created. Returns 0 or -1 with err. */
int model_save_train_state(model *m, optimizer *opt, const char *dir, const bert_train_state *state, bp_err *err);
/* Restore it (opt->step, the model's dropout RNG too), finishing first a folder swap a stopped
 * save left half done. The file must be of the same optimizer kind (a file without one is
 * AdamW's) and hold exactly the tensors this run optimizes. Returns 0, or -1 with err naming the
 * file and the tensor or key at fault. */
int model_load_train_state(model *m, optimizer *opt, const char *dir, bert_train_state *state, bp_err *err);

#endif
