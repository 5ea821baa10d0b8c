/* data/datasets.c — the front of the dataset readers (see datasets.h): format names and
 * guessing, label names, and ds_read, which builds the sink (sink.c) and dispatches to the
 * per-format reader (csv.c, imdb.c, squad.c, sst.c).
 *
 * Must never: print, exit, or know about frames: a stage turns examples into frames.
 */
#include "data/datasets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/archive_input.h"
#include "data/readers.h"

/* ---- format names ----------------------------------------------------------------- */

static const struct {
    ds_format format;
    const char *name;
} format_names[] = {
    {DS_FORMAT_AUTO, "auto"},       {DS_FORMAT_SST_TREES, "sst-trees"}, {DS_FORMAT_SST_RAW, "sst-raw"},
    {DS_FORMAT_SST2, "sst2"},       {DS_FORMAT_IMDB, "imdb"},           {DS_FORMAT_CSV, "csv"},
    {DS_FORMAT_SQUAD, "squad"},
};

int ds_format_parse(const char *name, ds_format *format, bp_err *err) {
    for (size_t i = 0; i < sizeof format_names / sizeof *format_names; i++)
        if (strcmp(name, format_names[i].name) == 0) {
            *format = format_names[i].format;
            return 0;
        }
    return bp_err_set(err, "unknown dataset format '%s': expected auto, sst-trees, sst-raw, sst2, imdb, csv or squad (--format)", name);
}

const char *ds_format_name(ds_format format) {
    for (size_t i = 0; i < sizeof format_names / sizeof *format_names; i++)
        if (format_names[i].format == format) return format_names[i].name;
    return "auto";
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int ds_format_guess(const char *path, ds_format *format, bp_err *err) {
    char name[4096];
    snprintf(name, sizeof name, "%s", path);
    size_t n = strlen(name);
    while (n > 1 && name[n - 1] == '/') name[--n] = '\0';
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    /* Order matters: the names are checked most specific first. */
    if (strstr(base, "aclImdb")) *format = DS_FORMAT_IMDB;
    else if (strstr(base, "stanfordSentimentTreebank")) *format = DS_FORMAT_SST_RAW;
    else if (strstr(base, "trainDevTestTrees") || strcmp(base, "trees") == 0 ||
             (strstr(name, "trees/") && ends_with(base, ".txt")))
        *format = DS_FORMAT_SST_TREES;
    else if (strstr(base, "SST-2") || strstr(base, "sst2")) *format = DS_FORMAT_SST2;
    else if (ends_with(base, ".json") || ends_with(base, ".json.gz") || ends_with(base, ".json.zip"))
        *format = DS_FORMAT_SQUAD;
    else if (ends_with(base, ".csv") || ends_with(base, ".tsv") || ends_with(base, ".csv.gz") ||
             ends_with(base, ".tsv.gz"))
        *format = DS_FORMAT_CSV;
    else
        return bp_err_set(err, "cannot guess the dataset format from the name; give one of sst-trees, sst-raw, sst2, imdb, csv, squad (%s)", path);
    return 0;
}

int ds_label_names(const char *path, const ds_options *options, char *out, size_t size, bp_err *err) {
    ds_format format = options->format;
    if (format == DS_FORMAT_AUTO && ds_format_guess(path, &format, err) != 0) return -1;
    const char *names = "";
    switch (format) {
    case DS_FORMAT_SST_TREES:
        names = options->binary ? "negative,positive" : "very negative,negative,neutral,positive,very positive";
        break;
    case DS_FORMAT_SST_RAW: names = options->binary ? "negative,positive" : ""; break;
    case DS_FORMAT_SST2: names = "negative,positive"; break;
    case DS_FORMAT_IMDB: names = "neg,pos"; break;
    case DS_FORMAT_CSV: names = options->label_map ? options->label_map : ""; break;
    default: break;
    }
    if (strlen(names) + 1 > size) return bp_err_set(err, "label names do not fit in %zu bytes (%s)", size, path);
    strcpy(out, names);
    if (!*names) return 0;
    int count = 1;
    for (const char *c = names; *c; c++) count += *c == ',';
    return count;
}

const char *ds_origin_name(ds_origin origin) {
    return origin == DS_ORIGIN_MEMBER ? "member" : origin == DS_ORIGIN_WHOLE ? "whole" : "held-out";
}

/* Whether the format's splits are parts of the source (members) or the source is one split. */
static int own_origin(const char *path, ds_format format, ds_origin *origin, bp_err *err) {
    switch (format) {
    case DS_FORMAT_SST_RAW:
    case DS_FORMAT_IMDB: *origin = DS_ORIGIN_MEMBER; return 0;
    case DS_FORMAT_SST_TREES:
    case DS_FORMAT_SST2: {
        arc_input *in = arc_open(path, err);
        if (!in) return -1;
        *origin = arc_is_container(in) ? DS_ORIGIN_MEMBER : DS_ORIGIN_WHOLE;
        arc_close(in);
        return 0;
    }
    default: *origin = DS_ORIGIN_WHOLE; return 0; /* csv and squad read one file, whatever the split */
    }
}

/* The hold-out cuts the asked split out of the train split when the split has a ratio. */
static int holdout_carves(const ds_options *options, int split) {
    return (split == DS_SPLIT_TRAIN && (options->validation_ratio > 0 || options->test_ratio > 0)) ||
           (split == DS_SPLIT_VALIDATION && options->validation_ratio > 0) ||
           (split == DS_SPLIT_TEST && options->test_ratio > 0);
}

int ds_split_info_of(const char *path, const ds_options *options, ds_split_info *info, bp_err *err) {
    ds_format format = options->format;
    if (format == DS_FORMAT_AUTO && ds_format_guess(path, &format, err) != 0) return -1;
    int split = ds_split_of(options, err);
    ds_origin own;
    if (split < 0 || own_origin(path, format, &own, err) != 0) return -1;
    int carved = holdout_carves(options, split);
    info->split = ds_split_name(split);
    info->origin = carved ? DS_ORIGIN_HELD_OUT : own;
    info->part = own == DS_ORIGIN_WHOLE ? "all" : carved ? "train" : ds_split_name(split);
    return 0;
}

/* One pass of the format's reader over path into sink. */
static int read_format(const char *path, ds_sink *sink, bp_err *err) {
    switch (sink->options->format) {
    case DS_FORMAT_SST_TREES: return ds_read_sst_trees(path, sink, err);
    case DS_FORMAT_SST_RAW: return ds_read_sst_raw(path, sink, err);
    case DS_FORMAT_SST2: return ds_read_csv(path, sink, 1, err);
    case DS_FORMAT_CSV: return ds_read_csv(path, sink, 0, err);
    case DS_FORMAT_IMDB: return ds_read_imdb(path, sink, err);
    case DS_FORMAT_SQUAD: return ds_read_squad(path, sink, err);
    default: return bp_err_set(err, "no reader for format %d (%s)", (int)sink->options->format, path);
    }
}

/* A held-out side: count the train split's examples (their labels), draw the sides, then read
 * it again keeping the side asked for. */
static int read_held_out(const char *path, const ds_options *opts, int split, ds_sink *sink, bp_err *err) {
    ds_options train_opts = *opts;
    train_opts.split = "train";
    ds_stats first_pass = {0};
    ds_sink counter = {.options = &train_opts, .stats = &first_pass,
                       .holdout = {.pass = DS_HOLDOUT_COUNT, .stratify = opts->stratify}};
    int rc = read_format(path, &counter, err);
    if (rc == 0) rc = ds_holdout_assign(&counter.holdout, opts->validation_ratio, opts->test_ratio, opts->seed, path, err);
    if (rc == 0) {
        sink->options = &train_opts;
        sink->holdout = counter.holdout;
        sink->holdout.pass = DS_HOLDOUT_KEEP;
        sink->holdout.keep = split;
        memset(&counter.holdout, 0, sizeof counter.holdout);
        rc = read_format(path, sink, err);
        if (rc == 0 && !sink->stopped && sink->holdout.position != sink->holdout.count)
            rc = bp_err_set(err, "the source changed while it was read: %lld examples, %lld in the first pass (%s)",
                            (long long)sink->holdout.position, (long long)sink->holdout.count, path);
        if (rc == 0 && sink->options->sample > 0) rc = ds_sink_flush_sample(sink, err);
        sink->options = opts;
    }
    ds_holdout_free(&counter.holdout);
    ds_holdout_free(&sink->holdout);
    return rc;
}

int ds_read(const char *path, const ds_options *options, ds_emit_fn emit, void *user,
            ds_stats *stats, bp_err *err) {
    ds_stats local_stats;
    if (!stats) stats = &local_stats;
    memset(stats, 0, sizeof *stats);
    if (err) err->msg[0] = '\0';
    ds_options opts = *options;
    if (opts.format == DS_FORMAT_AUTO && ds_format_guess(path, &opts.format, err) != 0) return -1;
    if (opts.sample < 0 || opts.limit < 0)
        return bp_err_set(err, "sample and limit must be >= 0 (%s)", path);
    if (opts.validation_ratio < 0 || opts.validation_ratio >= 1 || opts.test_ratio < 0 || opts.test_ratio >= 1 ||
        opts.validation_ratio + opts.test_ratio >= 1)
        return bp_err_set(err, "validation and test ratios must be in [0, 1) and add up to less than 1 (%s)", path);
    int split = ds_split_of(&opts, err);
    if (split < 0) return -1;
    int holding_out = opts.validation_ratio > 0 || opts.test_ratio > 0, carved = holdout_carves(&opts, split);
    if (opts.stratify && !holding_out)
        return bp_err_set(err, "stratify is for a hold-out: give a validation or test ratio (%s)", path);
    if (holding_out && !carved) {
        /* The side without a ratio is the format's own split: one file has none. */
        ds_split_info info;
        if (ds_split_info_of(path, &opts, &info, err) != 0) return -1;
        if (info.origin == DS_ORIGIN_WHOLE)
            return bp_err_set(err, "a single-split source has no %s split of its own: hold one out too with a %s ratio (%s)",
                              info.split, info.split, path);
    }

    ds_sink sink = {.options = &opts, .emit = emit, .user = user, .stats = stats,
                    .rng = opts.seed ^ 0x5DEECE66Dull};
    if (opts.sample > 0) {
        sink.reservoir = calloc((size_t)opts.sample, sizeof *sink.reservoir);
        if (!sink.reservoir) return bp_err_set(err, "out of memory for a sample of %lld (%s)", (long long)opts.sample, path);
    }
    int rc;
    if (carved) {
        rc = read_held_out(path, &opts, split, &sink, err);
    } else {
        rc = read_format(path, &sink, err);
        if (rc == 0 && opts.sample > 0) rc = ds_sink_flush_sample(&sink, err);
    }
    for (int64_t i = 0; i < sink.reservoir_fill; i++) ds_example_free(sink.reservoir[i]);
    free(sink.reservoir);
    return rc < 0 ? -1 : 0;
}
