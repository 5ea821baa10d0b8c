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

/* Build the model for a checkpoint directory or config file:
 *   source = a directory holding config.json (+ weights, loaded when load_weights), or a
 *   config.json path (fresh weights).
 * Every parameter is initialised (seeded, HF's _init_weights) and then overwritten by the
 * checkpoint's tensors; *notes (malloc'd, may be NULL when nothing to say) receives the
 * transformers-style lines about unused and newly initialised weights. num_labels <= 0 keeps
 * the config's. `use` is bert_create_for's (BERT_FOR_INFERENCE allocates no gradients).
 * NULL with err on failure. */
bert_model *bert_open(const char *source, int load_weights, bert_head head, int num_labels, bert_use use,
                      backend *be, int max_B, int max_T, uint64_t seed, char **notes, bp_err *err);

/* The config.json of a model with these hyper-parameters: architectures [architecture] ("": none),
 * `classes` label names for classification (the given ones when n_labels matches, else
 * LABEL_i). Returns 0 with hf to free (hfc_free), or -1 with err. */
int bert_hf_config(const bert_config *c, int classes, const char *architecture, const char *const *labels,
                   int n_labels, hfc_config *hf, bp_err *err);

/* Save DIR/model.safetensors, DIR/config.json (architecture from the head, labels) and a
 * copy of vocab_path as DIR/vocab.txt (when vocab_path is not NULL). DIR is created.
 * Each file is written atomically. Returns 0 or -1 with err. */
int bert_save_pretrained(bert_model *m, const char *dir, const char *const *labels, int n_labels,
                         const char *vocab_path, bp_err *err);

/* Everything beyond the weights that an exact resume needs. */
typedef struct bert_train_state {
    long step;                  /* optimizer steps taken */
    long epoch;                 /* epochs completed */
    int64_t batches_consumed;   /* batch frames read from the input so far */
    uint64_t dropout_seed, dropout_counter;
} bert_train_state;

/* DIR/optimizer.safetensors: AdamW moments under "exp_avg.NAME" / "exp_avg_sq.NAME" and the
 * state above as metadata. Returns 0 or -1 with err. */
int bert_save_train_state(bert_model *m, optim_adamw *opt, const char *dir, const bert_train_state *state,
                          bp_err *err);
/* Restore what bert_save_train_state wrote (opt->step too). Returns 0 or -1 with err naming
 * the file and the tensor or key at fault. */
int bert_load_train_state(bert_model *m, optim_adamw *opt, const char *dir, bert_train_state *state, bp_err *err);

#endif
