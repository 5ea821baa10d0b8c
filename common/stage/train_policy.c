/* stage/train_policy.c — evaluate, keep the best, stop early (see train_policy.h).
 * Must never: call an evaluation that could not compute the metric a best or a failure. */
#include "stage/train_policy.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "stage/stage.h"

const char *bp_metric_canonical(const char *name) {
    static const struct { const char *alias, *canonical; } names[] = {
        {"accuracy", "accuracy"}, {"acc", "accuracy"}, {"macro-f1", "macro_f1"}, {"macro_f1", "macro_f1"},
        {"em", "exact_match"}, {"exact-match", "exact_match"}, {"exact_match", "exact_match"}, {"exact", "exact_match"},
        {"f1", "f1"}, {"loss", "loss"},
    };
    if (!strncasecmp(name, "eval_", 5)) name += 5;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcasecmp(name, names[i].alias)) return names[i].canonical;
    return NULL;
}

void bp_policy_init(bp_train_policy *p, long eval_every, const char *save_best, long patience) {
    *p = (bp_train_policy){.eval_every = eval_every, .patience = patience, .save_best = save_best != NULL,
                           .best_value = NAN, .best_step = -1, .last_eval_step = -1};
    if (save_best && !(p->metric = bp_metric_canonical(save_best)))
        bp_die(2, NULL, "--save-best wants accuracy, macro-f1, em, f1 or loss, got '%s'", save_best);
    if (!p->metric && patience) p->metric = "loss";
    p->greater_is_better = p->metric && strcmp(p->metric, "loss") != 0;
}

void bp_policy_check(const bp_train_policy *p, const bp_eval_set *set) {
    const char *option = p->save_best ? "--save-best" : "--patience";
    if (set->spec && !bp_eval_set_scorable(set))
        bp_warn("the --eval stream has no labels (a test split?): nothing to score, so no evaluation during training");
    if (!p->metric) return;
    if (!set->spec) bp_die(2, NULL, "%s needs an evaluation: give --eval SPEC", option);
    if (!bp_eval_set_gives(set, p->metric)) {
        const char *why = set->qa && (!strcmp(p->metric, "accuracy") || !strcmp(p->metric, "macro_f1"))
                              ? "it is a classification metric and this is QA"
                          : !set->qa && (!strcmp(p->metric, "exact_match") || !strcmp(p->metric, "f1"))
                              ? "it is a QA metric and this is classification"
                          : set->qa && strcmp(p->metric, "loss") ? "give --eval-examples SPEC (the validation examples)"
                                                                 : "the --eval stream has no labels";
        bp_die(2, NULL, "%s %s: the evaluation cannot give it (%s)", option, p->metric, why);
    }
}

int bp_policy_eval_due(const bp_train_policy *p, const bp_eval_set *set, long step, int at_epoch_end) {
    if (!bp_eval_set_scorable(set) || step == p->last_eval_step) return 0;
    return p->eval_every ? !at_epoch_end && step % p->eval_every == 0 : at_epoch_end;
}

double bp_eval_metric(const bp_eval_result *r, const char *metric) {
    if (!strcmp(metric, "loss")) return r->loss;
    if (!strcmp(metric, "accuracy")) return r->accuracy;
    if (!strcmp(metric, "macro_f1")) return r->macro_f1;
    if (!strcmp(metric, "exact_match")) return r->exact_match;
    if (!strcmp(metric, "f1")) return r->f1;
    return NAN;
}

int bp_policy_record(bp_train_policy *p, long step, const bp_eval_result *r) {
    p->last_eval_step = step;
    if (!p->metric) return 0;
    double v = bp_eval_metric(r, p->metric);
    if (isnan(v)) return 0;
    int better = isnan(p->best_value) || (p->greater_is_better ? v > p->best_value : v < p->best_value);
    if (!better) {
        p->evals_since_best++;
        return 0;
    }
    p->best_value = v;
    p->best_step = step;
    p->evals_since_best = 0;
    return 1;
}

int bp_policy_should_stop(const bp_train_policy *p) { return p->patience > 0 && p->evals_since_best >= p->patience; }
