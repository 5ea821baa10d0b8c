/* test_qa_examples.c — eval/qa_examples.h: examples found by id, windows gathered out of
 * order and answered in window order, a window given twice refused, the SQuAD tally that
 * score and train share. The expected answers are worked out by hand in the comments. */
#include <stdlib.h>
#include <string.h>

#include "eval/metrics.h"
#include "eval/qa_examples.h"
#include "tap.h"

/* Context "Ada was born in Paris." : tokens [CLS] q [SEP] Ada was born in Paris . [SEP] */
static const char context[] = "Ada was born in Paris.";
static const int32_t offsets[9 * 2] = {-1, -1, -1, -1, -1, -1, 0, 3, 4, 7, 8, 12, 13, 15, 16, 21, 21, 22};

static void add_example(qa_examples *xs, const char *id, int expect) {
    const char *answers[] = {"Paris"};
    size_t lens[] = {5};
    bp_err err;
    int rc = qa_examples_add(xs, id, strlen(id), context, strlen(context), answers, lens, 1, 0, &err);
    TAP_EQ_INT(rc, expect, "qa_examples_add(%s) returns %d", id, expect);
}

static void test_ids(void) {
    qa_examples xs;
    qa_examples_init(&xs);
    tap_ok(qa_examples_find(&xs, "q1", 2) == NULL, "an empty set finds nothing");
    char id[32];
    for (int i = 0; i < 3000; i++) {   /* past the first table size: the index is rebuilt */
        snprintf(id, sizeof id, "q%d", i);
        const char *answers[] = {"Paris"};
        size_t lens[] = {5};
        bp_err err;
        if (qa_examples_add(&xs, id, strlen(id), context, strlen(context), answers, lens, 1, 0, &err)) break;
    }
    TAP_EQ_INT(xs.n, 3000, "3000 examples added");
    qa_example *e = qa_examples_find(&xs, "q2999", 5);
    tap_ok(e && strcmp(e->id, "q2999") == 0 && e == &xs.ex[2999], "q2999 found, in its place");
    tap_ok(qa_examples_find(&xs, "q29990", 5) == e, "the id is compared as given, by length");
    tap_ok(qa_examples_find(&xs, "q3000", 5) == NULL, "an id not added is not found");
    add_example(&xs, "q7", 1);
    TAP_EQ_INT(xs.n, 3000, "a second q7 is not added");
    qa_examples_free(&xs);
}

static void test_predict(void) {
    qa_examples xs;
    qa_examples_init(&xs);
    add_example(&xs, "ada", 0);
    qa_example *e = qa_examples_find(&xs, "ada", 3);
    float start0[9] = {0}, end0[9] = {0}, start1[9] = {0}, end1[9] = {0};
    start1[7] = 5, end1[7] = 5;   /* window 1: "Paris" scores 10 */
    start0[3] = 2, end0[4] = 2;   /* window 0: "Ada was" scores 4 */
    bp_err err;
    /* window 1 arrives first: answers must not depend on arrival order */
    int rc = qa_example_add_window(e, 1, 9, start1, end1, offsets, 7, 7, &err) ||
             qa_example_add_window(e, 0, 9, start0, end0, offsets, -1, -1, &err);
    TAP_EQ_INT(rc, 0, "two windows added");
    qa_post_options o;
    qa_post_options_default(&o);
    qa_post_result res;
    rc = qa_example_predict(e, &o, &res, &err);
    tap_ok(rc == 0 && strcmp(res.answer, "Paris") == 0, "the best span over both windows is Paris");
    tap_ok(rc == 0 && e->windows[res.nbest[res.answer_index].window].window == 1, "its candidate names window 1");
    tap_ok(e->windows[0].window == 0 && e->windows[1].window == 1, "windows are sorted by index");

    metrics_squad_tally t;
    metrics_squad_tally_init(&t);
    const char *golds[] = {"Paris"};
    rc = metrics_squad_tally_add(&t, res.answer, golds, 1, 0, &err) || metrics_squad_tally_add(&t, "Ada", golds, 1, 0, &err);
    metrics_squad_summary s = metrics_squad_tally_summarize(&t, 0);
    tap_ok(rc == 0 && s.version == METRICS_SQUAD_V1 && s.exact == 50.0 && s.f1 == 50.0, "tally: one of two right is EM 50, F1 50 (v1.1)");
    rc = metrics_squad_tally_add(&t, "", NULL, 0, 1, &err);
    tap_ok(rc == 0 && metrics_squad_tally_is_v2(&t, 0), "an unanswerable question makes it v2.0");
    qa_post_result_free(&res);

    qa_examples_clear_windows(&xs);
    TAP_EQ_INT(e->n_windows, 0, "clear_windows forgets the logits, keeps the example");
    rc = qa_example_add_window(e, 0, 9, start0, end0, offsets, -1, -1, &err) ||
         qa_example_add_window(e, 0, 9, start0, end0, offsets, -1, -1, &err);
    rc = rc ? rc : qa_example_predict(e, &o, &res, &err);
    tap_ok(rc == -1 && strncmp(err.msg, "window 0 has logits twice:", 26) == 0, "a window given twice is refused: %s", err.msg);
    qa_examples_free(&xs);
}

int main(void) {
    test_ids();
    test_predict();
    return tap_done();
}
