/* data/sink.c — what every dataset reader shares (see sink.h): split names and split members,
 * seeded random numbers, UTF-8 checks, growable strings, example copies, and the sink every
 * reader pushes into, which applies the options common to all formats: empty-text policy,
 * UTF-8 check, hold-out side (holdout.c draws it), reservoir sample and limit.
 *
 * The readers (csv.c, imdb.c, squad.c, sst.c) call into this file; it calls none of them, so
 * the data layer has no include cycle. Must never: print, exit, or know about frames.
 */
#include "data/sink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/utf8.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}


/* ---- splits ----------------------------------------------------------------------- */

int ds_split_of(const ds_options *options, bp_err *err) {
    const char *split = options->split;
    if (!split || strcmp(split, "train") == 0) return DS_SPLIT_TRAIN;
    if (strcmp(split, "validation") == 0 || strcmp(split, "dev") == 0) return DS_SPLIT_VALIDATION;
    if (strcmp(split, "test") == 0) return DS_SPLIT_TEST;
    return bp_err_set(err, "unknown split '%s': expected train, validation (or dev) or test", split);
}

const char *ds_split_name(int split) {
    return split == DS_SPLIT_TRAIN ? "train" : split == DS_SPLIT_VALIDATION ? "validation" : "test";
}

arc_input *ds_open_split_member(const char *path, const ds_options *options,
                                const char *const member_names[3], bp_err *err) {
    int split = ds_split_of(options, err);
    if (split < 0) return NULL;
    arc_input *in = arc_open(path, err);
    if (!in) return NULL;
    if (arc_find_member(in, member_names[split], err) != 1) {
        arc_close(in);
        return NULL;
    }
    return in;
}

arc_input *ds_open_first_member(const char *path, const char *const suffixes[], bp_err *err) {
    arc_input *in = arc_open(path, err);
    if (!in) return NULL;
    int found;
    if (!arc_is_container(in)) {
        found = arc_next_member(in, err);
    } else {
        int matched = 0;
        while (!matched && (found = arc_next_member(in, err)) == 1)
            for (size_t i = 0; suffixes[i] && !matched; i++) matched = ends_with(arc_member_name(in), suffixes[i]);
        if (found == 0) bp_err_set(err, "no %s member (%s)", suffixes[0], path);
        if (found == 1) arc_want_only_current(in);
    }
    if (found != 1) {
        arc_close(in);
        return NULL;
    }
    return in;
}

/* ---- random numbers and text checks ------------------------------------------------ */

uint64_t ds_random_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t ds_random_below(uint64_t *state, uint64_t bound) {
    /* Reject the top partial range so every value is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = ds_random_next(state);
    while (r >= limit);
    return r % bound;
}

int ds_bytes_append(ds_bytes *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int is_blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return 0;
    return 1;
}

/* ---- example copies ---------------------------------------------------------------- */

static int copy_field(const char *from, const char **to) {
    if (!from) {
        *to = NULL;
        return 0;
    }
    size_t n = strlen(from) + 1;
    char *c = malloc(n);
    if (!c) return -1;
    memcpy(c, from, n);
    *to = c;
    return 0;
}

ds_example *ds_example_copy(const ds_example *example) {
    ds_example *copy = calloc(1, sizeof *copy);
    if (!copy) return NULL;
    *copy = *example;
    copy->id = copy->text = copy->title = copy->question = copy->context = copy->source = NULL;
    copy->answers = NULL;
    int failed = copy_field(example->id, &copy->id) | copy_field(example->text, &copy->text) |
                 copy_field(example->title, &copy->title) | copy_field(example->question, &copy->question) |
                 copy_field(example->context, &copy->context) | copy_field(example->source, &copy->source);
    if (!failed && example->n_answers) {
        ds_answer *answers = calloc(example->n_answers, sizeof *answers);
        copy->answers = answers;
        if (!answers) failed = 1;
        for (size_t i = 0; !failed && i < example->n_answers; i++) {
            answers[i] = example->answers[i];
            failed = copy_field(example->answers[i].text, &answers[i].text);
        }
    }
    if (failed) {
        ds_example_free(copy);
        return NULL;
    }
    return copy;
}

void ds_example_free(ds_example *example) {
    if (!example) return;
    if (example->answers)
        for (size_t i = 0; i < example->n_answers; i++) free((char *)example->answers[i].text);
    free((ds_answer *)example->answers);
    free((char *)example->id);
    free((char *)example->text);
    free((char *)example->title);
    free((char *)example->question);
    free((char *)example->context);
    free((char *)example->source);
    free(example);
}

/* ---- the sink ---------------------------------------------------------------------- */

static int deliver(ds_sink *sink, const ds_example *example, bp_err *err) {
    int rc = sink->emit(example, sink->user, err);
    if (rc < 0) {
        if (!err || !err->msg[0]) bp_err_set(err, "example consumer failed (%s:%lld)", example->source, (long long)example->line);
        return -1;
    }
    sink->stats->emitted++;
    if (rc > 0 || (sink->options->limit > 0 && sink->stats->emitted >= sink->options->limit)) {
        sink->stopped = 1;
        return 1;
    }
    return 0;
}

/* Line of byte `offset` of text that starts on line `first_line`. */
static int64_t line_of(const char *text, int64_t offset, int64_t first_line) {
    int64_t line = first_line;
    for (int64_t i = 0; i < offset; i++) line += text[i] == '\n';
    return line;
}

int ds_check_text(const char *text, size_t len, const char *what, const char *source, int64_t line, bp_err *err) {
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return bp_err_set(err, "NUL byte in %s (%s:%" PRId64 ")", what, source, line_of(text, nul - text, line));
    int64_t bad = bp_utf8_invalid_at(text, len);
    if (bad >= 0) {
        int64_t bad_line = line_of(text, bad, line), line_start = bad;
        while (line_start > 0 && text[line_start - 1] != '\n') line_start--;
        return bp_err_set(err, "%s is not valid UTF-8: byte 0x%02x at column %" PRId64 " (%s:%" PRId64 ")", what,
                          (unsigned char)text[bad], bad - line_start + 1, source, bad_line);
    }
    return 0;
}

/* Text fields must be UTF-8 (the tokenizer counts code points) and, unless skip_empty,
 * non-blank; ids and titles must be UTF-8 too (they travel as frame strings). Returns 0 to
 * keep, 1 to skip (counted), -1 with err filled. */
static int check_text(ds_sink *sink, const ds_example *example, bp_err *err) {
    const char *fields[] = {example->text, example->question, example->context, example->id, example->title};
    const char *names[] = {"text", "question", "context", "id", "title"};
    for (int i = 0; i < 5; i++) {
        if (!fields[i]) continue;
        if (ds_check_text(fields[i], strlen(fields[i]), names[i], example->source, example->line, err) != 0) return -1;
        if (i >= 3) continue;
        if (is_blank(fields[i])) {
            if (sink->options->skip_empty) {
                sink->stats->skipped_empty++;
                return 1;
            }
            return bp_err_set(err, "empty %s (%s:%lld, id %s)", names[i], example->source,
                              (long long)example->line, example->id);
        }
    }
    return 0;
}

int ds_sink_push(ds_sink *sink, ds_example *example, bp_err *err) {
    int checked = check_text(sink, example, err);
    if (checked != 0) return checked < 0 ? -1 : 0;
    if (sink->holdout.pass == DS_HOLDOUT_COUNT) return ds_holdout_record(&sink->holdout, example, err);
    if (sink->holdout.pass == DS_HOLDOUT_KEEP) {
        int kept = ds_holdout_keeps_next(&sink->holdout, example, err);
        if (kept == 0) sink->stats->skipped_other_side++;
        if (kept <= 0) return kept;
    }
    example->index = sink->next_index++;
    int64_t want = sink->options->sample;
    if (want <= 0) return deliver(sink, example, err);
    /* Algorithm R: the first `want` fill the reservoir, then example i replaces a random
     * slot with probability want / (i + 1). */
    int64_t slot = example->index < want ? example->index
                                         : (int64_t)ds_random_below(&sink->rng, (uint64_t)example->index + 1);
    if (slot >= want) return 0;
    ds_example *copy = ds_example_copy(example);
    if (!copy) return bp_err_set(err, "out of memory sampling examples (%s:%lld)", example->source, (long long)example->line);
    if (slot < sink->reservoir_fill) ds_example_free(sink->reservoir[slot]);
    else sink->reservoir_fill++;
    sink->reservoir[slot] = copy;
    return 0;
}

static int by_index(const void *a, const void *b) {
    const ds_example *x = *(ds_example *const *)a, *y = *(ds_example *const *)b;
    return (x->index > y->index) - (x->index < y->index);
}

/* Emit the sample in file order, so a sample reads like a subset of the file. */
int ds_sink_flush_sample(ds_sink *sink, bp_err *err) {
    qsort(sink->reservoir, (size_t)sink->reservoir_fill, sizeof *sink->reservoir, by_index);
    for (int64_t i = 0; i < sink->reservoir_fill; i++) {
        int rc = deliver(sink, sink->reservoir[i], err);
        if (rc < 0) return -1;
        if (rc > 0) break;
    }
    return 0;
}

