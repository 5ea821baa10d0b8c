/* model/model.h — the one model object train and eval run: a body (BERT, or the lstm /
 * transformer QA baselines), a head (BERT's own linear ones, an mlp, or a GRU/LSTM stack) and a
 * loss (cross-entropy, BCE with logits, MSE, the QA span loss), with freezing, torch's
 * parameter counts, and the optimizer segments over what trains.
 *
 * The parts keep llm.c's shape (bert.h, heads.h, baselines.h: a params struct of pointers into
 * one allocation, forward/backward pairs); this file only chains them: body forward -> head
 * forward -> loss, and back. Every parameter is listed once (params.h) with its torch name, so
 * checkpoints, counts and the optimizer read one table. Plain BERT with its linear head runs
 * exactly bert.c's path.
 * Must never: print, exit, read files or know about frames (ckpt/model_io.h reads and writes
 * checkpoints through model_describe_tensors), or touch tensor memory except through backend ops.
 */
#ifndef BP_MODEL_H
#define BP_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"
#include "base/tensor.h"
#include "model/baselines.h"
#include "model/bert.h"
#include "model/heads.h"
#include "model/loss.h"
#include "model/optim.h"
#include "model/params.h"

typedef enum model_body { MODEL_BODY_BERT = 0, MODEL_BODY_LSTM = 1, MODEL_BODY_TRANSFORMER = 2 } model_body;
typedef enum model_head {
    MODEL_HEAD_LINEAR = 0,   /* BertForSequenceClassification / BertForQuestionAnswering's own (bert.h) */
    MODEL_HEAD_MLP = 1,      /* heads.h, on the pooled [CLS] */
    MODEL_HEAD_GRU = 2,      /* heads.h, over the last hidden state */
    MODEL_HEAD_LSTM = 3,
} model_head;
typedef enum model_criterion {
    MODEL_LOSS_AUTO = 0,     /* HF's choice: CE for 2+ labels, MSE for 1, the span loss for QA */
    MODEL_LOSS_CE = 1,
    MODEL_LOSS_BCE = 2,      /* one logit, BCEWithLogits */
    MODEL_LOSS_MSE = 3,
} model_criterion;

#define MODEL_MAX_FREEZE 8

/* What --freeze names: whole parts, and ranges of BERT layers. */
typedef struct model_freeze {
    int bert;                 /* every bert.* tensor (embeddings, encoder, pooler) */
    int embeddings;           /* bert.embeddings.* (baselines: embedding.weight) */
    int encoder;              /* bert.encoder.* */
    int n_ranges;
    int first[MODEL_MAX_FREEZE], last[MODEL_MAX_FREEZE];   /* bert.encoder.layer.A..B */
} model_freeze;

typedef struct model_config {
    /* The body's sizes and dropout. bert.head is the task (BERT_HEAD_CLASSIFICATION or
     * BERT_HEAD_QA) and bert.num_labels its outputs (1 for bce and mse). The baselines read
     * vocab_size, hidden_size, num_attention_heads, intermediate_size (the feed-forward width),
     * hidden_dropout_prob and layer_norm_eps, and need num_hidden_layers 1. */
    bert_config bert;
    model_body body;
    model_head head;
    model_criterion loss;
    int mlp_hidden_layers;                 /* mlp: hidden sizes */
    int mlp_hidden[MLP_MAX_HIDDEN];
    head_activation mlp_activation;
    int rnn_layers, rnn_hidden, rnn_bidirectional;   /* gru, lstm heads */
    float rnn_dropout;                     /* between rnn layers */
    float head_dropout;                    /* mlp: each Dropout; rnn: before out; < 0: BERT's
                                              classifier dropout */
    model_freeze freeze;
} model_config;

/* BERT with its linear head for the task (what bert_config_default gives), AUTO loss, no
 * freezing; the head sizes of the classic recipes (mlp: one hidden layer of 256, relu; rnn: 2
 * bidirectional layers of 256, dropout 0.25). Can't fail. */
void model_config_default(model_config *cfg);
/* Every combination the model supports, sizes positive. Returns 0, or -1 with err. */
int model_config_check(const model_config *cfg, bp_err *err);
/* The loss a configuration trains with (AUTO resolved). */
loss_kind model_loss_kind(const model_config *cfg);

/* Names as the command line and config.json spell them: "bert" "lstm" "transformer"; "linear"
 * "mlp" "gru" "lstm"; "auto" "ce" "bce" "mse". parse returns 0, or -1 with err. */
int model_parse_body(const char *name, model_body *out, bp_err *err);
int model_parse_head(const char *name, model_head *out, bp_err *err);
int model_parse_loss(const char *name, model_criterion *out, bp_err *err);
const char *model_body_name(model_body b);
const char *model_head_name(model_head h);
const char *model_loss_name(model_criterion l);
/* --freeze: a comma-separated list of bert, embeddings, encoder, layers:A-B (A <= B), merged
 * into *out. Returns 0, or -1 with err naming the item. */
int model_parse_freeze(const char *spec, model_freeze *out, bp_err *err);
/* The canonical spelling of a freeze ("" when nothing is frozen) into buf. */
void model_format_freeze(const model_freeze *f, char *buf, size_t size);

typedef enum model_use { MODEL_FOR_TRAINING = 0, MODEL_FOR_INFERENCE = 1 } model_use;

typedef struct model {
    model_config cfg;
    backend *be;
    int max_B, max_T, inference;
    bert_model *bert;          /* MODEL_BODY_BERT */
    baseline *base;            /* MODEL_BODY_LSTM, MODEL_BODY_TRANSFORMER */
    mlp_head *mlp;             /* MODEL_HEAD_MLP */
    rnn_head *rnn;             /* MODEL_HEAD_GRU, MODEL_HEAD_LSTM */
    int bert_trains;           /* a bert.* tensor under the head trains: the backward enters BERT */
    param_list params;         /* every tensor, in state_dict order */
    size_t num_params;         /* floats of all tensors: the host layout's size */
    size_t num_trainable;      /* of the tensors not frozen (torch: requires_grad) */
    size_t num_optimized;      /* of the tensors the optimizer updates (trainable and used) */
    optim_segment *segments;   /* the optimizer's runs over them */
    int n_segments;
    loss_targets targets;
    int32_t *targets_memory;   /* device: ids [2 max_B], values [max_B] */
    const float *logits;       /* device, the head's: [B, K] or [B*T, 2] */
    float *dlogits, *loss_buf; /* device: like logits; [2] */
    float *d_top;              /* device: gradient of BERT's top under an mlp / rnn head */
    int B, T, has_loss, training;
    float loss;                /* host copy of the last loss (NaN without targets) */
    uint64_t dropout_seed, dropout_counter;
} model;

/* Create a model for batches up to max_B x max_T on `be`, planning all memory now (a wholly
 * frozen BERT under an mlp / rnn head is created for inference: no gradients, one layer of
 * activations). Parameters start at zero: load them or call model_init_weights. NULL with err
 * on failure. */
model *model_create(const model_config *cfg, backend *be, int max_B, int max_T, model_use use, bp_err *err);
void model_free(model *m);

/* Fresh weights: BERT as HF _init_weights, the heads and baselines as torch's own modules
 * initialise themselves; deterministic for a seed. Returns 0, or -1 with err. */
int model_init_weights(model *m, uint64_t seed, bp_err *err);

/* Forward a batch (bert.h's batch; the baselines ignore token_type_ids). With targets the loss
 * is computed too. training selects dropout; dropout_counter advances on every training pass
 * (masks are a function of dropout_seed and the counter). Returns 0, or -1 with err naming the
 * bad input or the backend's failure. */
int model_forward(model *m, const bert_batch *batch, int training, bp_err *err);
float model_loss(const model *m);
/* Outputs per row of logits: num_labels (classification) or 2 (QA, per token). */
int model_outputs(const model *m);
/* Logits of the last forward to host: [B, K] or [B, T, 2]. Returns the floats written, or -1
 * with err. */
long model_logits(model *m, float *dst, size_t cap, bp_err *err);
/* Classes a classification head tells apart: num_labels, or 2 for BCE's one logit x, whose class
 * scores are (0, x): their softmax is (1 - sigmoid(x), sigmoid(x)), their argmax BCE's decision. */
int model_classes(const model *m);
/* The last forward's class scores to host, [B, model_classes] (classification). Returns the
 * floats written, or -1 with err. */
long model_class_scores(model *m, float *dst, size_t cap, bp_err *err);
/* Backward of the last forward (with targets), adding loss_scale * gradients. Returns 0, or -1
 * with err. */
int model_backward(model *m, float loss_scale, bp_err *err);
void model_zero_grad(model *m);

/* What a data-parallel step sums across processes before the update: the device memory of the
 * gradients (BERT's or the baseline's block, then the head's) and the row flags of row-sparse
 * gradients (embeddings: a row whose flag is 0 holds an all-zero gradient). Up to cap entries
 * of each; returns the count. Can't fail; a model for inference has none. */
typedef struct model_grad_span { float *grads; size_t n; } model_grad_span;
typedef struct model_flag_span { uint8_t *flags; size_t n; } model_flag_span;
int model_grad_spans(const model *m, model_grad_span *out, int cap);
int model_flag_spans(const model *m, model_flag_span *out, int cap);
/* The row-sparse gradients inside those spans: rows x row_len floats at grads, row i all zero
 * unless flags[i] (so a sum may skip the rows no process flagged). Up to cap; the count. */
typedef struct model_sparse_span { float *grads; const uint8_t *flags; size_t rows, row_len; } model_sparse_span;
int model_sparse_spans(const model *m, model_sparse_span *out, int cap);

/* An optimizer over the model's optimized parameters. NULL with err on failure. */
optimizer *model_optim_create(model *m, const optim_config *cfg, bp_err *err);
/* Clip, update and zero the gradients (optim_step). Returns 0, or -1 with err. */
int model_optim_step(model *m, optimizer *opt, double *grad_norm_out, float *lr_out, bp_err *err);

/* Tensors in state_dict order; out[i].data = flat + the tensor's offset in the host layout
 * (num_params floats). Returns the count (m->params.n). Can't fail. */
int model_describe_tensors(const model *m, float *flat, bp_named_tensor *out);

typedef enum model_state { MODEL_STATE_PARAMS, MODEL_STATE_GRADS, MODEL_STATE_OPTIM } model_state;
/* Copy parameters or gradients (all num_params floats of the host layout; frozen tensors'
 * gradients read as 0), or optimizer buffer `index` (opt needed: only the optimized tensors'
 * places are written) between the device and a host array in the layout of
 * model_describe_tensors. Returns 0, or -1 with err (no such state, or the backend's failure). */
int model_copy_to_host(model *m, optimizer *opt, model_state which, int index, float *dst, bp_err *err);
int model_copy_from_host(model *m, optimizer *opt, model_state which, int index, const float *src, bp_err *err);

#endif
