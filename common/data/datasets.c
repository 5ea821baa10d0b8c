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
    if (opts.validation_ratio < 0 || opts.validation_ratio >= 1)
        return bp_err_set(err, "validation ratio must be in [0, 1) (%s)", path);
    if (ds_split_of(&opts, err) < 0) return -1;

    ds_sink sink = {.options = &opts, .emit = emit, .user = user, .stats = stats,
                    .rng = opts.seed ^ 0x5DEECE66Dull};
    if (opts.sample > 0) {
        sink.reservoir = calloc((size_t)opts.sample, sizeof *sink.reservoir);
        if (!sink.reservoir) return bp_err_set(err, "out of memory for a sample of %lld (%s)", (long long)opts.sample, path);
    }
    int rc;
    switch (opts.format) {
    case DS_FORMAT_SST_TREES: rc = ds_read_sst_trees(path, &sink, err); break;
    case DS_FORMAT_SST_RAW: rc = ds_read_sst_raw(path, &sink, err); break;
    case DS_FORMAT_SST2: rc = ds_read_csv(path, &sink, 1, err); break;
    case DS_FORMAT_CSV: rc = ds_read_csv(path, &sink, 0, err); break;
    case DS_FORMAT_IMDB: rc = ds_read_imdb(path, &sink, err); break;
    case DS_FORMAT_SQUAD: rc = ds_read_squad(path, &sink, err); break;
    default: rc = bp_err_set(err, "no reader for format %d (%s)", (int)opts.format, path); break;
    }
    if (rc == 0 && opts.sample > 0) rc = ds_sink_flush_sample(&sink, err);
    for (int64_t i = 0; i < sink.reservoir_fill; i++) ds_example_free(sink.reservoir[i]);
    free(sink.reservoir);
    return rc < 0 ? -1 : 0;
}
