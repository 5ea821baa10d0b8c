/* eval/metrics.c — classification and SQuAD metrics (see metrics.h, docs/score.md).
 *
 * Must never: print on its own (only to a FILE* the caller passes), or exit; every failure
 * is -1/NULL and a bp_err line. The SQuAD half reproduces the official evaluation scripts' Python
 * behaviour (str.lower, string.punctuation, re's \b, str.split) on UTF-8 with utf8proc,
 * so its numbers equal theirs bit for bit when questions are added in dataset order.
 */
#include "eval/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ======================================================================================
 * Classification
 * ==================================================================================== */

int metrics_cls_init(metrics_cls *m, int num_classes, bp_err *err) {
    memset(m, 0, sizeof *m);
    /* the confusion matrix is C x C counts: a class count read from a stream (a probs
     * tensor's length) must not make it gigabytes */
    if (num_classes < 1 || num_classes > METRICS_MAX_CLASSES)
        return bp_err_set(err, "number of classes %d is outside 1..%d (metrics_cls_init)", num_classes,
                          METRICS_MAX_CLASSES);
    m->confusion = calloc((size_t)num_classes * (size_t)num_classes, sizeof *m->confusion);
    if (!m->confusion)
        return bp_err_set(err, "out of memory for a %dx%d confusion matrix (metrics_cls_init)",
                          num_classes, num_classes);
    m->num_classes = num_classes;
    return 0;
}

void metrics_cls_free(metrics_cls *m) {
    free(m->confusion);
    m->confusion = NULL;
    m->num_classes = 0;
}

int metrics_argmax(const float *values, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (values[i] > values[best]) best = i;
    return best;
}

double metrics_cross_entropy(const float *logits, int num_classes, int label) {
    double max = logits[0];
    for (int i = 1; i < num_classes; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < num_classes; i++) sum += exp((double)logits[i] - max);
    /* log(sum) >= 0 because the maximum's term is exactly 1. */
    return max + log(sum) - (double)logits[label];
}

static int check_class(const metrics_cls *m, int c, const char *what, bp_err *err) {
    if (c < 0 || c >= m->num_classes)
        return bp_err_set(err, "%s %d is outside 0..%d (example %lld)", what, c,
                          m->num_classes - 1, (long long)m->count);
    return 0;
}

int metrics_cls_add_prediction(metrics_cls *m, int predicted, int label, bp_err *err) {
    if (check_class(m, label, "label", err) || check_class(m, predicted, "predicted class", err))
        return -1;
    m->confusion[(size_t)label * (size_t)m->num_classes + (size_t)predicted]++;
    m->count++;
    return 0;
}

int metrics_cls_add_logits(metrics_cls *m, const float *logits, int label, int *predicted_out,
                           bp_err *err) {
    if (check_class(m, label, "label", err)) return -1;
    for (int i = 0; i < m->num_classes; i++)
        if (!isfinite(logits[i]))
            return bp_err_set(err, "logit %d is not finite (example %lld)", i,
                              (long long)m->count);
    int predicted = metrics_argmax(logits, m->num_classes);
    double loss = metrics_cross_entropy(logits, m->num_classes, label);
    if (metrics_cls_add_prediction(m, predicted, label, err)) return -1;
    m->loss_sum += loss;
    m->loss_count++;
    if (predicted_out) *predicted_out = predicted;
    return 0;
}

double metrics_cls_accuracy(const metrics_cls *m) {
    if (m->count == 0) return NAN;
    int64_t right = 0;
    for (int c = 0; c < m->num_classes; c++)
        right += m->confusion[(size_t)c * (size_t)m->num_classes + (size_t)c];
    return (double)right / (double)m->count;
}

metrics_cls_class metrics_cls_class_stats(const metrics_cls *m, int c) {
    metrics_cls_class s = {0};
    size_t n = (size_t)m->num_classes;
    for (size_t other = 0; other < n; other++) {
        s.support += m->confusion[(size_t)c * n + other];
        s.predicted += m->confusion[other * n + (size_t)c];
    }
    s.true_positive = m->confusion[(size_t)c * n + (size_t)c];
    s.precision = s.predicted ? (double)s.true_positive / (double)s.predicted : 0.0;
    s.recall = s.support ? (double)s.true_positive / (double)s.support : 0.0;
    double denominator = s.precision + s.recall;
    s.f1 = denominator > 0.0 ? 2.0 * s.precision * s.recall / denominator : 0.0;
    return s;
}

enum cls_field { FIELD_PRECISION, FIELD_RECALL, FIELD_F1 };

static double macro_average(const metrics_cls *m, enum cls_field field) {
    if (m->count == 0) return NAN;
    double sum = 0.0;
    for (int c = 0; c < m->num_classes; c++) {
        metrics_cls_class s = metrics_cls_class_stats(m, c);
        sum += field == FIELD_PRECISION ? s.precision : field == FIELD_RECALL ? s.recall : s.f1;
    }
    return sum / m->num_classes;
}

double metrics_cls_macro_precision(const metrics_cls *m) { return macro_average(m, FIELD_PRECISION); }
double metrics_cls_macro_recall(const metrics_cls *m) { return macro_average(m, FIELD_RECALL); }
double metrics_cls_macro_f1(const metrics_cls *m) { return macro_average(m, FIELD_F1); }

double metrics_cls_mean_loss(const metrics_cls *m) {
    return m->loss_count ? m->loss_sum / (double)m->loss_count : NAN;
}

/* A JSON number, or null for NaN (JSON has no NaN). */
static json_t *json_number_or_null(double x) {
    return isnan(x) ? json_null() : json_real(x);
}

/* Adds value to obj under key, consuming the reference; -1 when either is NULL or the
 * set fails (out of memory). */
static int json_put(json_t *obj, const char *key, json_t *value) {
    if (!value) return -1;
    return json_object_set_new(obj, key, value);
}

static const char *label_name(const char *const *names, int c, char buf[16]) {
    if (names && names[c]) return names[c];
    snprintf(buf, 16, "%d", c);
    return buf;
}

json_t *metrics_cls_to_json(const metrics_cls *m, const char *const *label_names, bp_err *err) {
    json_t *root = json_object(), *per_class = json_array(), *confusion = json_array();
    int failed = !root || !per_class || !confusion;
    if (!failed)
        failed = json_put(root, "count", json_integer(m->count)) ||
                 json_put(root, "accuracy", json_number_or_null(metrics_cls_accuracy(m))) ||
                 json_put(root, "macro_precision", json_number_or_null(metrics_cls_macro_precision(m))) ||
                 json_put(root, "macro_recall", json_number_or_null(metrics_cls_macro_recall(m))) ||
                 json_put(root, "macro_f1", json_number_or_null(metrics_cls_macro_f1(m))) ||
                 json_put(root, "eval_loss", json_number_or_null(metrics_cls_mean_loss(m)));
    size_t n = (size_t)m->num_classes;
    for (int c = 0; !failed && c < m->num_classes; c++) {
        metrics_cls_class s = metrics_cls_class_stats(m, c);
        char buf[16];
        json_t *entry = json_object(), *row = json_array();
        failed = !entry || !row ||
                 json_put(entry, "label", json_string(label_name(label_names, c, buf))) ||
                 json_put(entry, "precision", json_real(s.precision)) ||
                 json_put(entry, "recall", json_real(s.recall)) ||
                 json_put(entry, "f1", json_real(s.f1)) ||
                 json_put(entry, "support", json_integer(s.support)) ||
                 json_put(entry, "predicted", json_integer(s.predicted));
        for (size_t p = 0; !failed && p < n; p++)
            failed = json_array_append_new(row, json_integer(m->confusion[(size_t)c * n + p])) != 0;
        if (!failed) {
            failed = json_array_append_new(per_class, entry) || json_array_append_new(confusion, row);
        } else {
            json_decref(entry);
            json_decref(row);
        }
    }
    if (!failed) {
        failed = json_put(root, "per_class", per_class) ||
                 json_put(root, "confusion_matrix", confusion);
        per_class = confusion = NULL; /* consumed, even on failure */
    }
    if (failed) {
        json_decref(root);
        json_decref(per_class);
        json_decref(confusion);
        bp_err_set(err, "out of memory building the metrics JSON (metrics_cls_to_json)");
        return NULL;
    }
    return root;
}

static int write_json_line(json_t *root, FILE *out, bp_err *err) {
    int failed = json_dumpf(root, out, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16)) != 0 ||
                 fputc('\n', out) == EOF || fflush(out) != 0;
    json_decref(root);
    if (failed) return bp_err_set(err, "cannot write the metrics JSON: %s", strerror(errno));
    return 0;
}

int metrics_cls_write_json(const metrics_cls *m, const char *const *label_names, FILE *out,
                           bp_err *err) {
    json_t *root = metrics_cls_to_json(m, label_names, err);
    if (!root) return -1;
    return write_json_line(root, out, err);
}

int metrics_cls_format_table(const metrics_cls *m, const char *const *label_names, FILE *out,
                             bp_err *err) {
    int width = 9; /* widest label, for aligned columns */
    char buf[16];
    for (int c = 0; c < m->num_classes; c++) {
        int len = (int)strlen(label_name(label_names, c, buf));
        if (len > width) width = len;
    }
    if (width > 40) width = 40;
    fprintf(out, "examples  %lld\naccuracy  %.4f\n", (long long)m->count, metrics_cls_accuracy(m));
    if (m->loss_count) fprintf(out, "eval loss %.6f\n", metrics_cls_mean_loss(m));
    fprintf(out, "\n%-*s %9s %9s %9s %9s\n", width, "class", "precision", "recall", "f1", "support");
    for (int c = 0; c < m->num_classes; c++) {
        metrics_cls_class s = metrics_cls_class_stats(m, c);
        fprintf(out, "%-*.*s %9.4f %9.4f %9.4f %9lld\n", width, width,
                label_name(label_names, c, buf), s.precision, s.recall, s.f1,
                (long long)s.support);
    }
    fprintf(out, "%-*s %9.4f %9.4f %9.4f %9lld\n", width, "macro avg",
            metrics_cls_macro_precision(m), metrics_cls_macro_recall(m), metrics_cls_macro_f1(m),
            (long long)m->count);
    fprintf(out, "\nconfusion matrix (rows: true, columns: predicted)\n%-*s", width, "");
    for (int p = 0; p < m->num_classes; p++)
        fprintf(out, " %9.9s", label_name(label_names, p, buf));
    fputc('\n', out);
    for (int c = 0; c < m->num_classes; c++) {
        fprintf(out, "%-*.*s", width, width, label_name(label_names, c, buf));
        for (int p = 0; p < m->num_classes; p++)
            fprintf(out, " %9lld",
                    (long long)m->confusion[(size_t)c * (size_t)m->num_classes + (size_t)p]);
        fputc('\n', out);
    }
    if (fflush(out) != 0 || ferror(out))
        return bp_err_set(err, "cannot write the metrics table: %s", strerror(errno));
    return 0;
}

/* ---- classification predictions ---- */

void metrics_softmax(const float *logits, int n, float *probabilities) {
    double max = logits[0], sum = 0.0;
    for (int i = 1; i < n; i++)
        if (logits[i] > max) max = logits[i];
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - max);
    for (int i = 0; i < n; i++) probabilities[i] = (float)(exp((double)logits[i] - max) / sum);
}

static int write_checked(FILE *out, const char *what, bp_err *err) {
    if (ferror(out)) return bp_err_set(err, "cannot write the %s: %s", what, strerror(errno));
    return 0;
}

int metrics_cls_write_predictions_header(FILE *out, const char *const *label_names,
                                         int num_classes, int with_probabilities, bp_err *err) {
    char buf[16];
    fputs("index\tprediction", out);
    for (int c = 0; with_probabilities && c < num_classes; c++)
        fprintf(out, "\tp_%s", label_name(label_names, c, buf));
    fputc('\n', out);
    return write_checked(out, "predictions header", err);
}

int metrics_cls_write_prediction_line(FILE *out, int64_t index, int predicted,
                                      const char *const *label_names,
                                      const float *probabilities, int num_classes, bp_err *err) {
    char buf[16];
    if (predicted < 0 || predicted >= num_classes)
        return bp_err_set(err, "predicted class %d is outside 0..%d (example %lld)", predicted,
                          num_classes - 1, (long long)index);
    fprintf(out, "%lld\t%s", (long long)index, label_name(label_names, predicted, buf));
    for (int c = 0; probabilities && c < num_classes; c++) fprintf(out, "\t%.6g", probabilities[c]);
    fputc('\n', out);
    return write_checked(out, "predictions file", err);
}

/* ======================================================================================
 * SQuAD: Python's string semantics on code points
 * ==================================================================================== */

/* A growable array of code points. */
typedef struct codepoints {
    int32_t *cp;
    size_t len, cap;
} codepoints;

static int cps_push(codepoints *s, int32_t c) {
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        int32_t *grown = realloc(s->cp, cap * sizeof *grown);
        if (!grown) return -1;
        s->cp = grown;
        s->cap = cap;
    }
    s->cp[s->len++] = c;
    return 0;
}

static int decode_utf8(const char *text, codepoints *out, bp_err *err) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(text);
    while (left > 0) {
        utf8proc_int32_t c;
        utf8proc_ssize_t used = utf8proc_iterate(p, left, &c);
        if (used < 0)
            return bp_err_set(err, "invalid UTF-8 at byte %zu of \"%.40s\"",
                              (size_t)(p - (const utf8proc_uint8_t *)text), text);
        if (cps_push(out, c)) return bp_err_set(err, "out of memory decoding an answer");
        p += used;
        left -= used;
    }
    return 0;
}

/* Python's str.isspace() / str.split() whitespace: bidirectional class WS, B or S, or
 * category Zs. Fixed since Unicode 6.3 (U+180E left it), so listed here. */
static int is_python_space(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python's string.punctuation: the 32 ASCII punctuation characters. */
static int is_ascii_punctuation(int32_t c) {
    return c < 0x80 && c > 0x20 && c != 0x7F && !(c >= '0' && c <= '9') &&
           !(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z');
}

/* Python re's \w on str patterns: str.isalnum() (letters, and characters with a numeric
 * value, which are the N* categories) or '_'. Marks are not word characters. */
static int is_regex_word(int32_t c) {
    if (c == '_') return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return 1;
    default:
        return 0;
    }
}

/* Code point ranges, inclusive, sorted. */
typedef struct cp_range { int32_t first, last; } cp_range;

static int in_ranges(int32_t c, const cp_range *r, size_t n) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid].first) hi = mid;
        else if (c > r[mid].last) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Unicode's Other_Lowercase and Other_Uppercase (PropList.txt): characters that are
 * "cased" without being Lu/Ll/Lt. Only the final-sigma rule needs them. */
static const cp_range other_cased[] = {
    {0x00AA, 0x00AA}, {0x00BA, 0x00BA}, {0x02B0, 0x02B8}, {0x02C0, 0x02C1},
    {0x02E0, 0x02E4}, {0x0345, 0x0345}, {0x037A, 0x037A}, {0x10FC, 0x10FC},
    {0x1D2C, 0x1D6A}, {0x1D78, 0x1D78}, {0x1D9B, 0x1DBF}, {0x2071, 0x2071},
    {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2160, 0x217F}, {0x24B6, 0x24E9},
    {0x2C7C, 0x2C7D}, {0xA69C, 0xA69D}, {0xA770, 0xA770}, {0xA7F2, 0xA7F4},
    {0xA7F8, 0xA7F9}, {0xAB5C, 0xAB5F}, {0xAB69, 0xAB69}, {0x10780, 0x10780},
    {0x10783, 0x10785}, {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x1F130, 0x1F149},
    {0x1F150, 0x1F169}, {0x1F170, 0x1F189},
};

/* Word_Break MidLetter, MidNumLet and Single_Quote: case-ignorable besides the
 * Mn/Me/Cf/Lm/Sk categories. */
static const cp_range mid_word[] = {
    {0x0027, 0x0027}, {0x002E, 0x002E}, {0x003A, 0x003A}, {0x00B7, 0x00B7},
    {0x0387, 0x0387}, {0x055F, 0x055F}, {0x05F4, 0x05F4}, {0x2018, 0x2019},
    {0x2024, 0x2024}, {0x2027, 0x2027}, {0xFE13, 0xFE13}, {0xFE52, 0xFE52},
    {0xFE55, 0xFE55}, {0xFF07, 0xFF07}, {0xFF0E, 0xFF0E}, {0xFF1A, 0xFF1A},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int is_cased(int32_t c) {
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
           cat == UTF8PROC_CATEGORY_LT || in_ranges(c, other_cased, COUNT(other_cased));
}

static int is_case_ignorable(int32_t c) {
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME ||
           cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_LM ||
           cat == UTF8PROC_CATEGORY_SK || in_ranges(c, mid_word, COUNT(mid_word));
}

/* Python lowers U+03A3 to final sigma U+03C2 when a cased letter precedes it and none
 * follows (skipping case-ignorable characters both ways). */
static int32_t lower_capital_sigma(const codepoints *s, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(s->cp[j - 1])) j--;
    if (j == 0 || !is_cased(s->cp[j - 1])) return 0x03C3;
    for (j = i + 1; j < s->len && is_case_ignorable(s->cp[j]); j++) {}
    return (j < s->len && is_cased(s->cp[j])) ? 0x03C3 : 0x03C2;
}

/* Python str.lower(): simple lowercase mappings, plus the two that are not simple. */
static int python_lower(const codepoints *in, codepoints *out) {
    for (size_t i = 0; i < in->len; i++) {
        int32_t c = in->cp[i];
        if (c == 0x0130) { /* LATIN CAPITAL I WITH DOT ABOVE -> i + COMBINING DOT ABOVE */
            if (cps_push(out, 'i') || cps_push(out, 0x0307)) return -1;
        } else if (c == 0x03A3) {
            if (cps_push(out, lower_capital_sigma(in, i))) return -1;
        } else if (cps_push(out, utf8proc_tolower(c))) {
            return -1;
        }
    }
    return 0;
}

int metrics_squad_char_rules(int32_t cp, int32_t lower[3], unsigned *flags) {
    codepoints one = {&cp, 1, 1}, lowered = {lower, 0, 3};
    /* lowered has room for the longest expansion (2), so python_lower never grows it. */
    python_lower(&one, &lowered);
    *flags = (is_python_space(cp) ? METRICS_CHAR_SPACE : 0u) |
             (is_regex_word(cp) ? METRICS_CHAR_WORD : 0u) |
             (is_cased(cp) ? METRICS_CHAR_CASED : 0u) |
             (is_case_ignorable(cp) ? METRICS_CHAR_CASE_IGNORABLE : 0u);
    return (int)lowered.len;
}

static int word_run_is_article(const int32_t *w, size_t n) {
    if (n == 1) return w[0] == 'a';
    if (n == 2) return w[0] == 'a' && w[1] == 'n';
    if (n == 3) return w[0] == 't' && w[1] == 'h' && w[2] == 'e';
    return 0;
}

/* The normalised code points of text (steps as in metrics.h), tokens separated by one
 * space, none leading or trailing. */
static int normalize_codepoints(const char *text, codepoints *out, bp_err *err) {
    codepoints raw = {0}, lowered = {0}, kept = {0};
    int rc = -1;
    if (decode_utf8(text, &raw, err)) goto done;
    if (python_lower(&raw, &lowered)) goto oom;
    for (size_t i = 0; i < lowered.len; i++)
        if (!is_ascii_punctuation(lowered.cp[i]) && cps_push(&kept, lowered.cp[i])) goto oom;
    /* \b(a|an|the)\b: a match is always a whole maximal run of word characters, since the
     * three words are word characters bounded by non-word ones. It becomes a space. Then
     * split on whitespace and join with single spaces. */
    int pending_space = 0;
    for (size_t i = 0; i < kept.len;) {
        int32_t c = kept.cp[i];
        if (is_python_space(c)) {
            pending_space = 1;
            i++;
            continue;
        }
        size_t end = i + 1;
        if (is_regex_word(c)) {
            while (end < kept.len && is_regex_word(kept.cp[end])) end++;
            if (word_run_is_article(kept.cp + i, end - i)) {
                pending_space = 1;
                i = end;
                continue;
            }
        }
        if (pending_space && out->len > 0 && cps_push(out, ' ')) goto oom;
        pending_space = 0;
        for (; i < end; i++)
            if (cps_push(out, kept.cp[i])) goto oom;
    }
    rc = 0;
    goto done;
oom:
    bp_err_set(err, "out of memory normalising \"%.40s\"", text);
done:
    free(raw.cp);
    free(lowered.cp);
    free(kept.cp);
    return rc;
}

static char *encode_utf8(const int32_t *cp, size_t n) {
    char *s = malloc(n * 4 + 1);
    if (!s) return NULL;
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        at += (size_t)utf8proc_encode_char(cp[i], (utf8proc_uint8_t *)s + at);
    s[at] = '\0';
    return s;
}

char *metrics_squad_normalize_answer(const char *text, bp_err *err) {
    codepoints norm = {0};
    if (normalize_codepoints(text, &norm, err)) {
        free(norm.cp);
        return NULL;
    }
    char *s = encode_utf8(norm.cp, norm.len);
    free(norm.cp);
    if (!s) bp_err_set(err, "out of memory normalising \"%.40s\"", text);
    return s;
}

/* ======================================================================================
 * SQuAD: exact match and token F1
 * ==================================================================================== */

/* Tokens of a normalised string: (offset, length) pairs into its code points. */
typedef struct token { const int32_t *cp; size_t len; } token;

static int compare_tokens(const void *pa, const void *pb) {
    const token *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    for (size_t i = 0; i < n; i++)
        if (a->cp[i] != b->cp[i]) return a->cp[i] < b->cp[i] ? -1 : 1;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

/* Split a normalised string (single-space separated) into tokens; *out is malloc'd. */
static int split_tokens(const codepoints *s, token **out, size_t *count) {
    size_t n = 0;
    for (size_t i = 0; i < s->len; i++)
        if (s->cp[i] != ' ' && (i == 0 || s->cp[i - 1] == ' ')) n++;
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out) return -1;
    size_t k = 0;
    for (size_t i = 0; i < s->len;) {
        size_t end = i;
        while (end < s->len && s->cp[end] != ' ') end++;
        (*out)[k].cp = s->cp + i;
        (*out)[k].len = end - i;
        k++;
        i = end + 1;
    }
    *count = k;
    return 0;
}

/* Size of the multiset intersection (Python's sum((Counter(a) & Counter(b)).values())):
 * sort both and walk them together. */
static size_t common_token_count(token *a, size_t na, token *b, size_t nb) {
    qsort(a, na, sizeof *a, compare_tokens);
    qsort(b, nb, sizeof *b, compare_tokens);
    size_t i = 0, j = 0, common = 0;
    while (i < na && j < nb) {
        int c = compare_tokens(&a[i], &b[j]);
        if (c == 0) { common++; i++; j++; }
        else if (c < 0) i++;
        else j++;
    }
    return common;
}

static int same_codepoints(const codepoints *a, const codepoints *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->cp, b->cp, a->len * sizeof *a->cp) == 0);
}

/* EM and F1 of one (prediction, gold) pair. */
static int score_pair(const char *prediction, const char *gold, metrics_squad_version version,
                      int *em, double *f1, bp_err *err) {
    codepoints p = {0}, g = {0};
    token *pt = NULL, *gt = NULL;
    size_t np = 0, ng = 0;
    int rc = -1;
    if (normalize_codepoints(prediction, &p, err) || normalize_codepoints(gold, &g, err)) goto done;
    if (split_tokens(&p, &pt, &np) || split_tokens(&g, &gt, &ng)) {
        bp_err_set(err, "out of memory splitting \"%.40s\"", prediction);
        goto done;
    }
    *em = same_codepoints(&p, &g);
    if (version == METRICS_SQUAD_V2 && (np == 0 || ng == 0)) {
        *f1 = (np == 0 && ng == 0) ? 1.0 : 0.0;
    } else {
        size_t common = common_token_count(pt, np, gt, ng);
        if (common == 0) {
            *f1 = 0.0;
        } else {
            /* Same operations, same order as the official script: bit-identical. */
            double precision = 1.0 * (double)common / (double)np;
            double recall = 1.0 * (double)common / (double)ng;
            *f1 = (2 * precision * recall) / (precision + recall);
        }
    }
    rc = 0;
done:
    free(p.cp);
    free(g.cp);
    free(pt);
    free(gt);
    return rc;
}

int metrics_squad_exact_match(const char *prediction, const char *ground_truth, bp_err *err) {
    int em;
    double f1;
    if (score_pair(prediction, ground_truth, METRICS_SQUAD_V1, &em, &f1, err)) return -1;
    return em;
}

double metrics_squad_f1(const char *prediction, const char *ground_truth,
                        metrics_squad_version version, bp_err *err) {
    int em;
    double f1;
    if (score_pair(prediction, ground_truth, version, &em, &f1, err)) return -1.0;
    return f1;
}

void metrics_squad_totals_init(metrics_squad_totals *t, metrics_squad_version version) {
    memset(t, 0, sizeof *t);
    t->version = version == METRICS_SQUAD_V2 ? METRICS_SQUAD_V2 : METRICS_SQUAD_V1;
}

int metrics_squad_add(metrics_squad_totals *t, const char *prediction,
                      const char *const *golds, int n_golds, int *em_out, double *f1_out,
                      bp_err *err) {
    int best_em = 0, has_answer = n_golds > 0, scored_golds = 0;
    double best_f1 = 0.0;
    if (t->version == METRICS_SQUAD_V1 && n_golds < 1)
        return bp_err_set(err, "question %lld has no gold answer (SQuAD v1.1 needs one)",
                          (long long)t->total);
    if (prediction) {
        for (int i = 0; i < n_golds; i++) {
            if (t->version == METRICS_SQUAD_V2) {
                /* evaluate-v2.0 drops golds that normalise to nothing. */
                char *norm = metrics_squad_normalize_answer(golds[i], err);
                if (!norm) return -1;
                int empty = norm[0] == '\0';
                free(norm);
                if (empty) continue;
            }
            int em;
            double f1;
            if (score_pair(prediction, golds[i], t->version, &em, &f1, err)) return -1;
            if (em > best_em) best_em = em; /* scores start at 0, so max over golds */
            if (f1 > best_f1) best_f1 = f1;
            scored_golds++;
        }
        if (scored_golds == 0) /* only V2 gets here: the only right answer is "" */
            if (score_pair(prediction, "", t->version, &best_em, &best_f1, err)) return -1;
    } else {
        t->missing++;
    }
    t->total++;
    t->exact_sum += best_em;
    t->f1_sum += best_f1;
    if (has_answer) {
        t->has_ans_total++;
        t->has_ans_exact_sum += best_em;
        t->has_ans_f1_sum += best_f1;
    } else {
        t->no_ans_total++;
        t->no_ans_exact_sum += best_em;
        t->no_ans_f1_sum += best_f1;
    }
    if (em_out) *em_out = best_em;
    if (f1_out) *f1_out = best_f1;
    return 0;
}

void metrics_squad_add_span(metrics_squad_totals *t, int64_t pred_start, int64_t pred_end,
                            int64_t gold_start, int64_t gold_end) {
    t->span_total++;
    t->span_exact_sum += pred_start == gold_start && pred_end == gold_end;
}

void metrics_squad_tally_init(metrics_squad_tally *t) {
    memset(t, 0, sizeof *t);
    metrics_squad_totals_init(&t->v1, METRICS_SQUAD_V1);
    metrics_squad_totals_init(&t->v2, METRICS_SQUAD_V2);
}

int metrics_squad_tally_add(metrics_squad_tally *t, const char *prediction, const char *const *golds, int n_golds,
                            int is_impossible, bp_err *err) {
    if ((n_golds > 0 && metrics_squad_add(&t->v1, prediction, golds, n_golds, NULL, NULL, err)) ||
        metrics_squad_add(&t->v2, prediction, golds, n_golds, NULL, NULL, err))
        return -1;
    if (is_impossible) t->saw_impossible = 1;
    if (n_golds == 0) t->unscored++;
    t->questions++;
    return 0;
}

int metrics_squad_tally_is_v2(const metrics_squad_tally *t, int force_v2) { return force_v2 || t->saw_impossible; }

metrics_squad_summary metrics_squad_tally_summarize(const metrics_squad_tally *t, int force_v2) {
    return metrics_squad_summarize(metrics_squad_tally_is_v2(t, force_v2) ? &t->v2 : &t->v1);
}

static double percent(double sum, int64_t total) {
    return total ? 100.0 * sum / (double)total : NAN;
}

metrics_squad_summary metrics_squad_summarize(const metrics_squad_totals *t) {
    metrics_squad_summary s = {0};
    s.version = t->version;
    s.total = t->total;
    s.exact = percent((double)t->exact_sum, t->total);
    s.f1 = percent(t->f1_sum, t->total);
    s.has_ans_total = t->has_ans_total;
    s.has_ans_exact = percent((double)t->has_ans_exact_sum, t->has_ans_total);
    s.has_ans_f1 = percent(t->has_ans_f1_sum, t->has_ans_total);
    s.no_ans_total = t->no_ans_total;
    s.no_ans_exact = percent((double)t->no_ans_exact_sum, t->no_ans_total);
    s.no_ans_f1 = percent(t->no_ans_f1_sum, t->no_ans_total);
    s.missing = t->missing;
    s.span_total = t->span_total;
    s.span_accuracy = percent((double)t->span_exact_sum, t->span_total);
    return s;
}

/* ======================================================================================
 * SQuAD: whole files
 * ==================================================================================== */

static metrics_squad_version detect_version(const json_t *dataset, const json_t *data) {
    const char *v = json_string_value(json_object_get(dataset, "version"));
    if (v && strncmp(v, "v2", 2) == 0) return METRICS_SQUAD_V2;
    size_t a, p, q;
    json_t *article, *paragraph, *qa;
    json_array_foreach(data, a, article) {
        json_array_foreach(json_object_get(article, "paragraphs"), p, paragraph) {
            json_array_foreach(json_object_get(paragraph, "qas"), q, qa) {
                if (json_object_get(qa, "is_impossible")) return METRICS_SQUAD_V2;
            }
        }
    }
    return METRICS_SQUAD_V1;
}

/* Score one question object; where names it for errors. */
static int score_question(metrics_squad_totals *t, const json_t *qa, const json_t *predictions,
                          const char *where, bp_err *err) {
    const char *id = json_string_value(json_object_get(qa, "id"));
    json_t *answers = json_object_get(qa, "answers");
    if (!id) return bp_err_set(err, "question without a string \"id\" (%s)", where);
    if (!json_is_array(answers))
        return bp_err_set(err, "question %s has no \"answers\" list (%s)", id, where);
    size_t n = json_array_size(answers);
    const char **golds = malloc((n ? n : 1) * sizeof *golds);
    if (!golds) return bp_err_set(err, "out of memory (question %s)", id);
    for (size_t i = 0; i < n; i++) {
        golds[i] = json_string_value(json_object_get(json_array_get(answers, i), "text"));
        if (!golds[i]) {
            free(golds);
            return bp_err_set(err, "answer %zu of question %s has no string \"text\" (%s)", i, id,
                              where);
        }
    }
    json_t *predicted = json_object_get(predictions, id);
    const char *prediction = NULL;
    if (predicted) {
        prediction = json_string_value(predicted);
        if (!prediction) {
            free(golds);
            return bp_err_set(err, "the prediction for question %s is not a string", id);
        }
    }
    bp_err inner;
    int rc = metrics_squad_add(t, prediction, golds, (int)n, NULL, NULL, &inner);
    free(golds);
    if (rc) return bp_err_set(err, "%s (question %s, %s)", inner.msg, id, where);
    return 0;
}

int metrics_squad_score_json(const json_t *dataset, const json_t *predictions,
                             metrics_squad_version version, metrics_squad_summary *out,
                             bp_err *err) {
    json_t *data = json_object_get(dataset, "data");
    if (!json_is_array(data))
        return bp_err_set(err, "not a SQuAD dataset: no \"data\" list at the top level");
    if (!json_is_object(predictions))
        return bp_err_set(err, "predictions are not a JSON object {id: text}");
    if (version == METRICS_SQUAD_AUTO) version = detect_version(dataset, data);
    metrics_squad_totals t;
    metrics_squad_totals_init(&t, version);
    /* Ids seen so far, to refuse a dataset that scores a question twice. */
    json_t *seen = json_object();
    if (!seen) return bp_err_set(err, "out of memory (metrics_squad_score_json)");
    int rc = 0;
    size_t a, p, q;
    json_t *article, *paragraph, *qa;
    json_array_foreach(data, a, article) {
        json_t *paragraphs = json_object_get(article, "paragraphs");
        if (!json_is_array(paragraphs)) {
            rc = bp_err_set(err, "not a SQuAD dataset: article %zu has no \"paragraphs\" list", a);
            goto done;
        }
        json_array_foreach(paragraphs, p, paragraph) {
            json_t *qas = json_object_get(paragraph, "qas");
            if (!json_is_array(qas)) {
                rc = bp_err_set(err, "not a SQuAD dataset: article %zu paragraph %zu has no \"qas\" list",
                                a, p);
                goto done;
            }
            json_array_foreach(qas, q, qa) {
                char where[96];
                snprintf(where, sizeof where, "article %zu paragraph %zu question %zu", a, p, q);
                if ((rc = score_question(&t, qa, predictions, where, err))) goto done;
                const char *id = json_string_value(json_object_get(qa, "id"));
                if (json_object_get(seen, id)) {
                    rc = bp_err_set(err, "question id %s appears twice in the dataset (%s)", id, where);
                    goto done;
                }
                if (json_object_set_new(seen, id, json_true())) {
                    rc = bp_err_set(err, "out of memory (%s)", where);
                    goto done;
                }
            }
        }
    }
    *out = metrics_squad_summarize(&t);
done:
    json_decref(seen);
    return rc;
}

static json_t *load_json(const char *path, const char *what, bp_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        bp_err_set(err, "cannot read the %s JSON: %s (%s line %d column %d)", what, jerr.text, path,
                   jerr.line, jerr.column);
    return root;
}

int metrics_squad_score_files(const char *dataset_path, const char *predictions_path,
                              metrics_squad_version version, metrics_squad_summary *out,
                              bp_err *err) {
    json_t *dataset = load_json(dataset_path, "dataset", err);
    if (!dataset) return -1;
    json_t *predictions = load_json(predictions_path, "predictions", err);
    if (!predictions) {
        json_decref(dataset);
        return -1;
    }
    bp_err inner;
    int rc = metrics_squad_score_json(dataset, predictions, version, out, &inner);
    if (rc) bp_err_set(err, "%s (%s, %s)", inner.msg, dataset_path, predictions_path);
    json_decref(dataset);
    json_decref(predictions);
    return rc;
}

/* ======================================================================================
 * SQuAD: output
 * ==================================================================================== */

char *metrics_format_python_float(double x, char buf[32]) {
    if (isnan(x)) return strcpy(buf, "NaN");
    if (isinf(x)) return strcpy(buf, x > 0 ? "Infinity" : "-Infinity");
    if (x == 0.0) return strcpy(buf, signbit(x) ? "-0.0" : "0.0");
    /* Shortest %.Ne that reads back to x: the digits Python's repr uses. */
    char sci[40];
    for (int precision = 0; precision < 17; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision, x);
        if (strtod(sci, NULL) == x) break;
    }
    const char *s = sci;
    int negative = *s == '-';
    if (negative) s++;
    char digits[24];
    int ndigits = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[ndigits++] = *s;
    while (ndigits > 1 && digits[ndigits - 1] == '0') ndigits--;
    int exponent = atoi(s + 1);
    int decimal_point = exponent + 1; /* digits before the point */
    char *o = buf;
    if (negative) *o++ = '-';
    if (decimal_point <= -4 || decimal_point > 16) {
        *o++ = digits[0];
        if (ndigits > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)ndigits - 1);
            o += ndigits - 1;
        }
        snprintf(o, 8, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent) % 1000); /* |exponent| <= 324 */
    } else if (decimal_point <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -decimal_point; i++) *o++ = '0';
        memcpy(o, digits, (size_t)ndigits);
        o[ndigits] = '\0';
    } else if (decimal_point < ndigits) {
        memcpy(o, digits, (size_t)decimal_point);
        o += decimal_point;
        *o++ = '.';
        memcpy(o, digits + decimal_point, (size_t)(ndigits - decimal_point));
        o[ndigits - decimal_point] = '\0';
    } else {
        memcpy(o, digits, (size_t)ndigits);
        o += ndigits;
        for (int i = ndigits; i < decimal_point; i++) *o++ = '0';
        strcpy(o, ".0");
    }
    return buf;
}

int metrics_squad_write_official(const metrics_squad_summary *s, FILE *out, bp_err *err) {
    char a[32], b[32];
    if (s->total == 0 || isnan(s->exact) || isnan(s->f1))
        return bp_err_set(err, "no question was scored, so there is no average to print");
    if (s->version == METRICS_SQUAD_V1) {
        fprintf(out, "{\"exact_match\": %s, \"f1\": %s}\n", metrics_format_python_float(s->exact, a),
                metrics_format_python_float(s->f1, b));
    } else {
        fprintf(out, "{\n  \"exact\": %s,\n  \"f1\": %s,\n  \"total\": %lld",
                metrics_format_python_float(s->exact, a), metrics_format_python_float(s->f1, b),
                (long long)s->total);
        if (s->has_ans_total)
            fprintf(out, ",\n  \"HasAns_exact\": %s,\n  \"HasAns_f1\": %s,\n  \"HasAns_total\": %lld",
                    metrics_format_python_float(s->has_ans_exact, a),
                    metrics_format_python_float(s->has_ans_f1, b), (long long)s->has_ans_total);
        if (s->no_ans_total)
            fprintf(out, ",\n  \"NoAns_exact\": %s,\n  \"NoAns_f1\": %s,\n  \"NoAns_total\": %lld",
                    metrics_format_python_float(s->no_ans_exact, a),
                    metrics_format_python_float(s->no_ans_f1, b), (long long)s->no_ans_total);
        fputs("\n}\n", out);
    }
    if (fflush(out) != 0 || ferror(out))
        return bp_err_set(err, "cannot write the SQuAD result: %s", strerror(errno));
    return 0;
}

json_t *metrics_squad_summary_to_json(const metrics_squad_summary *s, bp_err *err) {
    json_t *root = json_object();
    int failed = !root ||
                 json_put(root, "version", json_string(s->version == METRICS_SQUAD_V2 ? "v2.0" : "1.1")) ||
                 json_put(root, "exact_match", json_number_or_null(s->exact)) ||
                 json_put(root, "f1", json_number_or_null(s->f1)) ||
                 json_put(root, "total", json_integer(s->total)) ||
                 json_put(root, "missing", json_integer(s->missing));
    if (!failed && s->has_ans_total)
        failed = json_put(root, "HasAns_exact", json_number_or_null(s->has_ans_exact)) ||
                 json_put(root, "HasAns_f1", json_number_or_null(s->has_ans_f1)) ||
                 json_put(root, "HasAns_total", json_integer(s->has_ans_total));
    if (!failed && s->no_ans_total)
        failed = json_put(root, "NoAns_exact", json_number_or_null(s->no_ans_exact)) ||
                 json_put(root, "NoAns_f1", json_number_or_null(s->no_ans_f1)) ||
                 json_put(root, "NoAns_total", json_integer(s->no_ans_total));
    if (!failed && s->span_total)
        failed = json_put(root, "span_accuracy", json_number_or_null(s->span_accuracy)) ||
                 json_put(root, "span_total", json_integer(s->span_total));
    if (failed) {
        json_decref(root);
        bp_err_set(err, "out of memory building the SQuAD JSON (metrics_squad_summary_to_json)");
        return NULL;
    }
    return root;
}
