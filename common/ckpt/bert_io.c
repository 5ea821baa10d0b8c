/* ckpt/bert_io.c — BERT's hyper-parameters to and from config.json (see bert_io.h).
 * Must never: print, or exit. */
#include "ckpt/bert_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic_file.h"

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

int bert_read_config(const char *source, hfc_config *hf, bp_err *err) {
    char config_path[4096];
    snprintf(config_path, sizeof config_path, af_is_dir(source) ? "%s/config.json" : "%s", source);
    return hfc_read(config_path, hf, err);
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
    /* float32 in the model: written as the decimal they stand for (0.1, not 0.10000000149011612) */
    hf->layer_norm_eps = hfc_real_from_float(c->layer_norm_eps);
    hf->hidden_dropout_prob = hfc_real_from_float(c->hidden_dropout_prob);
    hf->attention_probs_dropout_prob = hfc_real_from_float(c->attention_probs_dropout_prob);
    hf->classifier_dropout = hfc_real_from_float(c->classifier_dropout);
    hf->initializer_range = hfc_real_from_float(c->initializer_range);
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
