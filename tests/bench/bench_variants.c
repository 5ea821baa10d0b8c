/* bench_variants.c — training throughput of the model variants on the cpu backend.
 *
 *   build/bench/bench_variants --model bigru-frozen|bigru|lstm|transformer [--batch B] [--seq T]
 *                              [--steps K] [--threads N] [--hidden H] [--heads A] [--ff F]
 *
 *   bigru-frozen  BERT-Mini (L4 H256 A4 I1024, vocab 30522, dropout 0.1) frozen (--freeze bert:
 *                 inference mode) + a 2-layer bidirectional GRU head (hidden 256, dropout 0.25),
 *                 one logit, BCE, Adam lr 1e-3; default seq 128 batch 32
 *   bigru         the same with BERT fine-tuned too (the full-fine-tuning comparison)
 *   lstm          the LSTM QA baseline (Embedding -> LSTM -> qa_outputs), hidden 768, Adam;
 *                 default seq 384 batch 12
 *   transformer   the Transformer QA baseline (one TransformerEncoderLayer, 768, 12 heads,
 *                 dim_feedforward 2048, dropout 0.1), Adam; default seq 384 batch 12
 * Random weights (seed 1); the batches are bench_batches.h's formula, shared with
 * tests/reference/bench_variants_torch.py. A step is forward + backward + clipping + the
 * optimizer update (+ zero grad). Prints one line:
 *   impl c model bigru-frozen batch 32 seq 128 train_seq_s X peak_rss_mb Z loss L train_cpu_s_per_step S
 * and for bigru also encoder_backward_share F: the encoder's backward time over a step's.
 * Must never: be part of the test suite (it runs for tens of seconds).
 */
#include "backend/backend.h"
#include "base/log.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_batches.h"

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    const char *name = arg_str(argc, argv, "--model", "bigru-frozen");
    int bigru = strncmp(name, "bigru", 5) == 0, frozen = strcmp(name, "bigru-frozen") == 0;
    int lstm = strcmp(name, "lstm") == 0, transformer = strcmp(name, "transformer") == 0;
    if (!bigru && !lstm && !transformer)
        bp_die(2, NULL, "--model must be bigru-frozen, bigru, lstm or transformer, not %s", name);
    int B = (int)arg_int(argc, argv, "--batch", bigru ? 32 : 12);
    int T = (int)arg_int(argc, argv, "--seq", bigru ? 128 : 384);
    int steps = (int)arg_int(argc, argv, "--steps", 10);
    int threads = (int)arg_int(argc, argv, "--threads", 2);
    if (B <= 0 || T < 4 || steps <= 0) bp_die(2, NULL, "--batch, --seq (>= 4) and --steps must be positive");

    model_config cfg;
    model_config_default(&cfg);
    cfg.bert.vocab_size = 30522;
    if (bigru) {
        cfg.bert.num_hidden_layers = 4;
        cfg.bert.hidden_size = 256;
        cfg.bert.num_attention_heads = 4;
        cfg.bert.intermediate_size = 1024;
        cfg.head = MODEL_HEAD_GRU;
        cfg.loss = MODEL_LOSS_BCE;
        cfg.bert.num_labels = 1;
        cfg.head_dropout = 0.25f;
        cfg.freeze.bert = frozen;
    } else {
        cfg.body = lstm ? MODEL_BODY_LSTM : MODEL_BODY_TRANSFORMER;
        cfg.bert.head = BERT_HEAD_QA;
        cfg.bert.num_hidden_layers = 1;
        cfg.bert.hidden_size = (int)arg_int(argc, argv, "--hidden", 768);
        cfg.bert.num_attention_heads = (int)arg_int(argc, argv, "--heads", 12);
        cfg.bert.intermediate_size = (int)arg_int(argc, argv, "--ff", 2048);
        cfg.bert.layer_norm_eps = 1e-5f;
    }
    bp_err err;
    backend *be = backend_cpu_create(threads, &err);
    if (!be) bp_die_err(&err);
    model *m = model_create(&cfg, be, B, T, MODEL_FOR_TRAINING, &err);
    if (!m || model_init_weights(m, 1, &err) != 0) bp_die_err(&err);
    optim_config oc;
    optim_config_default(&oc);
    oc.kind = OPTIM_ADAM;
    oc.lr = 1e-3f;
    optimizer *opt = model_optim_create(m, &oc, &err);
    if (!opt) bp_die_err(&err);

    bench_inputs in;
    bench_inputs_alloc(&in, B, T, !bigru);
    bert_batch batch = in.batch;

    /* 2 warm-up steps, then the timed ones (wall and CPU seconds) */
    double train_time = 0, last_loss = 0, cpu_start = 0;
    for (int k = 0; k < steps + 2; k++) {
        bench_inputs_fill(&in, k, cfg.bert.vocab_size, 2);
        if (k == 2) cpu_start = cpu_seconds();
        double t0 = bp_now();
        if (model_forward(m, &batch, 1, &err) || model_backward(m, 1.0f, &err) ||
            model_optim_step(m, opt, NULL, NULL, &err))
            bp_die_err(&err);
        if (k >= 2) train_time += bp_now() - t0;
        last_loss = model_loss(m);
    }
    double train_cpu = cpu_seconds() - cpu_start;
    /* full fine-tuning: how much of a step the encoder's backward takes (the backward timed with
     * BERT's part and without it, gradients thrown away), what freezing it at least saves */
    double encoder_backward = 0;
    if (bigru && !frozen) {
        for (int k = 0; k < 3; k++)
            for (int part = 1; part >= 0; part--) {
                if (model_forward(m, &batch, 1, &err)) bp_die_err(&err);
                m->bert_trains = part;
                double t0 = bp_now();
                if (model_backward(m, 1.0f, &err)) bp_die_err(&err);
                encoder_backward += (part ? 1 : -1) * (bp_now() - t0) / 3;
                m->bert_trains = 1;
                model_zero_grad(m);
            }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("impl c model %s batch %d seq %d hidden %d train_seq_s %.2f peak_rss_mb %.0f loss %.4f "
           "train_cpu_s_per_step %.3f", name, B, T, cfg.bert.hidden_size, steps * B / train_time, ru.ru_maxrss / 1024.0,
           last_loss, train_cpu / steps);
    if (bigru && !frozen) printf(" encoder_backward_share %.3f", encoder_backward / (train_time / steps));
    printf("\n");
    bench_inputs_free(&in);
    optim_free(opt);
    model_free(m);
    be->destroy(be);
    return 0;
}
