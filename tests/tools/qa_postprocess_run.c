/* qa_postprocess_run.c — runs common/eval/qa_postprocess.c over a file of cases (the layout of
 * tests/fixtures/squad/postprocess-cases.json) and prints the results in the layout of
 * tests/reference/qa_postprocess_ref.py, for scripts/parity-qa-postprocess.
 *
 *   qa_postprocess_run CASES.json > results.json
 *
 * A test tool, not a stage: no frames.
 */
#include <stdio.h>

#include "base/log.h"
#include "qa_post_cases.h"
#include "eval/qa_postprocess.h"

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    if (argc != 2) {
        fprintf(stderr, "usage: qa_postprocess_run CASES.json\n");
        return 2;
    }
    json_error_t jerr;
    json_t *doc = json_load_file(argv[1], 0, &jerr);
    if (!doc) bp_die(1, argv[1], "cannot read the cases: %s (line %d)", jerr.text, jerr.line);
    json_t *results = json_array(), *c;
    size_t i;
    json_array_foreach(json_object_get(doc, "cases"), i, c) {
        qa_case qc;
        qa_post_result r;
        bp_err err;
        char where[64];
        snprintf(where, sizeof where, "case %zu", i);
        if (qa_case_load(c, &qc)) bp_die(1, where, "malformed case");
        if (qa_post_process(qc.context, qc.windows, qc.n_windows, &qc.options, &r, &err))
            bp_die(1, where, "%s", err.msg);
        json_t *out = qa_result_to_json(&r, qc.options.version_2_with_negative);
        if (!out || json_array_append_new(results, out)) bp_die(1, where, "out of memory");
        qa_post_result_free(&r);
        qa_case_free(&qc);
    }
    json_t *root = json_pack("{s:o}", "results", results);
    if (!root || json_dumpf(root, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17)) != 0 ||
        fputc('\n', stdout) == EOF || fflush(stdout) != 0)
        bp_die(1, NULL, "cannot write the results");
    json_decref(root);
    json_decref(doc);
    return 0;
}
