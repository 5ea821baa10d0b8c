/* eval/metrics.h — evaluation metrics: classification (accuracy, per-class and macro F1,
 * confusion matrix, cross-entropy loss) and SQuAD (the official v1.1 exact match and
 * token F1, v2.0's HasAns/NoAns breakdown, span accuracy).
 *
 * This is library code under the `score` stage.
 * Must never: know about frames or sockets, print to stdout/stderr on its own, or exit.
 * Errors come back as -1 (or NULL) with a one-line "WHAT (WHERE)" in a bp_err. Output goes
 * only to the FILE* a caller passes in. See docs/score.md for the definitions and the
 * conventions chosen where the reference tools leave a choice.
 */
#ifndef BP_METRICS_H
#define BP_METRICS_H
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#include "base/log.h"

/* ---------------------------------------------------------------------------------------
 * Classification
 *
 * An accumulator: add one example at a time (streaming, nothing but the confusion matrix
 * and a loss sum is kept), then read the metrics off it. Classes are 0..num_classes-1.
 * Confusion matrix: row = true label, column = predicted label.
 * ------------------------------------------------------------------------------------ */

typedef struct metrics_cls {
    int num_classes;
    int64_t count;       /* examples added */
    int64_t *confusion;  /* (num_classes, num_classes), row = true, column = predicted */
    double loss_sum;     /* sum of per-example cross-entropy, over loss_count examples */
    int64_t loss_count;  /* examples that came with logits (add_logits) */
} metrics_cls;

/* Per-class numbers, as sklearn's precision_recall_fscore_support with zero_division=0. */
typedef struct metrics_cls_class {
    int64_t support;        /* true examples of the class */
    int64_t predicted;      /* examples predicted as the class */
    int64_t true_positive;
    double precision;       /* tp / predicted, 0 when predicted == 0 */
    double recall;          /* tp / support, 0 when support == 0 */
    double f1;              /* 2pr / (p + r), 0 when p + r == 0 (so 0 for a class that is
                               neither predicted nor present) */
} metrics_cls_class;

/* The most classes an accumulator takes: its confusion matrix is C x C counts (128 MB here). */
#define METRICS_MAX_CLASSES 4096

/* Set up an empty accumulator for 1..METRICS_MAX_CLASSES classes.
 * Returns 0, or -1 with err filled (bad class count, out of memory). Free with
 * metrics_cls_free. */
int metrics_cls_init(metrics_cls *m, int num_classes, bp_err *err);

/* Release what metrics_cls_init allocated; safe on a zeroed or already freed struct. */
void metrics_cls_free(metrics_cls *m);

/* Add one example from its logits: the prediction is the argmax (the first index on
 * ties, as torch.argmax and np.argmax), the loss is its cross-entropy. If predicted_out
 * is not NULL it receives the predicted class.
 * Returns 0, or -1 with err filled when label is out of range or a logit is not finite. */
int metrics_cls_add_logits(metrics_cls *m, const float *logits, int label, int *predicted_out,
                           bp_err *err);

/* Add one example from a predicted class only (no loss contribution).
 * Returns 0, or -1 with err filled when a class is out of range. */
int metrics_cls_add_prediction(metrics_cls *m, int predicted, int label, bp_err *err);

/* Index of the largest of n values, the first one on ties. n >= 1. Can't fail. */
int metrics_argmax(const float *values, int n);

/* Cross-entropy -log softmax(logits)[label], computed in double as
 * logsumexp(logits) - logits[label] with the maximum subtracted first, so large logits
 * neither overflow nor lose the small terms. Can't fail (caller checks label range). */
double metrics_cross_entropy(const float *logits, int num_classes, int label);

/* Fraction of examples predicted right, in [0, 1]; NaN when no example was added. */
double metrics_cls_accuracy(const metrics_cls *m);

/* Counts and precision/recall/F1 of class c (0 <= c < num_classes). Can't fail. */
metrics_cls_class metrics_cls_class_stats(const metrics_cls *m, int c);

/* Unweighted mean over all num_classes classes of precision, recall or F1 (classes with
 * no true and no predicted example count as 0: sklearn with labels=range(num_classes)).
 * NaN when no example was added. */
double metrics_cls_macro_precision(const metrics_cls *m);
double metrics_cls_macro_recall(const metrics_cls *m);
double metrics_cls_macro_f1(const metrics_cls *m);

/* Mean cross-entropy over the examples added with logits; NaN when there were none. */
double metrics_cls_mean_loss(const metrics_cls *m);

/* The summary as a new JSON object (caller owns the reference, json_decref it):
 *   {"count", "accuracy", "macro_precision", "macro_recall", "macro_f1", "eval_loss",
 *    "per_class": [{"label", "precision", "recall", "f1", "support", "predicted"}...],
 *    "confusion_matrix": [[...] per true label]}
 * label_names may be NULL (labels are then "0", "1", ...). NaN values become null;
 * eval_loss is null when no logits were given.
 * Returns NULL with err filled when out of memory. */
json_t *metrics_cls_to_json(const metrics_cls *m, const char *const *label_names, bp_err *err);

/* Write metrics_cls_to_json as one line of JSON plus "\n" to out.
 * Returns 0, or -1 with err filled on a write error. */
int metrics_cls_write_json(const metrics_cls *m, const char *const *label_names, FILE *out,
                           bp_err *err);

/* Write a human-readable report to out (stages pass stderr): accuracy, loss, a table of
 * precision/recall/F1/support per class with the macro average, and the confusion
 * matrix. label_names may be NULL. Returns 0, or -1 with err filled on a write error. */
int metrics_cls_format_table(const metrics_cls *m, const char *const *label_names, FILE *out,
                             bp_err *err);

/* ---- classification predictions (the postprocess stage's output) ---- */

/* Softmax of n logits into probabilities (may alias logits), in double with the maximum
 * subtracted first, so any finite logits give finite probabilities summing to 1.
 * Can't fail (caller checks the logits are finite). */
void metrics_softmax(const float *logits, int n, float *probabilities);

/* Header of a predictions file in Hugging Face run_glue's predict_results format,
 * "index<TAB>prediction", followed, when label_names is not NULL and with_probabilities
 * is set, by one column per class "p_<label>". Returns 0, or -1 with err on a write
 * error. */
int metrics_cls_write_predictions_header(FILE *out, const char *const *label_names,
                                         int num_classes, int with_probabilities, bp_err *err);

/* One line of that file: "<index>\t<label name or class number>" and, when
 * probabilities is not NULL, "\t%.6g" per class. label_names may be NULL.
 * Returns 0, or -1 with err on a write error or a class out of range. */
int metrics_cls_write_prediction_line(FILE *out, int64_t index, int predicted,
                                      const char *const *label_names,
                                      const float *probabilities, int num_classes, bp_err *err);

/* ---------------------------------------------------------------------------------------
 * SQuAD
 *
 * Normalisation as the official evaluation: Python str.lower() (full Unicode, including
 * U+0130 and the final-sigma rule), remove ASCII punctuation (Python's
 * string.punctuation), replace the whole words a/an/the by a space (Python re's Unicode
 * \b), split on Unicode whitespace (Python str.split()) and join with single spaces.
 * Strings are UTF-8; invalid UTF-8 is an error.
 * ------------------------------------------------------------------------------------ */

typedef enum metrics_squad_version {
    METRICS_SQUAD_AUTO = 0, /* score_files/score_json: v2 when the dataset says so */
    METRICS_SQUAD_V1 = 1,   /* evaluate-v1.1: F1 of an empty token list is 0 */
    METRICS_SQUAD_V2 = 2,   /* evaluate-v2.0: F1 of two empty token lists is 1; unanswerable
                               questions have the single gold answer "" */
} metrics_squad_version;

/* The normalised form of text, a new NUL-terminated UTF-8 string the caller frees.
 * Returns NULL with err filled on invalid UTF-8 or out of memory. */
char *metrics_squad_normalize_answer(const char *text, bp_err *err);

/* 1 when prediction and ground_truth normalise to the same string, else 0.
 * Returns -1 with err filled on invalid UTF-8 or out of memory. */
int metrics_squad_exact_match(const char *prediction, const char *ground_truth, bp_err *err);

/* Token F1 of the normalised strings, in [0, 1]: common tokens counted with multiplicity
 * (a multiset intersection), precision = common / predicted tokens, recall = common /
 * gold tokens. Empty token lists: 0 under V1; under V2 1 when both are empty, else 0.
 * Returns a negative value with err filled on invalid UTF-8 or out of memory. */
double metrics_squad_f1(const char *prediction, const char *ground_truth,
                        metrics_squad_version version, bp_err *err);

/* Running totals over questions, summed in the order added (the official scripts sum in
 * dataset order, so adding in dataset order reproduces their numbers to the bit). */
typedef struct metrics_squad_totals {
    metrics_squad_version version;    /* V1 or V2 */
    int64_t total, exact_sum;         /* all questions */
    double f1_sum;
    int64_t has_ans_total, has_ans_exact_sum;  /* questions with gold answers */
    double has_ans_f1_sum;
    int64_t no_ans_total, no_ans_exact_sum;    /* V2 questions without gold answers */
    double no_ans_f1_sum;
    int64_t missing;                  /* questions added without a prediction (scored 0) */
    int64_t span_total, span_exact_sum;        /* metrics_squad_add_span */
} metrics_squad_totals;

/* Start empty totals for version V1 or V2. Can't fail. */
void metrics_squad_totals_init(metrics_squad_totals *t, metrics_squad_version version);

/* Score one question: the maximum EM and F1 over its gold answers. prediction NULL means
 * the question was not answered (counted, scored 0, and counted in `missing`).
 * V1 needs n_golds >= 1. V2: a question with n_golds == 0 is unanswerable (NoAns); golds
 * that normalise to "" are dropped and an empty list becomes {""}, as evaluate-v2.0.
 * If em_out/f1_out are not NULL they receive the question's EM (0/1) and F1 (0..1).
 * Returns 0, or -1 with err filled (invalid UTF-8, V1 question without answers, OOM). */
int metrics_squad_add(metrics_squad_totals *t, const char *prediction,
                      const char *const *golds, int n_golds, int *em_out, double *f1_out,
                      bp_err *err);

/* Span accuracy: count one question whose predicted token span [pred_start, pred_end]
 * matches the gold span exactly (both indexes) or not. Can't fail. */
void metrics_squad_add_span(metrics_squad_totals *t, int64_t pred_start, int64_t pred_end,
                            int64_t gold_start, int64_t gold_end);

/* Percentages (x 100) from the totals. NaN where the matching total is 0. */
typedef struct metrics_squad_summary {
    metrics_squad_version version;
    double exact, f1;                 int64_t total;
    double has_ans_exact, has_ans_f1; int64_t has_ans_total;
    double no_ans_exact, no_ans_f1;   int64_t no_ans_total;
    int64_t missing;
    double span_accuracy;             int64_t span_total;
} metrics_squad_summary;

/* Averages of the totals: 100.0 * sum / total, as the official scripts. Can't fail. */
metrics_squad_summary metrics_squad_summarize(const metrics_squad_totals *t);

/* A stream of predictions whose version is known only at its end (the score stage's case,
 * and train's evaluation): both versions' totals, and whether a question was unanswerable.
 * Scored as v2.0 when asked (force_v2) or when any question is_impossible; as v1.1 otherwise,
 * where a question without gold answers is counted in `unscored` and not scored. */
typedef struct metrics_squad_tally {
    metrics_squad_totals v1, v2;
    int saw_impossible;
    int64_t questions, unscored;
} metrics_squad_tally;

/* Empty totals for both versions. Can't fail. */
void metrics_squad_tally_init(metrics_squad_tally *t);

/* One question into both totals (metrics_squad_add's rules). Returns 0, or -1 with err. */
int metrics_squad_tally_add(metrics_squad_tally *t, const char *prediction, const char *const *golds, int n_golds,
                            int is_impossible, bp_err *err);

/* 1 when the tally is scored as v2.0 (see above). */
int metrics_squad_tally_is_v2(const metrics_squad_tally *t, int force_v2);

/* The summary of the version that applies. Can't fail. */
metrics_squad_summary metrics_squad_tally_summarize(const metrics_squad_tally *t, int force_v2);

/* Score a whole SQuAD dataset (the parsed JSON: {"data": [{"paragraphs": [{"qas":
 * [{"id", "answers": [{"text"}]}]}]}]}) against predictions ({id: text}), in dataset
 * order, like the official scripts. version AUTO picks V2 when the dataset's "version"
 * starts with "v2" or any question has "is_impossible", else V1. Predictions for ids
 * not in the dataset are ignored; questions without a prediction score 0 (see
 * out->missing). Returns 0, or -1 with err filled naming the offending question or
 * field (not SQuAD, duplicate id, non-string prediction, invalid UTF-8, OOM). */
int metrics_squad_score_json(const json_t *dataset, const json_t *predictions,
                             metrics_squad_version version, metrics_squad_summary *out,
                             bp_err *err);

/* Same from two JSON files (loaded with json_load_file; plain JSON only).
 * Returns 0, or -1 with err filled naming the file (and line/column on a parse error). */
int metrics_squad_score_files(const char *dataset_path, const char *predictions_path,
                              metrics_squad_version version, metrics_squad_summary *out,
                              bp_err *err);

/* Print the summary exactly as the official script prints its result: V1 one line
 * {"exact_match": 81.2, "f1": 88.4} (Python json.dumps, shortest float repr); V2 the
 * evaluate-v2.0 dictionary with indent 2 (exact, f1, total, then HasAns_* and NoAns_*
 * when they have questions). Ends with "\n". Returns 0, or -1 with err on a write error
 * or a NaN average (no questions). */
int metrics_squad_write_official(const metrics_squad_summary *s, FILE *out, bp_err *err);

/* Everything in the summary as a new JSON object (caller json_decrefs it):
 * {"version", "exact_match", "f1", "total", "missing", and when present "HasAns_exact",
 * "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total",
 * "span_accuracy", "span_total"}. NaN becomes null. NULL with err on OOM. */
json_t *metrics_squad_summary_to_json(const metrics_squad_summary *s, bp_err *err);

/* Python's per-character rules as implemented here, exposed so that a parity check can
 * compare them with CPython for every code point (scripts/parity-squad-score).
 * Fills lower with str.lower() of cp alone (1 to 3 code points; returns how many) and
 * *flags with METRICS_CHAR_* bits. Can't fail. */
enum {
    METRICS_CHAR_SPACE = 1,          /* str.split() splits on it */
    METRICS_CHAR_WORD = 2,           /* re's \w (so \b sees it as part of a word) */
    METRICS_CHAR_CASED = 4,          /* Unicode Cased (final-sigma rule) */
    METRICS_CHAR_CASE_IGNORABLE = 8, /* Unicode Case_Ignorable (final-sigma rule) */
};
int metrics_squad_char_rules(int32_t cp, int32_t lower[3], unsigned *flags);

/* Format x as Python's repr(float) does (shortest digits that read back to x, exponent
 * form below 1e-4 and from 1e16, always a "." or an exponent): 100.0, 81.20151371807,
 * 1e-05, 1e+16. NaN/inf as Python json.dumps: NaN, Infinity, -Infinity. buf needs 32
 * bytes. Returns buf. */
char *metrics_format_python_float(double x, char buf[32]);

#endif
