/* ckpt/model_io.c — checkpoint directories for the model variants (see model_io.h).
 * Must never: write a checkpoint file other than through base/atomic_file.h (a reader sees
 * the old file or the whole new one) or a whole folder other than through base/atomic_dir.h,
 * print, or exit. */
#include "ckpt/model_io.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic_dir.h"
#include "base/atomic_file.h"
#include "ckpt/load.h"
#include "ckpt/safetensors.h"

// ----------------------------------------------------------------------------
// the variant block

static int is_plain_bert(const model_config *c) {
    const model_freeze *f = &c->freeze;
    return c->body == MODEL_BODY_BERT && c->head == MODEL_HEAD_LINEAR && c->loss == MODEL_LOSS_AUTO && !f->bert &&
           !f->embeddings && !f->encoder && f->n_ranges == 0;
}

const char *model_class_name(const model_config *c) {
    if (c->body == MODEL_BODY_LSTM) return "LSTMForQuestionAnswering";
    if (c->body == MODEL_BODY_TRANSFORMER) return "TransformerForQuestionAnswering";
    switch (c->head) {
    case MODEL_HEAD_MLP: return "BertWithMLPHead";
    case MODEL_HEAD_GRU: return "BertWithGRUHead";
    case MODEL_HEAD_LSTM: return "BertWithLSTMHead";
    default: return c->bert.head == BERT_HEAD_QA ? "BertForQuestionAnswering" : "BertForSequenceClassification";
    }
}

char *model_variant_json(const model_config *c, bp_err *err) {
    err->msg[0] = '\0';
    if (is_plain_bert(c)) return NULL;
    char freeze[256];
    model_format_freeze(&c->freeze, freeze, sizeof freeze);
    json_t *v = json_pack("{s:s, s:s, s:s, s:s, s:s}", "body", model_body_name(c->body), "head",
                          model_head_name(c->head), "loss", model_loss_name(c->loss), "freeze", freeze, "class",
                          model_class_name(c));
    int failed = !v;
    /* float32 probabilities written as the decimal they stand for (0.2, not 0.200000003) */
    if (!failed && c->head_dropout >= 0)
        failed |= json_object_set_new(v, "head_dropout", json_real(hfc_real_from_float(c->head_dropout)));
    if (!failed && c->head == MODEL_HEAD_MLP) {
        json_t *hidden = json_array();
        for (int i = 0; hidden && i < c->mlp_hidden_layers; i++) failed |= json_array_append_new(hidden, json_integer(c->mlp_hidden[i]));
        failed |= json_object_set_new(v, "mlp", json_pack("{s:o?, s:s}", "hidden", hidden, "activation",
                                                          head_activation_name(c->mlp_activation)));
    }
    if (!failed && (c->head == MODEL_HEAD_GRU || c->head == MODEL_HEAD_LSTM))
        failed |= json_object_set_new(v, "rnn", json_pack("{s:i, s:i, s:b, s:f}", "layers", c->rnn_layers, "hidden",
                                                          c->rnn_hidden, "bidirectional", c->rnn_bidirectional,
                                                          "dropout", hfc_real_from_float(c->rnn_dropout)));
    char *text = failed ? NULL : json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(v);
    if (!text) bp_err_set(err, "out of memory writing the variant block");
    return text;
}

/* A string member, parsed by `parse` into *out when present. */
static int read_choice(json_t *v, const char *key, const char *path, int *out, bp_err *err,
                       int (*parse)(const char *, int *, bp_err *)) {
    json_t *x = json_object_get(v, key);
    if (!x) return 0;
    if (!json_is_string(x)) return bp_err_set(err, "bertpipe_variant.%s is not a string (%s)", key, path);
    if (parse(json_string_value(x), out, err)) {
        char why[sizeof err->msg];
        memcpy(why, err->msg, sizeof why);
        return bp_err_set(err, "bertpipe_variant.%s: %.300s (%s)", key, why, path);
    }
    return 0;
}
static int parse_body(const char *s, int *out, bp_err *err) { model_body v; int rc = model_parse_body(s, &v, err); *out = (int)v; return rc; }
static int parse_head(const char *s, int *out, bp_err *err) { model_head v; int rc = model_parse_head(s, &v, err); *out = (int)v; return rc; }
static int parse_loss(const char *s, int *out, bp_err *err) { model_criterion v; int rc = model_parse_loss(s, &v, err); *out = (int)v; return rc; }
static int parse_act(const char *s, int *out, bp_err *err) { head_activation v; int rc = head_parse_activation(s, &v, err); *out = (int)v; return rc; }

static int read_int(json_t *v, const char *key, const char *path, int *out, bp_err *err) {
    json_t *x = json_object_get(v, key);
    if (!x) return 0;
    if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 1 << 24)
        return bp_err_set(err, "bertpipe_variant: %s is not a size (%s)", key, path);
    *out = (int)json_integer_value(x);
    return 0;
}

static int read_real(json_t *v, const char *key, const char *path, float *out, bp_err *err) {
    json_t *x = json_object_get(v, key);
    if (!x) return 0;
    if (!json_is_number(x) || !(json_number_value(x) >= 0 && json_number_value(x) < 1))
        return bp_err_set(err, "bertpipe_variant: %s is not a probability in [0, 1) (%s)", key, path);
    *out = (float)json_number_value(x);
    return 0;
}

static int variant_from_json(const char *text, const char *path, model_config *c, bp_err *err) {
    json_t *v = json_loads(text, 0, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return bp_err_set(err, "bertpipe_variant is not an object (%s)", path);
    }
    int body = c->body, head = c->head, loss = c->loss, act = c->mlp_activation;
    int rc = read_choice(v, "body", path, &body, err, parse_body) || read_choice(v, "head", path, &head, err, parse_head) ||
             read_choice(v, "loss", path, &loss, err, parse_loss) ||
             read_real(v, "head_dropout", path, &c->head_dropout, err) ? -1 : 0;
    json_t *freeze = json_object_get(v, "freeze");
    if (!rc && freeze) {
        memset(&c->freeze, 0, sizeof c->freeze);
        if (!json_is_string(freeze) || model_parse_freeze(json_string_value(freeze), &c->freeze, err))
            rc = bp_err_set(err, "bertpipe_variant.freeze is not a --freeze list (%s)", path);
    }
    json_t *mlp = json_object_get(v, "mlp"), *rnn = json_object_get(v, "rnn");
    if (!rc && json_is_object(mlp)) {
        json_t *hidden = json_object_get(mlp, "hidden");
        rc = read_choice(mlp, "activation", path, &act, err, parse_act);
        if (!rc && hidden) {
            if (!json_is_array(hidden) || json_array_size(hidden) > MLP_MAX_HIDDEN)
                rc = bp_err_set(err, "bertpipe_variant.mlp.hidden is not a list of at most %d sizes (%s)", MLP_MAX_HIDDEN, path);
            c->mlp_hidden_layers = rc ? 0 : (int)json_array_size(hidden);
            for (int i = 0; !rc && i < c->mlp_hidden_layers; i++) {
                json_t *x = json_array_get(hidden, (size_t)i);
                if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 65536)
                    rc = bp_err_set(err, "bertpipe_variant.mlp.hidden[%d] is not a size (%s)", i, path);
                else c->mlp_hidden[i] = (int)json_integer_value(x);
            }
        }
    }
    if (!rc && json_is_object(rnn)) {
        json_t *bi = json_object_get(rnn, "bidirectional");
        rc = read_int(rnn, "layers", path, &c->rnn_layers, err) || read_int(rnn, "hidden", path, &c->rnn_hidden, err) ||
             read_real(rnn, "dropout", path, &c->rnn_dropout, err) ? -1 : 0;
        if (!rc && bi) {
            if (!json_is_boolean(bi)) rc = bp_err_set(err, "bertpipe_variant.rnn.bidirectional is not true/false (%s)", path);
            else c->rnn_bidirectional = json_is_true(bi);
        }
    }
    json_decref(v);
    c->body = (model_body)body;
    c->head = (model_head)head;
    c->loss = (model_criterion)loss;
    c->mlp_activation = (head_activation)act;
    return rc;
}

int model_config_from_hf(const hfc_config *hf, bert_head task, int num_labels, model_config *out, bp_err *err) {
    model_config_default(out);
    if (bert_config_from_hf(hf, task, num_labels, &out->bert, err)) return -1;
    if (hf->variant && variant_from_json(hf->variant, "config.json", out, err)) return -1;
    /* BCE and MSE are one logit whatever the number of class names */
    if (out->loss == MODEL_LOSS_BCE || out->loss == MODEL_LOSS_MSE) out->bert.num_labels = 1;
    return 0;
}

int model_read_config(const char *source, bert_head task, int num_labels, model_config *out, int *is_dir, bp_err *err) {
    if (ad_recover(source, err)) return -1;   /* a checkpoint folder whose swap a stop interrupted */
    if (is_dir) *is_dir = af_is_dir(source);
    hfc_config hf;
    if (bert_read_config(source, &hf, err)) return -1;
    int rc = model_config_from_hf(&hf, task, num_labels, out, err);
    hfc_free(&hf);
    if (rc) {
        char why[sizeof err->msg];
        memcpy(why, err->msg, sizeof why);
        if (!strstr(why, source)) bp_err_set(err, "%.300s (%.200s)", why, source);
    }
    return rc;
}

// ----------------------------------------------------------------------------
// weights

/* Host copy of every tensor, with their names. */
typedef struct host_tensors {
    float *flat;
    bp_named_tensor *t;
    int n;
} host_tensors;

static int host_tensors_make(const model *m, host_tensors *h, bp_err *err) {
    h->n = m->params.n;
    h->flat = calloc(m->num_params ? m->num_params : 1, sizeof(float));
    h->t = calloc((size_t)h->n + 1, sizeof *h->t);
    if (!h->flat || !h->t) {
        free(h->flat);
        free(h->t);
        return bp_err_set(err, "out of memory for %zu parameters", m->num_params);
    }
    model_describe_tensors(m, h->flat, h->t);
    return 0;
}

static void host_tensors_free(host_tensors *h) {
    free(h->flat);
    free(h->t);
}

model *model_open(const model_config *cfg, const char *weights, model_load load, model_use use, backend *be, int max_B,
                  int max_T, uint64_t seed, char **notes, bp_err *err) {
    if (notes) *notes = NULL;
    model *m = model_create(cfg, be, max_B, max_T, use, err);
    if (!m) return NULL;
    if (model_init_weights(m, seed, err)) goto fail;
    if (!weights) return m;
    ckpt_source *src = ckpt_open(weights, err);
    if (!src) goto fail;
    host_tensors h;
    if (host_tensors_make(m, &h, err)) { ckpt_close(src); goto fail; }
    /* BertForQuestionAnswering has no pooler: a pretrained one is no news */
    static const char *const no_pooler[] = { "pooler", NULL };
    int bert = cfg->body == MODEL_BODY_BERT;
    int ok = model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, h.flat, err) == 0;
    ckpt_report report = { 0 };
    int (*load_into)(const bp_named_tensor *, size_t, unsigned char *, const bp_named_tensor *, size_t, const char *,
                     const char *, const char *const *, ckpt_report *, bp_err *) =
        load == MODEL_LOAD_IGNORE_MISMATCHED_SIZES ? ckpt_load_into_ignoring_sizes : ckpt_load_into;
    if (ok)
        ok = load_into(h.t, (size_t)h.n, NULL, src->tensors, src->n_tensors, src->path, bert ? "bert" : NULL,
                       bert && cfg->bert.head == BERT_HEAD_QA ? no_pooler : NULL, &report, err) == 0;
    if (ok && notes) *notes = ckpt_format_notes(&report, src->path, model_class_name(cfg));
    ckpt_report_free(&report);
    if (ok) ok = model_copy_from_host(m, NULL, MODEL_STATE_PARAMS, 0, h.flat, err) == 0;
    host_tensors_free(&h);
    ckpt_close(src);
    if (ok) return m;
fail:
    model_free(m);
    return NULL;
}

/* model.safetensors, config.json and (vocab_path given) vocab.txt into the folder DIR. */
static int write_pretrained(model *m, const char *dir, const char *const *labels, int n_labels, const char *vocab_path,
                            bp_err *err) {
    char path[4096];
    host_tensors h;
    if (host_tensors_make(m, &h, err)) return -1;
    int rc = model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, h.flat, err);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = st_write(path, h.t, (size_t)h.n, NULL, NULL, 0, err);
    }
    host_tensors_free(&h);
    if (rc) return -1;

    const model_config *c = &m->cfg;
    const char *architecture = c->body != MODEL_BODY_BERT ? "" : c->head == MODEL_HEAD_LINEAR ? model_class_name(c) : "BertModel";
    /* BCE: one logit, but the dataset's two class names */
    int classes = c->loss == MODEL_LOSS_BCE ? 2 : c->bert.num_labels;
    hfc_config hf;
    if (bert_hf_config(&c->bert, classes, architecture, labels, n_labels, &hf, err)) return -1;
    char *variant = model_variant_json(c, err);
    rc = !variant && err->msg[0] ? -1 : hfc_set_variant(&hf, variant, err);
    free(variant);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = hfc_write(path, &hf, err);
    }
    hfc_free(&hf);
    if (rc) return -1;
    if (vocab_path) {
        snprintf(path, sizeof path, "%s/vocab.txt", dir);
        if (af_copy_file(vocab_path, path, err)) return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// optimizer state

/* The optimized tensors under "STATE.NAME", over a flat host layout per state buffer. */
static bp_named_tensor *state_tensors(const model *m, const host_tensors *h, const optimizer *opt, float *flats,
                                      size_t *count, bp_err *err) {
    int buffers = optim_state_count(&opt->cfg);
    bp_named_tensor *t = calloc((size_t)buffers * (size_t)h->n + 1, sizeof *t);
    if (!t) {
        bp_err_set(err, "out of memory for the optimizer state");
        return NULL;
    }
    size_t n = 0;
    for (int b = 0; b < buffers; b++)
        for (int i = 0; i < h->n; i++) {
            if (m->params.items[i].state_offset < 0) continue;
            t[n] = h->t[i];
            /* torch names are far shorter than the field: a longer one would be cut, not overflow */
            snprintf(t[n].name, sizeof t[n].name, "%.16s.%.142s", optim_state_name(&opt->cfg, b), h->t[i].name);
            t[n].data = flats + (size_t)b * m->num_params + ((float *)h->t[i].data - h->flat);
            n++;
        }
    *count = n;
    return t;
}

/* optimizer.safetensors into the folder DIR. */
static int write_train_state(model *m, optimizer *opt, const char *dir, const bert_train_state *state, bp_err *err) {
    int buffers = optim_state_count(&opt->cfg);
    host_tensors h;
    if (host_tensors_make(m, &h, err)) return -1;
    float *flats = calloc((size_t)(buffers ? buffers : 1) * m->num_params, sizeof(float));
    size_t n = 0;
    bp_named_tensor *t = flats ? state_tensors(m, &h, opt, flats, &n, err) : NULL;
    int rc = t ? 0 : -1;
    if (!flats) bp_err_set(err, "out of memory saving the optimizer state");
    for (int b = 0; rc == 0 && b < buffers; b++)
        rc = model_copy_to_host(m, opt, MODEL_STATE_OPTIM, b, flats + (size_t)b * m->num_params, err);
    if (rc == 0) {
        char v_step[32], v_epoch[32], v_pos[32], v_seed[32], v_counter[32], path[4096];
        snprintf(v_step, sizeof v_step, "%ld", state->step);
        snprintf(v_epoch, sizeof v_epoch, "%ld", state->epoch);
        snprintf(v_pos, sizeof v_pos, "%" PRId64, state->batches_consumed);
        snprintf(v_seed, sizeof v_seed, "%" PRIu64, state->dropout_seed);
        snprintf(v_counter, sizeof v_counter, "%" PRIu64, state->dropout_counter);
        const char *keys[] = { "step", "epoch", "batches_consumed", "dropout_seed", "dropout_counter", "optimizer" };
        const char *values[] = { v_step, v_epoch, v_pos, v_seed, v_counter, optim_kind_name(opt->cfg.kind) };
        snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
        rc = st_write(path, t, n, keys, values, 6, err);
    }
    free(t);
    free(flats);
    host_tensors_free(&h);
    return rc;
}

int model_save_train_state(model *m, optimizer *opt, const char *dir, const bert_train_state *state, bp_err *err) {
    if (ad_recover(dir, err) || af_make_dir(dir, err)) return -1;
    return write_train_state(m, opt, dir, state, err);
}

int model_load_train_state(model *m, optimizer *opt, const char *dir, bert_train_state *state, bp_err *err) {
    if (ad_recover(dir, err)) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st_file *f = st_open(path, err);
    if (!f) return -1;
    const char *kind = st_metadata(f, "optimizer");
    if (!kind) kind = "adamw";   /* written before there were others */
    int rc = 0;
    if (strcmp(kind, optim_kind_name(opt->cfg.kind)) != 0)
        rc = bp_err_set(err, "optimizer state is %s's, this run uses %s (%s)", kind, optim_kind_name(opt->cfg.kind), path);
    int buffers = optim_state_count(&opt->cfg);
    host_tensors h;
    if (rc == 0 && host_tensors_make(m, &h, err)) rc = -1;
    else if (rc) h = (host_tensors){ 0 };
    float *flats = rc ? NULL : calloc((size_t)(buffers ? buffers : 1) * m->num_params, sizeof(float));
    if (rc == 0 && !flats) rc = bp_err_set(err, "out of memory loading the optimizer state");
    size_t n = 0;
    bp_named_tensor *want = rc ? NULL : state_tensors(m, &h, opt, flats, &n, err);
    if (rc == 0 && !want) rc = -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const bp_named_tensor *t = st_find(f, want[i].name);
        if (!t) rc = bp_err_set(err, "optimizer state lacks tensor '%s' (%s)", want[i].name, path);
        else if (t->dtype != BP_F32 || t->nbytes != want[i].nbytes)
            rc = bp_err_set(err, "optimizer tensor '%s' has the wrong dtype or size (%s)", want[i].name, path);
        else memcpy(want[i].data, t->data, t->nbytes);
    }
    if (rc == 0 && f->n_tensors != n)
        rc = bp_err_set(err, "optimizer state holds %zu tensors, this run optimizes %zu: was --freeze changed? (%s)",
                        f->n_tensors, n, path);
    uint64_t step = 0, epoch = 0, pos = 0, seed = 0, counter = 0;
    if (rc == 0) rc = st_metadata_u64(f, "step", &step, err);
    if (rc == 0) rc = st_metadata_u64(f, "epoch", &epoch, err);
    if (rc == 0) rc = st_metadata_u64(f, "batches_consumed", &pos, err);
    if (rc == 0) rc = st_metadata_u64(f, "dropout_seed", &seed, err);
    if (rc == 0) rc = st_metadata_u64(f, "dropout_counter", &counter, err);
    for (int b = 0; rc == 0 && b < buffers; b++)
        rc = model_copy_from_host(m, opt, MODEL_STATE_OPTIM, b, flats + (size_t)b * m->num_params, err);
    if (rc == 0) {
        state->step = (long)step;
        state->epoch = (long)epoch;
        state->batches_consumed = (int64_t)pos;
        state->dropout_seed = m->dropout_seed = seed;
        state->dropout_counter = m->dropout_counter = counter;
        opt->step = (long)step;
    }
    free(want);
    free(flats);
    if (h.t || h.flat) host_tensors_free(&h);
    st_close(f);
    return rc;
}

// ----------------------------------------------------------------------------
// the whole folder

int model_write_checkpoint_files(model *m, optimizer *opt, const bert_train_state *state, const char *folder,
                                 const char *const *labels, int n_labels, const char *vocab_path, bp_err *err) {
    if (write_pretrained(m, folder, labels, n_labels, vocab_path, err)) return -1;
    return opt ? write_train_state(m, opt, folder, state, err) : 0;
}

int model_save_checkpoint(model *m, optimizer *opt, const bert_train_state *state, const char *dir,
                          const char *const *labels, int n_labels, const char *vocab_path, bp_err *err) {
    /* What the new folder gets from us. Weights in another format and optimizer state we do
     * not write would contradict the new weights: they are dropped, not carried over. */
    const char *replaced[] = { "model.safetensors", "config.json", "optimizer.safetensors", "pytorch_model.bin",
                               "model.safetensors.index.json", vocab_path ? "vocab.txt" : NULL, NULL };
    ad_dir folder;
    if (ad_begin(&folder, dir, replaced, err)) return -1;
    if (model_write_checkpoint_files(m, opt, state, folder.tmp_path, labels, n_labels, vocab_path, err)) {
        ad_abort(&folder);
        bp_err inner = *err;
        return bp_err_set(err, "checkpoint not saved, %s still holds the previous one: %s", dir, inner.msg);
    }
    return ad_commit(&folder, err);
}

int model_save_pretrained(model *m, const char *dir, const char *const *labels, int n_labels, const char *vocab_path,
                          bp_err *err) {
    return model_save_checkpoint(m, NULL, NULL, dir, labels, n_labels, vocab_path, err);
}
