/* test_trainer_dir.c — ckpt/trainer_dir.h: the tokenizer files transformers reads, trainer_state.json
 * written and read back, checkpoint-STEP folders listed, resumed from, rotated as the Trainer
 * rotates them (the best kept), and published at the top of the run folder; and config.json's
 * reals in their shortest exact form. Expected values are worked out in the comments. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_file.h"
#include "ckpt/hfconfig.h"
#include "ckpt/trainer_dir.h"
#include "tap.h"

static char top[256];

static const char *at(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", top, name);
    return buf[k];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_tokenizer_files(void) {
    bp_err err;
    /* no [MASK]: it is left out, not invented */
    write_text(at("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n");
    int rc = td_write_tokenizer_files(top, at("vocab.txt"), 0, 40, &err);
    TAP_EQ_INT(rc, 0, "tokenizer files written");
    json_t *c = json_load_file(at("tokenizer_config.json"), 0, NULL), *m = json_load_file(at("special_tokens_map.json"), 0, NULL);
    tap_ok(c && json_is_false(json_object_get(c, "do_lower_case")), "do_lower_case false for a cased run");
    TAP_EQ_INT(json_integer_value(json_object_get(c, "model_max_length")), 40, "model_max_length is the trained length");
    TAP_EQ_STR(json_string_value(json_object_get(c, "tokenizer_class")), "BertTokenizer", "tokenizer_class");
    TAP_EQ_STR(json_string_value(json_object_get(json_object_get(json_object_get(c, "added_tokens_decoder"), "3"), "content")),
               "[SEP]", "added_tokens_decoder names [SEP] as id 3");
    tap_ok(m && json_object_size(m) == 4 && !json_object_get(m, "mask_token"), "special_tokens_map: 4 tokens, no mask_token");
    TAP_EQ_STR(json_string_value(json_object_get(m, "cls_token")), "[CLS]", "cls_token");
    json_decref(c);
    json_decref(m);
}

static void test_state(void) {
    bp_err err;
    td_state *s = td_state_new(&err);
    const char *train_keys[] = {"loss", "learning_rate", "grad_norm"};
    const double train_values[] = {0.6931, 5e-05, NAN};
    const char *eval_keys[] = {"eval_loss", "eval_accuracy"};
    const double eval_values[] = {0.5, 0.75};
    int rc = td_state_log(s, 10, 0.5, train_keys, train_values, 3, &err) || td_state_log(s, 20, 1.0, eval_keys, eval_values, 2, &err);
    td_progress p = {.global_step = 20, .max_steps = 40, .num_train_epochs = 2, .train_batch_size = 8, .epoch = 1.0,
                     .metric = "accuracy", .greater_is_better = 1, .best_metric = 0.75, .best_step = 20, .patience = 3,
                     .patience_counter = 1};
    rc = rc || td_state_write(s, &p, "out", at("trainer_state.json"), &err);
    TAP_EQ_INT(rc, 0, "trainer_state.json written");
    td_state_free(s);
    const char *text = read_text(at("trainer_state.json"));
    tap_ok(text && strstr(text, "\"learning_rate\": 5e-05,"), "reals as Python writes them: 5e-05");
    tap_ok(text && strstr(text, "\"epoch\": 1.0,"), "an integral real keeps its .0");
    tap_ok(text && strstr(text, "\"best_model_checkpoint\": \"out/checkpoint-20\""), "best_model_checkpoint names the folder");
    tap_ok(text && !strstr(text, "grad_norm"), "a NaN value is left out of its entry");
    tap_ok(text && strncmp(text, "{\n  \"best_global_step\": 20,\n  \"best_metric\": 0.75,", 50) == 0, "indent 2, keys sorted");
    json_t *root = json_loads(text ? text : "", 0, NULL);
    TAP_EQ_INT(json_array_size(json_object_get(root, "log_history")), 2, "two log entries, valid JSON");
    json_decref(root);

    mkdir(at("ck"), 0755);
    rename(at("trainer_state.json"), at("ck/trainer_state.json"));
    td_progress back = {.best_metric = NAN, .best_step = -1};
    rc = td_state_read(at("ck"), &s, &back, &err);
    tap_ok(rc == 1 && back.best_step == 20 && back.best_metric == 0.75 && back.patience_counter == 1,
           "read back: best 0.75 at step 20, patience counter 1");
    const char *more[] = {"loss"};
    const double more_values[] = {0.25};
    rc = td_state_log(s, 30, 1.5, more, more_values, 1, &err) || td_state_write(s, &p, "out", at("again.json"), &err);
    root = json_load_file(at("again.json"), 0, NULL);
    TAP_EQ_INT(json_array_size(json_object_get(root, "log_history")), 3, "a resumed log goes on from the saved one");
    json_decref(root);
    td_state_free(s);
    rc = td_state_read(at("nowhere"), &s, &back, &err);
    TAP_EQ_INT(rc, 0, "no trainer_state.json: an empty log");
    td_state_free(s);
}

/* DIR/checkpoint-STEP with the files a save leaves. */
static void make_checkpoint(const char *dir, long step) {
    char path[512];
    snprintf(path, sizeof path, "%s/checkpoint-%ld", dir, step);
    mkdir(path, 0755);
    const char *names[] = {"config.json", "vocab.txt", "model.safetensors", "optimizer.safetensors", "trainer_state.json"};
    for (int i = 0; i < 5; i++) {
        char file[600];
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        write_text(file, names[i]);
    }
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_folder(void) {
    bp_err err;
    char run[512], buf[600];
    snprintf(run, sizeof run, "%s/run", top);
    mkdir(run, 0755);
    long steps_in[] = {10, 20, 30, 40};
    for (int i = 0; i < 4; i++) make_checkpoint(run, steps_in[i]);
    mkdir(at("run/checkpoint-50"), 0755);        /* no optimizer state: a save under way */
    mkdir(at("run/checkpoint-x1"), 0755);        /* not a step */
    long *steps;
    long n = td_list_checkpoints(run, &steps, &err);
    tap_ok(n == 4 && steps[0] == 10 && steps[3] == 40, "four complete checkpoints, ascending");
    free(steps);
    int rc = td_resume_folder(run, buf, sizeof buf, &err);
    tap_ok(rc == 0 && strcmp(buf, at("run/checkpoint-40")) == 0, "--resume RUN takes its latest checkpoint");
    rc = td_resume_folder(at("run/checkpoint-20"), buf, sizeof buf, &err);
    tap_ok(rc == 0 && strcmp(buf, at("run/checkpoint-20")) == 0, "--resume of a checkpoint folder takes it");
    rc = td_resume_folder(at("run/checkpoint-50"), buf, sizeof buf, &err);
    tap_ok(rc == -1 && strstr(err.msg, "no checkpoint to resume"), "nothing to resume is an error: %s", err.msg);

    long removed;
    rc = td_rotate(run, 2, 20, &removed, &err);
    /* oldest first with the best last: 10 30 40 20; two kept: 40 and 20 */
    tap_ok(rc == 0 && removed == 2 && exists(at("run/checkpoint-20")) && exists(at("run/checkpoint-40")) &&
               !exists(at("run/checkpoint-10")) && !exists(at("run/checkpoint-30")),
           "limit 2 with the best at 20: 20 and 40 are kept");
    tap_ok(exists(at("run/checkpoint-50")), "a folder that is not a complete checkpoint is not touched");
    make_checkpoint(run, 60);
    rc = td_rotate(run, 1, 20, &removed, &err);
    tap_ok(rc == 0 && removed == 1 && exists(at("run/checkpoint-20")) && exists(at("run/checkpoint-60")),
           "limit 1 with an older best keeps the best and the latest");
    write_text(at("run/checkpoint-20/notes.txt"), "mine");
    rc = td_rotate(run, 1, 60, &removed, &err);
    tap_ok(rc == -1 && removed == 0 && exists(at("run/checkpoint-20/notes.txt")) && strstr(err.msg, "holds other files"),
           "a folder holding a file of someone else's is kept: %s", err.msg);
    tap_ok(exists(at("run/checkpoint-20/model.safetensors")), "kept whole: its own files are still there");

    write_text(at("run/optimizer.safetensors"), "old layout");
    rc = td_publish(run, at("run/checkpoint-60"), &err);
    struct stat a, b;
    tap_ok(rc == 0 && stat(at("run/model.safetensors"), &a) == 0 && stat(at("run/checkpoint-60/model.safetensors"), &b) == 0 &&
               a.st_ino == b.st_ino,
           "published: the top's model.safetensors is the checkpoint's file");
    tap_ok(!exists(at("run/optimizer.safetensors")), "an optimizer state at the top is removed");
    tap_ok(!exists(at("run/tokenizer_config.json")), "a file the checkpoint lacks is not made up");
}

static void test_config_reals(void) {
    bp_err err;
    tap_ok(hfc_real_from_float(0.1f) == 0.1 && hfc_real_from_float(1e-12f) == 1e-12 && hfc_real_from_float(0.02f) == 0.02,
           "float 0.1, 1e-12, 0.02 stand for the doubles 0.1, 1e-12, 0.02");
    hfc_config cfg;
    int rc = hfc_defaults(&cfg, &err);
    cfg.hidden_dropout_prob = hfc_real_from_float(0.2f);
    cfg.layer_norm_eps = hfc_real_from_float(1e-12f);
    cfg.initializer_range = 0.123456789;   /* 9 digits: the others still print short */
    rc = rc || hfc_write(at("config.json"), &cfg, &err);
    hfc_free(&cfg);
    const char *text = read_text(at("config.json"));
    tap_ok(rc == 0 && strstr(text, "\"hidden_dropout_prob\": 0.2,") && strstr(text, "\"layer_norm_eps\": 1e-12,") &&
               strstr(text, "\"initializer_range\": 0.123456789,") && strstr(text, "\"attention_probs_dropout_prob\": 0.1,"),
           "config.json: 0.2, 1e-12, 0.1 and 0.123456789 in their shortest forms");
}

int main(void) {
    snprintf(top, sizeof top, "%s/test_trainer_dir.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(top)) return 1;
    test_tokenizer_files();
    test_state();
    test_folder();
    test_config_reals();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
    if (system(cmd)) tap_diag("could not remove %s", top);
    return tap_done();
}
