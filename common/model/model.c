/* model/model.c — body + head + loss, chained (see model.h).
 * Must never: touch tensor memory directly (it may live on a GPU): host code here validates
 * inputs, plans memory, lists the parameters and derives dropout keys. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// names and configuration

static const char *const body_names[] = { "bert", "lstm", "transformer" };
static const char *const head_names[] = { "linear", "mlp", "gru", "lstm" };
static const char *const loss_names[] = { "auto", "ce", "bce", "mse" };

static int parse_name(const char *name, const char *const *names, int n, const char *what, int *out, bp_err *err) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = i;
            return 0;
        }
    char list[128] = "";
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    return bp_err_set(err, "%s '%s' unknown (%s)", what, name, list);
}

int model_parse_body(const char *name, model_body *out, bp_err *err) {
    int v;
    if (parse_name(name, body_names, 3, "model body", &v, err)) return -1;
    *out = (model_body)v;
    return 0;
}
int model_parse_head(const char *name, model_head *out, bp_err *err) {
    int v;
    if (parse_name(name, head_names, 4, "head", &v, err)) return -1;
    *out = (model_head)v;
    return 0;
}
int model_parse_loss(const char *name, model_criterion *out, bp_err *err) {
    int v;
    if (parse_name(name, loss_names, 4, "loss", &v, err)) return -1;
    *out = (model_criterion)v;
    return 0;
}
const char *model_body_name(model_body b) { return (unsigned)b < 3 ? body_names[b] : "unknown"; }
const char *model_head_name(model_head h) { return (unsigned)h < 4 ? head_names[h] : "unknown"; }
const char *model_loss_name(model_criterion l) { return (unsigned)l < 4 ? loss_names[l] : "unknown"; }

int model_parse_freeze(const char *spec, model_freeze *out, bp_err *err) {
    const char *at = spec;
    while (*at) {
        size_t len = strcspn(at, ",");
        char item[64];
        if (len == 0 || len >= sizeof item) return bp_err_set(err, "--freeze '%s': empty or overlong item", spec);
        memcpy(item, at, len);
        item[len] = '\0';
        int a, b, used = 0;
        if (strcmp(item, "bert") == 0) out->bert = 1;
        else if (strcmp(item, "embeddings") == 0) out->embeddings = 1;
        else if (strcmp(item, "encoder") == 0) out->encoder = 1;
        else if (sscanf(item, "layers:%d-%d%n", &a, &b, &used) == 2 && (size_t)used == len && a >= 0 && a <= b) {
            if (out->n_ranges == MODEL_MAX_FREEZE)
                return bp_err_set(err, "--freeze '%s': at most %d layer ranges", spec, MODEL_MAX_FREEZE);
            out->first[out->n_ranges] = a;
            out->last[out->n_ranges++] = b;
        } else {
            return bp_err_set(err, "--freeze item '%s' unknown (bert, embeddings, encoder, layers:A-B with A <= B)", item);
        }
        at += len;
        if (*at == ',') at++;
    }
    return 0;
}

void model_format_freeze(const model_freeze *f, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    const char *parts[3] = { f->bert ? "bert" : NULL, f->embeddings ? "embeddings" : NULL, f->encoder ? "encoder" : NULL };
    for (int i = 0; i < 3; i++)
        if (parts[i] && used < size) used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "," : "", parts[i]);
    for (int i = 0; i < f->n_ranges && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%slayers:%d-%d", used ? "," : "", f->first[i], f->last[i]);
}

void model_config_default(model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    bert_config_default(&cfg->bert);
    cfg->body = MODEL_BODY_BERT;
    cfg->head = MODEL_HEAD_LINEAR;
    cfg->loss = MODEL_LOSS_AUTO;
    cfg->mlp_hidden_layers = 1;
    cfg->mlp_hidden[0] = 256;
    cfg->mlp_activation = HEAD_RELU;
    cfg->rnn_layers = 2;
    cfg->rnn_hidden = 256;
    cfg->rnn_bidirectional = 1;
    cfg->rnn_dropout = 0.25f;
    cfg->head_dropout = -1.0f;
}

loss_kind model_loss_kind(const model_config *cfg) {
    if (cfg->bert.head == BERT_HEAD_QA) return LOSS_QA_SPAN;
    switch (cfg->loss) {
    case MODEL_LOSS_CE: return LOSS_CROSS_ENTROPY;
    case MODEL_LOSS_BCE: return LOSS_BCE;
    case MODEL_LOSS_MSE: return LOSS_MSE;
    default: return cfg->bert.num_labels == 1 ? LOSS_MSE : LOSS_CROSS_ENTROPY;
    }
}

static int is_qa(const model_config *cfg) { return cfg->bert.head == BERT_HEAD_QA; }

int model_config_check(const model_config *cfg, bp_err *err) {
    const bert_config *b = &cfg->bert;
    if ((unsigned)cfg->body > MODEL_BODY_TRANSFORMER || (unsigned)cfg->head > MODEL_HEAD_LSTM ||
        (unsigned)cfg->loss > MODEL_LOSS_MSE)
        return bp_err_set(err, "model body, head or loss out of range");
    if (b->head != BERT_HEAD_CLASSIFICATION && b->head != BERT_HEAD_QA)
        return bp_err_set(err, "model task must be classification or qa");
    if (cfg->body != MODEL_BODY_BERT) {
        if (!is_qa(cfg)) return bp_err_set(err, "the %s body is a QA baseline: its task is qa", model_body_name(cfg->body));
        if (cfg->head != MODEL_HEAD_LINEAR)
            return bp_err_set(err, "the %s baseline has its own qa_outputs: no --head %s", model_body_name(cfg->body),
                              model_head_name(cfg->head));
        if (b->num_hidden_layers != 1)
            return bp_err_set(err, "the %s baseline has one layer, not %d", model_body_name(cfg->body), b->num_hidden_layers);
        const model_freeze *f = &cfg->freeze;
        if (f->bert || f->encoder || f->n_ranges)
            return bp_err_set(err, "the %s baseline can freeze its embeddings only", model_body_name(cfg->body));
    } else {
        if (bert_config_check(b, err) != 0) return -1;
        for (int i = 0; i < cfg->freeze.n_ranges; i++)
            if (cfg->freeze.last[i] >= b->num_hidden_layers)
                return bp_err_set(err, "--freeze layers:%d-%d: the encoder has layers 0..%d", cfg->freeze.first[i],
                                  cfg->freeze.last[i], b->num_hidden_layers - 1);
    }
    if (is_qa(cfg) && cfg->head != MODEL_HEAD_LINEAR)
        return bp_err_set(err, "the %s head is for classification; QA uses the linear qa_outputs", model_head_name(cfg->head));
    if (is_qa(cfg) && cfg->loss != MODEL_LOSS_AUTO)
        return bp_err_set(err, "QA trains with the span loss, not --loss %s", model_loss_name(cfg->loss));
    if (!is_qa(cfg)) {
        if (b->num_labels <= 0) return bp_err_set(err, "num_labels %d must be positive", b->num_labels);
        if (cfg->loss == MODEL_LOSS_CE && b->num_labels < 2)
            return bp_err_set(err, "--loss ce needs 2 or more labels, the model has %d", b->num_labels);
        if ((cfg->loss == MODEL_LOSS_BCE || cfg->loss == MODEL_LOSS_MSE) && b->num_labels != 1)
            return bp_err_set(err, "--loss %s takes one logit: num_labels must be 1, not %d", model_loss_name(cfg->loss),
                              b->num_labels);
    }
    if (!(cfg->head_dropout < 1)) return bp_err_set(err, "head dropout %g must be below 1", cfg->head_dropout);
    return 0;
}

// ----------------------------------------------------------------------------
// parameters: the list, what trains, the optimizer's runs

static float head_dropout(const model_config *cfg) {
    if (cfg->head_dropout >= 0) return cfg->head_dropout;
    return cfg->bert.classifier_dropout >= 0 ? cfg->bert.classifier_dropout : cfg->bert.hidden_dropout_prob;
}

/* bert.encoder.layer.N. -> N, else -1 */
static int layer_of(const char *name) {
    int l, used = 0;
    if (sscanf(name, "bert.encoder.layer.%d.%n", &l, &used) == 1 && used > 0) return l;
    return -1;
}

static int layer_frozen(const model_freeze *f, int l) {
    if (f->bert || f->encoder) return 1;
    for (int i = 0; i < f->n_ranges; i++)
        if (l >= f->first[i] && l <= f->last[i]) return 1;
    return 0;
}

/* List BERT's tensors (bert_describe_tensors over its own device memory: names and offsets). */
static int list_bert(model *m, bp_err *err) {
    bert_model *b = m->bert;
    int n = bert_tensor_count(b);
    bp_named_tensor *t = calloc((size_t)n, sizeof *t);
    if (!t) return bp_err_set(err, "out of memory listing parameters");
    bert_describe_tensors(b, b->params_memory, t);
    const model_freeze *f = &m->cfg.freeze;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        size_t offset = (size_t)((float *)t[i].data - b->params_memory);
        model_param *p = param_list_add(&m->params, t[i].name, (float *)t[i].data,
                                        b->grads_memory ? b->grads_memory + offset : NULL, offset < b->num_decayed,
                                        b->params_memory, 0, t[i].ndim, t[i].shape[0], t[i].ndim > 1 ? t[i].shape[1] : 0,
                                        0, err);
        if (!p) { rc = -1; break; }
        int l = layer_of(p->name);
        if (strncmp(p->name, "bert.embeddings.", 16) == 0) p->trainable = !(f->bert || f->embeddings);
        else if (l >= 0) p->trainable = !layer_frozen(f, l);
        else if (strncmp(p->name, "bert.pooler.", 12) == 0) p->trainable = !f->bert;
        p->used = !(strncmp(p->name, "bert.pooler.", 12) == 0 && b->cfg.head == BERT_HEAD_SEQUENCE);
        if (i == 0) {   /* the word embeddings: row-sparse gradient */
            p->touched = b->wte_touched;
            p->row_len = (size_t)b->cfg.hidden_size;
        }
    }
    free(t);
    return rc;
}

static int by_value_address(const void *a, const void *b) {
    const model_param *x = *(model_param *const *)a, *y = *(model_param *const *)b;
    return x->value < y->value ? -1 : x->value > y->value;
}

/* State offsets in memory order, and the runs of contiguous tensors sharing a decay setting. */
static int plan_segments(model *m, bp_err *err) {
    model_param **covered = calloc((size_t)m->params.n + 1, sizeof *covered);
    m->segments = calloc((size_t)m->params.n + 1, sizeof *m->segments);
    if (!covered || !m->segments) {
        free(covered);
        return bp_err_set(err, "out of memory planning the optimizer");
    }
    int n = 0;
    for (int i = 0; i < m->params.n; i++) {
        model_param *p = &m->params.items[i];
        if (p->trainable && p->used && p->grad) covered[n++] = p;
    }
    qsort(covered, (size_t)n, sizeof *covered, by_value_address);
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        model_param *p = covered[i];
        p->state_offset = (long)offset;
        optim_segment *last = m->n_segments ? &m->segments[m->n_segments - 1] : NULL;
        int joins = last && !last->touched && !p->touched && last->decay == p->decay &&
                    last->param + last->rows == p->value && last->grad + last->rows == p->grad;
        if (joins) {
            last->rows += p->numel;
        } else {
            m->segments[m->n_segments++] = (optim_segment){
                .param = p->value, .grad = p->grad, .state_offset = offset, .decay = p->decay, .touched = p->touched,
                .rows = p->touched ? p->numel / p->row_len : p->numel, .row_len = p->touched ? p->row_len : 1,
            };
        }
        offset += p->numel;
    }
    m->num_optimized = offset;
    free(covered);
    return 0;
}

// ----------------------------------------------------------------------------
// life cycle

static size_t bert_block(const model *m) { return m->bert ? m->bert->num_params : 0; }

model *model_create(const model_config *cfg, backend *be, int max_B, int max_T, model_use use, bp_err *err) {
    if (model_config_check(cfg, err) != 0) return NULL;
    if (max_B <= 0 || max_T <= 0) {
        bp_err_set(err, "batch shape %d x %d must be positive (model)", max_B, max_T);
        return NULL;
    }
    model *m = calloc(1, sizeof *m);
    if (!m) {
        bp_err_set(err, "out of memory creating the model");
        return NULL;
    }
    m->cfg = *cfg;
    m->be = be;
    m->max_B = max_B;
    m->max_T = max_T;
    m->inference = use == MODEL_FOR_INFERENCE;
    m->loss = NAN;
    const bert_config *bc = &cfg->bert;
    const model_freeze *f = &cfg->freeze;
    int inference = m->inference, K = is_qa(cfg) ? 2 : bc->num_labels, rc = 0;

    if (cfg->body == MODEL_BODY_BERT) {
        bert_config body = *bc;
        body.head = cfg->head == MODEL_HEAD_MLP ? BERT_HEAD_POOLED
                  : cfg->head == MODEL_HEAD_LINEAR ? bc->head : BERT_HEAD_SEQUENCE;
        /* does anything under the head train? (the linear heads live inside bert_model) */
        int any_layer = 0;
        for (int l = 0; l < bc->num_hidden_layers; l++) any_layer |= !layer_frozen(f, l);
        int embeddings = !(f->bert || f->embeddings);
        m->bert_trains = embeddings || any_layer || (body.head == BERT_HEAD_POOLED && !f->bert);
        int frozen_whole = cfg->head != MODEL_HEAD_LINEAR && !m->bert_trains;
        m->bert = bert_create_for(&body, be, max_B, max_T,
                                  inference || frozen_whole ? BERT_FOR_INFERENCE : BERT_FOR_TRAINING, err);
        if (!m->bert) goto fail;
        m->bert->train_embeddings = embeddings;
        m->bert->train_pooler = !f->bert;
        for (int l = 0; l < bc->num_hidden_layers; l++) m->bert->train_layers[l] = !layer_frozen(f, l);
        if (list_bert(m, err)) goto fail;
        if (cfg->head == MODEL_HEAD_MLP) {
            mlp_config mc = { .input_size = bc->hidden_size, .outputs = K, .num_hidden = cfg->mlp_hidden_layers,
                              .activation = cfg->mlp_activation, .dropout = head_dropout(cfg) };
            memcpy(mc.hidden, cfg->mlp_hidden, sizeof mc.hidden);
            m->mlp = mlp_create(&mc, be, max_B, inference, err);
            if (!m->mlp || mlp_list_params(m->mlp, bert_block(m), &m->params, err)) goto fail;
        } else if (cfg->head != MODEL_HEAD_LINEAR) {
            rnn_head_config rc_ = {
                .rnn = { .cell = cfg->head == MODEL_HEAD_LSTM ? RNN_LSTM : RNN_GRU, .input_size = bc->hidden_size,
                         .hidden_size = cfg->rnn_hidden, .num_layers = cfg->rnn_layers,
                         .bidirectional = cfg->rnn_bidirectional, .dropout = cfg->rnn_dropout },
                .outputs = K, .dropout = head_dropout(cfg) };
            m->rnn = rnn_head_create(&rc_, be, max_B, max_T, inference, err);
            if (!m->rnn || rnn_head_list_params(m->rnn, bert_block(m), &m->params, err)) goto fail;
        }
        if (!inference && m->bert_trains && cfg->head != MODEL_HEAD_LINEAR) {
            size_t rows = cfg->head == MODEL_HEAD_MLP ? (size_t)max_B : (size_t)max_B * max_T;
            m->d_top = be->alloc(be, rows * bc->hidden_size * sizeof(float), err);
            if (!m->d_top) goto fail;
        }
    } else {
        baseline_config bl = { .kind = cfg->body == MODEL_BODY_LSTM ? BASELINE_LSTM : BASELINE_TRANSFORMER,
                               .vocab_size = bc->vocab_size, .hidden_size = bc->hidden_size,
                               .num_heads = bc->num_attention_heads, .ff_size = bc->intermediate_size,
                               .dropout = bc->hidden_dropout_prob, .layer_norm_eps = bc->layer_norm_eps };
        m->base = baseline_create(&bl, be, max_B, max_T, inference, err);
        if (!m->base || baseline_list_params(m->base, 0, &m->params, err)) goto fail;
        m->base->train_embeddings = !f->embeddings;
        m->params.items[0].trainable = !f->embeddings;   /* embedding.weight comes first */
    }
    for (int i = 0; i < m->params.n; i++) {
        m->num_params += m->params.items[i].numel;
        if (m->params.items[i].trainable) m->num_trainable += m->params.items[i].numel;
    }
    if (plan_segments(m, err)) goto fail;

    /* targets: class ids or positions [2 max_B], float targets [max_B]; dlogits; the loss */
    size_t logits = is_qa(cfg) ? 2 * (size_t)max_B * max_T : (size_t)max_B * K;
    m->targets_memory = be->alloc(be, 3 * (size_t)max_B * sizeof(int32_t), err);
    if (m->targets_memory) m->dlogits = be->alloc(be, (logits + 2) * sizeof(float), err);
    if (!m->dlogits) goto fail;
    m->loss_buf = m->dlogits + logits;
    m->targets = (loss_targets){ .kind = model_loss_kind(cfg), .classes = K, .ids = m->targets_memory,
                                 .values = (float *)(void *)(m->targets_memory + 2 * (size_t)max_B) };
    (void)rc;
    return m;
fail:
    model_free(m);
    return NULL;
}

void model_free(model *m) {
    if (!m) return;
    backend *be = m->be;
    bert_free(m->bert);
    baseline_free(m->base);
    mlp_free(m->mlp, be);
    rnn_head_free(m->rnn, be);
    be->free(be, m->d_top);
    be->free(be, m->targets_memory);
    be->free(be, m->dlogits);
    param_list_free(&m->params);
    free(m->segments);
    free(m);
}

/* The device blocks behind the host layout: BERT's or the baseline's, then the head's. */
typedef struct block { float *params, *grads; size_t n, base; } block;

static int blocks_of(const model *m, block out[2]) {
    int n = 0;
    if (m->bert) out[n++] = (block){ m->bert->params_memory, m->bert->grads_memory, m->bert->num_params, 0 };
    if (m->base) out[n++] = (block){ m->base->params_memory, m->base->grads_memory, m->base->num_params, 0 };
    if (m->mlp) out[n++] = (block){ m->mlp->params_memory, m->mlp->grads_memory, m->mlp->num_params, bert_block(m) };
    if (m->rnn) out[n++] = (block){ m->rnn->params_memory, m->rnn->grads_memory, m->rnn->num_params, bert_block(m) };
    return n;
}

/* A backend that keeps its own copy of the product weights (bf16 on the CPU) rounds them
 * again: after a load, an initialisation or an optimizer step. */
static void weights_changed(model *m) {
    if (m->be->weights_changed) m->be->weights_changed(m->be);
}

int model_init_weights(model *m, uint64_t seed, bp_err *err) {
    if (m->bert && bert_init_weights(m->bert, seed, 0, err) != 0) return -1;
    block b[2];
    int nb = blocks_of(m, b);
    for (int i = m->bert ? 1 : 0; i < nb; i++) {
        float *host = malloc(b[i].n * sizeof(float));
        if (!host) return bp_err_set(err, "out of memory initialising %zu parameters", b[i].n);
        uint64_t s = backend_mix_key(seed, 0x68656164u + (uint64_t)i);
        if (m->base) baseline_init_host(m->base, host, s);
        else if (m->mlp) mlp_init_host(m->mlp, host, s);
        else rnn_head_init_host(m->rnn, host, s);
        m->be->upload(m->be, b[i].params, host, b[i].n * sizeof(float));
        free(host);
    }
    weights_changed(m);
    return m->be->check(m->be, err);
}

// ----------------------------------------------------------------------------
// forward, backward

static int check_targets(const model *m, const bert_batch *b, bp_err *err) {
    loss_kind kind = m->targets.kind;
    if (kind == LOSS_CROSS_ENTROPY && b->labels)
        for (int i = 0; i < b->B; i++)
            if (b->labels[i] != -100 && (b->labels[i] < 0 || b->labels[i] >= m->targets.classes))
                return bp_err_set(err, "label %d of row %d outside 0..%d (model)", b->labels[i], i, m->targets.classes - 1);
    if (kind == LOSS_BCE && b->labels && !b->label_values)
        for (int i = 0; i < b->B; i++)
            if (b->labels[i] != 0 && b->labels[i] != 1)
                return bp_err_set(err, "label %d of row %d: BCE takes 0 or 1 (model)", b->labels[i], i);
    if (kind == LOSS_BCE && b->label_values)
        for (int i = 0; i < b->B; i++)
            if (!(b->label_values[i] >= 0 && b->label_values[i] <= 1))
                return bp_err_set(err, "target %g of row %d: BCE takes values in [0, 1] (model)", b->label_values[i], i);
    return 0;
}

static int check_tokens(const model *m, const bert_batch *b, bp_err *err) {
    if (b->B <= 0 || b->T <= 0 || b->B > m->max_B || b->T > m->max_T)
        return bp_err_set(err, "batch shape %d x %d outside the planned 1..%d x 1..%d (model)", b->B, b->T, m->max_B,
                          m->max_T);
    if (!b->input_ids || !b->attention_mask) return bp_err_set(err, "batch lacks input_ids or attention_mask (model)");
    int V = m->cfg.bert.vocab_size;
    for (int i = 0; i < b->B * b->T; i++) {
        if (b->input_ids[i] < 0 || b->input_ids[i] >= V)
            return bp_err_set(err, "input_ids[%d][%d] = %d outside the vocabulary of %d (model)", i / b->T, i % b->T,
                              b->input_ids[i], V);
        if (b->attention_mask[i] != 0 && b->attention_mask[i] != 1)
            return bp_err_set(err, "attention_mask[%d][%d] = %d, must be 0 or 1 (model)", i / b->T, i % b->T,
                              b->attention_mask[i]);
    }
    return 0;
}

/* The heads' dropout keys: one per forward, apart from BERT's sites. */
static uint64_t head_key(const model *m) {
    return backend_mix_key(backend_mix_key(m->dropout_seed, m->dropout_counter), 0x68656164ull << 8);
}

int model_forward(model *m, const bert_batch *batch, int training, bp_err *err) {
    backend *be = m->be;
    if (check_tokens(m, batch, err) || check_targets(m, batch, err)) return -1;
    m->B = batch->B;
    m->T = batch->T;
    m->training = training;
    m->has_loss = 0;
    m->loss = NAN;
    if (training) m->dropout_counter++;   /* fresh masks for every training pass */
    if (m->bert) {
        bert_batch tokens = { .B = batch->B, .T = batch->T, .input_ids = batch->input_ids,
                              .token_type_ids = batch->token_type_ids, .attention_mask = batch->attention_mask };
        m->bert->dropout_seed = m->dropout_seed;
        m->bert->dropout_counter = m->dropout_counter - (training ? 1 : 0);   /* bert_forward advances it */
        if (m->rnn && rnn_set_lengths(m->rnn->stack, be, batch->attention_mask, batch->B, batch->T, err)) return -1;
        if (bert_forward(m->bert, &tokens, training, err)) return -1;
        if (m->mlp) {
            mlp_forward(m->mlp, be, bert_top(m->bert), batch->B, training, head_key(m));
            m->logits = m->mlp->logits;
        } else if (m->rnn) {
            rnn_head_forward(m->rnn, be, bert_top(m->bert), training, head_key(m));
            m->logits = m->rnn->logits;
        } else {
            m->logits = bert_top(m->bert);
        }
    } else {
        if (baseline_forward(m->base, batch->input_ids, batch->attention_mask, batch->B, batch->T, training, head_key(m),
                             err))
            return -1;
        m->logits = m->base->acts.logits;
    }
    int has = loss_upload(be, &m->targets, batch->B, batch->T, batch->labels, batch->label_values,
                          batch->start_positions, batch->end_positions, err);
    if (has < 0) return -1;
    m->has_loss = has;
    if (has) {
        be->zero(be, m->loss_buf, sizeof(float));
        loss_apply(be, &m->targets, m->logits, m->dlogits, m->loss_buf, 1.0f);
        be->download(be, &m->loss, m->loss_buf, sizeof(float));
    }
    return be->check(be, err);
}

float model_loss(const model *m) { return m->loss; }

int model_outputs(const model *m) { return is_qa(&m->cfg) ? 2 : m->cfg.bert.num_labels; }

long model_logits(model *m, float *dst, size_t cap, bp_err *err) {
    if (m->B == 0) return bp_err_set(err, "no forward pass to read logits from (model)");
    size_t n = is_qa(&m->cfg) ? (size_t)m->B * m->T * 2 : (size_t)m->B * m->cfg.bert.num_labels;
    if (cap < n) return bp_err_set(err, "logits need %zu floats, buffer holds %zu (model)", n, cap);
    m->be->download(m->be, dst, m->logits, n * sizeof(float));
    if (m->be->check(m->be, err) != 0) return -1;
    return (long)n;
}

int model_classes(const model *m) {
    return m->targets.kind == LOSS_BCE ? 2 : model_outputs(m);
}

long model_class_scores(model *m, float *dst, size_t cap, bp_err *err) {
    if (is_qa(&m->cfg)) return bp_err_set(err, "a QA model has no class scores (model)");
    if (m->targets.kind != LOSS_BCE) return model_logits(m, dst, cap, err);
    size_t n = 2 * (size_t)m->B;
    if (cap < n) return bp_err_set(err, "class scores need %zu floats, buffer holds %zu (model)", n, cap);
    /* the B logits into the second half, then spread out as (0, x) pairs */
    if (model_logits(m, dst + m->B, (size_t)m->B, err) < 0) return -1;
    for (int i = 0; i < m->B; i++) {
        dst[2 * i + 1] = dst[m->B + i];
        dst[2 * i] = 0.0f;
    }
    return (long)n;
}

int model_backward(model *m, float loss_scale, bp_err *err) {
    backend *be = m->be;
    if (m->inference) return bp_err_set(err, "model was created for inference only: no backward (model)");
    if (!m->has_loss) return bp_err_set(err, "backward needs a forward pass with targets (model)");
    /* the loss gradient again, with the caller's scale (the loss to the spare slot) */
    be->zero(be, m->loss_buf + 1, sizeof(float));
    loss_apply(be, &m->targets, m->logits, m->dlogits, m->loss_buf + 1, loss_scale);
    if (m->base) {
        baseline_backward(m->base, m->dlogits);
        return be->check(be, err);
    }
    if (m->mlp) mlp_backward(m->mlp, be, m->dlogits, m->d_top);
    else if (m->rnn) rnn_head_backward(m->rnn, be, bert_top(m->bert), m->dlogits, m->d_top);
    const float *d_top = m->mlp || m->rnn ? m->d_top : m->dlogits;
    if (m->cfg.head == MODEL_HEAD_LINEAR || m->bert_trains) {
        if (bert_backward_top(m->bert, d_top, err)) return -1;
    }
    return be->check(be, err);
}

void model_zero_grad(model *m) {
    backend *be = m->be;
    if (m->inference) return;
    if (m->bert && !m->bert->inference) bert_zero_grad(m->bert);
    if (m->base) baseline_zero_grad(m->base);
    if (m->mlp) be->zero(be, m->mlp->grads_memory, m->mlp->num_params * sizeof(float));
    if (m->rnn) be->zero(be, m->rnn->grads_memory, m->rnn->num_params * sizeof(float));
}

int model_grad_spans(const model *m, model_grad_span *out, int cap) {
    block b[2];
    int nb = m->inference ? 0 : blocks_of(m, b), n = 0;
    for (int i = 0; i < nb && n < cap; i++)
        if (b[i].grads && b[i].n) out[n++] = (model_grad_span){b[i].grads, b[i].n};
    return n;
}

int model_flag_spans(const model *m, model_flag_span *out, int cap) {
    int n = 0;
    for (int i = 0; i < m->params.n && !m->inference; i++) {
        const model_param *p = &m->params.items[i];
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= out[j].flags == p->touched;
        if (p->touched && p->grad && !seen && n < cap)
            out[n++] = (model_flag_span){(uint8_t *)p->touched, p->numel / p->row_len};
    }
    return n;
}

int model_sparse_spans(const model *m, model_sparse_span *out, int cap) {
    int n = 0;
    for (int i = 0; i < m->params.n && !m->inference && n < cap; i++) {
        const model_param *p = &m->params.items[i];
        if (p->touched && p->grad)
            out[n++] = (model_sparse_span){p->grad, p->touched, p->numel / p->row_len, p->row_len};
    }
    return n;
}

optimizer *model_optim_create(model *m, const optim_config *cfg, bp_err *err) {
    if (m->inference) {
        bp_err_set(err, "model was created for inference only: no optimizer (model)");
        return NULL;
    }
    return optim_create(m->be, cfg, m->num_optimized, err);
}

int model_optim_step(model *m, optimizer *opt, double *grad_norm_out, float *lr_out, bp_err *err) {
    if (opt->n != m->num_optimized)
        return bp_err_set(err, "optimizer sized for %zu parameters, the model optimizes %zu (model)", opt->n,
                          m->num_optimized);
    int rc = optim_step(opt, m->segments, m->n_segments, grad_norm_out, lr_out, err);
    weights_changed(m);   /* even after a failure: some segments may have been updated */
    if (rc != 0) return -1;
    model_zero_grad(m);
    return m->be->check(m->be, err);
}

// ----------------------------------------------------------------------------
// tensors and host copies

int model_describe_tensors(const model *m, float *flat, bp_named_tensor *out) {
    for (int i = 0; i < m->params.n; i++) {
        const model_param *p = &m->params.items[i];
        bp_named_tensor *t = &out[i];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", p->name);
        t->dtype = BP_F32;
        t->ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
        t->data = flat + p->flat_offset;
        t->nbytes = p->numel * sizeof(float);
    }
    return m->params.n;
}

int model_copy_to_host(model *m, optimizer *opt, model_state which, int index, float *dst, bp_err *err) {
    backend *be = m->be;
    if (which == MODEL_STATE_OPTIM) {
        if (!opt || index < 0 || index >= optim_state_count(&opt->cfg))
            return bp_err_set(err, "no optimizer state %d to copy (model)", index);
        if (opt->n != m->num_optimized) return bp_err_set(err, "optimizer sized for another model (model)");
        const float *state = optim_state_buffer(opt, index);
        for (int i = 0; i < m->params.n; i++) {
            const model_param *p = &m->params.items[i];
            if (p->state_offset >= 0)
                be->download(be, dst + p->flat_offset, state + p->state_offset, p->numel * sizeof(float));
        }
        return be->check(be, err);
    }
    block b[2];
    int nb = blocks_of(m, b);
    for (int i = 0; i < nb; i++) {
        const float *src = which == MODEL_STATE_PARAMS ? b[i].params : b[i].grads;
        if (src) be->download(be, dst + b[i].base, src, b[i].n * sizeof(float));
        else if (which == MODEL_STATE_GRADS && !m->inference) memset(dst + b[i].base, 0, b[i].n * sizeof(float));
        else return bp_err_set(err, "model was created for inference only: no gradients (model)");
    }
    return be->check(be, err);
}

int model_copy_from_host(model *m, optimizer *opt, model_state which, int index, const float *src, bp_err *err) {
    backend *be = m->be;
    if (which == MODEL_STATE_OPTIM) {
        if (!opt || index < 0 || index >= optim_state_count(&opt->cfg))
            return bp_err_set(err, "no optimizer state %d to copy (model)", index);
        if (opt->n != m->num_optimized) return bp_err_set(err, "optimizer sized for another model (model)");
        float *state = optim_state_buffer(opt, index);
        for (int i = 0; i < m->params.n; i++) {
            const model_param *p = &m->params.items[i];
            if (p->state_offset >= 0)
                be->upload(be, state + p->state_offset, src + p->flat_offset, p->numel * sizeof(float));
        }
        return be->check(be, err);
    }
    if (which == MODEL_STATE_GRADS) return bp_err_set(err, "gradients are not uploaded into the model (model)");
    block b[2];
    int nb = blocks_of(m, b);
    for (int i = 0; i < nb; i++) be->upload(be, b[i].params, src + b[i].base, b[i].n * sizeof(float));
    weights_changed(m);
    return be->check(be, err);
}
