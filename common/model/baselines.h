/* model/baselines.h — the SQuAD baselines trained from scratch beside BERT, with the parameter
 * names of the notebooks' torch modules:
 *
 *   lstm:        embedding = nn.Embedding(V, C) -> lstm = nn.LSTM(C, C, batch_first) over each
 *                sequence's unpadded length (packed; padded outputs 0) -> qa_outputs =
 *                nn.Linear(C, 2): start/end logits per token.
 *   transformer: embedding = nn.Embedding(V, C) -> encoder = one
 *                nn.TransformerEncoderLayer(C, NH, FF, dropout, ReLU, post-LayerNorm, eps,
 *                batch_first) with the attention mask as key padding mask, no positional
 *                embedding -> qa_outputs = nn.Linear(C, 2).
 *
 * The loss is BertForQuestionAnswering's (model/loss.h); the umbrella model (model/model.h)
 * computes it from the logits here. One allocation of parameters (and one of gradients) each.
 * Shape key: B = batch, T = length, N = B*T, C = hidden, NH = heads, FF = feed-forward width.
 * Must never: print, exit, read files or touch tensor memory other than through the backend.
 */
#ifndef BP_BASELINES_H
#define BP_BASELINES_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"
#include "model/params.h"
#include "model/rnn.h"

typedef enum baseline_kind { BASELINE_LSTM = 0, BASELINE_TRANSFORMER = 1 } baseline_kind;

typedef struct baseline_config {
    baseline_kind kind;
    int vocab_size, hidden_size;
    int num_heads, ff_size;        /* transformer */
    float dropout;                 /* transformer: attention, dropout1, dropout, dropout2 */
    float layer_norm_eps;          /* transformer: 1e-5 as torch */
} baseline_config;

typedef struct baseline_params {
    float *wte;          /* (V, C)   embedding.weight */
    float *in_proj_w;    /* (3C, C)  encoder.self_attn.in_proj_weight (query | key | value) */
    float *out_proj_w;   /* (C, C)   encoder.self_attn.out_proj.weight */
    float *linear1_w;    /* (FF, C)  encoder.linear1.weight */
    float *linear2_w;    /* (C, FF)  encoder.linear2.weight */
    float *qa_w;         /* (2, C)   qa_outputs.weight */
    float *in_proj_b;    /* (3C)     encoder.self_attn.in_proj_bias */
    float *out_proj_b;   /* (C)      encoder.self_attn.out_proj.bias */
    float *linear1_b;    /* (FF)     encoder.linear1.bias */
    float *linear2_b;    /* (C)      encoder.linear2.bias */
    float *norm1_w, *norm1_b, *norm2_w, *norm2_b;   /* (C) encoder.norm1.*, encoder.norm2.* */
    float *qa_b;         /* (2)      qa_outputs.bias */
} baseline_params;       /* lstm: wte, the lstm.* block (rnn.h), qa_w, qa_b; the rest NULL */

typedef struct baseline_acts {
    float *emb;                    /* (N, C) embedding output, the layer's input */
    float *qkv;                    /* (N, 3C) */
    float *probs;                  /* (B, NH, T, T) */
    float *ctx;                    /* (N, C) */
    float *attn_sum, *ln1_mean, *ln1_rstd, *ln1;   /* norm1: input (N, C), (N), (N), output (N, C) */
    float *fc_pre;                 /* (N, FF) linear1 output */
    float *ff_act;                 /* (N, FF) dropout(relu(fc_pre)), linear2's input */
    float *ffn_sum, *ln2_mean, *ln2_rstd, *out;    /* norm2 */
    float *logits;                 /* (N, 2) start, end per token */
    float *att_scratch;            /* (B, NH, T, T) */
    float *nc_a, *nc_b, *nc_c;     /* (N, C) */
    float *nff;                    /* (N, FF) */
    float *nqkv;                   /* (N, 3C) */
} baseline_acts;

typedef struct baseline {
    baseline_config cfg;
    backend *be;
    int max_B, max_T, inference;
    size_t num_params;
    float *params_memory, *grads_memory;
    baseline_params params, grads;
    rnn_stack *lstm;               /* lstm: its parameters inside params_memory */
    uint8_t *wte_touched;          /* (V) device */
    baseline_acts acts;
    float *acts_memory;
    int32_t *d_ids, *d_mask;       /* device copies of the batch */
    int B, T, training, train_embeddings;
    uint64_t dropout_key;
} baseline;

int baseline_config_check(const baseline_config *cfg, bp_err *err);
/* Parameters of the configuration, in floats (28,167,170 for the lstm at C 768 and V 30522). */
size_t baseline_param_count(const baseline_config *cfg);
baseline *baseline_create(const baseline_config *cfg, backend *be, int max_B, int max_T, int inference, bp_err *err);
void baseline_free(baseline *m);
/* Torch's initialisation into a host array of num_params floats: embedding N(0, 1); nn.LSTM and
 * nn.Linear uniform(+-1/sqrt(fan_in)); in_proj xavier_uniform with zero bias, out_proj bias 0,
 * LayerNorm 1 and 0. Can't fail. */
void baseline_init_host(const baseline *m, float *host, uint64_t seed);
int baseline_list_params(const baseline *m, size_t flat_base, param_list *list, bp_err *err);
/* Forward: logits (N, 2) of the batch (host ids and mask, [B, T], already validated). Returns 0,
 * or -1 with err (a mask that is not 1s then 0s, for the lstm). */
int baseline_forward(baseline *m, const int32_t *ids, const int32_t *mask, int B, int T, int training,
                     uint64_t dropout_key, bp_err *err);
/* Backward from dlogits (N, 2): adds every gradient (the embedding's unless frozen). */
void baseline_backward(baseline *m, const float *dlogits);
void baseline_zero_grad(baseline *m);

#endif
