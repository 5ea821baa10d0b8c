/* data/datasets.h — dataset readers: public archives and files in, one example at a time out.
 *
 * Formats: the Stanford Sentiment Treebank PTB trees (trainDevTestTrees_PTB.zip or its
 * .txt files), the raw stanfordSentimentTreebank folder or zip (sentence scores, as
 * Hugging Face's `sst` default config), GLUE SST-2 TSV (plain or SST-2.zip), IMDB
 * (aclImdb_v1.tar.gz or its folder), any CSV/TSV with chosen columns, and SQuAD v1.1/v2.0
 * JSON (plain, .gz or .zip). Everything is read through archive_input.h, streaming; see
 * docs/extract.md for the exact text each format yields and how it matches Hugging Face.
 *
 * Readers hand each example to a callback as soon as it is read (so a stage can emit it at
 * once); the example and every string in it are only valid during the call. Options shared
 * by all formats: split, limit, a seeded reservoir sample, and a seeded hold-out of
 * validation and test sides from the train split (optionally stratified by label).
 * Must never: know about frames or sockets, print, or exit: errors fill a bp_err
 * "WHAT (FILE:LINE)" and the read stops.
 */
#ifndef BP_DATASETS_H
#define BP_DATASETS_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

typedef enum ds_format {
    DS_FORMAT_AUTO = 0,  /* guess from the path with ds_format_guess */
    DS_FORMAT_SST_TREES, /* "sst-trees": PTB trees, root label 0..4 (or binary) */
    DS_FORMAT_SST_RAW,   /* "sst-raw": datasetSentences + dictionary + labels, score in [0,1] */
    DS_FORMAT_SST2,      /* "sst2": GLUE SST-2 TSV */
    DS_FORMAT_IMDB,      /* "imdb": aclImdb pos/neg review files */
    DS_FORMAT_CSV,       /* "csv": any CSV/TSV with chosen columns */
    DS_FORMAT_SQUAD,     /* "squad": SQuAD v1.1 / v2.0 JSON */
} ds_format;

/* One answer of a QA example. */
typedef struct ds_answer {
    const char *text;
    int64_t start;  /* answer_start: Unicode code points into the context, as Python counts */
    int matches;    /* 1 when context[start : start + len(text)] (code points) equals text */
} ds_answer;

/* One example. Classification examples have text (QA fields NULL); QA examples have
 * question/context/title/answers (text NULL). */
typedef struct ds_example {
    const char *id;           /* the dataset's own id (see docs/extract.md per format) */
    const char *text;         /* classification text */
    int label;                /* class index, or -1 when the split carries no label */
    int has_score;            /* 1 when score is set (sst-raw) */
    double score;             /* sentiment in [0,1] (sst-raw) */
    const char *title;        /* QA: article title */
    const char *question;     /* QA */
    const char *context;      /* QA */
    const ds_answer *answers; /* QA: n_answers entries (0 for an unanswerable v2 question) */
    size_t n_answers;
    int is_impossible;        /* QA: SQuAD v2 "is_impossible" (0 for v1.1) */
    const char *source;       /* where it was read: "FILE" or "ARCHIVE:MEMBER" */
    int64_t line;             /* 1-based line where its record starts (article start for SQuAD) */
    int64_t index;            /* 0-based position among the split's examples, before sampling */
} ds_example;

/* Called once per example. Return 0 to go on, 1 to stop reading early (not an error),
 * -1 to abort with err filled (the reader returns -1 with that message). */
typedef int (*ds_emit_fn)(const ds_example *example, void *user, bp_err *err);

/* Everything a reader can be asked. Zero-initialise, then set what you need:
 * a zeroed struct means: guess the format, whole file, no limit, no sample. */
typedef struct ds_options {
    ds_format format;
    /* "train", "validation" (or "dev"), "test": which member of a multi-split archive or
     * folder to read (sst-trees, sst-raw, sst2, imdb); with a hold-out ratio, the side of the
     * train split to keep (see validation_ratio). NULL: "train". A single-split source (one
     * file; csv and squad always) is read whole whatever the split: ds_split_info_of says so. */
    const char *split;
    int64_t limit;            /* > 0: stop after this many examples */
    int64_t sample;           /* > 0: seeded reservoir sample of this many, emitted in file order */
    uint64_t seed;            /* seed for sample and the hold-out */
    int binary;               /* sst-trees: drop label 2, 0/1 -> 0, 3/4 -> 1 (GLUE SST-2);
                               * sst-raw: label = round(score) (score > 0.5 -> 1) */
    int keep_ptb_escapes;     /* sst-trees: keep -LRB- -RRB- \/ \* as in the trees (default:
                               * ( ) / * as GLUE SST-2 writes them) */
    int skip_empty;           /* empty text: 0 = error with file and line, 1 = skip and count */
    int answers_must_match;   /* squad: a mismatching answer_start is an error, not a count */
    /* csv */
    char delimiter;           /* ',' or '\t'; 0: '\t' for *.tsv, else ',' */
    int no_header;            /* 1: the first line is data; columns are then indexes */
    const char *text_column;  /* name, or 0-based index; default "sentence", then "text" */
    const char *label_column; /* name or index; default "label"; absent -> label -1 */
    const char *id_column;    /* name or index; default: 0-based row number */
    const char *label_map;    /* "-1,0,1,2" or "negative,positive": value i -> class i;
                               * NULL: labels must be non-negative integers */
    /* Hold-out, every format: 0 < r < 1 -> exactly ceil(r * n) seeded examples of the train
     * split's n are its "validation" side, ceil(t * n) others its "test" side, the rest its
     * "train" side; split picks the side. A side with no ratio (test without test_ratio) is
     * the format's own split, which a single-split source does not have (an error). The
     * sides are disjoint by example and the same seed gives the same sides everywhere. */
    double validation_ratio;
    double test_ratio;
    int stratify;             /* hold-out: each label keeps its share of every side (labels needed) */
} ds_options;

/* Counts of one read, for the stage's "counts in and out" line. */
typedef struct ds_stats {
    int64_t records;            /* records read from the split (before any filtering) */
    int64_t emitted;            /* examples handed to the callback */
    int64_t skipped_neutral;    /* sst binary: label 2 / not in the chosen split side */
    int64_t skipped_empty;      /* empty texts skipped (skip_empty) */
    int64_t skipped_other_side; /* hold-out: examples on another side of the train split */
    int64_t answers;            /* squad: answers checked */
    int64_t answer_mismatches;  /* squad: answers whose answer_start does not slice to text */
    int64_t impossible;         /* squad v2: unanswerable questions */
} ds_stats;

/* Read path in the format and with the options given, calling emit for each example in
 * file order. stats (may be NULL) is zeroed first and filled as it goes. A held-out side
 * reads the train split twice (the first pass only counts), so path must be a file or
 * folder that reads the same twice. Returns 0 when the whole split was read (or emit asked
 * to stop), -1 with err filled on any error — unreadable or truncated input, a tree that
 * does not parse, a missing column, an unknown label, empty text, a JSON that is not
 * SQuAD, ratios that leave nothing to train on, stratify without labels, or emit's own error. */
int ds_read(const char *path, const ds_options *options, ds_emit_fn emit, void *user,
            ds_stats *stats, bp_err *err);

/* Where the examples of a split come from, so that a consumer can judge whether two reads
 * can share examples. */
typedef enum ds_origin {
    DS_ORIGIN_MEMBER = 0, /* the split is its own part of the source: an archive member or a
                           * folder's file (sst-trees, sst2), IMDB's SPLIT/ folder, a code of
                           * sst-raw's datasetSplit.txt */
    DS_ORIGIN_WHOLE,      /* the source holds one split and is read whole (a single file, csv
                           * and squad always): every split name reads the same examples */
    DS_ORIGIN_HELD_OUT,   /* a seeded side of the train split (validation_ratio, test_ratio) */
} ds_origin;

typedef struct ds_split_info {
    ds_origin origin;
    const char *split; /* the split read, canonical: "train", "validation" or "test" */
    const char *part;  /* the part of the source its examples are drawn from: "train",
                        * "validation", "test" (a member; a held-out side: "train"), or "all"
                        * when that part is the whole source. Two reads of one source can share
                        * examples only when their parts are equal or one is "all". */
} ds_split_info;

/* What ds_read would read for path and options (opens path to tell a single file from an
 * archive or folder; reads no data). Returns 0 with info filled (static strings), or -1
 * with err filled (format not guessable, unknown split, unreadable path). */
int ds_split_info_of(const char *path, const ds_options *options, ds_split_info *info, bp_err *err);

/* "member", "whole", "held-out". Can't fail. */
const char *ds_origin_name(ds_origin origin);

/* Format by name ("sst-trees", "sst-raw", "sst2", "imdb", "csv", "squad"). Returns 0 and
 * sets *format, or -1 with err filled listing the names. */
int ds_format_parse(const char *name, ds_format *format, bp_err *err);

/* Format name ("sst-trees", ...); "auto" for DS_FORMAT_AUTO. Can't fail. */
const char *ds_format_name(ds_format format);

/* Guess the format from the path's name (e.g. *.json -> squad, aclImdb -> imdb,
 * trainDevTestTrees / trees -> sst-trees, SST-2 -> sst2, stanfordSentimentTreebank ->
 * sst-raw, *.csv / *.tsv -> csv). Returns 0 and sets *format, -1 with err filled. */
int ds_format_guess(const char *path, ds_format *format, bp_err *err);

/* The class names of what ds_read would yield for path and options, comma-separated into
 * out (size bytes), for the stream's schema: "very negative,negative,neutral,positive,very
 * positive" (sst-trees), "negative,positive" (sst-trees/sst-raw binary, sst2, as HF's
 * glue/sst2 ClassLabel), "neg,pos" (imdb, as HF's imdb), the label map (csv). Returns
 * the number of classes, 0 when the labels have no names (sst-raw scores, squad, csv
 * without a map: "" written), or -1 with err filled (format not guessable, out too small). */
int ds_label_names(const char *path, const ds_options *options, char *out, size_t size, bp_err *err);

/* Check text[0..len), which starts on line `line` of source, as every reader checks its
 * text: no NUL byte, valid UTF-8. Returns 0, or -1 with err = "NUL byte in WHAT
 * (SOURCE:LINE)" or "WHAT is not valid UTF-8: byte 0xNN at column C (SOURCE:LINE)", LINE
 * being the line of the bad byte. For callers reading text themselves (extract's lines). */
int ds_check_text(const char *text, size_t len, const char *what, const char *source, int64_t line, bp_err *err);

/* Deep copy of an example (for callers that keep examples past the callback). Returns
 * NULL on out-of-memory. Free with ds_example_free. */
ds_example *ds_example_copy(const ds_example *example);
void ds_example_free(ds_example *example);

#endif
