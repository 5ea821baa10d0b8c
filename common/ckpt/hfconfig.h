/* ckpt/hfconfig.h — BERT hyper-parameters from and to Hugging Face `config.json` (and Google's
 * `bert_config.json`, which uses the same keys).
 *
 * A plain struct of values: the model code builds its own config from it. Absent keys take
 * BertConfig's defaults, as transformers does.
 * Must never: depend on the model, print, or exit.
 */
#ifndef BP_HFCONFIG_H
#define BP_HFCONFIG_H
#include <stdint.h>

#include "base/log.h"

typedef struct hfc_config {
    int64_t vocab_size;                  /* 30522 */
    int64_t hidden_size;                 /* 768 */
    int64_t num_hidden_layers;           /* 12 */
    int64_t num_attention_heads;         /* 12 */
    int64_t intermediate_size;           /* 3072 */
    int64_t max_position_embeddings;     /* 512 */
    int64_t type_vocab_size;             /* 2 */
    int64_t pad_token_id;                /* 0 */
    char hidden_act[32];                 /* "gelu" (exact erf), the only one accepted */
    char position_embedding_type[32];    /* "absolute", the only one accepted */
    double layer_norm_eps;               /* 1e-12 */
    double hidden_dropout_prob;          /* 0.1 */
    double attention_probs_dropout_prob; /* 0.1 */
    double initializer_range;            /* 0.02 */
    double classifier_dropout;           /* < 0 when null: the head then uses hidden_dropout_prob */
    int num_labels;                      /* 2; = number of id2label entries */
    char **id2label;                     /* num_labels names, owned; default "LABEL_i" */
    char problem_type[48];               /* "" when null; else e.g. "single_label_classification" */
    char architecture[64];               /* first of "architectures"; "" when absent */
    char model_type[32];                 /* "bert" ("" accepted on read for bert_config.json) */
    char *variant;                       /* the "bertpipe_variant" object (a model variant's body,
                                            head, loss, sizes, freezing; transformers ignores it) as
                                            compact JSON text, owned; NULL when absent */
} hfc_config;

/* Fill CFG with BertConfig's defaults (2 labels "LABEL_0", "LABEL_1", no architecture,
 * model_type "bert"). Returns 0, or -1 with err when out of memory. Free with hfc_free. */
int hfc_defaults(hfc_config *cfg, bp_err *err);

/* Parse PATH (config.json or bert_config.json) into CFG, defaults for absent keys, unknown
 * keys ignored. Validates: positive sizes, hidden_size divisible by num_attention_heads,
 * hidden_act "gelu", position_embedding_type "absolute", model_type "bert" when present,
 * id2label keys 0..n-1, num_labels agreeing with id2label when both are given.
 * Returns 0, or -1 with err = one line naming the file and key (CFG then holds nothing to
 * free). */
int hfc_read(const char *path, hfc_config *cfg, bp_err *err);

/* Replace the labels with N copies of NAMES (e.g. a dataset's label names). Returns 0 or -1
 * (out of memory, N < 1). */
int hfc_set_labels(hfc_config *cfg, const char *const *names, int n, bp_err *err);

/* The double a float32 hyper-parameter means: the shortest decimal that reads back to the same
 * float (0.1f -> 0.1, not 0.10000000149011612), so config.json says what the user wrote and
 * torch's float32 of it is the model's value again. Can't fail. */
double hfc_real_from_float(float x);

/* Write CFG as a config.json transformers loads: model_type "bert", architectures
 * [cfg->architecture] (e.g. "BertForSequenceClassification" or "BertForQuestionAnswering";
 * omitted when empty), id2label/label2id and every hyper-parameter, keys sorted, indent 2,
 * as save_pretrained writes; reals in their shortest exact form (0.1, 1e-12). Atomic (temporary
 * file + rename). Returns 0 or -1 with err. */
int hfc_write(const char *path, const hfc_config *cfg, bp_err *err);

/* Replace the variant block with a copy of JSON (an object's text; NULL removes it). Returns 0,
 * or -1 with err when it is not a JSON object or out of memory. */
int hfc_set_variant(hfc_config *cfg, const char *json, bp_err *err);

/* Free the label names and the variant block; CFG can be refilled afterwards. NULL-safe. */
void hfc_free(hfc_config *cfg);

/* Count the tokens of VOCAB_PATH (one per line, as BertTokenizer reads it: a last line
 * without newline counts) into *vocab_lines and compare with cfg->vocab_size.
 * Returns 0 when equal; 1 when vocab.txt has fewer tokens than the embedding has rows
 * (legal: some models pad the embedding; the caller may warn); -1 with err naming both
 * files when vocab.txt has more tokens than the embedding (ids would index past it) or
 * cannot be read. */
int hfc_check_vocab(const hfc_config *cfg, const char *config_path, const char *vocab_path,
                    int64_t *vocab_lines, bp_err *err);

#endif
