/* test_qa_postprocess.c — unit tests for common/eval/qa_postprocess.c on hand-made logits.
 *
 * The cases are in tests/fixtures/squad/postprocess-cases.json (best span in the second
 * window, question/padding logits that must be ignored, the length limit, ties, v2 null
 * answers and thresholds, multi-byte contexts); the expected n-best lists come from
 * tests/reference/qa_postprocess_ref.py (postprocess-expected.json). A few readable
 * assertions restate the key expectations by hand, then the error paths and the JSON
 * writers are checked directly.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/qa_postprocess.h"
#include "../tools/qa_post_cases.h"
#include "fixture_path.h"
#include "tap.h"

/* Everything the reference says about one case, compared entry by entry. */
static void compare_with_reference(size_t index, const qa_case *lc, const qa_post_result *r,
                                   const json_t *want) {
    TAP_EQ_STR(r->answer, json_string_value(json_object_get(want, "answer")), "case %zu answer (%s)",
               index, lc->name);
    TAP_EQ_INT(r->predicted_null, json_is_true(json_object_get(want, "predicted_null")),
               "case %zu predicted_null", index);
    TAP_NEAR(r->score_diff, json_number_value(json_object_get(want, "score_diff")), 1e-6,
             "case %zu score_diff", index);
    if (json_object_get(want, "null_score"))
        TAP_NEAR(r->null_score, json_number_value(json_object_get(want, "null_score")), 1e-6,
                 "case %zu null_score", index);
    json_t *nbest = json_object_get(want, "nbest");
    TAP_EQ_INT(r->n_nbest, json_array_size(nbest), "case %zu n-best length", index);
    int same = r->n_nbest == (int)json_array_size(nbest);
    for (int i = 0; same && i < r->n_nbest; i++) {
        const qa_post_candidate *c = &r->nbest[i];
        json_t *w = json_array_get(nbest, (size_t)i);
        int ok = strcmp(c->text, json_string_value(json_object_get(w, "text"))) == 0 &&
                 strcmp(qa_kind_name(c->kind), json_string_value(json_object_get(w, "kind"))) == 0 &&
                 c->window == json_integer_value(json_object_get(w, "window")) &&
                 (double)c->score == json_number_value(json_object_get(w, "score")) &&
                 (double)c->start_logit == json_number_value(json_object_get(w, "start_logit")) &&
                 (double)c->end_logit == json_number_value(json_object_get(w, "end_logit")) &&
                 fabs(c->probability - json_number_value(json_object_get(w, "probability"))) < 1e-12;
        if (!ok)
            tap_diag("entry %d: got \"%s\" %s window %d score %.9g p %.12g", i, c->text,
                     qa_kind_name(c->kind), c->window, (double)c->score, c->probability);
        same &= ok;
    }
    tap_ok(same, "case %zu n-best entries (text, kind, window, score, logits, probability) equal the reference",
           index);
}

/* Hand-stated expectations, so a reader sees what each case is about. */
static void check_by_hand(size_t index, const qa_post_result *r) {
    switch (index) {
    case 0:
        tap_ok(r->nbest[0].window == 1 && r->nbest[0].start_index == 5 && r->nbest[0].end_index == 6,
               "best span is tokens 5..6 of the second window");
        for (int i = 0; i < r->n_nbest; i++)
            if (r->nbest[i].start_index < 3 || r->nbest[i].end_index > 6) {
                tap_ok(0, "no span starts in the question or ends in [SEP]/padding");
                return;
            }
        tap_ok(1, "no span starts in the question or ends in [SEP]/padding");
        break;
    case 1:
        TAP_EQ_STR(r->answer, "alpha beta", "length limit 2: the 4-token span (score 10) is rejected");
        break;
    case 3:
        TAP_EQ_STR(r->nbest[1].text, "alpha beta gamma", "tie on score 5: span from the later start first");
        break;
    case 6:
        tap_ok(r->predicted_null && r->answer[0] == '\0' && r->answer_score == 4.0f,
               "v2: null 4.0 > best 3.5 -> \"\" with the null's score");
        break;
    case 10: {
        double total = 0;
        for (int i = 0; i < r->n_nbest; i++) total += r->nbest[i].probability;
        tap_ok(r->nbest[0].kind == QA_POST_EMPTY && total > 1 - 1e-12 && total < 1 + 1e-12,
               "no valid span: HF's \"empty\" stand-in, probabilities sum to 1");
        break;
    }
    case 12:
        TAP_EQ_INT(strlen(r->answer), strlen("Brücke aus Stein — 石橋"),
                   "multi-byte answer has the right number of bytes");
        break;
    default:
        break;
    }
}

static void test_reference_cases(void) {
    json_error_t jerr;
    json_t *cases = json_load_file(fixture("postprocess-cases.json"), 0, &jerr);
    json_t *expected = json_load_file(fixture("postprocess-expected.json"), 0, &jerr);
    if (!tap_ok(cases && expected, "load the post-processing fixtures")) {
        tap_diag("%s", jerr.text);
        json_decref(cases);
        json_decref(expected);
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(cases, "cases"), i, c) {
        qa_case lc;
        qa_post_result r;
        bp_err err;
        if (qa_case_load(c, &lc)) {
            tap_ok(0, "case %zu loads", i);
            qa_case_free(&lc);
            continue;
        }
        if (!tap_ok(qa_post_process(lc.context, lc.windows, lc.n_windows, &lc.options, &r, &err) == 0,
                    "case %zu runs", i))
            tap_diag("%s", err.msg);
        else {
            compare_with_reference(i, &lc, &r, json_array_get(json_object_get(expected, "results"), i));
            check_by_hand(i, &r);
        }
        qa_post_result_free(&r);
        qa_case_free(&lc);
    }
    json_decref(cases);
    json_decref(expected);
}

/* ---- bad input -------------------------------------------------------------------- */

static void test_errors(void) {
    static const char *context = "short context";
    float start[3] = {0, 1, 2}, end[3] = {0, 1, 2};
    qa_post_offset offsets[3] = {{-1, -1}, {0, 5}, {6, 13}};
    qa_post_window w = {3, start, end, offsets};
    qa_post_options opt;
    qa_post_options_default(&opt);
    qa_post_result r;
    bp_err err;
    TAP_EQ_INT(qa_post_process(context, &w, 1, &opt, &r, &err), 0, "valid window accepted");
    TAP_EQ_STR(r.answer, "context", "answer from the best span");
    qa_post_result_free(&r);
    qa_post_result_free(&r); /* documented as safe */

    TAP_EQ_INT(qa_post_process(context, &w, 0, &opt, &r, &err), -1, "no windows refused");
    tap_ok(strstr(err.msg, "no windows") != NULL, "error says so: %s", err.msg);
    offsets[2].end = 14;
    TAP_EQ_INT(qa_post_process(context, &w, 1, &opt, &r, &err), -1, "offset past the context refused");
    tap_ok(strstr(err.msg, "window 0 token 2") != NULL, "error names window and token: %s", err.msg);
    offsets[2] = (qa_post_offset){7, 6};
    TAP_EQ_INT(qa_post_process(context, &w, 1, &opt, &r, &err), -1, "offset with end < start refused");
    offsets[2] = (qa_post_offset){6, 13};
    start[1] = NAN;
    TAP_EQ_INT(qa_post_process(context, &w, 1, &opt, &r, &err), -1, "NaN logit refused");
    tap_ok(strstr(err.msg, "token 1") && strstr(err.msg, "not finite"), "error names the token: %s", err.msg);
    start[1] = 1;
    char bad[] = {'o', 'k', (char)0xE2, (char)0x82, 0};
    TAP_EQ_INT(qa_post_process(bad, &w, 1, &opt, &r, &err), -1, "invalid UTF-8 context refused");
    opt.n_best = 0;
    TAP_EQ_INT(qa_post_process(context, &w, 1, &opt, &r, &err), -1, "n_best 0 refused");
    opt.n_best = 20;
    opt.max_answer_length = 0;
    TAP_EQ_INT(qa_post_process(context, &w, 1, &opt, &r, &err), -1, "max_answer_length 0 refused");
    tap_ok(r.nbest == NULL && r.answer == NULL, "result is zeroed after an error");
}

/* ---- JSON files -------------------------------------------------------------------------- */

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_json_files(void) {
    static const char *context = "Die Brücke über den Fluß";
    float start[6] = {0, -1, 3, 0, 0, 0}, end[6] = {0, -1, 0, 0, 2.5f, 0};
    qa_post_offset offsets[6] = {{-1, -1}, {-1, -1}, {4, 10}, {11, 15}, {16, 19}, {20, 24}};
    qa_post_window w = {6, start, end, offsets};
    qa_post_options opt;
    qa_post_options_default(&opt);
    qa_post_result r;
    bp_err err;
    if (!tap_ok(qa_post_process(context, &w, 1, &opt, &r, &err) == 0, "JSON example runs")) return;
    TAP_EQ_STR(r.answer, "Brücke über den", "answer spans tokens 2..4");

    json_t *predictions = json_object(), *nbest = json_object(), *odds = json_object();
    TAP_EQ_INT(qa_post_json_add(predictions, nbest, odds, "q-1", &r, &err), 0, "add an example");
    TAP_EQ_INT(qa_post_json_add(predictions, NULL, NULL, "q-1", &r, &err), -1, "the same id twice refused");
    tap_ok(strstr(err.msg, "q-1") != NULL, "error names the id: %s", err.msg);
    qa_post_result_free(&r);

    char dir[] = "/tmp/test_qa_postprocess.XXXXXX";
    if (!tap_ok(mkdtemp(dir) != NULL, "temporary directory")) return;
    char path[256], nbest_path[256];
    snprintf(path, sizeof path, "%s/predictions.json", dir);
    snprintf(nbest_path, sizeof nbest_path, "%s/nbest_predictions.json", dir);
    mode_t old_mask = umask(022);
    TAP_EQ_INT(qa_post_json_write_file(predictions, path, &err), 0, "predictions.json written");
    TAP_EQ_INT(qa_post_json_write_file(nbest, nbest_path, &err), 0, "nbest_predictions.json written");
    umask(old_mask);
    struct stat st;
    unsigned mode = stat(path, &st) == 0 ? (unsigned)(st.st_mode & 0777) : 0;
    tap_ok(mode == 0644, "predictions.json has the umask's mode 0644, not 0600 (mode %o)", mode);
    const char *text = read_all(path);
    TAP_EQ_STR(text, "{\n    \"q-1\": \"Br\\u00FCcke \\u00FCber den\"\n}\n",
               "predictions.json as HF writes it (indent 4, \\u escapes (upper-case hex), newline)");
    text = read_all(nbest_path);
    tap_ok(text && strstr(text, "\"start_logit\": 3.0,\n            \"end_logit\": 2.5,\n"
                                "            \"text\": \"Br\\u00FCcke \\u00FCber den\",\n"
                                "            \"probability\": "),
           "nbest_predictions.json entries have HF's keys in HF's order");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no-such-dir/predictions.json", dir);
    TAP_EQ_INT(qa_post_json_write_file(predictions, missing, &err), -1, "unwritable path refused");
    tap_ok(strstr(err.msg, "no-such-dir") != NULL, "error names the path: %s", err.msg);
    unlink(path);
    unlink(nbest_path);
    rmdir(dir);
    json_decref(predictions);
    json_decref(nbest);
    json_decref(odds);
}

int main(void) {
    fixture_path_init(__FILE__, "squad");
    test_reference_cases();
    test_errors();
    test_json_files();
    return tap_done();
}
