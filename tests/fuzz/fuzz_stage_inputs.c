/* fuzz_stage_inputs.c — each stage's reader of its input frames, in-process, on an arbitrary
 * frame: the first byte picks the reader (and its options), the rest is the frame's bytes.
 *   0 example (tokenize, classification; byte 1: the hello's class count), 1 example (QA),
 *   2 feature (batch; byte 1: the fields every feature must have), 3 logits (postprocess,
 *   classification), 4 logits (QA), 5 prediction (score, classification), 6 prediction (QA),
 *   7 batch (train and eval, stage/bert_input.h; byte 1: the head and its class count)
 * A reader that accepts a frame must have left views a stage can use whole: every byte of
 * every tensor and id it returns is read here, so a view past the frame is a finding.
 */
#include "stage/bert_input.h"
#include "stage/frame_input.h"
#include "fuzz_common.h"

static volatile unsigned char sink;

static void touch(const void *p, size_t n) {
    for (size_t i = 0; i < n; i++) sink ^= ((const unsigned char *)p)[i];
}
static void touch_str(bp_str s) { touch(s.ptr, s.len); }
static void touch_ids(const bp_str *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) touch_str(ids[i]);
}
static void touch_tensor(const bp_tensor_view *t) { touch(t->data, t->nbytes); }

/* train and eval: a batch into host tensors for batches up to 16 x 64. */
static void read_batch(const bp_frame *f, uint8_t option) {
    static bp_batch_tensors h;
    if (!h.max_B) bp_batch_tensors_alloc(&h, 16, 64);
    bert_config cfg;
    bert_config_default(&cfg);
    cfg.head = option & 1 ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    cfg.num_labels = 1 + (option >> 1) % 4;   /* 1: regression */
    bert_batch b;
    bp_err err;
    if (bp_batch_read(f, option & 0x80 ? NULL : &cfg, &h, &b, &err)) return;
    touch(b.input_ids, (size_t)b.B * (size_t)b.T * sizeof *b.input_ids);
    touch(b.attention_mask, (size_t)b.B * (size_t)b.T * sizeof *b.attention_mask);
    if (b.labels) touch(b.labels, (size_t)b.B * sizeof *b.labels);
    if (b.start_positions) touch(b.start_positions, (size_t)b.B * sizeof *b.start_positions);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t which = data[0] % 8, option = data[1];
    bp_frame f;
    bp_err err;
    if (bp_frame_decode(&f, (const char *)data + 2, size - 2, NULL, NULL, &err)) return 0;
    f.index = 0;
    switch (which) {
    case 0:
    case 1: {
        bp_example_view ex;
        if (bp_example_read(&f, which == 1, option % 5, &ex, &err) == 0) {
            touch_str(ex.id);
            touch_str(ex.text);
            touch_str(ex.question);
            touch_str(ex.context);
            for (size_t i = 0; i < ex.n_answers; i++) touch(ex.answers[i].text, ex.answers[i].text_len);
        }
        bp_example_view_free(&ex);
        break;
    }
    case 2: {
        bp_feature_view ft;
        unsigned want = option & 7;
        if (bp_feature_read(&f, want, option & 0x80 ? 8 : 0, &ft, &err) == 0) {
            touch_str(ft.example_id);
            touch_tensor(&ft.input_ids);
            touch_tensor(&ft.token_type_ids);
            touch_tensor(&ft.attention_mask);
            if (want & BP_FEATURE_OFFSETS) touch_tensor(&ft.offsets);
        }
        break;
    }
    case 3: {
        bp_cls_logits_view l;
        if (bp_cls_logits_read(&f, &l, &err) == 0) {
            touch_tensor(&l.logits);
            if (l.has_labels) touch_tensor(&l.labels);
            if (l.has_windows) touch_tensor(&l.windows);
            touch_ids(l.ids, l.B);
            bp_cls_logits_view_free(&l);
        }
        break;
    }
    case 4: {
        bp_qa_logits_view l;
        if (bp_qa_logits_read(&f, &l, &err) == 0) {
            touch_tensor(&l.start);
            touch_tensor(&l.end);
            touch_tensor(&l.offsets);
            touch_tensor(&l.windows);
            if (l.has_positions) {
                touch_tensor(&l.start_positions);
                touch_tensor(&l.end_positions);
            }
            touch_ids(l.ids, l.B);
            bp_qa_logits_view_free(&l);
        }
        break;
    }
    case 5:
    case 6: {
        bp_prediction_view p;
        if (bp_prediction_read(&f, which == 6, &p, &err) == 0) {
            touch_str(p.example_id);
            touch_str(p.text);
            touch_ids(p.answers, (int64_t)p.n_answers);
        }
        bp_prediction_view_free(&p);
        break;
    }
    default:
        read_batch(&f, option);
    }
    bp_frame_release(&f);
    return 0;
}
