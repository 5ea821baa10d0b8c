/* test_bert.c — the C BERT (cpu backend) against the PyTorch reference fixtures.
 *
 * tests/fixtures/bert/{cls,qa}.bin come from tests/reference/bert_ref.py (float64 torch with
 * Hugging Face semantics). For each head: eval logits and loss within 1e-4, every parameter's
 * gradient within 1e-3, and every parameter after 5 AdamW steps (warm-up, weight decay,
 * clipping, 2 accumulated micro-batches) within 1e-3. The error of a tensor is
 * max|got - want| / max|want| (relative to the tensor's scale), printed per tensor.
 * Also: dropout is reproducible from (seed, counter), gradients with dropout on match central
 * differences, bad input gives an error, not a crash. Runs on the cpu backend, and on the cuda
 * backend too when the build has one and a GPU answers.
 */
#include "backend/backend.h"
#include "model/bert.h"
#include "backend/device.h"
#ifdef BP_HAVE_CUDA
#include "backend/cuda.h"
#endif
#include "model/optim.h"
#include "tap.h"
#include "fixture_reader.h"
#include "central_diff.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Compare every named tensor of the model state in `flat` with fixture entries PREFIX.name.
 * step_bound > 0: tensors with a structurally zero gradient only need |got - want| <= it. */
static int compare_all(const fixture *f, const bert_model *m, float *flat, const char *prefix,
                       double tol, double step_bound, const char *what) {
    int count = bert_tensor_count(m);
    bp_named_tensor *tensors = calloc((size_t)count, sizeof *tensors);
    if (!tensors) return 0;
    bert_describe_tensors(m, flat, tensors);
    double global = global_grad_scale(f);
    int all_ok = 1;
    for (int i = 0; i < count; i++) {
        char key[200];
        snprintf(key, sizeof key, "%s%s", prefix, tensors[i].name);
        const fx_tensor *t = fx_get(f, key);
        size_t n = tensors[i].nbytes / sizeof(float);
        if (!t || t->count != n) {
            tap_ok(0, "%s %s present with %zu values", what, tensors[i].name, n);
            all_ok = 0;
            continue;
        }
        const float *got = tensors[i].data, *want = t->data;
        if (structurally_zero(f, tensors[i].name, global)) {
            double max_diff = 0;
            for (size_t k = 0; k < n; k++)
                if (!(fabs((double)got[k] - want[k]) <= max_diff)) max_diff = fabs((double)got[k] - want[k]);
            double limit = step_bound > 0 ? step_bound : 1e-6 * global;
            all_ok &= tap_ok(max_diff <= limit, "%s %s (zero by structure: |diff| %.2e <= %.2e)", what,
                             tensors[i].name, max_diff, limit);
            continue;
        }
        double e = scaled_error(got, want, n);
        all_ok &= tap_ok(e <= tol, "%s %s (error %.2e)", what, tensors[i].name, e);
    }
    free(tensors);
    return all_ok;
}

static void config_from_fixture(const fixture *f, bert_config *cfg) {
    const int32_t *ci = fx_i32(f, "config.ints");
    bert_config_default(cfg);
    cfg->vocab_size = ci[0];
    cfg->hidden_size = ci[1];
    cfg->num_hidden_layers = ci[2];
    cfg->num_attention_heads = ci[3];
    cfg->intermediate_size = ci[4];
    cfg->max_position_embeddings = ci[5];
    cfg->type_vocab_size = ci[6];
    cfg->pad_token_id = ci[7];
    cfg->num_labels = ci[8];
    cfg->head = ci[9] ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    cfg->layer_norm_eps = fx_f32(f, "config.floats")[0];
    cfg->hidden_dropout_prob = 0.0f;   /* the comparison runs without dropout */
    cfg->attention_probs_dropout_prob = 0.0f;
}

/* Load the fixture's initial parameters into the model by name. Returns 0 when all found. */
static int load_initial_params(const fixture *f, bert_model *m) {
    int count = bert_tensor_count(m), missing = 0;
    bp_named_tensor *tensors = calloc((size_t)count, sizeof *tensors);
    float *host = malloc(m->num_params * sizeof(float));
    if (!tensors || !host) { free(tensors); free(host); return -1; }
    bert_describe_tensors(m, host, tensors);
    for (int i = 0; i < count; i++) {
        char key[200];
        snprintf(key, sizeof key, "param.%s", tensors[i].name);
        const fx_tensor *t = fx_get(f, key);
        if (!t || t->count * sizeof(float) != tensors[i].nbytes) {
            tap_diag("fixture lacks %s", key);
            missing++;
            continue;
        }
        memcpy(tensors[i].data, t->data, tensors[i].nbytes);
    }
    bp_err err;
    int rc = bert_copy_from_host(m, NULL, BERT_STATE_PARAMS, host, &err);
    free(host);
    free(tensors);
    return missing || rc ? -1 : 0;
}

// ----------------------------------------------------------------------------
// the parity run of one head

static void parity(backend *be, const char *path, const char *label) {
    fixture f;
    if (!tap_ok(fixture_load(path, &f) == 0, "%s: fixture %s loads", label, path)) return;
    bert_config cfg;
    config_from_fixture(&f, &cfg);
    bp_err err = { "" };
    bert_model *m = bert_create(&cfg, be, 3, 16, &err);
    if (!tap_ok(m != NULL, "%s: model created", label)) { tap_diag("%s", err.msg); fixture_free(&f); return; }
    tap_ok(load_initial_params(&f, m) == 0, "%s: every parameter found in the fixture", label);

    // forward (eval) and loss
    bert_batch b0 = fixture_batch(&f, 0, cfg.head == BERT_HEAD_QA);
    int rc = bert_forward(m, &b0, 0, &err);
    if (!tap_ok(rc == 0, "%s: forward", label)) tap_diag("%s", err.msg);
    const fx_tensor *want_logits = fx_get(&f, "logits");
    float *logits = calloc(want_logits->count, sizeof(float));
    long got_n = bert_logits(m, logits, want_logits->count, &err);
    TAP_EQ_INT(got_n, (long)want_logits->count, "%s: logits count", label);
    double e = scaled_error(logits, want_logits->data, want_logits->count);
    tap_ok(e <= 1e-4, "%s: logits (error %.2e)", label, e);
    float want_loss = fx_f32(&f, "loss")[0];
    e = fabs(bert_loss(m) - want_loss) / fabs(want_loss);
    tap_ok(e <= 1e-4, "%s: loss %.6f vs %.6f (error %.2e)", label, bert_loss(m), want_loss, e);

    /* an inference-only model (one layer of state) computes the very same logits */
    bert_model *inf = bert_create_for(&cfg, be, 3, 16, BERT_FOR_INFERENCE, &err);
    float *inf_logits = calloc(want_logits->count, sizeof(float));
    int same = inf && inf_logits && load_initial_params(&f, inf) == 0 && bert_forward(inf, &b0, 0, &err) == 0 &&
               bert_logits(inf, inf_logits, want_logits->count, &err) == (long)want_logits->count &&
               memcmp(inf_logits, logits, want_logits->count * sizeof(float)) == 0 &&
               bert_loss(inf) == bert_loss(m);
    tap_ok(same, "%s: inference-only model gives identical logits and loss", label);
    tap_ok(inf && bert_backward(inf, 1.0f, &err) == -1 && strstr(err.msg, "inference only"),
           "%s: inference-only model refuses the backward: %s", label, err.msg);
    free(inf_logits);
    bert_free(inf);
    free(logits);

    // gradients
    rc = bert_backward(m, 1.0f, &err);
    if (!tap_ok(rc == 0, "%s: backward", label)) tap_diag("%s", err.msg);
    float *host = malloc(m->num_params * sizeof(float));
    bert_copy_to_host(m, NULL, BERT_STATE_GRADS, host, &err);
    compare_all(&f, m, host, "grad.", 1e-3, 0, "gradient");

    // 5 optimizer steps with accumulation over the two micro-batches
    const float *of = fx_f32(&f, "optim.floats");
    const int32_t *oi = fx_i32(&f, "optim.ints");
    optim_config oc;
    optim_config_default(&oc);
    oc.lr = of[0];
    oc.weight_decay = of[1];
    oc.max_grad_norm = of[2];
    oc.beta1 = of[3];
    oc.beta2 = of[4];
    oc.eps = of[5];
    oc.warmup_steps = oi[0];
    oc.total_steps = oi[1];
    int accumulation = oi[2];
    bert_zero_grad(m);
    optim_adamw *opt = bert_optim_create(m, &oc, &err);
    tap_ok(opt != NULL, "%s: optimizer created", label);
    bert_batch b1 = fixture_batch(&f, 1, cfg.head == BERT_HEAD_QA);
    const float *want_norms = fx_f32(&f, "train.grad_norms");
    const float *want_losses = fx_f32(&f, "train.losses");
    double worst_norm = 0, worst_loss = 0, lr_sum = 0;
    for (int step = 0; step < oc.total_steps && opt; step++) {
        double loss = 0;
        for (int k = 0; k < accumulation; k++) {
            bert_batch *b = k % 2 ? &b1 : &b0;
            if (bert_forward(m, b, 1, &err) || bert_backward(m, 1.0f / accumulation, &err)) {
                tap_diag("step %d: %s", step, err.msg);
                break;
            }
            loss += bert_loss(m) / accumulation;
        }
        double norm = 0;
        float lr = 0;
        if (bert_optim_step(m, opt, &norm, &lr, &err) != 0) tap_diag("%s", err.msg);
        lr_sum += lr;
        double en = fabs(norm - want_norms[step]) / want_norms[step];
        double el = fabs(loss - want_losses[step]) / want_losses[step];
        if (en > worst_norm) worst_norm = en;
        if (el > worst_loss) worst_loss = el;
        tap_diag("%s step %d: lr %.5f loss %.6f (ref %.6f) grad norm %.6f (ref %.6f)", label, step + 1, lr,
                 loss, want_losses[step], norm, want_norms[step]);
    }
    tap_ok(worst_norm <= 1e-3, "%s: gradient norms of 5 steps (error %.2e)", label, worst_norm);
    tap_ok(worst_loss <= 1e-3, "%s: losses of 5 steps (error %.2e)", label, worst_loss);
    bert_copy_to_host(m, NULL, BERT_STATE_PARAMS, host, &err);
    /* |AdamW step| <= lr * |m_hat| / sqrt(v_hat) <= lr * (1 - beta1) / sqrt(1 - beta2) per step */
    double step_bound = lr_sum * (1 - oc.beta1) / sqrt(1 - oc.beta2) * 2;
    compare_all(&f, m, host, "step5.", 1e-3, step_bound, "after 5 steps");
    free(host);
    optim_free(opt);
    bert_free(m);
    fixture_free(&f);
}

// ----------------------------------------------------------------------------
// behaviour without a reference

/* A small model's config: BERT defaults with these sizes. */
static void small_config(bert_config *cfg, int vocab, int hidden, int layers, int heads, int intermediate,
                         int positions) {
    bert_config_default(cfg);
    cfg->vocab_size = vocab;
    cfg->hidden_size = hidden;
    cfg->num_hidden_layers = layers;
    cfg->num_attention_heads = heads;
    cfg->intermediate_size = intermediate;
    cfg->max_position_embeddings = positions;
}

static void dropout_and_errors(backend *be) {
    bert_config cfg;
    small_config(&cfg, 40, 16, 1, 2, 32, 8);
    cfg.hidden_dropout_prob = 0.3f;
    cfg.attention_probs_dropout_prob = 0.3f;
    bp_err err = { "" };
    bert_model *m = bert_create(&cfg, be, 2, 8, &err);
    if (!tap_ok(m != NULL, "small model created")) return;
    tap_ok(bert_init_weights(m, 7, 0, &err) == 0, "fresh weights");
    int32_t ids[16], types[16] = { 0 }, mask[16], labels[2] = { 1, 0 };
    for (int i = 0; i < 16; i++) { ids[i] = 1 + (i * 7) % 39; mask[i] = i % 8 < 6; }
    bert_batch b = { .B = 2, .T = 8, .input_ids = ids, .token_type_ids = types, .attention_mask = mask,
                     .labels = labels };
    float first[4], second[4], again[4], eval1[4], eval2[4];
    m->dropout_seed = 99;
    m->dropout_counter = 0;
    bert_forward(m, &b, 1, &err);
    bert_logits(m, first, 4, &err);
    bert_forward(m, &b, 1, &err);
    bert_logits(m, second, 4, &err);
    m->dropout_counter = 0;
    bert_forward(m, &b, 1, &err);
    bert_logits(m, again, 4, &err);
    tap_ok(memcmp(first, again, sizeof first) == 0, "dropout masks repeat for the same seed and counter");
    tap_ok(memcmp(first, second, sizeof first) != 0, "dropout masks change with the counter");
    bert_forward(m, &b, 0, &err);
    bert_logits(m, eval1, 4, &err);
    bert_forward(m, &b, 0, &err);
    bert_logits(m, eval2, 4, &err);
    tap_ok(memcmp(eval1, eval2, sizeof eval1) == 0, "eval mode is deterministic");

    /* the keep rate of the counter-based mask is 1 - p */
    size_t kept = 0, n = 1000000;
    for (size_t i = 0; i < n; i++) kept += backend_dropout_keep(12345, i, 0.1f);
    TAP_NEAR((double)kept / n, 0.9, 0.002, "dropout keeps 90%% at p = 0.1 (%zu of %zu)", kept, n);

    /* the backend's dropout op draws exactly backend_dropout_keep's masks (the cpu backend tests
     * an integer threshold instead of the float compare): p near the ends, and p equal to one
     * element's draw (kept: u >= p) and just above it (dropped), where an off-by-one would show */
    size_t nd = 100003;
    float *in = malloc(nd * sizeof(float)), *out = malloc(nd * sizeof(float));
    float *d_in = be->alloc(be, nd * sizeof(float), &err), *d_out = be->alloc(be, nd * sizeof(float), &err);
    float ps[] = { 0.1f, 0.5f, 1e-7f, 0.3333333f, 0.99999994f, 1.0f, 0, 0 };
    ps[6] = (float)backend_dropout_bits(777 + 6, 5) / 16777216.0f;
    ps[7] = nextafterf((float)backend_dropout_bits(777 + 7, 5) / 16777216.0f, 2.0f);
    int masks_same = in && out && d_in && d_out;
    for (size_t i = 0; masks_same && i < nd; i++) in[i] = 1.0f + (float)(i % 7);
    if (masks_same) be->upload(be, d_in, in, nd * sizeof(float));
    for (size_t k = 0; masks_same && k < sizeof ps / sizeof ps[0]; k++) {
        be->dropout(be, d_out, d_in, nd, ps[k], 777 + k);
        be->download(be, out, d_out, nd * sizeof(float));
        float keep_scale = 1.0f / (1.0f - ps[k]);
        for (size_t i = 0; masks_same && i < nd; i++)
            masks_same = backend_dropout_keep(777 + k, i, ps[k]) ? out[i] == in[i] * keep_scale : out[i] == 0.0f;
    }
    tap_ok(masks_same && backend_dropout_keep(777 + 6, 5, ps[6]) && !backend_dropout_keep(777 + 7, 5, ps[7]),
           "the dropout op keeps exactly the elements backend_dropout_keep keeps (p = 1e-7 .. 1, p at a draw)");
    free(in);
    free(out);
    if (d_in) be->free(be, d_in);
    if (d_out) be->free(be, d_out);

    /* training with dropout still gives finite gradients */
    bert_forward(m, &b, 1, &err);
    tap_ok(bert_backward(m, 1.0f, &err) == 0 && isfinite(bert_loss(m)), "backward with dropout");

    ids[3] = 40;
    tap_ok(bert_forward(m, &b, 0, &err) == -1 && strstr(err.msg, "input_ids[0][3] = 40"),
           "token id outside the vocabulary is an error: %s", err.msg);
    ids[3] = 1;
    b.T = 9;
    tap_ok(bert_forward(m, &b, 0, &err) == -1 && strstr(err.msg, "batch shape"),
           "batch longer than planned is an error: %s", err.msg);
    b.T = 8;
    labels[1] = 5;
    tap_ok(bert_forward(m, &b, 0, &err) == -1 && strstr(err.msg, "label 5"),
           "label outside num_labels is an error: %s", err.msg);
    b.labels = NULL;
    tap_ok(bert_forward(m, &b, 0, &err) == 0 && isnan(bert_loss(m)), "no targets: logits, no loss");
    tap_ok(bert_backward(m, 1.0f, &err) == -1, "backward without targets is an error: %s", err.msg);

    TAP_EQ_INT(bert_tensor_count(m), 5 + 16 + 4, "tensor count of a 1-layer classifier");
    bert_free(m);

    cfg.hidden_size = 15;
    tap_ok(bert_create(&cfg, be, 2, 8, &err) == NULL && strstr(err.msg, "num_attention_heads"),
           "hidden size not divisible by heads is an error: %s", err.msg);
}

/* With dropout on, the backward must apply the same masks as the forward. Masks depend only
 * on (seed, counter), so resetting the counter makes the loss a fixed function of the
 * parameters, and central differences check the analytic gradient, dropout included. */
typedef struct bert_loss_ctx {
    bert_model *m;
    const bert_batch *b;
} bert_loss_ctx;

/* The loss at params, dropout masks fixed (the counter reset). */
static double bert_loss_at(void *ctx, const float *params) {
    bert_loss_ctx *c = ctx;
    bp_err err;
    bert_copy_from_host(c->m, NULL, BERT_STATE_PARAMS, params, &err);
    c->m->dropout_counter = 41;
    bert_forward(c->m, c->b, 1, &err);
    return bert_loss(c->m);
}

static void dropout_gradients(backend *be, bert_head head) {
    const char *label = head == BERT_HEAD_QA ? "QA" : "classification";
    bert_config cfg;
    small_config(&cfg, 40, 16, 2, 2, 32, 8);
    cfg.hidden_dropout_prob = 0.2f;
    cfg.attention_probs_dropout_prob = 0.2f;
    cfg.initializer_range = 0.3f;
    cfg.head = head;
    cfg.num_labels = 3;
    bp_err err = { "" };
    bert_model *m = bert_create(&cfg, be, 2, 8, &err);
    float *params = m ? malloc(m->num_params * sizeof(float)) : NULL;
    float *grads = m ? malloc(m->num_params * sizeof(float)) : NULL;
    if (!tap_ok(m && params && grads && bert_init_weights(m, 11, 0, &err) == 0,
                "%s: dropout gradient model", label)) {
        free(params); free(grads); bert_free(m);
        return;
    }
    int32_t ids[16], types[16], mask[16], labels[2] = { 2, 0 }, starts[2] = { 1, 3 }, ends[2] = { 4, 5 };
    for (int i = 0; i < 16; i++) {
        ids[i] = 1 + (i * 11) % 39;
        types[i] = i % 8 >= 4;
        mask[i] = i % 8 < (i < 8 ? 8 : 6);
    }
    bert_batch b = { .B = 2, .T = 8, .input_ids = ids, .token_type_ids = types, .attention_mask = mask };
    if (head == BERT_HEAD_QA) { b.start_positions = starts; b.end_positions = ends; }
    else b.labels = labels;
    m->dropout_seed = 5;
    m->dropout_counter = 41;
    bert_forward(m, &b, 1, &err);
    bert_backward(m, 1.0f, &err);
    bert_copy_to_host(m, NULL, BERT_STATE_GRADS, grads, &err);
    bert_copy_to_host(m, NULL, BERT_STATE_PARAMS, params, &err);
    /* every 97th parameter, skipping the embedding rows no token uses */
    bert_loss_ctx ctx = { m, &b };
    central_diff r = central_differences(label, params, grads, m->num_params, 97,
                                         (size_t)cfg.vocab_size * cfg.hidden_size, 1e-2f, bert_loss_at, &ctx);
    bert_copy_from_host(m, NULL, BERT_STATE_PARAMS, params, &err);
    tap_ok(r.bad == 0 && r.checked >= 40, "%s: %d gradients with dropout match central differences (worst %.2f of the limit)",
           label, r.checked, r.worst);
    free(params);
    free(grads);
    bert_free(m);
}

/* Exact resume needs bit-identical steps: the same run twice (dropout on, shapes large enough
 * that every op splits across threads) must give the same parameters to the last bit, however
 * the pool's blocks happened to be shared out. */
static void determinism(backend *be) {
    bert_config cfg;
    small_config(&cfg, 2000, 64, 2, 4, 256, 64);
    bp_err err = { "" };
    enum { B = 4, T = 32 };
    int32_t ids[B * T], types[B * T], mask[B * T], labels[B] = { 0, 1, 1, 0 };
    for (int i = 0; i < B * T; i++) {
        ids[i] = 1 + (i * 37) % 1999;
        types[i] = i % T >= T / 2;
        mask[i] = i % T < T - (i / T) * 3;
    }
    bert_batch b = { .B = B, .T = T, .input_ids = ids, .token_type_ids = types, .attention_mask = mask,
                     .labels = labels };
    optim_config oc;
    optim_config_default(&oc);
    oc.lr = 1e-3f;
    oc.weight_decay = 0.01f;
    oc.max_grad_norm = 0.5f;
    float *result[2] = { NULL, NULL };
    size_t n = 0;
    for (int run = 0; run < 2; run++) {
        bert_model *m = bert_create(&cfg, be, B, T, &err);
        optim_adamw *opt = m ? bert_optim_create(m, &oc, &err) : NULL;
        if (m && opt && bert_init_weights(m, 17, 0, &err) == 0) {
            m->dropout_seed = 3;
            for (int step = 0; step < 3; step++)
                if (bert_forward(m, &b, 1, &err) || bert_backward(m, 1.0f, &err) ||
                    bert_optim_step(m, opt, NULL, NULL, &err))
                    break;
            n = m->num_params;
            result[run] = malloc(n * sizeof(float));
            if (result[run]) bert_copy_to_host(m, NULL, BERT_STATE_PARAMS, result[run], &err);
        }
        optim_free(opt);
        bert_free(m);
    }
    tap_ok(result[0] && result[1] && memcmp(result[0], result[1], n * sizeof(float)) == 0,
           "two identical 3-step runs give bit-identical parameters (%zu)", n);
    free(result[0]);
    free(result[1]);
}

/* num_labels == 1 is regression (HF): loss = mean (logit - y)^2, so the classifier bias gets
 * 2 mean(logit - y); both follow from the logits the model returns. */
static void regression(backend *be) {
    bert_config cfg;
    small_config(&cfg, 30, 8, 1, 2, 16, 6);
    cfg.num_labels = 1;
    bp_err err = { "" };
    bert_model *m = bert_create(&cfg, be, 3, 6, &err);
    if (!tap_ok(m != NULL && bert_init_weights(m, 3, 0, &err) == 0, "regression model created")) {
        bert_free(m);
        return;
    }
    int32_t ids[18], types[18] = { 0 }, mask[18];
    for (int i = 0; i < 18; i++) { ids[i] = 1 + i % 29; mask[i] = i % 6 < 5; }
    float targets[3] = { 0.5f, -1.0f, 2.0f }, logits[3];
    bert_batch b = { .B = 3, .T = 6, .input_ids = ids, .token_type_ids = types, .attention_mask = mask,
                     .label_values = targets };
    int rc = bert_forward(m, &b, 0, &err);
    tap_ok(rc == 0 && bert_logits(m, logits, 3, &err) == 3, "regression forward");
    double want_loss = 0, want_dbias = 0;
    for (int i = 0; i < 3; i++) {
        want_loss += (logits[i] - targets[i]) * (logits[i] - targets[i]) / 3.0;
        want_dbias += 2.0 * (logits[i] - targets[i]) / 3.0;
    }
    TAP_NEAR(bert_loss(m), want_loss, 1e-5 * want_loss, "regression loss is the mean squared error");
    bert_backward(m, 1.0f, &err);
    float dbias;
    m->be->download(m->be, &dbias, m->grads.headb, sizeof dbias);
    TAP_NEAR(dbias, want_dbias, 1e-5 * fabs(want_dbias), "regression classifier.bias gradient");
    int32_t int_labels[3] = { 1, 0, 2 };
    b.label_values = NULL;
    b.labels = int_labels;
    want_loss = 0;
    for (int i = 0; i < 3; i++) want_loss += (logits[i] - int_labels[i]) * (logits[i] - int_labels[i]) / 3.0;
    rc = bert_forward(m, &b, 0, &err);
    TAP_NEAR(rc == 0 ? bert_loss(m) : NAN, want_loss, 1e-5 * want_loss, "regression with integer labels");
    bert_free(m);
}

static void schedule(void) {
    optim_config c;
    optim_config_default(&c);
    c.lr = 1.0f;
    c.warmup_steps = 2;
    c.total_steps = 5;
    float want[] = { 0.0f, 0.5f, 1.0f, 2.0f / 3.0f, 1.0f / 3.0f, 0.0f, 0.0f };
    int ok = 1;
    for (int s = 0; s < 7; s++) ok &= fabsf(optim_schedule_lr(&c, s) - want[s]) < 1e-7f;
    tap_ok(ok, "linear warm-up / decay schedule as get_linear_schedule_with_warmup");
}

/* Everything above on one backend; its name prefixes the fixture checks. */
static void run_backend(backend *be) {
    char label[64];
    snprintf(label, sizeof label, "%s classification", be->name);
    parity(be, "tests/fixtures/bert/cls.bin", label);
    snprintf(label, sizeof label, "%s question answering", be->name);
    parity(be, "tests/fixtures/bert/qa.bin", label);
    dropout_and_errors(be);
    dropout_gradients(be, BERT_HEAD_CLASSIFICATION);
    dropout_gradients(be, BERT_HEAD_QA);
    regression(be);
    determinism(be);
}

int main(void) {
    bp_err err;
    backend *be = backend_cpu_create(2, &err);
    if (!tap_ok(be != NULL, "cpu backend")) return tap_done();
    run_backend(be);
    be->destroy(be);
#ifdef BP_HAVE_CUDA
    /* the CUDA backend answers to the same fixtures when a GPU is present */
    char why[256] = "";
    if (backend_cuda_available(why, sizeof why)) {
        be = backend_cuda_create(&err);
        if (tap_ok(be != NULL, "cuda backend")) {
            run_backend(be);
            be->destroy(be);
        }
    } else {
        tap_diag("cuda backend not run: %s", why);
    }
#endif
    schedule();
    return tap_done();
}
