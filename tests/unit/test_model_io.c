/* test_model_io.c — checkpoint folders of the model variants (ckpt/model_io.h).
 *
 * Every variant of the parity fixtures (tests/fixtures/variants) saves and opens again with the
 * same configuration, the same tensors bit for bit and the same logits; plain BERT writes the
 * very files bert_io.h writes (byte for byte: what transformers loads); a BERT checkpoint opens
 * under another head with transformers' notes; an optimizer state saved after two steps resumes
 * to bit-identical weights, and a state of another optimizer or another --freeze is refused.
 * Files go to a temporary directory removed at the end.
 */
#include "backend/backend.h"
#include "ckpt/model_io.h"
#include "tap.h"
#include "fixture_reader.h"
#include "small_variant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/bp-model-io.XXXXXX";

static const char *temp(const char *name) {
    static char paths[2][512];
    static int turn;
    turn ^= 1;
    snprintf(paths[turn], sizeof paths[turn], "%s/%s", tmpdir, name);
    return paths[turn];
}

/* small_batch with targets: labels (1, 0), or those as start and end positions (qa). */
static void batch_with_targets(int32_t ids[16], int32_t types[16], int32_t mask[16], int32_t labels[2], int qa,
                               bert_batch *b) {
    small_batch(ids, types, mask, b);
    labels[0] = 1;
    labels[1] = 0;
    if (qa) { b->start_positions = labels; b->end_positions = labels; }
    else b->labels = labels;
}

static model_config variant(model_body body, model_head head, int qa) { return small_variant(body, head, qa, 2); }

/* Save, read the config back, open the folder: the same model. */
static void roundtrip(backend *be, const char *label, model_config c) {
    bp_err err = { "" };
    model *m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    if (!tap_ok(m && model_init_weights(m, 9, &err) == 0, "%s: model", label)) { tap_diag("%s", err.msg); model_free(m); return; }
    const char *labels[] = { "negative", "positive" };
    char dir[600];
    snprintf(dir, sizeof dir, "%s", temp(label));
    tap_ok(model_save_pretrained(m, dir, labels, 2, NULL, &err) == 0, "%s: saved %s", label, err.msg);
    model_config back;
    int rc = model_read_config(dir, c.bert.head, 0, &back, NULL, &err);
    char f1[256], f2[256];
    model_format_freeze(&c.freeze, f1, sizeof f1);
    model_format_freeze(&back.freeze, f2, sizeof f2);
    int rnn = c.head == MODEL_HEAD_GRU || c.head == MODEL_HEAD_LSTM, mlp = c.head == MODEL_HEAD_MLP;
    tap_ok(rc == 0 && back.body == c.body && back.head == c.head && back.loss == c.loss &&
               back.bert.num_labels == c.bert.num_labels && back.bert.hidden_size == c.bert.hidden_size &&
               back.head_dropout == c.head_dropout &&
               (!rnn || (back.rnn_hidden == c.rnn_hidden && back.rnn_layers == c.rnn_layers &&
                         back.rnn_bidirectional == c.rnn_bidirectional && back.rnn_dropout == c.rnn_dropout)) &&
               (!mlp || (back.mlp_hidden_layers == c.mlp_hidden_layers && back.mlp_hidden[1] == c.mlp_hidden[1] &&
                         back.mlp_activation == c.mlp_activation)) && strcmp(f1, f2) == 0,
           "%s: config.json gives the variant back (freeze '%s') %s", label, f2, rc ? err.msg : "");
    char *notes = NULL;
    model *again = rc ? NULL : model_open(&back, dir, MODEL_LOAD_MATCHING, MODEL_FOR_INFERENCE, be, 2, 8, 1, &notes, &err);
    tap_ok(again && !notes, "%s: opens again, every tensor found (%s)", label, notes ? notes : err.msg);
    free(notes);
    float *a = calloc(m->num_params, sizeof(float)), *b = calloc(m->num_params, sizeof(float));
    int same = again && a && b && again->num_params == m->num_params &&
               model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, a, &err) == 0 &&
               model_copy_to_host(again, NULL, MODEL_STATE_PARAMS, 0, b, &err) == 0 &&
               memcmp(a, b, m->num_params * sizeof(float)) == 0;
    tap_ok(same, "%s: the same %zu parameters bit for bit", label, m->num_params);
    int32_t ids[16], types[16], mask[16], lab[2];
    bert_batch batch;
    batch_with_targets(ids, types, mask, lab, c.bert.head == BERT_HEAD_QA, &batch);
    float la[32], lb[32];
    same = again && model_forward(m, &batch, 0, &err) == 0 && model_forward(again, &batch, 0, &err) == 0 &&
           model_logits(m, la, 32, &err) > 0 && model_logits(again, lb, 32, &err) > 0 &&
           memcmp(la, lb, (size_t)model_logits(m, la, 32, &err) * sizeof(float)) == 0;
    tap_ok(same, "%s: and the same logits", label);
    free(a);
    free(b);
    model_free(again);
    model_free(m);
}

static void roundtrips(backend *be) {
    model_config c = variant(MODEL_BODY_BERT, MODEL_HEAD_GRU, 0);
    c.bert.num_labels = 1;
    c.loss = MODEL_LOSS_BCE;
    c.head_dropout = 0.25f;
    bp_err err;
    model_parse_freeze("bert", &c.freeze, &err);
    roundtrip(be, "gru-bce-frozen", c);
    c = variant(MODEL_BODY_BERT, MODEL_HEAD_LSTM, 0);
    c.rnn_bidirectional = 0;
    c.rnn_layers = 1;
    model_parse_freeze("embeddings,layers:0-0", &c.freeze, &err);
    roundtrip(be, "lstm-head", c);
    c = variant(MODEL_BODY_BERT, MODEL_HEAD_MLP, 0);
    c.mlp_activation = HEAD_TANH;
    roundtrip(be, "mlp-tanh", c);
    roundtrip(be, "lstm-baseline", variant(MODEL_BODY_LSTM, MODEL_HEAD_LINEAR, 1));
    roundtrip(be, "transformer-baseline", variant(MODEL_BODY_TRANSFORMER, MODEL_HEAD_LINEAR, 1));
    roundtrip(be, "plain-bert", variant(MODEL_BODY_BERT, MODEL_HEAD_LINEAR, 0));
}

/* Plain BERT writes what transformers loads: its class, no variant block. (Byte for byte the
 * files the BERT-only writer wrote before the variants, which these tests checked while both
 * existed; tests/bats/train.bats loads them in the PyTorch reference.) */
static void plain_bert_unchanged(backend *be) {
    bp_err err = { "" };
    for (int qa = 0; qa <= 1; qa++) {
        model_config c = variant(MODEL_BODY_BERT, MODEL_HEAD_LINEAR, qa);
        model *m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
        const char *labels[] = { "negative", "positive" };
        int ok = m && model_init_weights(m, 4, &err) == 0 && model_save_pretrained(m, temp("plain-hf"), labels, 2, NULL, &err) == 0;
        char path[600];
        snprintf(path, sizeof path, "%s/config.json", temp("plain-hf"));
        hfc_config hf;
        ok = ok && hfc_read(path, &hf, &err) == 0;
        tap_ok(ok && !hf.variant && strcmp(hf.architecture, qa ? "BertForQuestionAnswering" : "BertForSequenceClassification") == 0,
               "plain BERT (%s): config.json is transformers' own, no bertpipe_variant block", qa ? "qa" : "classification");
        if (ok) hfc_free(&hf);
        model_free(m);
    }
}

/* A BERT checkpoint under an rnn head: bert.* filled, the head new, the classifier unused. */
static void bert_under_a_head(backend *be) {
    bp_err err = { "" };
    model_config c = variant(MODEL_BODY_BERT, MODEL_HEAD_LINEAR, 0);
    model *m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    int ok = m && model_init_weights(m, 21, &err) == 0 && model_save_pretrained(m, temp("plain"), NULL, 0, NULL, &err) == 0;
    c.head = MODEL_HEAD_GRU;
    char *notes = NULL;
    model *g = ok ? model_open(&c, temp("plain"), MODEL_LOAD_MATCHING, MODEL_FOR_TRAINING, be, 2, 8, 3, &notes, &err) : NULL;
    tap_ok(g && notes && strstr(notes, "were not used when initializing BertWithGRUHead: ['classifier.bias', 'classifier.weight']") &&
               strstr(notes, "newly initialized: ['out.bias', 'out.weight', 'rnn.bias_hh_l0'"),
           "a BertForSequenceClassification checkpoint under a gru head: %s", notes ? notes : err.msg);
    float *a = m ? calloc(m->num_params, sizeof(float)) : NULL, *b = g ? calloc(g->num_params, sizeof(float)) : NULL;
    bp_named_tensor *ta = m ? calloc((size_t)m->params.n, sizeof *ta) : NULL, *tb = g ? calloc((size_t)g->params.n, sizeof *tb) : NULL;
    int same = a && b && ta && tb && model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, a, &err) == 0 &&
               model_copy_to_host(g, NULL, MODEL_STATE_PARAMS, 0, b, &err) == 0;
    int compared = 0;
    if (same) {
        model_describe_tensors(m, a, ta);
        model_describe_tensors(g, b, tb);
        for (int i = 0; i < g->params.n; i++)   /* every bert.* tensor of the gru model */
            for (int k = 0; strncmp(tb[i].name, "bert.", 5) == 0 && k < m->params.n; k++)
                if (strcmp(ta[k].name, tb[i].name) == 0) {
                    same &= ta[k].nbytes == tb[i].nbytes && memcmp(ta[k].data, tb[i].data, ta[k].nbytes) == 0;
                    compared++;
                }
    }
    tap_ok(same && compared == (g ? g->params.n - 18 : -1), "the encoder's %d tensors carried over", compared);
    free(ta);
    free(tb);
    free(a);
    free(b);
    free(notes);
    model_free(g);
    model_free(m);
}

/* Two steps, save, two more, against a fresh model resumed from the save. */
static void exact_resume(backend *be, optim_kind kind, const char *freeze) {
    bp_err err = { "" };
    model_config c = variant(MODEL_BODY_BERT, MODEL_HEAD_GRU, 0);
    model_parse_freeze(freeze, &c.freeze, &err);
    c.bert.hidden_dropout_prob = 0.1f;
    optim_config oc;
    optim_config_default(&oc);
    oc.kind = kind;
    oc.lr = 1e-2f;
    oc.momentum = kind == OPTIM_SGD ? 0.9f : 0.0f;
    oc.weight_decay = 0.01f;
    int32_t ids[16], types[16], mask[16], lab[2];
    bert_batch batch;
    batch_with_targets(ids, types, mask, lab, 0, &batch);
    model *m = model_create(&c, be, 2, 8, MODEL_FOR_TRAINING, &err);
    optimizer *opt = m ? model_optim_create(m, &oc, &err) : NULL;
    int rc = !opt || model_init_weights(m, 5, &err);
    m->dropout_seed = 77;
    bert_train_state st = { .step = 2, .epoch = 0, .batches_consumed = 2 };
    for (int s = 0; s < 4 && rc == 0; s++) {
        rc = model_forward(m, &batch, 1, &err) || model_backward(m, 1.0f, &err) || model_optim_step(m, opt, NULL, NULL, &err);
        if (s == 1 && rc == 0) {
            /* the dropout RNG as it stands at the step, as train records it */
            st.dropout_seed = m->dropout_seed;
            st.dropout_counter = m->dropout_counter;
        }
        if (s == 1 && rc == 0)
            rc = model_save_pretrained(m, temp("resume"), NULL, 0, NULL, &err) ||
                 model_save_train_state(m, opt, temp("resume"), &st, &err);
    }
    model_config back;
    bert_train_state loaded;
    rc |= model_read_config(temp("resume"), BERT_HEAD_CLASSIFICATION, 0, &back, NULL, &err);
    model *r = rc ? NULL : model_open(&back, temp("resume"), MODEL_LOAD_MATCHING, MODEL_FOR_TRAINING, be, 2, 8, 1, NULL, &err);
    optimizer *ropt = r ? model_optim_create(r, &oc, &err) : NULL;
    rc |= !ropt || model_load_train_state(r, ropt, temp("resume"), &loaded, &err);
    for (int s = 0; s < 2 && rc == 0; s++)
        rc = model_forward(r, &batch, 1, &err) || model_backward(r, 1.0f, &err) || model_optim_step(r, ropt, NULL, NULL, &err);
    float *a = m ? calloc(m->num_params, sizeof(float)) : NULL, *b = m ? calloc(m->num_params, sizeof(float)) : NULL;
    int same = rc == 0 && a && b && model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, a, &err) == 0 &&
               model_copy_to_host(r, NULL, MODEL_STATE_PARAMS, 0, b, &err) == 0 &&
               memcmp(a, b, m->num_params * sizeof(float)) == 0 && loaded.step == 2 && ropt->step == 4;
    tap_ok(same, "%s%s%s: saved after 2 steps and resumed, 2 more steps give bit-identical weights %s",
           optim_kind_name(kind), freeze[0] ? ", --freeze " : "", freeze, rc ? err.msg : "");
    free(a);
    free(b);
    optim_free(ropt);
    model_free(r);
    /* the state does not fit another optimizer or another freeze */
    if (kind == OPTIM_ADAM) {
        optim_config other = oc;
        other.kind = OPTIM_SGD;
        other.momentum = 0.9f;
        optimizer *o = model_optim_create(m, &other, &err);
        tap_ok(o && model_load_train_state(m, o, temp("resume"), &loaded, &err) == -1 && strstr(err.msg, "adam's, this run uses sgd"),
               "an adam state refused by sgd: %s", err.msg);
        optim_free(o);
        model_config c2 = c;
        memset(&c2.freeze, 0, sizeof c2.freeze);
        model *unfrozen = model_create(&c2, be, 2, 8, MODEL_FOR_TRAINING, &err);
        o = unfrozen ? model_optim_create(unfrozen, &oc, &err) : NULL;
        tap_ok(o && model_load_train_state(unfrozen, o, temp("resume"), &loaded, &err) == -1 && strstr(err.msg, "lacks tensor"),
               "a state saved under --freeze %s refused without it: %s", freeze, err.msg);
        optim_free(o);
        model_free(unfrozen);
    }
    optim_free(opt);
    model_free(m);
}

static void bad_variant_blocks(void) {
    static const struct { const char *json, *want; } bad[] = {
        { "{\"head\": \"cnn\"}", "bertpipe_variant.head: head 'cnn' unknown" },
        { "{\"freeze\": \"layers:2\"}", "bertpipe_variant.freeze" },
        { "{\"rnn\": {\"hidden\": -3}}", "hidden is not a size" },
        { "{\"mlp\": {\"hidden\": [0]}}", "mlp.hidden[0] is not a size" },
        { "{\"head_dropout\": 1.5}", "head_dropout is not a probability" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bp_err err = { "" };
        hfc_config hf;
        hfc_defaults(&hf, &err);
        hfc_set_variant(&hf, bad[i].json, &err);
        model_config c;
        tap_ok(model_config_from_hf(&hf, BERT_HEAD_CLASSIFICATION, 2, &c, &err) == -1 && strstr(err.msg, bad[i].want),
               "variant block %s refused: %s", bad[i].json, err.msg);
        hfc_free(&hf);
    }
}

static void remove_tree(const char *dir) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) tap_diag("could not remove %s", dir);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        tap_ok(0, "cannot create a temporary directory: %s", strerror(errno));
        return tap_done();
    }
    bp_err err;
    backend *be = backend_cpu_create(2, &err);
    if (!tap_ok(be != NULL, "cpu backend")) return tap_done();
    roundtrips(be);
    plain_bert_unchanged(be);
    bert_under_a_head(be);
    exact_resume(be, OPTIM_ADAM, "bert");
    exact_resume(be, OPTIM_SGD, "layers:0-0");
    exact_resume(be, OPTIM_ADAMW, "");
    bad_variant_blocks();
    be->destroy(be);
    remove_tree(tmpdir);
    return tap_done();
}
