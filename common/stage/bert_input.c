/* stage/bert_input.c — batch frames into model inputs, shared by train and eval (see bert_input.h).
 * Must never: keep a pointer into a frame past the call that read it (frames are released
 * right after; the host tensors own copies). */
#include "stage/bert_input.h"

#include <stdlib.h>
#include <string.h>

#include "backend/device.h"

backend *bp_open_device(const char *device, int threads, const char *precision) {
    char note[300];
    bp_err err;
    backend *be = bp_backend_open(device, threads, precision, note, sizeof note, &err);
    if (!be) bp_die_err(&err);
    bp_log("%s", note);
    return be;
}

void bp_batch_shape(const bp_frame *hello, const char *in_spec, int *max_B, int *max_T) {
    bp_err err;
    int64_t batch_size, max_length;
    if (!bp_has(hello, "batch_size") || !bp_has(hello, "max_length"))
        bp_die(1, in_spec, "the input hello lacks batch_size or max_length: is this a batch stream?");
    if (bp_get_int(hello, "batch_size", 1, 1 << 20, &batch_size, &err) ||
        bp_get_int(hello, "max_length", 1, 1 << 20, &max_length, &err))
        bp_die(1, in_spec, "%s", err.msg);
    *max_B = (int)batch_size;
    *max_T = (int)max_length;
}

void bp_check_vocab_fits(const bp_frame *hello, int vocab_size) {
    bp_err err;
    int64_t tokens = 0;
    int found = bp_find_int(hello, "vocab_size", 1, BP_I32_MAX, &tokens, &err);
    if (found < 0) bp_die_err(&err);
    if (found && tokens > vocab_size)
        bp_die(1, "hello frame 0 vocab_size, config.json vocab_size", "the tokenizer's vocab.txt has %lld tokens but the "
               "model's embedding has %d rows: they do not belong together", (long long)tokens, vocab_size);
}

void bp_batch_tensors_alloc(bp_batch_tensors *h, int max_B, int max_T) {
    size_t rows = (size_t)max_B, cells = rows * (size_t)max_T;
    *h = (bp_batch_tensors){
        .max_B = max_B,
        .max_T = max_T,
        .input_ids = malloc(cells * sizeof *h->input_ids),
        .token_type_ids = malloc(cells * sizeof *h->token_type_ids),
        .attention_mask = malloc(cells * sizeof *h->attention_mask),
        .labels = malloc(rows * sizeof *h->labels),
        .start_positions = malloc(rows * sizeof *h->start_positions),
        .end_positions = malloc(rows * sizeof *h->end_positions),
        .label_values = malloc(rows * sizeof *h->label_values),
    };
    if (!h->input_ids || !h->token_type_ids || !h->attention_mask || !h->labels || !h->start_positions ||
        !h->end_positions || !h->label_values)
        bp_die(1, NULL, "out of memory for batches of %d x %d", max_B, max_T);
}

void bp_batch_tensors_free(bp_batch_tensors *h) {
    free(h->input_ids);
    free(h->token_type_ids);
    free(h->attention_mask);
    free(h->labels);
    free(h->start_positions);
    free(h->end_positions);
    free(h->label_values);
    memset(h, 0, sizeof *h);
}

/* One [B] i32 target tensor of f into dst. */
static int read_rows(const bp_frame *f, const char *key, int64_t B, int32_t *dst, bp_err *err) {
    bp_tensor_view t;
    int64_t shape[1] = {B};
    if (bp_get_tensor_of(f, key, BP_I32, 1, shape, &t, err)) return -1;
    bp_tensor_copy(&t, dst);
    return 0;
}

/* The targets of cfg's head into h and b (the inputs are read already). */
static int read_targets(const bp_frame *f, const bert_config *cfg, bp_batch_tensors *h, bert_batch *b, bp_err *err) {
    char where[64];
    if (cfg->head == BERT_HEAD_QA) {
        if (read_rows(f, "start_positions", b->B, h->start_positions, err) ||
            read_rows(f, "end_positions", b->B, h->end_positions, err))
            return -1;
        b->start_positions = h->start_positions;
        b->end_positions = h->end_positions;
        return 0;
    }
    if (read_rows(f, "labels", b->B, h->labels, err)) return -1;
    if (cfg->num_labels == 1) {
        for (int i = 0; i < b->B; i++) h->label_values[i] = (float)h->labels[i];
        b->label_values = h->label_values;
        b->labels = h->labels;
        return 0;
    }
    for (int i = 0; i < b->B; i++)
        if (h->labels[i] < 0 || h->labels[i] >= cfg->num_labels)
            return bp_err_set(err, "label %d of row %d is outside 0..%d (%s)", h->labels[i], i, cfg->num_labels - 1,
                              bp_frame_where(f, where, sizeof where));
    b->labels = h->labels;
    return 0;
}

int bp_batch_read(const bp_frame *f, const bert_config *targets, bp_batch_tensors *h, bert_batch *b, bp_err *err) {
    bp_tensor_view ids, types, mask;
    if (bp_get_tensor_of(f, "input_ids", BP_I32, 2, NULL, &ids, err)) return -1;
    int64_t B = ids.shape[0], T = ids.shape[1], bt[2] = {B, T};
    char where[64];
    if (B < 1 || T < 1)
        return bp_err_set(err, "tensor 'input_ids' has shape [%lld, %lld]: a batch has at least one row of one token (%s)",
                          (long long)B, (long long)T, bp_frame_where(f, where, sizeof where));
    if (B > h->max_B || T > h->max_T) {
        return bp_err_set(err, "batch of %lld x %lld exceeds the hello's %d x %d, its batch_size x max_length (%s)",
                          (long long)B, (long long)T, h->max_B, h->max_T, bp_frame_where(f, where, sizeof where));
    }
    if (bp_get_tensor_of(f, "token_type_ids", BP_I32, 2, bt, &types, err) ||
        bp_get_tensor_of(f, "attention_mask", BP_I32, 2, bt, &mask, err))
        return -1;
    bp_tensor_copy(&ids, h->input_ids);
    bp_tensor_copy(&types, h->token_type_ids);
    bp_tensor_copy(&mask, h->attention_mask);
    *b = (bert_batch){
        .B = (int)B,
        .T = (int)T,
        .input_ids = h->input_ids,
        .token_type_ids = h->token_type_ids,
        .attention_mask = h->attention_mask,
    };
    return targets ? read_targets(f, targets, h, b, err) : 0;
}
