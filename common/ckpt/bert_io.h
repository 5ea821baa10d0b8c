/* ckpt/bert_io.h — BERT's hyper-parameters between Hugging Face config.json (ckpt/hfconfig.h) and
 * model/bert.h: Google's named shapes, config.json to bert_config and back, and the training
 * state an exact resume needs. ckpt/model_io.h builds every model variant's folder on these.
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

/* The config.json of a checkpoint source (a directory's config.json, or the config file itself)
 * into HF. Returns 0, or -1 with err naming the file (HF then holds
 * nothing to free; else free it with hfc_free). */
int bert_read_config(const char *source, hfc_config *hf, bp_err *err);

/* The config.json of a model with these hyper-parameters: architectures [architecture] ("": none),
 * `classes` label names for classification (the given ones when n_labels matches, else
 * LABEL_i). Returns 0 with hf to free (hfc_free), or -1 with err. */
int bert_hf_config(const bert_config *c, int classes, const char *architecture, const char *const *labels,
                   int n_labels, hfc_config *hf, bp_err *err);

/* Everything beyond the weights that an exact resume needs. */
typedef struct bert_train_state {
    long step;                  /* optimizer steps taken */
    long epoch;                 /* epochs completed */
    int64_t batches_consumed;   /* batch frames read from the input so far */
    uint64_t dropout_seed, dropout_counter;
} bert_train_state;

#endif
