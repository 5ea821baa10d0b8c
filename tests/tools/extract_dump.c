/* extract_dump.c — print a dataset's examples as JSON lines, straight from common/datasets.
 *
 * A driver for scripts/parity-extract and for eyeballing a reader: one JSON object per
 * example on stdout, the read's counts as one JSON object on stderr. It is not a stage:
 * it knows no frames and must never grow options the extract stage does not have.
 *
 *   extract_dump [--format F] [--split S] [--limit N] [--sample N] [--seed N] [--binary]
 *                [--skip-empty] [--text-column C] [--label-column C] [--id-column C]
 *                [--label-map L] [--validation-ratio R] [--no-header] PATH
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/datasets.h"
#include "base/log.h"

static int print_example(const ds_example *example, void *user, bp_err *err) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(example->id));
    if (example->text) json_object_set_new(o, "text", json_string(example->text));
    if (example->label >= 0) json_object_set_new(o, "label", json_integer(example->label));
    if (example->has_score) json_object_set_new(o, "score", json_real(example->score));
    if (example->question) {
        json_object_set_new(o, "title", json_string(example->title));
        json_object_set_new(o, "question", json_string(example->question));
        json_object_set_new(o, "context", json_string(example->context));
        json_t *answers = json_array();
        for (size_t i = 0; i < example->n_answers; i++) {
            json_t *a = json_object();
            json_object_set_new(a, "text", json_string(example->answers[i].text));
            json_object_set_new(a, "answer_start", json_integer(example->answers[i].start));
            if (!example->answers[i].matches) json_object_set_new(a, "mismatch", json_true());
            json_array_append_new(answers, a);
        }
        json_object_set_new(o, "answers", answers);
        if (example->is_impossible) json_object_set_new(o, "is_impossible", json_true());
    }
    char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!line) return bp_err_set(err, "cannot encode example %s as JSON", example->id);
    int ok = puts(line) >= 0;
    free(line);
    return ok ? 0 : bp_err_set(err, "cannot write to stdout");
}

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    ds_options options = {0};
    const char *path = NULL;
    bp_err err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = 1;
        if (strcmp(a, "--binary") == 0) options.binary = 1, takes_value = 0;
        else if (strcmp(a, "--skip-empty") == 0) options.skip_empty = 1, takes_value = 0;
        else if (strcmp(a, "--no-header") == 0) options.no_header = 1, takes_value = 0;
        else if (a[0] != '-') path = a, takes_value = 0;
        else if (!value) bp_die(2, NULL, "%s needs a value", a);
        else if (strcmp(a, "--format") == 0) { if (ds_format_parse(value, &options.format, &err) != 0) bp_die_err(&err); }
        else if (strcmp(a, "--split") == 0) options.split = value;
        else if (strcmp(a, "--limit") == 0) options.limit = atoll(value);
        else if (strcmp(a, "--sample") == 0) options.sample = atoll(value);
        else if (strcmp(a, "--seed") == 0) options.seed = strtoull(value, NULL, 10);
        else if (strcmp(a, "--text-column") == 0) options.text_column = value;
        else if (strcmp(a, "--label-column") == 0) options.label_column = value;
        else if (strcmp(a, "--id-column") == 0) options.id_column = value;
        else if (strcmp(a, "--label-map") == 0) options.label_map = value;
        else if (strcmp(a, "--validation-ratio") == 0) options.validation_ratio = atof(value);
        else bp_die(2, NULL, "unknown option %s", a);
        if (takes_value) i++;
    }
    if (!path) bp_die(2, NULL, "usage: extract_dump [options] PATH");
    ds_stats stats;
    if (ds_read(path, &options, print_example, NULL, &stats, &err) != 0) bp_die_err(&err);
    if (fflush(stdout) != 0) bp_die(1, NULL, "cannot write to stdout");
    fprintf(stderr,
            "{\"records\": %lld, \"emitted\": %lld, \"skipped_neutral\": %lld, \"skipped_empty\": %lld, "
            "\"skipped_other_side\": %lld, \"answers\": %lld, \"answer_mismatches\": %lld, \"impossible\": %lld}\n",
            (long long)stats.records, (long long)stats.emitted, (long long)stats.skipped_neutral,
            (long long)stats.skipped_empty, (long long)stats.skipped_other_side, (long long)stats.answers,
            (long long)stats.answer_mismatches, (long long)stats.impossible);
    return 0;
}
