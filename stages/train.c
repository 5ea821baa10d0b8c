/* train — batch frames in, a fine-tuned checkpoint and metric frames out.
 *
 * The model starts from a Hugging Face checkpoint (--checkpoint DIR), a config.json
 * (--config FILE) or a named shape (--preset mini), or for the QA baselines from fresh weights
 * of the sizes given; --model, --head and --loss choose the variant (common/model/model.h),
 * --freeze what stays fixed. It trains with AdamW, Adam or SGD, the linear warm-up/decay
 * schedule, clipping and accumulation (common/model/optim.h).
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

#include "ckpt/model_io.h"
#include "eval/metrics.h"
#include "stage/bert_input.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: train (--checkpoint DIR | --config FILE | --preset NAME | --resume DIR) [options] [--in SPEC] [--out SPEC]\n"
    "       train --model lstm|transformer [--hidden N --heads N --intermediate N] [options]\n"
    "Fine-tune BERT on batch frames; metric frames out.\n"
    "  --checkpoint DIR     start from a Hugging Face checkpoint (config.json + weights)\n"
    "  --config FILE        fresh weights for this config.json\n"
    "  --preset NAME        fresh weights, Google's shapes: tiny mini small medium base large\n"
    "  --vocab FILE         vocab.txt saved with the checkpoint (default DIR/vocab.txt)\n"
    "  --resume DIR         continue a run saved by --save (same input stream)\n"
    "  --lr X               peak learning rate (default 5e-5)\n"
    "  --warmup-steps N | --warmup-ratio R   linear warm-up (default 0)\n"
    "  --schedule linear|constant   after warm-up: decay to 0 at the last step (default) or keep the rate\n"
    "  --optimizer NAME     adamw (default), adam or sgd (torch.optim semantics)\n"
    "  --momentum X --dampening X --nesterov   SGD's (default 0, 0, off)\n"
    "  --weight-decay X     decay, not on biases and LayerNorm (default 0): AdamW decoupled, Adam and SGD L2\n"
    "  --max-grad-norm X    global-norm clipping, 0 = off (default 1.0)\n"
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
    "  --precision fp32|tf32|bf16   GPU matmul precision (bf16: fp32 master weights; default fp32)\n"
    "  --save DIR           save here at each epoch end and at the end\n"
    "  --save-every N       also save every N steps\n"
    "  --save-init DIR      save the starting weights (before any step) to DIR, e.g. for a peer run\n"
    "  --eval SPEC          validation batch stream (e.g. file:val.frames), evaluated each epoch\n"
    BP_IO_USAGE;

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

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
    double lr, warmup_ratio, weight_decay, max_grad_norm, dropout, momentum, dampening;
    long warmup_steps, grad_accum, max_steps, save_every, threads;
    int nesterov;
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
} stream_info;

/* The model being trained and where it is saved. */
typedef struct run {
    model *m;
    optimizer *opt;
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
    if (model_save_pretrained(r->m, r->save_dir, (const char *const *)r->info->labels, r->info->n_labels, r->vocab_path,
                              &err) ||
        model_save_train_state(r->m, r->opt, r->save_dir, &r->state, &err))
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
    const bert_config *cfg = &r->m->cfg.bert;
    bp_err err;
    char where[64];
    metrics_cls mc;
    int classes = cfg->head == BERT_HEAD_QA ? 0 : model_classes(r->m), cls = classes > 1 && r->m->targets.kind != LOSS_MSE;
    if (cls && metrics_cls_init(&mc, classes, &err)) bp_die_err(&err);
    double loss_sum = 0;
    long rows = 0;
    float *scores = malloc((size_t)t->h->max_B * (size_t)(classes ? classes : 1) * sizeof *scores);
    if (!scores) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < set->n; i++) {
        const bp_frame *f = &set->frames[i];
        bert_batch b;
        if (bp_batch_read(f, cfg, t->h, &b, &err)) bp_die(1, "--eval", "%s", err.msg);
        if (model_forward(r->m, &b, 0, &err)) bp_die(1, "--eval", "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
        loss_sum += (double)model_loss(r->m) * b.B;
        rows += b.B;
        if (!cls) continue;
        if (model_class_scores(r->m, scores, (size_t)b.B * (size_t)classes, &err) < 0) bp_die_err(&err);
        for (int j = 0; j < b.B; j++)
            if (metrics_cls_add_logits(&mc, scores + (size_t)j * (size_t)classes, b.labels[j], NULL, &err))
                bp_die_err(&err);
    }
    free(scores);
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
    if (model_optim_step(r->m, r->opt, grad_norm, lr, &err))
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
    if (bp_batch_read(f, &r->m->cfg.bert, t->h, &b, &err)) bp_die_err(&err);
    if (model_forward(r->m, &b, 1, &err)) bp_die(1, NULL, "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
    float loss = model_loss(r->m);
    if (!isfinite(loss))
        bp_die(1, NULL, "loss is %g at step %ld: stopping; the last good checkpoint is kept", loss, r->state.step + 1);
    if (model_backward(r->m, 1.0f / (float)t->grad_accum, &err)) bp_die_err(&err);
    t->loss_sum += loss;
    t->micro++;
    t->micro_rows += b.B;
    if (t->micro == t->grad_accum) optimizer_step(t, frames_seen);
}

/* ---- setting up -------------------------------------------------------------------- */

enum { O_CKPT = 1, O_CONFIG, O_PRESET, O_VOCAB, O_RESUME, O_LR, O_WS, O_WR, O_WD, O_CLIP, O_ACC, O_MAXSTEPS,
       O_DROPOUT, O_SEED, O_DEVICE, O_THREADS, O_PRECISION, O_SAVE, O_SAVE_EVERY, O_EVAL, O_SAVE_INIT, O_OPTIMIZER,
       O_MOMENTUM, O_DAMPENING, O_NESTEROV, O_MODEL, O_HEAD, O_LOSS, O_FREEZE, O_MLP_HIDDEN, O_ACTIVATION,
       O_RNN_LAYERS, O_RNN_HIDDEN, O_UNIDIRECTIONAL, O_RNN_DROPOUT, O_HEAD_DROPOUT, O_HIDDEN, O_HEADS,
       O_INTERMEDIATE, O_LAYERS, O_SCHEDULE };

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
    case O_OPTIMIZER: a->optimizer = arg; break;
    case O_MOMENTUM: a->momentum = bp_opt_double("--momentum", arg, 0, 1e3); break;
    case O_DAMPENING: a->dampening = bp_opt_double("--dampening", arg, 0, 1); break;
    case O_NESTEROV: a->nesterov = 1; break;
    case O_SCHEDULE: a->schedule = arg; break;
    default: return 0;
    }
    return 1;
}

static void parse_args(int argc, char **argv, train_args *a) {
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
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
        {"save-init", required_argument, 0, O_SAVE_INIT}, {"optimizer", required_argument, 0, O_OPTIMIZER},
        {"momentum", required_argument, 0, O_MOMENTUM}, {"dampening", required_argument, 0, O_DAMPENING},
        {"nesterov", no_argument, 0, O_NESTEROV}, {"model", required_argument, 0, O_MODEL},
        {"head", required_argument, 0, O_HEAD}, {"loss", required_argument, 0, O_LOSS},
        {"freeze", required_argument, 0, O_FREEZE}, {"mlp-hidden", required_argument, 0, O_MLP_HIDDEN},
        {"activation", required_argument, 0, O_ACTIVATION}, {"rnn-layers", required_argument, 0, O_RNN_LAYERS},
        {"rnn-hidden", required_argument, 0, O_RNN_HIDDEN}, {"unidirectional", no_argument, 0, O_UNIDIRECTIONAL},
        {"rnn-dropout", required_argument, 0, O_RNN_DROPOUT}, {"head-dropout", required_argument, 0, O_HEAD_DROPOUT},
        {"hidden", required_argument, 0, O_HIDDEN}, {"heads", required_argument, 0, O_HEADS},
        {"intermediate", required_argument, 0, O_INTERMEDIATE}, {"layers", required_argument, 0, O_LAYERS},
        {"schedule", required_argument, 0, O_SCHEDULE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg) || training_option(a, opt, optarg) || variant_option(&a->v, opt, optarg))
            continue;
        if (opt == 'h') {
            fputs(usage, stdout);
            exit(0);
        }
        bp_usage_error();
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    int sources = !!a->checkpoint + !!a->config + !!a->preset + !!a->resume;
    int from_scratch = a->v.body && strcmp(a->v.body, "bert") != 0;
    if (sources > 1 || (sources == 0 && !from_scratch))
        bp_die(2, NULL, "give exactly one of --checkpoint DIR, --config FILE, --preset NAME or --resume DIR "
                        "(only the --model lstm|transformer baselines start without one)");
    if (a->resume && a->v.given) bp_die(2, NULL, "a --resume run keeps the variant saved with it: no --model, --head, ... options");
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
    model *m = model_open(&cfg, weights, MODEL_FOR_TRAINING, be, info->max_B, info->max_T, a->seed, &notes, &err);
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
 * --resume brings its state back. Returns the number of steps to train. */
static long open_optimizer(run *r, const train_args *a, const stream_info *info, optim_config *oc) {
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
    return steps;
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
                    .warmup_steps = -1, .grad_accum = 1, .seed = 42,
                    .v = {.rnn_layers = -1, .rnn_hidden = -1, .rnn_dropout = -1, .head_dropout = -1}};
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
    bp_check_vocab_fits(hello, r.m->cfg.bert.vocab_size);
    optim_config oc;
    long total_steps = open_optimizer(&r, &a, &info, &oc);
    eval_set set = read_eval_set(a.eval_spec);

    bp_writer w;
    bp_writer_init(&w);
    bp_out *out = bp_open_out(&a.io);
    bp_hello_begin(&w);
    bp_put_str(&w, "task", info.head == BERT_HEAD_QA ? "qa" : "classification");
    bp_put_int(&w, "total_steps", total_steps);
    bp_send_hello(out, &w);

    catch_stop_signals();
    bp_batch_tensors h;
    bp_batch_tensors_alloc(&h, info.max_B, info.max_T);
    bp_progress prog;
    trainer t = {.r = &r, .out = out, .w = &w, .prog = &prog, .h = &h, .start = bp_now(), .grad_accum = a.grad_accum,
                 .total_steps = total_steps, .save_every = a.save_every, .done = r.state.step >= total_steps};
    bp_progress_start(&prog, "train", total_steps);
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
    model_free(r.m);
    be->destroy(be);
    bp_writer_free(&w);
    return 0;
}
