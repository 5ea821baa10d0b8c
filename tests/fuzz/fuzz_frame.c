/* fuzz_frame.c — the frame decoder on arbitrary bytes (wire/frame.h, wire/codec.h): the bytes
 * as one ZeroMQ message and as the start of a byte stream; every kind of getter on a frame
 * that decodes; its JSON line (frames2json) and back (json2frames).
 *
 * Besides the sanitizers it checks what the protocol promises, aborting when one fails: a
 * decoded frame measures its own length on a stream, and its JSON line reads back into a
 * frame that decodes and prints the same line (record and replay are the identity).
 */
#include "wire/codec.h"
#include "wire/framejson.h"
#include "fuzz_common.h"

/* Every getter once on the keys stages use, each output touched so a bad view is seen. */
static void read_everything(const bp_frame *f) {
    static const char *const keys[] = {"seq", "example_id", "example_ids", "label", "labels", "input_ids", "offsets",
                                       "answers", "task", "logits", "text", "count", "from", "window", "probs"};
    bp_err err;
    volatile unsigned char sink = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        int64_t i;
        double d;
        int b;
        const char *s;
        size_t n;
        bp_str *strs;
        bp_tensor_view t;
        bp_find_int(f, keys[k], BP_I32_MIN, BP_I32_MAX, &i, &err);
        bp_find_float(f, keys[k], &d, &err);
        bp_find_bool(f, keys[k], &b, &err);
        if (bp_find_str(f, keys[k], &s, &n, &err) == 1)
            for (size_t j = 0; j < n; j++) sink ^= (unsigned char)s[j];
        if (bp_find_strs(f, keys[k], &strs, &n, &err) == 1) {
            for (size_t j = 0; j < n; j++)
                if (strs[j].len) sink ^= (unsigned char)strs[j].ptr[strs[j].len - 1];
            free(strs);
        }
        if (bp_find_tensor(f, keys[k], &t, &err) == 1)
            for (size_t j = 0; j < t.nbytes; j++) sink ^= ((const unsigned char *)t.data)[j];
    }
    bp_answer *answers;
    size_t n;
    if (bp_find_answers(f, &answers, &n, &err) == 1) {
        for (size_t j = 0; j < n; j++)
            if (answers[j].text_len) sink ^= (unsigned char)answers[j].text[answers[j].text_len - 1];
        free(answers);
    }
    bp_hello_is_qa(f, &err);
    char **labels;
    int nl = bp_hello_labels(f, &labels, &err);
    if (nl > 0) bp_labels_free(labels, nl);
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bp_err err;
    size_t on_stream = bp_msgpack_size(data, size, &err);
    bp_frame f;
    if (bp_frame_decode(&f, (const char *)data, size, NULL, NULL, &err)) return 0;
    if (on_stream != size) abort();   /* a stream would cut this frame elsewhere */
    f.index = 3;
    read_everything(&f);
    fuzz_check_replay(&f);
    bp_frame_release(&f);
    return 0;
}
