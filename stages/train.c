/* train — batch frames in, a fine-tuned checkpoint and metric frames out.
 *
 * The model starts from a Hugging Face checkpoint (--checkpoint DIR), a config.json
 * (--config FILE) or a named shape (--preset mini), and trains with AdamW, the linear
 * warm-up/decay schedule, clipping and accumulation (common/model/bert.h, common/model/optim.h).
 * A metric frame goes out per optimizer step; at each epoch frame it evaluates --eval (if
 * given) and saves to --save. SIGINT/SIGTERM save and exit; a non-finite loss stops with
 * the step number and keeps the last good checkpoint. --resume DIR continues exactly:
 * weights, AdamW moments, step, dropout RNG and data position come back.
 * It must never write a checkpoint from a step whose loss was not finite.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/bert_io.h"
#include "backend/device.h"
#include "eval/metrics.h"
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

typedef struct host_batch {
    int B, T;
    int32_t *ids, *types, *mask, *labels, *starts, *ends;
    float *values;
} host_batch;

static void host_batch_alloc(host_batch *h, int B, int T) {
    size_t cells = (size_t)B * (size_t)T;
    h->ids = malloc(cells * 4);
    h->types = malloc(cells * 4);
    h->mask = malloc(cells * 4);
    h->labels = malloc((size_t)B * 4);
    h->starts = malloc((size_t)B * 4);
    h->ends = malloc((size_t)B * 4);
    h->values = malloc((size_t)B * 4);
    if (!h->ids || !h->types || !h->mask || !h->labels || !h->starts || !h->ends || !h->values)
        bp_die(1, NULL, "out of memory for batches of %d x %d", B, T);
}

static void host_batch_free(host_batch *h) {
    free(h->ids); free(h->types); free(h->mask); free(h->labels); free(h->starts); free(h->ends); free(h->values);
}

/* Copy a batch frame into h and point b at it. Returns 0 or -1 with err. */
static int load_batch(const bp_frame *f, const bert_model *m, int max_B, int max_T, host_batch *h, bert_batch *b,
                      int want_targets, bp_err *err) {
    bp_tensor_view ids, types, mask;
    if (bp_get_tensor(f, "input_ids", &ids, err) || bp_tensor_expect(&ids, "input_ids", BP_I32, 2, NULL, err))
        return -1;
    int64_t B = ids.shape[0], T = ids.shape[1];
    if (B > max_B || T > max_T)
        return bp_err_set(err, "batch of %lld x %lld exceeds the planned %d x %d (the batch hello's batch_size/max_length)",
                          (long long)B, (long long)T, max_B, max_T);
    int64_t bt[2] = {B, T}, b1[1] = {B};
    if (bp_get_tensor(f, "token_type_ids", &types, err) || bp_tensor_expect(&types, "token_type_ids", BP_I32, 2, bt, err) ||
        bp_get_tensor(f, "attention_mask", &mask, err) || bp_tensor_expect(&mask, "attention_mask", BP_I32, 2, bt, err))
        return -1;
    bp_tensor_copy(&ids, h->ids);
    bp_tensor_copy(&types, h->types);
    bp_tensor_copy(&mask, h->mask);
    memset(b, 0, sizeof *b);
    b->B = (int)B;
    b->T = (int)T;
    b->input_ids = h->ids;
    b->token_type_ids = h->types;
    b->attention_mask = h->mask;
    if (!want_targets) return 0;
    bp_tensor_view t;
    if (m->cfg.head == BERT_HEAD_QA) {
        if (bp_get_tensor(f, "start_positions", &t, err) || bp_tensor_expect(&t, "start_positions", BP_I32, 1, b1, err))
            return -1;
        bp_tensor_copy(&t, h->starts);
        if (bp_get_tensor(f, "end_positions", &t, err) || bp_tensor_expect(&t, "end_positions", BP_I32, 1, b1, err))
            return -1;
        bp_tensor_copy(&t, h->ends);
        b->start_positions = h->starts;
        b->end_positions = h->ends;
    } else {
        if (bp_get_tensor(f, "labels", &t, err) || bp_tensor_expect(&t, "labels", BP_I32, 1, b1, err)) return -1;
        bp_tensor_copy(&t, h->labels);
        if (m->cfg.num_labels == 1) {
            for (int i = 0; i < B; i++) h->values[i] = (float)h->labels[i];
            b->label_values = h->values;
        } else {
            for (int i = 0; i < B; i++)
                if (h->labels[i] < 0 || h->labels[i] >= m->cfg.num_labels)
                    return bp_err_set(err, "label %d of row %d is outside 0..%d", h->labels[i], i, m->cfg.num_labels - 1);
            b->labels = h->labels;
        }
    }
    return 0;
}

typedef struct run {
    bert_model *m;
    optim_adamw *opt;
    bert_train_state state;
    const char *save_dir, *vocab_path;
    char **labels;
    int n_labels;
    long saved_step;   /* step of the last save, -1 before any */
} run;

static void save_all(run *r, const char *why) {
    if (!r->save_dir || r->saved_step == r->state.step) return;
    bp_err err;
    r->state.dropout_seed = r->m->dropout_seed;
    r->state.dropout_counter = r->m->dropout_counter;
    if (bert_save_pretrained(r->m, r->save_dir, (const char *const *)r->labels, r->n_labels, r->vocab_path, &err) ||
        bert_save_train_state(r->m, r->opt, r->save_dir, &r->state, &err))
        bp_die_err(&err);
    r->saved_step = r->state.step;
    bp_log("saved %s at step %ld (%s)", r->save_dir, r->state.step, why);
}

/* Evaluate the kept validation frames: loss, and for classification accuracy and macro-F1. */
static void evaluate(run *r, bp_frame *frames, size_t n, int max_B, int max_T, host_batch *h, bp_writer *w,
                     bp_out *out, int64_t *seq) {
    bp_err err;
    metrics_cls mc;
    int cls = r->m->cfg.head == BERT_HEAD_CLASSIFICATION && r->m->cfg.num_labels > 1;
    if (cls && metrics_cls_init(&mc, r->m->cfg.num_labels, &err)) bp_die_err(&err);
    double loss_sum = 0;
    long rows = 0;
    float *logits = malloc((size_t)max_B * (size_t)(cls ? r->m->cfg.num_labels : 2 * max_T) * sizeof *logits);
    if (!logits) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        bert_batch b;
        if (load_batch(&frames[i], r->m, max_B, max_T, h, &b, 1, &err) || bert_forward(r->m, &b, 0, &err))
            bp_die(1, "--eval", "batch %zu: %s", i, err.msg);
        loss_sum += (double)bert_loss(r->m) * b.B;
        rows += b.B;
        if (cls) {
            if (bert_logits(r->m, logits, (size_t)b.B * (size_t)r->m->cfg.num_labels, &err) < 0) bp_die_err(&err);
            for (int j = 0; j < b.B; j++)
                if (metrics_cls_add_logits(&mc, logits + (size_t)j * (size_t)r->m->cfg.num_labels, b.labels[j], NULL, &err))
                    bp_die_err(&err);
        }
    }
    free(logits);
    double loss = rows ? loss_sum / (double)rows : NAN;
    bp_begin(w, BP_METRIC);
    bp_put_int(w, "seq", (*seq)++);
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
    bp_send(out, w);
}

/* What an optimizer step needs besides the run. */
typedef struct stepper {
    run *r;
    bp_writer *w;
    bp_out *out;
    bp_progress *prog;
    int64_t seq;
    long micro, micro_rows;
    double loss_sum, start;
    int done;
    long total_steps, save_every;
    char extra[64];
} stepper;

/* Clip, update, report; frames_seen becomes the resume position. */
static void optimizer_step(stepper *st, int64_t frames_seen) {
    run *r = st->r;
    bp_err err;
    double grad_norm;
    float step_lr;
    if (bert_optim_step(r->m, r->opt, &grad_norm, &step_lr, &err)) {
        bp_die(1, NULL, "step %ld: %s; stopping, the last good checkpoint is kept", r->state.step + 1, err.msg);
    }
    r->state.step++;
    r->state.batches_consumed = frames_seen;
    double now = bp_now(), loss = st->loss_sum / (double)st->micro;
    bp_begin(st->w, BP_METRIC);
    bp_put_int(st->w, "seq", st->seq++);
    bp_put_str(st->w, "scope", "train");
    bp_put_int(st->w, "step", r->state.step);
    bp_put_int(st->w, "epoch", r->state.epoch + 1);
    bp_put_float(st->w, "loss", loss);
    bp_put_float(st->w, "lr", step_lr);
    bp_put_float(st->w, "grad_norm", grad_norm);
    bp_put_float(st->w, "seq_per_s", (double)st->micro_rows / (now - st->start));
    bp_send(st->out, st->w);
    snprintf(st->extra, sizeof st->extra, "loss %.4f", loss);
    bp_progress_update(st->prog, r->state.step, st->extra);
    st->micro = st->micro_rows = 0;
    st->loss_sum = 0;
    st->start = now;
    if (st->save_every && r->state.step % st->save_every == 0) save_all(r, "every N steps");
    if (r->state.step >= st->total_steps) {
        st->done = 1;
        bp_log("reached %ld steps", r->state.step);
    }
}

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    const char *checkpoint = NULL, *config = NULL, *preset = NULL, *vocab = NULL, *resume = NULL;
    const char *device = "auto", *precision = "fp32", *save_dir = NULL, *eval_spec = NULL, *save_init = NULL;
    double lr = 5e-5, warmup_ratio = 0, weight_decay = 0, max_grad_norm = 1.0, dropout = -1;
    long warmup_steps = -1, grad_accum = 1, max_steps = 0, save_every = 0, threads = 0;
    uint64_t seed = 42;
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
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case O_CKPT: checkpoint = optarg; break;
        case O_CONFIG: config = optarg; break;
        case O_PRESET: preset = optarg; break;
        case O_VOCAB: vocab = optarg; break;
        case O_RESUME: resume = optarg; break;
        case O_LR: lr = bp_opt_double("--lr", optarg, 0, 1e30); break;
        case O_WS: warmup_steps = bp_opt_long("--warmup-steps", optarg, 0, 1L << 40); break;
        case O_WR: warmup_ratio = bp_opt_double("--warmup-ratio", optarg, 0, 1); break;
        case O_WD: weight_decay = bp_opt_double("--weight-decay", optarg, 0, 10); break;
        case O_CLIP: max_grad_norm = bp_opt_double("--max-grad-norm", optarg, 0, 1e9); break;
        case O_ACC: grad_accum = bp_opt_long("--grad-accum", optarg, 1, 1 << 20); break;
        case O_MAXSTEPS: max_steps = bp_opt_long("--max-steps", optarg, 1, 1L << 40); break;
        case O_DROPOUT: dropout = bp_opt_double("--dropout", optarg, 0, 0.99); break;
        case O_SEED: seed = (uint64_t)bp_opt_long("--seed", optarg, 0, 1L << 62); break;
        case O_DEVICE: device = optarg; break;
        case O_PRECISION: precision = optarg; break;
        case O_THREADS: threads = bp_opt_long("--threads", optarg, 0, 1024); break;
        case O_SAVE: save_dir = optarg; break;
        case O_SAVE_EVERY: save_every = bp_opt_long("--save-every", optarg, 1, 1L << 40); break;
        case O_EVAL: eval_spec = optarg; break;
        case O_SAVE_INIT: save_init = optarg; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!!checkpoint + !!config + !!preset + !!resume != 1)
        bp_die(2, NULL, "give exactly one of --checkpoint DIR, --config FILE, --preset NAME or --resume DIR");

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&io, &hello);
    bp_err err;
    bert_head head = bp_hello_is_qa(hello) ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    int64_t batch_size = 0, max_length = 0, per_epoch = 0, epochs = 1, num_labels = 0, vocab_size = 0;
    if (bp_get_int(hello, "batch_size", 1, 1 << 20, &batch_size, &err) || bp_get_int(hello, "max_length", 1, 1 << 20, &max_length, &err))
        bp_die(1, io.in, "the input hello lacks batch_size or max_length: is this a batch stream?");
    if (bp_find_int(hello, "batches_per_epoch", 0, INT64_C(1) << 40, &per_epoch, &err) < 0 ||
        bp_find_int(hello, "epochs", 1, 1 << 20, &epochs, &err) < 0 ||
        bp_find_int(hello, "vocab_size", 1, BP_I32_MAX, &vocab_size, &err) < 0)
        bp_die_err(&err);
    run r = {0};
    r.saved_step = -1;
    if ((r.n_labels = bp_hello_labels(hello, &r.labels, &err)) < 0) bp_die_err(&err);
    int has_num_labels = bp_find_int(hello, "num_labels", 1, 1 << 20, &num_labels, &err);
    if (has_num_labels < 0) bp_die_err(&err);
    if (!has_num_labels) num_labels = r.n_labels;

    char note[300];
    backend *be = bp_backend_open(device, (int)threads, precision, note, sizeof note, &err);
    if (!be) bp_die_err(&err);
    bp_log("%s", note);

    int max_B = (int)batch_size, max_T = (int)max_length;
    char *notes = NULL;
    if (preset) {
        /* A shape by name, written out as a config so the usual loader builds it. */
        bert_config cfg;
        bert_config_default(&cfg);
        if (bert_preset(preset, &cfg, &err)) bp_die_err(&err);
        cfg.head = head;
        cfg.num_labels = head == BERT_HEAD_QA ? 2 : (int)(num_labels > 0 ? num_labels : 2);
        if (vocab_size > 0) cfg.vocab_size = (int)vocab_size;
        if (max_T > cfg.max_position_embeddings) bp_die(2, NULL, "max_length %d exceeds %d positions", max_T, cfg.max_position_embeddings);
        r.m = bert_create(&cfg, be, max_B, max_T, &err);
        if (!r.m || bert_init_weights(r.m, seed, 0, &err)) bp_die_err(&err);
    } else {
        const char *source = resume ? resume : checkpoint ? checkpoint : config;
        r.m = bert_open(source, !config, head, (int)num_labels, BERT_FOR_TRAINING, be, max_B, max_T, seed, &notes, &err);
        if (!r.m) bp_die_err(&err);
        if (notes) {
            bp_warn("%s", notes);
            free(notes);
        }
    }
    {
        /* The tokenizer's vocabulary must fit the embedding: an id past it is a wrong pairing of
         * vocab.txt and checkpoint, better caught here than as a bad id in the first batch. */
        int64_t tokens = 0;
        bp_err verr;
        if (bp_find_int(hello, "vocab_size", 1, BP_I32_MAX, &tokens, &verr) < 0) bp_die_err(&verr);
        if (tokens > r.m->cfg.vocab_size)
            bp_die(1, NULL, "the tokenizer's vocab.txt has %lld tokens but the model's embedding has %d rows "
                   "(config.json vocab_size): they do not belong together", (long long)tokens, r.m->cfg.vocab_size);
    }
    if (dropout >= 0) {
        r.m->cfg.hidden_dropout_prob = (float)dropout;
        r.m->cfg.attention_probs_dropout_prob = (float)dropout;
    }
    r.m->dropout_seed = seed;
    char vocab_buf[4096];
    if (!vocab && (checkpoint || resume)) {
        snprintf(vocab_buf, sizeof vocab_buf, "%s/vocab.txt", checkpoint ? checkpoint : resume);
        vocab = vocab_buf;
    }
    r.vocab_path = vocab;
    r.save_dir = save_dir;

    optim_config oc;
    optim_config_default(&oc);
    oc.lr = (float)lr;
    oc.weight_decay = (float)weight_decay;
    oc.max_grad_norm = (float)max_grad_norm;
    long steps_per_epoch = (long)((per_epoch + grad_accum - 1) / grad_accum);
    oc.total_steps = max_steps > 0 ? max_steps : steps_per_epoch * (long)epochs;
    oc.warmup_steps = warmup_steps >= 0 ? warmup_steps : (long)ceil(warmup_ratio * (double)oc.total_steps);
    r.opt = bert_optim_create(r.m, &oc, &err);
    if (!r.opt) bp_die_err(&err);
    if (resume) {
        if (bert_load_train_state(r.m, r.opt, resume, &r.state, &err)) bp_die_err(&err);
        bp_log("resuming at step %ld after %lld batches", r.state.step, (long long)r.state.batches_consumed);
    }
    int64_t skip = r.state.batches_consumed;
    if (save_init) {
        if (bert_save_pretrained(r.m, save_init, (const char *const *)r.labels, r.n_labels, r.vocab_path, &err))
            bp_die_err(&err);
        bp_log("saved the starting weights to %s", save_init);
    }
    bp_log("%s head, %zu parameters, %ld steps (%ld per epoch x %lld epochs), lr %g, warm-up %ld",
           head == BERT_HEAD_QA ? "QA" : "classification", r.m->num_params, oc.total_steps, steps_per_epoch,
           (long long)epochs, lr, oc.warmup_steps);

    /* The validation stream is small: keep its frames to run at every epoch end. */
    bp_frame *eval_frames = NULL;
    size_t n_eval = 0;
    if (eval_spec) {
        bp_in *ein = bp_in_open(eval_spec, 1, &err);
        if (!ein) bp_die_err(&err);
        bp_frame f;
        int rc;
        while ((rc = bp_in_next(ein, &f)) == 1) {
            if (f.kind != BP_BATCH) { bp_frame_release(&f); continue; }
            eval_frames = realloc(eval_frames, (n_eval + 1) * sizeof *eval_frames);
            if (!eval_frames) bp_die(1, NULL, "out of memory");
            eval_frames[n_eval++] = f;
        }
        if (rc < 0) bp_die_err(bp_in_err(ein));
        bp_in_close(ein);
    }

    bp_out *out = bp_open_out(&io);
    bp_writer w;
    bp_writer_init(&w);
    bp_hello_begin(&w);
    bp_put_str(&w, "task", head == BERT_HEAD_QA ? "qa" : "classification");
    bp_put_int(&w, "total_steps", oc.total_steps);
    bp_send_hello(out, &w);

    bp_progress prog;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    host_batch h;
    host_batch_alloc(&h, max_B, max_T);
    stepper st = {&r, &w, out, &prog, 0, 0, 0, 0, bp_now(), r.state.step >= oc.total_steps, oc.total_steps, save_every, ""};
    bp_progress_start(&prog, "train", oc.total_steps);
    int64_t frames_seen = 0;
    long last_epoch_step = -1;
    bp_frame f;
    int rc;
    while ((rc = bp_in_next(in, &f)) == 1) {
        if (stop_signal) {
            bp_frame_release(&f);
            break;
        }
        int is_batch = f.kind == BP_BATCH, is_epoch = f.kind == BP_EPOCH;
        if (is_batch || is_epoch) frames_seen++;
        if (frames_seen <= skip || !(is_batch || is_epoch) || (st.done && (is_batch || last_epoch_step == r.state.step))) {
            /* resumed past it, not ours, or training is over: read on to the eos */
            bp_frame_release(&f);
            if (st.done && frames_seen > skip) r.state.batches_consumed = frames_seen;
            continue;
        }
        if (is_epoch) {
            bp_frame_release(&f);
            if (st.micro > 0 && !st.done) optimizer_step(&st, frames_seen);   /* a partial accumulation, as the Trainer does */
            last_epoch_step = r.state.step;
            r.state.batches_consumed = frames_seen;
            r.state.epoch++;
            if (eval_frames) evaluate(&r, eval_frames, n_eval, max_B, max_T, &h, &w, out, &st.seq);
            save_all(&r, "end of epoch");
            continue;
        }
        bert_batch b;
        if (load_batch(&f, r.m, max_B, max_T, &h, &b, 1, &err) || bert_forward(r.m, &b, 1, &err)) {
            bp_die(1, NULL, "batch %lld: %s", (long long)frames_seen, err.msg);
        }
        bp_frame_release(&f);
        float loss = bert_loss(r.m);
        if (!isfinite(loss)) {
            bp_die(1, NULL, "loss is %g at step %ld: stopping; the last good checkpoint is kept", loss, r.state.step + 1);
        }
        if (bert_backward(r.m, 1.0f / (float)grad_accum, &err)) bp_die_err(&err);
        st.loss_sum += loss;
        st.micro++;
        st.micro_rows += b.B;
        if (st.micro == grad_accum) optimizer_step(&st, frames_seen);
    }
    if (stop_signal) {
        bp_frame_release(&f);
        bp_progress_finish(&prog, NULL);
        save_all(&r, stop_signal == SIGINT ? "interrupted" : "terminated");
        bp_log("stopped by signal %d at step %ld", (int)stop_signal, r.state.step);
        bp_abort_out(out, "training interrupted by a signal (checkpoint saved)");
        return 128 + stop_signal;
    }
    if (rc < 0) bp_die_err(bp_in_err(in));
    if (st.micro > 0) bp_warn("%ld batches after the last epoch frame were not stepped", st.micro);
    bp_progress_finish(&prog, st.extra[0] ? st.extra : NULL);
    save_all(&r, "end of training");
    bp_close_out(out);
    bp_in_close(in);
    for (size_t i = 0; i < n_eval; i++) bp_frame_release(&eval_frames[i]);
    free(eval_frames);
    host_batch_free(&h);
    bp_labels_free(r.labels, r.n_labels);
    optim_free(r.opt);
    bert_free(r.m);
    be->destroy(be);
    bp_writer_free(&w);
    return 0;
}
