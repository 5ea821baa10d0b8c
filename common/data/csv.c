/* data/csv.c — CSV/TSV with chosen columns, and GLUE SST-2 as a preset of it (see datasets.h).
 *
 * Comma-separated files follow RFC 4180 (quoted fields, "" for a quote, newlines inside
 * quotes); tab-separated files are split on tabs with no quoting, as GLUE's TSVs are read
 * by Hugging Face (csv.QUOTE_NONE), so a '"' in a sentence stays a character. Text is kept
 * byte for byte (SST-2's space before the tab included: Hugging Face keeps it too).
 *
 * Must never: print, exit, or know about frames.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "data/readers.h"
#include "data/sink.h"

/* One record: fields point into text (NUL-terminated each). */
typedef struct csv_record {
    ds_bytes text;
    size_t *offsets;
    char **fields;
    size_t n_fields, fields_cap;
    int64_t line; /* where the record starts */
} csv_record;

static int text_put(csv_record *r, char c) { return ds_bytes_append(&r->text, &c, 1); }

static int field_start(csv_record *r) {
    if (r->n_fields >= BP_LIMIT_CSV_FIELDS) return -1; /* csv_next_record tells it from out of memory */
    if (r->n_fields == r->fields_cap) {
        size_t cap = r->fields_cap ? r->fields_cap * 2 : 16;
        size_t *offsets = realloc(r->offsets, cap * sizeof *offsets);
        if (!offsets) return -1;
        r->offsets = offsets;
        char **fields = realloc(r->fields, cap * sizeof *fields);
        if (!fields) return -1;
        r->fields = fields;
        r->fields_cap = cap;
    }
    r->offsets[r->n_fields++] = r->text.len;
    return 0;
}

/* Read the next non-blank record. Returns 1, 0 at the end of the member, -1 with err. */
static int csv_next_record(arc_input *in, char delimiter, int quoting, csv_record *r, bp_err *err) {
    char *line;
    size_t len;
    int got;
    do {
        got = arc_read_line(in, &line, &len, err);
        if (got <= 0) return got;
    } while (len == 0);
    r->line = arc_line_number(in);
    r->text.len = 0;
    r->n_fields = 0;
    int in_quotes = 0, at_field_start = 1;
    if (field_start(r) != 0) goto oom;
    for (;;) {
        for (size_t i = 0; i < len; i++) {
            char c = line[i];
            if (in_quotes) {
                if (c == '"') {
                    if (i + 1 < len && line[i + 1] == '"') {
                        if (text_put(r, '"') != 0) goto oom;
                        i++;
                    } else {
                        in_quotes = 0;
                    }
                } else if (text_put(r, c) != 0) goto oom;
                continue;
            }
            if (c == delimiter) {
                if (text_put(r, '\0') != 0 || field_start(r) != 0) goto oom;
                at_field_start = 1;
                continue;
            }
            if (quoting && c == '"' && at_field_start) {
                in_quotes = 1;
                at_field_start = 0;
                continue;
            }
            at_field_start = 0;
            if (text_put(r, c) != 0) goto oom;
        }
        if (!in_quotes) break;
        /* A quoted field runs over the line break: keep the newline and read on. */
        if (text_put(r, '\n') != 0) goto oom;
        got = arc_read_line(in, &line, &len, err);
        if (got < 0) return -1;
        if (got == 0)
            return bp_err_set(err, "unterminated quoted field (%s:%lld)", arc_where(in), (long long)r->line);
        if (r->text.len + len > BP_LIMIT_LINE_BYTES) {
            char place[600];
            snprintf(place, sizeof place, "%s:%lld", arc_where(in), (long long)r->line);
            return bp_check_limit(r->text.len + len, BP_LIMIT_LINE_BYTES, "bytes", "a record (a quoted field runs on)",
                                  place, err);
        }
    }
    if (text_put(r, '\0') != 0) goto oom;
    for (size_t f = 0; f < r->n_fields; f++) r->fields[f] = r->text.data + r->offsets[f];
    return 1;
oom:
    if (r->n_fields >= BP_LIMIT_CSV_FIELDS) {
        char place[600];
        snprintf(place, sizeof place, "%s:%lld", arc_where(in), (long long)r->line);
        return bp_check_limit(r->n_fields + 1, BP_LIMIT_CSV_FIELDS, "fields", "a record", place, err);
    }
    return bp_err_set(err, "out of memory (%s:%lld)", arc_where(in), (long long)r->line);
}

static void csv_record_free(csv_record *r) {
    free(r->text.data);
    free(r->offsets);
    free(r->fields);
}

/* Column spec -> index: a header name first, else a 0-based number. -1 when absent. */
static int64_t resolve_column(const char *spec, const csv_record *header) {
    if (header)
        for (size_t i = 0; i < header->n_fields; i++)
            if (strcmp(header->fields[i], spec) == 0) return (int64_t)i;
    char *end;
    errno = 0;
    long v = strtol(spec, &end, 10);
    if (*spec && *end == '\0' && errno == 0 && v >= 0 && (!header || (size_t)v < header->n_fields)) return v;
    return -1;
}

static void describe_header(const csv_record *header, char *out, size_t size) {
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; header && i < header->n_fields && used + 1 < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? "," : "", header->fields[i]);
    if (used >= size && size > 4) strcpy(out + size - 4, "...");
}

/* The label map "a,b,c": value i is class i. */
typedef struct label_map {
    char *storage;
    char **names;
    size_t count;
} label_map;

static int parse_label_map(const char *spec, label_map *map, bp_err *err) {
    size_t n = strlen(spec);
    map->storage = malloc(n + 1);
    map->names = calloc(n + 1, sizeof *map->names);
    if (!map->storage || !map->names) return bp_err_set(err, "out of memory (label map)");
    memcpy(map->storage, spec, n + 1);
    char *p = map->storage;
    for (;;) {
        map->names[map->count++] = p;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = '\0';
        p = comma + 1;
    }
    for (size_t i = 0; i < map->count; i++) {
        if (!*map->names[i]) return bp_err_set(err, "empty name in label map '%s'", spec);
        for (size_t j = 0; j < i; j++)
            if (strcmp(map->names[i], map->names[j]) == 0)
                return bp_err_set(err, "label '%s' twice in label map '%s'", map->names[i], spec);
    }
    return 0;
}

/* Everything one pass over the file needs. */
typedef struct csv_plan {
    char delimiter;
    int quoting;
    int64_t text_column, label_column, id_column;
    label_map labels;
    int has_map;
    const char *member_names[3];
    const char *text_spec, *label_spec, *id_spec;
} csv_plan;

static int label_of(const csv_plan *plan, const char *value, int *label, const char *where, int64_t line, bp_err *err) {
    if (plan->has_map) {
        for (size_t i = 0; i < plan->labels.count; i++)
            if (strcmp(plan->labels.names[i], value) == 0) {
                *label = (int)i;
                return 0;
            }
        return bp_err_set(err, "unknown label '%s': the label map has %zu values (%s:%lld)", value, plan->labels.count,
                          where, (long long)line);
    }
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (!*value || *end != '\0' || errno != 0 || v < 0 || v > INT_MAX)
        return bp_err_set(err, "unknown label '%s': not a class index; give a label map (%s:%lld)", value, where,
                          (long long)line);
    *label = (int)v;
    return 0;
}

/* Open the member to read: in an archive or folder the split's file, else the file. */
static arc_input *open_csv_input(const char *path, const csv_plan *plan, const ds_options *options, bp_err *err) {
    if (plan->member_names[0]) return ds_open_split_member(path, options, plan->member_names, err);
    static const char *const suffixes[] = {".csv", ".tsv", NULL};
    return ds_open_first_member(path, suffixes, err);
}

/* One pass over the file, every row pushed into the sink. */
static int csv_pass(const char *path, csv_plan *plan, ds_sink *sink, bp_err *err) {
    const ds_options *options = sink->options;
    arc_input *in = open_csv_input(path, plan, options, err);
    if (!in) return -1;
    csv_record header = {0}, record = {0};
    int rc = 0, got;
    int have_header = !options->no_header;
    if (have_header) {
        got = csv_next_record(in, plan->delimiter, plan->quoting, &header, err);
        if (got <= 0) {
            rc = got < 0 ? -1 : bp_err_set(err, "no header line (%s)", arc_where(in));
            goto done;
        }
        /* A UTF-8 byte-order mark is not part of the first column's name. */
        if (strncmp(header.fields[0], "\xEF\xBB\xBF", 3) == 0) header.fields[0] += 3;
    }
    char columns[256];
    describe_header(have_header ? &header : NULL, columns, sizeof columns);
    plan->text_column = resolve_column(plan->text_spec, have_header ? &header : NULL);
    if (plan->text_column < 0 && have_header && strcmp(plan->text_spec, "sentence") == 0 && !options->text_column)
        plan->text_column = resolve_column("text", &header);
    if (plan->text_column < 0) {
        rc = bp_err_set(err, "missing text column '%s'; columns are %s (%s:1)", plan->text_spec,
                        have_header ? columns : "numbered from 0 (no header)", arc_where(in));
        goto done;
    }
    plan->label_column = resolve_column(plan->label_spec, have_header ? &header : NULL);
    if (plan->label_column < 0 && options->label_column) {
        rc = bp_err_set(err, "missing label column '%s'; columns are %s (%s:1)", plan->label_spec,
                        have_header ? columns : "numbered from 0 (no header)", arc_where(in));
        goto done;
    }
    plan->id_column = -1;
    if (plan->id_spec && (plan->id_column = resolve_column(plan->id_spec, have_header ? &header : NULL)) < 0) {
        rc = bp_err_set(err, "missing id column '%s'; columns are %s (%s:1)", plan->id_spec,
                        have_header ? columns : "numbered from 0 (no header)", arc_where(in));
        goto done;
    }
    int64_t row = 0;
    while ((got = csv_next_record(in, plan->delimiter, plan->quoting, &record, err)) == 1) {
        int64_t this_row = row++;
        sink->stats->records++;
        int64_t needed = plan->text_column;
        if (plan->label_column > needed) needed = plan->label_column;
        if (plan->id_column > needed) needed = plan->id_column;
        if ((int64_t)record.n_fields <= needed) {
            rc = bp_err_set(err, "row has %zu fields, column %lld is missing (%s:%lld)", record.n_fields,
                            (long long)needed, arc_where(in), (long long)record.line);
            goto done;
        }
        int label = -1;
        if (plan->label_column >= 0 &&
            label_of(plan, record.fields[plan->label_column], &label, arc_where(in), record.line, err) != 0) {
            rc = -1;
            goto done;
        }
        char row_id[32];
        snprintf(row_id, sizeof row_id, "%lld", (long long)this_row);
        ds_example example = {.id = plan->id_column >= 0 ? record.fields[plan->id_column] : row_id,
                              .text = record.fields[plan->text_column], .label = label,
                              .source = arc_where(in), .line = record.line};
        int pushed = ds_sink_push(sink, &example, err);
        if (pushed != 0) {
            rc = pushed < 0 ? -1 : 0;
            goto done;
        }
    }
    if (got < 0) rc = -1;
done:
    csv_record_free(&header);
    csv_record_free(&record);
    arc_close(in);
    return rc;
}

static int ends_with_tsv(const char *path) {
    size_t n = strlen(path);
    return (n >= 4 && strcmp(path + n - 4, ".tsv") == 0) || (n >= 7 && strcmp(path + n - 7, ".tsv.gz") == 0);
}

int ds_read_csv(const char *path, ds_sink *sink, int sst2_defaults, bp_err *err) {
    const ds_options *options = sink->options;
    csv_plan plan = {0};
    plan.text_spec = options->text_column ? options->text_column : "sentence";
    plan.label_spec = options->label_column ? options->label_column : "label";
    plan.id_spec = options->id_column;
    if (sst2_defaults) {
        /* GLUE's layout: SST-2/{train,dev,test}.tsv; test.tsv has index + sentence, no label. */
        plan.delimiter = '\t';
        plan.member_names[0] = "train.tsv";
        plan.member_names[1] = "dev.tsv";
        plan.member_names[2] = "test.tsv";
    } else {
        plan.delimiter = options->delimiter ? options->delimiter : ends_with_tsv(path) ? '\t' : ',';
    }
    plan.quoting = plan.delimiter != '\t';
    int rc = 0;
    if (options->label_map) {
        plan.has_map = 1;
        rc = parse_label_map(options->label_map, &plan.labels, err);
    }
    if (rc == 0) rc = csv_pass(path, &plan, sink, err);
    free(plan.labels.storage);
    free(plan.labels.names);
    return rc;
}
