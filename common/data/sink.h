/* data/sink.h — what the dataset readers (csv.c, imdb.c, squad.c, sst.c) share; not public API.
 *
 * Every reader turns records into ds_example and pushes them into a ds_sink, which applies
 * the options common to all formats (empty-text policy, UTF-8 check, hold-out side, sample,
 * limit) and calls the user's callback. Implemented in sink.c and holdout.c, which call no
 * reader: readers depend on the sink, datasets.c on both, and nothing on datasets.c.
 * Must never: print, exit, or know about frames.
 */
#ifndef BP_DATA_SINK_H
#define BP_DATA_SINK_H
#include <stdint.h>

#include "base/archive_input.h"
#include "data/datasets.h"

enum ds_split { DS_SPLIT_TRAIN = 0, DS_SPLIT_VALIDATION = 1, DS_SPLIT_TEST = 2 };

/* The seeded hold-out (holdout.c). ds_read reads the train split twice: in the COUNT pass the
 * sink records each example's label and emits nothing; ds_holdout_assign draws the sides;
 * in the KEEP pass the sink passes on only the examples of side `keep`. */
enum ds_holdout_pass { DS_HOLDOUT_NONE = 0, DS_HOLDOUT_COUNT, DS_HOLDOUT_KEEP };

typedef struct ds_holdout {
    int pass;          /* enum ds_holdout_pass */
    int keep;          /* KEEP: the side passed on (enum ds_split) */
    int stratify;      /* COUNT: an example without a label is an error */
    int32_t *labels;   /* COUNT: the label of each example, in read order */
    uint8_t *sides;    /* after ds_holdout_assign: the side (enum ds_split) of each example */
    int64_t count, cap;
    int64_t position;  /* KEEP: examples seen so far */
} ds_holdout;

/* COUNT pass: note the example (its label). 0, or -1 with err filled (out of memory; no label
 * to stratify by). */
int ds_holdout_record(ds_holdout *h, const ds_example *example, bp_err *err);
/* Draw the sides of the h->count examples recorded: exactly ceil(validation_ratio * n)
 * validation and ceil(test_ratio * n) test, the rest train (see datasets.h). where names the
 * source in errors. 0, or -1 with err filled (out of memory; the ratios leave no training example). */
int ds_holdout_assign(ds_holdout *h, double validation_ratio, double test_ratio, uint64_t seed, const char *where,
                      bp_err *err);
/* KEEP pass: 1 when the next example is on the kept side, 0 when not, -1 with err filled
 * when there are more examples than the COUNT pass saw (the source changed). */
int ds_holdout_keeps_next(ds_holdout *h, const ds_example *example, bp_err *err);
void ds_holdout_free(ds_holdout *h);

typedef struct ds_sink {
    const ds_options *options;
    ds_emit_fn emit;
    void *user;
    ds_stats *stats;
    int64_t next_index;       /* index given to the next example that passes the filters */
    ds_example **reservoir;   /* options->sample slots, in use when sample > 0 */
    int64_t reservoir_fill;
    uint64_t rng;             /* sample's random state */
    ds_holdout holdout;
    int stopped;              /* the limit was reached or the callback asked to stop */
} ds_sink;

/* Hand one example to the sink (it sets example->index). Returns 0 to go on, 1 when the
 * limit is reached or the callback asked to stop, -1 with err filled. */
int ds_sink_push(ds_sink *sink, ds_example *example, bp_err *err);
/* At the end of a sampled read: deliver the reservoir in file order. 0 or -1 with err. */
int ds_sink_flush_sample(ds_sink *sink, bp_err *err);

/* The split named by options->split (NULL -> train). -1 with err filled when unknown. */
int ds_split_of(const ds_options *options, bp_err *err);
/* "train", "validation", "test". */
const char *ds_split_name(int split);

/* Open path and position on its split's member: in an archive or folder, the first member
 * named member_names[split] (or ending in "/" that name); a single file is its own member.
 * Returns the handle, or NULL with err filled (e.g. "no member dev.txt (PATH)"). */
arc_input *ds_open_split_member(const char *path, const ds_options *options,
                                const char *const member_names[3], bp_err *err);

/* Open path and position on its data: a single file is its own member; in an archive
 * or folder, the first member whose name ends with one of the NULL-terminated suffixes
 * (e.g. the .json inside a Kaggle zip). NULL with err filled when there is none. */
arc_input *ds_open_first_member(const char *path, const char *const suffixes[], bp_err *err);

/* Seeded random numbers (splitmix64): reproducible across platforms for a given seed. */
uint64_t ds_random_next(uint64_t *state);
/* Uniform integer in [0, bound), bound > 0, without modulo bias. */
uint64_t ds_random_below(uint64_t *state, uint64_t bound);

/* A growable byte string, always NUL-terminated after its len bytes. Zero-initialise;
 * free data when done. */
typedef struct ds_bytes {
    char *data;
    size_t len, cap;
} ds_bytes;
/* Append n bytes. Returns 0, or -1 when out of memory (b unchanged). */
int ds_bytes_append(ds_bytes *b, const char *s, size_t n);


#endif
