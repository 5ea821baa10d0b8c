/* data/holdout.c — the seeded hold-out every format shares (see sink.h): which examples of a
 * train split are its validation side, which its test side, which stay for training.
 *
 * ds_read reads the split twice. The first pass records the label of each example in read
 * order; ds_holdout_assign draws the sides; the second pass keeps the side asked for. Each
 * side is exactly ceil(ratio * n) examples (Hugging Face's train_test_split rounds its test
 * side up the same way), every subset of that size equally likely (Floyd's algorithm on the
 * seeded splitmix64 of sink.c), so the sides are disjoint by construction and a seed gives the
 * same sides on every machine. Validation is drawn first, with the stream CSV's own split
 * used before this file existed, so its rows are unchanged, and a test ratio added later
 * leaves the validation side as it was. Stratified, each label's share of a side is its share
 * of the split, rounded by largest remainder so that the side's total stays exact, drawn
 * among that label's examples.
 *
 * Memory: 5 bytes an example (label and side), never the examples themselves.
 * Must never: print, exit, or know about frames.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/sink.h"

int ds_holdout_record(ds_holdout *h, const ds_example *example, bp_err *err) {
    if (h->stratify && example->label < 0)
        return bp_err_set(err, "cannot stratify by label: example %s has none (%s:%lld)", example->id,
                          example->source, (long long)example->line);
    if (h->count == h->cap) {
        int64_t cap = h->cap ? h->cap * 2 : 1024;
        int32_t *grown = realloc(h->labels, (size_t)cap * sizeof *grown);
        if (!grown) return bp_err_set(err, "out of memory holding out examples (%s)", example->source);
        h->labels = grown;
        h->cap = cap;
    }
    h->labels[h->count++] = example->label;
    return 0;
}

int ds_holdout_keeps_next(ds_holdout *h, const ds_example *example, bp_err *err) {
    if (h->position >= h->count)
        return bp_err_set(err, "the source changed while it was read: more than the %lld examples of the first pass (%s:%lld)",
                          (long long)h->count, example->source, (long long)example->line);
    return h->sides[h->position++] == h->keep;
}

void ds_holdout_free(ds_holdout *h) {
    free(h->labels);
    free(h->sides);
    memset(h, 0, sizeof *h);
}

/* Examples still on the train side, grouped by label when stratified (positions in read order
 * inside a group). */
typedef struct candidates {
    int64_t *positions; /* n, grouped */
    int64_t n;
    int64_t *group_start; /* groups + 1 offsets into positions */
    int64_t *group_size;  /* examples of the group's label in the whole split */
    int64_t groups;
} candidates;

static int by_label_then_position(const void *a, const void *b, void *labels_of) {
    const int32_t *labels = labels_of;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (labels[x] != labels[y]) return labels[x] < labels[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int gather(const ds_holdout *h, int stratify, candidates *c, bp_err *err) {
    int64_t n = h->count;
    memset(c, 0, sizeof *c);
    c->positions = malloc((size_t)(n ? n : 1) * sizeof *c->positions);
    c->group_start = malloc((size_t)(n + 2) * sizeof *c->group_start);
    c->group_size = calloc((size_t)(n + 1), sizeof *c->group_size);
    int64_t *all = malloc((size_t)(n ? n : 1) * sizeof *all);
    if (!c->positions || !c->group_start || !c->group_size || !all) {
        free(all);
        return bp_err_set(err, "out of memory holding out %lld examples", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) all[i] = i;
    if (stratify) qsort_r(all, (size_t)n, sizeof *all, by_label_then_position, h->labels);
    for (int64_t i = 0; i < n; i++) {
        int new_group = i == 0 || (stratify && h->labels[all[i]] != h->labels[all[i - 1]]);
        if (new_group) c->group_start[c->groups++] = c->n;
        c->group_size[c->groups - 1]++;
        if (h->sides[all[i]] == DS_SPLIT_TRAIN) c->positions[c->n++] = all[i];
    }
    c->group_start[c->groups] = c->n;
    free(all);
    return 0;
}

static void candidates_free(candidates *c) {
    free(c->positions);
    free(c->group_start);
    free(c->group_size);
}

/* How many of k each group gives: its share k * size / n, floored, then one more to the
 * largest remainders (ties: the lower label) until the total is k, never more than it has. */
static int share(const candidates *c, int64_t n, int64_t k, int64_t *take, bp_err *err) {
    double *remainder = malloc((size_t)(c->groups ? c->groups : 1) * sizeof *remainder);
    if (!remainder) return bp_err_set(err, "out of memory holding out %lld examples", (long long)n);
    int64_t given = 0;
    for (int64_t g = 0; g < c->groups; g++) {
        int64_t available = c->group_start[g + 1] - c->group_start[g];
        double quota = (double)k * (double)c->group_size[g] / (double)n;
        take[g] = (int64_t)floor(quota);
        if (take[g] > available) take[g] = available;
        remainder[g] = quota - floor(quota);
        given += take[g];
    }
    while (given < k) {
        int64_t best = -1;
        for (int64_t g = 0; g < c->groups; g++)
            if (take[g] < c->group_start[g + 1] - c->group_start[g] && (best < 0 || remainder[g] > remainder[best]))
                best = g;
        if (best < 0) break; /* cannot happen: the caller checked there are k candidates */
        take[best]++;
        remainder[best] = -1.0; /* one extra each, then the next largest */
        given++;
        int any = 0;
        for (int64_t g = 0; g < c->groups; g++) any |= remainder[g] >= 0 && take[g] < c->group_start[g + 1] - c->group_start[g];
        if (!any)
            for (int64_t g = 0; g < c->groups; g++) remainder[g] = 0.0;
    }
    free(remainder);
    return 0;
}

/* Put exactly k of the candidates on `side`: Floyd's algorithm per group, one draw each. */
static int draw_side(ds_holdout *h, int side, int64_t k, int stratify, uint64_t *state, bp_err *err) {
    if (k <= 0) return 0;
    candidates c;
    if (gather(h, stratify, &c, err) != 0) {
        candidates_free(&c);
        return -1;
    }
    int64_t *take = malloc((size_t)(c.groups ? c.groups : 1) * sizeof *take);
    int rc = take ? share(&c, h->count, k, take, err) : bp_err_set(err, "out of memory holding out examples");
    for (int64_t g = 0; rc == 0 && g < c.groups; g++) {
        const int64_t *group = c.positions + c.group_start[g];
        int64_t m = c.group_start[g + 1] - c.group_start[g];
        for (int64_t j = m - take[g]; j < m; j++) {
            int64_t t = (int64_t)ds_random_below(state, (uint64_t)j + 1);
            if (h->sides[group[t]] == side) t = j;
            h->sides[group[t]] = (uint8_t)side;
        }
    }
    free(take);
    candidates_free(&c);
    return rc;
}

static int64_t side_size(double ratio, int64_t n) {
    if (ratio <= 0) return 0;
    int64_t k = (int64_t)ceil(ratio * (double)n);
    return k > n ? n : k;
}

int ds_holdout_assign(ds_holdout *h, double validation_ratio, double test_ratio, uint64_t seed, const char *where,
                      bp_err *err) {
    int64_t n = h->count;
    int64_t validation = side_size(validation_ratio, n), test = side_size(test_ratio, n);
    if (n > 0 && validation + test >= n)
        return bp_err_set(err, "holding out %lld validation and %lld test examples of %lld leaves none to train on (%s)",
                          (long long)validation, (long long)test, (long long)n, where);
    free(h->sides);
    if (!(h->sides = calloc((size_t)(n ? n : 1), 1)))
        return bp_err_set(err, "out of memory holding out %lld examples (%s)", (long long)n, where);
    /* Two streams, so that the validation side does not depend on the test ratio. */
    uint64_t validation_state = seed ^ 0xA0761D6478BD642Full, test_state = seed ^ 0xE7037ED1A0B428DBull;
    if (draw_side(h, DS_SPLIT_VALIDATION, validation, h->stratify, &validation_state, err) != 0) return -1;
    return draw_side(h, DS_SPLIT_TEST, test, h->stratify, &test_state, err);
}
