/* stage/qa_examples_input.c — example frames into eval/qa_examples.h (see qa_examples_input.h).
 * Must never: return with a stream half read: a bad frame or a missing eos dies naming it. */
#include "stage/qa_examples_input.h"

#include <stdlib.h>

#include "stage/stage.h"

/* One example frame: the id, context, gold answer texts and is_impossible are kept. */
static void keep_example(qa_examples *xs, const bp_frame *f, const char *spec) {
    bp_err err;
    const char *id, *context;
    size_t id_len, context_len, n_answers;
    bp_answer *answers;
    int is_impossible = 0;
    if (bp_get_str(f, "example_id", &id, &id_len, &err) || bp_get_str(f, "context", &context, &context_len, &err) ||
        bp_find_bool(f, "is_impossible", &is_impossible, &err) < 0 || bp_find_answers(f, &answers, &n_answers, &err) < 0)
        bp_die_err(&err);   /* names the example frame: the kind says it came from --examples */
    const char **texts = calloc(n_answers + 1, sizeof *texts);
    size_t *lens = calloc(n_answers + 1, sizeof *lens);
    if (!texts || !lens) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < n_answers; i++) {
        texts[i] = answers[i].text;
        lens[i] = answers[i].text_len;
    }
    int rc = qa_examples_add(xs, id, id_len, context, context_len, texts, lens, (int)n_answers, is_impossible, &err);
    if (rc < 0) bp_die_err(&err);
    /* one rule for ids: an example given twice could be predicted from either's context */
    if (rc == 1) bp_die(1, spec, "example %.*s appears twice", (int)(id_len > 200 ? 200 : id_len), id);
    free(texts);
    free(lens);
    free(answers);
}

void bp_read_qa_examples(const char *spec, qa_examples *xs) {
    bp_err err;
    qa_examples_init(xs);
    bp_in *in = bp_in_open(spec, 1, &err);
    if (!in) bp_die_err(&err);
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_EXAMPLE) keep_example(xs, &f, spec);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_in_close(in);
}
