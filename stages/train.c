/* train — batch frames in, a fine-tuned checkpoint and metric frames out.
 *
 * The model starts from a Hugging Face checkpoint (--checkpoint DIR), a config.json
 * (--config FILE) or a named shape (--preset mini), or for the QA baselines from fresh weights
 * of the sizes given; --model, --head and --loss choose the variant (common/model/model.h),
 * --freeze what stays fixed. It trains with AdamW, Adam or SGD, the linear warm-up/decay (or
 * constant) schedule, clipping and accumulation (common/model/optim.h).
 * A metric frame goes out per optimizer step and a summary per epoch; it evaluates --eval (if
 * given) at each epoch frame or every --eval-every steps (QA: EM/F1 with --eval-examples, the
 * numbers eval | postprocess | score give), keeps the best (--save-best), stops early
 * (--patience), and saves to --save. SIGINT/SIGTERM save and exit; a loss or gradient norm that
 * is not finite, or a loss that explodes (--max-loss-ratio), stops with the step number and
 * keeps the last checkpoint saved, each of which was tried on a batch before it was written.
 * --resume DIR continues exactly: weights, optimizer state, step, dropout RNG and data position
 * come back, also from a save made in the middle of a gradient accumulation; the variant is the
 * one saved in config.json.
 * Under mpirun (or --data-parallel mpi) it is one rank of a data-parallel run
 * (stage/data_parallel.h, docs/data-parallel.md): rank 0 reads the input and shares it, every
 * rank trains on its shard of each batch, the gradients are summed before each update, and
 * only rank 0 writes frames, logs and checkpoints.
 * Must never: write a checkpoint whose weights give a loss that is not finite or diverged.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/model_io.h"
#include "ckpt/trainer_dir.h"
#include "eval/metrics.h"
#include "stage/bert_input.h"
#include "stage/data_parallel.h"
#include "stage/stage.h"
#include "stage/train_eval.h"
#include "stage/train_policy.h"

static const char usage[] =
    "usage: train (--checkpoint DIR | --config FILE | --preset NAME | --resume DIR) [options] [--in SPEC] [--out SPEC]\n"
    "       train --model lstm|transformer [--hidden N --heads N --intermediate N] [options]\n"
    "Fine-tune BERT on batch frames; metric frames out.\n"
    "  --checkpoint DIR     start from a Hugging Face checkpoint (config.json + weights)\n"
    "  --ignore-mismatched-sizes   a checkpoint tensor of another shape (a head for another label count)\n"
    "                       is initialised afresh and named, instead of refused\n"
    "  --config FILE        fresh weights for this config.json\n"
    "  --preset NAME        fresh weights, Google's shapes: tiny mini small medium base large\n"
    "  --vocab FILE         vocab.txt saved with the checkpoint (default DIR/vocab.txt)\n"
    "  --resume DIR         continue a run saved by --save (same input stream): DIR's latest\n"
    "                       checkpoint-STEP, or a checkpoint-STEP folder itself\n"
    "  --lr X               peak learning rate (default 5e-5)\n"
    "  --warmup-steps N | --warmup-ratio R   linear warm-up (default 0)\n"
    "  --schedule linear|constant   after warm-up: decay to 0 at the last step (default) or keep the rate\n"
    "  --optimizer NAME     adamw (default), adam or sgd (torch.optim semantics)\n"
    "  --momentum X --dampening X --nesterov   SGD's (default 0, 0, off)\n"
    "  --weight-decay X     decay, not on biases and LayerNorm (default 0): AdamW decoupled, Adam and SGD L2\n"
    "  --max-grad-norm X    global-norm clipping, 0 = off (default 1.0)\n"
    "  --max-loss-ratio R   stop when a loss is over R times a know-nothing model's (ln C; BCE ln 2; QA ln T),\n"
    "                       0 = off (default 100); a loss that is not finite always stops\n"
    "  --grad-accum N       batches per optimizer step (default 1)\n"
    "  --max-steps N        stop training after N steps (the input is still read to its end)\n"
    "  --dropout P          hidden and attention dropout (default: the config's)\n"
    "Variants (saved in config.json; a --resume run keeps its own)\n"
    "  --model NAME         body: bert (default), lstm or transformer (QA baselines from scratch)\n"
    "  --head NAME          linear (default: BERT's own), mlp (pooled [CLS]), gru or lstm (last hidden state)\n"
    "  --loss NAME          auto (default: CE, MSE for 1 label), ce, bce (one logit) or mse\n"
    "  --freeze LIST        bert, embeddings, encoder, layers:A-B (comma-separated): no gradient, no state\n"
    "  --mlp-hidden N,...   mlp hidden sizes (default 256)  --activation relu|gelu|tanh (default relu)\n"
    "  --rnn-layers N --rnn-hidden N   (default 2, 256)  --unidirectional   --rnn-dropout P (default 0.25)\n"
    "  --head-dropout P     before the head's Linear layers (default: the classifier dropout)\n"
    "  --hidden N --heads N --intermediate N --layers N   body sizes for fresh weights\n"
    "                       (baselines: 768, 12, 2048 = dim_feedforward, 1 layer)\n"
    "  --seed N             weight init and dropout seed (default 42)\n"
    "  --device auto|cuda|cpu  (default auto)    --threads N  CPU threads (default all)\n"
    "  --data-parallel auto|mpi|off   one rank of an mpirun run, each training on its shard of every\n"
    "                       batch (default auto: when started by mpirun; docs/data-parallel.md)\n"
    "  --precision fp32|tf32|bf16|auto   matmul precision (default fp32): bf16 on cuda or an avx512_bf16\n"
    "                       CPU, fp32 master weights; tf32 cuda only; auto: bf16 where the device has it\n"
    "  --save DIR           save DIR/checkpoint-STEP at each epoch end and at the end (weights, optimizer\n"
    "                       state, tokenizer files, trainer_state.json); DIR itself holds the model to use\n"
    "  --save-total-limit N keep the N latest checkpoint-STEP folders (and the best)\n"
    "  --save-every N       also save every N steps\n"
    "  --save-init DIR      save the starting weights (before any step) to DIR, e.g. for a peer run\n"
    "  --eval SPEC          validation batch stream (e.g. file:val.frames), evaluated each epoch\n"
    "  --eval-every N       evaluate every N optimizer steps instead of at each epoch end\n"
    "  --eval-examples SPEC QA: the validation examples (file:validation.examples): EM/F1 at each evaluation\n"
    "  --n-best N  --max-answer-length N  --version-2  --null-threshold X   QA answers, as postprocess\n"
    "  --save-best METRIC   save at each new best by accuracy, macro-f1, em, f1 or loss; DIR holds the best\n"
    "  --patience N         stop after N evaluations in a row without a new best (metric: --save-best's, else loss)\n"
    BP_IO_USAGE;

/* The variant the command line asks for (NULL / -1: not given). */
typedef struct variant_args {
    const char *body, *head, *loss, *freeze, *mlp_hidden, *activation;
    long rnn_layers, rnn_hidden, hidden, heads, intermediate, layers;
    double rnn_dropout, head_dropout;
    int unidirectional, given;   /* given: any of these appeared */
} variant_args;

/* What the command line asks for. */
typedef struct train_args {
    bp_io_opts io;
    const char *checkpoint, *config, *preset, *vocab, *resume, *optimizer, *schedule;
    const char *device, *precision, *save_dir, *eval_spec, *save_init;
    const char *eval_examples, *save_best;
    const char *data_parallel;   /* --data-parallel */
    double lr, warmup_ratio, weight_decay, max_grad_norm, dropout, max_loss_ratio, momentum, dampening;
    long warmup_steps, grad_accum, max_steps, save_every, threads;
    long eval_every, patience, save_total_limit;
    int ignore_mismatched;       /* --ignore-mismatched-sizes */
    int nesterov;
    qa_post_options post;        /* QA answers at each evaluation, as postprocess's options */
    uint64_t seed;
    variant_args v;
} train_args;

/* What the batch stream's hello says about it. */
typedef struct stream_info {
    bert_head head;
    int max_B, max_T;            /* the largest batch */
    int64_t per_epoch, epochs;   /* batches per epoch, epochs */
    int64_t num_labels, vocab_size;
    char **labels;               /* the class names, saved with the checkpoint */
    int n_labels;
    int batch_size, max_length;  /* the training stream's own (max_B/T may grow for --eval) */
    int lowercase;               /* the tokenizer's casing, saved with the checkpoint */
} stream_info;

/* The model being trained and where it is saved. */
typedef struct run {
    model *m;
    bp_dp *dp;         /* the data-parallel run: gradients are summed over it before each update */
    optimizer *opt;
    bert_train_state state;
    const char *save_dir, *vocab_path;
    const stream_info *info;
    long saved_step;   /* step of the last save, -1 before any */
    /* divergence: a loss that is not finite, or over max_loss_ratio (0: off) times the loss
     * of a model that knows nothing, stops the run */
    double max_loss_ratio, loss_reference;
    bert_batch last;   /* the batch trained on last (has_last), to try weights on before a save */
    int has_last;
    char last_where[64];   /* its frame, for messages */
    const bp_train_policy *policy;   /* what is the best, and so what the top of save_dir holds */
    td_state *log;                   /* trainer_state.json's log history */
    long steps_per_epoch, total_steps, save_every, save_total_limit;
} run;

/* "the checkpoint of step N in DIR is kept" / "no checkpoint was saved": what a stopped run
 * leaves. Every save was tried first (save_all), so the one kept is good. */
static const char *kept(const run *r) {
    static char text[300];
    if (r->saved_step < 0) return "no checkpoint was saved";
    snprintf(text, sizeof text, "the checkpoint of step %ld in %s is kept", r->saved_step, r->save_dir);
    return text;
}

/* 0 when a loss shows a run that has not diverged; else -1 with err saying how it has. */
static int loss_ok(const run *r, double loss, bp_err *err) {
    if (!isfinite(loss)) return bp_err_set(err, "loss is %g", loss);
    if (r->max_loss_ratio > 0 && loss > r->max_loss_ratio * r->loss_reference)
        return bp_err_set(err, "loss %g is over %g times %.4g, the loss of a model that knows nothing (--max-loss-ratio): "
                          "training diverged", loss, r->max_loss_ratio, r->loss_reference);
    return 0;
}

/* The weights about to be saved, tried on the last batch (no dropout): a checkpoint is only
 * written when its own loss is finite and not diverged, so the one a failed run keeps is one
 * that evaluates. (The step's own loss was of the weights before it.) */
static void try_weights(run *r) {
    bp_err err, why;
    if (!r->has_last) return;
    if (model_forward(r->m, &r->last, 0, &err)) bp_die(1, r->last_where, "%s", err.msg);
    if (loss_ok(r, model_loss(r->m), &why))
        bp_die(1, r->save_dir, "step %ld: the weights after it fail on the last batch: %s; not saved; stopping, %s",
               r->state.step, why.msg, kept(r));
}


/* What the epoch under way adds up to, for its summary. */
typedef struct epoch_stats {
    double start, eval_seconds;   /* when it began; time spent evaluating */
    double loss_sum;              /* of its batches */
    long batches;
    int64_t sequences, correct, labelled;   /* rows; classification: argmax = label */
} epoch_stats;

/* The training loop's state between optimizer steps. */
typedef struct trainer {
    run *r;
    bp_out *out;
    bp_writer *w;
    bp_progress *prog;
    bp_batch_tensors *h;          /* the batch trained on (r->last points into it) */
    bp_batch_tensors *eval_h;     /* evaluation's own: try_weights still has the last batch after one */
    bp_eval_set *eval;
    bp_train_policy *policy;
    epoch_stats epoch;
    float *train_logits;          /* classification: one batch's class scores, for train accuracy */
    int64_t seq;                  /* metric frames sent */
    long micro, micro_rows;       /* batches and rows accumulated since the last step */
    double loss_sum, start;       /* their loss; when the step began */
    long grad_accum, total_steps, save_every;
    int done;                     /* total_steps reached: read on to the eos */
    const char *stopped_by;       /* why done came before the stream's end (a save's reason) */
    int cut_short;                /* batches came after done: the epoch frame ends no whole epoch */
    char extra[96];               /* the progress bar's "epoch E/N loss X lr Y" */
    bp_dp *dp;                    /* the data-parallel run (one process: size 1) */
} trainer;

/* Where the run stands, for trainer_state.json. */
static td_progress run_progress(const run *r) {
    const bp_train_policy *p = r->policy;
    return (td_progress){.global_step = r->state.step, .max_steps = r->total_steps,
                         .num_train_epochs = (long)r->info->epochs, .train_batch_size = r->info->batch_size,
                         .eval_steps = p->eval_every, .save_steps = r->save_every,
                         .epoch = r->steps_per_epoch ? (double)r->state.step / (double)r->steps_per_epoch : 0,
                         .metric = p->metric, .greater_is_better = p->greater_is_better, .best_metric = p->best_value,
                         .best_step = p->best_step, .patience = p->patience, .patience_counter = p->evals_since_best};
}

/* Save checkpoint-STEP in save_dir (weights, optimizer state, tokenizer files, trainer_state.json
 * in one folder swap, so a resume never mixes saves); the top of save_dir holds the best
 * evaluation's model with --save-best, else the latest. */
static void save_all(run *r, const char *why) {
    if (!r->save_dir || r->saved_step == r->state.step) return;
    bp_err err;
    try_weights(r);
    r->state.dropout_seed = r->m->dropout_seed;   /* dropout_counter: as it was at the step (apply_update) */
    const bp_train_policy *p = r->policy;
    td_progress progress = run_progress(r);
    td_save_request q = {.dir = r->save_dir, .m = r->m, .opt = r->opt, .state = &r->state,
                         .labels = (const char *const *)r->info->labels, .n_labels = r->info->n_labels,
                         .vocab_path = r->vocab_path, .lowercase = r->info->lowercase,
                         .model_max_length = r->info->max_length, .log = r->log, .progress = &progress,
                         .publish = !p->save_best || p->best_step < 0 || p->best_step == r->state.step,
                         .total_limit = r->save_total_limit};
    int rc = td_save(&q, &err);
    if (rc < 0) bp_die_err(&err);
    if (rc > 0) bp_warn("%s", err.msg);
    r->saved_step = r->state.step;
    bp_log("saved %s/checkpoint-%ld at step %ld (%s)%s", r->save_dir, r->state.step, r->state.step, why,
           q.publish ? "" : "; the top keeps the best");
}

/* DIR/trainer_state.json with every log entry, also those after the last save (an epoch's
 * summary at a step an earlier save already had). */
static void finish_run_state(run *r) {
    bp_err err;
    td_progress progress = run_progress(r);
    if (r->save_dir && td_write_run_state(r->save_dir, r->log, &progress, &err)) bp_die_err(&err);
}

/* One entry of trainer_state.json's log history (HF's names) at the current step and epoch. */
static void log_entry(run *r, const char *const *keys, const double *values, int n) {
    bp_err err;
    if (td_state_log(r->log, r->state.step, run_progress(r).epoch, keys, values, n, &err)) bp_die_err(&err);
}

/* ---- evaluation on --eval ---------------------------------------------------------- */

/* The evaluation's metric frame (scope "eval"): what it could score, its time and speed. */
static void send_eval_metric(trainer *t, const bp_eval_result *e, long epoch) {
    bp_writer *w = t->w;
    bp_begin(w, BP_METRIC);
    bp_put_int(w, "seq", t->seq++);
    bp_put_str(w, "scope", "eval");
    bp_put_int(w, "step", t->r->state.step);
    bp_put_int(w, "epoch", epoch);
    bp_put_float(w, "epoch_progress", run_progress(t->r).epoch);   /* epochs done: 0.5 mid-way (--eval-every) */
    bp_put_int(w, "examples", e->sequences);
    const char *keys[] = {"loss", "accuracy", "macro_f1", "exact_match", "f1"};
    const double values[] = {e->loss, e->accuracy, e->macro_f1, e->exact_match, e->f1};
    for (int i = 0; i < 5; i++)
        if (!isnan(values[i])) bp_put_float(w, keys[i], values[i]);
    if (t->eval->qa && t->eval->examples.n) bp_put_int(w, "questions", e->questions);
    bp_put_float(w, "eval_time", e->seconds);
    bp_put_float(w, "seq_per_s", e->seconds > 0 ? (double)e->sequences / e->seconds : 0);
    bp_send(t->out, w);
}

static void log_eval(const trainer *t, const bp_eval_result *e, long epoch) {
    char scores[160] = "", rows[64];
    snprintf(rows, sizeof rows, "%lld %s", (long long)e->sequences, t->eval->qa ? "windows" : "examples");
    if (!isnan(e->accuracy))
        snprintf(scores, sizeof scores, " accuracy %.4f macro-F1 %.4f", e->accuracy, e->macro_f1);
    else if (!isnan(e->exact_match))
        snprintf(scores, sizeof scores, " EM %.2f F1 %.2f", e->exact_match, e->f1);
    if (!isnan(e->exact_match)) snprintf(rows, sizeof rows, "%lld questions, %lld windows", (long long)e->questions,
                                         (long long)e->sequences);
    bp_summary("epoch %ld step %ld eval: loss %.4f%s (%s, %.1f s)", epoch, t->r->state.step, e->loss, scores, rows,
           e->seconds);
    if (e->unanswered)
        bp_warn("%lld examples of --eval-examples have no window in --eval: not scored", (long long)e->unanswered);
}

/* Evaluate the kept validation frames; the policy hears of it (best, patience). Returns 1 for
 * a new best that --save-best wants saved. */
static int evaluate(trainer *t, long epoch) {
    run *r = t->r;
    bp_train_policy *p = t->policy;
    bp_eval_result e;
    bp_eval_run(t->eval, r->m, t->eval_h, &e);
    t->epoch.eval_seconds += e.seconds;
    send_eval_metric(t, &e, epoch);
    log_eval(t, &e, epoch);
    const char *keys[] = {"eval_loss", "eval_accuracy", "eval_macro_f1", "eval_exact_match", "eval_f1", "eval_runtime",
                          "eval_samples_per_second"};
    const double values[] = {e.loss, e.accuracy, e.macro_f1, e.exact_match, e.f1, e.seconds,
                             e.seconds > 0 ? (double)e.sequences / e.seconds : NAN};
    log_entry(r, keys, values, 7);
    int best = bp_policy_record(p, r->state.step, &e) && p->save_best;
    if (best) bp_log("new best %s %.4f at step %ld", p->metric, p->best_value, r->state.step);
    if (bp_policy_should_stop(p) && !t->done) {
        t->done = 1;
        t->stopped_by = "end of training: early stopping";
        bp_log("early stopping at step %ld: %ld evaluations without a better %s (best %.4f at step %ld)", r->state.step,
               p->evals_since_best, p->metric, p->best_value, p->best_step);
    }
    return best;
}

/* ---- one optimizer step ------------------------------------------------------------ */

/* Clip and update; frames_seen becomes the resume position. */
static void apply_update(run *r, int64_t frames_seen, double *grad_norm, float *lr) {
    bp_err err;
    if (bp_dp_sum_gradients(r->dp, r->m, &err)) bp_die(1, r->last_where, "step %ld: %s", r->state.step + 1, err.msg);
    if (model_optim_step(r->m, r->opt, grad_norm, lr, &err))
        bp_die(1, r->last_where, "step %ld: %s; stopping, %s", r->state.step + 1, err.msg, kept(r));
    r->state.step++;
    r->state.batches_consumed = frames_seen;
    /* the dropout masks of the next step start here: a resume from this step replays its
     * batches with them, even when the save comes in the middle of an accumulation */
    r->state.dropout_counter = r->m->dropout_counter;
}

/* The step's metric frame (scope "train"): mean loss of its batches, lr, norm, speed. */
static void send_train_metric(trainer *t, double loss, double grad_norm, float lr, double now) {
    const run *r = t->r;
    bp_writer *w = t->w;
    bp_begin(w, BP_METRIC);
    bp_put_int(w, "seq", t->seq++);
    bp_put_str(w, "scope", "train");
    bp_put_int(w, "step", r->state.step);
    bp_put_int(w, "epoch", r->state.epoch + 1);
    bp_put_float(w, "loss", loss);
    bp_put_float(w, "lr", lr);
    bp_put_float(w, "grad_norm", grad_norm);
    bp_put_float(w, "seq_per_s", (double)t->micro_rows / (now - t->start));
    bp_send(t->out, w);
}

/* --eval-every, --save-every, and the end of training at total_steps. */
static void after_step(trainer *t) {
    run *r = t->r;
    if (bp_policy_eval_due(t->policy, t->eval, r->state.step, 0) && evaluate(t, r->state.epoch + 1))
        save_all(r, "best so far");
    if (t->save_every && r->state.step % t->save_every == 0) save_all(r, "every N steps");
    if (r->state.step >= t->total_steps) {
        t->done = 1;
        t->stopped_by = "end of training: --max-steps reached";
        bp_log("reached %ld steps", r->state.step);
    }
}

/* One optimizer step: the update, then its metric frame, the progress bar and the save policy. */
static void optimizer_step(trainer *t, int64_t frames_seen) {
    double grad_norm, loss = t->loss_sum / (double)t->micro;
    float lr;
    apply_update(t->r, frames_seen, &grad_norm, &lr);
    double now = bp_now();
    send_train_metric(t, loss, grad_norm, lr, now);
    const char *keys[] = {"loss", "learning_rate", "grad_norm"};
    log_entry(t->r, keys, (const double[]){loss, hfc_real_from_float(lr), grad_norm}, 3);
    snprintf(t->extra, sizeof t->extra, "epoch %ld/%lld loss %.4f lr %.3g", t->r->state.epoch + 1,
             (long long)t->r->info->epochs, loss, (double)lr);
    bp_progress_update(t->prog, t->r->state.step, t->extra);
    t->micro = t->micro_rows = 0;
    t->loss_sum = 0;
    t->start = now;
    after_step(t);
}

/* How many rows of this rank's shard the forward pass got right, into counts (correct,
 * labelled): classification, with dropout on, as the Trainer's train accuracy. */
static void count_rows(trainer *t, const bert_batch *b, double counts[2]) {
    if (!t->train_logits || !b->labels) return;
    bp_err err;
    int C = model_classes(t->r->m);
    if (model_class_scores(t->r->m, t->train_logits, (size_t)b->B * (size_t)C, &err) < 0) bp_die_err(&err);
    for (int j = 0; j < b->B; j++) {
        counts[1]++;
        counts[0] += metrics_argmax(t->train_logits + (size_t)j * (size_t)C, C) == b->labels[j];
    }
}

/* The rows of a batch this rank trains on (all of them in one process). */
static bert_batch shard_of(const bp_dp *dp, const bert_batch *whole) {
    int first, rows;
    bp_dp_shard(dp, whole->B, &first, &rows);
    bert_batch b = *whole;
    size_t at = (size_t)first * (size_t)whole->T;
    b.B = rows;
    b.input_ids += at;
    b.attention_mask += at;
    if (b.token_type_ids) b.token_type_ids += at;
    if (b.labels) b.labels += first;
    if (b.label_values) b.label_values += first;
    if (b.start_positions) b.start_positions += first;
    if (b.end_positions) b.end_positions += first;
    return b;
}

/* Forward this rank's shard of one batch frame: sums gets its loss weighted by its share of the
 * rows, and its correct and labelled rows, summed over the ranks (the whole batch's numbers). */
static void forward_shard(trainer *t, const bp_frame *f, const bert_batch *b, float share, double sums[3]) {
    bp_err err;
    char where[64];
    if (b->B > 0) {
        if (model_forward(t->r->m, b, 1, &err)) bp_die(1, bp_frame_where(f, where, sizeof where), "%s", err.msg);
        sums[0] = share * model_loss(t->r->m);
        count_rows(t, b, sums + 1);
    }
    if (bp_dp_sum(t->dp, sums, 3, &err)) bp_die(1, t->r->last_where, "%s", err.msg);
}

/* Forward and backward one batch frame (this rank's shard of it); a step once grad_accum
 * batches are in. Each shard's loss counts rows / B of the batch's mean, so the gradients
 * summed over the ranks are the whole batch's. */
static void train_batch(trainer *t, const bp_frame *f, int64_t frames_seen) {
    run *r = t->r;
    bp_err err;
    bert_batch whole;
    if (bp_batch_read(f, &r->m->cfg.bert, t->h, &whole, &err)) bp_die_err(&err);
    bp_frame_where(f, r->last_where, sizeof r->last_where);
    bert_batch b = shard_of(t->dp, &whole);
    float share = (float)b.B / (float)whole.B;
    double sums[3] = {0, 0, 0};   /* weighted loss, correct, labelled */
    forward_shard(t, f, &b, share, sums);
    float loss = (float)sums[0];
    if (!r->has_last && isfinite(loss) && loss > r->loss_reference) r->loss_reference = loss;   /* a fresh model may start worse */
    if (loss_ok(r, loss, &err))
        bp_die(1, r->last_where, "step %ld: %s; stopping, %s", r->state.step + 1, err.msg, kept(r));
    if (b.B > 0) {
        r->last = b;
        r->has_last = 1;
    }
    epoch_stats *ep = &t->epoch;
    ep->loss_sum += loss;
    ep->batches++;
    ep->sequences += whole.B;
    ep->correct += (int64_t)sums[1];
    ep->labelled += (int64_t)sums[2];
    if (b.B > 0 && model_backward(r->m, share / (float)t->grad_accum, &err)) bp_die_err(&err);
    t->loss_sum += loss;
    t->micro++;
    t->micro_rows += whole.B;
    if (t->micro == t->grad_accum) optimizer_step(t, frames_seen);
}

/* ---- stopping on a signal ---------------------------------------------------------- */

/* The run a stop signal saves, whether the signal ends the input loop or cuts short a send. */
static run *stopping_run;

static void save_on_stop(int sig) {
    save_all(stopping_run, sig == SIGINT ? "interrupted" : "terminated");
    bp_log("stopped by signal %d at step %ld", sig, stopping_run->state.step);
}

/* ---- setting up -------------------------------------------------------------------- */

/* The loss of a model that predicts uniformly: ln C over C classes (BCE's one logit: ln 2), ln T
 * for a QA span's start and end over T tokens; 1 for regression, whose scale is the data's. */
static double know_nothing_loss(const model *m, int max_T) {
    if (m->cfg.bert.head == BERT_HEAD_QA) return log((double)(max_T > 1 ? max_T : 2));
    int classes = model_classes(m);
    return classes > 1 && m->targets.kind != LOSS_MSE ? log((double)classes) : 1.0;
}

/* The options of evaluation, best-keeping and stopping, read by control_option. */
enum { O_EVAL_EVERY = 0x2001, O_EVAL_EXAMPLES, O_N_BEST, O_MAX_ANSWER, O_V2, O_NULL_THRESHOLD, O_SAVE_BEST, O_PATIENCE,
       O_SAVE_TOTAL_LIMIT, O_IGNORE_MISMATCHED };
#define CONTROL_LONGOPTS                                                                                         \
    {"eval-every", required_argument, 0, O_EVAL_EVERY}, {"eval-examples", required_argument, 0, O_EVAL_EXAMPLES}, \
    {"n-best", required_argument, 0, O_N_BEST}, {"max-answer-length", required_argument, 0, O_MAX_ANSWER},       \
    {"version-2", no_argument, 0, O_V2}, {"null-threshold", required_argument, 0, O_NULL_THRESHOLD},             \
    {"save-best", required_argument, 0, O_SAVE_BEST}, {"patience", required_argument, 0, O_PATIENCE},             \
    {"save-total-limit", required_argument, 0, O_SAVE_TOTAL_LIMIT},                                              \
    {"ignore-mismatched-sizes", no_argument, 0, O_IGNORE_MISMATCHED}

/* Handle one getopt result if it is a control option: returns 1 when handled. */
static int control_option(train_args *a, int opt, const char *arg) {
    qa_post_options *po = &a->post;
    switch (opt) {
    case O_EVAL_EVERY: a->eval_every = bp_opt_long("--eval-every", arg, 1, 1L << 40); return 1;
    case O_EVAL_EXAMPLES: a->eval_examples = arg; return 1;
    case O_N_BEST: po->n_best = (int)bp_opt_long("--n-best", arg, 1, 10000); return 1;
    case O_MAX_ANSWER: po->max_answer_length = (int)bp_opt_long("--max-answer-length", arg, 1, 100000); return 1;
    case O_V2: po->version_2_with_negative = 1; return 1;
    case O_NULL_THRESHOLD: po->null_score_diff_threshold = (float)bp_opt_double("--null-threshold", arg, -1e9, 1e9); return 1;
    case O_SAVE_BEST: a->save_best = arg; return 1;
    case O_PATIENCE: a->patience = bp_opt_long("--patience", arg, 1, 1L << 40); return 1;
    case O_SAVE_TOTAL_LIMIT: a->save_total_limit = bp_opt_long("--save-total-limit", arg, 1, 1L << 40); return 1;
    case O_IGNORE_MISMATCHED: a->ignore_mismatched = 1; return 1;
    default: return 0;
    }
}

enum { O_CKPT = 1, O_CONFIG, O_PRESET, O_VOCAB, O_RESUME, O_LR, O_WS, O_WR, O_WD, O_CLIP, O_ACC, O_MAXSTEPS,
       O_DROPOUT, O_SEED, O_DEVICE, O_THREADS, O_PRECISION, O_SAVE, O_SAVE_EVERY, O_EVAL, O_SAVE_INIT, O_MAX_LOSS,
       O_OPTIMIZER, O_MOMENTUM, O_DAMPENING, O_NESTEROV, O_MODEL, O_HEAD, O_LOSS, O_FREEZE, O_MLP_HIDDEN,
       O_ACTIVATION, O_RNN_LAYERS, O_RNN_HIDDEN, O_UNIDIRECTIONAL, O_RNN_DROPOUT, O_HEAD_DROPOUT, O_HIDDEN, O_HEADS,
       O_INTERMEDIATE, O_LAYERS, O_SCHEDULE, O_DATA_PARALLEL };

/* The variant options; returns 1 when opt was one. */
static int variant_option(variant_args *v, int opt, const char *arg) {
    switch (opt) {
    case O_MODEL: v->body = arg; break;
    case O_HEAD: v->head = arg; break;
    case O_LOSS: v->loss = arg; break;
    case O_FREEZE: v->freeze = arg; break;
    case O_MLP_HIDDEN: v->mlp_hidden = arg; break;
    case O_ACTIVATION: v->activation = arg; break;
    case O_RNN_LAYERS: v->rnn_layers = bp_opt_long("--rnn-layers", arg, 1, 64); break;
    case O_RNN_HIDDEN: v->rnn_hidden = bp_opt_long("--rnn-hidden", arg, 1, 65536); break;
    case O_UNIDIRECTIONAL: v->unidirectional = 1; break;
    case O_RNN_DROPOUT: v->rnn_dropout = bp_opt_double("--rnn-dropout", arg, 0, 0.99); break;
    case O_HEAD_DROPOUT: v->head_dropout = bp_opt_double("--head-dropout", arg, 0, 0.99); break;
    case O_HIDDEN: v->hidden = bp_opt_long("--hidden", arg, 1, 8192); break;
    case O_HEADS: v->heads = bp_opt_long("--heads", arg, 1, 1024); break;
    case O_INTERMEDIATE: v->intermediate = bp_opt_long("--intermediate", arg, 1, 1 << 20); break;
    case O_LAYERS: v->layers = bp_opt_long("--layers", arg, 1, 1024); break;
    default: return 0;
    }
    v->given = 1;
    return 1;
}

/* The training options; returns 1 when opt was one. */
static int training_option(train_args *a, int opt, const char *arg) {
    switch (opt) {
    case O_CKPT: a->checkpoint = arg; break;
    case O_CONFIG: a->config = arg; break;
    case O_PRESET: a->preset = arg; break;
    case O_VOCAB: a->vocab = arg; break;
    case O_RESUME: a->resume = arg; break;
    case O_LR: a->lr = bp_opt_double("--lr", arg, 0, 1e30); break;
    case O_WS: a->warmup_steps = bp_opt_long("--warmup-steps", arg, 0, 1L << 40); break;
    case O_WR: a->warmup_ratio = bp_opt_double("--warmup-ratio", arg, 0, 1); break;
    case O_WD: a->weight_decay = bp_opt_double("--weight-decay", arg, 0, 10); break;
    case O_CLIP: a->max_grad_norm = bp_opt_double("--max-grad-norm", arg, 0, 1e9); break;
    case O_ACC: a->grad_accum = bp_opt_long("--grad-accum", arg, 1, 1 << 20); break;
    case O_MAXSTEPS: a->max_steps = bp_opt_long("--max-steps", arg, 1, 1L << 40); break;
    case O_DROPOUT: a->dropout = bp_opt_double("--dropout", arg, 0, 0.99); break;
    case O_SEED: a->seed = (uint64_t)bp_opt_long("--seed", arg, 0, 1L << 62); break;
    case O_DEVICE: a->device = arg; break;
    case O_PRECISION: a->precision = arg; break;
    case O_THREADS: a->threads = bp_opt_long("--threads", arg, 0, 1024); break;
    case O_SAVE: a->save_dir = arg; break;
    case O_SAVE_EVERY: a->save_every = bp_opt_long("--save-every", arg, 1, 1L << 40); break;
    case O_EVAL: a->eval_spec = arg; break;
    case O_SAVE_INIT: a->save_init = arg; break;
    case O_MAX_LOSS: a->max_loss_ratio = bp_opt_double("--max-loss-ratio", arg, 0, 1e30); break;
    case O_OPTIMIZER: a->optimizer = arg; break;
    case O_MOMENTUM: a->momentum = bp_opt_double("--momentum", arg, 0, 1e3); break;
    case O_DAMPENING: a->dampening = bp_opt_double("--dampening", arg, 0, 1); break;
    case O_NESTEROV: a->nesterov = 1; break;
    case O_SCHEDULE: a->schedule = arg; break;
    case O_DATA_PARALLEL: a->data_parallel = arg; break;
    default: return 0;
    }
    return 1;
}

static void parse_args(int argc, char **argv, train_args *a) {
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, CONTROL_LONGOPTS,
        {"checkpoint", required_argument, 0, O_CKPT}, {"config", required_argument, 0, O_CONFIG},
        {"preset", required_argument, 0, O_PRESET}, {"vocab", required_argument, 0, O_VOCAB},
        {"resume", required_argument, 0, O_RESUME}, {"lr", required_argument, 0, O_LR},
        {"warmup-steps", required_argument, 0, O_WS}, {"warmup-ratio", required_argument, 0, O_WR},
        {"weight-decay", required_argument, 0, O_WD}, {"max-grad-norm", required_argument, 0, O_CLIP},
        {"grad-accum", required_argument, 0, O_ACC}, {"max-steps", required_argument, 0, O_MAXSTEPS},
        {"dropout", required_argument, 0, O_DROPOUT}, {"seed", required_argument, 0, O_SEED},
        {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION},
        {"threads", required_argument, 0, O_THREADS}, {"save", required_argument, 0, O_SAVE},
        {"save-every", required_argument, 0, O_SAVE_EVERY}, {"eval", required_argument, 0, O_EVAL},
        {"save-init", required_argument, 0, O_SAVE_INIT}, {"max-loss-ratio", required_argument, 0, O_MAX_LOSS},
        {"optimizer", required_argument, 0, O_OPTIMIZER},
        {"momentum", required_argument, 0, O_MOMENTUM}, {"dampening", required_argument, 0, O_DAMPENING},
        {"nesterov", no_argument, 0, O_NESTEROV}, {"model", required_argument, 0, O_MODEL},
        {"head", required_argument, 0, O_HEAD}, {"loss", required_argument, 0, O_LOSS},
        {"freeze", required_argument, 0, O_FREEZE}, {"mlp-hidden", required_argument, 0, O_MLP_HIDDEN},
        {"activation", required_argument, 0, O_ACTIVATION}, {"rnn-layers", required_argument, 0, O_RNN_LAYERS},
        {"rnn-hidden", required_argument, 0, O_RNN_HIDDEN}, {"unidirectional", no_argument, 0, O_UNIDIRECTIONAL},
        {"rnn-dropout", required_argument, 0, O_RNN_DROPOUT}, {"head-dropout", required_argument, 0, O_HEAD_DROPOUT},
        {"hidden", required_argument, 0, O_HIDDEN}, {"heads", required_argument, 0, O_HEADS},
        {"intermediate", required_argument, 0, O_INTERMEDIATE}, {"layers", required_argument, 0, O_LAYERS},
        {"schedule", required_argument, 0, O_SCHEDULE}, {"data-parallel", required_argument, 0, O_DATA_PARALLEL},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg) || control_option(a, opt, optarg) || training_option(a, opt, optarg) ||
            variant_option(&a->v, opt, optarg))
            continue;
        if (opt == 'h') {
            fputs(usage, stdout);
            exit(0);
        }
        bp_usage_error();
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
    int sources = !!a->checkpoint + !!a->config + !!a->preset + !!a->resume;
    int from_scratch = a->v.body && strcmp(a->v.body, "bert") != 0;
    if (sources > 1 || (sources == 0 && !from_scratch))
        bp_usage_die("give exactly one of --checkpoint DIR, --config FILE, --preset NAME or --resume DIR "
                     "(only the --model lstm|transformer baselines start without one)");
    if (a->resume && a->v.given) bp_usage_die("a --resume run keeps the variant saved with it: no --model, --head, ... options");
}

static stream_info read_stream_info(const bp_frame *hello, const char *in_spec) {
    bp_err err;
    stream_info info = {.head = bp_stream_is_qa(hello) ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION, .epochs = 1};
    bp_batch_shape(hello, in_spec, &info.max_B, &info.max_T);
    if (bp_find_int(hello, "batches_per_epoch", 0, INT64_C(1) << 40, &info.per_epoch, &err) < 0 ||
        bp_find_int(hello, "epochs", 1, 1 << 20, &info.epochs, &err) < 0 ||
        bp_find_int(hello, "vocab_size", 1, BP_I32_MAX, &info.vocab_size, &err) < 0 ||
        (info.n_labels = bp_hello_labels(hello, &info.labels, &err)) < 0)
        bp_die_err(&err);
    int has_num_labels = bp_find_int(hello, "num_labels", 1, 1 << 20, &info.num_labels, &err);
    if (has_num_labels < 0) bp_die_err(&err);
    if (!has_num_labels) info.num_labels = info.n_labels;
    info.batch_size = info.max_B;
    info.max_length = info.max_T;
    info.lowercase = 1;   /* BertTokenizer's default, for a stream that does not say */
    if (bp_find_bool(hello, "lowercase", &info.lowercase, &err) < 0) bp_die_err(&err);
    return info;
}

/* "256" or "512,256" into the mlp's hidden sizes. */
static void parse_mlp_hidden(const char *list, model_config *cfg) {
    cfg->mlp_hidden_layers = 0;
    for (const char *at = list; *at;) {
        char *end;
        long n = strtol(at, &end, 10);
        if (end == at || n < 1 || n > 65536 || (*end && *end != ',') || cfg->mlp_hidden_layers == MLP_MAX_HIDDEN)
            bp_die(2, NULL, "--mlp-hidden '%s': a list of at most %d sizes 1..65536 (e.g. 512,256)", list, MLP_MAX_HIDDEN);
        cfg->mlp_hidden[cfg->mlp_hidden_layers++] = (int)n;
        at = *end ? end + 1 : end;
    }
}

/* The body sizes of fresh weights: a preset, the baselines' defaults, then --hidden ... */
static void fresh_shape(const train_args *a, const stream_info *info, model_config *cfg) {
    bp_err err;
    if (a->preset && bert_preset(a->preset, &cfg->bert, &err)) bp_die_err(&err);
    if (cfg->body != MODEL_BODY_BERT) {   /* the notebooks' baselines: 768, 12 heads, dim_feedforward 2048 */
        if (!a->preset) {
            cfg->bert.hidden_size = 768;
            cfg->bert.num_attention_heads = 12;
        }
        cfg->bert.intermediate_size = 2048;
        cfg->bert.num_hidden_layers = 1;
        cfg->bert.layer_norm_eps = 1e-5f;   /* torch's LayerNorm default */
    }
    const variant_args *v = &a->v;
    if (v->hidden > 0) cfg->bert.hidden_size = (int)v->hidden;
    if (v->heads > 0) cfg->bert.num_attention_heads = (int)v->heads;
    if (v->intermediate > 0) cfg->bert.intermediate_size = (int)v->intermediate;
    if (v->layers > 0) cfg->bert.num_hidden_layers = (int)v->layers;
    if (cfg->body == MODEL_BODY_LSTM && cfg->bert.hidden_size % cfg->bert.num_attention_heads)
        cfg->bert.num_attention_heads = 1;   /* unused by the LSTM; config.json still wants a divisor */
    if (info->vocab_size > 0) cfg->bert.vocab_size = (int)info->vocab_size;
    if (info->max_T > cfg->bert.max_position_embeddings && cfg->body == MODEL_BODY_BERT)
        bp_die(2, NULL, "max_length %d exceeds %d positions", info->max_T, cfg->bert.max_position_embeddings);
}

/* The command line's variant options over cfg. */
static void apply_variant(const variant_args *v, model_config *cfg) {
    bp_err err;
    if ((v->body && model_parse_body(v->body, &cfg->body, &err)) || (v->head && model_parse_head(v->head, &cfg->head, &err)) ||
        (v->loss && model_parse_loss(v->loss, &cfg->loss, &err)) ||
        (v->activation && head_parse_activation(v->activation, &cfg->mlp_activation, &err)))
        bp_die(2, NULL, "%s", err.msg);
    if (v->freeze) {
        memset(&cfg->freeze, 0, sizeof cfg->freeze);
        if (model_parse_freeze(v->freeze, &cfg->freeze, &err)) bp_die(2, NULL, "%s", err.msg);
    }
    if (v->mlp_hidden) parse_mlp_hidden(v->mlp_hidden, cfg);
    if (v->rnn_layers > 0) cfg->rnn_layers = (int)v->rnn_layers;
    if (v->rnn_hidden > 0) cfg->rnn_hidden = (int)v->rnn_hidden;
    if (v->unidirectional) cfg->rnn_bidirectional = 0;
    if (v->rnn_dropout >= 0) cfg->rnn_dropout = (float)v->rnn_dropout;
    if (v->head_dropout >= 0) cfg->head_dropout = (float)v->head_dropout;
}

/* The configuration to train: a saved run, a checkpoint or config file, or fresh weights; the
 * variant options over it; the stream's task and labels. */
static model_config train_config(const train_args *a, const stream_info *info) {
    bp_err err;
    model_config cfg;
    const char *source = a->resume ? a->resume : a->checkpoint ? a->checkpoint : a->config;
    int labels = info->head == BERT_HEAD_QA ? 2 : (int)(info->num_labels > 0 ? info->num_labels : 2);
    if (source) {
        if (model_read_config(source, info->head, labels, &cfg, NULL, &err)) bp_die_err(&err);
        if (a->v.hidden > 0 || a->v.heads > 0 || a->v.intermediate > 0 || a->v.layers > 0)
            bp_die(2, NULL, "the body's sizes come from %s: --hidden, --heads, --intermediate and --layers are for fresh "
                            "weights", source);
        apply_variant(&a->v, &cfg);
    } else {
        model_config_default(&cfg);
        apply_variant(&a->v, &cfg);
        fresh_shape(a, info, &cfg);
    }
    cfg.bert.head = info->head;
    /* BCE and MSE learn one logit, whatever the number of class names */
    cfg.bert.num_labels = cfg.loss == MODEL_LOSS_BCE || cfg.loss == MODEL_LOSS_MSE ? 1 : labels;
    if (a->dropout >= 0) cfg.bert.hidden_dropout_prob = cfg.bert.attention_probs_dropout_prob = (float)a->dropout;
    return cfg;
}

/* The model to train, its parameter counts in the log. */
static model *open_model(const train_args *a, const stream_info *info, backend *be) {
    bp_err err;
    model_config cfg = train_config(a, info);
    const char *weights = a->resume ? a->resume : a->checkpoint;
    char *notes = NULL;
    model_load load = a->ignore_mismatched ? MODEL_LOAD_IGNORE_MISMATCHED_SIZES : MODEL_LOAD_MATCHING;
    model *m = model_open(&cfg, weights, load, MODEL_FOR_TRAINING, be, info->max_B, info->max_T, a->seed, &notes, &err);
    if (!m) bp_die_err(&err);
    if (notes) {
        bp_warn("%s", notes);
        free(notes);
    }
    m->dropout_seed = a->seed;
    char freeze[256];
    model_format_freeze(&cfg.freeze, freeze, sizeof freeze);
    bp_log("model: %s (body %s, head %s, loss %s), %zu parameters, all trainable before freezing",
           model_class_name(&cfg), model_body_name(cfg.body), model_head_name(cfg.head), model_loss_name(cfg.loss),
           m->num_params);
    bp_log("%zu trainable of %zu parameters%s%s", m->num_trainable, m->num_params, freeze[0] ? " after --freeze " : "",
           freeze);
    return m;
}

/* The optimizer with the schedule over the steps the stream will give (or --max-steps);
 * --resume brings its state back. The number of steps to train becomes r->total_steps. */
static void open_optimizer(run *r, const train_args *a, const stream_info *info, optim_config *oc) {
    bp_err err;
    optim_config_default(oc);
    if (a->optimizer && optim_parse_kind(a->optimizer, &oc->kind, &err)) bp_die(2, NULL, "--optimizer: %s", err.msg);
    oc->momentum = (float)a->momentum;
    oc->dampening = (float)a->dampening;
    oc->nesterov = a->nesterov;
    oc->lr = (float)a->lr;
    oc->weight_decay = (float)a->weight_decay;
    oc->max_grad_norm = (float)a->max_grad_norm;
    long steps_per_epoch = (long)((info->per_epoch + a->grad_accum - 1) / a->grad_accum);
    long steps = a->max_steps > 0 ? a->max_steps : steps_per_epoch * (long)info->epochs;
    r->steps_per_epoch = steps_per_epoch;
    r->total_steps = steps;
    oc->warmup_steps = a->warmup_steps >= 0 ? a->warmup_steps : (long)ceil(a->warmup_ratio * (double)steps);
    /* linear: decay to 0 at the last step (the Trainer's); constant: the rate after warm-up stays */
    if (a->schedule && strcmp(a->schedule, "constant") && strcmp(a->schedule, "linear"))
        bp_die(2, NULL, "--schedule '%s' unknown (linear, constant)", a->schedule);
    oc->total_steps = a->schedule && !strcmp(a->schedule, "constant") ? 0 : steps;
    if (!(r->opt = model_optim_create(r->m, oc, &err))) bp_die_err(&err);
    if (a->resume) {
        if (model_load_train_state(r->m, r->opt, a->resume, &r->state, &err)) bp_die_err(&err);
        bp_log("resuming at step %ld after %lld batches", r->state.step, (long long)r->state.batches_consumed);
    }
    if (a->save_init) {
        if (model_save_pretrained(r->m, a->save_init, (const char *const *)info->labels, info->n_labels, r->vocab_path, &err))
            bp_die_err(&err);
        bp_log("saved the starting weights to %s", a->save_init);
    }
    bp_log("%s task, %s over %zu parameters, %ld steps (%ld per epoch x %lld epochs), lr %g, warm-up %ld",
           info->head == BERT_HEAD_QA ? "QA" : "classification", optim_kind_name(oc->kind), r->m->num_optimized,
           steps, steps_per_epoch, (long long)info->epochs, a->lr, oc->warmup_steps);
}

/* What --resume PATH resumes: PATH itself when it is a checkpoint folder, else the latest
 * checkpoint-STEP of the run folder PATH (as the Trainer's resume_from_checkpoint=True). */
static const char *resume_folder(const char *path) {
    static char folder[4096];
    bp_err err;
    if (td_resume_folder(path, folder, sizeof folder, &err)) bp_die_err(&err);
    return folder;
}

/* trainer_state.json's log, and on --resume the saved one with the best and the patience
 * counter it recorded, so a resumed run keeps, and stops, as the uninterrupted one would. */
static void open_log(run *r, const train_args *a, bp_train_policy *policy) {
    bp_err err;
    r->policy = policy;
    r->save_every = a->save_every;
    r->save_total_limit = a->save_total_limit;
    if (!a->resume) {
        if (!(r->log = td_state_new(&err))) bp_die_err(&err);
        return;
    }
    td_progress saved = {.best_metric = policy->best_value, .best_step = policy->best_step};
    if (td_state_read(a->resume, &r->log, &saved, &err) < 0) bp_die_err(&err);
    policy->best_value = saved.best_metric;
    policy->best_step = saved.best_step;
    policy->evals_since_best = saved.patience_counter;
    policy->last_eval_step = r->state.step;   /* the save came after any evaluation of its step */
}

/* The validation stream (read whole now, before training starts) and what to do with it: the
 * model's buffers are planned for the larger of its batches and the training stream's. */
static void open_evaluation(const train_args *a, stream_info *info, bp_eval_set *set, bp_train_policy *policy) {
    bp_eval_set_read(set, a->eval_spec, a->eval_examples, info->head == BERT_HEAD_QA, &a->post);
    if (set->max_B > info->max_B) info->max_B = set->max_B;
    if (set->max_T > info->max_T) info->max_T = set->max_T;
    if (a->eval_examples && info->head != BERT_HEAD_QA) bp_die(2, NULL, "--eval-examples is for QA; this stream is classification");
    bp_policy_init(policy, a->eval_every, a->save_best, a->patience);
    bp_policy_check(policy, set);
}

/* ---- the loop ---------------------------------------------------------------------- */

/* Where the loop is in the stream. */
typedef struct position {
    int64_t frames_seen;      /* batch and epoch frames read */
    int64_t skip;             /* --resume: frames the saved run had consumed */
    long last_epoch_step;     /* step at the last epoch frame */
} position;

/* The epoch's summary (scope "epoch"): mean train loss, train accuracy (classification), its
 * time, the part of it spent evaluating, and training sequences per second. */
static void send_epoch_summary(trainer *t) {
    const run *r = t->r;
    epoch_stats *ep = &t->epoch;
    double now = bp_now(), seconds = now - ep->start, train_seconds = seconds - ep->eval_seconds;
    double loss = ep->batches ? ep->loss_sum / (double)ep->batches : NAN;
    double speed = train_seconds > 0 ? (double)ep->sequences / train_seconds : 0;
    bp_writer *w = t->w;
    bp_begin(w, BP_METRIC);
    bp_put_int(w, "seq", t->seq++);
    bp_put_str(w, "scope", "epoch");
    bp_put_int(w, "step", r->state.step);
    bp_put_int(w, "epoch", r->state.epoch);
    if (ep->batches) bp_put_float(w, "train_loss", loss);
    if (ep->labelled) bp_put_float(w, "train_accuracy", (double)ep->correct / (double)ep->labelled);
    bp_put_int(w, "sequences", ep->sequences);
    bp_put_float(w, "epoch_time", seconds);
    bp_put_float(w, "eval_time", ep->eval_seconds);
    bp_put_float(w, "seq_per_s", speed);
    bp_send(t->out, w);
    char accuracy[48] = "";
    if (ep->labelled) snprintf(accuracy, sizeof accuracy, " accuracy %.4f", (double)ep->correct / (double)ep->labelled);
    bp_summary("epoch %ld done at step %ld: train loss %.4f%s, %.1f s (eval %.1f s), %.0f sequences/s", r->state.epoch,
           r->state.step, loss, accuracy, seconds, ep->eval_seconds, speed);
    const char *keys[] = {"train_loss", "train_accuracy", "epoch_time", "eval_time", "train_samples_per_second"};
    log_entry(t->r, keys, (const double[]){loss, ep->labelled ? (double)ep->correct / (double)ep->labelled : NAN,
                                           seconds, ep->eval_seconds, speed}, 5);
    *ep = (epoch_stats){.start = now};
}

/* An epoch frame: a partial accumulation is stepped (as the Trainer does), then --eval, the
 * epoch's summary and a save. */
static void end_epoch(trainer *t, const position *pos) {
    run *r = t->r;
    if (t->micro > 0 && !t->done) optimizer_step(t, pos->frames_seen);
    r->state.batches_consumed = pos->frames_seen;
    r->state.epoch++;
    int best = bp_policy_eval_due(t->policy, t->eval, r->state.step, 1) && evaluate(t, r->state.epoch);
    send_epoch_summary(t);   /* before the save: its log entry goes into trainer_state.json */
    /* --max-steps may have ended training before this epoch frame: the save says so */
    save_all(r, best ? "best so far" : t->cut_short ? t->stopped_by : "end of epoch");
}

/* One frame of the input stream. */
static void train_frame(trainer *t, position *pos, const bp_frame *f) {
    run *r = t->r;
    int is_batch = f->kind == BP_BATCH, is_epoch = f->kind == BP_EPOCH;
    if (is_batch || is_epoch) pos->frames_seen++;
    if (t->done && is_batch) t->cut_short = 1;
    if (pos->frames_seen <= pos->skip || !(is_batch || is_epoch) ||
        (t->done && (is_batch || pos->last_epoch_step == r->state.step))) {
        /* resumed past it, not ours, or training is over: read on to the eos */
        if (t->done && pos->frames_seen > pos->skip) r->state.batches_consumed = pos->frames_seen;
        return;
    }
    if (is_epoch) {
        end_epoch(t, pos);
        pos->last_epoch_step = r->state.step;
        return;
    }
    train_batch(t, f, pos->frames_seen);
}

/* Rank 0's input failed (it shared that): rank 0 prints the one error line; the others, which
 * only received the stream, end quietly. Every rank ends the run cleanly first, so no one waits. */
static void input_failed(trainer *t, const bp_err *err) {
    bp_err close_err;
    int rank = t->dp->rank;
    if (bp_dp_close(t->dp, &close_err) && rank == 0) bp_warn("%s", close_err.msg);
    if (rank == 0) bp_die_err(err);
    exit(1);
}

/* Every frame of the input (rank 0's, shared), or until a signal. Returns the signal (0 when
 * none came). */
static int train_stream(trainer *t, bp_in *in) {
    position pos = {.skip = t->r->state.batches_consumed, .last_epoch_step = -1};
    bp_frame f = {0};
    bp_err err;
    int rc, sig = 0;
    while ((rc = bp_dp_next(t->dp, in, &f, &sig, &err)) == 1) {
        train_frame(t, &pos, &f);
        bp_frame_release(&f);
    }
    bp_frame_release(&f);
    if (rc == 2) return sig;   /* also when the signal cut a wait for input short */
    if (rc < 0) input_failed(t, &err);
    return 0;
}

/* ---- the ranks of a data-parallel run ---------------------------------------------- */

/* The run a failing rank ends: any exit before the run's own end (an error line from bp_die)
 * ends every rank, so none waits for a collective that never comes. */
static bp_dp *exit_ranks;
static void abort_ranks(void) {
    if (exit_ranks && exit_ranks->dist && !exit_ranks->closed) exit_ranks->dist->abort(exit_ranks->dist, 1);
}

/* Join the data-parallel run (none without a launcher): rank 0 reads, logs, writes frames and
 * saves as a single train does; the others keep quiet, send their frames nowhere, save nothing. */
static void open_ranks(train_args *a, bp_dp *dp) {
    bp_err err;
    if (bp_dp_open(dp, a->data_parallel, &err)) bp_die(2, NULL, "%s", err.msg);
    if (!dp->dist) return;
    exit_ranks = dp;
    if (atexit(abort_ranks)) bp_die(1, NULL, "data-parallel: atexit failed");
    bp_dp_pin_device(dp, a->device);
    if (dp->rank == 0) return;
    char name[96];   /* its warnings and errors say which rank: "train[rank 1]: error: ..." */
    snprintf(name, sizeof name, "%s[rank %d]", bp_stage(), dp->rank);
    bp_set_stage(name);
    bp_set_echo(1);
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, 1) < 0) bp_die(1, "/dev/null", "cannot open: %s", strerror(errno));
    close(fd);
    a->io.out = "-";
    a->save_dir = a->save_init = NULL;
}

/* The input on rank 0, its hello shared with the other ranks (whose copy *copy owns). */
static bp_in *open_input(const train_args *a, bp_dp *dp, const bp_frame **hello, bp_frame *copy) {
    bp_err err;
    bp_in *in = dp->rank == 0 ? bp_open_in_hello(&a->io, hello) : NULL;
    if (bp_dp_share_hello(dp, dp->rank == 0 ? *hello : NULL, copy, &err)) bp_die_err(&err);
    if (dp->rank > 0) *hello = copy;
    return in;
}

/* The gradients' collectives on the backend, every rank's weights rank 0's, and the start line. */
static void join_ranks(bp_dp *dp, run *r, const stream_info *info) {
    bp_err err;
    if (bp_dp_use_backend(dp, r->m->be, &err) || bp_dp_share_params(dp, r->m, &err)) bp_die_err(&err);
    if (!dp->dist) return;
    bp_log("data-parallel: %d ranks (%s, %s%s), %d rows per rank of each batch of %d", dp->size, dp->dist->engine,
           dp->dist->library, dp->on_device ? "; gradients summed on the device" : "",
           (info->max_B + dp->size - 1) / dp->size, info->max_B);
}

/* The run's end on every rank, with rank 0's count of the gradient traffic. */
static void close_ranks(bp_dp *dp) {
    bp_err err;
    if (!dp->dist) return;
    if (dp->sums)
        bp_log("data-parallel: %ld gradient sums of %.2f MB each, %.3f s communicating (%.2f ms per step)", dp->sums,
               (double)dp->bytes_summed / (double)dp->sums / 1e6, dp->comm_seconds,
               1e3 * dp->comm_seconds / (double)dp->sums);
    if (bp_dp_close(dp, &err)) bp_die_err(&err);
}

int main(int argc, char **argv) {
    train_args a = {.device = "auto", .precision = "fp32", .lr = 5e-5, .max_grad_norm = 1.0, .dropout = -1, .max_loss_ratio = 100,
                    .warmup_steps = -1, .grad_accum = 1, .seed = 42,
                    .v = {.rnn_layers = -1, .rnn_hidden = -1, .rnn_dropout = -1, .head_dropout = -1}};
    qa_post_options_default(&a.post);
    bp_stage_init(&a.io, argv);
    bp_set_usage(usage);
    parse_args(argc, argv, &a);
    if (a.resume) a.resume = resume_folder(a.resume);
    bp_dp dp;
    open_ranks(&a, &dp);

    bp_out *out = bp_open_out(&a.io);
    const bp_frame *hello = NULL;
    bp_frame hello_copy = {0};
    bp_in *in = open_input(&a, &dp, &hello, &hello_copy);
    stream_info info = read_stream_info(hello, a.io.in);
    bp_eval_set set;
    bp_train_policy policy;
    open_evaluation(&a, &info, &set, &policy);
    backend *be = bp_open_device(a.device, (int)a.threads, a.precision);
    char vocab_buf[4096];
    if (!a.vocab && (a.checkpoint || a.resume)) {
        snprintf(vocab_buf, sizeof vocab_buf, "%s/vocab.txt", a.checkpoint ? a.checkpoint : a.resume);
        a.vocab = vocab_buf;
    }
    run r = {.m = open_model(&a, &info, be), .dp = &dp, .save_dir = a.save_dir, .vocab_path = a.vocab, .info = &info, .saved_step = -1,
             .max_loss_ratio = a.max_loss_ratio};
    r.loss_reference = know_nothing_loss(r.m, info.max_T);
    bp_check_vocab_fits(hello, r.m->cfg.bert.vocab_size);
    optim_config oc;
    open_optimizer(&r, &a, &info, &oc);
    join_ranks(&dp, &r, &info);
    open_log(&r, &a, &policy);

    bp_writer w;
    bp_writer_init(&w);
    bp_hello_begin(&w);
    bp_put_str(&w, "task", info.head == BERT_HEAD_QA ? "qa" : "classification");
    bp_put_int(&w, "total_steps", r.total_steps);
    bp_send_hello(out, &w);

    bp_batch_tensors h[2];   /* training's, evaluation's */
    for (int i = 0; i < 2; i++) bp_batch_tensors_alloc(&h[i], info.max_B, info.max_T);
    bp_progress prog;
    trainer t = {.r = &r, .out = out, .w = &w, .prog = &prog, .h = &h[0], .eval_h = &h[1], .eval = &set,
                 .policy = &policy, .dp = &dp, .start = bp_now(), .epoch = {.start = bp_now()}, .grad_accum = a.grad_accum,
                 .total_steps = r.total_steps, .save_every = a.save_every, .done = r.state.step >= r.total_steps};
    int classes = r.m->cfg.bert.head == BERT_HEAD_CLASSIFICATION && r.m->targets.kind != LOSS_MSE ? model_classes(r.m) : 0;
    if (classes > 1 && !(t.train_logits = malloc((size_t)info.max_B * (size_t)classes * sizeof *t.train_logits)))
        bp_die(1, NULL, "out of memory");
    bp_progress_start(&prog, "train", r.total_steps);
    stopping_run = &r;
    bp_set_stop_hook(save_on_stop);
    int sig = train_stream(&t, in);
    bp_set_stop_hook(NULL);
    if (sig) {
        bp_progress_finish(&prog, NULL);
        save_on_stop(sig);
        bp_abort_out(out, "training interrupted by a signal (checkpoint saved)");
    } else {
        if (t.micro > 0) bp_warn("%ld batches after the last epoch frame were not stepped", t.micro);
        bp_progress_finish(&prog, t.extra[0] ? t.extra : NULL);
        save_all(&r, "end of training");
        finish_run_state(&r);
        if (policy.save_best && policy.best_step >= 0 && r.save_dir)
            bp_log("best %s %.4f at step %ld: %s holds checkpoint-%ld's model", policy.metric, policy.best_value,
                   policy.best_step, r.save_dir, policy.best_step);
        bp_close_out(out);
    }
    close_ranks(&dp);
    bp_in_close(in);
    bp_frame_release(&hello_copy);
    bp_eval_set_free(&set);
    free(t.train_logits);
    for (int i = 0; i < 2; i++) bp_batch_tensors_free(&h[i]);
    bp_labels_free(info.labels, info.n_labels);
    td_state_free(r.log);
    optim_free(r.opt);
    model_free(r.m);
    be->destroy(be);
    bp_writer_free(&w);
    return sig ? 128 + sig : 0;
}
