/* eval/qa_postprocess.c — n-best span selection for extractive QA, as Hugging Face run_qa's
 * postprocess_qa_predictions (see qa_postprocess.h, docs/postprocess.md).
 *
 * Must never: know about frames, print, or exit. Every rule below mirrors one line of
 * the HF function, including its float32 arithmetic and its tie order, so the same
 * logits give the same answers and the same n-best lists.
 */
#include "eval/qa_postprocess.h"

#include "base/atomic_file.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

void qa_post_options_default(qa_post_options *options) {
    options->n_best = 20;
    options->max_answer_length = 30;
    options->version_2_with_negative = 0;
    options->null_score_diff_threshold = 0.0f;
}

/* ---- the context: code point -> byte position ----------------------------------- */

/* byte_at[i] is where code point i starts; byte_at[n] is the length in bytes. */
typedef struct context_index {
    size_t *byte_at;
    int32_t n_codepoints;
} context_index;

static int index_context(const char *context, context_index *ix, bp_err *err) {
    size_t bytes = strlen(context);
    ix->byte_at = malloc((bytes + 1) * sizeof *ix->byte_at);
    if (!ix->byte_at) return bp_err_set(err, "out of memory indexing a %zu-byte context", bytes);
    size_t at = 0;
    int32_t n = 0;
    while (at < bytes) {
        utf8proc_int32_t c;
        utf8proc_ssize_t used = utf8proc_iterate((const utf8proc_uint8_t *)context + at,
                                                 (utf8proc_ssize_t)(bytes - at), &c);
        if (used < 0) return bp_err_set(err, "invalid UTF-8 in the context at byte %zu", at);
        if (n == INT32_MAX) return bp_err_set(err, "context longer than 2^31 code points");
        ix->byte_at[n++] = at;
        at += (size_t)used;
    }
    ix->byte_at[n] = bytes;
    ix->n_codepoints = n;
    return 0;
}

/* context[start:end] in code points with Python's slice rule (end < start -> ""). */
static char *slice_context(const char *context, const context_index *ix, int32_t start,
                           int32_t end) {
    size_t from = ix->byte_at[start], to = end > start ? ix->byte_at[end] : from;
    char *text = malloc(to - from + 1);
    if (!text) return NULL;
    memcpy(text, context + from, to - from);
    text[to - from] = '\0';
    return text;
}

/* ---- per-window checks ------------------------------------------------------------- */

static int is_context_token(const qa_post_offset *o) {
    return !(o->start == QA_POST_NOT_CONTEXT && o->end == QA_POST_NOT_CONTEXT);
}

static int check_window(const qa_post_window *w, int index, int32_t n_codepoints, bp_err *err) {
    if (w->seq_len < 1 || !w->start_logits || !w->end_logits || !w->offsets)
        return bp_err_set(err, "window %d has no logits or offsets (seq_len %d)", index, w->seq_len);
    for (int t = 0; t < w->seq_len; t++) {
        if (!isfinite(w->start_logits[t]) || !isfinite(w->end_logits[t]))
            return bp_err_set(err, "window %d token %d: start/end logit is not finite", index, t);
        const qa_post_offset *o = &w->offsets[t];
        if (is_context_token(o) && (o->start < 0 || o->end < o->start || o->end > n_codepoints))
            return bp_err_set(err, "window %d token %d: offset [%d, %d) is not inside the "
                                   "%d-code-point context", index, t, o->start, o->end, n_codepoints);
    }
    return 0;
}

/* ---- top indexes --------------------------------------------------------------------- */

typedef struct ranked { float value; int index; } ranked;

/* Descending value; on ties the larger index first. That is the order of
 * np.argsort(x)[::-1] with a stable argsort, which HF's `[-1:-n-1:-1]` slice reads. */
static int compare_ranked(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->value != b->value) return a->value > b->value ? -1 : 1;
    return (a->index < b->index) - (a->index > b->index);
}

/* The indexes of the k largest logits, in that order; `order` has room for seq_len. */
static int top_indexes(const float *logits, int seq_len, int k, ranked *order) {
    for (int t = 0; t < seq_len; t++) {
        order[t].value = logits[t];
        order[t].index = t;
    }
    qsort(order, (size_t)seq_len, sizeof *order, compare_ranked);
    return k < seq_len ? k : seq_len;
}

/* ---- candidates ----------------------------------------------------------------------- */

typedef struct candidate_list {
    qa_post_candidate *items;
    long *order_added;  /* insertion sequence: Python's sort is stable */
    size_t len, cap;
} candidate_list;

static int push_candidate(candidate_list *list, const qa_post_candidate *c) {
    if (list->len == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 256;
        qa_post_candidate *items = realloc(list->items, cap * sizeof *items);
        if (!items) return -1;
        list->items = items;
        long *order = realloc(list->order_added, cap * sizeof *order);
        if (!order) return -1;
        list->order_added = order;
        list->cap = cap;
    }
    list->order_added[list->len] = (long)list->len;
    list->items[list->len++] = *c;
    return 0;
}

/* Sort key view used by qsort: score descending, then the order added. */
typedef struct sort_entry { float score; long added; size_t at; } sort_entry;

static int compare_sort_entries(const void *pa, const void *pb) {
    const sort_entry *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->added > b->added) - (a->added < b->added);
}

/* Keep the n best of list (stable, score descending) in place; list->len becomes <= n. */
static int keep_best(candidate_list *list, int n) {
    if (list->len == 0) return 0;
    sort_entry *keys = malloc(list->len * sizeof *keys);
    qa_post_candidate *sorted = malloc(list->len * sizeof *sorted);
    if (!keys || !sorted) {
        free(keys);
        free(sorted);
        return -1;
    }
    for (size_t i = 0; i < list->len; i++) {
        keys[i].score = list->items[i].score;
        keys[i].added = list->order_added[i];
        keys[i].at = i;
    }
    qsort(keys, list->len, sizeof *keys, compare_sort_entries);
    size_t kept = list->len < (size_t)n ? list->len : (size_t)n;
    for (size_t i = 0; i < kept; i++) sorted[i] = list->items[keys[i].at];
    memcpy(list->items, sorted, kept * sizeof *sorted);
    for (size_t i = 0; i < kept; i++) list->order_added[i] = (long)i;
    list->len = kept;
    free(keys);
    free(sorted);
    return 0;
}

/* All valid spans of one window (HF's double loop over the top start and end indexes). */
static int window_spans(const qa_post_window *w, int window, const qa_post_options *opt,
                        ranked *starts, ranked *ends, candidate_list *list) {
    int n_starts = top_indexes(w->start_logits, w->seq_len, opt->n_best, starts);
    int n_ends = top_indexes(w->end_logits, w->seq_len, opt->n_best, ends);
    for (int i = 0; i < n_starts; i++) {
        int s = starts[i].index;
        for (int j = 0; j < n_ends; j++) {
            int e = ends[j].index;
            if (!is_context_token(&w->offsets[s]) || !is_context_token(&w->offsets[e])) continue;
            if (e < s || e - s + 1 > opt->max_answer_length) continue;
            qa_post_candidate c = {0};
            c.kind = QA_POST_SPAN;
            c.start_logit = w->start_logits[s];
            c.end_logit = w->end_logits[e];
            c.score = c.start_logit + c.end_logit; /* float32 sum, as numpy */
            c.window = window;
            c.start_index = s;
            c.end_index = e;
            c.char_start = w->offsets[s].start;
            c.char_end = w->offsets[e].end;
            if (push_candidate(list, &c)) return -1;
        }
    }
    return 0;
}

/* ---- the example ------------------------------------------------------------------------ */

void qa_post_result_free(qa_post_result *result) {
    for (int i = 0; i < result->n_nbest; i++) free(result->nbest[i].text);
    free(result->nbest);
    free(result->answer);
    memset(result, 0, sizeof *result);
}

static int check_options(const qa_post_options *opt, bp_err *err) {
    if (opt->n_best < 1 || opt->n_best > 10000)
        return bp_err_set(err, "n_best %d is outside 1..10000", opt->n_best);
    if (opt->max_answer_length < 1)
        return bp_err_set(err, "max_answer_length %d is below 1", opt->max_answer_length);
    if (!isfinite(opt->null_score_diff_threshold))
        return bp_err_set(err, "null_score_diff_threshold is not finite");
    return 0;
}

/* Softmax of the n-best scores, max subtracted first (HF's LogSumExp trick), in double. */
static void set_probabilities(qa_post_candidate *c, int n) {
    double max = c[0].score, sum = 0.0;
    for (int i = 1; i < n; i++)
        if (c[i].score > max) max = c[i].score;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].score - max);
    for (int i = 0; i < n; i++) c[i].probability = exp((double)c[i].score - max) / sum;
}

/* Choose the answer from the finished n-best list (HF's last step). */
static int choose_answer(qa_post_result *r, const qa_post_options *opt, bp_err *err) {
    int chosen = 0;
    if (opt->version_2_with_negative) {
        int best = 0;
        while (best < r->n_nbest && r->nbest[best].text[0] == '\0') best++;
        if (best == r->n_nbest)
            return bp_err_set(err, "every n-best entry has empty text (degenerate offsets)");
        const qa_post_candidate *b = &r->nbest[best];
        r->score_diff = r->null_score - b->start_logit - b->end_logit; /* float32, as HF */
        chosen = best;
        if (r->score_diff > opt->null_score_diff_threshold) {
            /* The null entry is always in a v2 list (HF appends it when it fell out), as
             * kind NULL or as a span with offsets (0, 0) that HF takes for it. */
            r->predicted_null = 1;
            chosen = -1;
            for (int i = 0; i < r->n_nbest && chosen < 0; i++)
                if (r->nbest[i].kind == QA_POST_NULL) chosen = i;
            for (int i = 0; i < r->n_nbest && chosen < 0; i++)
                if (r->nbest[i].char_start == 0 && r->nbest[i].char_end == 0) chosen = i;
        }
    }
    r->answer_index = chosen;
    r->answer_score = r->predicted_null ? r->null_score : r->nbest[chosen].score;
    r->answer = strdup(r->predicted_null ? "" : r->nbest[chosen].text);
    if (!r->answer) return bp_err_set(err, "out of memory copying the answer");
    return 0;
}

int qa_post_process(const char *context, const qa_post_window *windows, int n_windows,
                    const qa_post_options *options, qa_post_result *out, bp_err *err) {
    memset(out, 0, sizeof *out);
    if (check_options(options, err)) return -1;
    if (n_windows < 1) return bp_err_set(err, "the example has no windows with logits");
    context_index ix = {0};
    candidate_list list = {0};
    ranked *starts = NULL, *ends = NULL;
    int rc = -1, max_len = 0;
    if (index_context(context, &ix, err)) goto done;
    for (int w = 0; w < n_windows; w++) {
        if (check_window(&windows[w], w, ix.n_codepoints, err)) goto done;
        if (windows[w].seq_len > max_len) max_len = windows[w].seq_len;
    }
    starts = malloc((size_t)max_len * sizeof *starts);
    ends = malloc((size_t)max_len * sizeof *ends);
    if (!starts || !ends) goto oom;

    /* The null answer: the window with the smallest [CLS] score (first one on ties). */
    qa_post_candidate null = {0};
    for (int w = 0; w < n_windows; w++) {
        float score = windows[w].start_logits[0] + windows[w].end_logits[0];
        if (w == 0 || null.score > score) {
            null.kind = QA_POST_NULL;
            null.score = score;
            null.start_logit = windows[w].start_logits[0];
            null.end_logit = windows[w].end_logits[0];
            null.window = w;
        }
        if (window_spans(&windows[w], w, options, starts, ends, &list)) goto oom;
    }
    if (options->version_2_with_negative) {
        if (push_candidate(&list, &null)) goto oom;
        out->null_score = null.score;
    }
    if (keep_best(&list, options->n_best)) goto oom;
    if (options->version_2_with_negative) {
        /* HF puts the null back when it fell out of the n best; it recognises it by
         * offsets (0, 0), so a span with those offsets counts as the null too. */
        int has_null = 0;
        for (size_t i = 0; i < list.len; i++)
            has_null |= list.items[i].char_start == 0 && list.items[i].char_end == 0;
        if (!has_null && push_candidate(&list, &null)) goto oom;
    }

    /* Texts, then HF's stand-in when no entry has any: "empty" with score 0, first. */
    size_t n = list.len;
    int only_empty_text = n == 0;
    out->nbest = calloc(n + 1, sizeof *out->nbest);
    if (!out->nbest) goto oom;
    for (size_t i = 0; i < n; i++) {
        qa_post_candidate *c = &list.items[i];
        c->text = slice_context(context, &ix, c->char_start, c->char_end);
        if (!c->text) goto oom;
    }
    if (n == 1 && list.items[0].text[0] == '\0') only_empty_text = 1;
    int at = 0;
    if (only_empty_text) {
        qa_post_candidate *stand_in = &out->nbest[at++];
        stand_in->kind = QA_POST_EMPTY;
        stand_in->window = -1;
        stand_in->start_index = stand_in->end_index = -1;
        stand_in->text = strdup("empty");
        out->n_nbest = 1;
        if (!stand_in->text) goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        out->nbest[at++] = list.items[i];
        list.items[i].text = NULL; /* now owned by out */
        out->n_nbest = at;
    }
    set_probabilities(out->nbest, out->n_nbest);
    if (choose_answer(out, options, err)) goto done;
    rc = 0;
    goto done;
oom:
    bp_err_set(err, "out of memory post-processing %d windows", n_windows);
done:
    for (size_t i = 0; i < list.len; i++) free(list.items[i].text);
    free(list.items);
    free(list.order_added);
    free(starts);
    free(ends);
    free(ix.byte_at);
    if (rc) qa_post_result_free(out);
    return rc;
}

/* ---- JSON files ---------------------------------------------------------------------------- */

static json_t *nbest_json(const qa_post_result *r) {
    json_t *list = json_array();
    for (int i = 0; list && i < r->n_nbest; i++) {
        const qa_post_candidate *c = &r->nbest[i];
        /* HF's key order: start_logit, end_logit, text, probability. */
        json_t *entry = json_pack("{s:f, s:f, s:s, s:f}", "start_logit", (double)c->start_logit,
                                  "end_logit", (double)c->end_logit, "text", c->text,
                                  "probability", c->probability);
        if (!entry || json_array_append_new(list, entry)) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

int qa_post_json_add(json_t *predictions, json_t *nbest, json_t *null_odds,
                     const char *example_id, const qa_post_result *result, bp_err *err) {
    if (json_object_get(predictions, example_id))
        return bp_err_set(err, "example %s was post-processed twice", example_id);
    if (json_object_set_new(predictions, example_id, json_string(result->answer)))
        return bp_err_set(err, "out of memory adding example %s (or its text is not UTF-8)",
                          example_id);
    if (nbest && json_object_set_new(nbest, example_id, nbest_json(result)))
        return bp_err_set(err, "out of memory adding the n-best list of example %s", example_id);
    if (null_odds && json_object_set_new(null_odds, example_id, json_real(result->score_diff)))
        return bp_err_set(err, "out of memory adding the null odds of example %s", example_id);
    return 0;
}

int qa_post_json_write_file(const json_t *root, const char *path, bp_err *err) {
    /* af_open's file gets the umask's mode (0644 usually), as every other output does. */
    af_file f;
    if (af_open(&f, path, err)) return -1;
    if (json_dumpf(root, f.fp, JSON_INDENT(4) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16)) != 0 ||
        fputc('\n', f.fp) == EOF) {
        af_abort(&f);
        return bp_err_set(err, "cannot write %s", path);
    }
    return af_commit(&f, err);
}
