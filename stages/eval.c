/* eval — a fine-tuned checkpoint and batch frames in, logits frames out.
 *
 * Runs the model in evaluation mode (no dropout) on every batch and sends its logits with
 * the ids that let postprocess join them to examples: example_ids and windows, plus the
 * batch's labels / answer positions and offsets, copied unchanged. It never reorders: one
 * logits frame per batch frame, in order; epoch frames are dropped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/bert_io.h"
#include "backend/device.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: eval --checkpoint DIR [--device auto|cuda|cpu] [--threads N] [--in SPEC] [--out SPEC]\n"
    "Logits for every batch frame.\n"
    "  --checkpoint DIR   config.json + model.safetensors (or pytorch_model.bin)\n"
    "  --device D         auto (default), cuda or cpu\n"
    "  --precision P      fp32 (default), tf32 or bf16 (GPU only)\n"
    "  --threads N        CPU threads (default: all)\n" BP_IO_USAGE;

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    const char *checkpoint = NULL, *device = "auto", *precision = "fp32";
    long threads = 0;
    enum { O_CKPT = 1, O_DEVICE, O_THREADS, O_PRECISION };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, {"checkpoint", required_argument, 0, O_CKPT}, {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION},
        {"threads", required_argument, 0, O_THREADS}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case O_CKPT: checkpoint = optarg; break;
        case O_DEVICE: device = optarg; break;
        case O_PRECISION: precision = optarg; break;
        case O_THREADS: threads = bp_opt_long("--threads", optarg, 0, 1024); break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!checkpoint) bp_die(2, NULL, "--checkpoint DIR is required");

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&io, &hello);
    bp_err err;
    int qa = bp_hello_is_qa(hello);
    int64_t max_B = 0, max_T = 0;
    if (bp_get_int(hello, "batch_size", 1, 1 << 20, &max_B, &err) || bp_get_int(hello, "max_length", 1, 1 << 20, &max_T, &err))
        bp_die(1, io.in, "the input hello lacks batch_size or max_length: is this a batch stream?");

    char note[300];
    backend *be = bp_backend_open(device, (int)threads, precision, note, sizeof note, &err);
    if (!be) bp_die_err(&err);
    bp_log("%s", note);
    char *notes = NULL;
    bert_model *m = bert_open(checkpoint, 1, qa ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION, 0, BERT_FOR_INFERENCE,
                              be, (int)max_B, (int)max_T, 0, &notes, &err);
    if (!m) bp_die_err(&err);
    if (notes) {
        /* Evaluating weights that were never trained is almost always a mistake: say so loudly. */
        bp_warn("%s", notes);
        free(notes);
    }
    {
        /* The tokenizer's vocabulary must fit the embedding: an id past it is a wrong pairing of
         * vocab.txt and checkpoint, better caught here than as a bad id in the first batch. */
        int64_t tokens = 0;
        bp_err verr;
        if (bp_find_int(hello, "vocab_size", 1, BP_I32_MAX, &tokens, &verr) < 0) bp_die_err(&verr);
        if (tokens > m->cfg.vocab_size)
            bp_die(1, NULL, "the tokenizer's vocab.txt has %lld tokens but the model's embedding has %d rows "
                   "(config.json vocab_size): they do not belong together", (long long)tokens, m->cfg.vocab_size);
    }
    int C = m->cfg.num_labels;

    bp_out *out = bp_open_out(&io);
    bp_writer w;
    bp_writer_init(&w);
    static const char *const pass_on[] = {"task", "labels", "num_labels", "max_length", "stride", "split", "source", NULL};
    bp_hello_begin_from(&w, hello, pass_on);
    bp_put_str(&w, "checkpoint", checkpoint);
    if (!qa && !bp_has(hello, "labels")) {
        /* Unlabelled input (your own sentences): the checkpoint's id2label names the classes. */
        hfc_config hf;
        if (bert_read_config(checkpoint, &hf, &err) == 0) {
            if (hf.num_labels == C && hf.id2label) bp_put_strs(&w, "labels", (const char *const *)hf.id2label, (size_t)C);
            hfc_free(&hf);
        }
    }
    bp_send_hello(out, &w);

    size_t cells = (size_t)max_B * (size_t)max_T;
    int32_t *ids = malloc(cells * 4), *types = malloc(cells * 4), *mask = malloc(cells * 4);
    float *logits = malloc(cells * 2 * sizeof(float) + (size_t)max_B * (size_t)C * sizeof(float));
    float *starts = malloc(cells * sizeof(float)), *ends = malloc(cells * sizeof(float));
    if (!ids || !types || !mask || !logits || !starts || !ends) bp_die(1, NULL, "out of memory");
    int64_t seq = 0, rows = 0;
    bp_progress prog;
    bp_progress_start(&prog, "eval", 0);
    bp_frame f;
    int rc;
    while ((rc = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_BATCH) {
            bp_frame_release(&f);
            continue;
        }
        bp_tensor_view tids, ttypes, tmask;
        if (bp_get_tensor(&f, "input_ids", &tids, &err) || bp_tensor_expect(&tids, "input_ids", BP_I32, 2, NULL, &err))
            goto bad;
        int64_t B = tids.shape[0], T = tids.shape[1], bt[2] = {B, T};
        if (B > max_B || T > max_T) {
            bp_err_set(&err, "batch of %lld x %lld exceeds the hello's %lld x %lld", (long long)B, (long long)T,
                       (long long)max_B, (long long)max_T);
            goto bad;
        }
        if (bp_get_tensor(&f, "token_type_ids", &ttypes, &err) || bp_tensor_expect(&ttypes, "token_type_ids", BP_I32, 2, bt, &err) ||
            bp_get_tensor(&f, "attention_mask", &tmask, &err) || bp_tensor_expect(&tmask, "attention_mask", BP_I32, 2, bt, &err))
            goto bad;
        bp_tensor_copy(&tids, ids);
        bp_tensor_copy(&ttypes, types);
        bp_tensor_copy(&tmask, mask);
        bert_batch b = {.B = (int)B, .T = (int)T, .input_ids = ids, .token_type_ids = types, .attention_mask = mask};
        if (bert_forward(m, &b, 0, &err)) goto bad;
        long n = bert_logits(m, logits, cells * 2 + (size_t)max_B * (size_t)C, &err);
        if (n < 0) goto bad;
        bp_begin(&w, BP_LOGITS);
        bp_put_int(&w, "seq", seq++);
        bp_put_copy(&w, &f, "example_ids");
        bp_put_copy(&w, &f, "windows");
        if (qa) {
            /* [B, T, 2] interleaved start/end -> two [B, T] tensors */
            for (int64_t i = 0; i < B * T; i++) {
                starts[i] = logits[2 * i];
                ends[i] = logits[2 * i + 1];
            }
            bp_put_tensor(&w, "start_logits", BP_F32, 2, bt, starts);
            bp_put_tensor(&w, "end_logits", BP_F32, 2, bt, ends);
            bp_put_copy(&w, &f, "offsets");
            bp_put_copy(&w, &f, "start_positions");
            bp_put_copy(&w, &f, "end_positions");
        } else {
            int64_t bc[2] = {B, C};
            bp_put_tensor(&w, "logits", BP_F32, 2, bc, logits);
            bp_put_copy(&w, &f, "labels");
        }
        bp_send(out, &w);
        rows += B;
        bp_progress_update(&prog, rows, NULL);
        bp_frame_release(&f);
        continue;
    bad:
        bp_die(1, NULL, "batch frame %lld: %s", (long long)seq, err.msg);
    }
    if (rc < 0) bp_die_err(bp_in_err(in));
    bp_progress_finish(&prog, NULL);
    bp_log("%lld sequences evaluated", (long long)rows);
    bp_close_out(out);
    bp_in_close(in);
    free(ids); free(types); free(mask); free(logits); free(starts); free(ends);
    bert_free(m);
    be->destroy(be);
    bp_writer_free(&w);
    return 0;
}
