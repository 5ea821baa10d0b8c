/* fuzz_squad.c — the streaming SQuAD JSON reader on arbitrary bytes: the top-level scanner,
 * the per-article jansson parse, answer_start checks in code points (data/datasets.h). */
#include "data/datasets.h"
#include "fuzz_common.h"

static int consume(const ds_example *example, void *user, bp_err *err) {
    size_t *total = user;
    *total += strlen(example->question) + strlen(example->context) + strlen(example->id);
    for (size_t i = 0; i < example->n_answers; i++) *total += strlen(example->answers[i].text);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t total = 0;
    bp_err err;
    ds_options o = {.format = DS_FORMAT_SQUAD, .answers_must_match = size > 0 && (data[0] & 1)};
    ds_read(fuzz_input_file(data, size), &o, consume, &total, NULL, &err);
    return 0;
}
