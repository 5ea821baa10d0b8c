/* test_variants.c — the model variants (model/model.h) against the PyTorch reference fixtures.
 *
 * tests/fixtures/variants/NAME.bin come from tests/reference/variants_ref.py (float64 torch, the
 * notebooks' modules: nn.Sequential MLP, nn.GRU / nn.LSTM over packed sequences,
 * nn.TransformerEncoderLayer, torch.optim SGD / Adam / AdamW). For each variant: eval logits
 * and loss within 1e-4, the gradient of every trainable parameter within 1e-3, every parameter
 * after 5 optimizer steps (warm-up, clipping, 2 accumulated micro-batches) within 1e-3; frozen
 * (and unused) tensors get no gradient and do not move. Error = max |got - want| / max |want|
 * per tensor, one TAP line each. Also: an inference-only model gives the same logits; with
 * dropout on, gradients match central differences (the masks of forward and backward agree);
 * parameter counts; bad input and bad configurations give errors.
 */
#include "backend/backend.h"
#include "backend/fault.h"
#include "model/model.h"
#include "tap.h"
#include "fixture_reader.h"
#include "central_diff.h"
#include "small_variant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "tests/fixtures/variants/"

typedef struct fixture_run {
    model_config cfg;
    optim_config oc;
    int accumulation;
} fixture_run;

static void read_variant(const fixture *f, fixture_run *r) {
    const int32_t *vi = fx_i32(f, "variant.ints");
    const float *vf = fx_f32(f, "variant.floats");
    const int32_t *fz = fx_i32(f, "variant.freeze");
    model_config *c = &r->cfg;
    model_config_default(c);
    c->body = (model_body)vi[0];
    c->head = (model_head)vi[1];
    c->loss = (model_criterion)vi[2];
    c->bert.head = vi[3] ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    c->bert.num_labels = vi[3] ? 2 : vi[4];
    c->bert.vocab_size = vi[5];
    c->bert.hidden_size = vi[6];
    c->bert.num_hidden_layers = vi[7];
    c->bert.num_attention_heads = vi[8];
    c->bert.intermediate_size = vi[9];
    c->bert.max_position_embeddings = vi[10];
    c->bert.type_vocab_size = vi[11];
    c->bert.pad_token_id = vi[12];
    c->mlp_hidden_layers = vi[13];
    c->mlp_hidden[0] = vi[14];
    c->mlp_hidden[1] = vi[15];
    c->mlp_activation = (head_activation)vi[16];
    c->rnn_layers = vi[17];
    c->rnn_hidden = vi[18];
    c->rnn_bidirectional = vi[19];
    c->bert.layer_norm_eps = vf[0];
    c->bert.hidden_dropout_prob = c->bert.attention_probs_dropout_prob = 0.0f;   /* compared without dropout */
    c->rnn_dropout = 0.0f;
    c->head_dropout = 0.0f;
    char freeze[64] = "";
    for (int i = 0; fz[i] && i < 63; i++) freeze[i] = (char)fz[i], freeze[i + 1] = '\0';
    bp_err err;
    if (model_parse_freeze(freeze, &c->freeze, &err)) tap_diag("%s", err.msg);
    optim_config_default(&r->oc);
    r->oc.kind = (optim_kind)vi[20];
    r->oc.nesterov = vi[21];
    r->oc.warmup_steps = vi[22];
    r->oc.total_steps = vi[23];
    r->accumulation = vi[24];
    r->oc.lr = vf[1];
    r->oc.weight_decay = vf[2];
    r->oc.max_grad_norm = vf[3];
    r->oc.beta1 = vf[4];
    r->oc.beta2 = vf[5];
    r->oc.eps = vf[6];
    r->oc.momentum = vf[7];
    r->oc.dampening = vf[8];
}

/* Host layout of the model's tensors, with their names. */
typedef struct host_state {
    float *flat;
    bp_named_tensor *t;
    int n;
} host_state;

static int host_state_make(const model *m, host_state *h) {
    h->n = m->params.n;
    h->flat = calloc(m->num_params, sizeof(float));
    h->t = calloc((size_t)h->n, sizeof *h->t);
    if (!h->flat || !h->t) return -1;
    model_describe_tensors(m, h->flat, h->t);
    return 0;
}
static void host_state_free(host_state *h) { free(h->flat); free(h->t); }

/* Fill the model from PREFIX.name tensors; returns how many of the model's were missing. */
static int load_fixture_params(const fixture *f, model *m, const char *prefix) {
    host_state h;
    if (host_state_make(m, &h)) return -1;
    int missing = 0;
    for (int i = 0; i < h.n; i++) {
        char key[200];
        snprintf(key, sizeof key, "%s%s", prefix, h.t[i].name);
        const fx_tensor *t = fx_get(f, key);
        if (!t || t->count * sizeof(float) != h.t[i].nbytes) {
            tap_diag("fixture lacks %s", key);
            missing++;
            continue;
        }
        memcpy(h.t[i].data, t->data, h.t[i].nbytes);
    }
    bp_err err;
    if (model_copy_from_host(m, NULL, MODEL_STATE_PARAMS, 0, h.flat, &err)) missing++;
    host_state_free(&h);
    return missing;
}

/* Fixture tensors under prefix that the model does not have (a name torch uses that we miss). */
static int unknown_fixture_params(const fixture *f, const model *m, const char *prefix) {
    int unknown = 0;
    size_t n = strlen(prefix);
    for (int i = 0; i < f->n; i++) {
        if (strncmp(f->t[i].name, prefix, n) != 0) continue;
        int found = 0;
        for (int k = 0; k < m->params.n && !found; k++) found = strcmp(m->params.items[k].name, f->t[i].name + n) == 0;
        if (!found) {
            tap_diag("the model has no tensor %s", f->t[i].name + n);
            unknown++;
        }
    }
    return unknown;
}

/* Every tensor of `state` against PREFIX.name; tensors the fixture lacks must equal `absent`
 * exactly (zero gradients, unmoved weights). */
static void compare_state(const fixture *f, const model *m, const host_state *state, const float *absent,
                          const char *prefix, double tol, double step_bound, const char *label, const char *what) {
    double global = global_grad_scale(f);
    for (int i = 0; i < state->n; i++) {
        const bp_named_tensor *t = &state->t[i];
        size_t n = t->nbytes / sizeof(float);
        const float *got = t->data;
        char key[200];
        snprintf(key, sizeof key, "%s%s", prefix, t->name);
        const fx_tensor *want = fx_get(f, key);
        char gkey[200];
        snprintf(gkey, sizeof gkey, "grad.%s", t->name);
        if (!fx_get(f, gkey)) {   /* frozen or unused: nothing may have touched it */
            const float *base = absent ? absent + (got - state->flat) : NULL;
            int same = 1;
            for (size_t k = 0; k < n && same; k++) same = base ? got[k] == base[k] : got[k] == 0.0f;
            tap_ok(same, "%s: %s %s untouched (frozen or unused)", label, what, t->name);
            continue;
        }
        if (!want || want->count != n) {
            tap_ok(0, "%s: %s %s present with %zu values", label, what, t->name, n);
            continue;
        }
        /* Elements whose gradient is zero by structure (key biases: softmax ignores a shift of
         * a row; in QA the qa_outputs bias) hold rounding noise on both sides, which the
         * optimizers amplify: they only need to stay within the step bound. The rest are
         * compared at the tensor's scale. */
        const float *ref_grad = fx_get(f, gkey)->data, *wv = want->data;
        double zero_below = 1e-9 * global, limit = step_bound > 0 ? step_bound : 1e-6 * global;
        double max_want = 0, max_diff = 0, max_noise = 0;
        size_t noise = 0;
        for (size_t k = 0; k < n; k++) {
            double d = fabs((double)got[k] - wv[k]);
            if (fabs(wv[k]) > max_want) max_want = fabs(wv[k]);
            if (fabs(ref_grad[k]) < zero_below) {
                noise++;
                if (!(d <= max_noise)) max_noise = d;
            } else if (!(d <= max_diff)) {
                max_diff = d;
            }
        }
        if (noise == n) {
            tap_ok(max_noise <= limit, "%s: %s %s (zero by structure: |diff| %.2e <= %.2e)", label, what, t->name,
                   max_noise, limit);
            continue;
        }
        double e = max_want > 0 ? max_diff / max_want : max_diff;
        if (noise) {
            tap_ok(e <= tol && max_noise <= limit, "%s: %s %s (error %.2e; %zu elements zero by structure within %.2e)",
                   label, what, t->name, e, noise, limit);
            continue;
        }
        tap_ok(e <= tol, "%s: %s %s (error %.2e)", label, what, t->name, e);
    }
}

static void parity(backend *be, const char *name) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s.bin", name);
    fixture f;
    if (!tap_ok(fixture_load(path, &f) == 0, "%s: fixture %s loads", name, path)) return;
    fixture_run r;
    read_variant(&f, &r);
    int qa = r.cfg.bert.head == BERT_HEAD_QA;
    bp_err err = { "" };
    model *m = model_create(&r.cfg, be, 3, 16, MODEL_FOR_TRAINING, &err);
    if (!tap_ok(m != NULL, "%s: model created", name)) {
        tap_diag("%s", err.msg);
        fixture_free(&f);
        return;
    }
    tap_ok(load_fixture_params(&f, m, "param.") == 0 && unknown_fixture_params(&f, m, "param.") == 0,
           "%s: the model's tensors are the torch module's, name for name (%d)", name, m->params.n);
    host_state initial;
    host_state_make(m, &initial);
    model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, initial.flat, &err);

    // forward (eval) and loss
    bert_batch b0 = fixture_batch(&f, 0, qa), b1 = fixture_batch(&f, 1, qa);
    if (!tap_ok(model_forward(m, &b0, 0, &err) == 0, "%s: forward", name)) tap_diag("%s", err.msg);
    const fx_tensor *want_logits = fx_get(&f, "logits");
    float *logits = calloc(want_logits->count, sizeof(float)), *again = calloc(want_logits->count, sizeof(float));
    TAP_EQ_INT(model_logits(m, logits, want_logits->count, &err), (long)want_logits->count, "%s: logits count", name);
    double e = scaled_error(logits, want_logits->data, want_logits->count);
    tap_ok(e <= 1e-4, "%s: logits (error %.2e)", name, e);
    float want_loss = fx_f32(&f, "loss")[0];
    e = fabs(model_loss(m) - want_loss) / fabs(want_loss);
    tap_ok(e <= 1e-4, "%s: loss %.6f vs %.6f (error %.2e)", name, model_loss(m), want_loss, e);

    /* a model made for inference computes the same logits */
    model *inf = model_create(&r.cfg, be, 3, 16, MODEL_FOR_INFERENCE, &err);
    int same = inf && load_fixture_params(&f, inf, "param.") == 0 && model_forward(inf, &b0, 0, &err) == 0 &&
               model_logits(inf, again, want_logits->count, &err) == (long)want_logits->count &&
               memcmp(again, logits, want_logits->count * sizeof(float)) == 0;
    tap_ok(same, "%s: inference-only model gives identical logits", name);
    tap_ok(inf && model_backward(inf, 1.0f, &err) == -1 && strstr(err.msg, "inference only"),
           "%s: inference-only model refuses the backward", name);
    model_free(inf);
    free(logits);
    free(again);

    // gradients
    if (!tap_ok(model_backward(m, 1.0f, &err) == 0, "%s: backward", name)) tap_diag("%s", err.msg);
    host_state grads;
    host_state_make(m, &grads);
    model_copy_to_host(m, NULL, MODEL_STATE_GRADS, 0, grads.flat, &err);
    compare_state(&f, m, &grads, NULL, "grad.", 1e-3, 0, name, "gradient");
    host_state_free(&grads);

    // 5 optimizer steps, 2 micro-batches each
    model_zero_grad(m);
    optimizer *opt = model_optim_create(m, &r.oc, &err);
    if (!tap_ok(opt != NULL, "%s: %s optimizer over %zu of %zu parameters", name, optim_kind_name(r.oc.kind),
                m->num_optimized, m->num_params))
        tap_diag("%s", err.msg);
    const float *want_norms = fx_f32(&f, "train.grad_norms"), *want_losses = fx_f32(&f, "train.losses");
    double worst_norm = 0, worst_loss = 0, lr_sum = 0;
    for (int step = 0; opt && step < r.oc.total_steps; step++) {
        double loss = 0;
        for (int k = 0; k < r.accumulation; k++) {
            if (model_forward(m, k % 2 ? &b1 : &b0, 1, &err) || model_backward(m, 1.0f / r.accumulation, &err)) {
                tap_diag("step %d: %s", step, err.msg);
                break;
            }
            loss += model_loss(m) / r.accumulation;
        }
        double norm = 0;
        float lr = 0;
        if (model_optim_step(m, opt, &norm, &lr, &err)) tap_diag("%s", err.msg);
        lr_sum += lr;
        double en = fabs(norm - want_norms[step]) / want_norms[step], el = fabs(loss - want_losses[step]) / want_losses[step];
        if (en > worst_norm) worst_norm = en;
        if (el > worst_loss) worst_loss = el;
    }
    tap_ok(worst_norm <= 1e-3, "%s: gradient norms of 5 steps (error %.2e)", name, worst_norm);
    tap_ok(worst_loss <= 1e-3, "%s: losses of 5 steps (error %.2e)", name, worst_loss);
    host_state after;
    host_state_make(m, &after);
    model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, after.flat, &err);
    /* noise-sized gradients (zero by structure): Adam steps of up to ~lr, SGD ones of lr x noise */
    double bound = r.oc.kind == OPTIM_SGD ? 1e-5 : lr_sum * (1 - r.oc.beta1) / sqrt(1 - r.oc.beta2) * 2;
    compare_state(&f, m, &after, initial.flat, "step5.", 1e-3, bound, name, "after 5 steps");
    host_state_free(&after);
    host_state_free(&initial);
    optim_free(opt);
    model_free(m);
    fixture_free(&f);
}

// ----------------------------------------------------------------------------
// behaviour without a reference

/* With dropout on, the backward must apply the forward's masks. They depend only on (seed,
 * counter), so resetting the counter makes the loss a fixed function of the parameters, and
 * central differences check the analytic gradient, every dropout site of the variant included
 * (BERT's, between rnn layers, before the head's Linear, inside the encoder layer). */
typedef struct model_loss_ctx {
    model *m;
    const bert_batch *b;
} model_loss_ctx;

/* The loss at params, dropout masks fixed (the counter reset). */
static double model_loss_at(void *ctx, const float *params) {
    model_loss_ctx *c = ctx;
    bp_err err;
    model_copy_from_host(c->m, NULL, MODEL_STATE_PARAMS, 0, params, &err);
    c->m->dropout_counter = 41;
    model_forward(c->m, c->b, 1, &err);
    return model_loss(c->m);
}

static void dropout_gradients(backend *be, const char *label, model_config cfg, int32_t *labels, int32_t *starts,
                              int32_t *ends) {
    cfg.bert.hidden_dropout_prob = cfg.bert.attention_probs_dropout_prob = 0.2f;
    cfg.rnn_dropout = 0.3f;
    cfg.head_dropout = 0.3f;
    bp_err err = { "" };
    model *m = model_create(&cfg, be, 2, 8, MODEL_FOR_TRAINING, &err);
    float *params = m ? malloc(m->num_params * sizeof(float)) : NULL, *grads = m ? malloc(m->num_params * sizeof(float)) : NULL;
    if (!tap_ok(m && params && grads && model_init_weights(m, 11, &err) == 0, "%s: model with dropout", label)) {
        tap_diag("%s", err.msg);
        free(params); free(grads); model_free(m);
        return;
    }
    int32_t ids[16], types[16], mask[16];
    bert_batch b;
    small_batch(ids, types, mask, &b);
    b.labels = labels;
    b.start_positions = starts;
    b.end_positions = ends;
    m->dropout_seed = 5;
    m->dropout_counter = 41;
    int rc = model_forward(m, &b, 1, &err) || model_backward(m, 1.0f, &err) ||
             model_copy_to_host(m, NULL, MODEL_STATE_GRADS, 0, grads, &err) ||
             model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, params, &err);
    if (rc) tap_diag("%s", err.msg);
    /* small steps: a ReLU kink within +-eps of a pre-activation moves a numeric gradient */
    const float eps = cfg.body == MODEL_BODY_TRANSFORMER ? 1e-3f : 1e-2f;
    model_loss_ctx ctx = { m, &b };
    /* zero gradients: embedding rows no token uses, frozen or unused tensors */
    central_diff r = { 0, 0, 0.0 };
    if (!rc) r = central_differences(label, params, grads, m->num_params, 7, m->num_params, eps, model_loss_at, &ctx);
    /* a ReLU kink inside +-eps moves a numeric gradient: one such point is allowed */
    tap_ok(!rc && r.bad <= 1 && r.checked >= 40, "%s: %d gradients with dropout match central differences "
           "(%d off; worst %.2f of the limit)", label, r.checked, r.bad, r.worst);
    free(params);
    free(grads);
    model_free(m);
}

static void dropout_variants(backend *be) {
    int32_t labels[2] = { 2, 0 }, binary[2] = { 1, 0 }, starts[2] = { 1, 3 }, ends[2] = { 4, 9 };
    model_config c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_GRU, 0, 3);
    c.bert.num_labels = 1;
    c.loss = MODEL_LOSS_BCE;
    dropout_gradients(be, "gru head, 2 bidirectional layers, bce", c, binary, NULL, NULL);
    c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_LSTM, 0, 3);
    c.rnn_bidirectional = 0;
    dropout_gradients(be, "lstm head, 2 layers", c, labels, NULL, NULL);
    c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_MLP, 0, 3);
    c.mlp_activation = HEAD_GELU;
    dropout_gradients(be, "mlp head, gelu", c, labels, NULL, NULL);
    c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_GRU, 0, 3);
    model_parse_freeze("layers:1-1", &c.freeze, &(bp_err){ "" });
    dropout_gradients(be, "gru head over BERT with layer 1 frozen", c, labels, NULL, NULL);
    c = small_variant(MODEL_BODY_TRANSFORMER, MODEL_HEAD_LINEAR, 1, 3);
    dropout_gradients(be, "transformer baseline", c, NULL, starts, ends);
    c = small_variant(MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, 1, 3);
    dropout_gradients(be, "lstm baseline", c, NULL, starts, ends);
}

/* Torch's numbers of parameters for small shapes, counted by hand from the modules. */
static void counts(backend *be) {
    bp_err err = { "" };
    model_config c = small_variant(MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, 1, 3);
    model *m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    /* Embedding 40x16, LSTM 4*16*(16+16+2), Linear 16*2+2 */
    TAP_EQ_INT(m ? m->num_params : 0, 40 * 16 + 4 * 16 * 34 + 34, "lstm baseline: parameters");
    model_free(m);
    c = small_variant(MODEL_BODY_TRANSFORMER, MODEL_HEAD_LINEAR, 1, 3);
    model_parse_freeze("embeddings", &c.freeze, &err);
    m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    /* in_proj 3*16*16+48, out_proj 16*16+16, linear1 24*16+24, linear2 16*24+16, 2 norms, qa 34 */
    size_t body = 3 * 16 * 16 + 48 + 16 * 16 + 16 + 24 * 16 + 24 + 16 * 24 + 16 + 4 * 16 + 34;
    TAP_EQ_INT(m ? m->num_params : 0, 40 * 16 + body, "transformer baseline: parameters");
    TAP_EQ_INT(m ? m->num_trainable : 0, body, "transformer baseline, embeddings frozen: trainable");
    model_free(m);
    c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_GRU, 0, 3);
    model_parse_freeze("bert", &c.freeze, &err);
    m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    /* GRU layer 0: 2 x 3*6*(16+6+2); layer 1: 2 x 3*6*(12+6+2); out 3*12+3 */
    size_t head = 2 * 18 * 24 + 2 * 18 * 20 + 39;
    TAP_EQ_INT(m ? m->num_trainable : 0, head, "gru head over a frozen BERT: trainable = the head");
    tap_ok(m && m->bert->inference, "a wholly frozen BERT runs in inference mode (no gradients, one layer of state)");
    model_free(m);
}

static void errors(backend *be) {
    bp_err err = { "" };
    model_config c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_GRU, 0, 3);
    model *m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    int32_t ids[16], types[16], mask[16], labels[2] = { 1, 0 };
    bert_batch b;
    small_batch(ids, types, mask, &b);
    b.labels = labels;
    tap_ok(m && model_init_weights(m, 3, &err) == 0 && model_forward(m, &b, 1, &err) == 0, "gru head forward");
    mask[10] = 0;
    tap_ok(m && model_forward(m, &b, 0, &err) == -1 && strstr(err.msg, "row 1 has a 1 after a 0"),
           "a mask with a hole is refused by the rnn head: %s", err.msg);
    for (int i = 0; i < 8; i++) mask[i] = 0;
    tap_ok(m && model_forward(m, &b, 0, &err) == -1 && strstr(err.msg, "row 0 is all 0"),
           "an empty sequence is refused: %s", err.msg);
    model_free(m);
    c = small_variant(MODEL_BODY_BERT, MODEL_HEAD_LINEAR, 0, 3);
    c.bert.num_labels = 1;
    c.loss = MODEL_LOSS_BCE;
    m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    small_batch(ids, types, mask, &b);
    labels[0] = 2;
    b.labels = labels;
    tap_ok(m && model_forward(m, &b, 0, &err) == -1 && strstr(err.msg, "BCE takes 0 or 1"), "bce label 2: %s", err.msg);
    model_free(m);

    struct { model_body body; model_head head; int qa, labels; model_criterion loss; const char *freeze, *want; } bad[] = {
        { MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, 0, 2, MODEL_LOSS_AUTO, "", "QA baseline" },
        { MODEL_BODY_TRANSFORMER, MODEL_HEAD_GRU, 1, 2, MODEL_LOSS_AUTO, "", "own qa_outputs" },
        { MODEL_BODY_BERT, MODEL_HEAD_MLP, 1, 2, MODEL_LOSS_AUTO, "", "for classification" },
        { MODEL_BODY_BERT, MODEL_HEAD_LINEAR, 0, 3, MODEL_LOSS_BCE, "", "one logit" },
        { MODEL_BODY_BERT, MODEL_HEAD_LINEAR, 0, 1, MODEL_LOSS_CE, "", "2 or more labels" },
        { MODEL_BODY_BERT, MODEL_HEAD_LINEAR, 0, 2, MODEL_LOSS_AUTO, "layers:1-2", "layers 0..1" },
        { MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, 1, 2, MODEL_LOSS_AUTO, "encoder", "embeddings only" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = small_variant(bad[i].body, bad[i].head, bad[i].qa, 3);
        c.bert.num_labels = bad[i].labels;
        c.loss = bad[i].loss;
        model_parse_freeze(bad[i].freeze, &c.freeze, &err);
        err.msg[0] = '\0';
        tap_ok(model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err) == NULL && strstr(err.msg, bad[i].want),
               "configuration refused: %s", err.msg);
    }
    model_freeze f = { 0 };
    tap_ok(model_parse_freeze("layers:3-1", &f, &err) == -1 && strstr(err.msg, "A <= B"), "--freeze layers:3-1: %s", err.msg);
    tap_ok(model_parse_freeze("pooler", &f, &err) == -1, "--freeze pooler: %s", err.msg);
    memset(&f, 0, sizeof f);
    char spelled[64];
    tap_ok(model_parse_freeze("embeddings,layers:0-3", &f, &err) == 0 && (model_format_freeze(&f, spelled, sizeof spelled), 1) &&
           strcmp(spelled, "embeddings,layers:0-3") == 0, "--freeze embeddings,layers:0-3 reads back: %s", spelled);
}

#ifdef BP_FAULT_INJECTION
/* A failing op of the new layers stops the pass with the backend's error, as the BERT ops do. */
static void faults(void) {
    static const struct { const char *op; model_body body; model_head head; optim_kind opt; } cases[] = {
        { "rnn_forward", MODEL_BODY_BERT, MODEL_HEAD_GRU, OPTIM_ADAM },
        { "rnn_backward", MODEL_BODY_BERT, MODEL_HEAD_LSTM, OPTIM_ADAM },
        { "relu_forward", MODEL_BODY_BERT, MODEL_HEAD_MLP, OPTIM_ADAM },
        { "relu_backward", MODEL_BODY_TRANSFORMER, MODEL_HEAD_LINEAR, OPTIM_ADAMW },
        { "embedding_lookup_forward", MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, OPTIM_ADAMW },
        { "embedding_lookup_backward", MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, OPTIM_ADAMW },
        { "matmul_backward_input", MODEL_BODY_BERT, MODEL_HEAD_GRU, OPTIM_ADAM },
        { "bce_with_logits", MODEL_BODY_BERT, MODEL_HEAD_GRU, OPTIM_ADAM },
        { "sgd", MODEL_BODY_BERT, MODEL_HEAD_MLP, OPTIM_SGD },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bp_err err = { "" };
        backend *be = backend_cpu_create(1, &err);
        char spec[64];
        snprintf(spec, sizeof spec, "backend:%s:1", cases[i].op);
        model_config c = small_variant(cases[i].body, cases[i].head, cases[i].body != MODEL_BODY_BERT, 3);
        if (strcmp(cases[i].op, "matmul_backward_input") == 0) model_parse_freeze("layers:0-0", &c.freeze, &err);
        int bce = strcmp(cases[i].op, "bce_with_logits") == 0;
        if (bce) { c.bert.num_labels = 1; c.loss = MODEL_LOSS_BCE; }
        model *m = be ? model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err) : NULL;
        optim_config oc;
        optim_config_default(&oc);
        oc.kind = cases[i].opt;
        optimizer *opt = m ? model_optim_create(m, &oc, &err) : NULL;
        int32_t ids[16], types[16], mask[16], labels[2] = { 1, 0 }, starts[2] = { 1, 2 }, ends[2] = { 3, 4 };
        bert_batch b;
        small_batch(ids, types, mask, &b);
        if (c.bert.head == BERT_HEAD_QA) { b.start_positions = starts; b.end_positions = ends; }
        else b.labels = labels;
        int rc = !opt || model_init_weights(m, 1, &err) || backend_fault_arm(be, spec, &err);
        if (!rc) rc = model_forward(m, &b, 1, &err) || model_backward(m, 1.0f, &err) ||
                      model_optim_step(m, opt, NULL, NULL, &err);
        char want[96];
        snprintf(want, sizeof want, "injected fault in %s call 1", cases[i].op);
        tap_ok(rc && strstr(err.msg, want), "a failing %s stops the pass with the backend's error: %s", cases[i].op,
               err.msg);
        optim_free(opt);
        model_free(m);
        if (be) be->destroy(be);
    }
}
#endif

int main(void) {
    bp_err err;
    backend *be = backend_cpu_create(2, &err);
    if (!tap_ok(be != NULL, "cpu backend")) return tap_done();
    static const char *const names[] = { "mlp", "mlp_tanh", "gru", "gru_frozen", "lstm_head", "lstm_qa", "transformer_qa" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) parity(be, names[i]);
    dropout_variants(be);
    counts(be);
    errors(be);
    be->destroy(be);
#ifdef BP_FAULT_INJECTION
    faults();
#endif
    return tap_done();
}
