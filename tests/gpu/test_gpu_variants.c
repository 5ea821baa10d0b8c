/* test_gpu_variants.c — the CUDA backend against the CPU backend on what the model variants
 * added (backend.h: sgd, Adam's L2 decay, matmul_backward_input, embedding_lookup, relu, BCE,
 * the GRU and LSTM recurrences), then whole variant models (model/model.h: gru, lstm and mlp
 * heads over BERT, the lstm and transformer baselines) forward, backward and 5 optimizer steps.
 * Built and run by `make test-gpu` (tests/gpu/gpu.mk) beside test_gpu_parity.c, with its limits:
 * 1e-4 in fp32 and for every op without a product, 1e-3 in tf32, 2e-2 in bf16 (the recurrences
 * chain one product per step); model gradients per tensor in fp32.
 *
 * With -DPARITY_CPU_STANDIN the "GPU" side is a second CPU backend (another thread count): how
 * the file's own plumbing was tried without a GPU (83 checks pass). The CPU side itself is held
 * to PyTorch by tests/unit/test_variants.c.
 * Prints TAP; with no usable GPU it prints one skipped check and exits 0.
 * Must never need /work/shared or files outside tests/.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/log.h"
#include "model/model.h"
#include "tap.h"
#ifdef BP_HAVE_CUDA
#include "backend/cuda.h"
#endif

#if defined(BP_HAVE_CUDA) || defined(PARITY_CPU_STANDIN)
#include "parity.h"

static void optimizer_ops(backend *cpu, backend *gpu) {
    const char *prec = "fp32";
    int rows = 23, len = 31;
    size_t n = (size_t)rows * len;
    uint8_t flags[23];
    for (int i = 0; i < rows; i++) flags[i] = i % 3 != 1;
    float *hp = random_floats(n, -1, 1), *hg = random_floats(n, -1, 1), *hm = random_floats(n, -0.1f, 0.1f);
    float *hv = random_floats(n, 0, 0.01f);
    pair p = pair_make(cpu, gpu, hp, n * 4), g = pair_make(cpu, gpu, hg, n * 4), m = pair_make(cpu, gpu, hm, n * 4);
    pair v = pair_make(cpu, gpu, hv, n * 4), f = pair_make(cpu, gpu, flags, sizeof flags);
    backend_adamw_args a = { .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .decay = 1.0f, .step_size = 1e-3f,
                             .bias_correction2_sqrt = 0.0316f, .grad_scale = 0.7f, .l2 = 0.01f };
    for (int step = 0; step < 3; step++)
        BOTH(be->adamw(be, F(&p, gpu_side), F(&g, gpu_side), F(&m, gpu_side), F(&v, gpu_side), (size_t)rows,
                       (size_t)len, (const uint8_t *)(gpu_side ? f.g : f.c), &a));
    check(&p, 1e-6, "adam with L2 decay: parameters after 3 steps (row-sparse)", prec);
    check(&m, 1e-6, "adam with L2 decay: first moments", prec);
    check(&v, 1e-6, "adam with L2 decay: second moments", prec);
    backend_sgd_args s = { .lr = 0.05f, .weight_decay = 0.01f, .momentum = 0.9f, .dampening = 0.1f, .first = 1,
                           .grad_scale = 0.8f };
    for (int step = 0; step < 3; step++) {
        BOTH(be->sgd(be, F(&p, gpu_side), F(&g, gpu_side), F(&m, gpu_side), (size_t)rows, (size_t)len,
                     (const uint8_t *)(gpu_side ? f.g : f.c), &s));
        s.first = 0;
    }
    check(&p, 1e-6, "sgd momentum + dampening: parameters after 3 steps (row-sparse)", prec);
    check(&m, 1e-6, "sgd momentum buffer", prec);
    s.nesterov = 1;
    s.dampening = 0;
    BOTH(be->sgd(be, F(&p, gpu_side), F(&g, gpu_side), F(&m, gpu_side), n, 1, NULL, &s));
    check(&p, 1e-6, "sgd nesterov step (flat)", prec);
    gpu_ok(gpu, "optimizer ops");
    pair *all[] = { &p, &g, &m, &v, &f };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pair_free(all[i]);
    free(hp); free(hg); free(hm); free(hv);
}

static void elementwise_ops(backend *cpu, backend *gpu) {
    const char *prec = "fp32";
    size_t n = 3001;
    float *hx = random_floats(n, -3, 3), *hd = random_floats(n, -1, 1);
    pair x = pair_make(cpu, gpu, hx, n * 4), d = pair_make(cpu, gpu, hd, n * 4), o = pair_make(cpu, gpu, NULL, n * 4);
    pair dx = pair_make(cpu, gpu, NULL, n * 4);
    BOTH(be->relu_forward(be, F(&o, gpu_side), F(&x, gpu_side), n));
    check(&o, 0, "relu_forward", prec);
    BOTH(be->relu_backward(be, F(&dx, gpu_side), F(&o, gpu_side), F(&d, gpu_side), n));
    check(&dx, 0, "relu_backward", prec);
    /* BCE on 37 logits against targets in [0, 1] */
    int rows = 37;
    float *ht = random_floats((size_t)rows, 0, 1), zero = 0.5f;
    pair t = pair_make(cpu, gpu, ht, (size_t)rows * 4), loss = pair_make(cpu, gpu, &zero, 4);
    BOTH(be->bce_with_logits(be, F(&loss, gpu_side), F(&dx, gpu_side), F(&x, gpu_side), F(&t, gpu_side), rows,
                             1.0f / rows, 0.5f / rows));
    check(&loss, 1e-6, "bce_with_logits loss (added to 0.5)", prec);
    check(&dx, 1e-6, "bce_with_logits dlogits", prec);
    /* plain embeddings: 28 tokens of a 50-row table, repeats, no padding index */
    int N = 28, C = 40, V = 50;
    int32_t ids[28];
    for (int i = 0; i < N; i++) ids[i] = (i * 7) % 13 + (i % 5 == 4 ? 30 : 0);
    float *hw = random_floats((size_t)V * C, -1, 1), *hdo = random_floats((size_t)N * C, -1, 1);
    pair id = pair_make(cpu, gpu, ids, sizeof ids), w = pair_make(cpu, gpu, hw, (size_t)V * C * 4);
    pair eo = pair_make(cpu, gpu, NULL, (size_t)N * C * 4), ed = pair_make(cpu, gpu, hdo, (size_t)N * C * 4);
    pair touched = pair_make(cpu, gpu, NULL, (size_t)V);
    BOTH(be->embedding_lookup_forward(be, F(&eo, gpu_side), I(&id, gpu_side), F(&w, gpu_side), N, C));
    check(&eo, 0, "embedding_lookup_forward", prec);
    BOTH(be->embedding_lookup_backward(be, F(&w, gpu_side), (uint8_t *)(gpu_side ? touched.g : touched.c),
                                       F(&ed, gpu_side), I(&id, gpu_side), N, C, -1));
    check(&w, 1e-5, "embedding_lookup_backward rows (into a nonzero table)", prec);
    uint8_t gf[50];
    gpu->download(gpu, gf, touched.g, sizeof gf);
    tap_ok(memcmp(gf, touched.c, sizeof gf) == 0, "embedding_lookup_backward touched flags as the cpu's");
    gpu_ok(gpu, "element-wise ops");
    pair *all[] = { &x, &d, &o, &dx, &t, &loss, &id, &w, &eo, &ed, &touched };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pair_free(all[i]);
    free(hx); free(hd); free(ht); free(hw); free(hdo);
}

static void product_ops(backend *cpu, backend *gpu, double limit, const char *prec) {
    int N = 37, IC = 72, OC = 53;
    float *hd = random_floats((size_t)N * OC, -1, 1), *hw = random_floats((size_t)OC * IC, -0.5f, 0.5f);
    float *hdin = random_floats((size_t)N * IC, -1, 1);
    pair d = pair_make(cpu, gpu, hd, (size_t)N * OC * 4), w = pair_make(cpu, gpu, hw, (size_t)OC * IC * 4);
    pair din = pair_make(cpu, gpu, hdin, (size_t)N * IC * 4);
    BOTH(be->matmul_backward_input(be, F(&din, gpu_side), F(&d, gpu_side), F(&w, gpu_side), N, IC, OC, 1));
    check(&din, limit, "matmul_backward_input (accumulated)", prec);
    pair *all[] = { &d, &w, &din };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pair_free(all[i]);
    free(hd); free(hw); free(hdin);

    /* one direction of a GRU / LSTM over 5 sequences of lengths 9 7 7 3 1 (T 9, H 12), both
     * directions writing into one [N, 2H] output as rnn.c does */
    int B = 5, T = 9, H = 12;
    int32_t order_lengths[10] = { 0, 1, 2, 3, 4, 9, 7, 7, 3, 1 };
    int sorted[5] = { 9, 7, 7, 3, 1 };
    size_t Nt = (size_t)B * T;
    for (int kind = BACKEND_GRU; kind <= BACKEND_LSTM; kind++)
        for (int reverse = 0; reverse <= 1; reverse++) {
            int G = kind == BACKEND_LSTM ? 4 : 3, GH = G * H;
            float *hx = random_floats(Nt * 2 * GH, -1, 1), *hwh = random_floats((size_t)GH * H, -0.3f, 0.3f);
            float *hb = random_floats((size_t)GH, -0.3f, 0.3f), *hdo = random_floats(Nt * 2 * H, -1, 1);
            float *hdl = random_floats((size_t)B * 2 * H, -1, 1);
            pair ol = pair_make(cpu, gpu, order_lengths, sizeof order_lengths);
            pair xp = pair_make(cpu, gpu, hx, Nt * 2 * GH * 4), whh = pair_make(cpu, gpu, hwh, (size_t)GH * H * 4);
            pair bhh = pair_make(cpu, gpu, hb, (size_t)GH * 4), out = pair_make(cpu, gpu, NULL, Nt * 2 * H * 4);
            pair hl = pair_make(cpu, gpu, NULL, (size_t)B * 2 * H * 4), gates = pair_make(cpu, gpu, NULL, Nt * 4 * H * 4);
            pair hprev = pair_make(cpu, gpu, NULL, Nt * H * 4), cell = pair_make(cpu, gpu, NULL, Nt * H * 4);
            pair scratch = pair_make(cpu, gpu, NULL, (size_t)B * (G + 2) * H * 4);
            pair dout = pair_make(cpu, gpu, hdo, Nt * 2 * H * 4), dl = pair_make(cpu, gpu, hdl, (size_t)B * 2 * H * 4);
            pair dx = pair_make(cpu, gpu, NULL, Nt * 2 * GH * 4), dhh = pair_make(cpu, gpu, NULL, Nt * GH * 4);
            char what[128];
            const char *name = kind == BACKEND_LSTM ? "lstm" : "gru", *dir = reverse ? "reverse" : "forward";
            backend_rnn_args args[2];
            for (int side = 0; side < 2; side++) {
                args[side] = (backend_rnn_args){
                    .kind = kind, .B = B, .T = T, .H = H, .reverse = reverse, .order = I(&ol, side),
                    .lengths = I(&ol, side) + B, .sorted_lengths = sorted,
                    .xproj = F(&xp, side) + reverse * GH, .xproj_stride = 2 * GH, .w_hh = F(&whh, side),
                    .b_hh = F(&bhh, side), .out = F(&out, side) + reverse * H, .out_stride = 2 * H,
                    .h_last = F(&hl, side) + reverse * H, .h_last_stride = 2 * H, .gates = F(&gates, side),
                    .hprev = F(&hprev, side), .cell = F(&cell, side),
                    .dout = F(&dout, side) + reverse * H, .dout_stride = 2 * H,
                    .dh_last = F(&dl, side) + reverse * H, .dh_last_stride = 2 * H,
                    .dxproj = F(&dx, side) + reverse * GH, .dxproj_stride = 2 * GH, .dhh = F(&dhh, side),
                    .scratch = F(&scratch, side) };
            }
            BOTH(be->rnn_forward(be, &args[gpu_side]));
            snprintf(what, sizeof what, "%s %s rnn_forward outputs", name, dir);
            check(&out, limit, what, prec);
            snprintf(what, sizeof what, "%s %s rnn_forward final states", name, dir);
            check(&hl, limit, what, prec);
            snprintf(what, sizeof what, "%s %s rnn_forward saved gates", name, dir);
            check(&gates, limit, what, prec);
            snprintf(what, sizeof what, "%s %s rnn_forward saved states", name, dir);
            check(&hprev, limit, what, prec);
            if (kind == BACKEND_LSTM) {
                snprintf(what, sizeof what, "%s %s rnn_forward cell states", name, dir);
                check(&cell, limit, what, prec);
            }
            BOTH(be->rnn_backward(be, &args[gpu_side]));
            snprintf(what, sizeof what, "%s %s rnn_backward dxproj", name, dir);
            check(&dx, limit, what, prec);
            snprintf(what, sizeof what, "%s %s rnn_backward dhh", name, dir);
            check(&dhh, limit, what, prec);
            gpu_ok(gpu, "the recurrences");
            pair *all2[] = { &ol, &xp, &whh, &bhh, &out, &hl, &gates, &hprev, &cell, &scratch, &dout, &dl, &dx, &dhh };
            for (size_t i = 0; i < sizeof all2 / sizeof *all2; i++) pair_free(all2[i]);
            free(hx); free(hwh); free(hb); free(hdo); free(hdl);
        }
}

// ----------------------------------------------------------------------------
// whole variants

typedef struct variant_case {
    const char *name;
    model_body body;
    model_head head;
    model_criterion loss;
    int qa, labels;
    const char *freeze;
    optim_kind opt;
} variant_case;

static model_config case_config(const variant_case *v) {
    model_config c;
    model_config_default(&c);
    c.body = v->body;
    c.head = v->head;
    c.loss = v->loss;
    c.bert.vocab_size = 97;
    c.bert.hidden_size = 32;
    c.bert.num_hidden_layers = v->body == MODEL_BODY_BERT ? 2 : 1;
    c.bert.num_attention_heads = 4;
    c.bert.intermediate_size = 48;
    c.bert.max_position_embeddings = 32;
    c.bert.head = v->qa ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    c.bert.num_labels = v->qa ? 2 : v->labels;
    c.rnn_hidden = 16;
    c.mlp_hidden[0] = 24;
    bp_err err;
    model_parse_freeze(v->freeze, &c.freeze, &err);
    return c;
}

/* Per tensor: max |gpu - cpu| / max |cpu|, or against the largest gradient anywhere for tensors
 * whose gradient is zero by structure (key biases, qa_outputs.bias). */
static void compare_tensors(const model *m, const float *fc, const float *fg, double limit, int gradients,
                            double bound, const char *what) {
    double global = 0;
    for (size_t i = 0; i < m->num_params; i++) if (fabs(fc[i]) > global) global = fabs(fc[i]);
    double worst = 0;
    const char *worst_name = "-";
    for (int t = 0; t < m->params.n; t++) {
        const model_param *p = &m->params.items[t];
        const float *c = fc + p->flat_offset, *g = fg + p->flat_offset;
        double scale = 0, diff = 0;
        for (size_t k = 0; k < p->numel; k++) {
            double d = fabs((double)g[k] - c[k]);
            if (!(d <= diff)) diff = d;
            if (fabs(c[k]) > scale) scale = fabs(c[k]);
        }
        double rel = gradients ? (scale < 1e-6 * global ? diff / global : scale > 0 ? diff / scale : diff) : diff;
        if (!(rel <= worst)) { worst = rel; worst_name = p->name; }
    }
    double allowed = gradients ? limit : bound;
    tap_ok(worst <= allowed, "%s: worst tensor %s at %.2e <= %.2e", what, worst_name, worst, allowed);
}

static void variant_parity(backend *cpu, backend *gpu, const variant_case *v) {
    bp_err err = { "" };
    model_config c = case_config(v);
    int T = 24;
    model *mc = model_create(&c, cpu, 4, T, MODEL_FOR_TRAINING, &err);
    model *mg = mc ? model_create(&c, gpu, 4, T, MODEL_FOR_TRAINING, &err) : NULL;
    if (!tap_ok(mc && mg, "%s: models created", v->name)) { tap_diag("  %s", err.msg); model_free(mc); return; }
    model_init_weights(mc, 5, &err);
    model_init_weights(mg, 5, &err);
    mc->dropout_seed = mg->dropout_seed = 11;
    float *fc = malloc(mc->num_params * sizeof(float)), *fg = malloc(mc->num_params * sizeof(float));
    if (!fc || !fg) exit(2);
    host_batch hb;
    make_batch(&hb, 0, T, c.bert.vocab_size, v->qa, v->labels);
    int rc = model_forward(mc, &hb.b, 1, &err) | model_forward(mg, &hb.b, 1, &err);
    rc |= model_backward(mc, 1.0f, &err) | model_backward(mg, 1.0f, &err);
    if (!tap_ok(rc == 0, "%s: forward and backward with dropout run", v->name)) tap_diag("  %s", err.msg);
    gpu_ok(gpu, "a variant's forward and backward");
    double lerr = fabs((double)model_loss(mg) - model_loss(mc)) / fabs((double)model_loss(mc));
    tap_ok(lerr <= 1e-4, "%s: training loss %.6f vs cpu %.6f (relative error %.2e)", v->name, model_loss(mg),
           model_loss(mc), lerr);
    model_copy_to_host(mc, NULL, MODEL_STATE_GRADS, 0, fc, &err);
    model_copy_to_host(mg, NULL, MODEL_STATE_GRADS, 0, fg, &err);
    char what[128];
    snprintf(what, sizeof what, "%s: gradients (each tensor against its own scale)", v->name);
    compare_tensors(mc, fc, fg, 1e-4, 1, 0, what);

    model_zero_grad(mc);
    model_zero_grad(mg);
    optim_config oc;
    optim_config_default(&oc);
    oc.kind = v->opt;
    oc.lr = v->opt == OPTIM_SGD ? 1e-2f : 1e-3f;
    oc.momentum = v->opt == OPTIM_SGD ? 0.9f : 0.0f;
    oc.weight_decay = 0.01f;
    oc.total_steps = 5;
    optimizer *oc_cpu = model_optim_create(mc, &oc, &err), *oc_gpu = model_optim_create(mg, &oc, &err);
    double worst = 0, lr_sum = 0;
    rc = !oc_cpu || !oc_gpu;
    for (int step = 0; step < 5 && rc == 0; step++) {
        make_batch(&hb, step + 1, T, c.bert.vocab_size, v->qa, v->labels);
        rc |= model_forward(mc, &hb.b, 1, &err) | model_forward(mg, &hb.b, 1, &err);
        rc |= model_backward(mc, 1.0f, &err) | model_backward(mg, 1.0f, &err);
        float lr = 0;
        rc |= model_optim_step(mc, oc_cpu, NULL, &lr, &err) | model_optim_step(mg, oc_gpu, NULL, NULL, &err);
        lr_sum += lr;
        double e = fabs((double)model_loss(mg) - model_loss(mc)) / fabs((double)model_loss(mc));
        if (!(e <= worst)) worst = e;
    }
    if (!tap_ok(rc == 0, "%s: 5 %s steps run", v->name, optim_kind_name(v->opt))) tap_diag("  %s", err.msg);
    tap_ok(worst <= 1e-4, "%s: 5 steps, worst loss relative error %.2e", v->name, worst);
    model_copy_to_host(mc, NULL, MODEL_STATE_PARAMS, 0, fc, &err);
    model_copy_to_host(mg, NULL, MODEL_STATE_PARAMS, 0, fg, &err);
    snprintf(what, sizeof what, "%s: weights after 5 steps (within the optimizer's reach)", v->name);
    compare_tensors(mc, fc, fg, 0, 0, 2 * 3 * lr_sum, what);
    optim_free(oc_cpu);
    optim_free(oc_gpu);
    model_free(mc);
    model_free(mg);
    free(fc);
    free(fg);
}

static void variants(backend *cpu, backend *gpu) {
    static const variant_case cases[] = {
        { "gru head (2 bidirectional layers, bce)", MODEL_BODY_BERT, MODEL_HEAD_GRU, MODEL_LOSS_BCE, 0, 1, "", OPTIM_ADAM },
        { "gru head over a frozen BERT", MODEL_BODY_BERT, MODEL_HEAD_GRU, MODEL_LOSS_AUTO, 0, 2, "bert", OPTIM_ADAM },
        { "lstm head, layer 0 and embeddings frozen", MODEL_BODY_BERT, MODEL_HEAD_LSTM, MODEL_LOSS_AUTO, 0, 3,
          "embeddings,layers:0-0", OPTIM_ADAMW },
        { "mlp head", MODEL_BODY_BERT, MODEL_HEAD_MLP, MODEL_LOSS_AUTO, 0, 4, "", OPTIM_SGD },
        { "lstm baseline", MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, MODEL_LOSS_AUTO, 1, 2, "", OPTIM_SGD },
        { "transformer baseline", MODEL_BODY_TRANSFORMER, MODEL_HEAD_LINEAR, MODEL_LOSS_AUTO, 1, 2, "", OPTIM_ADAMW },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) variant_parity(cpu, gpu, &cases[i]);
}

int main(void) {
    bp_err err;
    backend *cpu = backend_cpu_create(2, &err), *gpu = NULL;
#ifdef PARITY_CPU_STANDIN
    gpu = backend_cpu_create(1, &err);
#else
    char why[512] = "";
    if (!backend_cuda_available(why, sizeof why)) {
        tap_ok(1, "cuda backend parity of the variants # skip no GPU: %s", why);
        if (cpu) cpu->destroy(cpu);
        return tap_done();
    }
    gpu = cpu ? backend_cuda_create(&err) : NULL;
#endif
    if (!tap_ok(cpu && gpu, "cpu and cuda backends created")) {
        tap_diag("  %s", err.msg);
        if (cpu) cpu->destroy(cpu);
        return tap_done();
    }
    optimizer_ops(cpu, gpu);
    elementwise_ops(cpu, gpu);
    product_ops(cpu, gpu, 1e-4, "fp32");
    variants(cpu, gpu);
#ifndef PARITY_CPU_STANDIN
    static const struct { backend_cuda_precision p; const char *name; double limit; } lower[] = {
        { BACKEND_CUDA_TF32, "tf32", 1e-3 }, { BACKEND_CUDA_BF16, "bf16", 2e-2 },
    };
    for (size_t i = 0; i < sizeof lower / sizeof *lower; i++) {
        if (backend_cuda_set_precision(gpu, lower[i].p, &err) != 0) { tap_ok(0, "%s", err.msg); continue; }
        product_ops(cpu, gpu, lower[i].limit, lower[i].name);
    }
#endif
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    return tap_done();
}

#else

int main(void) {
    tap_ok(1, "cuda backend parity of the variants # skip no GPU: this build has no CUDA backend (built without nvcc)");
    return tap_done();
}

#endif
