/* data/sst.c — the two Stanford Sentiment Treebank distributions (see datasets.h).
 *
 * PTB trees (trainDevTestTrees_PTB.zip: trees/{train,dev,test}.txt, one tree a line): the
 * sentence is the tree's leaves joined by single spaces with the PTB escapes undone
 * (-LRB- -RRB- \/ \*, as GLUE SST-2's sentences have them), the label
 * is the root's 0..4, or binary as GLUE SST-2 made it (2 dropped; 0,1 -> 0; 3,4 -> 1).
 *
 * Raw release (stanfordSentimentTreebank/): datasetSentences.txt (with Hugging Face's
 * encoding repair), datasetSplit.txt (1 train, 2 test, 3 dev), dictionary.txt (phrase|id)
 * and sentiment_labels.txt (id|value) give each sentence its phrase's score in [0,1].
 *
 * Must never: print, exit, or know about frames.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "data/readers.h"
#include "data/sink.h"

/* ---- PTB trees -------------------------------------------------------------------- */

/* Append a leaf to the sentence, separated by a space, undoing the Penn Treebank escapes
 * as GLUE SST-2 and Hugging Face's `sst` sentences do: -LRB- -> "(", -RRB- -> ")",
 * "\/" -> "/" and "\*" -> "*". Returns 0 or -1 when out of memory. */
static int append_unescaped_leaf(ds_bytes *sentence, const char *leaf, size_t n) {
    if (sentence->len && ds_bytes_append(sentence, " ", 1) != 0) return -1;
    if (n == 5 && memcmp(leaf, "-LRB-", 5) == 0) return ds_bytes_append(sentence, "(", 1);
    if (n == 5 && memcmp(leaf, "-RRB-", 5) == 0) return ds_bytes_append(sentence, ")", 1);
    for (size_t i = 0; i < n; i++) {
        if (leaf[i] == '\\' && i + 1 < n && (leaf[i + 1] == '/' || leaf[i + 1] == '*')) continue;
        if (ds_bytes_append(sentence, leaf + i, 1) != 0) return -1;
    }
    return 0;
}

/* Parse one tree "(L (L leaf) (L (L a) (L b)))": *root_label gets the root's label and
 * sentence the leaves joined by spaces. Returns 0, or -1 with err filled naming the column
 * (1-based) at where. */
static int parse_tree(const char *line, int keep_escapes, int *root_label, ds_bytes *sentence,
                      const char *where, int64_t line_number, bp_err *err) {
    const char *p = line;
    int depth = 0;
    int expecting_label = 0;
    sentence->len = 0;
    if (sentence->data) sentence->data[0] = '\0';
    *root_label = -1;
#define TREE_ERROR(...) bp_err_set(err, "tree does not parse: %s (%s:%lld, column %d)", __VA_ARGS__, where, \
                                   (long long)line_number, (int)(p - line) + 1)
    while (*p == ' ') p++;
    if (*p != '(') return TREE_ERROR("expected '('");
    while (*p) {
        if (*p == ' ') { p++; continue; }
        if (depth == 0 && *root_label >= 0) return TREE_ERROR("text after the root's ')'");
        if (*p == '(') {
            depth++;
            p++;
            expecting_label = 1;
            continue;
        }
        if (*p == ')') {
            if (expecting_label) return TREE_ERROR("empty node");
            depth--;
            p++;
            continue;
        }
        const char *start = p;
        while (*p && *p != ' ' && *p != '(' && *p != ')') p++;
        size_t n = (size_t)(p - start);
        if (depth == 0) { p = start; return TREE_ERROR("text outside the tree"); }
        if (expecting_label) {
            if (n != 1 || start[0] < '0' || start[0] > '4') { p = start; return TREE_ERROR("expected a label 0..4"); }
            if (depth == 1) *root_label = start[0] - '0';
            expecting_label = 0;
            continue;
        }
        /* A leaf: the node must close right after it. */
        const char *after = p;
        while (*after == ' ') after++;
        if (*after != ')') { p = after; return TREE_ERROR("expected ')' after a leaf"); }
        if (keep_escapes) {
            if ((sentence->len && ds_bytes_append(sentence, " ", 1) != 0) || ds_bytes_append(sentence, start, n) != 0)
                return bp_err_set(err, "out of memory (%s:%lld)", where, (long long)line_number);
            continue;
        }
        if (append_unescaped_leaf(sentence, start, n) != 0)
            return bp_err_set(err, "out of memory (%s:%lld)", where, (long long)line_number);
    }
    if (depth != 0) return TREE_ERROR("unbalanced parentheses: missing ')'");
    if (*root_label < 0) return TREE_ERROR("no root label");
    if (sentence->len == 0) return TREE_ERROR("tree has no leaves");
#undef TREE_ERROR
    return 0;
}

int ds_read_sst_trees(const char *path, ds_sink *sink, bp_err *err) {
    static const char *const members[3] = {"train.txt", "dev.txt", "test.txt"};
    arc_input *in = ds_open_split_member(path, sink->options, members, err);
    if (!in) return -1;
    ds_bytes sentence = {0};
    char *line;
    size_t len;
    int rc = 0, got;
    int64_t tree_number = 0;
    while ((got = arc_read_line(in, &line, &len, err)) == 1) {
        if (len == 0) continue;
        int64_t line_number = arc_line_number(in);
        int label;
        if (parse_tree(line, sink->options->keep_ptb_escapes, &label, &sentence, arc_where(in), line_number, err) != 0) {
            rc = -1;
            break;
        }
        sink->stats->records++;
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)tree_number++);
        if (sink->options->binary) {
            if (label == 2) {
                sink->stats->skipped_neutral++;
                continue;
            }
            label = label < 2 ? 0 : 1;
        }
        ds_example example = {.id = id, .text = sentence.data, .label = label, .source = arc_where(in),
                              .line = line_number};
        int pushed = ds_sink_push(sink, &example, err);
        if (pushed != 0) {
            rc = pushed < 0 ? -1 : 0;
            break;
        }
    }
    if (got < 0) rc = -1;
    free(sentence.data);
    arc_close(in);
    return rc;
}

/* ---- raw release: phrase dictionary ------------------------------------------------ */

/* Open-addressing hash map phrase -> phrase id, sized for dictionary.txt's 239,232 phrases. */
typedef struct phrase_map {
    char **phrases;
    int64_t *ids;
    size_t cap, count;
} phrase_map;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int phrase_map_grow(phrase_map *map) {
    size_t cap = map->cap ? map->cap * 2 : 1024;
    char **phrases = calloc(cap, sizeof *phrases);
    int64_t *ids = calloc(cap, sizeof *ids);
    if (!phrases || !ids) {
        free(phrases);
        free(ids);
        return -1;
    }
    for (size_t i = 0; i < map->cap; i++) {
        if (!map->phrases[i]) continue;
        size_t j = hash_bytes(map->phrases[i], strlen(map->phrases[i])) & (cap - 1);
        while (phrases[j]) j = (j + 1) & (cap - 1);
        phrases[j] = map->phrases[i];
        ids[j] = map->ids[i];
    }
    free(map->phrases);
    free(map->ids);
    map->phrases = phrases;
    map->ids = ids;
    map->cap = cap;
    return 0;
}

/* Slot of phrase: where it is, or the empty slot where it would go. */
static size_t phrase_map_slot(const phrase_map *map, const char *phrase, size_t n) {
    size_t j = hash_bytes(phrase, n) & (map->cap - 1);
    while (map->phrases[j] && (strlen(map->phrases[j]) != n || memcmp(map->phrases[j], phrase, n) != 0))
        j = (j + 1) & (map->cap - 1);
    return j;
}

/* Insert or overwrite (a later duplicate wins, as in a Python dict). */
static int phrase_map_put(phrase_map *map, const char *phrase, size_t n, int64_t id) {
    if ((map->count + 1) * 2 > map->cap && phrase_map_grow(map) != 0) return -1;
    size_t j = phrase_map_slot(map, phrase, n);
    if (!map->phrases[j]) {
        char *copy = malloc(n + 1);
        if (!copy) return -1;
        memcpy(copy, phrase, n);
        copy[n] = '\0';
        map->phrases[j] = copy;
        map->count++;
    }
    map->ids[j] = id;
    return 0;
}

static int phrase_map_get(const phrase_map *map, const char *phrase, int64_t *id) {
    if (!map->cap) return 0;
    size_t j = phrase_map_slot(map, phrase, strlen(phrase));
    if (!map->phrases[j]) return 0;
    *id = map->ids[j];
    return 1;
}

static void phrase_map_free(phrase_map *map) {
    for (size_t i = 0; i < map->cap; i++) free(map->phrases[i]);
    free(map->phrases);
    free(map->ids);
}

/* A growable table index -> value, for sentiment_labels (phrase id -> score) and
 * datasetSplit (sentence index -> split); missing entries are NaN / 0. */
typedef struct number_table {
    double *values;
    size_t cap;
} number_table;

static int number_table_set(number_table *t, int64_t index, double value) {
    if ((size_t)index >= t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap <= (size_t)index) cap *= 2;
        double *grown = realloc(t->values, cap * sizeof *grown);
        if (!grown) return -1;
        for (size_t i = t->cap; i < cap; i++) grown[i] = -1.0;
        t->values = grown;
        t->cap = cap;
    }
    t->values[index] = value;
    return 0;
}

static double number_table_get(const number_table *t, int64_t index) {
    return index >= 0 && (size_t)index < t->cap ? t->values[index] : -1.0;
}

/* Parse a non-negative integer filling all of [s, s+n). */
static int parse_index(const char *s, size_t n, int64_t *out) {
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Open member name of the raw release inside path (folder or zip). */
static arc_input *open_raw_member(const char *path, const char *name, bp_err *err) {
    arc_input *in = arc_open(path, err);
    if (!in) return NULL;
    if (arc_find_member(in, name, err) != 1) {
        arc_close(in);
        return NULL;
    }
    return in;
}

/* dictionary.txt: "phrase|id" a line, no header; the id is after the last '|'. */
static int load_dictionary(const char *path, phrase_map *map, bp_err *err) {
    arc_input *in = open_raw_member(path, "dictionary.txt", err);
    if (!in) return -1;
    char *line;
    size_t len;
    int got, rc = 0;
    while ((got = arc_read_line(in, &line, &len, err)) == 1) {
        if (len == 0) continue;
        char *bar = strrchr(line, '|');
        int64_t id;
        if (!bar || parse_index(bar + 1, len - (size_t)(bar + 1 - line), &id) != 0) {
            rc = bp_err_set(err, "expected PHRASE|ID (%s:%lld)", arc_where(in), (long long)arc_line_number(in));
            break;
        }
        if (phrase_map_put(map, line, (size_t)(bar - line), id) != 0) {
            rc = bp_err_set(err, "out of memory (%s:%lld)", arc_where(in), (long long)arc_line_number(in));
            break;
        }
    }
    if (got < 0) rc = -1;
    arc_close(in);
    return rc;
}

/* sentiment_labels.txt ("phrase ids|sentiment values" header, then ID|VALUE) or
 * datasetSplit.txt ("sentence_index,splitset_label" header, then INDEX,SPLIT). */
static int load_table(const char *path, const char *name, char separator, number_table *table, bp_err *err) {
    arc_input *in = open_raw_member(path, name, err);
    if (!in) return -1;
    char *line;
    size_t len;
    int got, rc = 0;
    while ((got = arc_read_line(in, &line, &len, err)) == 1) {
        if (arc_line_number(in) == 1 || len == 0) continue; /* header */
        char *sep = strchr(line, separator);
        int64_t index;
        char *end = NULL;
        double value = 0;
        if (sep) {
            errno = 0;
            value = strtod(sep + 1, &end);
        }
        if (!sep || parse_index(line, (size_t)(sep - line), &index) != 0 || end == sep + 1 || *end != '\0' ||
            errno != 0 || value < 0) {
            rc = bp_err_set(err, "expected INDEX%cVALUE (%s:%lld)", separator, arc_where(in), (long long)arc_line_number(in));
            break;
        }
        if ((uint64_t)index >= BP_LIMIT_TABLE_INDEX) {
            char place[600];
            snprintf(place, sizeof place, "%s:%lld", arc_where(in), (long long)arc_line_number(in));
            rc = bp_check_limit((uint64_t)index, BP_LIMIT_TABLE_INDEX - 1, "", "the index", place, err);
            break;
        }
        if (number_table_set(table, index, value) != 0) {
            rc = bp_err_set(err, "out of memory (%s:%lld)", arc_where(in), (long long)arc_line_number(in));
            break;
        }
    }
    if (got < 0) rc = -1;
    arc_close(in);
    return rc;
}

/* Replace every occurrence of from (n bytes) by to (m <= n bytes), in place. */
static size_t replace_bytes(char *s, size_t len, const char *from, size_t n, const char *to, size_t m) {
    size_t read = 0, write = 0;
    while (read < len) {
        if (read + n <= len && memcmp(s + read, from, n) == 0) {
            memcpy(s + write, to, m);
            write += m;
            read += n;
        } else {
            s[write++] = s[read++];
        }
    }
    s[write] = '\0';
    return write;
}

/* Hugging Face's `sst` repair of datasetSentences.txt, in its order: the file holds UTF-8
 * that was decoded as Latin-1 and encoded again, so "é" reads "Ã©"; collapsing the
 * doubled lead bytes C3 83 C2 -> C3 and C3 82 C2 -> C2 undoes it; then -LRB-/-RRB- become
 * brackets, as the dictionary writes them. */
static size_t repair_sentence(char *s, size_t len) {
    len = replace_bytes(s, len, "\xc3\x83\xc2", 3, "\xc3", 1);
    len = replace_bytes(s, len, "\xc3\x82\xc2", 3, "\xc2", 1);
    len = replace_bytes(s, len, "-LRB-", 5, "(", 1);
    len = replace_bytes(s, len, "-RRB-", 5, ")", 1);
    return len;
}

static int stream_sentences(const char *path, ds_sink *sink, const phrase_map *dictionary,
                            const number_table *scores, const number_table *splits, int want_split, bp_err *err) {
    arc_input *in = open_raw_member(path, "datasetSentences.txt", err);
    if (!in) return -1;
    /* datasetSplit's codes: 1 train, 2 test, 3 dev. */
    static const int code_of_split[3] = {1, 3, 2};
    char *line;
    size_t len;
    int got, rc = 0;
    while ((got = arc_read_line(in, &line, &len, err)) == 1) {
        int64_t line_number = arc_line_number(in);
        if (line_number == 1 || len == 0) continue; /* header sentence_index<TAB>sentence */
        char *tab = strchr(line, '\t');
        int64_t sentence_index;
        if (!tab || parse_index(line, (size_t)(tab - line), &sentence_index) != 0) {
            rc = bp_err_set(err, "expected SENTENCE_INDEX<TAB>SENTENCE (%s:%lld)", arc_where(in), (long long)line_number);
            break;
        }
        double split_code = number_table_get(splits, sentence_index);
        if (split_code < 0) {
            rc = bp_err_set(err, "sentence %lld has no split in datasetSplit.txt (%s:%lld)", (long long)sentence_index,
                            arc_where(in), (long long)line_number);
            break;
        }
        if ((int)split_code != code_of_split[want_split]) continue;
        sink->stats->records++;
        char *sentence = tab + 1;
        repair_sentence(sentence, len - (size_t)(sentence - line));
        int64_t phrase_id;
        if (!phrase_map_get(dictionary, sentence, &phrase_id)) {
            rc = bp_err_set(err, "sentence %lld is not in dictionary.txt (%s:%lld)", (long long)sentence_index,
                            arc_where(in), (long long)line_number);
            break;
        }
        double score = number_table_get(scores, phrase_id);
        if (score < 0 || score > 1) {
            rc = bp_err_set(err, "phrase %lld has no score in [0,1] in sentiment_labels.txt (%s:%lld)",
                            (long long)phrase_id, arc_where(in), (long long)line_number);
            break;
        }
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)sentence_index);
        /* Python's round() sends 0.5 to 0 (ties to even), so "round" is score > 0.5. */
        ds_example example = {.id = id, .text = sentence, .label = sink->options->binary ? (score > 0.5) : -1,
                              .has_score = 1, .score = score, .source = arc_where(in), .line = line_number};
        int pushed = ds_sink_push(sink, &example, err);
        if (pushed != 0) {
            rc = pushed < 0 ? -1 : 0;
            break;
        }
    }
    if (got < 0) rc = -1;
    arc_close(in);
    return rc;
}

int ds_read_sst_raw(const char *path, ds_sink *sink, bp_err *err) {
    int split = ds_split_of(sink->options, err);
    if (split < 0) return -1;
    /* The release is four files: one of them alone cannot be read. */
    arc_input *probe = arc_open(path, err);
    if (!probe) return -1;
    int is_container = arc_is_container(probe);
    arc_close(probe);
    if (!is_container)
        return bp_err_set(err, "sst-raw needs the stanfordSentimentTreebank folder or zip, not one file (%s)", path);
    phrase_map dictionary = {0};
    number_table scores = {0}, splits = {0};
    int rc = load_dictionary(path, &dictionary, err);
    if (rc == 0) rc = load_table(path, "sentiment_labels.txt", '|', &scores, err);
    if (rc == 0) rc = load_table(path, "datasetSplit.txt", ',', &splits, err);
    if (rc == 0) rc = stream_sentences(path, sink, &dictionary, &scores, &splits, split, err);
    phrase_map_free(&dictionary);
    free(scores.values);
    free(splits.values);
    return rc;
}
