/* bench_gpu.c — training and eval throughput of the C BERT on the CUDA backend, for
 * scripts/bench-gpu (its PyTorch peer is tests/reference/bench_gpu_torch.py, same shapes and
 * the same batch formula), plus the measured matrix-product ceiling of the GPU in the same
 * precision, so the model's rate can be read as a share of what the GPU's GEMMs reach.
 *
 *   build/bench/bench_gpu --model base|mini --head cls|qa --seq T --batch B
 *                         --precision fp32|tf32|bf16 [--steps K]
 *
 * Prints one line of "key value" pairs:
 *   impl c model base precision bf16 head qa batch 32 seq 384 train_seq_s X eval_seq_s Y
 *   model_tflops_train F gemm_tflops G share S loss L device NAME_WITH_UNDERSCORES
 * model_tflops_train counts the products of a full BERT step (6 x tokens x linear parameters
 * + 12 x L x B x T^2 x C for attention, forward and backward), the same count for both
 * implementations, whatever shortcuts either takes. Exits 1 with one line when this build or
 * machine has no usable GPU. Must never be linked into a stage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/bert.h"
#include "base/log.h"
#include "model/optim.h"
#ifdef BP_HAVE_CUDA
#include "backend/cuda.h"
#endif

#ifdef BP_HAVE_CUDA
static const char *arg_value(int argc, char **argv, const char *name, const char *fallback) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return fallback;
}

/* One batch per step, written here and in bench_gpu_torch.py alike: lengths T - (b*5 + k) mod
 * (T/4), [CLS] ... [SEP], the second half of each sequence type 1, answers inside it. */
typedef struct batch_arrays { int32_t *ids, *types, *mask, *labels, *starts, *ends; } batch_arrays;

static void fill_batch(batch_arrays *a, int k, int B, int T, int V) {
    memset(a->ids, 0, (size_t)B * T * sizeof(int32_t));
    memset(a->types, 0, (size_t)B * T * sizeof(int32_t));
    memset(a->mask, 0, (size_t)B * T * sizeof(int32_t));
    for (int b = 0; b < B; b++) {
        int n = T - (b * 5 + k) % (T / 4);
        int32_t *ids = a->ids + (size_t)b * T;
        for (int t = 0; t < n; t++) {
            ids[t] = (int32_t)(((long)b * 7919 + (long)t * 613 + (long)k * 37) % (V - 2000) + 2000);
            a->types[(size_t)b * T + t] = t >= n / 2;
            a->mask[(size_t)b * T + t] = 1;
        }
        ids[0] = 101;
        ids[n - 1] = 102;
        a->labels[b] = (b + k) % 2;
        a->starts[b] = n / 2 + (b + k) % (n / 4 + 1);
        a->ends[b] = a->starts[b] + b % 3 < n ? a->starts[b] + b % 3 : n - 1;
    }
}

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    const char *model = arg_value(argc, argv, "--model", "base"), *head = arg_value(argc, argv, "--head", "cls");
    const char *precision_name = arg_value(argc, argv, "--precision", "fp32");
    int qa = strcmp(head, "qa") == 0, base = strcmp(model, "base") == 0;
    if (!qa && strcmp(head, "cls") != 0) bp_die(2, NULL, "--head must be cls or qa, not %s", head);
    if (!base && strcmp(model, "mini") != 0) bp_die(2, NULL, "--model must be base or mini, not %s", model);
    int T = atoi(arg_value(argc, argv, "--seq", qa ? "384" : "128"));
    int B = atoi(arg_value(argc, argv, "--batch", "32"));
    int steps = atoi(arg_value(argc, argv, "--steps", "20"));
    if (B <= 0 || T < 8 || T > 512 || steps <= 0) bp_die(2, NULL, "--batch, --steps positive, --seq 8..512");
    bp_err err;
    backend_cuda_precision precision;
    if (backend_cuda_parse_precision(precision_name, &precision, &err) != 0) bp_die_err(&err);

    char why[512];
    if (!backend_cuda_available(why, sizeof why)) bp_die(1, NULL, "no usable GPU: %s", why);
    backend *be = backend_cuda_create(&err);
    if (!be || backend_cuda_set_precision(be, precision, &err) != 0) bp_die_err(&err);

    bert_config cfg;
    bert_config_default(&cfg);   /* BERT-Base */
    if (!base) {                 /* BERT-Mini: L4 H256 A4 I1024 */
        cfg.num_hidden_layers = 4;
        cfg.hidden_size = 256;
        cfg.num_attention_heads = 4;
        cfg.intermediate_size = 1024;
    }
    cfg.head = qa ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    cfg.num_labels = 2;
    bert_model *m = bert_create(&cfg, be, B, T, &err);
    if (!m || bert_init_weights(m, 1, 0, &err) != 0) bp_die_err(&err);
    optim_config oc;
    optim_config_default(&oc);
    /* the peer's schedule: lr 5e-5 after 2 warm-up steps, decaying to 0 at step 1000 */
    oc.lr = 5e-5f; oc.weight_decay = 0.01f; oc.warmup_steps = 2; oc.total_steps = 1000;
    optim_adamw *opt = bert_optim_create(m, &oc, &err);
    if (!opt) bp_die_err(&err);

    /* every batch made before timing: the clock sees upload and compute only */
    int nb = steps + 2;
    size_t N = (size_t)B * T;
    batch_arrays *arrays = calloc((size_t)nb, sizeof *arrays);
    bert_batch *batches = calloc((size_t)nb, sizeof *batches);
    if (!arrays || !batches) bp_die(1, NULL, "out of memory");
    for (int k = 0; k < nb; k++) {
        batch_arrays *a = &arrays[k];
        a->ids = malloc(N * 4); a->types = malloc(N * 4); a->mask = malloc(N * 4);
        a->labels = malloc((size_t)B * 4); a->starts = malloc((size_t)B * 4); a->ends = malloc((size_t)B * 4);
        if (!a->ids || !a->types || !a->mask || !a->labels || !a->starts || !a->ends) bp_die(1, NULL, "out of memory");
        fill_batch(a, k, B, T, cfg.vocab_size);
        batches[k] = (bert_batch){ .B = B, .T = T, .input_ids = a->ids, .token_type_ids = a->types,
                                   .attention_mask = a->mask };
        if (qa) { batches[k].start_positions = a->starts; batches[k].end_positions = a->ends; }
        else batches[k].labels = a->labels;
    }

    /* 2 warm-up steps (cuBLAS picks its kernels, scratch buffers grow), then the timed ones;
     * the check op waits for the queue, so the clock stops when the GPU has finished */
    double train_time = 0, eval_time = 0, t0 = 0;
    for (int k = 0; k < nb; k++) {
        if (k == 2) {
            if (be->check(be, &err) != 0) bp_die_err(&err);
            t0 = bp_now();
        }
        if (bert_forward(m, &batches[k], 1, &err) || bert_backward(m, 1.0f, &err) ||
            bert_optim_step(m, opt, NULL, NULL, &err)) {
            bp_err cuda_err;   /* a non-finite norm after a CUDA failure: the failure is the news */
            if (be->check(be, &cuda_err) != 0) err = cuda_err;
            bp_die(1, NULL, "training step %d: %s", k, err.msg);
        }
    }
    if (be->check(be, &err) != 0) bp_die_err(&err);
    train_time = bp_now() - t0;
    float loss = bert_loss(m);
    for (int k = 0; k < nb; k++) {
        if (k == 2) t0 = bp_now();
        if (bert_forward(m, &batches[k], 0, &err) != 0) bp_die_err(&err);
    }
    if (be->check(be, &err) != 0) bp_die_err(&err);
    eval_time = bp_now() - t0;

    /* the ceiling: a large square product in the same precision */
    double gemm = backend_cuda_gemm_tflops(be, 8192, 8192, 8192, 10, &err);
    if (gemm <= 0) bp_die_err(&err);
    double C = cfg.hidden_size, I = cfg.intermediate_size, L = cfg.num_hidden_layers;
    double linear_params = L * (4 * C * C + 2 * C * I);
    double flops_per_step = 6.0 * N * linear_params + 12.0 * L * B * (double)T * T * C;
    double model_tflops = flops_per_step * steps / train_time / 1e12;
    char device[256];
    snprintf(device, sizeof device, "%s", backend_cuda_device_name(be));
    for (char *c = device; *c; c++) if (*c == ' ') *c = '_';
    printf("impl c model %s precision %s head %s batch %d seq %d train_seq_s %.2f eval_seq_s %.2f "
           "model_tflops_train %.2f gemm_tflops %.2f share %.3f loss %.4f device %s\n",
           model, precision_name, head, B, T, steps * B / train_time, steps * B / eval_time, model_tflops, gemm,
           model_tflops / gemm, loss, device);

    for (int k = 0; k < nb; k++) {
        batch_arrays *a = &arrays[k];
        free(a->ids); free(a->types); free(a->mask); free(a->labels); free(a->starts); free(a->ends);
    }
    free(arrays);
    free(batches);
    optim_free(opt);
    bert_free(m);
    be->destroy(be);
    return 0;
}

#else

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    bp_die(1, NULL, "this build has no CUDA backend (built without nvcc): nothing to benchmark");
}

#endif
