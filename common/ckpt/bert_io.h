/* ckpt/bert_io.h — a BERT model to and from a checkpoint directory: Hugging Face config.json,
 * model.safetensors (or pytorch_model.bin / a TF checkpoint on the way in), vocab.txt, and
 * the training state that makes a resume exact (AdamW moments, step, dropout RNG, data
 * position) in optimizer.safetensors.
 *
 * The glue between model/bert.h and the checkpoint format modules: train, eval and the
 * predict tools call it.
 * Must never: print, exit, or know about frames.
 */
#ifndef BP_BERT_IO_H
#define BP_BERT_IO_H
#include "model/bert.h"
#include "ckpt/hfconfig.h"

/* Google's BERT shapes by name: tiny (L2 H128), mini (L4 H256), small (L4 H512),
 * medium (L8 H512), base (L12 H768), large (L24 H1024); heads = H/64, intermediate = 4H.
 * Other fields stay as they are in cfg. Returns 0, or -1 with err for an unknown name. */
int bert_preset(const char *name, bert_config *cfg, bp_err *err);

/* Hyper-parameters from a parsed config.json, for `head` with `num_labels` (classification).
 * Returns 0 or -1 with err. */
int bert_config_from_hf(const hfc_config *hf, bert_head head, int num_labels, bert_config *out, bp_err *err);

/* The config.json of a checkpoint source as bert_open reads it (a directory's config.json, or
 * the config file itself) into HF. Returns 0, or -1 with err naming the file (HF then holds
 * nothing to free; else free it with hfc_free). */
int bert_read_config(const char *source, hfc_config *hf, bp_err *err);

/* bert_open's load_weights: none (fresh weights), the checkpoint's, or the checkpoint's with a
 * tensor of another shape (a head for another label count) initialised afresh and named in the
 * notes, as transformers' ignore_mismatched_sizes=True. */
enum { BERT_LOAD_NONE = 0, BERT_LOAD = 1, BERT_LOAD_IGNORE_MISMATCHED_SIZES = 2 };

/* Build the model for a checkpoint directory or config file:
 *   source = a directory holding config.json (+ weights, loaded when load_weights), or a
 *   config.json path (fresh weights).
 * Every parameter is initialised (seeded, HF's _init_weights) and then overwritten by the
 * checkpoint's tensors; *notes (malloc'd, may be NULL when nothing to say) receives the
 * transformers-style lines about unused and newly initialised weights. num_labels <= 0 keeps
 * the config's. `use` is bert_create_for's (BERT_FOR_INFERENCE allocates no gradients).
 * A checkpoint folder that a stopped save left mid-swap is recovered first (ad_recover).
 * NULL with err on failure. */
bert_model *bert_open(const char *source, int load_weights, bert_head head, int num_labels, bert_use use,
                      backend *be, int max_B, int max_T, uint64_t seed, char **notes, bp_err *err);

/* Save DIR/model.safetensors, DIR/config.json (architecture from the head, labels) and a
 * copy of vocab_path as DIR/vocab.txt (when vocab_path is not NULL): bert_save_checkpoint
 * without optimizer state, so DIR loses any optimizer.safetensors it had. */
int bert_save_pretrained(bert_model *m, const char *dir, const char *const *labels, int n_labels,
                         const char *vocab_path, bp_err *err);

/* Everything beyond the weights that an exact resume needs. */
typedef struct bert_train_state {
    long step;                  /* optimizer steps taken */
    long epoch;                 /* epochs completed */
    int64_t batches_consumed;   /* batch frames read from the input so far */
    uint64_t dropout_seed, dropout_counter;
} bert_train_state;

/* The whole checkpoint folder DIR in one atomic step (base/atomic_dir.h): the files of
 * bert_save_pretrained and, when opt is not NULL, DIR/optimizer.safetensors with the AdamW
 * moments under "exp_avg.NAME" / "exp_avg_sq.NAME" and STATE as metadata. The new folder is
 * written beside DIR and swapped in, so a save that fails (full disk) or is killed leaves DIR
 * the whole previous checkpoint; other files of DIR (a README, tokenizer_config.json) are kept.
 * DIR must not hold sub-folders. Returns 0, or -1 with err naming the file at fault. */
int bert_save_checkpoint(bert_model *m, optim_adamw *opt, const bert_train_state *state, const char *dir,
                         const char *const *labels, int n_labels, const char *vocab_path, bp_err *err);

/* The files of bert_save_checkpoint written into FOLDER as they are, not atomically: for a
 * caller that makes FOLDER part of its own atomic save (ckpt/trainer_dir.h's checkpoint-STEP,
 * which holds more files). FOLDER must exist. Returns 0, or -1 with err naming the file. */
int bert_write_checkpoint_files(bert_model *m, optim_adamw *opt, const bert_train_state *state, const char *folder,
                                const char *const *labels, int n_labels, const char *vocab_path, bp_err *err);

/* DIR/optimizer.safetensors alone, written in place (atomically as a file, not together with
 * the weights: bert_save_checkpoint is the save a resume can trust). Returns 0 or -1 with err. */
int bert_save_train_state(bert_model *m, optim_adamw *opt, const char *dir, const bert_train_state *state,
                          bp_err *err);
/* Restore what bert_save_checkpoint / bert_save_train_state wrote (opt->step too), finishing
 * first a folder swap a stopped save left half done. Returns 0 or -1 with err naming the file
 * and the tensor or key at fault. */
int bert_load_train_state(bert_model *m, optim_adamw *opt, const char *dir, bert_train_state *state, bp_err *err);

#endif
