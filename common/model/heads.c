/* model/heads.c — the mlp and rnn heads (see heads.h).
 * Must never: touch tensor memory directly (it may live on a GPU). */
#include "model/heads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const activation_names[] = { "relu", "gelu", "tanh" };

int head_parse_activation(const char *name, head_activation *out, bp_err *err) {
    for (int k = 0; k < 3; k++)
        if (strcmp(name, activation_names[k]) == 0) {
            *out = (head_activation)k;
            return 0;
        }
    return bp_err_set(err, "activation '%s' unknown (relu, gelu, tanh)", name);
}

const char *head_activation_name(head_activation a) {
    return (unsigned)a < 3 ? activation_names[a] : "unknown";
}

static float dropout_p(float p, int training) { return training ? p : 0.0f; }

// ----------------------------------------------------------------------------
// mlp

/* Width of the input of layer k and of its output. */
static int mlp_in(const mlp_config *cfg, int k) { return k == 0 ? cfg->input_size : cfg->hidden[k - 1]; }
static int mlp_out(const mlp_config *cfg, int k) { return k == cfg->num_hidden ? cfg->outputs : cfg->hidden[k]; }

int mlp_config_check(const mlp_config *cfg, bp_err *err) {
    if (cfg->num_hidden < 0 || cfg->num_hidden > MLP_MAX_HIDDEN)
        return bp_err_set(err, "mlp head: %d hidden layers, at most %d", cfg->num_hidden, MLP_MAX_HIDDEN);
    if (cfg->input_size <= 0 || cfg->outputs <= 0)
        return bp_err_set(err, "mlp head: input %d and outputs %d must be positive", cfg->input_size, cfg->outputs);
    for (int k = 0; k < cfg->num_hidden; k++)
        if (cfg->hidden[k] <= 0 || cfg->hidden[k] > 65536)
            return bp_err_set(err, "mlp head: hidden size %d of layer %d outside 1..65536", cfg->hidden[k], k);
    if ((unsigned)cfg->activation > HEAD_TANH) return bp_err_set(err, "mlp head: activation %d unknown", (int)cfg->activation);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1)) return bp_err_set(err, "mlp head: dropout %g outside [0, 1)", cfg->dropout);
    return 0;
}

/* Weights of every layer, then the biases: decayed and not decayed in two runs. */
static size_t mlp_point(const mlp_config *cfg, float *memory, float **w, float **b) {
    size_t at = 0;
    for (int k = 0; k <= cfg->num_hidden; k++) {
        if (w) w[k] = memory + at;
        at += (size_t)mlp_out(cfg, k) * mlp_in(cfg, k);
    }
    for (int k = 0; k <= cfg->num_hidden; k++) {
        if (b) b[k] = memory + at;
        at += (size_t)mlp_out(cfg, k);
    }
    return at;
}

mlp_head *mlp_create(const mlp_config *cfg, backend *be, int max_B, int inference, bp_err *err) {
    if (mlp_config_check(cfg, err) != 0) return NULL;
    mlp_head *h = calloc(1, sizeof *h);
    if (!h) {
        bp_err_set(err, "out of memory creating the mlp head");
        return NULL;
    }
    h->cfg = *cfg;
    h->max_B = max_B;
    h->num_params = mlp_point(cfg, NULL, NULL, NULL);
    size_t widest = (size_t)cfg->input_size, acts = 0;
    for (int k = 0; k <= cfg->num_hidden; k++) {
        acts += (size_t)max_B * mlp_in(cfg, k);
        if (k < cfg->num_hidden) acts += 2 * (size_t)max_B * cfg->hidden[k];
        if ((size_t)mlp_out(cfg, k) > widest) widest = (size_t)mlp_out(cfg, k);
    }
    acts += (size_t)max_B * cfg->outputs + 2 * (size_t)max_B * widest;
    h->params_memory = be->alloc(be, h->num_params * sizeof(float), err);
    if (h->params_memory && !inference) h->grads_memory = be->alloc(be, h->num_params * sizeof(float), err);
    if (h->params_memory && (inference || h->grads_memory)) h->acts_memory = be->alloc(be, acts * sizeof(float), err);
    if (!h->acts_memory) {
        mlp_free(h, be);
        return NULL;
    }
    mlp_point(cfg, h->params_memory, h->w, h->b);
    if (h->grads_memory) mlp_point(cfg, h->grads_memory, h->gw, h->gb);
    float *at = h->acts_memory;
    for (int k = 0; k <= cfg->num_hidden; k++) {
        h->x[k] = at; at += (size_t)max_B * mlp_in(cfg, k);
        if (k < cfg->num_hidden) {
            h->pre[k] = at; at += (size_t)max_B * cfg->hidden[k];
            h->post[k] = at; at += (size_t)max_B * cfg->hidden[k];
        }
    }
    h->logits = at; at += (size_t)max_B * cfg->outputs;
    h->dbuf[0] = at; at += (size_t)max_B * widest;
    h->dbuf[1] = at;
    return h;
}

void mlp_free(mlp_head *h, backend *be) {
    if (!h) return;
    be->free(be, h->params_memory);
    be->free(be, h->grads_memory);
    be->free(be, h->acts_memory);
    free(h);
}

void mlp_init_host(const mlp_head *h, float *host, uint64_t seed) {
    float *w[MLP_MAX_HIDDEN + 1], *b[MLP_MAX_HIDDEN + 1];
    mlp_point(&h->cfg, host, w, b);
    for (int k = 0; k <= h->cfg.num_hidden; k++)
        linear_init_host(w[k], b[k], mlp_out(&h->cfg, k), mlp_in(&h->cfg, k), backend_mix_key(seed, (uint64_t)k));
}

int mlp_list_params(const mlp_head *h, size_t flat_base, param_list *list, bp_err *err) {
    for (int part = 0; part < 2; part++)   /* weights, then biases: the memory order */
        for (int k = 0; k <= h->cfg.num_hidden; k++) {
            char name[64];
            snprintf(name, sizeof name, "classifier.%d.%s", 3 * k + 1, part ? "bias" : "weight");
            float *value = part ? h->b[k] : h->w[k];
            float *grad = !h->grads_memory ? NULL : part ? h->gb[k] : h->gw[k];
            if (!param_list_add(list, name, value, grad, !part, h->params_memory, flat_base, part ? 1 : 2,
                                mlp_out(&h->cfg, k), mlp_in(&h->cfg, k), 0, err))
                return -1;
        }
    return 0;
}

static void activation_forward(backend *be, head_activation a, float *out, const float *in, size_t n) {
    if (a == HEAD_RELU) be->relu_forward(be, out, in, n);
    else if (a == HEAD_GELU) be->gelu_forward(be, out, in, n);
    else be->tanh_forward(be, out, in, n);
}

void mlp_forward(mlp_head *h, backend *be, const float *pooled, int B, int training, uint64_t dropout_key) {
    const mlp_config *cfg = &h->cfg;
    float p = dropout_p(cfg->dropout, training);
    h->B = B;
    h->training = training;
    h->dropout_key = dropout_key;
    const float *in = pooled;
    for (int k = 0; k <= cfg->num_hidden; k++) {
        be->dropout(be, h->x[k], in, (size_t)B * mlp_in(cfg, k), p, backend_mix_key(dropout_key, (uint64_t)k));
        float *out = k < cfg->num_hidden ? h->pre[k] : h->logits;
        be->matmul_forward(be, out, h->x[k], h->w[k], h->b[k], B, mlp_in(cfg, k), mlp_out(cfg, k));
        if (k < cfg->num_hidden) {
            activation_forward(be, cfg->activation, h->post[k], h->pre[k], (size_t)B * cfg->hidden[k]);
            in = h->post[k];
        }
    }
}

void mlp_backward(mlp_head *h, backend *be, const float *dlogits, float *d_pooled) {
    const mlp_config *cfg = &h->cfg;
    int B = h->B;
    float p = dropout_p(cfg->dropout, h->training);
    const float *dout = dlogits;
    for (int k = cfg->num_hidden; k >= 0; k--) {
        size_t n_in = (size_t)B * mlp_in(cfg, k);
        float *dx = k > 0 ? h->dbuf[k % 2] : d_pooled;
        be->matmul_backward(be, dx, h->gw[k], h->gb[k], dout, h->x[k], h->w[k], B, mlp_in(cfg, k), mlp_out(cfg, k), 0);
        if (!dx) break;
        be->dropout(be, dx, dx, n_in, p, backend_mix_key(h->dropout_key, (uint64_t)k));
        if (k == 0) break;
        /* through layer k-1's activation */
        if (cfg->activation == HEAD_RELU) be->relu_backward(be, dx, h->pre[k - 1], dx, n_in);
        else if (cfg->activation == HEAD_GELU) be->gelu_backward(be, dx, h->pre[k - 1], dx, n_in);
        else be->tanh_backward(be, dx, h->post[k - 1], dx, n_in);
        dout = dx;
    }
}

// ----------------------------------------------------------------------------
// rnn head

int rnn_head_config_check(const rnn_head_config *cfg, bp_err *err) {
    if (rnn_config_check(&cfg->rnn, err) != 0) return -1;
    if (cfg->outputs <= 0) return bp_err_set(err, "rnn head: %d outputs, must be positive", cfg->outputs);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1)) return bp_err_set(err, "rnn head: dropout %g outside [0, 1)", cfg->dropout);
    return 0;
}

rnn_head *rnn_head_create(const rnn_head_config *cfg, backend *be, int max_B, int max_T, int inference,
                          bp_err *err) {
    if (rnn_head_config_check(cfg, err) != 0) return NULL;
    rnn_head *h = calloc(1, sizeof *h);
    if (!h) {
        bp_err_set(err, "out of memory creating the rnn head");
        return NULL;
    }
    h->cfg = *cfg;
    h->max_B = max_B;
    h->D = cfg->rnn.bidirectional ? 2 : 1;
    size_t DH = (size_t)h->D * cfg->rnn.hidden_size, K = (size_t)cfg->outputs, rnn = rnn_param_count(&cfg->rnn);
    h->num_params = rnn + K * DH + K;
    h->params_memory = be->alloc(be, h->num_params * sizeof(float), err);
    if (h->params_memory && !inference) h->grads_memory = be->alloc(be, h->num_params * sizeof(float), err);
    if (h->params_memory && (inference || h->grads_memory))
        h->acts_memory = be->alloc(be, (2 * (size_t)max_B * DH + (size_t)max_B * K) * sizeof(float), err);
    if (h->acts_memory)
        h->stack = rnn_create(&cfg->rnn, be, h->params_memory, h->grads_memory, max_B, max_T, inference, err);
    if (!h->stack) {
        rnn_head_free(h, be);
        return NULL;
    }
    h->out_w = h->params_memory + rnn;
    h->out_b = h->out_w + K * DH;
    if (h->grads_memory) {
        h->g_out_w = h->grads_memory + rnn;
        h->g_out_b = h->g_out_w + K * DH;
    }
    h->final = h->acts_memory;
    h->d_final = h->final + (size_t)max_B * DH;
    h->logits = h->d_final + (size_t)max_B * DH;
    return h;
}

void rnn_head_free(rnn_head *h, backend *be) {
    if (!h) return;
    rnn_free(h->stack, be);
    be->free(be, h->params_memory);
    be->free(be, h->grads_memory);
    be->free(be, h->acts_memory);
    free(h);
}

void rnn_head_init_host(const rnn_head *h, float *host, uint64_t seed) {
    size_t rnn = rnn_param_count(&h->cfg.rnn), DH = (size_t)h->D * h->cfg.rnn.hidden_size;
    rnn_init_host(&h->cfg.rnn, host, seed);
    linear_init_host(host + rnn, host + rnn + (size_t)h->cfg.outputs * DH, h->cfg.outputs, (int)DH,
                     backend_mix_key(seed, 1));
}

int rnn_head_list_params(const rnn_head *h, size_t flat_base, param_list *list, bp_err *err) {
    int64_t DH = (int64_t)h->D * h->cfg.rnn.hidden_size, K = h->cfg.outputs;
    if (rnn_list_params(h->stack, "rnn.", h->params_memory, flat_base, list, err) ||
        !param_list_add(list, "out.weight", h->out_w, h->g_out_w, 1, h->params_memory, flat_base, 2, K, DH, 0, err) ||
        !param_list_add(list, "out.bias", h->out_b, h->g_out_b, 0, h->params_memory, flat_base, 1, K, 0, 0, err))
        return -1;
    return 0;
}

void rnn_head_forward(rnn_head *h, backend *be, const float *hidden, int training, uint64_t dropout_key) {
    rnn_stack *s = h->stack;
    int B = s->B, DH = h->D * h->cfg.rnn.hidden_size;
    h->B = B;
    h->training = training;
    h->dropout_key = dropout_key;
    rnn_forward(s, be, hidden, training, backend_mix_key(dropout_key, 1));
    be->dropout(be, h->final, s->h_last, (size_t)B * DH, dropout_p(h->cfg.dropout, training),
                backend_mix_key(dropout_key, 2));
    be->matmul_forward(be, h->logits, h->final, h->out_w, h->out_b, B, DH, h->cfg.outputs);
}

void rnn_head_backward(rnn_head *h, backend *be, const float *hidden, const float *dlogits, float *d_hidden) {
    int B = h->B, DH = h->D * h->cfg.rnn.hidden_size;
    be->matmul_backward(be, h->d_final, h->g_out_w, h->g_out_b, dlogits, h->final, h->out_w, B, DH, h->cfg.outputs, 0);
    be->dropout(be, h->d_final, h->d_final, (size_t)B * DH, dropout_p(h->cfg.dropout, h->training),
                backend_mix_key(h->dropout_key, 2));
    rnn_backward(h->stack, be, hidden, NULL, h->d_final, d_hidden);
}
