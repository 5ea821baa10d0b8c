/* stage/train_eval.c — train's in-process evaluation (see train_eval.h).
 * Must never: score differently from postprocess and score: it calls their library code. */
#include "stage/train_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/metrics.h"
#include "stage/qa_examples_input.h"
#include "stage/stage.h"

void bp_eval_set_read(bp_eval_set *set, const char *spec, const char *examples_spec, int qa,
                      const qa_post_options *post) {
    *set = (bp_eval_set){.spec = spec, .examples_spec = examples_spec, .qa = qa, .post = *post};
    qa_examples_init(&set->examples);
    if (!spec) return;
    bp_err err;
    bp_in *in = bp_in_open(spec, 1, &err);
    if (!in) bp_die_err(&err);
    const bp_frame *hello = bp_in_wait_hello(in);
    if (!hello) bp_die_err(bp_in_err(in));
    bp_batch_shape(hello, spec, &set->max_B, &set->max_T);
    if (bp_stream_is_qa(hello) != qa)
        bp_die(1, spec, "the --eval stream is %s but training is %s", qa ? "classification" : "QA", qa ? "QA" : "classification");
    bp_frame f;
    int rc;
    while ((rc = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_BATCH) {
            bp_frame_release(&f);
            continue;
        }
        if (!(set->frames = realloc(set->frames, (set->n + 1) * sizeof *set->frames))) bp_die(1, NULL, "out of memory");
        set->with_targets += bp_has(&f, qa ? "start_positions" : "labels");
        set->frames[set->n++] = f;   /* the copy owns the frame now */
    }
    if (rc < 0) bp_die_err(bp_in_err(in));
    bp_in_close(in);
    if (qa && examples_spec) bp_read_qa_examples(examples_spec, &set->examples);
}

int bp_eval_set_gives(const bp_eval_set *set, const char *what) {
    if (!set->n) return 0;
    if (!strcmp(what, "loss")) return set->with_targets > 0;
    if (!strcmp(what, "accuracy") || !strcmp(what, "macro_f1")) return !set->qa && set->with_targets > 0;
    if (!strcmp(what, "exact_match") || !strcmp(what, "f1")) return set->qa && set->examples.n > 0;
    return 0;
}

int bp_eval_set_scorable(const bp_eval_set *set) {
    return bp_eval_set_gives(set, "loss") || bp_eval_set_gives(set, "exact_match");
}

void bp_eval_set_free(bp_eval_set *set) {
    for (size_t i = 0; i < set->n; i++) bp_frame_release(&set->frames[i]);
    free(set->frames);
    qa_examples_free(&set->examples);
    memset(set, 0, sizeof *set);
}

/* ---- one evaluation ---------------------------------------------------------------- */

/* What an evaluation adds up while its frames go through the model. */
typedef struct eval_run {
    bp_eval_set *set;
    model *m;
    float *logits, *start, *end;   /* class scores [B, C] or logits [B, T, 2]; QA: one window's [T] each */
    size_t cap;
    int cls;                       /* classification with classes (not regression) */
    int C;                         /* classes: model_classes (2 for BCE's one logit) */
    metrics_cls mc;
    double loss_sum;
    int64_t loss_rows;
} eval_run;

/* Classification: each labelled row's argmax against its label. */
static void add_cls_rows(eval_run *r, const bert_batch *b) {
    bp_err err;
    int C = r->C;
    for (int j = 0; j < b->B; j++)
        if (metrics_cls_add_logits(&r->mc, r->logits + (size_t)j * (size_t)C, b->labels[j], NULL, &err)) bp_die_err(&err);
}

/* QA: each row's start/end logits become a window of its example. */
static void add_qa_rows(eval_run *r, const bp_frame *f, const bert_batch *b) {
    bp_err err;
    int64_t B = b->B, T = b->T, bt2[3] = {B, T, 2}, b1[1] = {B};
    bp_tensor_view to, tw;
    bp_str *ids;
    size_t n_ids;
    if (bp_get_tensor_of(f, "offsets", BP_I32, 3, bt2, &to, &err) || bp_get_tensor_of(f, "windows", BP_I32, 1, b1, &tw, &err) ||
        bp_get_strs(f, "example_ids", &ids, &n_ids, &err))
        bp_die(1, r->set->spec, "%s", err.msg);
    int32_t *offsets = malloc(to.nbytes), *windows = malloc(tw.nbytes);
    if (!offsets || !windows) bp_die(1, NULL, "out of memory");
    bp_tensor_copy(&to, offsets);
    bp_tensor_copy(&tw, windows);
    for (int64_t i = 0; i < B && i < (int64_t)n_ids; i++) {
        qa_example *e = qa_examples_find(&r->set->examples, ids[i].ptr, ids[i].len);
        if (!e) continue;   /* postprocess ignores it too */
        for (int64_t t = 0; t < T; t++) {
            r->start[t] = r->logits[2 * (i * T + t)];
            r->end[t] = r->logits[2 * (i * T + t) + 1];
        }
        if (qa_example_add_window(e, windows[i], (int)T, r->start, r->end, offsets + 2 * i * T, -1, -1, &err))
            bp_die_err(&err);
    }
    free(offsets);
    free(windows);
    free(ids);
}

/* One kept frame through the model: its loss (when it has targets), logits into the tallies.
 * Returns its rows. */
static int run_frame(eval_run *r, bp_batch_tensors *h, const bp_frame *f) {
    bp_err err;
    char where[64];
    bert_batch b;
    int targets = bp_has(f, r->set->qa ? "start_positions" : "labels");
    if (bp_batch_read(f, targets ? &r->m->cfg.bert : NULL, h, &b, &err)) bp_die(1, r->set->spec, "%s", err.msg);
    if (model_forward(r->m, &b, 0, &err))
        bp_die(1, r->set->spec, "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
    if (targets) {
        r->loss_sum += (double)model_loss(r->m) * b.B;
        r->loss_rows += b.B;
    }
    if (!(targets && r->cls) && !(r->set->qa && r->set->examples.n)) return b.B;
    long got = r->set->qa ? model_logits(r->m, r->logits, r->cap, &err) : model_class_scores(r->m, r->logits, r->cap, &err);
    if (got < 0) bp_die_err(&err);
    if (r->set->qa) add_qa_rows(r, f, &b);
    else add_cls_rows(r, &b);
    return b.B;
}

/* QA: every example that has windows answered, in the examples' order, and scored. */
static void score_qa(eval_run *r, bp_eval_result *out) {
    bp_err err;
    qa_examples *xs = &r->set->examples;
    metrics_squad_tally tally;
    metrics_squad_tally_init(&tally);
    for (size_t i = 0; i < xs->n; i++) {
        qa_example *e = &xs->ex[i];
        if (!e->n_windows) {
            out->unanswered++;
            continue;
        }
        qa_post_result res;
        if (qa_example_predict(e, &r->set->post, &res, &err) ||
            metrics_squad_tally_add(&tally, res.answer, (const char *const *)e->answers, e->n_answers, e->is_impossible, &err)) {
            char where[300];
            snprintf(where, sizeof where, "example %.200s of %s", e->id, r->set->examples_spec);
            bp_die(1, where, "%s", err.msg);
        }
        qa_post_result_free(&res);
    }
    metrics_squad_summary s = metrics_squad_tally_summarize(&tally, r->set->post.version_2_with_negative);
    out->exact_match = s.exact;
    out->f1 = s.f1;
    out->questions = s.total;
    qa_examples_clear_windows(xs);
}

void bp_eval_run(bp_eval_set *set, model *m, bp_batch_tensors *h, bp_eval_result *out) {
    bp_err err;
    double start = bp_now();
    *out = (bp_eval_result){.loss = NAN, .accuracy = NAN, .macro_f1 = NAN, .exact_match = NAN, .f1 = NAN};
    /* class scores for accuracy: BCE's one logit is two classes; MSE (regression) has none */
    int C = set->qa ? 0 : model_classes(m);
    eval_run r = {.set = set, .m = m, .cls = !set->qa && C > 1 && m->targets.kind != LOSS_MSE, .C = C};
    r.cap = (size_t)h->max_B * (size_t)(set->qa ? 2 * h->max_T : C);
    r.logits = malloc(r.cap * sizeof *r.logits);
    r.start = malloc((size_t)h->max_T * sizeof *r.start);
    r.end = malloc((size_t)h->max_T * sizeof *r.end);
    if (!r.logits || !r.start || !r.end) bp_die(1, NULL, "out of memory");
    if (r.cls && metrics_cls_init(&r.mc, C, &err)) bp_die_err(&err);
    for (size_t i = 0; i < set->n; i++) out->sequences += run_frame(&r, h, &set->frames[i]);
    if (r.loss_rows) out->loss = r.loss_sum / (double)r.loss_rows;
    if (r.cls && r.mc.count) {
        out->accuracy = metrics_cls_accuracy(&r.mc);
        out->macro_f1 = metrics_cls_macro_f1(&r.mc);
    }
    if (r.cls) metrics_cls_free(&r.mc);
    if (set->qa && set->examples.n) score_qa(&r, out);
    free(r.logits);
    free(r.start);
    free(r.end);
    out->seconds = bp_now() - start;
}
