/* test_backend_faults.c — a backend failure reaches the caller of the model.
 *
 * A fault is injected into one op on the cpu backend (backend/fault.h), the way a CUDA error is
 * recorded on a GPU; bert_forward, bert_logits, bert_backward, bert_optim_step, bert_init_weights
 * and the state copies must then return -1 with the backend's message instead of NaN results.
 * Also: the failure is sticky, an armed fault that has not fired changes no bit of a training
 * step, the cpu backend's own check has nothing to report, and malformed BERTPIPE_FAULT specs
 * are refused. Needs the test build (BP_FAULT_INJECTION, `make san`).
 */
#include "backend/backend.h"
#include "backend/fault.h"
#include "model/bert.h"
#include "model/optim.h"
#include "tap.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef BP_FAULT_INJECTION

enum { B = 2, T = 8 };

/* A model small enough to build per case: 2 layers of 16, classification over 2 labels. */
typedef struct rig {
    backend *be;
    bert_model *m;
    optim_adamw *opt;
} rig;

static void rig_close(rig *r) {
    optim_free(r->opt);
    bert_free(r->m);
    if (r->be) r->be->destroy(r->be);
    memset(r, 0, sizeof *r);
}

/* Backend (with bf16 products when rig_bf16), model, weights and optimizer, then the fault armed
 * (spec NULL: none). */
static int rig_bf16;
static int rig_open(rig *r, const char *spec) {
    bp_err err;
    memset(r, 0, sizeof *r);
    bert_config cfg;
    bert_config_default(&cfg);
    cfg.vocab_size = 40;
    cfg.hidden_size = 16;
    cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 2;
    cfg.intermediate_size = 32;
    cfg.max_position_embeddings = 16;
    optim_config oc;
    optim_config_default(&oc);
    oc.lr = 1e-3f;
    r->be = backend_cpu_create(1, &err);
    if (r->be && rig_bf16 && backend_cpu_set_bf16(r->be, 1, &err) != 0) {
        r->be->destroy(r->be);
        r->be = NULL;
    }
    if (r->be) r->m = bert_create(&cfg, r->be, B, T, &err);
    if (r->m && bert_init_weights(r->m, 11, 0, &err) == 0) r->opt = bert_optim_create(r->m, &oc, &err);
    if (r->opt && (!spec || backend_fault_arm(r->be, spec, &err) == 0)) return 0;
    tap_diag("setting up %s: %s", spec ? spec : "the model", err.msg);
    rig_close(r);
    return -1;
}

static const int32_t input_ids[B * T] = { 2, 7, 9, 11, 3, 0, 0, 0, 2, 5, 13, 17, 19, 23, 29, 3 };
static const int32_t token_types[B * T] = { 0 };
static const int32_t mask[B * T] = { 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 };
static const int32_t labels[B] = { 0, 1 };

static bert_batch batch(int with_labels) {
    return (bert_batch){ .B = B, .T = T, .input_ids = input_ids, .token_type_ids = token_types,
                         .attention_mask = mask, .labels = with_labels ? labels : NULL };
}

/* The call failed (-1) and err carries the injected fault named by spec, as the backend says it. */
static void expect_fault(int rc, const bp_err *err, const char *spec, const char *what) {
    const char *op = spec + strlen("backend:");
    char want[160];
    snprintf(want, sizeof want, "cpu backend: injected fault in %.*s call %s (BERTPIPE_FAULT=%s)",
             (int)(strchr(op, ':') - op), op, strchr(op, ':') + 1, spec);
    if (!tap_ok(rc == -1 && strcmp(err->msg, want) == 0, "%s returns -1 with the backend's message when %s fires",
                what, spec))
        tap_diag("  rc %d, message \"%s\", want \"%s\"", rc, err->msg, want);
}

static void faults_in_forward(void) {
    rig r;
    bp_err err;
    bert_batch b = batch(1);
    const char *spec = "backend:embedding_forward:1";
    if (rig_open(&r, spec) != 0) return;
    expect_fault(bert_forward(r.m, &b, 1, &err), &err, spec, "bert_forward");
    bp_err again;
    expect_fault(r.be->check(r.be, &again), &again, spec, "a later check");
    expect_fault(bert_forward(r.m, &b, 0, &err), &err, spec, "the next bert_forward");
    rig_close(&r);

    /* an op inside a layer, on an evaluation pass without targets (no download to catch it) */
    spec = "backend:matmul_forward:3";
    b = batch(0);
    if (rig_open(&r, spec) != 0) return;
    expect_fault(bert_forward(r.m, &b, 0, &err), &err, spec, "bert_forward (eval)");
    rig_close(&r);
}

static void faults_in_logits(void) {
    rig r;
    bp_err err;
    bert_batch b = batch(0);
    const char *spec = "backend:download:1";   /* no targets: the logits are the first download */
    if (rig_open(&r, spec) != 0) return;
    tap_ok(bert_forward(r.m, &b, 0, &err) == 0, "the forward before the faulty download succeeds");
    float logits[B * 2] = { 0 };
    expect_fault((int)bert_logits(r.m, logits, B * 2, &err), &err, spec, "bert_logits");
    tap_ok(isnan(logits[0]) && isnan(logits[B * 2 - 1]), "the failed download leaves NaN, as a failed CUDA one does");
    rig_close(&r);
}

static void faults_in_backward(void) {
    rig r;
    bp_err err;
    bert_batch b = batch(1);
    const char *spec = "backend:matmul_backward:2";
    if (rig_open(&r, spec) != 0) return;
    tap_ok(bert_forward(r.m, &b, 1, &err) == 0, "the forward before the faulty backward succeeds");
    expect_fault(bert_backward(r.m, 1.0f, &err), &err, spec, "bert_backward");
    rig_close(&r);
}

static void faults_in_optimizer(void) {
    const char *specs[] = {
        "backend:adamw:2",               /* the update itself */
        "backend:sumsq:1",               /* the norm: NaN, but the backend's failure is the reason */
        "backend:embedding_zero_grad:1", /* clearing the gradients after the update */
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        rig r;
        bp_err err;
        bert_batch b = batch(1);
        if (rig_open(&r, specs[i]) != 0) continue;
        int before = bert_forward(r.m, &b, 1, &err) || bert_backward(r.m, 1.0f, &err);
        tap_ok(!before, "forward and backward before %s succeed", specs[i]);
        expect_fault(bert_optim_step(r.m, r.opt, NULL, NULL, &err), &err, specs[i], "bert_optim_step");
        rig_close(&r);
    }
}

static void faults_in_state_copies(void) {
    rig r;
    bp_err err;
    const char *spec = "backend:download:1";
    if (rig_open(&r, spec) == 0) {
        float *host = malloc(r.m->num_params * sizeof(float));
        if (host) expect_fault(bert_copy_to_host(r.m, NULL, BERT_STATE_PARAMS, host, &err), &err, spec,
                               "bert_copy_to_host (what a checkpoint writer reads)");
        free(host);
        rig_close(&r);
    }
    spec = "backend:upload:1";
    if (rig_open(&r, spec) == 0) {
        float *host = calloc(r.m->num_params, sizeof(float));
        if (host) expect_fault(bert_copy_from_host(r.m, r.opt, BERT_STATE_ADAM_M, host, &err), &err, spec,
                               "bert_copy_from_host (a checkpoint read)");
        expect_fault(bert_init_weights(r.m, 3, 0, &err), &err, spec, "bert_init_weights after it");
        free(host);
        rig_close(&r);
    }
}

/* One training step and an evaluation pass; parameters after it into params (num_params). */
static int train_step(rig *r, float *params, float *logits, bp_err *err) {
    bert_batch b = batch(1);
    if (bert_forward(r->m, &b, 1, err) || bert_backward(r->m, 1.0f, err) ||
        bert_optim_step(r->m, r->opt, NULL, NULL, err) || bert_forward(r->m, &b, 0, err) ||
        bert_logits(r->m, logits, B * 2, err) < 0)
        return -1;
    return bert_copy_to_host(r->m, NULL, BERT_STATE_PARAMS, params, err);
}

static void armed_but_not_fired(void) {
    rig plain, armed;
    bp_err err;
    if (rig_open(&plain, NULL) != 0) return;
    tap_ok(plain.be->check(plain.be, &err) == 0, "the cpu backend's own check has nothing to report");
    if (rig_open(&armed, "backend:adamw:1000") != 0) {
        rig_close(&plain);
        return;
    }
    size_t n = plain.m->num_params;
    float *p1 = malloc(n * sizeof(float)), *p2 = malloc(n * sizeof(float));
    float l1[B * 2], l2[B * 2];
    if (p1 && p2) {
        int rc1 = train_step(&plain, p1, l1, &err), rc2 = train_step(&armed, p2, l2, &err);
        tap_ok(rc1 == 0 && rc2 == 0, "a training step succeeds with a fault armed that has not fired");
        tap_ok(rc1 == 0 && rc2 == 0 && memcmp(p1, p2, n * sizeof(float)) == 0 && memcmp(l1, l2, sizeof l1) == 0,
               "... and gives the same parameters and logits, bit for bit, as without");
        if (rc1 || rc2) tap_diag("  %s", err.msg);
    }
    free(p1);
    free(p2);
    rig_close(&armed);
    rig_close(&plain);
}

static void specs_refused(void) {
    bp_err err;
    backend *be = backend_cpu_create(1, &err);
    if (!tap_ok(be != NULL, "cpu backend")) return;
    const char *bad[] = { "", "backend:", "backend:nosuchop:1", "backend:adamw", "backend:adamw:", "backend:adamw:0",
                          "backend:adamw:-2", "backend:adamw:2x", "cuda:adamw:1", "backend:alloc:1" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = 0;
        char quoted[64];
        snprintf(quoted, sizeof quoted, "got '%s'", bad[i]);
        int rc = backend_fault_arm(be, bad[i], &err);
        if (!tap_ok(rc == -1 && strstr(err.msg, "BERTPIPE_FAULT wants backend:OP:N") && strstr(err.msg, quoted),
                    "spec '%s' is refused, naming it", bad[i]))
            tap_diag("  rc %d: %s", rc, err.msg);
    }
    tap_ok(backend_fault_arm(be, "backend:zero:1", &err) == 0, "a good spec arms");
    backend *other = backend_cpu_create(1, &err);
    if (other) {
        tap_ok(backend_fault_arm(other, "backend:zero:1", &err) == -1 && strstr(err.msg, "one at a time"),
               "a second backend cannot be armed while one is: %s", err.msg);
        other->destroy(other);
    }
    be->destroy(be);
    be = backend_cpu_create(1, &err);
    if (be) {
        tap_ok(backend_fault_arm(be, "backend:zero:1", &err) == 0, "destroying the armed backend disarms");
        be->destroy(be);
    }
}

/* With bf16 products the model runs its FFN through the GELU fusions: a fault there stops the
 * forward and the backward like any op. */
static void faults_in_gelu_fusions(void) {
    char why[256];
    int emulate = !backend_cpu_bf16_available(why, sizeof why);
    if (emulate) {   /* the fusions' fault points are the same on emulated products */
        tap_diag("%s: the GELU fusions run on emulated bf16 products", why);
        setenv("BERTPIPE_EMULATE_BF16", "1", 1);
    }
    rig_bf16 = 1;
    rig r;
    bp_err err;
    bert_batch b = batch(1);
    const char *spec = "backend:gelu_matmul_forward:2";   /* the second layer's */
    if (rig_open(&r, spec) == 0) {
        expect_fault(bert_forward(r.m, &b, 1, &err), &err, spec, "bert_forward (bf16)");
        rig_close(&r);
    }
    spec = "backend:gelu_matmul_backward:1";
    if (rig_open(&r, spec) == 0) {
        tap_ok(bert_forward(r.m, &b, 1, &err) == 0, "the bf16 forward before the faulty backward succeeds");
        expect_fault(bert_backward(r.m, 1.0f, &err), &err, spec, "bert_backward (bf16)");
        rig_close(&r);
    }
    spec = "backend:gelu_backward_matmul_backward:2";
    if (rig_open(&r, spec) == 0) {
        tap_ok(bert_forward(r.m, &b, 1, &err) == 0, "the bf16 forward before the faulty backward succeeds");
        expect_fault(bert_backward(r.m, 1.0f, &err), &err, spec, "bert_backward (bf16, the lower layer)");
        rig_close(&r);
    }
    rig_bf16 = 0;
    if (emulate) unsetenv("BERTPIPE_EMULATE_BF16");
}

int main(void) {
    faults_in_forward();
    faults_in_gelu_fusions();
    faults_in_logits();
    faults_in_backward();
    faults_in_optimizer();
    faults_in_state_copies();
    armed_but_not_fired();
    specs_refused();
    return tap_done();
}

#else

int main(void) {
    tap_ok(1, "backend faults # skip built without BP_FAULT_INJECTION (only the test build has it)");
    return tap_done();
}

#endif
