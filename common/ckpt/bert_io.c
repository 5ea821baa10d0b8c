/* ckpt/bert_io.c — checkpoint directories for the BERT model (see bert_io.h).
 * Must never: write a checkpoint file other than through base/atomic_file.h (a reader sees
 * the old file or the whole new one), print, or exit. */
#include "ckpt/bert_io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/atomic_file.h"
#include "ckpt/load.h"
#include "ckpt/safetensors.h"

int bert_preset(const char *name, bert_config *cfg, bp_err *err) {
    static const struct { const char *name; int layers, hidden; } presets[] = {
        {"tiny", 2, 128}, {"mini", 4, 256}, {"small", 4, 512}, {"medium", 8, 512}, {"base", 12, 768}, {"large", 24, 1024},
    };
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) {
        if (strcmp(name, presets[i].name)) continue;
        cfg->num_hidden_layers = presets[i].layers;
        cfg->hidden_size = presets[i].hidden;
        cfg->num_attention_heads = presets[i].hidden / 64;
        cfg->intermediate_size = 4 * presets[i].hidden;
        return 0;
    }
    return bp_err_set(err, "unknown model preset '%s' (tiny, mini, small, medium, base, large)", name);
}

int bert_config_from_hf(const hfc_config *hf, bert_head head, int num_labels, bert_config *out, bp_err *err) {
    bert_config_default(out);
    out->vocab_size = (int)hf->vocab_size;
    out->hidden_size = (int)hf->hidden_size;
    out->num_hidden_layers = (int)hf->num_hidden_layers;
    out->num_attention_heads = (int)hf->num_attention_heads;
    out->intermediate_size = (int)hf->intermediate_size;
    out->max_position_embeddings = (int)hf->max_position_embeddings;
    out->type_vocab_size = (int)hf->type_vocab_size;
    out->pad_token_id = (int)hf->pad_token_id;
    out->layer_norm_eps = (float)hf->layer_norm_eps;
    out->hidden_dropout_prob = (float)hf->hidden_dropout_prob;
    out->attention_probs_dropout_prob = (float)hf->attention_probs_dropout_prob;
    out->classifier_dropout = (float)hf->classifier_dropout;
    out->initializer_range = (float)hf->initializer_range;
    out->num_labels = num_labels > 0 ? num_labels : hf->num_labels;
    out->head = head;
    if (head == BERT_HEAD_QA) out->num_labels = 2;
    return bert_config_check(out, err);
}

/* Host array laid out like the parameters, with HF names. */
typedef struct described {
    float *flat;
    bp_named_tensor *tensors;
    int n;
} described;

static int describe(bert_model *m, described *d, bp_err *err) {
    d->n = bert_tensor_count(m);
    d->flat = malloc(m->num_params * sizeof(float));
    d->tensors = calloc((size_t)d->n, sizeof *d->tensors);
    if (!d->flat || !d->tensors) {
        free(d->flat);
        free(d->tensors);
        return bp_err_set(err, "out of memory for %zu parameters", m->num_params);
    }
    bert_describe_tensors(m, d->flat, d->tensors);
    return 0;
}

static void described_free(described *d) {
    free(d->flat);
    free(d->tensors);
}

int bert_read_config(const char *source, hfc_config *hf, bp_err *err) {
    char config_path[4096];
    snprintf(config_path, sizeof config_path, af_is_dir(source) ? "%s/config.json" : "%s", source);
    return hfc_read(config_path, hf, err);
}

bert_model *bert_open(const char *source, int load_weights, bert_head head, int num_labels, bert_use use,
                      backend *be, int max_B, int max_T, uint64_t seed, char **notes, bp_err *err) {
    if (notes) *notes = NULL;
    int dir = af_is_dir(source);
    hfc_config hf;
    if (bert_read_config(source, &hf, err)) return NULL;
    bert_config cfg;
    int rc = bert_config_from_hf(&hf, head, num_labels, &cfg, err);
    hfc_free(&hf);
    if (rc) return NULL;
    bert_model *m = bert_create_for(&cfg, be, max_B, max_T, use, err);
    if (!m) return NULL;
    if (bert_init_weights(m, seed, 0, err)) goto fail;
    if (!load_weights || !dir) return m;

    ckpt_source *src = ckpt_open(source, err);
    if (!src) goto fail;
    described d;
    if (describe(m, &d, err)) { ckpt_close(src); goto fail; }
    if (bert_copy_to_host(m, NULL, BERT_STATE_PARAMS, d.flat, err)) goto fail_loaded;
    static const char *qa_ignore[] = {"pooler", NULL};
    ckpt_report report = {0};
    const char *model_class = head == BERT_HEAD_QA ? "BertForQuestionAnswering" : "BertForSequenceClassification";
    if (ckpt_load_into(d.tensors, (size_t)d.n, NULL, src->tensors, src->n_tensors, src->path, "bert",
                       head == BERT_HEAD_QA ? qa_ignore : NULL, &report, err))
        goto fail_loaded;
    if (notes) *notes = ckpt_format_notes(&report, src->path, model_class);
    ckpt_report_free(&report);
    if (bert_copy_from_host(m, NULL, BERT_STATE_PARAMS, d.flat, err)) goto fail_loaded;
    described_free(&d);
    ckpt_close(src);
    return m;
fail_loaded:
    described_free(&d);
    ckpt_close(src);
fail:
    bert_free(m);
    return NULL;
}

int bert_hf_config(const bert_config *c, int classes, const char *architecture, const char *const *labels,
                   int n_labels, hfc_config *hf, bp_err *err) {
    if (hfc_defaults(hf, err)) return -1;
    hf->vocab_size = c->vocab_size;
    hf->hidden_size = c->hidden_size;
    hf->num_hidden_layers = c->num_hidden_layers;
    hf->num_attention_heads = c->num_attention_heads;
    hf->intermediate_size = c->intermediate_size;
    hf->max_position_embeddings = c->max_position_embeddings;
    hf->type_vocab_size = c->type_vocab_size;
    hf->pad_token_id = c->pad_token_id < 0 ? 0 : c->pad_token_id;
    hf->layer_norm_eps = c->layer_norm_eps;
    hf->hidden_dropout_prob = c->hidden_dropout_prob;
    hf->attention_probs_dropout_prob = c->attention_probs_dropout_prob;
    hf->classifier_dropout = c->classifier_dropout;
    hf->initializer_range = c->initializer_range;
    snprintf(hf->architecture, sizeof hf->architecture, "%s", architecture);
    int rc = 0;
    if (c->head == BERT_HEAD_CLASSIFICATION && labels && n_labels == classes)
        rc = hfc_set_labels(hf, labels, n_labels, err);
    else if (c->head == BERT_HEAD_CLASSIFICATION && classes != hf->num_labels) {
        /* LABEL_i names for a label count the dataset did not name */
        char **names = calloc((size_t)classes, sizeof *names);
        rc = names ? 0 : bp_err_set(err, "out of memory");
        for (int i = 0; rc == 0 && i < classes; i++) {
            names[i] = malloc(24);
            if (!names[i]) rc = bp_err_set(err, "out of memory");
            else snprintf(names[i], 24, "LABEL_%d", i);
        }
        if (rc == 0) rc = hfc_set_labels(hf, (const char *const *)names, classes, err);
        for (int i = 0; names && i < classes; i++) free(names[i]);
        free(names);
    }
    if (rc) hfc_free(hf);
    return rc;
}

int bert_save_pretrained(bert_model *m, const char *dir, const char *const *labels, int n_labels,
                         const char *vocab_path, bp_err *err) {
    if (af_make_dir(dir, err)) return -1;
    char path[4096];
    described d;
    if (describe(m, &d, err)) return -1;
    int rc = bert_copy_to_host(m, NULL, BERT_STATE_PARAMS, d.flat, err);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = st_write(path, d.tensors, (size_t)d.n, NULL, NULL, 0, err);
    }
    described_free(&d);
    if (rc) return -1;

    hfc_config hf;
    const bert_config *c = &m->cfg;
    rc = bert_hf_config(c, c->num_labels,
                        c->head == BERT_HEAD_QA ? "BertForQuestionAnswering" : "BertForSequenceClassification", labels,
                        n_labels, &hf, err);
    if (rc) return -1;
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

/* Moments as named tensors: "exp_avg.NAME" (m) or "exp_avg_sq.NAME" (v) over flat. */
static bp_named_tensor *moment_tensors(const described *d, float *flat, const char *prefix) {
    bp_named_tensor *t = calloc((size_t)d->n, sizeof *t);
    if (!t) return NULL;
    for (int i = 0; i < d->n; i++) {
        t[i] = d->tensors[i];
        /* HF names are far shorter than the field; a longer one would be cut, not overflow. */
        int n = snprintf(t[i].name, sizeof t[i].name, "%s.", prefix);
        snprintf(t[i].name + n, sizeof t[i].name - (size_t)n, "%.*s", (int)(sizeof t[i].name - (size_t)n - 1),
                 d->tensors[i].name);
        t[i].data = (char *)flat + ((char *)d->tensors[i].data - (char *)d->flat);
    }
    return t;
}

int bert_save_train_state(bert_model *m, optim_adamw *opt, const char *dir, const bert_train_state *state,
                          bp_err *err) {
    if (af_make_dir(dir, err)) return -1;
    described d;
    if (describe(m, &d, err)) return -1;
    float *mv = malloc(2 * m->num_params * sizeof(float));
    bp_named_tensor *all = calloc(2 * (size_t)d.n, sizeof *all);
    bp_named_tensor *tm = mv ? moment_tensors(&d, mv, "exp_avg") : NULL;
    bp_named_tensor *tv = mv ? moment_tensors(&d, mv + m->num_params, "exp_avg_sq") : NULL;
    int rc = (!mv || !all || !tm || !tv) ? bp_err_set(err, "out of memory saving the optimizer state") : 0;
    if (rc == 0) rc = bert_copy_to_host(m, opt, BERT_STATE_ADAM_M, mv, err);
    if (rc == 0) rc = bert_copy_to_host(m, opt, BERT_STATE_ADAM_V, mv + m->num_params, err);
    if (rc == 0) {
        memcpy(all, tm, (size_t)d.n * sizeof *all);
        memcpy(all + d.n, tv, (size_t)d.n * sizeof *all);
        char v_step[32], v_epoch[32], v_pos[32], v_seed[32], v_counter[32], path[4096];
        snprintf(v_step, sizeof v_step, "%ld", state->step);
        snprintf(v_epoch, sizeof v_epoch, "%ld", state->epoch);
        snprintf(v_pos, sizeof v_pos, "%" PRId64, state->batches_consumed);
        snprintf(v_seed, sizeof v_seed, "%" PRIu64, state->dropout_seed);
        snprintf(v_counter, sizeof v_counter, "%" PRIu64, state->dropout_counter);
        const char *keys[] = {"step", "epoch", "batches_consumed", "dropout_seed", "dropout_counter"};
        const char *values[] = {v_step, v_epoch, v_pos, v_seed, v_counter};
        snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
        rc = st_write(path, all, 2 * (size_t)d.n, keys, values, 5, err);
    }
    free(tm);
    free(tv);
    free(all);
    free(mv);
    described_free(&d);
    return rc;
}

int bert_load_train_state(bert_model *m, optim_adamw *opt, const char *dir, bert_train_state *state, bp_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st_file *f = st_open(path, err);
    if (!f) return -1;
    described d;
    if (describe(m, &d, err)) { st_close(f); return -1; }
    float *mv = malloc(2 * m->num_params * sizeof(float));
    int rc = mv ? 0 : bp_err_set(err, "out of memory loading the optimizer state");
    for (int which = 0; rc == 0 && which < 2; which++) {
        float *base = mv + (size_t)which * m->num_params;
        for (int i = 0; rc == 0 && i < d.n; i++) {
            char name[320];
            snprintf(name, sizeof name, "%s.%s", which ? "exp_avg_sq" : "exp_avg", d.tensors[i].name);
            const bp_named_tensor *t = st_find(f, name);
            if (!t) rc = bp_err_set(err, "optimizer state lacks tensor '%s' (%s)", name, path);
            else if (t->dtype != BP_F32 || t->nbytes != d.tensors[i].nbytes)
                rc = bp_err_set(err, "optimizer tensor '%s' has the wrong dtype or size (%s)", name, path);
            else memcpy((char *)base + ((char *)d.tensors[i].data - (char *)d.flat), t->data, t->nbytes);
        }
    }
    uint64_t step = 0, epoch = 0, pos = 0;
    if (rc == 0) rc = st_metadata_u64(f, "step", &step, err);
    if (rc == 0) rc = st_metadata_u64(f, "epoch", &epoch, err);
    if (rc == 0) rc = st_metadata_u64(f, "batches_consumed", &pos, err);
    if (rc == 0) rc = st_metadata_u64(f, "dropout_seed", &state->dropout_seed, err);
    if (rc == 0) rc = st_metadata_u64(f, "dropout_counter", &state->dropout_counter, err);
    if (rc == 0) rc = bert_copy_from_host(m, opt, BERT_STATE_ADAM_M, mv, err);
    if (rc == 0) rc = bert_copy_from_host(m, opt, BERT_STATE_ADAM_V, mv + m->num_params, err);
    if (rc == 0) {
        state->step = (long)step;
        state->epoch = (long)epoch;
        state->batches_consumed = (int64_t)pos;
        opt->step = (long)step;
        m->dropout_seed = state->dropout_seed;
        m->dropout_counter = state->dropout_counter;
    }
    free(mv);
    described_free(&d);
    st_close(f);
    return rc;
}
