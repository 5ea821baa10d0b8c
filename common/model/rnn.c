/* model/rnn.c — stacked GRU / LSTM layers over packed sequences (see rnn.h).
 *
 * Shape key: B = sequences, T = padded length, N = B*T rows, H = hidden, G = gates (GRU 3,
 * LSTM 4), D = directions, In = the layer's input width.
 * Must never: touch tensor memory directly (it may live on a GPU): host code here computes the
 * lengths and plans memory.
 */
#include "model/rnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gates_of(const rnn_config *cfg) { return cfg->cell == RNN_LSTM ? 4 : 3; }
static int dirs_of(const rnn_config *cfg) { return cfg->bidirectional ? 2 : 1; }
static size_t layer_input(const rnn_config *cfg, int l) {
    return l == 0 ? (size_t)cfg->input_size : (size_t)dirs_of(cfg) * cfg->hidden_size;
}

int rnn_config_check(const rnn_config *cfg, bp_err *err) {
    if (cfg->cell != RNN_GRU && cfg->cell != RNN_LSTM) return bp_err_set(err, "rnn cell %d unknown", (int)cfg->cell);
    if (cfg->input_size <= 0 || cfg->hidden_size <= 0 || cfg->num_layers <= 0 || cfg->num_layers > 64)
        return bp_err_set(err, "rnn sizes must be positive (input %d, hidden %d, layers %d of at most 64)",
                          cfg->input_size, cfg->hidden_size, cfg->num_layers);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return bp_err_set(err, "rnn dropout %g outside [0, 1)", cfg->dropout);
    return 0;
}

size_t rnn_param_count(const rnn_config *cfg) {
    size_t GH = (size_t)gates_of(cfg) * cfg->hidden_size, D = (size_t)dirs_of(cfg), total = 0;
    for (int l = 0; l < cfg->num_layers; l++)
        total += D * GH * (layer_input(cfg, l) + cfg->hidden_size + 2);
    return total;
}

/* Weights of every layer first (w_ih, w_hh), then biases (b_ih, b_hh). */
static void point_params(const rnn_config *cfg, float *memory, rnn_layer_params *layers) {
    size_t GH = (size_t)gates_of(cfg) * cfg->hidden_size, D = (size_t)dirs_of(cfg), H = (size_t)cfg->hidden_size;
    for (int l = 0; l < cfg->num_layers; l++) {
        layers[l].w_ih = memory;
        memory += D * GH * layer_input(cfg, l);
        layers[l].w_hh = memory;
        memory += D * GH * H;
    }
    for (int l = 0; l < cfg->num_layers; l++) {
        layers[l].b_ih = memory;
        memory += D * GH;
        layers[l].b_hh = memory;
        memory += D * GH;
    }
}

void rnn_init_host(const rnn_config *cfg, float *host, uint64_t seed) {
    float bound = 1.0f / sqrtf((float)cfg->hidden_size);
    size_t n = rnn_param_count(cfg);
    for (size_t i = 0; i < n; i++) host[i] = (2.0f * param_draw_uniform(seed, i) - 1.0f) * bound;
}

int rnn_list_params(const rnn_stack *s, const char *prefix, const float *memory, size_t flat_base,
                    param_list *list, bp_err *err) {
    const rnn_config *cfg = &s->cfg;
    int64_t GH = (int64_t)gates_of(cfg) * cfg->hidden_size, H = cfg->hidden_size;
    static const char *const kinds[4] = { "weight_ih", "weight_hh", "bias_ih", "bias_hh" };
    for (int l = 0; l < cfg->num_layers; l++)
        for (int d = 0; d < dirs_of(cfg); d++)
            for (int k = 0; k < 4; k++) {
                rnn_layer_params *p = &s->params[l], *g = s->grads ? &s->grads[l] : NULL;
                int64_t in = k == 0 ? (int64_t)layer_input(cfg, l) : H;
                float *value = k == 0 ? p->w_ih : k == 1 ? p->w_hh : k == 2 ? p->b_ih : p->b_hh;
                float *grad = !g ? NULL : k == 0 ? g->w_ih : k == 1 ? g->w_hh : k == 2 ? g->b_ih : g->b_hh;
                size_t step = k < 2 ? (size_t)(GH * in) : (size_t)GH;
                char name[160];
                snprintf(name, sizeof name, "%s%s_l%d%s", prefix, kinds[k], l, d ? "_reverse" : "");
                if (!param_list_add(list, name, value + d * step, grad ? grad + d * step : NULL, k < 2, memory,
                                    flat_base, k < 2 ? 2 : 1, GH, in, 0, err))
                    return -1;
            }
    return 0;
}

// ----------------------------------------------------------------------------
// memory plan

#define ACTS_PER_LAYER 5

/* Floats of one layer's acts, in the order of rnn_layer_acts. */
static void layer_act_sizes(const rnn_config *cfg, int l, size_t N, size_t sizes[ACTS_PER_LAYER]) {
    size_t H = (size_t)cfg->hidden_size, D = (size_t)dirs_of(cfg), GH = (size_t)gates_of(cfg) * H;
    (void)l;
    sizes[0] = N * D * GH;
    sizes[1] = N * D * H;
    sizes[2] = D * N * 4 * H;
    sizes[3] = D * N * H;
    sizes[4] = cfg->cell == RNN_LSTM ? D * N * H : 0;
}

rnn_stack *rnn_create(const rnn_config *cfg, backend *be, float *params, float *grads, int max_B, int max_T,
                      int inference, bp_err *err) {
    if (rnn_config_check(cfg, err) != 0) return NULL;
    rnn_stack *s = calloc(1, sizeof *s);
    int L = cfg->num_layers;
    if (s) {
        s->params = calloc((size_t)L, sizeof *s->params);
        s->grads = grads ? calloc((size_t)L, sizeof *s->grads) : NULL;
        s->acts = calloc((size_t)L, sizeof *s->acts);
        s->sorted_lengths = calloc((size_t)max_B, sizeof(int));
        s->order = calloc((size_t)max_B, sizeof(int));
        s->lengths = calloc((size_t)max_B, sizeof(int));
    }
    if (!s || !s->params || (grads && !s->grads) || !s->acts || !s->sorted_lengths || !s->order || !s->lengths) {
        bp_err_set(err, "out of memory creating the rnn layers");
        rnn_free(s, be);
        return NULL;
    }
    s->cfg = *cfg;
    s->max_B = max_B;
    s->max_T = max_T;
    s->inference = inference;
    point_params(cfg, params, s->params);
    if (grads) point_params(cfg, grads, s->grads);

    size_t N = (size_t)max_B * max_T, H = (size_t)cfg->hidden_size, D = (size_t)dirs_of(cfg);
    size_t GH = (size_t)gates_of(cfg) * H;
    /* inference: one set of acts for every layer, but two outputs used in turn */
    size_t per[ACTS_PER_LAYER], total = 0;
    for (int l = 0; l < L; l++) {
        layer_act_sizes(cfg, l, N, per);
        for (int k = 0; k < ACTS_PER_LAYER; k++)
            if (!inference || l == 0 || (k == 1 && l == 1)) total += per[k];
    }
    size_t backward = inference ? 0 : N * D * GH + D * N * GH + 2 * N * D * H;
    total += backward + (size_t)max_B * (gates_of(cfg) + 2) * H + (size_t)max_B * D * H;
    s->acts_memory = be->alloc(be, total * sizeof(float), err);
    s->d_seqs = s->acts_memory ? be->alloc(be, 2 * (size_t)max_B * sizeof(int32_t), err) : NULL;
    if (!s->d_seqs) {
        rnn_free(s, be);
        return NULL;
    }
    float *at = s->acts_memory;
    for (int l = 0; l < L; l++) {
        layer_act_sizes(cfg, l, N, per);
        rnn_layer_acts *a = &s->acts[l];
        if (inference && l > 0) {
            *a = s->acts[0];
            if (l == 1) { a->out = at; at += per[1]; }
            else a->out = s->acts[l - 2].out;
            continue;
        }
        float **fields[ACTS_PER_LAYER] = { &a->xproj, &a->out, &a->gates, &a->hprev, &a->cell };
        for (int k = 0; k < ACTS_PER_LAYER; k++) {
            *fields[k] = per[k] ? at : NULL;
            at += per[k];
        }
    }
    if (!inference) {
        s->dxproj = at; at += N * D * GH;
        s->dhh = at; at += D * N * GH;
        s->dbuf[0] = at; at += N * D * H;
        s->dbuf[1] = at; at += N * D * H;
    }
    s->scratch = at; at += (size_t)max_B * (gates_of(cfg) + 2) * H;
    s->h_last = at;
    return s;
}

void rnn_free(rnn_stack *s, backend *be) {
    if (!s) return;
    be->free(be, s->acts_memory);
    be->free(be, s->d_seqs);
    free(s->params);
    free(s->grads);
    free(s->acts);
    free(s->sorted_lengths);
    free(s->order);
    free(s->lengths);
    free(s);
}

// ----------------------------------------------------------------------------
// sequences

int rnn_set_lengths(rnn_stack *s, backend *be, const int32_t *mask, int B, int T, bp_err *err) {
    if (B <= 0 || T <= 0 || B > s->max_B || T > s->max_T)
        return bp_err_set(err, "batch shape %d x %d outside the planned 1..%d x 1..%d (rnn)", B, T, s->max_B, s->max_T);
    for (int b = 0; b < B; b++) {
        int len = 0;
        while (len < T && mask[(size_t)b * T + len]) len++;
        for (int t = len; t < T; t++)
            if (mask[(size_t)b * T + t])
                return bp_err_set(err, "attention_mask row %d has a 1 after a 0: the rnn layers need each "
                                       "sequence's 1s first (packed sequences)", b);
        if (len == 0) return bp_err_set(err, "attention_mask row %d is all 0: an empty sequence (rnn)", b);
        s->lengths[b] = len;
    }
    /* stable order by decreasing length, as pack_padded_sequence(enforce_sorted=False) */
    for (int b = 0; b < B; b++) {
        int i = b;
        while (i > 0 && s->lengths[s->order[i - 1]] < s->lengths[b]) {
            s->order[i] = s->order[i - 1];
            i--;
        }
        s->order[i] = b;
    }
    int32_t *host = malloc(2 * (size_t)B * sizeof(int32_t));
    if (!host) return bp_err_set(err, "out of memory (rnn lengths)");
    for (int i = 0; i < B; i++) {
        s->sorted_lengths[i] = s->lengths[s->order[i]];
        host[i] = s->order[i];
        host[B + i] = s->lengths[i];
    }
    be->upload(be, s->d_seqs, host, 2 * (size_t)B * sizeof(int32_t));
    free(host);
    s->B = B;
    s->T = T;
    return 0;
}

/* The op arguments of layer l, direction d, for the current batch. */
static backend_rnn_args layer_args(const rnn_stack *s, int l, int d) {
    const rnn_config *cfg = &s->cfg;
    int H = cfg->hidden_size, D = dirs_of(cfg), GH = gates_of(cfg) * H;
    size_t N = (size_t)s->B * s->T;
    const rnn_layer_params *p = &s->params[l];
    const rnn_layer_acts *a = &s->acts[l];
    return (backend_rnn_args){
        .kind = cfg->cell == RNN_LSTM ? BACKEND_LSTM : BACKEND_GRU,
        .B = s->B, .T = s->T, .H = H, .reverse = d,
        .order = s->d_seqs, .lengths = s->d_seqs + s->B, .sorted_lengths = s->sorted_lengths,
        .xproj = a->xproj + (size_t)d * GH, .xproj_stride = D * GH,
        .w_hh = p->w_hh + (size_t)d * GH * H, .b_hh = p->b_hh + (size_t)d * GH,
        .out = a->out + (size_t)d * H, .out_stride = D * H,
        .gates = a->gates + (size_t)d * N * 4 * H, .hprev = a->hprev + (size_t)d * N * H,
        .cell = a->cell ? a->cell + (size_t)d * N * H : NULL,
        .scratch = s->scratch,
    };
}

void rnn_forward(rnn_stack *s, backend *be, const float *x, int training, uint64_t dropout_key) {
    const rnn_config *cfg = &s->cfg;
    int H = cfg->hidden_size, D = dirs_of(cfg), GH = gates_of(cfg) * H, L = cfg->num_layers;
    size_t N = (size_t)s->B * s->T;
    s->training = training;
    s->dropout_key = dropout_key;
    const float *in = x;
    for (int l = 0; l < L; l++) {
        rnn_layer_acts *a = &s->acts[l];
        /* padded rows are never written by the op: they must read back as 0 */
        be->zero(be, a->out, N * D * H * sizeof(float));
        be->zero(be, a->hprev, (size_t)D * N * H * sizeof(float));
        be->matmul_forward(be, a->xproj, in, s->params[l].w_ih, s->params[l].b_ih, (int)N, (int)layer_input(cfg, l),
                           D * GH);
        for (int d = 0; d < D; d++) {
            backend_rnn_args args = layer_args(s, l, d);
            if (l == L - 1) {
                args.h_last = s->h_last + (size_t)d * H;
                args.h_last_stride = D * H;
            }
            be->rnn_forward(be, &args);
        }
        if (l < L - 1 && training && cfg->dropout > 0)
            be->dropout(be, a->out, a->out, N * D * H, cfg->dropout, backend_mix_key(dropout_key, (uint64_t)l));
        in = a->out;
    }
}

void rnn_backward(rnn_stack *s, backend *be, const float *x, const float *dout, const float *dh_last, float *dx) {
    const rnn_config *cfg = &s->cfg;
    int H = cfg->hidden_size, D = dirs_of(cfg), GH = gates_of(cfg) * H, L = cfg->num_layers;
    size_t N = (size_t)s->B * s->T;
    const float *d_cur = dout;
    for (int l = L - 1; l >= 0; l--) {
        const rnn_layer_params *p = &s->params[l];
        rnn_layer_params *g = &s->grads[l];
        be->zero(be, s->dxproj, N * D * GH * sizeof(float));
        be->zero(be, s->dhh, (size_t)D * N * GH * sizeof(float));
        for (int d = 0; d < D; d++) {
            backend_rnn_args args = layer_args(s, l, d);
            args.dout = d_cur ? d_cur + (size_t)d * H : NULL;
            args.dout_stride = D * H;
            if (l == L - 1 && dh_last) {
                args.dh_last = dh_last + (size_t)d * H;
                args.dh_last_stride = D * H;
            }
            args.dxproj = s->dxproj + (size_t)d * GH;
            args.dxproj_stride = D * GH;
            args.dhh = s->dhh + (size_t)d * N * GH;
            be->rnn_backward(be, &args);
            /* W_hh and b_hh from every step at once: dhh^T . hprev */
            be->matmul_backward(be, NULL, g->w_hh + (size_t)d * GH * H, g->b_hh + (size_t)d * GH, args.dhh, args.hprev,
                                args.w_hh, (int)N, H, GH, 0);
        }
        const float *in = l == 0 ? x : s->acts[l - 1].out;
        float *d_in = l == 0 ? dx : s->dbuf[l % 2];
        be->matmul_backward(be, d_in, g->w_ih, g->b_ih, s->dxproj, in, p->w_ih, (int)N, (int)layer_input(cfg, l),
                            D * GH, 0);
        if (l > 0 && s->training && cfg->dropout > 0)
            be->dropout(be, d_in, d_in, N * D * H, cfg->dropout, backend_mix_key(s->dropout_key, (uint64_t)(l - 1)));
        d_cur = d_in;
    }
}

void rnn_zero_grad(rnn_stack *s, backend *be) {
    if (!s->grads) return;
    be->zero(be, s->grads[0].w_ih, rnn_param_count(&s->cfg) * sizeof(float));
}
