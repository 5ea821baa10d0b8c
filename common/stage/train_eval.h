/* stage/train_eval.h — train's evaluation in process: the validation batch frames (--eval)
 * and, for QA, the validation examples (--eval-examples) kept in memory, run through the
 * model at each evaluation, scored as eval | postprocess | score would score them.
 *
 * The numbers are the stages' numbers by construction: classification accuracy and macro-F1
 * come from eval/metrics.h's accumulator over the argmax of the same class scores (a BCE
 * model's one logit x as (0, x), as eval sends it), SQuAD EM/F1 from
 * eval/qa_examples.h (the n-best post-processing of postprocess) and the SQuAD tally of score,
 * over the examples in the order of the examples stream.
 *
 * Only stages include this (it dies where it says so).
 * Must never: score a frame that has no targets (a test split): it is run, counted, not scored.
 */
#ifndef BP_TRAIN_EVAL_H
#define BP_TRAIN_EVAL_H
#include "eval/qa_examples.h"
#include "model/model.h"
#include "stage/bert_input.h"

/* What an evaluation runs on. */
typedef struct bp_eval_set {
    const char *spec, *examples_spec;   /* --eval, --eval-examples (NULL when not given) */
    bp_frame *frames;                   /* the batch frames, in order */
    size_t n;
    int max_B, max_T;                   /* the stream's hello: its largest batch */
    int qa;
    size_t with_targets;                /* frames with labels / answer positions: the loss */
    qa_examples examples;               /* QA: contexts and gold answers (n 0 without --eval-examples) */
    qa_post_options post;               /* QA: n-best, max answer length, v2 (postprocess's options) */
} bp_eval_set;

/* What one evaluation gives. NaN where the set cannot say (no targets, no examples). */
typedef struct bp_eval_result {
    int64_t sequences;                  /* rows run through the model */
    double loss;                        /* mean over the rows that have targets */
    double accuracy, macro_f1;          /* classification, over labelled rows */
    double exact_match, f1;             /* QA with examples, x 100 as the official script */
    int64_t questions, unanswered;      /* QA: examples scored; examples that had no window */
    double seconds;                     /* wall time of the evaluation */
} bp_eval_result;

/* Read the batch stream at SPEC (and, when EXAMPLES_SPEC is not NULL, the example stream) whole
 * into set; post are the QA post-processing options (copied). SPEC NULL gives an empty set.
 * Dies naming the stream on a bad frame or a stream that does not end with its eos. */
void bp_eval_set_read(bp_eval_set *set, const char *spec, const char *examples_spec, int qa,
                      const qa_post_options *post);

/* 1 when the set can give `what`: "loss" (some frame has targets), "accuracy"/"macro_f1"
 * (classification with labels), "exact_match"/"f1" (QA with examples). */
int bp_eval_set_gives(const bp_eval_set *set, const char *what);

/* 1 when the set can score anything at all (a loss, or EM/F1): a test split without labels
 * cannot, and is not worth running during training. */
int bp_eval_set_scorable(const bp_eval_set *set);

/* Run every frame through m (evaluation mode, no dropout) and score it. h must hold the
 * set's largest batch. Dies naming the frame (--eval) on a bad frame or a model failure. */
void bp_eval_run(bp_eval_set *set, model *m, bp_batch_tensors *h, bp_eval_result *out);

void bp_eval_set_free(bp_eval_set *set);

#endif
