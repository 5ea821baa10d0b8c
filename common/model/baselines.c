/* model/baselines.c — the lstm and transformer QA baselines (see baselines.h).
 * Must never: touch tensor memory directly (it may live on a GPU): host code here plans memory
 * and derives dropout keys. */
#include "model/baselines.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static rnn_config lstm_config(const baseline_config *cfg) {
    return (rnn_config){ .cell = RNN_LSTM, .input_size = cfg->hidden_size, .hidden_size = cfg->hidden_size,
                         .num_layers = 1, .bidirectional = 0, .dropout = 0 };
}

int baseline_config_check(const baseline_config *cfg, bp_err *err) {
    if (cfg->kind != BASELINE_LSTM && cfg->kind != BASELINE_TRANSFORMER)
        return bp_err_set(err, "baseline kind %d unknown", (int)cfg->kind);
    if (cfg->vocab_size <= 0 || cfg->hidden_size <= 0 || cfg->hidden_size > 8192)
        return bp_err_set(err, "baseline sizes: vocabulary %d and hidden %d must be positive (hidden at most 8192)",
                          cfg->vocab_size, cfg->hidden_size);
    if (cfg->kind == BASELINE_LSTM) return 0;
    if (cfg->num_heads <= 0 || cfg->hidden_size % cfg->num_heads != 0)
        return bp_err_set(err, "transformer baseline: hidden %d is not a multiple of %d heads", cfg->hidden_size,
                          cfg->num_heads);
    if (cfg->ff_size <= 0) return bp_err_set(err, "transformer baseline: feed-forward width %d must be positive", cfg->ff_size);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1)) return bp_err_set(err, "transformer baseline: dropout %g outside [0, 1)", cfg->dropout);
    if (!(cfg->layer_norm_eps > 0)) return bp_err_set(err, "transformer baseline: layer_norm_eps must be positive");
    return 0;
}

// ----------------------------------------------------------------------------
// memory plan

#define NUM_TENSORS 15

/* Sizes in the order of baseline_params (lstm: wte, the stack's block, qa_w, qa_b). */
static void param_sizes(const baseline_config *cfg, size_t s[NUM_TENSORS], size_t *lstm_block) {
    size_t V = cfg->vocab_size, C = cfg->hidden_size, FF = cfg->ff_size;
    memset(s, 0, NUM_TENSORS * sizeof *s);
    s[0] = V * C;
    s[5] = 2 * C;
    s[14] = 2;
    *lstm_block = 0;
    if (cfg->kind == BASELINE_LSTM) {
        rnn_config r = lstm_config(cfg);
        *lstm_block = rnn_param_count(&r);
        return;
    }
    size_t t[NUM_TENSORS] = { V * C, 3 * C * C, C * C, FF * C, C * FF, 2 * C, 3 * C, C, FF, C, C, C, C, C, 2 };
    memcpy(s, t, sizeof t);
}

static void point_params(baseline_params *p, float *memory, const size_t sizes[NUM_TENSORS], size_t lstm_block) {
    float **ptrs[NUM_TENSORS] = {
        &p->wte, &p->in_proj_w, &p->out_proj_w, &p->linear1_w, &p->linear2_w, &p->qa_w, &p->in_proj_b,
        &p->out_proj_b, &p->linear1_b, &p->linear2_b, &p->norm1_w, &p->norm1_b, &p->norm2_w, &p->norm2_b, &p->qa_b,
    };
    for (int i = 0; i < NUM_TENSORS; i++) {
        if (i == 1) memory += lstm_block;   /* the lstm's block follows the embedding */
        *ptrs[i] = sizes[i] ? memory : NULL;
        memory += sizes[i];
    }
}

size_t baseline_param_count(const baseline_config *cfg) {
    size_t s[NUM_TENSORS], block, total = 0;
    param_sizes(cfg, s, &block);
    for (int i = 0; i < NUM_TENSORS; i++) total += s[i];
    return total + block;
}

#define NUM_ACTS 22

static void act_sizes(const baseline_config *cfg, int B, int T, size_t s[NUM_ACTS]) {
    size_t N = (size_t)B * T, C = cfg->hidden_size, FF = cfg->ff_size, NH = cfg->num_heads;
    memset(s, 0, NUM_ACTS * sizeof *s);
    s[0] = N * C;                      /* emb */
    s[14] = N * 2;                     /* logits */
    s[16] = s[17] = N * C;             /* nc_a, nc_b */
    if (cfg->kind == BASELINE_LSTM) return;
    size_t t[NUM_ACTS] = { N * C, N * 3 * C, (size_t)B * NH * T * T, N * C, N * C, N, N, N * C, N * FF, N * FF, N * C,
                           N, N, N * C, N * 2, (size_t)B * NH * T * T, N * C, N * C, N * C, N * FF, N * 3 * C, 0 };
    memcpy(s, t, sizeof t);
}

static void point_acts(baseline_acts *a, float *memory, const size_t s[NUM_ACTS]) {
    float **ptrs[NUM_ACTS] = {
        &a->emb, &a->qkv, &a->probs, &a->ctx, &a->attn_sum, &a->ln1_mean, &a->ln1_rstd, &a->ln1, &a->fc_pre,
        &a->ff_act, &a->ffn_sum, &a->ln2_mean, &a->ln2_rstd, &a->out, &a->logits, &a->att_scratch, &a->nc_a,
        &a->nc_b, &a->nc_c, &a->nff, &a->nqkv, NULL,
    };
    for (int i = 0; i < NUM_ACTS - 1; i++) {
        *ptrs[i] = s[i] ? memory : NULL;
        memory += (s[i] + 15) / 16 * 16;
    }
}

baseline *baseline_create(const baseline_config *cfg, backend *be, int max_B, int max_T, int inference, bp_err *err) {
    if (baseline_config_check(cfg, err) != 0) return NULL;
    if (max_B <= 0 || max_T <= 0) {
        bp_err_set(err, "batch shape %d x %d must be positive (baseline)", max_B, max_T);
        return NULL;
    }
    baseline *m = calloc(1, sizeof *m);
    if (!m) {
        bp_err_set(err, "out of memory creating the baseline");
        return NULL;
    }
    m->cfg = *cfg;
    m->be = be;
    m->max_B = max_B;
    m->max_T = max_T;
    m->inference = inference;
    m->train_embeddings = 1;
    size_t ps[NUM_TENSORS], block, as[NUM_ACTS], acts = 0, N = (size_t)max_B * max_T;
    param_sizes(cfg, ps, &block);
    m->num_params = baseline_param_count(cfg);
    act_sizes(cfg, max_B, max_T, as);
    for (int i = 0; i < NUM_ACTS; i++) acts += (as[i] + 15) / 16 * 16;
    m->params_memory = be->alloc(be, m->num_params * sizeof(float), err);
    int ok = m->params_memory != NULL;
    if (ok && !inference) ok = (m->grads_memory = be->alloc(be, m->num_params * sizeof(float), err)) != NULL;
    if (ok) ok = (m->acts_memory = be->alloc(be, acts * sizeof(float), err)) != NULL;
    if (ok) ok = (m->wte_touched = be->alloc(be, (size_t)cfg->vocab_size, err)) != NULL;
    if (ok) ok = (m->d_ids = be->alloc(be, 2 * N * sizeof(int32_t), err)) != NULL;
    if (!ok) {
        baseline_free(m);
        return NULL;
    }
    m->d_mask = m->d_ids + N;
    point_params(&m->params, m->params_memory, ps, block);
    if (m->grads_memory) point_params(&m->grads, m->grads_memory, ps, block);
    point_acts(&m->acts, m->acts_memory, as);
    if (cfg->kind == BASELINE_LSTM) {
        rnn_config r = lstm_config(cfg);
        m->lstm = rnn_create(&r, be, m->params.wte + ps[0], m->grads_memory ? m->grads.wte + ps[0] : NULL, max_B,
                             max_T, inference, err);
        if (!m->lstm) {
            baseline_free(m);
            return NULL;
        }
    }
    return m;
}

void baseline_free(baseline *m) {
    if (!m) return;
    backend *be = m->be;
    rnn_free(m->lstm, be);
    be->free(be, m->params_memory);
    be->free(be, m->grads_memory);
    be->free(be, m->acts_memory);
    be->free(be, m->wte_touched);
    be->free(be, m->d_ids);
    free(m);
}

void baseline_init_host(const baseline *m, float *host, uint64_t seed) {
    const baseline_config *cfg = &m->cfg;
    size_t ps[NUM_TENSORS], block;
    param_sizes(cfg, ps, &block);
    baseline_params h;
    point_params(&h, host, ps, block);
    int C = cfg->hidden_size, FF = cfg->ff_size;
    for (size_t i = 0; i < ps[0]; i++) h.wte[i] = param_draw_normal(seed, i);
    linear_init_host(h.qa_w, h.qa_b, 2, C, backend_mix_key(seed, 5));
    if (cfg->kind == BASELINE_LSTM) {
        rnn_config r = lstm_config(cfg);
        rnn_init_host(&r, h.wte + ps[0], backend_mix_key(seed, 1));
        return;
    }
    float xavier = sqrtf(6.0f / (float)(C + 3 * C));
    uint64_t s1 = backend_mix_key(seed, 1);
    for (size_t i = 0; i < ps[1]; i++) h.in_proj_w[i] = (2.0f * param_draw_uniform(s1, i) - 1.0f) * xavier;
    memset(h.in_proj_b, 0, ps[6] * sizeof(float));
    linear_init_host(h.out_proj_w, h.out_proj_b, C, C, backend_mix_key(seed, 2));
    memset(h.out_proj_b, 0, ps[7] * sizeof(float));
    linear_init_host(h.linear1_w, h.linear1_b, FF, C, backend_mix_key(seed, 3));
    linear_init_host(h.linear2_w, h.linear2_b, C, FF, backend_mix_key(seed, 4));
    for (int c = 0; c < C; c++) {
        h.norm1_w[c] = h.norm2_w[c] = 1.0f;
        h.norm1_b[c] = h.norm2_b[c] = 0.0f;
    }
}

int baseline_list_params(const baseline *m, size_t flat_base, param_list *list, bp_err *err) {
    const baseline_params *p = &m->params, *g = &m->grads;
    int has_g = m->grads_memory != NULL;
    int64_t V = m->cfg.vocab_size, C = m->cfg.hidden_size, FF = m->cfg.ff_size;
    model_param *e = param_list_add(list, "embedding.weight", p->wte, has_g ? g->wte : NULL, 1, m->params_memory,
                                    flat_base, 2, V, C, 0, err);
    if (!e) return -1;
    e->touched = m->wte_touched;
    e->row_len = (size_t)C;
    if (m->cfg.kind == BASELINE_LSTM) {
        if (rnn_list_params(m->lstm, "lstm.", m->params_memory, flat_base, list, err)) return -1;
    } else {
        struct { const char *name; float *v, *gr; int decay, ndim; int64_t d0, d1; } t[] = {
            { "encoder.self_attn.in_proj_weight", p->in_proj_w, g->in_proj_w, 1, 2, 3 * C, C },
            { "encoder.self_attn.in_proj_bias", p->in_proj_b, g->in_proj_b, 0, 1, 3 * C, 0 },
            { "encoder.self_attn.out_proj.weight", p->out_proj_w, g->out_proj_w, 1, 2, C, C },
            { "encoder.self_attn.out_proj.bias", p->out_proj_b, g->out_proj_b, 0, 1, C, 0 },
            { "encoder.linear1.weight", p->linear1_w, g->linear1_w, 1, 2, FF, C },
            { "encoder.linear1.bias", p->linear1_b, g->linear1_b, 0, 1, FF, 0 },
            { "encoder.linear2.weight", p->linear2_w, g->linear2_w, 1, 2, C, FF },
            { "encoder.linear2.bias", p->linear2_b, g->linear2_b, 0, 1, C, 0 },
            { "encoder.norm1.weight", p->norm1_w, g->norm1_w, 0, 1, C, 0 },
            { "encoder.norm1.bias", p->norm1_b, g->norm1_b, 0, 1, C, 0 },
            { "encoder.norm2.weight", p->norm2_w, g->norm2_w, 0, 1, C, 0 },
            { "encoder.norm2.bias", p->norm2_b, g->norm2_b, 0, 1, C, 0 },
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (!param_list_add(list, t[i].name, t[i].v, has_g ? t[i].gr : NULL, t[i].decay, m->params_memory,
                                flat_base, t[i].ndim, t[i].d0, t[i].d1, 0, err))
                return -1;
    }
    if (!param_list_add(list, "qa_outputs.weight", p->qa_w, has_g ? g->qa_w : NULL, 1, m->params_memory, flat_base, 2,
                        2, C, 0, err) ||
        !param_list_add(list, "qa_outputs.bias", p->qa_b, has_g ? g->qa_b : NULL, 0, m->params_memory, flat_base, 1, 2,
                        0, 0, err))
        return -1;
    return 0;
}

// ----------------------------------------------------------------------------
// forward and backward

/* dropout sites of the encoder layer */
enum { SITE_ATTENTION = 1, SITE_DROPOUT1 = 2, SITE_FFN = 3, SITE_DROPOUT2 = 4 };

static float used_p(const baseline *m) { return m->training ? m->cfg.dropout : 0.0f; }

int baseline_forward(baseline *m, const int32_t *ids, const int32_t *mask, int B, int T, int training,
                     uint64_t dropout_key, bp_err *err) {
    backend *be = m->be;
    const baseline_config *cfg = &m->cfg;
    baseline_params *p = &m->params;
    baseline_acts *a = &m->acts;
    int C = cfg->hidden_size, FF = cfg->ff_size, NH = cfg->num_heads;
    size_t N = (size_t)B * T;
    if (B <= 0 || T <= 0 || B > m->max_B || T > m->max_T)
        return bp_err_set(err, "batch shape %d x %d outside the planned 1..%d x 1..%d (baseline)", B, T, m->max_B,
                          m->max_T);
    if (m->lstm && rnn_set_lengths(m->lstm, be, mask, B, T, err) != 0) return -1;
    m->B = B;
    m->T = T;
    m->training = training;
    m->dropout_key = dropout_key;
    be->upload(be, m->d_ids, ids, N * sizeof(int32_t));
    be->upload(be, m->d_mask, mask, N * sizeof(int32_t));
    be->embedding_lookup_forward(be, a->emb, m->d_ids, p->wte, (int)N, C);
    const float *top;
    if (m->lstm) {
        rnn_forward(m->lstm, be, a->emb, training, dropout_key);
        top = m->lstm->acts[0].out;
    } else {
        float pd = used_p(m);
        be->matmul_forward(be, a->qkv, a->emb, p->in_proj_w, p->in_proj_b, (int)N, C, 3 * C);
        be->attention_forward(be, a->ctx, a->probs, a->att_scratch, a->qkv, m->d_mask, B, T, T, C, NH, pd,
                              backend_mix_key(dropout_key, SITE_ATTENTION));
        be->matmul_forward(be, a->nc_a, a->ctx, p->out_proj_w, p->out_proj_b, (int)N, C, C);
        be->add_layernorm_forward(be, a->ln1, a->attn_sum, a->ln1_mean, a->ln1_rstd, a->nc_a, a->emb, p->norm1_w,
                                  p->norm1_b, (int)N, C, cfg->layer_norm_eps, pd,
                                  backend_mix_key(dropout_key, SITE_DROPOUT1));
        be->matmul_forward(be, a->fc_pre, a->ln1, p->linear1_w, p->linear1_b, (int)N, C, FF);
        be->relu_forward(be, a->ff_act, a->fc_pre, N * FF);
        be->dropout(be, a->ff_act, a->ff_act, N * FF, pd, backend_mix_key(dropout_key, SITE_FFN));
        be->matmul_forward(be, a->nc_a, a->ff_act, p->linear2_w, p->linear2_b, (int)N, FF, C);
        be->add_layernorm_forward(be, a->out, a->ffn_sum, a->ln2_mean, a->ln2_rstd, a->nc_a, a->ln1, p->norm2_w,
                                  p->norm2_b, (int)N, C, cfg->layer_norm_eps, pd,
                                  backend_mix_key(dropout_key, SITE_DROPOUT2));
        top = a->out;
    }
    be->matmul_forward(be, a->logits, top, p->qa_w, p->qa_b, (int)N, C, 2);
    return 0;
}

void baseline_backward(baseline *m, const float *dlogits) {
    backend *be = m->be;
    const baseline_config *cfg = &m->cfg;
    baseline_params *p = &m->params, *g = &m->grads;
    baseline_acts *a = &m->acts;
    int B = m->B, T = m->T, C = cfg->hidden_size, FF = cfg->ff_size, NH = cfg->num_heads;
    size_t N = (size_t)B * T;
    float *d_emb = m->train_embeddings ? a->nc_b : NULL;
    if (m->lstm) {
        const float *top = m->lstm->acts[0].out;
        be->matmul_backward(be, a->nc_a, g->qa_w, g->qa_b, dlogits, top, p->qa_w, (int)N, C, 2, 0);
        rnn_backward(m->lstm, be, a->emb, a->nc_a, NULL, d_emb);
    } else {
        float pd = used_p(m);
        float *d_out = a->nc_a, *d_ln1 = a->nc_b, *d_branch = a->nc_c;
        be->matmul_backward(be, d_out, g->qa_w, g->qa_b, dlogits, a->out, p->qa_w, (int)N, C, 2, 0);
        // norm2: d_out -> d(ln1) via the residual, d(linear2 output) via dropout2
        be->add_layernorm_backward(be, d_branch, d_ln1, g->norm2_w, g->norm2_b, d_out, a->ffn_sum, a->ln2_mean,
                                   a->ln2_rstd, p->norm2_w, (int)N, C, pd, backend_mix_key(m->dropout_key, SITE_DROPOUT2));
        // feed-forward: linear2, dropout, relu, linear1
        float *d_inter = a->nff;
        be->matmul_backward(be, d_inter, g->linear2_w, g->linear2_b, d_branch, a->ff_act, p->linear2_w, (int)N, FF, C, 0);
        be->dropout(be, d_inter, d_inter, N * FF, pd, backend_mix_key(m->dropout_key, SITE_FFN));
        be->relu_backward(be, d_inter, a->fc_pre, d_inter, N * FF);
        be->matmul_backward(be, d_ln1, g->linear1_w, g->linear1_b, d_inter, a->ln1, p->linear1_w, (int)N, C, FF, 1);
        // norm1: d(ln1) -> d(emb) via the residual, d(attention output) via dropout1
        float *d_x = a->nc_a;
        be->add_layernorm_backward(be, d_branch, d_x, g->norm1_w, g->norm1_b, d_ln1, a->attn_sum, a->ln1_mean,
                                   a->ln1_rstd, p->norm1_w, (int)N, C, pd, backend_mix_key(m->dropout_key, SITE_DROPOUT1));
        // out_proj, attention, in_proj (into d_x, the residual's gradient)
        be->matmul_backward(be, d_ln1, g->out_proj_w, g->out_proj_b, d_branch, a->ctx, p->out_proj_w, (int)N, C, C, 0);
        be->attention_backward(be, a->nqkv, a->att_scratch, d_ln1, a->probs, a->qkv, m->d_mask, B, T, T, C, NH, pd,
                               backend_mix_key(m->dropout_key, SITE_ATTENTION));
        be->matmul_backward(be, d_x, g->in_proj_w, g->in_proj_b, a->nqkv, a->emb, p->in_proj_w, (int)N, C, 3 * C, 1);
        d_emb = m->train_embeddings ? d_x : NULL;
    }
    if (d_emb)
        be->embedding_lookup_backward(be, g->wte, m->wte_touched, d_emb, m->d_ids, (int)N, C, -1);
}

void baseline_zero_grad(baseline *m) {
    backend *be = m->be;
    if (!m->grads_memory) return;
    size_t wte = (size_t)m->cfg.vocab_size * m->cfg.hidden_size;
    be->embedding_zero_grad(be, m->grads.wte, m->wte_touched, m->cfg.vocab_size, m->cfg.hidden_size);
    be->zero(be, m->grads_memory + wte, (m->num_params - wte) * sizeof(float));
}
