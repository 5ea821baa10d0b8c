/* stage/frame_input.h — the data frames stages read, each read in one place: an example as
 * tokenize takes it, a feature as batch pads it, logits as postprocess scores them, a
 * prediction as score counts it (train and eval read batches through stage/bert_input.h).
 *
 * Each reader checks every field its stage uses — presence, type, range, tensor dtype and
 * shape, how many ids for how many rows — and fills a view of the frame, or returns -1 with
 * err in the one format ("field 'label' is not an integer (feature frame 12)"). They never
 * exit, so they can be called in-process on any frame (tests/fuzz/fuzz_stage_inputs.c).
 * Views point into the frame: valid until it is released; arrays they own are freed by the
 * view's free function.
 *
 * Must never: exit or print (stages decide), or accept a frame its stage could not use whole.
 */
#ifndef BP_FRAME_INPUT_H
#define BP_FRAME_INPUT_H
#include "wire/frame.h"

/* ---- example frames (tokenize) ---------------------------------------------------------- */

typedef struct bp_example_view {
    bp_str id;
    int64_t seq;              /* the seq extract gave it, -1 when absent */
    /* classification */
    bp_str text;
    int64_t label;            /* -1 when unknown or absent */
    /* QA */
    bp_str question, context;
    bp_answer *answers;       /* malloc'd (NULL when none) */
    size_t n_answers;
} bp_example_view;

/* An example of a qa or classification stream; num_labels > 0: a label must be below it
 * ("label 5 is outside the 2 classes the stream's hello names (example frame 3)"). */
int bp_example_read(const bp_frame *f, int qa, int64_t num_labels, bp_example_view *ex, bp_err *err);
void bp_example_view_free(bp_example_view *ex);

/* ---- feature frames (batch) ------------------------------------------------------------- */

/* Fields a feature of the stream must carry besides ids, types and mask (batch takes them from
 * the stream's first feature: every feature must then have them). */
enum { BP_FEATURE_LABEL = 1, BP_FEATURE_POSITIONS = 2, BP_FEATURE_OFFSETS = 4 };

typedef struct bp_feature_view {
    bp_str example_id;
    int64_t example_seq;                               /* its example's seq (tokenize), -1 when absent */
    int32_t window;                                    /* 0 when absent */
    bp_tensor_view input_ids, token_type_ids, attention_mask;   /* i32[n] */
    bp_tensor_view offsets;                            /* i32[n, 2], with BP_FEATURE_OFFSETS */
    int32_t label, start_position, end_position;       /* with LABEL / POSITIONS */
} bp_feature_view;

/* The fields of `want` (BP_FEATURE_*) a feature has: how batch learns the stream's schema. */
unsigned bp_feature_fields(const bp_frame *f);
/* A feature with at least one token and at most max_tokens (0: no limit). */
int bp_feature_read(const bp_frame *f, unsigned want, int64_t max_tokens, bp_feature_view *ft, bp_err *err);

/* ---- logits frames (postprocess) -------------------------------------------------------- */

typedef struct bp_cls_logits_view {
    int64_t B, C;                 /* rows, classes (C >= 1) */
    bp_tensor_view logits;        /* f32[B, C] */
    bp_tensor_view labels;        /* i32[B], when has_labels */
    bp_tensor_view windows;       /* i32[B], when has_windows */
    int has_labels, has_windows;
    bp_str *ids;                  /* B example ids (malloc'd array) */
} bp_cls_logits_view;

int bp_cls_logits_read(const bp_frame *f, bp_cls_logits_view *l, bp_err *err);
void bp_cls_logits_view_free(bp_cls_logits_view *l);

typedef struct bp_qa_logits_view {
    int64_t B, T;                             /* rows, tokens a row (T >= 1) */
    bp_tensor_view start, end;                /* f32[B, T] */
    bp_tensor_view offsets;                   /* i32[B, T, 2] */
    bp_tensor_view windows;                   /* i32[B] */
    bp_tensor_view start_positions, end_positions;   /* i32[B], when has_positions */
    int has_positions;
    bp_str *ids;                              /* B example ids (malloc'd array) */
} bp_qa_logits_view;

int bp_qa_logits_read(const bp_frame *f, bp_qa_logits_view *l, bp_err *err);
void bp_qa_logits_view_free(bp_qa_logits_view *l);

/* ---- prediction frames (score) ---------------------------------------------------------- */

typedef struct bp_prediction_view {
    bp_str example_id;
    /* classification */
    int64_t label, gold;          /* gold -1: unlabelled */
    double loss;
    int has_loss;
    /* QA */
    bp_str text;
    bp_str *answers;              /* the gold texts (malloc'd array, NULL when none) */
    size_t n_answers;
    int is_impossible, has_span_match, span_match;
} bp_prediction_view;

int bp_prediction_read(const bp_frame *f, int qa, bp_prediction_view *p, bp_err *err);
void bp_prediction_view_free(bp_prediction_view *p);

#endif
