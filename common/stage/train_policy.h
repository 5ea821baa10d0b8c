/* stage/train_policy.h — when train evaluates, which evaluation is the best, and when it stops
 * early: the Hugging Face Trainer's eval_strategy/eval_steps, metric_for_best_model /
 * greater_is_better and EarlyStoppingCallback, as train's --eval-every, --save-best and
 * --patience.
 *
 *   evaluate   at each epoch end, or every --eval-every N optimizer steps instead; never
 *              twice at one step
 *   best       the evaluation whose metric is strictly better than every earlier one (higher
 *              for accuracy, macro_f1, exact_match, f1; lower for loss)
 *   stop       after --patience N evaluations in a row without a new best
 *
 * The state (best value and step, evaluations since, last evaluation) is what trainer_state.json
 * keeps, so a resumed run goes on with the same best and the same patience.
 * Only stages include this (bad options die with a usage error).
 * Must never: count an evaluation that could not compute the metric as one without improvement.
 */
#ifndef BP_TRAIN_POLICY_H
#define BP_TRAIN_POLICY_H
#include "stage/train_eval.h"

typedef struct bp_train_policy {
    long eval_every;          /* 0: evaluate at each epoch end */
    const char *metric;       /* canonical name ("accuracy", "macro_f1", "exact_match", "f1", "loss");
                                 NULL when neither --save-best nor --patience asks for one */
    int save_best;            /* --save-best was given */
    int greater_is_better;
    long patience;            /* 0: never stop early */
    /* state */
    double best_value;        /* NaN before any evaluation of the metric */
    long best_step;           /* -1 before */
    long evals_since_best;
    long last_eval_step;      /* -1 before any evaluation */
} bp_train_policy;

/* The canonical metric name for what a user may type: accuracy, macro-f1 / macro_f1, em /
 * exact-match / exact_match, f1, loss (any case, an "eval_" prefix allowed). NULL when unknown. */
const char *bp_metric_canonical(const char *name);

/* Set up from the options: save_best is --save-best's METRIC (NULL when not given); with only
 * --patience the metric is the loss, as the Trainer's default. Dies (usage, status 2) on an
 * unknown metric. */
void bp_policy_init(bp_train_policy *p, long eval_every, const char *save_best, long patience);

/* Dies (usage, status 2) when the options need an evaluation the set cannot give: --save-best
 * or --patience without --eval, a metric of the other task, EM/F1 without --eval-examples, any
 * metric of an unlabelled stream. Warns once when --eval names a stream that can give nothing. */
void bp_policy_check(const bp_train_policy *p, const bp_eval_set *set);

/* 1 when an evaluation is due: after optimizer step `step` (at_epoch_end 0) or at an epoch
 * frame (1), for a set that can score something, that was not already evaluated at this step. */
int bp_policy_eval_due(const bp_train_policy *p, const bp_eval_set *set, long step, int at_epoch_end);

/* The metric's value in r (NaN when r lacks it). */
double bp_eval_metric(const bp_eval_result *r, const char *metric);

/* Take the evaluation at `step` into the state. Returns 1 when it is the new best. */
int bp_policy_record(bp_train_policy *p, long step, const bp_eval_result *r);

/* 1 when --patience evaluations in a row brought no new best. */
int bp_policy_should_stop(const bp_train_policy *p);

#endif
