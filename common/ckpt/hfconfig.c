/* ckpt/hfconfig.c — config.json <-> hfc_config (see hfconfig.h).
 * Must never: depend on the model (model/bert.h builds its config from hfc_config), print,
 * or exit. */
#include "ckpt/hfconfig.h"

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic_file.h"
#include "base/limits.h"

/* One table drives reading, defaults and writing, so a key cannot be read but forgotten
 * on write. */
typedef enum { K_INT, K_REAL, K_STR } key_type;
static const struct {
    const char *key;
    key_type type;
    size_t offset, size; /* size: string capacity */
    int64_t int_default;
    double real_default;
    const char *str_default;
} hfc_keys[] = {
#define INT_KEY(k, d) {#k, K_INT, offsetof(hfc_config, k), 0, d, 0, NULL}
#define REAL_KEY(k, d) {#k, K_REAL, offsetof(hfc_config, k), 0, 0, d, NULL}
#define STR_KEY(k, d) {#k, K_STR, offsetof(hfc_config, k), sizeof(((hfc_config *)0)->k), 0, 0, d}
    INT_KEY(vocab_size, 30522),
    INT_KEY(hidden_size, 768),
    INT_KEY(num_hidden_layers, 12),
    INT_KEY(num_attention_heads, 12),
    INT_KEY(intermediate_size, 3072),
    INT_KEY(max_position_embeddings, 512),
    INT_KEY(type_vocab_size, 2),
    INT_KEY(pad_token_id, 0),
    STR_KEY(hidden_act, "gelu"),
    STR_KEY(position_embedding_type, "absolute"),
    REAL_KEY(layer_norm_eps, 1e-12),
    REAL_KEY(hidden_dropout_prob, 0.1),
    REAL_KEY(attention_probs_dropout_prob, 0.1),
    REAL_KEY(initializer_range, 0.02),
    STR_KEY(model_type, "bert"),
#undef INT_KEY
#undef REAL_KEY
#undef STR_KEY
};
#define HFC_N_KEYS (sizeof hfc_keys / sizeof hfc_keys[0])

static void hfc_free_labels(hfc_config *cfg) {
    if (cfg->id2label)
        for (int i = 0; i < cfg->num_labels; i++) free(cfg->id2label[i]);
    free(cfg->id2label);
    cfg->id2label = NULL;
    cfg->num_labels = 0;
}

void hfc_free(hfc_config *cfg) {
    hfc_free_labels(cfg);
    free(cfg->variant);
    cfg->variant = NULL;
}

int hfc_set_variant(hfc_config *cfg, const char *json, bp_err *err) {
    free(cfg->variant);
    cfg->variant = NULL;
    if (!json) return 0;
    json_error_t jerr;
    json_t *v = json_loads(json, 0, &jerr);
    int object = json_is_object(v);
    cfg->variant = object ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(v);
    if (!object) return bp_err_set(err, "bertpipe_variant is not a JSON object (config)");
    return cfg->variant ? 0 : bp_err_set(err, "out of memory (config variant)");
}

/* Allocate N empty label slots. */
static int hfc_alloc_labels(hfc_config *cfg, int n, bp_err *err) {
    hfc_free_labels(cfg);
    if (n < 1 || (uint64_t)n > BP_LIMIT_LABELS)
        return bp_err_set(err, "number of labels %d out of range 1..%llu (config)", n, (unsigned long long)BP_LIMIT_LABELS);
    cfg->id2label = calloc((size_t)n, sizeof *cfg->id2label);
    if (!cfg->id2label) return bp_err_set(err, "out of memory (config labels)");
    cfg->num_labels = n;
    return 0;
}

/* "LABEL_i" names, what PretrainedConfig makes when only num_labels is known. */
static int hfc_default_labels(hfc_config *cfg, int n, bp_err *err) {
    if (hfc_alloc_labels(cfg, n, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "LABEL_%d", i);
        if (!(cfg->id2label[i] = strdup(name))) {
            hfc_free_labels(cfg);
            return bp_err_set(err, "out of memory (config labels)");
        }
    }
    return 0;
}

int hfc_set_labels(hfc_config *cfg, const char *const *names, int n, bp_err *err) {
    if (hfc_alloc_labels(cfg, n, err) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (!(cfg->id2label[i] = strdup(names[i]))) {
            hfc_free_labels(cfg);
            return bp_err_set(err, "out of memory (config labels)");
        }
    return 0;
}

int hfc_defaults(hfc_config *cfg, bp_err *err) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < HFC_N_KEYS; i++) {
        char *field = (char *)cfg + hfc_keys[i].offset;
        if (hfc_keys[i].type == K_INT) *(int64_t *)field = hfc_keys[i].int_default;
        else if (hfc_keys[i].type == K_REAL) *(double *)field = hfc_keys[i].real_default;
        else snprintf(field, hfc_keys[i].size, "%s", hfc_keys[i].str_default);
    }
    cfg->classifier_dropout = -1;
    return hfc_default_labels(cfg, 2, err);
}

/* Labels: id2label (keys "0".."n-1"), else label2id, else num_labels, else 2. */
static int hfc_read_labels(const char *path, json_t *root, hfc_config *cfg, bp_err *err) {
    json_t *id2label = json_object_get(root, "id2label"), *label2id = json_object_get(root, "label2id");
    json_t *num = json_object_get(root, "num_labels");
    json_t *map = json_is_object(id2label) ? id2label : json_is_object(label2id) ? label2id : NULL;
    if (num && !json_is_null(num) && (!json_is_integer(num) || json_integer_value(num) < 1))
        return bp_err_set(err, "num_labels is not a positive integer (%s)", path);
    /* Checked before it becomes an int: 4294967298 would otherwise read as 2 labels. */
    if (num && json_is_integer(num) &&
        bp_check_limit((uint64_t)json_integer_value(num), BP_LIMIT_LABELS, "", "num_labels", path, err) != 0)
        return -1;
    if (!map) return hfc_default_labels(cfg, num && json_is_integer(num) ? (int)json_integer_value(num) : 2, err);
    int n = (int)json_object_size(map);
    if (num && json_is_integer(num) && json_integer_value(num) != n)
        return bp_err_set(err, "num_labels %lld disagrees with the %d entries of %s (%s)",
                          (long long)json_integer_value(num), n, map == id2label ? "id2label" : "label2id", path);
    if (hfc_alloc_labels(cfg, n, err) != 0) return -1;
    const char *key;
    json_t *value;
    json_object_foreach(map, key, value) {
        const char *name = map == id2label ? json_string_value(value) : key;
        char *end = NULL;
        long id = map == id2label ? strtol(key, &end, 10) : json_is_integer(value) ? (long)json_integer_value(value) : -1;
        int bad_key = map == id2label && (!*key || *end);
        if (!name || bad_key || id < 0 || id >= n || cfg->id2label[id]) {
            hfc_free(cfg);
            return bp_err_set(err, "%s must map the ids 0..%d to label names, once each (%s, label %s)",
                              map == id2label ? "id2label" : "label2id", n - 1, path, key);
        }
        if (!(cfg->id2label[id] = strdup(name))) {
            hfc_free(cfg);
            return bp_err_set(err, "out of memory (%s)", path);
        }
    }
    return 0;
}

static int hfc_validate(const char *path, const hfc_config *cfg, bp_err *err) {
    const int64_t *positive[] = {&cfg->vocab_size, &cfg->hidden_size, &cfg->num_hidden_layers,
                                 &cfg->num_attention_heads, &cfg->intermediate_size,
                                 &cfg->max_position_embeddings, &cfg->type_vocab_size};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (*positive[i] < 1 || *positive[i] > (int64_t)1 << 31)
            return bp_err_set(err, "%s must be a positive integer, got %lld (%s)", hfc_keys[i].key,
                              (long long)*positive[i], path);
    /* What bert_create will allocate: embeddings, L layers (4 H x H attention matrices, two
     * H x I feed-forward ones, biases and norms), pooler. In doubles: no overflow. */
    double H = (double)cfg->hidden_size, I = (double)cfg->intermediate_size;
    double parameters = H * (double)(cfg->vocab_size + cfg->max_position_embeddings + cfg->type_vocab_size) +
                        (double)cfg->num_hidden_layers * (4 * H * H + 2 * H * I + 9 * H + I) + H * H + H +
                        (double)cfg->num_labels * (H + 1);
    if (parameters > (double)BP_LIMIT_MODEL_PARAMETERS)
        return bp_check_limit(parameters > 1e19 ? UINT64_MAX : (uint64_t)parameters, BP_LIMIT_MODEL_PARAMETERS, "",
                              "the parameter count it implies", path, err);
    if (cfg->hidden_size % cfg->num_attention_heads != 0)
        return bp_err_set(err, "hidden_size %lld is not a multiple of num_attention_heads %lld (%s)",
                          (long long)cfg->hidden_size, (long long)cfg->num_attention_heads, path);
    if (strcmp(cfg->hidden_act, "gelu") != 0)
        return bp_err_set(err, "hidden_act \"%s\" not supported: bertpipe implements \"gelu\" (exact erf) only (%s)",
                          cfg->hidden_act, path);
    if (strcmp(cfg->position_embedding_type, "absolute") != 0)
        return bp_err_set(err, "position_embedding_type \"%s\" not supported: only \"absolute\" (%s)",
                          cfg->position_embedding_type, path);
    if (cfg->model_type[0] && strcmp(cfg->model_type, "bert") != 0)
        return bp_err_set(err, "model_type \"%s\" is not \"bert\" (%s)", cfg->model_type, path);
    if (!(cfg->layer_norm_eps > 0))
        return bp_err_set(err, "layer_norm_eps must be positive (%s)", path);
    const double probs[] = {cfg->hidden_dropout_prob, cfg->attention_probs_dropout_prob};
    for (int i = 0; i < 2; i++)
        if (!(probs[i] >= 0 && probs[i] < 1))
            return bp_err_set(err, "%s must be in [0, 1) (%s)", i ? "attention_probs_dropout_prob" : "hidden_dropout_prob", path);
    if (cfg->pad_token_id < 0 || cfg->pad_token_id >= cfg->vocab_size)
        return bp_err_set(err, "pad_token_id %lld outside the vocabulary of %lld (%s)", (long long)cfg->pad_token_id,
                          (long long)cfg->vocab_size, path);
    return 0;
}

static int hfc_read_keys(const char *path, json_t *root, hfc_config *cfg, bp_err *err) {
    for (size_t i = 0; i < HFC_N_KEYS; i++) {
        json_t *value = json_object_get(root, hfc_keys[i].key);
        char *field = (char *)cfg + hfc_keys[i].offset;
        if (!value || (json_is_null(value) && hfc_keys[i].type != K_STR)) continue;
        if (hfc_keys[i].type == K_INT) {
            if (!json_is_integer(value)) return bp_err_set(err, "%s is not an integer (%s)", hfc_keys[i].key, path);
            *(int64_t *)field = json_integer_value(value);
        } else if (hfc_keys[i].type == K_REAL) {
            if (!json_is_number(value)) return bp_err_set(err, "%s is not a number (%s)", hfc_keys[i].key, path);
            *(double *)field = json_number_value(value);
        } else {
            if (!json_is_string(value) || strlen(json_string_value(value)) >= hfc_keys[i].size)
                return bp_err_set(err, "%s is not a string of at most %zu bytes (%s)", hfc_keys[i].key,
                                  hfc_keys[i].size - 1, path);
            snprintf(field, hfc_keys[i].size, "%s", json_string_value(value));
        }
    }
    json_t *dropout = json_object_get(root, "classifier_dropout");
    if (dropout && !json_is_null(dropout)) {
        if (!json_is_number(dropout) || json_number_value(dropout) < 0 || json_number_value(dropout) >= 1)
            return bp_err_set(err, "classifier_dropout must be null or in [0, 1) (%s)", path);
        cfg->classifier_dropout = json_number_value(dropout);
    }
    json_t *problem = json_object_get(root, "problem_type");
    if (problem && !json_is_null(problem)) {
        if (!json_is_string(problem) || strlen(json_string_value(problem)) >= sizeof cfg->problem_type)
            return bp_err_set(err, "problem_type is not a short string (%s)", path);
        snprintf(cfg->problem_type, sizeof cfg->problem_type, "%s", json_string_value(problem));
    }
    json_t *variant = json_object_get(root, "bertpipe_variant");
    if (variant && !json_is_null(variant)) {
        if (!json_is_object(variant)) return bp_err_set(err, "bertpipe_variant is not an object (%s)", path);
        if (!(cfg->variant = json_dumps(variant, JSON_COMPACT | JSON_SORT_KEYS)))
            return bp_err_set(err, "out of memory (%s)", path);
    }
    json_t *archs = json_object_get(root, "architectures");
    if (archs && !json_is_null(archs)) {
        json_t *first = json_is_array(archs) ? json_array_get(archs, 0) : NULL;
        if (json_is_array(archs) && json_array_size(archs) == 0) return 0;
        if (!json_is_string(first) || strlen(json_string_value(first)) >= sizeof cfg->architecture)
            return bp_err_set(err, "architectures is not a list of class names (%s)", path);
        snprintf(cfg->architecture, sizeof cfg->architecture, "%s", json_string_value(first));
    }
    return 0;
}

int hfc_read(const char *path, hfc_config *cfg, bp_err *err) {
    if (bp_check_file_size(path, BP_LIMIT_JSON_FILE_BYTES, "the config file", err) != 0) {
        memset(cfg, 0, sizeof *cfg);
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        memset(cfg, 0, sizeof *cfg);
        return bp_err_set(err, "cannot parse config: %s (%s line %d)", jerr.text, path, jerr.line);
    }
    int rc = -1;
    if (hfc_defaults(cfg, err) != 0) goto out;
    /* Google's bert_config.json has no model_type; an absent one is not an error. */
    cfg->model_type[0] = '\0';
    if (!json_is_object(root)) {
        bp_err_set(err, "config is not a JSON object (%s)", path);
        goto out;
    }
    if (hfc_read_keys(path, root, cfg, err) != 0 || hfc_read_labels(path, root, cfg, err) != 0 ||
        hfc_validate(path, cfg, err) != 0)
        goto out;
    rc = 0;
out:
    json_decref(root);
    if (rc != 0) hfc_free(cfg);
    return rc;
}

/* Significant digits of the shortest decimal that reads back to x (1..17). */
static int shortest_digits(double x) {
    for (int p = 1; p < 17; p++) {
        char text[40];
        snprintf(text, sizeof text, "%.*g", p, x);
        if (strtod(text, NULL) == x) return p;
    }
    return 17;
}

double hfc_real_from_float(float x) {
    for (int p = 1; p < 9; p++) {
        char text[40];
        snprintf(text, sizeof text, "%.*g", p, (double)x);
        if ((float)strtod(text, NULL) == x) return strtod(text, NULL);
    }
    return (double)x;
}

/* The dump's precision: as many digits as the real that needs the most, anywhere in the tree
 * (the bertpipe_variant block's too). %g drops trailing zeros, so every other real still prints
 * in its own shortest form (0.1, 1e-12), where one fixed precision of 17 would print
 * 0.10000000000000001. */
static int real_precision(const json_t *v) {
    int digits = 1;
    if (json_is_real(v)) return shortest_digits(json_real_value(v));
    if (json_is_array(v))
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = real_precision(json_array_get(v, i));
            if (d > digits) digits = d;
        }
    if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member) {
            int d = real_precision(member);
            if (d > digits) digits = d;
        }
    }
    return digits;
}

int hfc_write(const char *path, const hfc_config *cfg, bp_err *err) {
    if (hfc_validate(path, cfg, err) != 0) return -1;
    json_t *root = json_object(), *id2label = json_object(), *label2id = json_object();
    int failed = !root || !id2label || !label2id;
    for (size_t i = 0; i < HFC_N_KEYS && !failed; i++) {
        const char *field = (const char *)cfg + hfc_keys[i].offset;
        json_t *value = hfc_keys[i].type == K_INT ? json_integer(*(const int64_t *)field)
                        : hfc_keys[i].type == K_REAL ? json_real(*(const double *)field)
                                                     : json_string(field);
        failed |= json_object_set_new(root, hfc_keys[i].key, value);
    }
    if (!cfg->model_type[0]) failed |= json_object_set_new(root, "model_type", json_string("bert"));
    failed |= json_object_set_new(root, "classifier_dropout",
                                  cfg->classifier_dropout < 0 ? json_null() : json_real(cfg->classifier_dropout));
    failed |= json_object_set_new(root, "problem_type",
                                  cfg->problem_type[0] ? json_string(cfg->problem_type) : json_null());
    if (cfg->architecture[0])
        failed |= json_object_set_new(root, "architectures", json_pack("[s]", cfg->architecture));
    if (cfg->variant) {
        json_t *variant = json_loads(cfg->variant, 0, NULL);
        failed |= !json_is_object(variant) || json_object_set_new(root, "bertpipe_variant", variant);
    }
    for (int i = 0; i < cfg->num_labels && !failed; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        failed |= json_object_set_new(id2label, id, json_string(cfg->id2label[i]));
        failed |= json_object_set_new(label2id, cfg->id2label[i], json_integer(i));
    }
    if (!failed && (int)json_object_size(label2id) != cfg->num_labels) {
        json_decref(root);
        json_decref(id2label);
        json_decref(label2id);
        return bp_err_set(err, "label names are not unique (%s)", path);
    }
    failed |= json_object_set_new(root, "id2label", id2label);
    failed |= json_object_set_new(root, "label2id", label2id);
    failed |= json_object_set_new(root, "torch_dtype", json_string("float32"));
    failed |= json_object_set_new(root, "use_cache", json_true());
    char *text = failed ? NULL
                        : json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(real_precision(root)));
    json_decref(root);
    if (!text) return bp_err_set(err, "cannot build config JSON: out of memory or a label is not UTF-8 (%s)", path);
    af_file out;
    if (af_open(&out, path, err) != 0) {
        free(text);
        return -1;
    }
    int write_failed = fputs(text, out.fp) < 0 || fputc('\n', out.fp) == EOF;
    free(text);
    if (write_failed) {
        bp_err_set(err, "cannot write: %s (%s)", strerror(errno), path);
        af_abort(&out);
        return -1;
    }
    return af_commit(&out, err);
}

int hfc_check_vocab(const hfc_config *cfg, const char *config_path, const char *vocab_path, int64_t *vocab_lines,
                    bp_err *err) {
    FILE *fp = fopen(vocab_path, "rb");
    if (!fp) return bp_err_set(err, "cannot open vocabulary: %s (%s)", strerror(errno), vocab_path);
    int64_t lines = 0;
    int c, last = '\n';
    while ((c = getc(fp)) != EOF) {
        if (c == '\n') lines++;
        last = c;
    }
    int read_error = ferror(fp);
    fclose(fp);
    if (read_error) return bp_err_set(err, "cannot read vocabulary (%s)", vocab_path);
    if (last != '\n') lines++;
    if (vocab_lines) *vocab_lines = lines;
    if (lines > cfg->vocab_size)
        return bp_err_set(err, "config/vocab mismatch: vocab.txt has %lld tokens but vocab_size is %lld (%s, %s)",
                          (long long)lines, (long long)cfg->vocab_size, vocab_path, config_path);
    return lines < cfg->vocab_size ? 1 : 0;
}
