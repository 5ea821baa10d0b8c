/* model/bert.h — the BERT encoder with a classification or a question-answering head: configuration,
 * parameters, forward and backward passes, and the bridge to the optimizer and checkpoints.
 *
 * Semantics are Hugging Face's BertForSequenceClassification / BertForQuestionAnswering:
 * post-LayerNorm encoder, exact-erf GELU, learned absolute positions, additive -FLT_MAX mask
 * on padded keys, tanh pooler over [CLS] (classification only), parameter names and [out, in]
 * Linear shapes as in their state_dict. Everything runs on a backend (backend.h); the model
 * holds device pointers only and plans all its memory when created, for a maximum batch shape.
 *
 * Must never: print, exit, read files or know about frames (checkpoint formats live in their
 * own modules and reach the tensors through bert_describe_tensors).
 */
#ifndef BP_BERT_H
#define BP_BERT_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"
#include "model/loss.h"
#include "model/optim.h"
#include "base/tensor.h"

typedef enum bert_head {
    BERT_HEAD_CLASSIFICATION = 0,   /* pooler + dropout + classifier; CE, or MSE when 1 label */
    BERT_HEAD_QA = 1,               /* qa_outputs: start/end logits per token, no pooler */
    /* BertModel alone, for a head outside this file (model/heads.h). Its top is: */
    BERT_HEAD_POOLED = 2,           /* the tanh pooler output [B, C]; no classifier */
    BERT_HEAD_SEQUENCE = 3,         /* the last hidden state [B*T, C]; the pooler's weights exist
                                       (BertModel has them) but are not used */
} bert_head;

typedef struct bert_config {
    int vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size;
    int max_position_embeddings, type_vocab_size;
    int pad_token_id;                /* its word-embedding row gets no gradient; -1: none */
    float layer_norm_eps;
    float hidden_dropout_prob, attention_probs_dropout_prob;
    float classifier_dropout;        /* < 0: use hidden_dropout_prob (HF's null) */
    float initializer_range;
    int num_labels;                  /* classification only */
    bert_head head;
} bert_config;

/* Hugging Face BertConfig() defaults (BERT-base, 2 labels, classification). Can't fail. */
void bert_config_default(bert_config *cfg);
/* Check sizes are positive and consistent (hidden divisible by heads, ...).
 * Returns 0, or -1 with err naming the field. */
int bert_config_check(const bert_config *cfg, bp_err *err);

/* Parameters: device pointers into one allocation, decayed tensors first (from wte to the
 * head weight), then the ones AdamW never decays (biases and LayerNorm). Shapes follow HF.
 * L = layers, C = hidden, I = intermediate, V = vocab, P = max positions, K = type vocab,
 * NL = num_labels (classification) or 2 (QA: start, end). */
typedef struct bert_params {
    float *wte;       /* (V, C)     bert.embeddings.word_embeddings.weight */
    float *wpe;       /* (P, C)     bert.embeddings.position_embeddings.weight */
    float *wtt;       /* (K, C)     bert.embeddings.token_type_embeddings.weight */
    float *qkvw;      /* (L, 3C, C) attention.self.{query,key,value}.weight, stacked per layer */
    float *attn_ow;   /* (L, C, C)  attention.output.dense.weight */
    float *fcw;       /* (L, I, C)  intermediate.dense.weight */
    float *fc2w;      /* (L, C, I)  output.dense.weight */
    float *poolw;     /* (C, C)     bert.pooler.dense.weight (all heads but QA, else NULL) */
    float *headw;     /* (NL, C)    classifier.weight or qa_outputs.weight (NULL: POOLED, SEQUENCE) */
    float *emb_lnw;   /* (C)        bert.embeddings.LayerNorm.weight */
    float *emb_lnb;   /* (C)        bert.embeddings.LayerNorm.bias */
    float *qkvb;      /* (L, 3C)    attention.self.{query,key,value}.bias */
    float *attn_ob;   /* (L, C)     attention.output.dense.bias */
    float *ln1w;      /* (L, C)     attention.output.LayerNorm.weight */
    float *ln1b;      /* (L, C)     attention.output.LayerNorm.bias */
    float *fcb;       /* (L, I)     intermediate.dense.bias */
    float *fc2b;      /* (L, C)     output.dense.bias */
    float *ln2w;      /* (L, C)     output.LayerNorm.weight */
    float *ln2b;      /* (L, C)     output.LayerNorm.bias */
    float *poolb;     /* (C)        bert.pooler.dense.bias (all heads but QA) */
    float *headb;     /* (NL)       classifier.bias or qa_outputs.bias (CLASSIFICATION, QA) */
} bert_params;

/* Forward state kept for the backward, for the largest batch (N = B*T tokens).
 * With the classification head the last layer runs on the [CLS] rows only, after its keys and
 * values: nothing else reaches the pooler, so the result is the same and a quarter of the
 * last layer's work is skipped. Its per-row tensors then hold B rows, not N. */
typedef struct bert_acts {
    float *emb_sum;            /* (N, C) word + position + type embedding, LayerNorm input */
    float *emb_mean, *emb_rstd;/* (N) */
    float *encoded;            /* (L+1, N, C) input of each layer; [L] is the encoder output
                                  (classification: B rows, one per [CLS]) */
    float *qkv;                /* (L, N, 3C) */
    float *probs;              /* (L, B, NH, T, T) attention probabilities before dropout */
    float *ctx;                /* (L, N, C) attention context, heads side by side */
    float *attn_sum;           /* (L, N, C) input + dropout(attention dense), LN1 input */
    float *ln1_mean, *ln1_rstd;/* (L, N) */
    float *ln1;                /* (L, N, C) attention block output */
    float *fc_pre;             /* (L, N, I) before GELU (GELU is recomputed in the backward,
                                  or kept as bf16 in gelu_kept by a fused op) */
    float *ffn_sum;            /* (L, N, C) ln1 + dropout(FFN output), LN2 input */
    float *ln2_mean, *ln2_rstd;/* (L, N) */
    float *cls_ctx;            /* (B, C) last layer's attention context at [CLS] (classification) */
    float *cls_resid;          /* (B, C) last layer's input at [CLS] (classification) */
    float *pooled;             /* (B, C) tanh pooler output */
    float *pooled_dropped;     /* (B, C) classifier input */
    float *logits;             /* (B, NL) classification, (N, 2) QA: start, end per token */
    float *loss;               /* (1) */
    /* scratch shared by all layers */
    float *att_scratch;        /* (B, NH, T, T) */
    float *nc_a, *nc_b, *nc_c; /* (N, C) each */
    float *ni_a, *ni_b;        /* (N, I) each */
    float *nqkv;               /* (N, 3C) */
    float *dlogits;            /* like logits */
    float *b_c1, *b_c2;        /* (B, C) head gradients */
    float *gelu_kept;          /* (L, gelu_kept_layer) each layer's act of the fused GELU product,
                                  kept from forward to backward (backend.h); empty without one */
    float *op_kept;            /* (L, op_kept_layer) each layer's kept of its products and attention
                                  (backend.h matmul_forward_keep); empty without those ops */
} bert_acts;

enum { KEPT_BY_GELU = 1, KEPT_BY_OPS = 2 };   /* bert_model.kept_by_forward */

/* One batch in host memory, row-major [B, T] int32 arrays. Targets may be NULL (no loss). */
typedef struct bert_batch {
    int B, T;
    const int32_t *input_ids, *token_type_ids, *attention_mask;
    const int32_t *labels;            /* [B] classification with num_labels > 1; -100 ignored */
    const float *label_values;        /* [B] regression (num_labels == 1); else labels as floats */
    const int32_t *start_positions;   /* [B] QA; clamped to [0, T], T ignored (HF) */
    const int32_t *end_positions;     /* [B] QA */
} bert_batch;

typedef struct bert_model {
    bert_config cfg;
    backend *be;
    int max_B, max_T;
    size_t num_params, num_decayed;   /* floats; [0, num_decayed) get weight decay */
    bert_params params, grads;        /* grads mirror params in a second allocation (none
                                         for inference: all NULL) */
    float *params_memory, *grads_memory;
    uint8_t *wte_touched;             /* (V) device: word-embedding rows with gradient */
    bert_acts acts;
    float *acts_memory;
    int32_t *inputs_memory;           /* device copies of the batch: ids, types, mask, targets */
    int32_t *d_input_ids, *d_token_type_ids, *d_attention_mask, *d_targets;
    float *d_target_values;
    /* the last forward pass */
    int inference;                    /* created BERT_FOR_INFERENCE */
    size_t gelu_kept_layer;           /* floats of acts.gelu_kept per layer; 0: none */
    size_t op_kept_layer;             /* floats of acts.op_kept per layer; 0: none */
    int kept_by_forward;              /* what the last forward left in gelu_kept (KEPT_BY_GELU) and
                                         op_kept (KEPT_BY_OPS) for the backward */
    int B, T, has_loss, training;
    float loss;                       /* host copy of acts.loss */
    float dropout_hidden, dropout_attention, dropout_classifier;   /* as used (0 in eval) */
    uint64_t dropout_seed, dropout_counter;
    loss_targets targets;             /* of the last forward (the head's loss) */
    /* What trains; bert_create sets every flag. A frozen part gets no gradient and no backward
     * work, and the backward stops below the lowest part that trains. The caller sets them
     * before the first backward (model/model.c does, from --freeze). */
    int train_embeddings, train_pooler;
    unsigned char *train_layers;      /* [L] host */
    float *frozen_sink;               /* device [2C]: where frozen LayerNorms' gradients go */
} bert_model;

typedef enum bert_use {
    BERT_FOR_TRAINING = 0,    /* gradients, per-layer activations for the backward */
    BERT_FOR_INFERENCE = 1,   /* forward only: no gradients, one layer of activations */
} bert_use;

/* Create a model for batches up to max_B x max_T (max_T <= max_position_embeddings) on `be`,
 * planning all memory now. Parameters start at zero: load them or call bert_init_weights.
 * Caller owns the model (bert_free); `be` must outlive it. NULL with err filled on failure. */
bert_model *bert_create(const bert_config *cfg, backend *be, int max_B, int max_T, bp_err *err);
/* The same for a use: BERT_FOR_INFERENCE (the eval stage) allocates no gradients and keeps one
 * layer of activations instead of L, about L times less memory; backward, optimizer and
 * gradient copies then fail with an error. bert_create is bert_create_for(..., TRAINING). */
bert_model *bert_create_for(const bert_config *cfg, backend *be, int max_B, int max_T, bert_use use,
                            bp_err *err);
void bert_free(bert_model *m);

/* Fresh weights as HF _init_weights: normal(0, initializer_range) for Linear and embedding
 * weights (the padding row zeroed), zero biases, LayerNorm weight 1 / bias 0. Deterministic for
 * a seed. With only_head set, re-initialises just the task head (a pretrained encoder loaded).
 * Returns 0, or -1 with err filled (out of memory, a backend failure). */
int bert_init_weights(bert_model *m, uint64_t seed, int only_head, bp_err *err);

/* Run the model on a batch. training selects dropout (with probabilities from the config);
 * dropout masks are a function of (dropout_seed, dropout_counter, layer, site, element) and
 * dropout_counter advances by one on every training forward, so a resumed run that restores
 * both reproduces them. When the batch has targets the loss is computed too (bert_loss).
 * Returns 0, or -1 with err naming the bad input (token id out of range, shape too large...) or
 * the backend's failure (its check op, backend.h: then the logits and loss are not to be used). */
int bert_forward(bert_model *m, const bert_batch *batch, int training, bp_err *err);

/* Loss of the last forward pass (NaN when it had no targets). Can't fail. */
float bert_loss(const bert_model *m);

/* Logits of the last forward pass, copied to host: [B, num_labels] or [B, T, 2] (start, end
 * per token). Returns the number of floats written (<= cap), or -1 with err when cap is short
 * or the backend failed (dst then holds nothing to send). */
long bert_logits(bert_model *m, float *dst, size_t cap, bp_err *err);

/* The top of the last forward pass (device memory of the model): the logits, the pooled
 * output [B, C] (POOLED) or the last hidden state [B*T, C] (SEQUENCE). NULL before any. */
const float *bert_top(const bert_model *m);

/* Backward pass of the last forward from d_top, the gradient of the loss with respect to
 * bert_top (device, same shape, scaled as the caller wants it), adding into the gradients of
 * the parts that train. d_top must not be the model's own memory. Returns 0, or -1 with err
 * (inference-only model, no forward, or the backend's failure). */
int bert_backward_top(bert_model *m, const float *d_top, bp_err *err);

/* Backward pass of the last forward (which must have had targets), adding
 * loss_scale * d(loss)/d(param) into the gradients (1/accumulation_steps for accumulation).
 * Returns 0, or -1 with err filled (no forward with targets, or the backend's failure). */
int bert_backward(bert_model *m, float loss_scale, bp_err *err);

/* Set every gradient to zero (only the touched word-embedding rows are cleared). Can't fail. */
void bert_zero_grad(bert_model *m);

/* The optimizer segments of this model: word embeddings (row-sparse, decayed), the other
 * decayed weights, the never-decayed biases and LayerNorm. Returns the count (3). */
int bert_optim_segments(const bert_model *m, optim_segment out[3]);

/* Create an AdamW optimizer sized for this model. NULL with err filled on failure. */
optim_adamw *bert_optim_create(bert_model *m, const optim_config *cfg, bp_err *err);

/* Clip, update every parameter with AdamW at the scheduled rate, then zero the gradients.
 * grad_norm_out / lr_out may be NULL. Returns -1 with err (nothing updated) on a non-finite
 * gradient norm, and -1 with the backend's failure when an op of the step met one (the
 * parameters are then unknown: save nothing). */
int bert_optim_step(bert_model *m, optim_adamw *opt, double *grad_norm_out, float *lr_out,
                    bp_err *err);

/* Number of named tensors (HF state_dict entries) of this model. */
int bert_tensor_count(const bert_model *m);

/* Describe every tensor as HF names it, with `flat` as the base of an array laid out like the
 * parameters (num_params floats): pass m->params_memory on a host-visible backend, a host
 * copy otherwise (bert_copy_to_host); the same layout serves gradients and AdamW moments.
 * out must hold bert_tensor_count entries. Returns the count. Can't fail. */
int bert_describe_tensors(const bert_model *m, float *flat, bp_named_tensor *out);

typedef enum bert_state { BERT_STATE_PARAMS, BERT_STATE_GRADS, BERT_STATE_ADAM_M, BERT_STATE_ADAM_V } bert_state;

/* Copy num_params floats of parameters, gradients or AdamW moments (opt needed for those)
 * between device and host memory laid out as bert_describe_tensors says. Returns 0, or -1 with
 * err when opt is missing or sized for another model, or the backend failed (so a checkpoint
 * writer never receives its NaN). Uploading gradients marks every word embedding row touched. */
int bert_copy_to_host(bert_model *m, const optim_adamw *opt, bert_state which, float *dst, bp_err *err);
int bert_copy_from_host(bert_model *m, optim_adamw *opt, bert_state which, const float *src, bp_err *err);

#endif
