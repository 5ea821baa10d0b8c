/* stage/frame_input.c — the readers of the data frames stages take (see frame_input.h).
 * Must never: exit or print, or let a field of the wrong type or range pass as absent. */
#include "stage/frame_input.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A rule of the frame, not of one field: "WHAT (KIND frame N)". */
static int frame_error(const bp_frame *f, bp_err *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int frame_error(const bp_frame *f, bp_err *err, const char *fmt, ...) {
    char what[400], where[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return bp_err_set(err, "%s (%s)", what, bp_frame_where(f, where, sizeof where));
}

static int get_i32(const bp_frame *f, const char *key, int32_t *out, bp_err *err) {
    int64_t v;
    if (bp_get_int(f, key, BP_I32_MIN, BP_I32_MAX, &v, err)) return -1;
    *out = (int32_t)v;
    return 0;
}

/* "example_ids": exactly `rows` strings, one an example a row. */
static int read_ids(const bp_frame *f, int64_t rows, const char *tensor, bp_str **ids, bp_err *err) {
    size_t n;
    *ids = NULL;
    if (bp_get_strs(f, "example_ids", ids, &n, err)) return -1;
    if ((uint64_t)n != (uint64_t)rows) {
        free(*ids);
        *ids = NULL;
        return frame_error(f, err, "'example_ids' has %zu entries for %lld rows of '%s'", n, (long long)rows, tensor);
    }
    return 0;
}

/* ---- examples ------------------------------------------------------------------------- */

int bp_example_read(const bp_frame *f, int qa, int64_t num_labels, bp_example_view *ex, bp_err *err) {
    memset(ex, 0, sizeof *ex);
    ex->label = ex->seq = -1;
    if (f->kind != BP_EXAMPLE) return frame_error(f, err, "an example frame is wanted here");
    if (bp_get_str(f, "example_id", &ex->id.ptr, &ex->id.len, err) || bp_find_int(f, "seq", 0, INT64_MAX, &ex->seq, err) < 0)
        return -1;
    if (qa)
        return bp_get_str(f, "question", &ex->question.ptr, &ex->question.len, err) ||
                       bp_get_str(f, "context", &ex->context.ptr, &ex->context.len, err) ||
                       bp_find_answers(f, &ex->answers, &ex->n_answers, err) < 0
                   ? -1
                   : 0;
    if (bp_get_str(f, "text", &ex->text.ptr, &ex->text.len, err) ||
        bp_find_int(f, "label", -1, BP_I32_MAX, &ex->label, err) < 0)
        return -1;
    /* a label the hello does not name would train a class the model has no row for */
    if (num_labels > 0 && ex->label >= num_labels)
        return frame_error(f, err, "example %.*s: label %lld is outside the %lld classes the stream's hello names",
                           (int)(ex->id.len > 200 ? 200 : ex->id.len), ex->id.ptr, (long long)ex->label, (long long)num_labels);
    return 0;
}

void bp_example_view_free(bp_example_view *ex) {
    free(ex->answers);
    ex->answers = NULL;
}

/* ---- features ------------------------------------------------------------------------- */

unsigned bp_feature_fields(const bp_frame *f) {
    return (bp_has(f, "label") ? BP_FEATURE_LABEL : 0) | (bp_has(f, "start_position") ? BP_FEATURE_POSITIONS : 0) |
           (bp_has(f, "offsets") ? BP_FEATURE_OFFSETS : 0);
}

int bp_feature_read(const bp_frame *f, unsigned want, int64_t max_tokens, bp_feature_view *ft, bp_err *err) {
    memset(ft, 0, sizeof *ft);
    ft->example_seq = -1;
    if (f->kind != BP_FEATURE) return frame_error(f, err, "a feature frame is wanted here");
    if (bp_get_tensor_of(f, "input_ids", BP_I32, 1, NULL, &ft->input_ids, err)) return -1;
    int64_t n = ft->input_ids.shape[0], shape[2] = {n, 2};
    if (n < 1) return frame_error(f, err, "tensor 'input_ids' has no token");
    if (max_tokens > 0 && n > max_tokens)
        return frame_error(f, err, "tensor 'input_ids' has %lld tokens, more than the %lld of --max-length", (long long)n,
                           (long long)max_tokens);
    int64_t window = 0;
    if (bp_get_tensor_of(f, "token_type_ids", BP_I32, 1, shape, &ft->token_type_ids, err) ||
        bp_get_tensor_of(f, "attention_mask", BP_I32, 1, shape, &ft->attention_mask, err) ||
        ((want & BP_FEATURE_OFFSETS) && bp_get_tensor_of(f, "offsets", BP_I32, 2, shape, &ft->offsets, err)) ||
        bp_find_int(f, "window", 0, BP_I32_MAX, &window, err) < 0 ||
        bp_find_int(f, "example_seq", 0, INT64_MAX, &ft->example_seq, err) < 0 ||
        ((want & BP_FEATURE_LABEL) && get_i32(f, "label", &ft->label, err)) ||
        ((want & BP_FEATURE_POSITIONS) && (get_i32(f, "start_position", &ft->start_position, err) ||
                                           get_i32(f, "end_position", &ft->end_position, err))) ||
        bp_get_str(f, "example_id", &ft->example_id.ptr, &ft->example_id.len, err))
        return -1;
    ft->window = (int32_t)window;
    return 0;
}

/* ---- logits --------------------------------------------------------------------------- */

int bp_cls_logits_read(const bp_frame *f, bp_cls_logits_view *l, bp_err *err) {
    memset(l, 0, sizeof *l);
    if (f->kind != BP_LOGITS) return frame_error(f, err, "a logits frame is wanted here");
    if (bp_get_tensor_of(f, "logits", BP_F32, 2, NULL, &l->logits, err)) return -1;
    l->B = l->logits.shape[0];
    l->C = l->logits.shape[1];
    int64_t rows[1] = {l->B};
    /* the ids first: every row is an example, and the rows can only be as many as the ids */
    if (read_ids(f, l->B, "logits", &l->ids, err)) return -1;
    /* no class, no prediction: a softmax over nothing has no argmax */
    if (l->C < 1 || l->C > BP_I32_MAX) {
        bp_cls_logits_view_free(l);
        return frame_error(f, err, "tensor 'logits' has %lld classes (shape[1]); at least 1 is needed", (long long)l->C);
    }
    if ((l->has_labels = bp_find_tensor_of(f, "labels", BP_I32, 1, rows, &l->labels, err)) < 0 ||
        (l->has_windows = bp_find_tensor_of(f, "windows", BP_I32, 1, rows, &l->windows, err)) < 0) {
        bp_cls_logits_view_free(l);
        return -1;
    }
    return 0;
}

void bp_cls_logits_view_free(bp_cls_logits_view *l) {
    free(l->ids);
    l->ids = NULL;
}

int bp_qa_logits_read(const bp_frame *f, bp_qa_logits_view *l, bp_err *err) {
    memset(l, 0, sizeof *l);
    if (f->kind != BP_LOGITS) return frame_error(f, err, "a logits frame is wanted here");
    if (bp_get_tensor_of(f, "start_logits", BP_F32, 2, NULL, &l->start, err)) return -1;
    l->B = l->start.shape[0];
    l->T = l->start.shape[1];
    int64_t bt[2] = {l->B, l->T}, bt2[3] = {l->B, l->T, 2}, rows[1] = {l->B};
    if (read_ids(f, l->B, "start_logits", &l->ids, err)) return -1;
    if (l->T < 1 || l->T > BP_I32_MAX) {
        bp_qa_logits_view_free(l);
        return frame_error(f, err, "tensor 'start_logits' has %lld tokens a row (shape[1])", (long long)l->T);
    }
    l->has_positions = bp_has(f, "start_positions") && bp_has(f, "end_positions");
    if (bp_get_tensor_of(f, "end_logits", BP_F32, 2, bt, &l->end, err) ||
        bp_get_tensor_of(f, "offsets", BP_I32, 3, bt2, &l->offsets, err) ||
        bp_get_tensor_of(f, "windows", BP_I32, 1, rows, &l->windows, err) ||
        (l->has_positions && (bp_get_tensor_of(f, "start_positions", BP_I32, 1, rows, &l->start_positions, err) ||
                              bp_get_tensor_of(f, "end_positions", BP_I32, 1, rows, &l->end_positions, err)))) {
        bp_qa_logits_view_free(l);
        return -1;
    }
    return 0;
}

void bp_qa_logits_view_free(bp_qa_logits_view *l) {
    free(l->ids);
    l->ids = NULL;
}

/* ---- predictions ---------------------------------------------------------------------- */

int bp_prediction_read(const bp_frame *f, int qa, bp_prediction_view *p, bp_err *err) {
    memset(p, 0, sizeof *p);
    if (f->kind != BP_PREDICTION) return frame_error(f, err, "a prediction frame is wanted here");
    if (bp_get_str(f, "example_id", &p->example_id.ptr, &p->example_id.len, err)) return -1;
    if (!qa) {
        int has_loss;
        if (bp_get_int(f, "label", BP_I32_MIN, BP_I32_MAX, &p->label, err) ||
            bp_get_int(f, "gold", BP_I32_MIN, BP_I32_MAX, &p->gold, err) ||
            (has_loss = bp_find_float(f, "loss", &p->loss, err)) < 0)
            return -1;
        p->has_loss = has_loss;
        return 0;
    }
    int has_match;
    if (bp_get_str(f, "text", &p->text.ptr, &p->text.len, err) ||
        bp_find_bool(f, "is_impossible", &p->is_impossible, err) < 0 ||
        (has_match = bp_find_bool(f, "span_match", &p->span_match, err)) < 0 ||
        bp_find_strs(f, "answers", &p->answers, &p->n_answers, err) < 0)
        return -1;
    p->has_span_match = has_match;
    return 0;
}

void bp_prediction_view_free(bp_prediction_view *p) {
    free(p->answers);
    p->answers = NULL;
}
