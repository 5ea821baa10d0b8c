/* qa_post_cases.h — post-processing cases in the JSON layout of
 * tests/fixtures/squad/postprocess-cases.json, loaded into qa_post_window arrays, and a
 * result written back in the layout of tests/reference/qa_postprocess_ref.py.
 *
 * Shared by tests/unit/test_qa_postprocess.c and tests/tools/qa_postprocess_run.c (the
 * parity driver). Test code only: header-only, static, aborts nothing, returns -1 on a
 * malformed case.
 */
#ifndef BP_QA_POST_CASES_H
#define BP_QA_POST_CASES_H
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "eval/qa_postprocess.h"

/* One case: {"name", "context", "options": {n_best, max_answer_length, v2, threshold},
 * "windows": [{"start": [..], "end": [..], "offsets": [[s, e] or [-1, -1], ..]}]}. */
typedef struct qa_case {
    const char *name, *context;  /* borrowed from the JSON */
    qa_post_options options;
    int n_windows;
    qa_post_window *windows;
    float *logits;               /* all start/end logits, one allocation */
    qa_post_offset *offsets;     /* all offsets, one allocation */
} qa_case;

static inline void qa_case_free(qa_case *c) {
    free(c->windows);
    free(c->logits);
    free(c->offsets);
    memset(c, 0, sizeof *c);
}

static inline int qa_case_load(const json_t *j, qa_case *c) {
    memset(c, 0, sizeof *c);
    c->name = json_string_value(json_object_get(j, "name"));
    c->context = json_string_value(json_object_get(j, "context"));
    json_t *o = json_object_get(j, "options"), *windows = json_object_get(j, "windows");
    qa_post_options_default(&c->options);
    c->options.n_best = (int)json_integer_value(json_object_get(o, "n_best"));
    c->options.max_answer_length = (int)json_integer_value(json_object_get(o, "max_answer_length"));
    c->options.version_2_with_negative = json_is_true(json_object_get(o, "v2"));
    c->options.null_score_diff_threshold = (float)json_number_value(json_object_get(o, "threshold"));
    c->n_windows = (int)json_array_size(windows);
    size_t tokens = 0, i;
    json_t *w;
    json_array_foreach(windows, i, w) tokens += json_array_size(json_object_get(w, "offsets"));
    c->windows = calloc((size_t)c->n_windows + 1, sizeof *c->windows);
    c->logits = calloc(2 * tokens + 1, sizeof *c->logits);
    c->offsets = calloc(tokens + 1, sizeof *c->offsets);
    if (!c->context || !c->windows || !c->logits || !c->offsets) return -1;
    size_t at = 0;
    json_array_foreach(windows, i, w) {
        json_t *start = json_object_get(w, "start"), *end = json_object_get(w, "end");
        json_t *offsets = json_object_get(w, "offsets");
        size_t n = json_array_size(offsets);
        if (json_array_size(start) != n || json_array_size(end) != n) return -1;
        qa_post_window *win = &c->windows[i];
        win->seq_len = (int)n;
        win->start_logits = c->logits + 2 * at;
        win->end_logits = c->logits + 2 * at + n;
        win->offsets = c->offsets + at;
        for (size_t t = 0; t < n; t++) {
            c->logits[2 * at + t] = (float)json_number_value(json_array_get(start, t));
            c->logits[2 * at + n + t] = (float)json_number_value(json_array_get(end, t));
            json_t *pair = json_array_get(offsets, t);
            c->offsets[at + t].start = (int32_t)json_integer_value(json_array_get(pair, 0));
            c->offsets[at + t].end = (int32_t)json_integer_value(json_array_get(pair, 1));
        }
        at += n;
    }
    return 0;
}

static inline const char *qa_kind_name(qa_post_kind k) {
    return k == QA_POST_SPAN ? "span" : k == QA_POST_NULL ? "null" : "empty";
}

/* The result in the reference's layout; NULL when out of memory. */
static inline json_t *qa_result_to_json(const qa_post_result *r, int v2) {
    json_t *nbest = json_array();
    for (int i = 0; nbest && i < r->n_nbest; i++) {
        const qa_post_candidate *c = &r->nbest[i];
        if (json_array_append_new(nbest, json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:f}",
                "text", c->text, "kind", qa_kind_name(c->kind), "window", c->window,
                "score", (double)c->score, "start_logit", (double)c->start_logit,
                "end_logit", (double)c->end_logit, "probability", c->probability))) {
            json_decref(nbest);
            return NULL;
        }
    }
    if (!nbest) return NULL;
    json_t *out = json_pack("{s:s, s:b, s:f, s:o}", "answer", r->answer, "predicted_null",
                            r->predicted_null, "score_diff", (double)r->score_diff, "nbest", nbest);
    if (out && v2 && json_object_set_new(out, "null_score", json_real(r->null_score))) {
        json_decref(out);
        return NULL;
    }
    return out;
}

#endif
