/* test_metrics.c — unit tests for common/eval/metrics.c: classification metrics on a
 * hand-counted confusion matrix, cross-entropy in closed form, and the SQuAD metrics
 * against tests/fixtures/squad/expected.json (made by tests/reference/squad_metric_ref.py,
 * an independent Python implementation of the published evaluation).
 *
 * Fixtures are found relative to this file's path (or $BP_FIXTURES_DIR), never under
 * /work/shared.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/metrics.h"
#include "fixture_path.h"
#include "tap.h"

/* Captures what a function writes to a FILE* (a tmpfile), NUL-terminated, malloc'd. */
static char *slurp(FILE *f) {
    long size = ftell(f);
    char *text = calloc((size_t)(size > 0 ? size : 0) + 1, 1);
    rewind(f);
    if (text && size > 0 && fread(text, 1, (size_t)size, f) != (size_t)size) text[0] = '\0';
    fclose(f);
    return text;
}

/* ---- classification ------------------------------------------------------------ */

static void test_classification_counts(void) {
    /* 4 classes, class 3 never appears. true -> predicted:
     * 0->0 0->0 0->1 0->2 | 1->1 1->2 | 2->2 2->2 2->0 2->2 */
    static const int truth[] = {0, 0, 0, 0, 1, 1, 2, 2, 2, 2};
    static const int guess[] = {0, 0, 1, 2, 1, 2, 2, 2, 0, 2};
    metrics_cls m;
    bp_err err;
    TAP_EQ_INT(metrics_cls_init(&m, 4, &err), 0, "cls: init 4 classes");
    for (int i = 0; i < 10; i++)
        if (metrics_cls_add_prediction(&m, guess[i], truth[i], &err)) tap_diag("%s", err.msg);
    TAP_EQ_INT(m.count, 10, "cls: 10 examples counted");
    TAP_NEAR(metrics_cls_accuracy(&m), 6.0 / 10.0, 1e-15, "cls: accuracy 6/10");
    static const int64_t row0[] = {2, 1, 1, 0};
    int same = 1;
    for (int p = 0; p < 4; p++) same &= m.confusion[p] == row0[p];
    tap_ok(same, "cls: confusion row of class 0 is [2 1 1 0] (row = true label)");
    TAP_EQ_INT(m.confusion[2 * 4 + 0], 1, "cls: confusion[true 2][pred 0] = 1");

    metrics_cls_class c0 = metrics_cls_class_stats(&m, 0);
    TAP_NEAR(c0.precision, 2.0 / 3.0, 1e-15, "cls: class 0 precision 2/3");
    TAP_NEAR(c0.recall, 2.0 / 4.0, 1e-15, "cls: class 0 recall 2/4");
    TAP_NEAR(c0.f1, 4.0 / 7.0, 1e-15, "cls: class 0 F1 = 2pr/(p+r) = 4/7");
    TAP_EQ_INT(c0.support, 4, "cls: class 0 support 4");
    metrics_cls_class c2 = metrics_cls_class_stats(&m, 2);
    TAP_NEAR(c2.precision, 3.0 / 5.0, 1e-15, "cls: class 2 precision 3/5");
    TAP_NEAR(c2.recall, 3.0 / 4.0, 1e-15, "cls: class 2 recall 3/4");
    TAP_NEAR(c2.f1, 2.0 / 3.0, 1e-15, "cls: class 2 F1 2/3");
    metrics_cls_class c3 = metrics_cls_class_stats(&m, 3);
    tap_ok(c3.precision == 0.0 && c3.recall == 0.0 && c3.f1 == 0.0 && c3.support == 0,
           "cls: a class neither present nor predicted has P = R = F1 = 0");
    double macro = (4.0 / 7.0 + 0.5 + 2.0 / 3.0 + 0.0) / 4.0;
    TAP_NEAR(metrics_cls_macro_f1(&m), macro, 1e-15, "cls: macro F1 averages all 4 classes");
    TAP_NEAR(metrics_cls_macro_precision(&m), (2.0 / 3.0 + 0.5 + 0.6) / 4.0, 1e-15,
             "cls: macro precision");
    tap_ok(isnan(metrics_cls_mean_loss(&m)), "cls: no logits -> mean loss is NaN");

    TAP_EQ_INT(metrics_cls_add_prediction(&m, 4, 0, &err), -1, "cls: predicted class 4 of 4 refused");
    tap_ok(strstr(err.msg, "outside 0..3") != NULL, "cls: error names the range: %s", err.msg);
    TAP_EQ_INT(metrics_cls_add_prediction(&m, 0, -1, &err), -1, "cls: negative label refused");
    TAP_EQ_INT(m.count, 10, "cls: refused examples are not counted");

    static const char *const names[] = {"negative", "neutral", "positive", "mixed"};
    json_t *summary = metrics_cls_to_json(&m, names, &err);
    tap_ok(summary != NULL, "cls: JSON summary built");
    if (summary) {
        TAP_NEAR(json_real_value(json_object_get(summary, "accuracy")), 0.6, 1e-15, "cls: JSON accuracy");
        tap_ok(json_is_null(json_object_get(summary, "eval_loss")), "cls: JSON eval_loss null without logits");
        json_t *per_class = json_object_get(summary, "per_class");
        TAP_EQ_STR(json_string_value(json_object_get(json_array_get(per_class, 2), "label")), "positive",
                   "cls: JSON per-class label name");
        json_t *row2 = json_array_get(json_object_get(summary, "confusion_matrix"), 2);
        TAP_EQ_INT(json_integer_value(json_array_get(row2, 0)), 1, "cls: JSON confusion[2][0]");
        json_decref(summary);
    }
    FILE *f = tmpfile();
    int rc = metrics_cls_format_table(&m, names, f, &err);
    char *table = slurp(f);
    TAP_EQ_INT(rc, 0, "cls: table written");
    tap_ok(table && strstr(table, "macro avg") && strstr(table, "positive") &&
               strstr(table, "accuracy  0.6000"),
           "cls: table has the classes, accuracy and macro average");
    free(table);
    f = tmpfile();
    rc = metrics_cls_write_json(&m, NULL, f, &err);
    char *line = slurp(f);
    tap_ok(rc == 0 && line && line[0] == '{' && strchr(line, '\n') == line + strlen(line) - 1,
           "cls: write_json gives one line of JSON");
    tap_ok(line && strstr(line, "\"label\": \"3\""), "cls: default label names are the indexes");
    free(line);
    metrics_cls_free(&m);
    metrics_cls_free(&m); /* documented as safe */

    TAP_EQ_INT(metrics_cls_init(&m, 0, &err), -1, "cls: zero classes refused");
}

static void test_classification_loss(void) {
    static const float even[2] = {0.0f, 0.0f};
    TAP_NEAR(metrics_cross_entropy(even, 2, 0), log(2.0), 1e-15, "loss: equal logits -> ln 2");
    static const float huge[2] = {1000.0f, 0.0f};
    TAP_NEAR(metrics_cross_entropy(huge, 2, 1), 1000.0, 1e-9, "loss: logit gap 1000, wrong class -> 1000");
    TAP_NEAR(metrics_cross_entropy(huge, 2, 0), 0.0, 1e-15, "loss: logit gap 1000, right class -> 0");
    static const float low[3] = {-1000.0f, -1000.0f, -1000.0f};
    TAP_NEAR(metrics_cross_entropy(low, 3, 2), log(3.0), 1e-12, "loss: logits -1000 do not underflow -> ln 3");
    static const float three[3] = {1.0f, 2.0f, 3.0f};
    double want = log(exp(-2.0) + exp(-1.0) + 1.0);
    TAP_NEAR(metrics_cross_entropy(three, 3, 2), want, 1e-15, "loss: [1 2 3] label 2 closed form");
    TAP_NEAR(metrics_cross_entropy(three, 3, 0), want + 2.0, 1e-14, "loss: [1 2 3] label 0 closed form");

    static const float tie[4] = {0.5f, 2.0f, 2.0f, -1.0f};
    TAP_EQ_INT(metrics_argmax(tie, 4), 1, "argmax: first index on ties");

    metrics_cls m;
    bp_err err;
    metrics_cls_init(&m, 3, &err);
    int predicted = -1;
    TAP_EQ_INT(metrics_cls_add_logits(&m, three, 2, &predicted, &err), 0, "loss: add logits");
    TAP_EQ_INT(predicted, 2, "loss: prediction is the argmax");
    metrics_cls_add_logits(&m, three, 0, NULL, &err);
    TAP_NEAR(metrics_cls_mean_loss(&m), (want + want + 2.0) / 2.0, 1e-14, "loss: mean over examples");
    float bad[3] = {0.0f, NAN, 1.0f};
    TAP_EQ_INT(metrics_cls_add_logits(&m, bad, 0, NULL, &err), -1, "loss: NaN logit refused");
    tap_ok(strstr(err.msg, "logit 1") != NULL, "loss: error names the logit: %s", err.msg);
    TAP_EQ_INT(m.count, 2, "loss: refused example not counted");
    metrics_cls_free(&m);

    metrics_cls empty;
    metrics_cls_init(&empty, 2, &err);
    tap_ok(isnan(metrics_cls_accuracy(&empty)) && isnan(metrics_cls_macro_f1(&empty)),
           "cls: no examples -> accuracy and macro F1 NaN");
    json_t *summary = metrics_cls_to_json(&empty, NULL, &err);
    tap_ok(summary && json_is_null(json_object_get(summary, "accuracy")), "cls: NaN accuracy is JSON null");
    json_decref(summary);
    metrics_cls_free(&empty);
}

static void test_classification_predictions(void) {
    float probabilities[3];
    static const float two[2] = {0.0f, 1.0986122886681098f}; /* ln 3 */
    metrics_softmax(two, 2, probabilities);
    TAP_NEAR(probabilities[0], 0.25, 1e-7, "softmax [0, ln 3] -> 0.25");
    TAP_NEAR(probabilities[1], 0.75, 1e-7, "softmax [0, ln 3] -> 0.75");
    static const float huge[3] = {1000.0f, 999.0f, -1000.0f};
    metrics_softmax(huge, 3, probabilities);
    tap_ok(isfinite(probabilities[0]) && fabs(probabilities[0] + probabilities[1] + probabilities[2] - 1) < 1e-6 &&
               fabs(probabilities[1] / probabilities[0] - exp(-1.0)) < 1e-6,
           "softmax of logits near 1000 stays finite and exact");

    static const char *const names[] = {"negative", "positive"};
    FILE *f = tmpfile();
    bp_err err;
    float p[2] = {0.25f, 0.75f};
    int rc = metrics_cls_write_predictions_header(f, names, 2, 1, &err) ||
             metrics_cls_write_prediction_line(f, 0, 1, names, p, 2, &err) ||
             metrics_cls_write_prediction_line(f, 1, 0, NULL, NULL, 2, &err);
    char *text = slurp(f);
    TAP_EQ_INT(rc, 0, "predictions file written");
    TAP_EQ_STR(text, "index\tprediction\tp_negative\tp_positive\n0\tpositive\t0.25\t0.75\n1\t0\n",
               "predictions file in run_glue's index<TAB>prediction layout, probabilities appended");
    free(text);
    f = tmpfile();
    TAP_EQ_INT(metrics_cls_write_prediction_line(f, 7, 2, names, NULL, 2, &err), -1,
               "a predicted class out of range is refused");
    fclose(f);
    tap_ok(strstr(err.msg, "example 7") != NULL, "error names the example: %s", err.msg);
}

/* ---- SQuAD -------------------------------------------------------------------------- */

static void test_squad_strings(const json_t *expected) {
    bp_err err;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(expected, "normalize"), i, item) {
        const char *text = json_string_value(json_array_get(item, 0));
        char *norm = metrics_squad_normalize_answer(text, &err);
        TAP_EQ_STR(norm, json_string_value(json_array_get(item, 1)), "normalize case %zu", i);
        free(norm);
    }
    json_array_foreach(json_object_get(expected, "pairs"), i, item) {
        const char *pred = json_string_value(json_array_get(item, 0));
        const char *gold = json_string_value(json_array_get(item, 1));
        TAP_EQ_INT(metrics_squad_exact_match(pred, gold, &err),
                   json_integer_value(json_array_get(item, 2)), "EM pair %zu (\"%s\" vs \"%s\")", i, pred, gold);
        TAP_NEAR(metrics_squad_f1(pred, gold, METRICS_SQUAD_V1, &err),
                 json_real_value(json_array_get(item, 3)), 1e-9, "F1 v1.1 pair %zu", i);
        TAP_NEAR(metrics_squad_f1(pred, gold, METRICS_SQUAD_V2, &err),
                 json_real_value(json_array_get(item, 4)), 1e-9, "F1 v2.0 pair %zu", i);
    }
    json_array_foreach(json_object_get(expected, "float_repr"), i, item) {
        char buf[32];
        TAP_EQ_STR(metrics_format_python_float(json_number_value(json_array_get(item, 0)), buf),
                   json_string_value(json_array_get(item, 1)), "Python float repr case %zu", i);
    }
    char bad[] = {'o', 'k', (char)0xC3, 0};
    tap_ok(metrics_squad_normalize_answer(bad, &err) == NULL && strstr(err.msg, "invalid UTF-8"),
           "normalize: truncated UTF-8 refused: %s", err.msg);
    TAP_EQ_INT(metrics_squad_exact_match("x", bad, &err), -1, "EM: invalid UTF-8 gold refused");
    tap_ok(metrics_squad_f1(bad, "x", METRICS_SQUAD_V1, &err) < 0, "F1: invalid UTF-8 prediction refused");
}

/* Scores every question of a fixture through metrics_squad_add and compares each
 * question's EM/F1 with the reference's. */
static void check_per_question(const char *dataset_name, const char *predictions_name,
                               const json_t *want, metrics_squad_version version) {
    json_error_t jerr;
    json_t *dataset = json_load_file(fixture(dataset_name), 0, &jerr);
    json_t *predictions = json_load_file(fixture(predictions_name), 0, &jerr);
    if (!tap_ok(dataset && predictions, "load %s and %s", dataset_name, predictions_name)) {
        tap_diag("%s", jerr.text);
        return;
    }
    metrics_squad_totals t;
    metrics_squad_totals_init(&t, version);
    int all_equal = 1, n = 0;
    size_t a, p, q;
    json_t *article, *paragraph, *qa;
    json_array_foreach(json_object_get(dataset, "data"), a, article) {
        json_array_foreach(json_object_get(article, "paragraphs"), p, paragraph) {
            json_array_foreach(json_object_get(paragraph, "qas"), q, qa) {
                const char *id = json_string_value(json_object_get(qa, "id"));
                json_t *answers = json_object_get(qa, "answers");
                const char *golds[8];
                int n_golds = (int)json_array_size(answers);
                for (int g = 0; g < n_golds && g < 8; g++)
                    golds[g] = json_string_value(json_object_get(json_array_get(answers, (size_t)g), "text"));
                int em;
                double f1;
                bp_err err;
                const char *pred = json_string_value(json_object_get(predictions, id));
                if (metrics_squad_add(&t, pred, golds, n_golds, &em, &f1, &err)) {
                    tap_diag("%s: %s", id, err.msg);
                    all_equal = 0;
                    continue;
                }
                json_t *w = json_object_get(want, id);
                if (em != json_integer_value(json_array_get(w, 0)) ||
                    fabs(f1 - json_real_value(json_array_get(w, 1))) > 1e-9) {
                    tap_diag("%s: got EM %d F1 %.17g", id, em, f1);
                    all_equal = 0;
                }
                n++;
            }
        }
    }
    tap_ok(all_equal && n == (int)json_object_size(want), "%s: all %d questions' EM and F1 equal the reference",
           dataset_name, n);
    json_decref(dataset);
    json_decref(predictions);
}

static void test_squad_files(const json_t *expected) {
    bp_err err;
    metrics_squad_summary s;
    json_t *v1 = json_object_get(expected, "v1"), *want = json_object_get(v1, "result");
    int rc = metrics_squad_score_files(fixture("tiny-v1.json"), fixture("tiny-v1-predictions.json"),
                                       METRICS_SQUAD_AUTO, &s, &err);
    if (!tap_ok(rc == 0, "v1.1 fixture scored")) tap_diag("%s", err.msg);
    TAP_EQ_INT(s.version, METRICS_SQUAD_V1, "v1.1 fixture detected as v1.1");
    TAP_NEAR(s.exact, json_real_value(json_object_get(want, "exact_match")), 1e-9, "v1.1 exact_match = reference");
    TAP_NEAR(s.f1, json_real_value(json_object_get(want, "f1")), 1e-9, "v1.1 f1 = reference");
    TAP_EQ_INT(s.total, 13, "v1.1: 13 questions");
    TAP_EQ_INT(s.missing, 1, "v1.1: one question without prediction (scored 0)");
    FILE *f = tmpfile();
    metrics_squad_write_official(&s, f, &err);
    char *printed = slurp(f);
    TAP_EQ_STR(printed, json_string_value(json_object_get(v1, "official_output")),
               "v1.1 official output byte-identical to Python json.dumps");
    free(printed);
    check_per_question("tiny-v1.json", "tiny-v1-predictions.json", json_object_get(v1, "per_question"),
                       METRICS_SQUAD_V1);

    json_t *v2 = json_object_get(expected, "v2");
    want = json_object_get(v2, "result");
    rc = metrics_squad_score_files(fixture("tiny-v2.json"), fixture("tiny-v2-predictions.json"),
                                   METRICS_SQUAD_AUTO, &s, &err);
    if (!tap_ok(rc == 0, "v2.0 fixture scored")) tap_diag("%s", err.msg);
    TAP_EQ_INT(s.version, METRICS_SQUAD_V2, "v2.0 fixture detected as v2.0");
    TAP_NEAR(s.exact, json_real_value(json_object_get(want, "exact")), 1e-9, "v2.0 exact = reference");
    TAP_NEAR(s.f1, json_real_value(json_object_get(want, "f1")), 1e-9, "v2.0 f1 = reference");
    TAP_NEAR(s.has_ans_exact, json_real_value(json_object_get(want, "HasAns_exact")), 1e-9, "v2.0 HasAns_exact");
    TAP_NEAR(s.has_ans_f1, json_real_value(json_object_get(want, "HasAns_f1")), 1e-9, "v2.0 HasAns_f1");
    TAP_NEAR(s.no_ans_exact, json_real_value(json_object_get(want, "NoAns_exact")), 1e-9, "v2.0 NoAns_exact");
    TAP_NEAR(s.no_ans_f1, json_real_value(json_object_get(want, "NoAns_f1")), 1e-9, "v2.0 NoAns_f1");
    TAP_EQ_INT(s.has_ans_total, json_integer_value(json_object_get(want, "HasAns_total")), "v2.0 HasAns_total");
    TAP_EQ_INT(s.no_ans_total, json_integer_value(json_object_get(want, "NoAns_total")), "v2.0 NoAns_total");
    f = tmpfile();
    metrics_squad_write_official(&s, f, &err);
    printed = slurp(f);
    TAP_EQ_STR(printed, json_string_value(json_object_get(v2, "official_output")),
               "v2.0 official output byte-identical to Python json.dumps(indent=2)");
    free(printed);
    check_per_question("tiny-v2.json", "tiny-v2-predictions.json", json_object_get(v2, "per_question"),
                       METRICS_SQUAD_V2);

    /* The v1.1 file forced to v2.0 rules still scores (all questions have answers). */
    rc = metrics_squad_score_files(fixture("tiny-v1.json"), fixture("tiny-v1-predictions.json"),
                                   METRICS_SQUAD_V2, &s, &err);
    tap_ok(rc == 0 && s.version == METRICS_SQUAD_V2 && s.no_ans_total == 0, "v1.1 file under forced v2.0 rules");

    /* Bad input: clear errors naming the problem. */
    rc = metrics_squad_score_files(fixture("expected.json"), fixture("tiny-v1-predictions.json"),
                                   METRICS_SQUAD_AUTO, &s, &err);
    tap_ok(rc == -1 && strstr(err.msg, "not a SQuAD dataset"), "a JSON that is not SQuAD: %s", err.msg);
    rc = metrics_squad_score_files(fixture("no-such-file.json"), fixture("tiny-v1-predictions.json"),
                                   METRICS_SQUAD_AUTO, &s, &err);
    tap_ok(rc == -1 && strstr(err.msg, "no-such-file.json"), "a missing file is named: %s", err.msg);
    json_t *dataset = json_load_file(fixture("tiny-v1.json"), 0, NULL);
    json_t *preds = json_pack("{s:i}", "lh-1", 3);
    rc = metrics_squad_score_json(dataset, preds, METRICS_SQUAD_AUTO, &s, &err);
    tap_ok(rc == -1 && strstr(err.msg, "lh-1") && strstr(err.msg, "not a string"),
           "a non-string prediction names the question: %s", err.msg);
    json_decref(preds);
    preds = json_object();
    json_t *first_qa = json_array_get(json_object_get(json_array_get(json_object_get(
        json_array_get(json_object_get(dataset, "data"), 0), "paragraphs"), 0), "qas"), 0);
    json_object_set_new(first_qa, "answers", json_array());
    rc = metrics_squad_score_json(dataset, preds, METRICS_SQUAD_V1, &s, &err);
    tap_ok(rc == -1 && strstr(err.msg, "lh-1") && strstr(err.msg, "no gold answer"),
           "a v1.1 question without answers names the question: %s", err.msg);
    json_decref(preds);
    json_decref(dataset);
}

static void test_squad_spans(void) {
    metrics_squad_totals t;
    metrics_squad_totals_init(&t, METRICS_SQUAD_V1);
    metrics_squad_add_span(&t, 5, 7, 5, 7);
    metrics_squad_add_span(&t, 5, 8, 5, 7);
    metrics_squad_add_span(&t, 4, 7, 5, 7);
    metrics_squad_add_span(&t, 12, 12, 12, 12);
    metrics_squad_summary s = metrics_squad_summarize(&t);
    TAP_NEAR(s.span_accuracy, 50.0, 1e-12, "span accuracy: 2 of 4 exact start+end matches");
    TAP_EQ_INT(s.span_total, 4, "span accuracy: 4 spans counted");
    tap_ok(isnan(s.exact), "span-only totals have no EM average");
    bp_err err;
    TAP_EQ_INT(metrics_squad_write_official(&s, stdout, &err), -1, "official output refused without questions");
    json_t *summary = metrics_squad_summary_to_json(&s, &err);
    tap_ok(summary && json_real_value(json_object_get(summary, "span_accuracy")) == 50.0 &&
               json_is_null(json_object_get(summary, "exact_match")),
           "summary JSON carries span accuracy, null EM");
    json_decref(summary);
}

int main(void) {
    fixture_path_init(__FILE__, "squad");
    test_classification_counts();
    test_classification_loss();
    test_classification_predictions();
    json_error_t jerr;
    json_t *expected = json_load_file(fixture("expected.json"), 0, &jerr);
    if (tap_ok(expected != NULL, "load %s", fixture("expected.json"))) {
        test_squad_strings(expected);
        test_squad_files(expected);
        json_decref(expected);
    } else {
        tap_diag("%s", jerr.text);
    }
    test_squad_spans();
    return tap_done();
}
