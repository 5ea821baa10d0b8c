/* ckpt/trainer_dir.h — a training run's output folder, laid out as the Hugging Face Trainer lays
 * out its output_dir, and the files beside the weights that make it whole:
 *
 *   DIR/                      the model to use: config.json, model.safetensors, vocab.txt,
 *                             tokenizer_config.json, special_tokens_map.json, trainer_state.json
 *                             (the best checkpoint's with --save-best, else the latest's)
 *   DIR/checkpoint-STEP/      one save: the same files and optimizer.safetensors (the optimizer's state,
 *                             step, dropout RNG, data position); its trainer_state.json holds the
 *                             log history up to STEP and the best evaluation so far
 *
 * tokenizer_config.json carries the casing (do_lower_case) and the length trained with
 * (model_max_length), so `tokenize --checkpoint` and transformers' AutoTokenizer tokenize as
 * training did. --save-total-limit rotates checkpoint folders as the Trainer does.
 * Must never: delete a file it does not name (a folder holding others is kept), print, or exit.
 */
#ifndef BP_TRAINER_DIR_H
#define BP_TRAINER_DIR_H
#include <stddef.h>

#include "base/log.h"
#include "ckpt/model_io.h"

/* ---- tokenizer files ---------------------------------------------------------------- */

/* DIR/tokenizer_config.json and DIR/special_tokens_map.json as BertTokenizerFast's
 * save_pretrained writes them: the special tokens (those of [PAD] [UNK] [CLS] [SEP] [MASK] that
 * VOCAB_PATH holds, with their ids in added_tokens_decoder), do_lower_case and strip_accents
 * (null: as the casing), model_max_length, tokenizer_class "BertTokenizer". Each file atomic.
 * Returns 0, or -1 with err naming the file. */
int td_write_tokenizer_files(const char *dir, const char *vocab_path, int lowercase, long model_max_length, bp_err *err);

/* ---- trainer_state.json --------------------------------------------------------------- */

typedef struct td_state td_state;   /* the log history (opaque) */

/* Where the run stands, written beside the log. */
typedef struct td_progress {
    long global_step, max_steps, num_train_epochs, train_batch_size;
    long eval_steps, save_steps;    /* 0: per epoch */
    double epoch;                   /* epochs done, fractional */
    const char *metric;             /* metric_for_best_model ("accuracy"...), NULL when none */
    int greater_is_better;
    double best_metric;             /* NaN before any */
    long best_step;                 /* -1 before any: best_model_checkpoint null */
    long patience, patience_counter;   /* EarlyStoppingCallback's (patience 0: none) */
} td_progress;

/* An empty log. NULL with err when out of memory. */
td_state *td_state_new(bp_err *err);
void td_state_free(td_state *s);   /* NULL is fine */

/* Append one entry {"epoch", "step", KEY: VALUE...}: HF's names (loss, learning_rate, grad_norm;
 * eval_loss, eval_accuracy, eval_runtime...). NaN values are left out. Returns 0 or -1 (OOM). */
int td_state_log(td_state *s, long step, double epoch, const char *const *keys, const double *values, int n,
                 bp_err *err);

/* Write the log and P as PATH (trainer_state.json: best_metric, best_global_step,
 * best_model_checkpoint = DIR/checkpoint-BEST, epoch, global_step, log_history, max_steps,
 * stateful_callbacks with EarlyStoppingCallback's counter, ...; indent 2, keys sorted, as
 * TrainerState.save_to_json). Atomic. Returns 0 or -1 with err. */
int td_state_write(const td_state *s, const td_progress *p, const char *dir, const char *path, bp_err *err);

/* Read CHECKPOINT/trainer_state.json back (a resume): the log into *s (new), the best and the
 * patience counter into p (other fields untouched). Returns 1, 0 when the file is absent (*s an
 * empty log), or -1 with err naming the file. */
int td_state_read(const char *checkpoint, td_state **s, td_progress *p, bp_err *err);

/* ---- the folder ---------------------------------------------------------------------- */

/* DIR/checkpoint-STEP into buf (size bytes). Returns 0, or -1 with err when it does not fit. */
int td_checkpoint_path(const char *dir, long step, char *buf, size_t size, bp_err *err);

/* The steps of DIR's complete checkpoint-STEP folders (holding optimizer.safetensors), ascending,
 * into *steps (malloc'd, NULL when none). Returns the count (0 when DIR does not exist), or -1. */
long td_list_checkpoints(const char *dir, long **steps, bp_err *err);

/* What --resume PATH resumes from, into buf: PATH itself when it holds optimizer.safetensors (a
 * checkpoint folder), else its latest complete checkpoint-STEP. Returns 0, or -1 with err
 * ("no checkpoint to resume in PATH"). */
int td_resume_folder(const char *path, char *buf, size_t size, bp_err *err);

/* The Trainer's rotation (save_total_limit): the complete checkpoints of DIR, oldest first, with
 * the one of keep_step (the best; -1: none) moved last, lose their oldest beyond `limit` (2 when
 * limit is 1 and the best is not the latest, so the latest survives too). A folder is removed
 * file by file (only the names a checkpoint holds) and then itself; one holding anything else
 * is kept and named in err. *removed (may be NULL) counts the folders removed. Returns 0, or -1
 * with err (the others are still rotated). */
int td_rotate(const char *dir, long limit, long keep_step, long *removed, bp_err *err);

/* Make CHECKPOINT's model files DIR's own: config.json, vocab.txt, the tokenizer files and last
 * model.safetensors (not trainer_state.json: DIR's own is the whole run's), each hard-linked
 * (copied where links fail)
 * under a temporary name and renamed over DIR's, so a reader sees whole files from one
 * checkpoint or the other. An optimizer.safetensors at DIR's top (an older layout) is removed:
 * its state belongs to other weights. Returns 0, or -1 with err naming the file. */
int td_publish(const char *dir, const char *checkpoint, bp_err *err);

/* DIR/trainer_state.json: the whole run's log and where it stands (td_state_write). */
int td_write_run_state(const char *dir, const td_state *log, const td_progress *progress, bp_err *err);

/* One save of a run. */
typedef struct td_save_request {
    const char *dir;                        /* the run folder (created when missing; its parent must exist) */
    model *m;                               /* any variant (ckpt/model_io.h) */
    optimizer *opt;
    const bert_train_state *state;          /* state->step names the folder */
    const char *const *labels;
    int n_labels;
    const char *vocab_path;                 /* copied as vocab.txt; the tokenizer files need it */
    int lowercase;                          /* tokenizer_config.json's do_lower_case */
    long model_max_length;                  /* and model_max_length */
    const td_state *log;
    const td_progress *progress;
    int publish;                            /* the checkpoint becomes DIR's model */
    long total_limit;                       /* rotation (0: keep all), the best (progress) kept */
} td_save_request;

/* DIR/checkpoint-STEP whole or not at all (base/atomic_dir.h: written beside, swapped in):
 * model_write_checkpoint_files' weights, config, vocab and optimizer state, the tokenizer files
 * and trainer_state.json; then DIR/trainer_state.json (the run's log so far), the publication
 * (q->publish) and the rotation. Returns 0; 1 when saved but the rotation kept a folder (err
 * says which: a warning, not a failure); -1 with err when the save failed (the checkpoints DIR
 * had are untouched). */
int td_save(const td_save_request *q, bp_err *err);

#endif
