/* eval/qa_postprocess.h — extractive-QA post-processing: start/end logits of an example's
 * windows -> its n-best answer spans, the answer text and the SQuAD predictions files.
 *
 * Semantics are those of Hugging Face's run_qa `postprocess_qa_predictions` (utils_qa.py),
 * reproduced decision for decision, ties included (docs/postprocess.md). Library code
 * under the `postprocess` stage; errors are -1 with a one-line bp_err.
 * Must never: know about frames, print, or exit.
 */
#ifndef BP_QA_POSTPROCESS_H
#define BP_QA_POSTPROCESS_H
#include <stdint.h>
#include <jansson.h>

#include "base/log.h"

/* A token's span in the example's context, in Unicode code points, [start, end).
 * Tokens that are not context (question, [CLS], [SEP], padding) have start = end =
 * QA_POST_NOT_CONTEXT: HF run_qa sets their offset_mapping to None. */
typedef struct qa_post_offset {
    int32_t start, end;
} qa_post_offset;
#define QA_POST_NOT_CONTEXT (-1)

/* One window (feature) of an example. Nothing is owned: the arrays are the caller's. */
typedef struct qa_post_window {
    int seq_len;                    /* T, >= 1; index 0 is the [CLS] (null) position */
    const float *start_logits;      /* (T,) */
    const float *end_logits;        /* (T,) */
    const qa_post_offset *offsets;  /* (T,) */
} qa_post_window;

typedef struct qa_post_options {
    int n_best;                       /* top start/end indexes per window, and n-best kept; default 20 */
    int max_answer_length;            /* in tokens, end - start + 1; default 30 */
    int version_2_with_negative;      /* SQuAD v2: the null answer competes; default 0 */
    float null_score_diff_threshold;  /* v2: predict "" when null - best > this; default 0 */
} qa_post_options;

/* HF run_qa's defaults: 20, 30, v1, 0.0. Can't fail. */
void qa_post_options_default(qa_post_options *options);

typedef enum qa_post_kind {
    QA_POST_SPAN = 0,  /* a span of context tokens */
    QA_POST_NULL = 1,  /* v2: the [CLS] answer (min null score over windows), text "" */
    QA_POST_EMPTY = 2, /* HF's stand-in when nothing else has text: text "empty", score 0 */
} qa_post_kind;

/* One n-best entry, in HF's order (score descending). */
typedef struct qa_post_candidate {
    char *text;             /* UTF-8, NUL-terminated, owned by the result */
    float score;            /* start_logit + end_logit, summed in float32 as HF */
    float start_logit, end_logit;
    double probability;     /* softmax of the n-best scores (see docs/postprocess.md) */
    qa_post_kind kind;
    int window;             /* window index; -1 for QA_POST_EMPTY */
    int start_index, end_index; /* token indexes in that window; 0, 0 for the null */
    int32_t char_start, char_end; /* the text's code-point span in the context */
} qa_post_candidate;

typedef struct qa_post_result {
    qa_post_candidate *nbest;  /* n_nbest entries, owned */
    int n_nbest;
    char *answer;              /* predictions.json's text for the example, owned */
    float answer_score;        /* score of the chosen entry (the null's when "" wins) */
    int answer_index;          /* index in nbest of the chosen entry (v2: the null's when
                                  "" wins) */
    int predicted_null;        /* v2: 1 when "" was predicted because null beat the best */
    float null_score;          /* v2: min over windows of start_logits[0] + end_logits[0] */
    float score_diff;          /* v2: null_score - best non-null start - end logit (HF's
                                  null_odds.json value); 0 under v1 */
} qa_post_result;

/* Post-process one example. context is the example's UTF-8 context; windows are all of
 * its windows, in order. Fills *out (free with qa_post_result_free; zeroed on error).
 * Returns 0, or -1 with err filled: no windows, invalid UTF-8, a NaN/inf logit, an
 * offset outside the context or with end < start, bad options, out of memory. Messages
 * say which window and token; the caller adds the example id. */
int qa_post_process(const char *context, const qa_post_window *windows, int n_windows,
                    const qa_post_options *options, qa_post_result *out, bp_err *err);

/* Free what qa_post_process allocated; safe on a zeroed or freed result. */
void qa_post_result_free(qa_post_result *result);

/* Add one example to the JSON objects of HF's output files:
 *   predictions       {id: answer}                                (predictions.json)
 *   nbest (optional)  {id: [{"start_logit", "end_logit", "text", "probability"}...]}
 *                                                                 (nbest_predictions.json)
 *   null_odds (optional, v2) {id: score_diff}                     (null_odds.json)
 * Pass NULL for the ones not wanted. Returns 0, or -1 with err filled when the id is
 * already there (each example must be post-processed once) or out of memory. */
int qa_post_json_add(json_t *predictions, json_t *nbest, json_t *null_odds,
                     const char *example_id, const qa_post_result *result, bp_err *err);

/* Write one of those objects to path as HF does (indent 4, non-ASCII escaped as \uXXXX,
 * insertion order, trailing newline), through a temporary file renamed into place so a
 * failed run never leaves a partial file under the final name.
 * Returns 0, or -1 with err naming the path. */
int qa_post_json_write_file(const json_t *root, const char *path, bp_err *err);

#endif
