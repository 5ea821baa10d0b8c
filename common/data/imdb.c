/* data/imdb.c — the IMDB review set, aclImdb_v1.tar.gz or its unpacked folder (see datasets.h).
 *
 * Every member SPLIT/pos/NAME.txt or SPLIT/neg/NAME.txt (under aclImdb/) is one review,
 * label pos = 1, neg = 0, as Hugging Face's `imdb` gives them; unsup/ and the other files
 * are skipped. The tar.gz is read in one forward pass, never extracted, and only one
 * review is in memory at a time. Must never: print, exit, or know about frames.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "data/sink.h"
#include "data/readers.h"


/* If name is ".../SPLIT/pos|neg/FILE.txt", set *label, *id_start (SPLIT/...) and *stem_len
 * (without ".txt") and return 1. */
static int review_member(const char *name, const char *split, int *label, const char **id_start, size_t *id_len) {
    size_t n = strlen(name);
    if (n < 5 || strcmp(name + n - 4, ".txt") != 0) return 0;
    const char *file = strrchr(name, '/');
    if (!file || file == name) return 0;
    const char *class_start = file - 1;
    while (class_start > name && class_start[-1] != '/') class_start--;
    size_t class_len = (size_t)(file - class_start);
    if (class_len == 3 && memcmp(class_start, "pos", 3) == 0) *label = 1;
    else if (class_len == 3 && memcmp(class_start, "neg", 3) == 0) *label = 0;
    else return 0;
    if (class_start == name) return 0;
    const char *split_end = class_start - 1;
    const char *split_start = split_end;
    while (split_start > name && split_start[-1] != '/') split_start--;
    size_t split_len = (size_t)(split_end - split_start);
    if (split_len != strlen(split) || memcmp(split_start, split, split_len) != 0) return 0;
    *id_start = split_start;
    *id_len = (size_t)(name + n - 4 - split_start);
    return 1;
}

int ds_read_imdb(const char *path, ds_sink *sink, bp_err *err) {
    int split = ds_split_of(sink->options, err);
    if (split < 0) return -1;
    if (split == DS_SPLIT_VALIDATION)
        return bp_err_set(err, "IMDB has only train and test splits; hold a validation side out of train with a validation ratio (%s)", path);
    const char *split_dir = ds_split_name(split);
    arc_input *in = arc_open(path, err);
    if (!in) return -1;
    ds_bytes text = {0};
    char *id = NULL;
    char chunk[65536];
    int rc = 0, got;
    int64_t found = 0;
    while ((got = arc_next_member(in, err)) == 1) {
        int label;
        const char *id_start;
        size_t id_len;
        if (!review_member(arc_member_name(in), split_dir, &label, &id_start, &id_len)) continue;
        found++;
        free(id);
        id = strndup(id_start, id_len);
        if (!id) {
            rc = bp_err_set(err, "out of memory (%s)", arc_where(in));
            break;
        }
        text.len = 0;
        ssize_t n;
        while ((n = arc_read(in, chunk, sizeof chunk, err)) > 0) {
            /* A review is a few KB; anything this big is not a review but a damaged member. */
            if (bp_check_limit(text.len + (size_t)n, BP_LIMIT_DOCUMENT_BYTES, "bytes", "a review", arc_where(in), err)) {
                rc = -1;
                break;
            }
            if (ds_bytes_append(&text, chunk, (size_t)n) != 0) {
                rc = bp_err_set(err, "out of memory (%s)", arc_where(in));
                break;
            }
        }
        if (n < 0) rc = -1;
        if (rc != 0) break;
        if (text.len == 0 && ds_bytes_append(&text, "", 0) != 0) {
            rc = bp_err_set(err, "out of memory (%s)", arc_where(in));
            break;
        }
        if (ds_check_text(text.data, text.len, "review", arc_where(in), 1, err) != 0) {
            rc = -1;
            break;
        }
        sink->stats->records++;
        ds_example example = {.id = id, .text = text.data, .label = label, .source = arc_where(in), .line = 1};
        int pushed = ds_sink_push(sink, &example, err);
        if (pushed != 0) {
            rc = pushed < 0 ? -1 : 0;
            break;
        }
    }
    if (got < 0) rc = -1;
    if (rc == 0 && got == 0 && found == 0)
        rc = bp_err_set(err, "no %s/pos or %s/neg reviews found: not an aclImdb archive or folder (%s)", split_dir,
                        split_dir, path);
    free(text.data);
    free(id);
    arc_close(in);
    return rc;
}
