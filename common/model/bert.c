/* model/bert.c — BERT encoder + classification / QA heads on a backend (see bert.h).
 *
 * Layout follows llm.c: parameters, gradients and activations are structs of pointers into one
 * allocation each, and every layer is a forward call and a mirrored backward call on backend
 * ops.
 * Must never: touch tensor memory directly (it may live on a GPU): host code here only
 * validates inputs, plans memory and derives dropout keys.
 */
#include "model/bert.h"

#include "model/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// configuration

void bert_config_default(bert_config *cfg) {
    cfg->vocab_size = 30522;
    cfg->hidden_size = 768;
    cfg->num_hidden_layers = 12;
    cfg->num_attention_heads = 12;
    cfg->intermediate_size = 3072;
    cfg->max_position_embeddings = 512;
    cfg->type_vocab_size = 2;
    cfg->pad_token_id = 0;
    cfg->layer_norm_eps = 1e-12f;
    cfg->hidden_dropout_prob = 0.1f;
    cfg->attention_probs_dropout_prob = 0.1f;
    cfg->classifier_dropout = -1.0f;
    cfg->initializer_range = 0.02f;
    cfg->num_labels = 2;
    cfg->head = BERT_HEAD_CLASSIFICATION;
}

int bert_config_check(const bert_config *cfg, bp_err *err) {
    struct { const char *name; int value; } sizes[] = {
        { "vocab_size", cfg->vocab_size }, { "hidden_size", cfg->hidden_size },
        { "num_hidden_layers", cfg->num_hidden_layers },
        { "num_attention_heads", cfg->num_attention_heads },
        { "intermediate_size", cfg->intermediate_size },
        { "max_position_embeddings", cfg->max_position_embeddings },
        { "type_vocab_size", cfg->type_vocab_size },
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value <= 0)
            return bp_err_set(err, "config %s is %d, must be positive (bert config)", sizes[i].name,
                              sizes[i].value);
    if (cfg->hidden_size % cfg->num_attention_heads != 0)
        return bp_err_set(err, "config hidden_size %d is not a multiple of num_attention_heads %d (bert config)",
                          cfg->hidden_size, cfg->num_attention_heads);
    if (cfg->hidden_size > 8192)
        return bp_err_set(err, "config hidden_size %d above the supported 8192 (bert config)", cfg->hidden_size);
    if (cfg->head == BERT_HEAD_CLASSIFICATION && cfg->num_labels <= 0)
        return bp_err_set(err, "config num_labels is %d, must be positive (bert config)", cfg->num_labels);
    if ((unsigned)cfg->head > BERT_HEAD_SEQUENCE)
        return bp_err_set(err, "config head %d unknown (bert config)", (int)cfg->head);
    if (cfg->pad_token_id >= cfg->vocab_size)
        return bp_err_set(err, "config pad_token_id %d outside the vocabulary of %d (bert config)",
                          cfg->pad_token_id, cfg->vocab_size);
    if (!(cfg->layer_norm_eps > 0))
        return bp_err_set(err, "config layer_norm_eps must be positive (bert config)");
    float probs[] = { cfg->hidden_dropout_prob, cfg->attention_probs_dropout_prob };
    for (int i = 0; i < 2; i++)
        if (!(probs[i] >= 0 && probs[i] < 1))
            return bp_err_set(err, "config dropout probability %g outside [0, 1) (bert config)", probs[i]);
    if (!(cfg->classifier_dropout < 1))
        return bp_err_set(err, "config classifier_dropout %g must be below 1 (bert config)",
                          cfg->classifier_dropout);
    return 0;
}

static int head_outputs(const bert_config *cfg) {
    if (cfg->head == BERT_HEAD_POOLED || cfg->head == BERT_HEAD_SEQUENCE) return 0;
    return cfg->head == BERT_HEAD_QA ? 2 : cfg->num_labels;
}

/* The last layer continues on the [CLS] rows only: nothing else reaches the pooler. */
static int cls_rows_only(const bert_config *cfg) {
    return cfg->head == BERT_HEAD_CLASSIFICATION || cfg->head == BERT_HEAD_POOLED;
}

// ----------------------------------------------------------------------------
// memory plan

#define NUM_PARAM_TENSORS 21
#define NUM_DECAYED_TENSORS 9   /* wte .. headw come first in bert_params */

static void param_sizes(const bert_config *cfg, size_t sizes[NUM_PARAM_TENSORS]) {
    size_t V = cfg->vocab_size, C = cfg->hidden_size, L = cfg->num_hidden_layers;
    size_t I = cfg->intermediate_size, P = cfg->max_position_embeddings, K = cfg->type_vocab_size;
    size_t NL = head_outputs(cfg);
    size_t pool = cfg->head == BERT_HEAD_QA ? 0 : 1;
    size_t s[NUM_PARAM_TENSORS] = {
        V * C, P * C, K * C, L * 3 * C * C, L * C * C, L * I * C, L * C * I, pool * C * C, NL * C,
        C, C, L * 3 * C, L * C, L * C, L * C, L * I, L * C, L * C, L * C, pool * C, NL,
    };
    memcpy(sizes, s, sizeof s);
}

static void point_params(bert_params *p, float *memory, const size_t sizes[NUM_PARAM_TENSORS]) {
    float **ptrs[NUM_PARAM_TENSORS] = {
        &p->wte, &p->wpe, &p->wtt, &p->qkvw, &p->attn_ow, &p->fcw, &p->fc2w, &p->poolw, &p->headw,
        &p->emb_lnw, &p->emb_lnb, &p->qkvb, &p->attn_ob, &p->ln1w, &p->ln1b, &p->fcb, &p->fc2b,
        &p->ln2w, &p->ln2b, &p->poolb, &p->headb,
    };
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        *ptrs[i] = sizes[i] ? memory : NULL;
        memory += sizes[i];
    }
}

#define NUM_ACT_TENSORS 33

/* Floats of one layer's act for gelu_matmul_forward/backward (backend.h): N * I 16-bit values,
 * whole cache lines */
static size_t gelu_kept_floats(size_t N, size_t I) { return backend_kept_floats(N * I); }

/* What a layer's forward keeps for its backward where the backend offers it (backend.h
 * matmul_forward_keep, attention_forward_keep), one after the other in acts.op_kept: the kept of
 * the qkv product (input: the layer input), of the attention output product (input: the context),
 * of the fc product (input: ln1), each N * C 16-bit values, and of the attention, N * 3C. */
enum { KEPT_QKV, KEPT_ATTN_OUT, KEPT_FC, KEPT_ATTENTION };
static size_t op_kept_offset(size_t N, size_t C, int which) { return (size_t)which * backend_kept_floats(N * C); }
static size_t op_kept_floats(size_t N, size_t C) {
    return op_kept_offset(N, C, KEPT_ATTENTION) + backend_kept_floats(N * 3 * C);
}

/* Sizes in floats, in the order of the fields of bert_acts. */
/* kept_layer: floats per layer for what the backend's fused GELU product keeps for its backward
 * (gelu_kept_floats), 0 for none */
static void act_sizes(const bert_config *cfg, int B, int T, int inference, size_t kept_layer,
                      size_t op_kept_layer, size_t sizes[NUM_ACT_TENSORS]) {
    /* inference keeps one layer's state and two encoded slots */
    size_t C = cfg->hidden_size, L = inference ? 1 : cfg->num_hidden_layers, I = cfg->intermediate_size;
    size_t NH = cfg->num_attention_heads, N = (size_t)B * T;
    size_t NL = head_outputs(cfg);
    size_t logits = cfg->head == BERT_HEAD_QA ? N * 2 : (size_t)B * NL;
    size_t s[NUM_ACT_TENSORS] = {
        N * C, N, N, (L + 1) * N * C, L * N * 3 * C, L * B * NH * T * T, L * N * C, L * N * C, L * N,
        L * N, L * N * C, L * N * I, L * N * C, L * N, L * N, B * C, B * C, B * C, B * C, logits, 2,
        B * NH * T * T, N * C, N * C, N * C, N * I, N * I, N * 3 * C, logits, B * C, B * C,
        L * kept_layer, L * op_kept_layer,
    };
    memcpy(sizes, s, sizeof s);
}

static void point_acts(bert_acts *a, float *memory, const size_t sizes[NUM_ACT_TENSORS]) {
    float **ptrs[NUM_ACT_TENSORS] = {
        &a->emb_sum, &a->emb_mean, &a->emb_rstd, &a->encoded, &a->qkv, &a->probs, &a->ctx,
        &a->attn_sum, &a->ln1_mean, &a->ln1_rstd, &a->ln1, &a->fc_pre, &a->ffn_sum, &a->ln2_mean,
        &a->ln2_rstd, &a->cls_ctx, &a->cls_resid, &a->pooled, &a->pooled_dropped, &a->logits, &a->loss,
        &a->att_scratch, &a->nc_a, &a->nc_b, &a->nc_c, &a->ni_a, &a->ni_b, &a->nqkv, &a->dlogits,
        &a->b_c1, &a->b_c2, &a->gelu_kept, &a->op_kept,
    };
    for (int i = 0; i < NUM_ACT_TENSORS; i++) {
        /* 16-float alignment keeps every tensor on its own cache lines */
        *ptrs[i] = memory;
        memory += (sizes[i] + 15) / 16 * 16;
    }
}

/* Floats from qkvw to the end of headw: the weights of every matrix product, adjacent in
 * bert_params, which the backend may keep rounded copies of (backend.h plan_weights). */
static size_t product_weights(const bert_model *m) {
    return (size_t)(m->params.headw - m->params.qkvw) + (size_t)head_outputs(&m->cfg) * m->cfg.hidden_size;
}

/* The parameters changed (loaded, initialised, stepped): copies the backend keeps are stale. */
static void weights_changed(bert_model *m) {
    if (m->be->weights_changed) m->be->weights_changed(m->be);
}

static size_t total_aligned(const size_t *sizes, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (sizes[i] + 15) / 16 * 16;
    return total;
}

bert_model *bert_create(const bert_config *cfg, backend *be, int max_B, int max_T, bp_err *err) {
    return bert_create_for(cfg, be, max_B, max_T, BERT_FOR_TRAINING, err);
}

bert_model *bert_create_for(const bert_config *cfg, backend *be, int max_B, int max_T, bert_use use,
                            bp_err *err) {
    if (bert_config_check(cfg, err) != 0) return NULL;
    if (max_B <= 0 || max_T <= 0) {
        bp_err_set(err, "batch shape %d x %d must be positive (bert_create)", max_B, max_T);
        return NULL;
    }
    if (max_T > cfg->max_position_embeddings) {
        bp_err_set(err, "sequence length %d above max_position_embeddings %d (bert_create)", max_T,
                   cfg->max_position_embeddings);
        return NULL;
    }
    bert_model *m = calloc(1, sizeof *m);
    if (!m) {
        bp_err_set(err, "out of memory creating the model (bert_create)");
        return NULL;
    }
    m->cfg = *cfg;
    m->be = be;
    m->max_B = max_B;
    m->max_T = max_T;
    m->loss = NAN;
    m->inference = use == BERT_FOR_INFERENCE;

    size_t psizes[NUM_PARAM_TENSORS];
    param_sizes(cfg, psizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        m->num_params += psizes[i];
        if (i < NUM_DECAYED_TENSORS) m->num_decayed += psizes[i];
    }
    size_t asizes[NUM_ACT_TENSORS];
    /* the fused op's kept GELU output is worth its memory only when a backward reads it */
    if (!m->inference && be->gelu_matmul_forward && be->gelu_matmul_backward)
        m->gelu_kept_layer = gelu_kept_floats((size_t)max_B * max_T, (size_t)cfg->intermediate_size);
    if (!m->inference && be->matmul_forward_keep && be->matmul_backward_kept && be->attention_forward_keep &&
        be->attention_backward_kept)
        m->op_kept_layer = op_kept_floats((size_t)max_B * max_T, (size_t)cfg->hidden_size);
    act_sizes(cfg, max_B, max_T, m->inference, m->gelu_kept_layer, m->op_kept_layer, asizes);
    size_t N = (size_t)max_B * max_T;

    m->params_memory = be->alloc(be, m->num_params * sizeof(float), err);
    int ok = m->params_memory != NULL;
    if (ok && !m->inference) {
        m->grads_memory = be->alloc(be, m->num_params * sizeof(float), err);
        ok = m->grads_memory != NULL;
    }
    if (ok) m->acts_memory = be->alloc(be, total_aligned(asizes, NUM_ACT_TENSORS) * sizeof(float), err);
    if (m->acts_memory) m->wte_touched = be->alloc(be, (size_t)cfg->vocab_size, err);
    /* ids, types, mask: N each; targets: 2B (start and end); float targets: B */
    if (m->wte_touched) m->inputs_memory = be->alloc(be, (3 * N + 3 * (size_t)max_B) * sizeof(int32_t), err);
    if (!m->inputs_memory) {
        bert_free(m);
        return NULL;
    }
    m->train_embeddings = m->train_pooler = 1;
    m->train_layers = malloc((size_t)cfg->num_hidden_layers);
    m->frozen_sink = be->alloc(be, 2 * (size_t)cfg->hidden_size * sizeof(float), err);
    if (!m->train_layers || !m->frozen_sink) {
        if (!m->train_layers) bp_err_set(err, "out of memory creating the model (bert_create)");
        bert_free(m);
        return NULL;
    }
    memset(m->train_layers, 1, (size_t)cfg->num_hidden_layers);
    point_params(&m->params, m->params_memory, psizes);
    if (m->grads_memory) point_params(&m->grads, m->grads_memory, psizes);
    point_acts(&m->acts, m->acts_memory, asizes);
    m->d_input_ids = m->inputs_memory;
    m->d_token_type_ids = m->d_input_ids + N;
    m->d_attention_mask = m->d_token_type_ids + N;
    m->d_targets = m->d_attention_mask + N;
    m->d_target_values = (float *)(void *)(m->d_targets + 2 * (size_t)max_B);
    m->targets = (loss_targets){ .kind = cfg->head == BERT_HEAD_QA ? LOSS_QA_SPAN
                                        : cfg->num_labels == 1 ? LOSS_MSE : LOSS_CROSS_ENTROPY,
                                 .classes = cfg->num_labels, .ids = m->d_targets, .values = m->d_target_values };
    if (be->plan_weights && be->plan_weights(be, m->params.qkvw, product_weights(m), err) != 0) {
        bert_free(m);
        return NULL;
    }
    return m;
}

void bert_free(bert_model *m) {
    if (!m) return;
    backend *be = m->be;
    if (be->plan_weights && m->params_memory) be->plan_weights(be, m->params.qkvw, 0, NULL);
    be->free(be, m->params_memory);
    be->free(be, m->grads_memory);
    be->free(be, m->acts_memory);
    be->free(be, m->wte_touched);
    be->free(be, m->inputs_memory);
    be->free(be, m->frozen_sink);
    free(m->train_layers);
    free(m);
}

// ----------------------------------------------------------------------------
// fresh weights

int bert_init_weights(bert_model *m, uint64_t seed, int only_head, bp_err *err) {
    const bert_config *cfg = &m->cfg;
    float *host = malloc(m->num_params * sizeof(float));
    if (!host) return bp_err_set(err, "out of memory initialising %zu parameters (bert_init_weights)", m->num_params);
    size_t sizes[NUM_PARAM_TENSORS];
    param_sizes(cfg, sizes);
    if (only_head) m->be->download(m->be, host, m->params_memory, m->num_params * sizeof(float));
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        int is_head = i == 8 || i == 20;
        if (!only_head || is_head) {
            float *t = host + offset;
            int is_layernorm_weight = i == 9 || i == 13 || i == 17;
            for (size_t k = 0; k < sizes[i]; k++) {
                if (i < NUM_DECAYED_TENSORS)   /* weights and embeddings */
                    t[k] = cfg->initializer_range * param_draw_normal(seed, offset + k);
                else
                    t[k] = is_layernorm_weight ? 1.0f : 0.0f;
            }
            if (i == 0 && cfg->pad_token_id >= 0)
                memset(t + (size_t)cfg->pad_token_id * cfg->hidden_size, 0,
                       (size_t)cfg->hidden_size * sizeof(float));
        }
        offset += sizes[i];
    }
    m->be->upload(m->be, m->params_memory, host, m->num_params * sizeof(float));
    weights_changed(m);
    free(host);
    return m->be->check(m->be, err);
}

// ----------------------------------------------------------------------------
// forward

/* dropout sites: embeddings 0; layer l: attention probabilities, attention output, FFN
 * output; then the classifier input */
enum { SITE_EMBEDDINGS = 0 };
static uint64_t site_key(const bert_model *m, int site) {
    return backend_mix_key(backend_mix_key(m->dropout_seed, m->dropout_counter), (uint64_t)site);
}
static int site_attention(int l) { return 1 + 3 * l; }
static int site_attention_out(int l) { return 2 + 3 * l; }
static int site_ffn_out(int l) { return 3 + 3 * l; }
static int site_classifier(const bert_config *cfg) { return 1 + 3 * cfg->num_hidden_layers; }

/* Layer l's act for the fused GELU product (backend.h gelu_matmul_forward), kept from the
 * forward for the backward; NULL when the model has none (the backward makes it again). */
static float *gelu_kept(const bert_model *m, size_t l) {
    return m->kept_by_forward & KEPT_BY_GELU ? m->acts.gelu_kept + l * m->gelu_kept_layer : NULL;
}

/* Layer l's kept `which` (KEPT_QKV ...); NULL when the model keeps none (inference, or a backend
 * without the ops): the plain ops run then. */
static float *op_kept(const bert_model *m, size_t l, int which) {
    const backend *be = m->be;
    if (!(m->kept_by_forward & KEPT_BY_OPS) || !be->matmul_forward_keep || !be->attention_forward_keep ||
        !be->matmul_backward_kept || !be->attention_backward_kept)
        return NULL;
    size_t N = (size_t)m->max_B * m->max_T;
    return m->acts.op_kept + l * m->op_kept_layer + op_kept_offset(N, (size_t)m->cfg.hidden_size, which);
}

/* matmul_forward, leaving in kept (not NULL) what the layer's backward reads */
static void linear_forward(backend *be, float *kept, float *out, const float *inp, const float *weight,
                           const float *bias, int N, int IC, int OC) {
    if (kept) be->matmul_forward_keep(be, out, kept, inp, weight, bias, N, IC, OC);
    else be->matmul_forward(be, out, inp, weight, bias, N, IC, OC);
}

/* Which encoded slot holds the input of layer l (l = L: the encoder output). */
static size_t encoded_slot(const bert_model *m, int l) {
    return m->inference ? (size_t)(l % 2) : (size_t)l;
}

static int check_batch(const bert_model *m, const bert_batch *b, bp_err *err) {
    const bert_config *cfg = &m->cfg;
    if (b->B <= 0 || b->T <= 0 || b->B > m->max_B || b->T > m->max_T)
        return bp_err_set(err, "batch shape %d x %d outside the planned 1..%d x 1..%d (bert_forward)",
                          b->B, b->T, m->max_B, m->max_T);
    if (!b->input_ids || !b->token_type_ids || !b->attention_mask)
        return bp_err_set(err, "batch lacks input_ids, token_type_ids or attention_mask (bert_forward)");
    for (int i = 0; i < b->B * b->T; i++) {
        if (b->input_ids[i] < 0 || b->input_ids[i] >= cfg->vocab_size)
            return bp_err_set(err, "input_ids[%d][%d] = %d outside the vocabulary of %d (bert_forward)",
                              i / b->T, i % b->T, b->input_ids[i], cfg->vocab_size);
        if (b->token_type_ids[i] < 0 || b->token_type_ids[i] >= cfg->type_vocab_size)
            return bp_err_set(err, "token_type_ids[%d][%d] = %d outside 0..%d (bert_forward)",
                              i / b->T, i % b->T, b->token_type_ids[i], cfg->type_vocab_size - 1);
        if (b->attention_mask[i] != 0 && b->attention_mask[i] != 1)
            return bp_err_set(err, "attention_mask[%d][%d] = %d, must be 0 or 1 (bert_forward)",
                              i / b->T, i % b->T, b->attention_mask[i]);
    }
    if (cfg->head == BERT_HEAD_CLASSIFICATION && cfg->num_labels > 1 && b->labels)
        for (int i = 0; i < b->B; i++)
            if (b->labels[i] != -100 && (b->labels[i] < 0 || b->labels[i] >= cfg->num_labels))
                return bp_err_set(err, "label %d of row %d outside 0..%d (bert_forward)", b->labels[i], i,
                                  cfg->num_labels - 1);
    if (cfg->head == BERT_HEAD_QA && (!b->start_positions) != (!b->end_positions))
        return bp_err_set(err, "batch has start_positions or end_positions but not both (bert_forward)");
    return 0;
}

/* Upload the targets of the head (loss.h clamps QA positions as HF does). Returns 1 when the
 * batch has targets for this head, 0 when not (or the head has no loss of its own), -1 on error. */
static int upload_targets(bert_model *m, const bert_batch *b, bp_err *err) {
    if (m->cfg.head != BERT_HEAD_CLASSIFICATION && m->cfg.head != BERT_HEAD_QA) return 0;
    return loss_upload(m->be, &m->targets, b->B, b->T, b->labels, b->label_values, b->start_positions,
                       b->end_positions, err);
}

/* Loss of the head and d(loss * loss_scale)/d(logits) into acts.dlogits; the loss is added to
 * *loss_out. */
static void head_loss(bert_model *m, float *loss_out, float loss_scale) {
    loss_apply(m->be, &m->targets, m->acts.logits, m->acts.dlogits, loss_out, loss_scale);
}

int bert_forward(bert_model *m, const bert_batch *batch, int training, bp_err *err) {
    if (check_batch(m, batch, err) != 0) return -1;
    backend *be = m->be;
    const bert_config *cfg = &m->cfg;
    bert_params *p = &m->params;
    bert_acts *a = &m->acts;
    int B = batch->B, T = batch->T, C = cfg->hidden_size, I = cfg->intermediate_size;
    int NH = cfg->num_attention_heads, L = cfg->num_hidden_layers;
    size_t N = (size_t)B * T, NC = N * C;
    m->B = B;
    m->T = T;
    m->training = training;
    /* what this forward leaves for the backward: only what it writes is read there (a backend's
     * optional ops may come and go between passes: backend_cpu_set_bf16) */
    m->kept_by_forward = (m->gelu_kept_layer && be->gelu_matmul_forward ? KEPT_BY_GELU : 0) |
                         (m->op_kept_layer && be->matmul_forward_keep && be->attention_forward_keep ? KEPT_BY_OPS : 0);
    m->dropout_hidden = training ? cfg->hidden_dropout_prob : 0.0f;
    m->dropout_attention = training ? cfg->attention_probs_dropout_prob : 0.0f;
    m->dropout_classifier = training ? (cfg->classifier_dropout >= 0 ? cfg->classifier_dropout
                                                                     : cfg->hidden_dropout_prob) : 0.0f;
    if (training) m->dropout_counter++;   /* a fresh set of masks for every training pass */

    be->upload(be, m->d_input_ids, batch->input_ids, N * sizeof(int32_t));
    be->upload(be, m->d_token_type_ids, batch->token_type_ids, N * sizeof(int32_t));
    be->upload(be, m->d_attention_mask, batch->attention_mask, N * sizeof(int32_t));
    int has_targets = upload_targets(m, batch, err);
    if (has_targets < 0) return -1;

    // embeddings -> LayerNorm -> dropout
    be->embedding_forward(be, a->emb_sum, m->d_input_ids, m->d_token_type_ids, p->wte, p->wpe,
                          p->wtt, B, T, C);
    be->add_layernorm_forward(be, a->encoded, a->emb_sum, a->emb_mean, a->emb_rstd, a->emb_sum,
                              NULL, p->emb_lnw, p->emb_lnb, (int)N, C, cfg->layer_norm_eps, 0.0f, 0);
    if (m->dropout_hidden > 0)
        be->dropout(be, a->encoded, a->encoded, NC, m->dropout_hidden, site_key(m, SITE_EMBEDDINGS));

    // encoder layers (shape key: N = B*T tokens, C hidden, I intermediate). With the
    // classification head the last layer continues on the B [CLS] rows after attention.
    for (int l = 0; l < L; l++) {
        int cls_only = cls_rows_only(cfg) && l == L - 1;
        int rows = cls_only ? B : (int)N;
        /* inference keeps one layer of state (ls = 0) and two encoded slots, used in turn */
        size_t ls = m->inference ? 0 : (size_t)l;
        float *in = a->encoded + encoded_slot(m, l) * NC;
        float *out = a->encoded + encoded_slot(m, l + 1) * NC;
        float *qkv = a->qkv + ls * N * 3 * C;
        float *ctx = a->ctx + ls * NC;
        float *ln1 = a->ln1 + ls * NC;
        float *fc_pre = a->fc_pre + ls * N * I;
        float *resid = in;
        linear_forward(be, op_kept(m, ls, KEPT_QKV), qkv, in, p->qkvw + (size_t)l * 3 * C * C,
                       p->qkvb + (size_t)l * 3 * C, (int)N, C, 3 * C);
        float *att_kept = op_kept(m, ls, KEPT_ATTENTION), *probs = a->probs + ls * B * NH * T * T;
        if (att_kept)
            be->attention_forward_keep(be, ctx, probs, a->att_scratch, att_kept, qkv, m->d_attention_mask, B, T,
                                       cls_only ? 1 : T, C, NH, m->dropout_attention, site_key(m, site_attention(l)));
        else
            be->attention_forward(be, ctx, probs, a->att_scratch, qkv, m->d_attention_mask, B, T, cls_only ? 1 : T,
                                  C, NH, m->dropout_attention, site_key(m, site_attention(l)));
        if (cls_only) {
            be->copy_rows(be, a->cls_ctx, C, ctx, T * C, B, C);
            be->copy_rows(be, a->cls_resid, C, in, T * C, B, C);
            ctx = a->cls_ctx;
            resid = a->cls_resid;
        }
        linear_forward(be, op_kept(m, ls, KEPT_ATTN_OUT), a->nc_a, ctx, p->attn_ow + (size_t)l * C * C,
                       p->attn_ob + (size_t)l * C, rows, C, C);
        be->add_layernorm_forward(be, ln1, a->attn_sum + ls * NC, a->ln1_mean + ls * N, a->ln1_rstd + ls * N,
                                  a->nc_a, resid, p->ln1w + (size_t)l * C, p->ln1b + (size_t)l * C, rows,
                                  C, cfg->layer_norm_eps, m->dropout_hidden,
                                  site_key(m, site_attention_out(l)));
        linear_forward(be, op_kept(m, ls, KEPT_FC), fc_pre, ln1, p->fcw + (size_t)l * I * C, p->fcb + (size_t)l * I,
                       rows, C, I);
        if (be->gelu_matmul_forward) {
            be->gelu_matmul_forward(be, a->nc_a, gelu_kept(m, ls), fc_pre, p->fc2w + (size_t)l * C * I,
                                    p->fc2b + (size_t)l * C, rows, I, C);
        } else {
            be->gelu_forward(be, a->ni_a, fc_pre, (size_t)rows * I);
            be->matmul_forward(be, a->nc_a, a->ni_a, p->fc2w + (size_t)l * C * I, p->fc2b + (size_t)l * C,
                               rows, I, C);
        }
        be->add_layernorm_forward(be, out, a->ffn_sum + ls * NC, a->ln2_mean + ls * N, a->ln2_rstd + ls * N,
                                  a->nc_a, ln1, p->ln2w + (size_t)l * C, p->ln2b + (size_t)l * C, rows,
                                  C, cfg->layer_norm_eps, m->dropout_hidden, site_key(m, site_ffn_out(l)));
    }
    float *encoded = a->encoded + encoded_slot(m, L) * NC;

    // head
    if (cfg->head == BERT_HEAD_QA) {
        be->matmul_forward(be, a->logits, encoded, p->headw, p->headb, (int)N, C, 2);
    } else if (cfg->head == BERT_HEAD_POOLED) {   /* encoded holds the B [CLS] rows */
        be->matmul_forward(be, a->b_c1, encoded, p->poolw, p->poolb, B, C, C);
        be->tanh_forward(be, a->pooled, a->b_c1, (size_t)B * C);
    } else if (cfg->head == BERT_HEAD_CLASSIFICATION) {
        be->matmul_forward(be, a->b_c1, encoded, p->poolw, p->poolb, B, C, C);
        be->tanh_forward(be, a->pooled, a->b_c1, (size_t)B * C);
        be->dropout(be, a->pooled_dropped, a->pooled, (size_t)B * C, m->dropout_classifier,
                    site_key(m, site_classifier(cfg)));
        be->matmul_forward(be, a->logits, a->pooled_dropped, p->headw, p->headb, B, C, cfg->num_labels);
    }

    m->has_loss = has_targets;
    m->loss = NAN;
    if (has_targets) {
        be->zero(be, a->loss, sizeof(float));
        head_loss(m, a->loss, 1.0f);
        be->download(be, &m->loss, a->loss, sizeof(float));
    }
    /* a failed op leaves NaN or stale logits and loss: report it before anyone reads them */
    return be->check(be, err);
}

float bert_loss(const bert_model *m) { return m->loss; }

const float *bert_top(const bert_model *m) {
    if (m->B == 0) return NULL;
    if (m->cfg.head == BERT_HEAD_POOLED) return m->acts.pooled;
    if (m->cfg.head == BERT_HEAD_SEQUENCE)
        return m->acts.encoded + encoded_slot(m, m->cfg.num_hidden_layers) * (size_t)m->B * m->T * m->cfg.hidden_size;
    return m->acts.logits;
}

long bert_logits(bert_model *m, float *dst, size_t cap, bp_err *err) {
    size_t n = m->cfg.head == BERT_HEAD_QA ? (size_t)m->B * m->T * 2 : (size_t)m->B * m->cfg.num_labels;
    if (m->cfg.head == BERT_HEAD_POOLED || m->cfg.head == BERT_HEAD_SEQUENCE)
        return bp_err_set(err, "BertModel alone has no logits: its head is outside (bert_logits)");
    if (m->B == 0) return bp_err_set(err, "no forward pass to read logits from (bert_logits)");
    if (cap < n) return bp_err_set(err, "logits need %zu floats, buffer holds %zu (bert_logits)", n, cap);
    m->be->download(m->be, dst, m->acts.logits, n * sizeof(float));
    if (m->be->check(m->be, err) != 0) return -1;
    return (long)n;
}

// ----------------------------------------------------------------------------
// backward

/* matmul_backward when the weights train; else only the input gradient (none when dinp is
 * NULL: nothing below needs it). */
/* kept: NULL, or what linear_forward kept from inp */
static void linear_backward(backend *be, int trains, float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *kept, const float *weight, int N, int IC, int OC,
                            int accumulate) {
    if (trains && kept) be->matmul_backward_kept(be, dinp, dweight, dbias, dout, inp, kept, weight, N, IC, OC, accumulate);
    else if (trains) be->matmul_backward(be, dinp, dweight, dbias, dout, inp, weight, N, IC, OC, accumulate);
    else if (dinp) be->matmul_backward_input(be, dinp, dout, weight, N, IC, OC, accumulate);
}

/* The lowest layer the backward must reach: 0 when the embeddings train, else the lowest layer
 * that trains; L when none does. */
static int lowest_layer(const bert_model *m) {
    int L = m->cfg.num_hidden_layers;
    if (m->train_embeddings) return 0;
    for (int l = 0; l < L; l++)
        if (m->train_layers[l]) return l;
    return L;
}

/* From the gradient of the top (bert_top) down to the lowest part that trains. */
static int backward_from_top(bert_model *m, const float *d_top, bp_err *err) {
    backend *be = m->be;
    const bert_config *cfg = &m->cfg;
    bert_params *p = &m->params, *g = &m->grads;
    bert_acts *a = &m->acts;
    int B = m->B, T = m->T, C = cfg->hidden_size, I = cfg->intermediate_size;
    int NH = cfg->num_attention_heads, L = cfg->num_hidden_layers;
    size_t N = (size_t)B * T, NC = N * C;
    float *encoded = a->encoded + (size_t)L * NC;
    float *dh = a->nc_a;   /* gradient of the current layer output, then of its input */
    int lowest = lowest_layer(m), below = lowest < L;   /* below: a layer under the top trains */

    /* dout: gradient of the last layer's output; N rows (QA, SEQUENCE) or the B [CLS] rows */
    float *dout = dh;
    if (cfg->head == BERT_HEAD_QA) {
        be->matmul_backward(be, below ? dh : NULL, g->headw, g->headb, d_top, encoded, p->headw, (int)N, C, 2, 0);
    } else if (cfg->head == BERT_HEAD_SEQUENCE) {
        dout = (float *)d_top;   /* read only: the layer backward writes its own buffers */
    } else {
        const float *d_pooled = d_top;
        if (cfg->head == BERT_HEAD_CLASSIFICATION) {
            be->matmul_backward(be, a->b_c1, g->headw, g->headb, d_top, a->pooled_dropped, p->headw, B, C,
                                cfg->num_labels, 0);
            be->dropout(be, a->b_c1, a->b_c1, (size_t)B * C, m->dropout_classifier, site_key(m, site_classifier(cfg)));
            d_pooled = a->b_c1;
        }
        be->tanh_backward(be, a->b_c2, a->pooled, d_pooled, (size_t)B * C);
        linear_backward(be, m->train_pooler, below ? a->b_c1 : NULL, g->poolw, g->poolb, a->b_c2, encoded, NULL,
                        p->poolw, B, C, C, 0);
        dout = a->b_c1;
    }
    if (!below) return be->check(be, err);

    be->zero(be, m->frozen_sink, 2 * (size_t)C * sizeof(float));
    for (int l = L - 1; l >= lowest; l--) {
        int cls_only = cls_rows_only(cfg) && l == L - 1;
        int rows = cls_only ? B : (int)N;
        int trains = m->train_layers[l];
        float *in = a->encoded + l * NC;
        float *qkv = a->qkv + l * N * 3 * C;
        float *ctx = cls_only ? a->cls_ctx : a->ctx + l * NC;
        float *ln1 = a->ln1 + l * NC;
        float *fc_pre = a->fc_pre + l * N * I;
        float *d_ln1 = a->nc_b, *d_branch = a->nc_c, *d_inter = a->ni_b, *gelu = a->ni_a;
        /* [CLS]-only layer: its residual gradient goes to a side buffer first */
        float *d_resid = cls_only ? a->b_c2 : dh;
        /* a frozen layer's LayerNorm gradients go to the sink */
        float *ln2w = trains ? g->ln2w + (size_t)l * C : m->frozen_sink, *ln2b = trains ? g->ln2b + (size_t)l * C : m->frozen_sink + C;
        float *ln1w = trains ? g->ln1w + (size_t)l * C : m->frozen_sink, *ln1b = trains ? g->ln1b + (size_t)l * C : m->frozen_sink + C;
        // LN2: dout -> d(ln1) through the residual, d(FFN output) through dropout
        be->add_layernorm_backward(be, d_branch, d_ln1, ln2w, ln2b, dout, a->ffn_sum + l * NC, a->ln2_mean + l * N,
                                   a->ln2_rstd + l * N, p->ln2w + (size_t)l * C, rows, C, m->dropout_hidden,
                                   site_key(m, site_ffn_out(l)));
        // FFN: fc2 (needs GELU output: kept by the fused op's forward, else recomputed), GELU, fc
        if (trains && be->gelu_matmul_backward) {
            be->gelu_matmul_backward(be, d_inter, g->fc2w + (size_t)l * C * I, g->fc2b + (size_t)l * C, d_branch,
                                     fc_pre, gelu_kept(m, l), p->fc2w + (size_t)l * C * I, rows, I, C, 0);
        } else {
            if (trains) be->gelu_forward(be, gelu, fc_pre, (size_t)rows * I);
            linear_backward(be, trains, d_inter, g->fc2w + (size_t)l * C * I, g->fc2b + (size_t)l * C, d_branch,
                            gelu, NULL, p->fc2w + (size_t)l * C * I, rows, I, C, 0);
        }
        if (trains && be->gelu_backward_matmul_backward) {
            be->gelu_backward_matmul_backward(be, d_ln1, g->fcw + (size_t)l * I * C, g->fcb + (size_t)l * I, d_inter,
                                              fc_pre, ln1, op_kept(m, l, KEPT_FC), p->fcw + (size_t)l * I * C, rows, C, I, 1);
        } else {
            be->gelu_backward(be, d_inter, fc_pre, d_inter, (size_t)rows * I);
            linear_backward(be, trains, d_ln1, g->fcw + (size_t)l * I * C, g->fcb + (size_t)l * I, d_inter, ln1,
                            op_kept(m, l, KEPT_FC), p->fcw + (size_t)l * I * C, rows, C, I, 1);
        }
        // LN1: d(ln1) -> d(layer input) through the residual, d(attention output) via dropout
        be->add_layernorm_backward(be, d_branch, d_resid, ln1w, ln1b, d_ln1, a->attn_sum + l * NC, a->ln1_mean + l * N,
                                   a->ln1_rstd + l * N, p->ln1w + (size_t)l * C, rows, C, m->dropout_hidden,
                                   site_key(m, site_attention_out(l)));
        // attention output dense, attention, qkv projection
        float *dctx = d_ln1;
        if (cls_only) {   /* compact [CLS] rows back to their places in the sequence */
            linear_backward(be, trains, dh, g->attn_ow + (size_t)l * C * C, g->attn_ob + (size_t)l * C, d_branch, ctx,
                            op_kept(m, l, KEPT_ATTN_OUT), p->attn_ow + (size_t)l * C * C, rows, C, C, 0);
            be->copy_rows(be, dctx, T * C, dh, C, B, C);
        } else {
            linear_backward(be, trains, dctx, g->attn_ow + (size_t)l * C * C, g->attn_ob + (size_t)l * C, d_branch,
                            ctx, op_kept(m, l, KEPT_ATTN_OUT), p->attn_ow + (size_t)l * C * C, rows, C, C, 0);
        }
        float *att_kept = op_kept(m, l, KEPT_ATTENTION), *probs = a->probs + l * (size_t)B * NH * T * T;
        if (att_kept)
            be->attention_backward_kept(be, a->nqkv, a->att_scratch, dctx, probs, qkv, att_kept, m->d_attention_mask,
                                        B, T, cls_only ? 1 : T, C, NH, m->dropout_attention,
                                        site_key(m, site_attention(l)));
        else
            be->attention_backward(be, a->nqkv, a->att_scratch, dctx, probs, qkv, m->d_attention_mask, B, T,
                                   cls_only ? 1 : T, C, NH, m->dropout_attention, site_key(m, site_attention(l)));
        if (cls_only) {   /* the residual reached the [CLS] rows only */
            be->zero(be, dh, NC * sizeof(float));
            be->copy_rows(be, dh, T * C, d_resid, C, B, C);
        }
        /* the lowest layer's input gradient is wanted only by trainable embeddings */
        float *d_in = l > lowest || m->train_embeddings ? dh : NULL;
        linear_backward(be, trains, d_in, g->qkvw + (size_t)l * 3 * C * C, g->qkvb + (size_t)l * 3 * C, a->nqkv, in,
                        op_kept(m, l, KEPT_QKV), p->qkvw + (size_t)l * 3 * C * C, (int)N, C, 3 * C, 1);
        dout = dh;
    }

    // embeddings: dropout, LayerNorm, scatter into the tables
    if (m->train_embeddings) {
        if (m->dropout_hidden > 0)
            be->dropout(be, dh, dh, NC, m->dropout_hidden, site_key(m, SITE_EMBEDDINGS));
        be->add_layernorm_backward(be, a->nc_b, NULL, g->emb_lnw, g->emb_lnb, dh, a->emb_sum, a->emb_mean,
                                   a->emb_rstd, p->emb_lnw, (int)N, C, 0.0f, 0);
        be->embedding_backward(be, g->wte, g->wpe, g->wtt, m->wte_touched, a->nc_b, m->d_input_ids,
                               m->d_token_type_ids, B, T, C, cfg->pad_token_id);
    }
    return be->check(be, err);
}

int bert_backward(bert_model *m, float loss_scale, bp_err *err) {
    if (m->inference)
        return bp_err_set(err, "model was created for inference only: no backward (bert_backward)");
    if (!m->has_loss)
        return bp_err_set(err, "backward needs a forward pass with targets (bert_backward)");
    /* loss gradient again, now with the caller's scale (the loss itself goes to a spare slot) */
    m->be->zero(m->be, m->acts.loss + 1, sizeof(float));
    head_loss(m, m->acts.loss + 1, loss_scale);
    return backward_from_top(m, m->acts.dlogits, err);
}

int bert_backward_top(bert_model *m, const float *d_top, bp_err *err) {
    if (m->inference)
        return bp_err_set(err, "model was created for inference only: no backward (bert_backward)");
    if (m->B == 0) return bp_err_set(err, "backward needs a forward pass first (bert_backward)");
    return backward_from_top(m, d_top, err);
}

void bert_zero_grad(bert_model *m) {
    backend *be = m->be;
    if (m->inference) return;   /* no gradients to clear */
    size_t wte = (size_t)m->cfg.vocab_size * m->cfg.hidden_size;
    be->embedding_zero_grad(be, m->grads.wte, m->wte_touched, m->cfg.vocab_size, m->cfg.hidden_size);
    be->zero(be, m->grads_memory + wte, (m->num_params - wte) * sizeof(float));
}

// ----------------------------------------------------------------------------
// optimizer bridge

int bert_optim_segments(const bert_model *m, optim_segment out[3]) {
    size_t V = m->cfg.vocab_size, C = m->cfg.hidden_size, wte = V * C;
    float *p = m->params_memory;
    const float *g = m->grads_memory;
    out[0] = (optim_segment){ .param = p, .grad = g, .state_offset = 0, .rows = V, .row_len = C, .decay = 1,
                              .touched = m->wte_touched };
    out[1] = (optim_segment){ .param = p + wte, .grad = g + wte, .state_offset = wte, .rows = m->num_decayed - wte,
                              .row_len = 1, .decay = 1 };
    out[2] = (optim_segment){ .param = p + m->num_decayed, .grad = g + m->num_decayed, .state_offset = m->num_decayed,
                              .rows = m->num_params - m->num_decayed, .row_len = 1, .decay = 0 };
    return 3;
}

optim_adamw *bert_optim_create(bert_model *m, const optim_config *cfg, bp_err *err) {
    if (m->inference) {
        bp_err_set(err, "model was created for inference only: no optimizer (bert_optim_create)");
        return NULL;
    }
    return optim_create(m->be, cfg, m->num_params, err);
}

int bert_optim_step(bert_model *m, optim_adamw *opt, double *grad_norm_out, float *lr_out, bp_err *err) {
    if (opt->n != m->num_params)
        return bp_err_set(err, "optimizer sized for %zu parameters, model has %zu (bert_optim_step)",
                          opt->n, m->num_params);
    optim_segment segs[3];
    int nseg = bert_optim_segments(m, segs);
    int rc = optim_step(opt, segs, nseg, grad_norm_out, lr_out, err);
    weights_changed(m);   /* even after a failure: some segments may have been updated */
    if (rc != 0) return -1;
    bert_zero_grad(m);
    return m->be->check(m->be, err);
}

// ----------------------------------------------------------------------------
// named tensors

int bert_tensor_count(const bert_model *m) {
    int top = m->cfg.head == BERT_HEAD_CLASSIFICATION ? 4 : 2;   /* pooler + classifier, qa_outputs, pooler */
    return 5 + 16 * m->cfg.num_hidden_layers + top;
}

static void describe(bp_named_tensor *t, const char *name, float *data, int ndim, int64_t d0, int64_t d1) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = BP_F32;
    t->ndim = ndim;
    t->shape[0] = d0;
    if (ndim > 1) t->shape[1] = d1;
    t->data = data;
    t->nbytes = (size_t)bp_numel(t->shape, ndim) * sizeof(float);
}

int bert_describe_tensors(const bert_model *m, float *flat, bp_named_tensor *out) {
    const bert_config *cfg = &m->cfg;
    int64_t C = cfg->hidden_size, I = cfg->intermediate_size;
    bert_params f;
    size_t sizes[NUM_PARAM_TENSORS];
    param_sizes(cfg, sizes);
    point_params(&f, flat, sizes);
    int n = 0;
    char name[160];
    describe(&out[n++], "bert.embeddings.word_embeddings.weight", f.wte, 2, cfg->vocab_size, C);
    describe(&out[n++], "bert.embeddings.position_embeddings.weight", f.wpe, 2, cfg->max_position_embeddings, C);
    describe(&out[n++], "bert.embeddings.token_type_embeddings.weight", f.wtt, 2, cfg->type_vocab_size, C);
    describe(&out[n++], "bert.embeddings.LayerNorm.weight", f.emb_lnw, 1, C, 0);
    describe(&out[n++], "bert.embeddings.LayerNorm.bias", f.emb_lnb, 1, C, 0);
    static const char *qkv_names[3] = { "query", "key", "value" };
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "bert.encoder.layer.%d.attention.self.%s.weight", l, qkv_names[k]);
            describe(&out[n++], name, f.qkvw + ((size_t)l * 3 + k) * C * C, 2, C, C);
            snprintf(name, sizeof name, "bert.encoder.layer.%d.attention.self.%s.bias", l, qkv_names[k]);
            describe(&out[n++], name, f.qkvb + ((size_t)l * 3 + k) * C, 1, C, 0);
        }
        struct { const char *suffix; float *data; int ndim; int64_t d0, d1; } rest[] = {
            { "attention.output.dense.weight", f.attn_ow + (size_t)l * C * C, 2, C, C },
            { "attention.output.dense.bias", f.attn_ob + (size_t)l * C, 1, C, 0 },
            { "attention.output.LayerNorm.weight", f.ln1w + (size_t)l * C, 1, C, 0 },
            { "attention.output.LayerNorm.bias", f.ln1b + (size_t)l * C, 1, C, 0 },
            { "intermediate.dense.weight", f.fcw + (size_t)l * I * C, 2, I, C },
            { "intermediate.dense.bias", f.fcb + (size_t)l * I, 1, I, 0 },
            { "output.dense.weight", f.fc2w + (size_t)l * C * I, 2, C, I },
            { "output.dense.bias", f.fc2b + (size_t)l * C, 1, C, 0 },
            { "output.LayerNorm.weight", f.ln2w + (size_t)l * C, 1, C, 0 },
            { "output.LayerNorm.bias", f.ln2b + (size_t)l * C, 1, C, 0 },
        };
        for (size_t k = 0; k < sizeof rest / sizeof rest[0]; k++) {
            snprintf(name, sizeof name, "bert.encoder.layer.%d.%s", l, rest[k].suffix);
            describe(&out[n++], name, rest[k].data, rest[k].ndim, rest[k].d0, rest[k].d1);
        }
    }
    if (cfg->head != BERT_HEAD_QA) {
        describe(&out[n++], "bert.pooler.dense.weight", f.poolw, 2, C, C);
        describe(&out[n++], "bert.pooler.dense.bias", f.poolb, 1, C, 0);
    }
    if (cfg->head == BERT_HEAD_CLASSIFICATION) {
        describe(&out[n++], "classifier.weight", f.headw, 2, cfg->num_labels, C);
        describe(&out[n++], "classifier.bias", f.headb, 1, cfg->num_labels, 0);
    } else if (cfg->head == BERT_HEAD_QA) {
        describe(&out[n++], "qa_outputs.weight", f.headw, 2, 2, C);
        describe(&out[n++], "qa_outputs.bias", f.headb, 1, 2, 0);
    }
    return n;
}

static float *state_memory(bert_model *m, const optim_adamw *opt, bert_state which, bp_err *err) {
    if (which == BERT_STATE_PARAMS) return m->params_memory;
    if (which == BERT_STATE_GRADS) {
        if (!m->grads_memory) bp_err_set(err, "model was created for inference only: no gradients (bert state copy)");
        return m->grads_memory;
    }
    if (!opt) {
        bp_err_set(err, "AdamW moments requested without an optimizer (bert state copy)");
        return NULL;
    }
    if (opt->n != m->num_params) {
        bp_err_set(err, "optimizer sized for %zu parameters, model has %zu (bert state copy)", opt->n,
                   m->num_params);
        return NULL;
    }
    float *state = which == BERT_STATE_ADAM_M ? opt->m : opt->v;
    if (!state) bp_err_set(err, "the %s optimizer keeps no such state (bert state copy)", optim_kind_name(opt->cfg.kind));
    return state;
}

int bert_copy_to_host(bert_model *m, const optim_adamw *opt, bert_state which, float *dst, bp_err *err) {
    float *src = state_memory(m, opt, which, err);
    if (!src) return -1;
    m->be->download(m->be, dst, src, m->num_params * sizeof(float));
    return m->be->check(m->be, err);   /* never hand NaN to a checkpoint writer */
}

int bert_copy_from_host(bert_model *m, optim_adamw *opt, bert_state which, const float *src, bp_err *err) {
    float *dst = state_memory(m, opt, which, err);
    if (!dst) return -1;
    m->be->upload(m->be, dst, src, m->num_params * sizeof(float));
    if (which == BERT_STATE_PARAMS) weights_changed(m);
    if (which == BERT_STATE_GRADS) {
        /* any row may now hold gradient: mark all touched so norms and AdamW read them */
        uint8_t *all = malloc((size_t)m->cfg.vocab_size);
        if (!all) return bp_err_set(err, "out of memory marking gradient rows (bert state copy)");
        memset(all, 1, (size_t)m->cfg.vocab_size);
        m->be->upload(m->be, m->wte_touched, all, (size_t)m->cfg.vocab_size);
        free(all);
    }
    return m->be->check(m->be, err);
}
