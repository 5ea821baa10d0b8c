/* eval — a fine-tuned checkpoint and batch frames in, logits frames out.
 *
 * Runs the model in evaluation mode (no dropout) on every batch and sends its logits with
 * the ids that let postprocess join them to examples: example_ids and windows, plus the
 * batch's labels / answer positions and offsets, copied unchanged. Any model variant: its
 * config.json says which (ckpt/model_io.h). A BCE model's one logit x goes out as the class
 * scores (0, x), so postprocess takes it like any two-class model.
 * Must never: reorder: one logits frame per batch frame, in order; epoch frames are dropped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/model_io.h"
#include "stage/bert_input.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: eval --checkpoint DIR [--device auto|cuda|cpu] [--threads N] [--in SPEC] [--out SPEC]\n"
    "Logits for every batch frame.\n"
    "  --checkpoint DIR   config.json + model.safetensors (or pytorch_model.bin), any model variant\n"
    "  --device D         auto (default), cuda or cpu\n"
    "  --precision P      fp32 (default), bf16 (cuda, or a CPU with avx512_bf16), tf32 (cuda) or auto\n"
    "  --threads N        CPU threads (default: all)\n" BP_IO_USAGE;

/* What the command line asks for. */
typedef struct eval_args {
    bp_io_opts io;
    const char *checkpoint, *device, *precision;
    long threads;
} eval_args;

/* The model at work and where its logits go. */
typedef struct evaluator {
    model *m;
    int qa, C;
    bp_batch_tensors h;
    float *logits, *starts, *ends;   /* [B, C] or [B, T, 2]; QA: [B, T] each */
    size_t logits_cap;               /* floats in logits */
    bp_out *out;
    bp_writer w;
    int64_t seq, rows;
} evaluator;

static void parse_args(int argc, char **argv, eval_args *a) {
    enum { O_CKPT = 1, O_DEVICE, O_THREADS, O_PRECISION };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, {"checkpoint", required_argument, 0, O_CKPT}, {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION},
        {"threads", required_argument, 0, O_THREADS}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_CKPT: a->checkpoint = optarg; break;
        case O_DEVICE: a->device = optarg; break;
        case O_PRECISION: a->precision = optarg; break;
        case O_THREADS: a->threads = bp_opt_long("--threads", optarg, 0, 1024); break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
    if (!a->checkpoint) bp_usage_die("--checkpoint DIR is required");
}

/* The checkpoint as an inference-only model for batches up to max_B x max_T. */
static model *open_model(const char *checkpoint, backend *be, int qa, int max_B, int max_T) {
    bp_err err;
    char *notes = NULL;
    model_config cfg;
    if (model_read_config(checkpoint, qa ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION, 0, &cfg, NULL, &err))
        bp_die_err(&err);
    model *m = model_open(&cfg, checkpoint, MODEL_LOAD_MATCHING, MODEL_FOR_INFERENCE, be, max_B, max_T, 0, &notes, &err);
    if (!m) bp_die_err(&err);
    if (notes) {
        /* Evaluating weights that were never trained is almost always a mistake: say so loudly. */
        bp_warn("%s", notes);
        free(notes);
    }
    return m;
}

/* The upstream schema and the checkpoint; for unlabelled input (your own sentences) the
 * checkpoint's id2label names the classes. */
static void send_hello(evaluator *ev, const bp_frame *hello, const char *checkpoint) {
    static const char *const pass_on[] = {"task", "labels", "num_labels", "max_length", "stride", "split", "source", NULL};
    bp_writer *w = &ev->w;
    bp_hello_begin_from(w, hello, pass_on);
    bp_put_str(w, "checkpoint", checkpoint);
    hfc_config hf;
    bp_err err;
    if (!ev->qa && !bp_has(hello, "labels") && bert_read_config(checkpoint, &hf, &err) == 0) {
        if (hf.num_labels == ev->C && hf.id2label) bp_put_strs(w, "labels", (const char *const *)hf.id2label, (size_t)ev->C);
        hfc_free(&hf);
    }
    bp_send_hello(ev->out, w);
}

/* Logits for batch frame f: its ids, the model's logits and what postprocess joins on. */
static void send_logits(evaluator *ev, const bp_frame *f, const bert_batch *b) {
    bp_writer *w = &ev->w;
    int64_t B = b->B, T = b->T, bt[2] = {B, T}, bc[2] = {B, ev->C};
    bp_begin(w, BP_LOGITS);
    bp_put_int(w, "seq", ev->seq++);
    bp_put_copy(w, f, "example_ids");
    bp_put_copy(w, f, "windows");
    if (ev->qa) {
        /* [B, T, 2] interleaved start/end -> two [B, T] tensors */
        for (int64_t i = 0; i < B * T; i++) {
            ev->starts[i] = ev->logits[2 * i];
            ev->ends[i] = ev->logits[2 * i + 1];
        }
        bp_put_tensor(w, "start_logits", BP_F32, 2, bt, ev->starts);
        bp_put_tensor(w, "end_logits", BP_F32, 2, bt, ev->ends);
        bp_put_copy(w, f, "offsets");
        bp_put_copy(w, f, "start_positions");
        bp_put_copy(w, f, "end_positions");
    } else {
        bp_put_tensor(w, "logits", BP_F32, 2, bc, ev->logits);
        bp_put_copy(w, f, "labels");
    }
    bp_send(ev->out, w);
}

static void eval_batch(evaluator *ev, const bp_frame *f) {
    bp_err err;
    bert_batch b;
    char where[64];
    if (bp_batch_read(f, NULL, &ev->h, &b, &err)) bp_die_err(&err);
    if (model_forward(ev->m, &b, 0, &err) ||
        (ev->qa ? model_logits(ev->m, ev->logits, ev->logits_cap, &err)
                : model_class_scores(ev->m, ev->logits, ev->logits_cap, &err)) < 0)
        bp_die(1, bp_frame_where(f, where, sizeof where), "%s", err.msg);
    send_logits(ev, f, &b);
    ev->rows += b.B;
}

/* Host buffers for the largest batch's logits. */
static void alloc_logits(evaluator *ev, int max_B, int max_T) {
    size_t cells = (size_t)max_B * (size_t)max_T;
    ev->logits_cap = cells * 2 + (size_t)max_B * (size_t)ev->C;
    ev->logits = malloc(ev->logits_cap * sizeof *ev->logits);
    ev->starts = malloc(cells * sizeof *ev->starts);
    ev->ends = malloc(cells * sizeof *ev->ends);
    if (!ev->logits || !ev->starts || !ev->ends) bp_die(1, NULL, "out of memory");
}

/* The batches the stream will bring, from batch's hello (batches_per_epoch x epochs), for the
 * progress bar's total and ETA; 0 (unknown) when the producer did not say. */
static int64_t batches_expected(const bp_frame *hello) {
    int64_t per_epoch = 0, epochs = 1;
    bp_err err;
    if (bp_find_int(hello, "batches_per_epoch", 0, INT64_MAX / (1 << 20), &per_epoch, &err) != 1 ||
        bp_find_int(hello, "epochs", 1, 1 << 20, &epochs, &err) < 0)
        return 0;
    return per_epoch * epochs;
}

int main(int argc, char **argv) {
    eval_args a = {.device = "auto", .precision = "fp32"};
    bp_stage_init(&a.io, argv);
    bp_set_usage(usage);
    parse_args(argc, argv, &a);

    evaluator ev = {.out = bp_open_out(&a.io)};
    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    int max_B, max_T;
    bp_batch_shape(hello, a.io.in, &max_B, &max_T);
    backend *be = bp_open_device(a.device, (int)a.threads, a.precision);
    ev.qa = bp_stream_is_qa(hello);
    ev.m = open_model(a.checkpoint, be, ev.qa, max_B, max_T);
    bp_check_vocab_fits(hello, ev.m->cfg.bert.vocab_size);
    ev.C = ev.qa ? 2 : model_classes(ev.m);

    bp_writer_init(&ev.w);
    send_hello(&ev, hello, a.checkpoint);
    bp_batch_tensors_alloc(&ev.h, max_B, max_T);
    alloc_logits(&ev, max_B, max_T);
    bp_progress prog;
    bp_progress_start(&prog, "eval", batches_expected(hello));
    bp_frame f;
    int rc;
    int64_t batches = 0;
    char rows[48];
    while ((rc = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_BATCH) {   /* epoch frames are dropped */
            eval_batch(&ev, &f);
            snprintf(rows, sizeof rows, "batches, %lld sequences", (long long)ev.rows);
            bp_progress_update(&prog, ++batches, rows);
        }
        bp_frame_release(&f);
    }
    if (rc < 0) bp_die_err(bp_in_err(in));
    snprintf(rows, sizeof rows, "batches, %lld sequences", (long long)ev.rows);
    bp_progress_finish(&prog, rows);
    bp_log("%lld sequences evaluated", (long long)ev.rows);
    bp_close_out(ev.out);
    bp_in_close(in);
    bp_batch_tensors_free(&ev.h);
    free(ev.logits); free(ev.starts); free(ev.ends);
    model_free(ev.m);
    be->destroy(be);
    bp_writer_free(&ev.w);
    return 0;
}
