/* train — batch frames in, a fine-tuned checkpoint and metric frames out.
 *
 * The model starts from a Hugging Face checkpoint (--checkpoint DIR), a config.json
 * (--config FILE) or a named shape (--preset mini), and trains with AdamW, the linear
 * warm-up/decay schedule, clipping and accumulation (common/model/bert.h, common/model/optim.h).
 * A metric frame goes out per optimizer step; at each epoch frame it evaluates --eval (if
 * given) and saves to --save. SIGINT/SIGTERM save and exit; a non-finite loss stops with
 * the step number and keeps the last good checkpoint. --resume DIR continues exactly:
 * weights, AdamW moments, step, dropout RNG and data position come back.
 * Must never: write a checkpoint from a step whose loss was not finite.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/bert_io.h"
#include "eval/metrics.h"
#include "stage/bert_input.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: train (--checkpoint DIR | --config FILE | --preset NAME) [options] [--in SPEC] [--out SPEC]\n"
    "Fine-tune BERT on batch frames; metric frames out.\n"
    "  --checkpoint DIR     start from a Hugging Face checkpoint (config.json + weights)\n"
    "  --config FILE        fresh weights for this config.json\n"
    "  --preset NAME        fresh weights, Google's shapes: tiny mini small medium base large\n"
    "  --vocab FILE         vocab.txt saved with the checkpoint (default DIR/vocab.txt)\n"
    "  --resume DIR         continue a run saved by --save (same input stream)\n"
    "  --lr X               peak learning rate (default 5e-5)\n"
    "  --warmup-steps N | --warmup-ratio R   linear warm-up (default 0)\n"
    "  --weight-decay X     AdamW decay, not on biases and LayerNorm (default 0)\n"
    "  --max-grad-norm X    global-norm clipping, 0 = off (default 1.0)\n"
    "  --grad-accum N       batches per optimizer step (default 1)\n"
    "  --max-steps N        stop training after N steps (the input is still read to its end)\n"
    "  --dropout P          hidden and attention dropout (default: the config's)\n"
    "  --seed N             weight init and dropout seed (default 42)\n"
    "  --device auto|cuda|cpu  (default auto)    --threads N  CPU threads (default all)\n"
    "  --precision fp32|tf32|bf16   GPU matmul precision (bf16: fp32 master weights; default fp32)\n"
    "  --save DIR           save here at each epoch end and at the end\n"
    "  --save-every N       also save every N steps\n"
    "  --save-init DIR      save the starting weights (before any step) to DIR, e.g. for a peer run\n"
    "  --eval SPEC          validation batch stream (e.g. file:val.frames), evaluated each epoch\n"
    BP_IO_USAGE;

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

/* What the command line asks for. */
typedef struct train_args {
    bp_io_opts io;
    const char *checkpoint, *config, *preset, *vocab, *resume;
    const char *device, *precision, *save_dir, *eval_spec, *save_init;
    double lr, warmup_ratio, weight_decay, max_grad_norm, dropout;
    long warmup_steps, grad_accum, max_steps, save_every, threads;
    uint64_t seed;
} train_args;

/* What the batch stream's hello says about it. */
typedef struct stream_info {
    bert_head head;
    int max_B, max_T;            /* the largest batch */
    int64_t per_epoch, epochs;   /* batches per epoch, epochs */
    int64_t num_labels, vocab_size;
    char **labels;               /* the class names, saved with the checkpoint */
    int n_labels;
} stream_info;

/* The model being trained and where it is saved. */
typedef struct run {
    bert_model *m;
    optim_adamw *opt;
    bert_train_state state;
    const char *save_dir, *vocab_path;
    const stream_info *info;
    long saved_step;   /* step of the last save, -1 before any */
} run;

/* The training loop's state between optimizer steps. */
typedef struct trainer {
    run *r;
    bp_out *out;
    bp_writer *w;
    bp_progress *prog;
    bp_batch_tensors *h;
    int64_t seq;                  /* metric frames sent */
    long micro, micro_rows;       /* batches and rows accumulated since the last step */
    double loss_sum, start;       /* their loss; when the step began */
    long grad_accum, total_steps, save_every;
    int done;                     /* total_steps reached: read on to the eos */
    char extra[64];               /* the progress bar's "loss X" */
} trainer;

static void save_all(run *r, const char *why) {
    if (!r->save_dir || r->saved_step == r->state.step) return;
    bp_err err;
    r->state.dropout_seed = r->m->dropout_seed;
    r->state.dropout_counter = r->m->dropout_counter;
    if (bert_save_pretrained(r->m, r->save_dir, (const char *const *)r->info->labels, r->info->n_labels, r->vocab_path,
                             &err) ||
        bert_save_train_state(r->m, r->opt, r->save_dir, &r->state, &err))
        bp_die_err(&err);
    r->saved_step = r->state.step;
    bp_log("saved %s at step %ld (%s)", r->save_dir, r->state.step, why);
}

/* ---- evaluation on --eval ---------------------------------------------------------- */

/* The validation stream is small: its frames are kept to run at every epoch end. */
typedef struct eval_set {
    bp_frame *frames;
    size_t n;
} eval_set;

static eval_set read_eval_set(const char *spec) {
    eval_set set = {0};
    if (!spec) return set;
    bp_err err;
    bp_in *ein = bp_in_open(spec, 1, &err);
    if (!ein) bp_die_err(&err);
    bp_frame f;
    int rc;
    while ((rc = bp_in_next(ein, &f)) == 1) {
        if (f.kind != BP_BATCH) {
            bp_frame_release(&f);
            continue;
        }
        if (!(set.frames = realloc(set.frames, (set.n + 1) * sizeof *set.frames))) bp_die(1, NULL, "out of memory");
        set.frames[set.n++] = f;   /* the copy owns the frame now */
    }
    if (rc < 0) bp_die_err(bp_in_err(ein));
    bp_in_close(ein);
    return set;
}

static void eval_set_free(eval_set *set) {
    for (size_t i = 0; i < set->n; i++) bp_frame_release(&set->frames[i]);
    free(set->frames);
}

/* Loss and, for classification, accuracy and macro-F1 of the kept validation frames. */
static void evaluate(trainer *t, const eval_set *set) {
    run *r = t->r;
    const bert_config *cfg = &r->m->cfg;
    bp_err err;
    char where[64];
    metrics_cls mc;
    int cls = cfg->head == BERT_HEAD_CLASSIFICATION && cfg->num_labels > 1;
    if (cls && metrics_cls_init(&mc, cfg->num_labels, &err)) bp_die_err(&err);
    double loss_sum = 0;
    long rows = 0;
    float *logits = malloc((size_t)t->h->max_B * (size_t)(cls ? cfg->num_labels : 2 * t->h->max_T) * sizeof *logits);
    if (!logits) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < set->n; i++) {
        const bp_frame *f = &set->frames[i];
        bert_batch b;
        if (bp_batch_read(f, cfg, t->h, &b, &err)) bp_die(1, "--eval", "%s", err.msg);
        if (bert_forward(r->m, &b, 0, &err)) bp_die(1, "--eval", "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
        loss_sum += (double)bert_loss(r->m) * b.B;
        rows += b.B;
        if (!cls) continue;
        if (bert_logits(r->m, logits, (size_t)b.B * (size_t)cfg->num_labels, &err) < 0) bp_die_err(&err);
        for (int j = 0; j < b.B; j++)
            if (metrics_cls_add_logits(&mc, logits + (size_t)j * (size_t)cfg->num_labels, b.labels[j], NULL, &err))
                bp_die_err(&err);
    }
    free(logits);
    double loss = rows ? loss_sum / (double)rows : NAN;
    bp_writer *w = t->w;
    bp_begin(w, BP_METRIC);
    bp_put_int(w, "seq", t->seq++);
    bp_put_str(w, "scope", "eval");
    bp_put_int(w, "step", r->state.step);
    bp_put_int(w, "epoch", r->state.epoch);
    bp_put_float(w, "loss", loss);
    bp_put_int(w, "examples", rows);
    if (cls) {
        bp_put_float(w, "accuracy", metrics_cls_accuracy(&mc));
        bp_put_float(w, "macro_f1", metrics_cls_macro_f1(&mc));
        bp_log("epoch %ld eval: loss %.4f accuracy %.4f macro-F1 %.4f (%ld examples)", r->state.epoch, loss,
               metrics_cls_accuracy(&mc), metrics_cls_macro_f1(&mc), rows);
        metrics_cls_free(&mc);
    } else {
        bp_log("epoch %ld eval: loss %.4f (%ld examples)", r->state.epoch, loss, rows);
    }
    bp_send(t->out, w);
}

/* ---- one optimizer step ------------------------------------------------------------ */

/* Clip and update; frames_seen becomes the resume position. */
static void apply_update(run *r, int64_t frames_seen, double *grad_norm, float *lr) {
    bp_err err;
    if (bert_optim_step(r->m, r->opt, grad_norm, lr, &err))
        bp_die(1, NULL, "step %ld: %s; stopping, the last good checkpoint is kept", r->state.step + 1, err.msg);
    r->state.step++;
    r->state.batches_consumed = frames_seen;
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

/* --save-every, and the end of training at total_steps. */
static void after_step(trainer *t) {
    run *r = t->r;
    if (t->save_every && r->state.step % t->save_every == 0) save_all(r, "every N steps");
    if (r->state.step >= t->total_steps) {
        t->done = 1;
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
    snprintf(t->extra, sizeof t->extra, "loss %.4f", loss);
    bp_progress_update(t->prog, t->r->state.step, t->extra);
    t->micro = t->micro_rows = 0;
    t->loss_sum = 0;
    t->start = now;
    after_step(t);
}

/* Forward and backward one batch frame; a step once grad_accum batches are in. */
static void train_batch(trainer *t, const bp_frame *f, int64_t frames_seen) {
    run *r = t->r;
    bp_err err;
    char where[64];
    bert_batch b;
    if (bp_batch_read(f, &r->m->cfg, t->h, &b, &err)) bp_die_err(&err);
    if (bert_forward(r->m, &b, 1, &err)) bp_die(1, NULL, "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
    float loss = bert_loss(r->m);
    if (!isfinite(loss))
        bp_die(1, NULL, "loss is %g at step %ld: stopping; the last good checkpoint is kept", loss, r->state.step + 1);
    if (bert_backward(r->m, 1.0f / (float)t->grad_accum, &err)) bp_die_err(&err);
    t->loss_sum += loss;
    t->micro++;
    t->micro_rows += b.B;
    if (t->micro == t->grad_accum) optimizer_step(t, frames_seen);
}

/* ---- setting up -------------------------------------------------------------------- */

static void parse_args(int argc, char **argv, train_args *a) {
    enum { O_CKPT = 1, O_CONFIG, O_PRESET, O_VOCAB, O_RESUME, O_LR, O_WS, O_WR, O_WD, O_CLIP, O_ACC, O_MAXSTEPS,
           O_DROPOUT, O_SEED, O_DEVICE, O_THREADS, O_PRECISION, O_SAVE, O_SAVE_EVERY, O_EVAL, O_SAVE_INIT };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
        {"checkpoint", required_argument, 0, O_CKPT}, {"config", required_argument, 0, O_CONFIG},
        {"preset", required_argument, 0, O_PRESET}, {"vocab", required_argument, 0, O_VOCAB},
        {"resume", required_argument, 0, O_RESUME}, {"lr", required_argument, 0, O_LR},
        {"warmup-steps", required_argument, 0, O_WS}, {"warmup-ratio", required_argument, 0, O_WR},
        {"weight-decay", required_argument, 0, O_WD}, {"max-grad-norm", required_argument, 0, O_CLIP},
        {"grad-accum", required_argument, 0, O_ACC}, {"max-steps", required_argument, 0, O_MAXSTEPS},
        {"dropout", required_argument, 0, O_DROPOUT}, {"seed", required_argument, 0, O_SEED},
        {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION}, {"threads", required_argument, 0, O_THREADS},
        {"save", required_argument, 0, O_SAVE}, {"save-every", required_argument, 0, O_SAVE_EVERY},
        {"eval", required_argument, 0, O_EVAL}, {"save-init", required_argument, 0, O_SAVE_INIT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_CKPT: a->checkpoint = optarg; break;
        case O_CONFIG: a->config = optarg; break;
        case O_PRESET: a->preset = optarg; break;
        case O_VOCAB: a->vocab = optarg; break;
        case O_RESUME: a->resume = optarg; break;
        case O_LR: a->lr = bp_opt_double("--lr", optarg, 0, 1e30); break;
        case O_WS: a->warmup_steps = bp_opt_long("--warmup-steps", optarg, 0, 1L << 40); break;
        case O_WR: a->warmup_ratio = bp_opt_double("--warmup-ratio", optarg, 0, 1); break;
        case O_WD: a->weight_decay = bp_opt_double("--weight-decay", optarg, 0, 10); break;
        case O_CLIP: a->max_grad_norm = bp_opt_double("--max-grad-norm", optarg, 0, 1e9); break;
        case O_ACC: a->grad_accum = bp_opt_long("--grad-accum", optarg, 1, 1 << 20); break;
        case O_MAXSTEPS: a->max_steps = bp_opt_long("--max-steps", optarg, 1, 1L << 40); break;
        case O_DROPOUT: a->dropout = bp_opt_double("--dropout", optarg, 0, 0.99); break;
        case O_SEED: a->seed = (uint64_t)bp_opt_long("--seed", optarg, 0, 1L << 62); break;
        case O_DEVICE: a->device = optarg; break;
        case O_PRECISION: a->precision = optarg; break;
        case O_THREADS: a->threads = bp_opt_long("--threads", optarg, 0, 1024); break;
        case O_SAVE: a->save_dir = optarg; break;
        case O_SAVE_EVERY: a->save_every = bp_opt_long("--save-every", optarg, 1, 1L << 40); break;
        case O_EVAL: a->eval_spec = optarg; break;
        case O_SAVE_INIT: a->save_init = optarg; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!!a->checkpoint + !!a->config + !!a->preset + !!a->resume != 1)
        bp_die(2, NULL, "give exactly one of --checkpoint DIR, --config FILE, --preset NAME or --resume DIR");
}

static stream_info read_stream_info(const bp_frame *hello, const char *in_spec) {
    bp_err err;
    stream_info info = {.head = bp_hello_is_qa(hello) ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION, .epochs = 1};
    bp_batch_shape(hello, in_spec, &info.max_B, &info.max_T);
    if (bp_find_int(hello, "batches_per_epoch", 0, INT64_C(1) << 40, &info.per_epoch, &err) < 0 ||
        bp_find_int(hello, "epochs", 1, 1 << 20, &info.epochs, &err) < 0 ||
        bp_find_int(hello, "vocab_size", 1, BP_I32_MAX, &info.vocab_size, &err) < 0 ||
        (info.n_labels = bp_hello_labels(hello, &info.labels, &err)) < 0)
        bp_die_err(&err);
    int has_num_labels = bp_find_int(hello, "num_labels", 1, 1 << 20, &info.num_labels, &err);
    if (has_num_labels < 0) bp_die_err(&err);
    if (!has_num_labels) info.num_labels = info.n_labels;
    return info;
}

/* Fresh weights of a named shape, written out as a config so the usual code builds it. */
static bert_model *model_from_preset(const train_args *a, const stream_info *info, backend *be) {
    bp_err err;
    bert_config cfg;
    bert_config_default(&cfg);
    if (bert_preset(a->preset, &cfg, &err)) bp_die_err(&err);
    cfg.head = info->head;
    cfg.num_labels = info->head == BERT_HEAD_QA ? 2 : (int)(info->num_labels > 0 ? info->num_labels : 2);
    if (info->vocab_size > 0) cfg.vocab_size = (int)info->vocab_size;
    if (info->max_T > cfg.max_position_embeddings)
        bp_die(2, NULL, "max_length %d exceeds %d positions", info->max_T, cfg.max_position_embeddings);
    bert_model *m = bert_create(&cfg, be, info->max_B, info->max_T, &err);
    if (!m || bert_init_weights(m, a->seed, 0, &err)) bp_die_err(&err);
    return m;
}

/* The model to train: a preset, a checkpoint, a config or a run to resume; dropout and seed
 * as asked. */
static bert_model *open_model(const train_args *a, const stream_info *info, backend *be) {
    bp_err err;
    bert_model *m;
    if (a->preset) {
        m = model_from_preset(a, info, be);
    } else {
        const char *source = a->resume ? a->resume : a->checkpoint ? a->checkpoint : a->config;
        char *notes = NULL;
        m = bert_open(source, !a->config, info->head, (int)info->num_labels, BERT_FOR_TRAINING, be, info->max_B,
                      info->max_T, a->seed, &notes, &err);
        if (!m) bp_die_err(&err);
        if (notes) {
            bp_warn("%s", notes);
            free(notes);
        }
    }
    if (a->dropout >= 0) {
        m->cfg.hidden_dropout_prob = (float)a->dropout;
        m->cfg.attention_probs_dropout_prob = (float)a->dropout;
    }
    m->dropout_seed = a->seed;
    return m;
}

/* AdamW with the schedule over the steps the stream will give (or --max-steps); --resume
 * brings its state back. */
static void open_optimizer(run *r, const train_args *a, const stream_info *info, optim_config *oc) {
    bp_err err;
    optim_config_default(oc);
    oc->lr = (float)a->lr;
    oc->weight_decay = (float)a->weight_decay;
    oc->max_grad_norm = (float)a->max_grad_norm;
    long steps_per_epoch = (long)((info->per_epoch + a->grad_accum - 1) / a->grad_accum);
    oc->total_steps = a->max_steps > 0 ? a->max_steps : steps_per_epoch * (long)info->epochs;
    oc->warmup_steps = a->warmup_steps >= 0 ? a->warmup_steps : (long)ceil(a->warmup_ratio * (double)oc->total_steps);
    if (!(r->opt = bert_optim_create(r->m, oc, &err))) bp_die_err(&err);
    if (a->resume) {
        if (bert_load_train_state(r->m, r->opt, a->resume, &r->state, &err)) bp_die_err(&err);
        bp_log("resuming at step %ld after %lld batches", r->state.step, (long long)r->state.batches_consumed);
    }
    if (a->save_init) {
        if (bert_save_pretrained(r->m, a->save_init, (const char *const *)info->labels, info->n_labels, r->vocab_path, &err))
            bp_die_err(&err);
        bp_log("saved the starting weights to %s", a->save_init);
    }
    bp_log("%s head, %zu parameters, %ld steps (%ld per epoch x %lld epochs), lr %g, warm-up %ld",
           info->head == BERT_HEAD_QA ? "QA" : "classification", r->m->num_params, oc->total_steps, steps_per_epoch,
           (long long)info->epochs, a->lr, oc->warmup_steps);
}

static void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- the loop ---------------------------------------------------------------------- */

/* Where the loop is in the stream. */
typedef struct position {
    int64_t frames_seen;      /* batch and epoch frames read */
    int64_t skip;             /* --resume: frames the saved run had consumed */
    long last_epoch_step;     /* step at the last epoch frame */
} position;

/* An epoch frame: a partial accumulation is stepped (as the Trainer does), then --eval and a save. */
static void end_epoch(trainer *t, const position *pos, const eval_set *set) {
    run *r = t->r;
    if (t->micro > 0 && !t->done) optimizer_step(t, pos->frames_seen);
    r->state.batches_consumed = pos->frames_seen;
    r->state.epoch++;
    if (set->n) evaluate(t, set);
    save_all(r, "end of epoch");
}

/* One frame of the input stream. */
static void train_frame(trainer *t, position *pos, const eval_set *set, const bp_frame *f) {
    run *r = t->r;
    int is_batch = f->kind == BP_BATCH, is_epoch = f->kind == BP_EPOCH;
    if (is_batch || is_epoch) pos->frames_seen++;
    if (pos->frames_seen <= pos->skip || !(is_batch || is_epoch) ||
        (t->done && (is_batch || pos->last_epoch_step == r->state.step))) {
        /* resumed past it, not ours, or training is over: read on to the eos */
        if (t->done && pos->frames_seen > pos->skip) r->state.batches_consumed = pos->frames_seen;
        return;
    }
    if (is_epoch) {
        end_epoch(t, pos, set);
        pos->last_epoch_step = r->state.step;
        return;
    }
    train_batch(t, f, pos->frames_seen);
}

/* Every frame of the input, or until a signal. Returns the signal (0 when none came). */
static int train_stream(trainer *t, bp_in *in, const eval_set *set) {
    position pos = {.skip = t->r->state.batches_consumed, .last_epoch_step = -1};
    bp_frame f;
    int rc;
    while ((rc = bp_in_next(in, &f)) == 1 && !stop_signal) {
        train_frame(t, &pos, set, &f);
        bp_frame_release(&f);
    }
    bp_frame_release(&f);
    if (stop_signal) return stop_signal;
    if (rc < 0) bp_die_err(bp_in_err(in));
    return 0;
}

int main(int argc, char **argv) {
    train_args a = {.device = "auto", .precision = "fp32", .lr = 5e-5, .max_grad_norm = 1.0, .dropout = -1,
                    .warmup_steps = -1, .grad_accum = 1, .seed = 42};
    bp_stage_init(&a.io, argv);
    parse_args(argc, argv, &a);

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    stream_info info = read_stream_info(hello, a.io.in);
    backend *be = bp_open_device(a.device, (int)a.threads, a.precision);
    char vocab_buf[4096];
    if (!a.vocab && (a.checkpoint || a.resume)) {
        snprintf(vocab_buf, sizeof vocab_buf, "%s/vocab.txt", a.checkpoint ? a.checkpoint : a.resume);
        a.vocab = vocab_buf;
    }
    run r = {.m = open_model(&a, &info, be), .save_dir = a.save_dir, .vocab_path = a.vocab, .info = &info, .saved_step = -1};
    bp_check_vocab_fits(hello, r.m);
    optim_config oc;
    open_optimizer(&r, &a, &info, &oc);
    eval_set set = read_eval_set(a.eval_spec);

    bp_writer w;
    bp_writer_init(&w);
    bp_out *out = bp_open_out(&a.io);
    bp_hello_begin(&w);
    bp_put_str(&w, "task", info.head == BERT_HEAD_QA ? "qa" : "classification");
    bp_put_int(&w, "total_steps", oc.total_steps);
    bp_send_hello(out, &w);

    catch_stop_signals();
    bp_batch_tensors h;
    bp_batch_tensors_alloc(&h, info.max_B, info.max_T);
    bp_progress prog;
    trainer t = {.r = &r, .out = out, .w = &w, .prog = &prog, .h = &h, .start = bp_now(), .grad_accum = a.grad_accum,
                 .total_steps = oc.total_steps, .save_every = a.save_every, .done = r.state.step >= oc.total_steps};
    bp_progress_start(&prog, "train", oc.total_steps);
    int sig = train_stream(&t, in, &set);
    if (sig) {
        bp_progress_finish(&prog, NULL);
        save_all(&r, sig == SIGINT ? "interrupted" : "terminated");
        bp_log("stopped by signal %d at step %ld", sig, r.state.step);
        bp_abort_out(out, "training interrupted by a signal (checkpoint saved)");
        return 128 + sig;
    }
    if (t.micro > 0) bp_warn("%ld batches after the last epoch frame were not stepped", t.micro);
    bp_progress_finish(&prog, t.extra[0] ? t.extra : NULL);
    save_all(&r, "end of training");
    bp_close_out(out);
    bp_in_close(in);
    eval_set_free(&set);
    bp_batch_tensors_free(&h);
    bp_labels_free(info.labels, info.n_labels);
    optim_free(r.opt);
    bert_free(r.m);
    be->destroy(be);
    bp_writer_free(&w);
    return 0;
}
