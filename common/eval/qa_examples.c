/* eval/qa_examples.c — QA examples and their windows' logits by id (see qa_examples.h).
 * Must never: print or exit. */
#include "eval/qa_examples.h"

#include <stdlib.h>
#include <string.h>

void qa_examples_init(qa_examples *xs) { memset(xs, 0, sizeof *xs); }

/* FNV-1a: ids are short strings; any spread is enough for an open-addressing table. */
static uint64_t id_hash(const char *id, size_t len) {
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)id[i]) * 1099511628211ULL;
    return h;
}

/* The slot of id: where it is, or the empty slot where it would go. */
static size_t find_slot(const qa_examples *xs, const char *id, size_t len) {
    size_t mask = xs->n_slots - 1, i = (size_t)id_hash(id, len) & mask;
    for (;; i = (i + 1) & mask) {
        size_t at = xs->slots[i];
        if (!at) return i;
        const char *other = xs->ex[at - 1].id;
        if (strlen(other) == len && memcmp(other, id, len) == 0) return i;
    }
}

/* Keep the table at most half full, so a probe always ends at an empty slot. */
static int grow_slots(qa_examples *xs, bp_err *err) {
    if (xs->n_slots && 2 * (xs->n + 1) <= xs->n_slots) return 0;
    size_t n_slots = xs->n_slots ? 2 * xs->n_slots : 1024;
    size_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return bp_err_set(err, "out of memory for %zu examples", xs->n);
    free(xs->slots);
    xs->slots = slots;
    xs->n_slots = n_slots;
    for (size_t k = 0; k < xs->n; k++) xs->slots[find_slot(xs, xs->ex[k].id, strlen(xs->ex[k].id))] = k + 1;
    return 0;
}

static void example_free(qa_example *e) {
    for (int i = 0; i < e->n_windows; i++) {
        free(e->windows[i].start);
        free(e->windows[i].end);
        free(e->windows[i].offsets);
    }
    for (int i = 0; i < e->n_answers; i++) free(e->answers[i]);
    free(e->answers);
    free(e->windows);
    free(e->id);
    free(e->context);
    memset(e, 0, sizeof *e);
}

int qa_examples_add(qa_examples *xs, const char *id, size_t id_len, const char *context, size_t context_len,
                    const char *const *answers, const size_t *answer_lens, int n_answers, int is_impossible,
                    bp_err *err) {
    if (grow_slots(xs, err)) return -1;
    size_t slot = find_slot(xs, id, id_len);
    if (xs->slots[slot]) return 1;
    if (xs->n == xs->cap) {
        size_t cap = xs->cap ? 2 * xs->cap : 1024;
        qa_example *ex = realloc(xs->ex, cap * sizeof *ex);
        if (!ex) return bp_err_set(err, "out of memory for %zu examples", xs->n);
        xs->ex = ex;
        xs->cap = cap;
    }
    qa_example *e = &xs->ex[xs->n];
    *e = (qa_example){.is_impossible = is_impossible, .id = strndup(id, id_len),
                      .context = strndup(context, context_len), .answers = calloc((size_t)n_answers + 1, sizeof *e->answers)};
    int ok = e->id && e->context && e->answers;
    for (int i = 0; ok && i < n_answers; i++, e->n_answers++) ok = (e->answers[i] = strndup(answers[i], answer_lens[i])) != NULL;
    if (!ok) {
        example_free(e);
        return bp_err_set(err, "out of memory for %zu examples", xs->n);
    }
    xs->slots[slot] = ++xs->n;
    return 0;
}

qa_example *qa_examples_find(const qa_examples *xs, const char *id, size_t id_len) {
    if (!xs->n_slots) return NULL;
    size_t at = xs->slots[find_slot(xs, id, id_len)];
    return at ? &xs->ex[at - 1] : NULL;
}

int qa_example_add_window(qa_example *e, int window, int T, const float *start, const float *end,
                          const int32_t *offsets, int32_t gold_start, int32_t gold_end, bp_err *err) {
    if (e->n_windows == e->cap_windows) {
        int cap = e->cap_windows ? 2 * e->cap_windows : 4;
        qa_window_logits *w = realloc(e->windows, (size_t)cap * sizeof *w);
        if (!w) return bp_err_set(err, "out of memory (example %s)", e->id);
        e->windows = w;
        e->cap_windows = cap;
    }
    qa_window_logits *w = &e->windows[e->n_windows];
    *w = (qa_window_logits){.window = window, .T = T, .gold_start = gold_start, .gold_end = gold_end,
                            .start = malloc((size_t)T * sizeof *w->start), .end = malloc((size_t)T * sizeof *w->end),
                            .offsets = malloc((size_t)T * sizeof *w->offsets)};
    if (!w->start || !w->end || !w->offsets) {
        free(w->start);
        free(w->end);
        free(w->offsets);
        return bp_err_set(err, "out of memory (example %s)", e->id);
    }
    memcpy(w->start, start, (size_t)T * sizeof *w->start);
    memcpy(w->end, end, (size_t)T * sizeof *w->end);
    for (int t = 0; t < T; t++) w->offsets[t] = (qa_post_offset){offsets[2 * t], offsets[2 * t + 1]};
    e->n_windows++;
    return 0;
}

static int cmp_window(const void *a, const void *b) {
    return ((const qa_window_logits *)a)->window - ((const qa_window_logits *)b)->window;
}

int qa_example_predict(qa_example *e, const qa_post_options *options, qa_post_result *res, bp_err *err) {
    memset(res, 0, sizeof *res);
    qsort(e->windows, (size_t)e->n_windows, sizeof *e->windows, cmp_window);
    for (int i = 1; i < e->n_windows; i++)
        if (e->windows[i].window == e->windows[i - 1].window)
            /* a stream replayed twice or a fan-in counted twice: never score a window twice */
            return bp_err_set(err, "window %d has logits twice: a stream replayed, or an evaluation over more than one epoch?",
                              e->windows[i].window);
    qa_post_window *pw = calloc((size_t)e->n_windows, sizeof *pw);
    if (!pw) return bp_err_set(err, "out of memory");
    for (int i = 0; i < e->n_windows; i++)
        pw[i] = (qa_post_window){.seq_len = e->windows[i].T, .start_logits = e->windows[i].start,
                                 .end_logits = e->windows[i].end, .offsets = e->windows[i].offsets};
    int rc = qa_post_process(e->context, pw, e->n_windows, options, res, err);
    free(pw);
    return rc;
}

void qa_examples_clear_windows(qa_examples *xs) {
    for (size_t k = 0; k < xs->n; k++) {
        qa_example *e = &xs->ex[k];
        for (int i = 0; i < e->n_windows; i++) {
            free(e->windows[i].start);
            free(e->windows[i].end);
            free(e->windows[i].offsets);
        }
        e->n_windows = 0;
    }
}

void qa_examples_free(qa_examples *xs) {
    for (size_t k = 0; k < xs->n; k++) example_free(&xs->ex[k]);
    free(xs->ex);
    free(xs->slots);
    memset(xs, 0, sizeof *xs);
}
