/* ckpt/trainer_dir.c — the run folder: tokenizer files, trainer_state.json, checkpoint-STEP
 * folders, their rotation and the model at the top (see trainer_dir.h).
 * Must never: remove a name it does not list below, print, or exit. */
#include "ckpt/trainer_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_dir.h"
#include "base/atomic_file.h"

/* What a checkpoint folder holds: all that rotation removes, and (but the optimizer state) what
 * the top of the run folder gets from it, model.safetensors last of those. */
#define OPTIMIZER_FILE "optimizer.safetensors"
#define STATE_FILE "trainer_state.json"
static const char *const checkpoint_files[] = {"config.json", "vocab.txt", "tokenizer_config.json",
                                               "special_tokens_map.json", STATE_FILE, "model.safetensors",
                                               OPTIMIZER_FILE, NULL};

static int path_join(char *buf, size_t size, const char *dir, const char *name, bp_err *err) {
    if (snprintf(buf, size, "%s/%s", dir, name) >= (int)size) return bp_err_set(err, "path too long (%.200s...)", dir);
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- JSON out ------------------------------------------------------------------------ */

/* A real as Python's repr: the fewest digits that read back exactly, positional from 1e-4 to
 * 1e16 (100.0, 0.0001), else with an exponent of at least two digits (1e-05, 1.5e+16). */
static void format_real(double x, char *buf, size_t size) {
    if (!isfinite(x)) {
        snprintf(buf, size, "%s", isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity");
        return;
    }
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf(buf, size, "%.*e", digits - 1, x);
        if (strtod(buf, NULL) == x) break;
    }
    snprintf(buf, size, "%.*e", digits - 1, x);
    int exponent = atoi(strchr(buf, 'e') + 1);
    if (exponent >= -4 && exponent < 16)
        snprintf(buf, size, "%.*f", digits - 1 - exponent > 1 ? digits - 1 - exponent : 1, x);
}

static int emit(FILE *fp, json_t *v, int depth);

static int emit_indent(FILE *fp, int depth) { return fprintf(fp, "\n%*s", 2 * depth, "") < 0; }

static int emit_string(FILE *fp, const char *s) {
    json_t *str = json_string(s);
    char *text = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    int bad = !text || fputs(text, fp) < 0;
    free(text);
    json_decref(str);
    return bad;
}

static int cmp_keys(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int emit_object(FILE *fp, json_t *v, int depth) {
    size_t n = json_object_size(v), i = 0;
    if (!n) return fputs("{}", fp) < 0;
    const char **keys = malloc(n * sizeof *keys);
    if (!keys) return 1;
    const char *key;
    json_t *value;
    json_object_foreach(v, key, value) keys[i++] = key;
    qsort(keys, n, sizeof *keys, cmp_keys);
    int bad = fputc('{', fp) == EOF;
    for (i = 0; i < n && !bad; i++) {
        bad = (i && fputc(',', fp) == EOF) || emit_indent(fp, depth + 1) || emit_string(fp, keys[i]) ||
              fputs(": ", fp) < 0 || emit(fp, json_object_get(v, keys[i]), depth + 1);
    }
    free(keys);
    return bad || emit_indent(fp, depth) || fputc('}', fp) == EOF;
}

static int emit(FILE *fp, json_t *v, int depth) {
    char num[48];
    switch (json_typeof(v)) {
    case JSON_OBJECT: return emit_object(fp, v, depth);
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (!n) return fputs("[]", fp) < 0;
        int bad = fputc('[', fp) == EOF;
        for (size_t i = 0; i < n && !bad; i++)
            bad = (i && fputc(',', fp) == EOF) || emit_indent(fp, depth + 1) || emit(fp, json_array_get(v, i), depth + 1);
        return bad || emit_indent(fp, depth) || fputc(']', fp) == EOF;
    }
    case JSON_STRING: return emit_string(fp, json_string_value(v));
    case JSON_INTEGER: return fprintf(fp, "%lld", (long long)json_integer_value(v)) < 0;
    case JSON_REAL: format_real(json_real_value(v), num, sizeof num); return fputs(num, fp) < 0;
    case JSON_TRUE: return fputs("true", fp) < 0;
    case JSON_FALSE: return fputs("false", fp) < 0;
    default: return fputs("null", fp) < 0;
    }
}

/* Write ROOT as PATH, atomically, as Python's json.dump(indent=2, sort_keys=True) writes it. */
static int write_json(json_t *root, const char *path, bp_err *err) {
    af_file out;
    if (af_open(&out, path, err)) return -1;
    if (emit(out.fp, root, 0) || fputc('\n', out.fp) == EOF) {
        af_abort(&out);
        return bp_err_set(err, "cannot write: %s (%s)", strerror(errno), path);
    }
    return af_commit(&out, err);
}

/* ---- tokenizer files ----------------------------------------------------------------- */

/* The ids of the special tokens in vocab.txt (-1 when absent), read as BertTokenizer reads it. */
static const char *const special_names[] = {"pad_token", "unk_token", "cls_token", "sep_token", "mask_token"};
static const char *const special_tokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
#define N_SPECIAL 5

static int special_ids(const char *vocab_path, long ids[N_SPECIAL], bp_err *err) {
    for (int k = 0; k < N_SPECIAL; k++) ids[k] = -1;
    FILE *fp = fopen(vocab_path, "rb");
    if (!fp) return bp_err_set(err, "cannot open vocabulary: %s (%s)", strerror(errno), vocab_path);
    char line[1024];
    for (long id = 0; fgets(line, sizeof line, fp); id++) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = 0;
        for (int k = 0; k < N_SPECIAL; k++)
            if (!strcmp(line, special_tokens[k])) ids[k] = id;   /* a later duplicate wins, as in HF */
    }
    int bad = ferror(fp);
    fclose(fp);
    return bad ? bp_err_set(err, "cannot read vocabulary (%s)", vocab_path) : 0;
}

int td_write_tokenizer_files(const char *dir, const char *vocab_path, int lowercase, long model_max_length, bp_err *err) {
    long ids[N_SPECIAL];
    if (special_ids(vocab_path, ids, err)) return -1;
    json_t *config = json_object(), *map = json_object(), *decoder = json_object();
    int failed = !config || !map || !decoder;
    for (int k = 0; k < N_SPECIAL && !failed; k++) {
        if (ids[k] < 0) continue;
        char id[24];
        snprintf(id, sizeof id, "%ld", ids[k]);
        failed |= json_object_set_new(config, special_names[k], json_string(special_tokens[k])) ||
                  json_object_set_new(map, special_names[k], json_string(special_tokens[k])) ||
                  json_object_set_new(decoder, id,
                                      json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", special_tokens[k], "lstrip", 0,
                                                "normalized", 0, "rstrip", 0, "single_word", 0, "special", 1));
    }
    failed |= json_object_set_new(config, "added_tokens_decoder", decoder) ||
              json_object_set_new(config, "clean_up_tokenization_spaces", json_true()) ||
              json_object_set_new(config, "do_basic_tokenize", json_true()) ||
              json_object_set_new(config, "do_lower_case", json_boolean(lowercase)) ||
              json_object_set_new(config, "model_max_length", json_integer(model_max_length)) ||
              json_object_set_new(config, "never_split", json_null()) ||
              json_object_set_new(config, "strip_accents", json_null()) ||
              json_object_set_new(config, "tokenize_chinese_chars", json_true()) ||
              json_object_set_new(config, "tokenizer_class", json_string("BertTokenizer"));
    char path[4096];
    int rc = failed ? bp_err_set(err, "out of memory (tokenizer files for %s)", dir) : 0;
    if (rc == 0) rc = path_join(path, sizeof path, dir, "tokenizer_config.json", err);
    if (rc == 0) rc = write_json(config, path, err);
    if (rc == 0) rc = path_join(path, sizeof path, dir, "special_tokens_map.json", err);
    if (rc == 0) rc = write_json(map, path, err);
    json_decref(config);
    json_decref(map);
    return rc;
}

/* ---- trainer_state.json ---------------------------------------------------------------- */

struct td_state {
    json_t *log;   /* array of entries */
};

td_state *td_state_new(bp_err *err) {
    td_state *s = calloc(1, sizeof *s);
    if (s && !(s->log = json_array())) {
        free(s);
        s = NULL;
    }
    if (!s) bp_err_set(err, "out of memory (trainer state)");
    return s;
}

void td_state_free(td_state *s) {
    if (!s) return;
    json_decref(s->log);
    free(s);
}

int td_state_log(td_state *s, long step, double epoch, const char *const *keys, const double *values, int n,
                 bp_err *err) {
    json_t *entry = json_object();
    int failed = !entry || json_object_set_new(entry, "epoch", json_real(epoch)) ||
                 json_object_set_new(entry, "step", json_integer(step));
    for (int i = 0; i < n && !failed; i++)
        if (!isnan(values[i])) failed |= json_object_set_new(entry, keys[i], json_real(values[i]));
    if (failed || json_array_append_new(s->log, entry)) return bp_err_set(err, "out of memory (trainer state)");
    return 0;
}

/* stateful_callbacks: the TrainerControl flags and, with patience, EarlyStoppingCallback's. */
static json_t *callbacks(const td_progress *p) {
    json_t *cb = json_pack("{s:{s:{s:b, s:b, s:b, s:b, s:b}, s:{}}}", "TrainerControl", "args", "should_epoch_stop", 0,
                           "should_evaluate", 0, "should_log", 0, "should_save", 1, "should_training_stop", 0,
                           "attributes");
    if (cb && p->patience > 0 &&
        json_object_set_new(cb, "EarlyStoppingCallback",
                            json_pack("{s:{s:I, s:f}, s:{s:I}}", "args", "early_stopping_patience", (json_int_t)p->patience,
                                      "early_stopping_threshold", 0.0, "attributes", "early_stopping_patience_counter",
                                      (json_int_t)p->patience_counter))) {
        json_decref(cb);
        return NULL;
    }
    return cb;
}

int td_state_write(const td_state *s, const td_progress *p, const char *dir, const char *path, bp_err *err) {
    char best[4096];
    int has_best = p->best_step >= 0 && !isnan(p->best_metric);
    if (has_best && td_checkpoint_path(dir, p->best_step, best, sizeof best, err)) return -1;
    json_t *root = json_pack(
        "{s:o, s:o, s:o, s:f, s:I, s:I, s:b, s:b, s:b, s:O, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:n, s:n}",
        "best_global_step", has_best ? json_integer(p->best_step) : json_null(), "best_metric",
        has_best ? json_real(p->best_metric) : json_null(), "best_model_checkpoint", has_best ? json_string(best) : json_null(),
        "epoch", p->epoch, "eval_steps", (json_int_t)p->eval_steps, "global_step", (json_int_t)p->global_step,
        "is_hyper_param_search", 0, "is_local_process_zero", 1, "is_world_process_zero", 1, "log_history", s->log,
        "logging_steps", (json_int_t)1, "max_steps", (json_int_t)p->max_steps, "num_input_tokens_seen", (json_int_t)0,
        "num_train_epochs", (json_int_t)p->num_train_epochs, "save_steps", (json_int_t)p->save_steps, "stateful_callbacks",
        callbacks(p), "total_flos", (json_int_t)0, "train_batch_size", (json_int_t)p->train_batch_size, "trial_name",
        "trial_params");
    if (!root) return bp_err_set(err, "out of memory (%s)", path);
    int rc = write_json(root, path, err);
    json_decref(root);
    return rc;
}

/* STEP of a folder name "checkpoint-STEP", or -1. */
static long checkpoint_step(const char *name) {
    if (strncmp(name, "checkpoint-", 11) || !name[11]) return -1;
    char *end;
    errno = 0;
    long step = strtol(name + 11, &end, 10);
    return errno || *end || step < 0 || name[11] == '+' || name[11] == '-' || name[11] == ' ' ? -1 : step;
}

int td_state_read(const char *checkpoint, td_state **s, td_progress *p, bp_err *err) {
    char path[4096];
    if (path_join(path, sizeof path, checkpoint, "trainer_state.json", err)) return -1;
    if (!(*s = td_state_new(err))) return -1;
    if (!file_exists(path)) return 0;
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_DECODE_INT_AS_REAL, &jerr);
    json_t *log = root ? json_object_get(root, "log_history") : NULL;
    if (!root || !json_is_array(log)) {
        json_decref(root);
        return bp_err_set(err, root ? "no log_history list (%s)" : "invalid JSON: %s (%s line %d)",
                          root ? path : jerr.text, path, jerr.line);
    }
    json_decref((*s)->log);
    (*s)->log = json_deep_copy(log);
    json_t *best = json_object_get(root, "best_metric"), *checkpoint_name = json_object_get(root, "best_model_checkpoint");
    const char *name = json_is_string(checkpoint_name) ? strrchr(json_string_value(checkpoint_name), '/') : NULL;
    if (json_is_number(best) && name) {
        p->best_metric = json_number_value(best);
        p->best_step = checkpoint_step(name + 1);
    }
    json_t *counter = json_object_get(json_object_get(json_object_get(json_object_get(root, "stateful_callbacks"),
                                                                      "EarlyStoppingCallback"), "attributes"),
                                      "early_stopping_patience_counter");
    if (json_is_number(counter)) {
        /* Checked before the cast: a double beyond long's range (1e300) converts to nothing
         * defined, and a fraction is no count of evaluations. */
        double evals = json_number_value(counter);
        if (!(evals >= 0 && evals <= 1e15) || evals != floor(evals)) {
            json_decref(root);
            return bp_err_set(err, "early_stopping_patience_counter %g is not a count of evaluations (%s)", evals, path);
        }
        p->patience_counter = (long)evals;
    }
    json_decref(root);
    return (*s)->log ? 1 : bp_err_set(err, "out of memory (%s)", path);
}

/* ---- the folder ------------------------------------------------------------------------ */

int td_checkpoint_path(const char *dir, long step, char *buf, size_t size, bp_err *err) {
    if (snprintf(buf, size, "%s/checkpoint-%ld", dir, step) >= (int)size) return bp_err_set(err, "path too long (%.200s...)", dir);
    return 0;
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

long td_list_checkpoints(const char *dir, long **steps, bp_err *err) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : bp_err_set(err, "cannot list: %s (%s)", strerror(errno), dir);
    long n = 0, cap = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        long step = checkpoint_step(e->d_name);
        if (step < 0 || snprintf(path, sizeof path, "%s/%s/" OPTIMIZER_FILE, dir, e->d_name) >= (int)sizeof path ||
            !file_exists(path))
            continue;
        if (n == cap) {
            long *grown = realloc(*steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *grown);
            if (!grown) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return bp_err_set(err, "out of memory (%s)", dir);
            }
            *steps = grown;
        }
        (*steps)[n++] = step;
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof **steps, cmp_long);
    return n;
}

int td_resume_folder(const char *path, char *buf, size_t size, bp_err *err) {
    char probe[4096];
    if (path_join(probe, sizeof probe, path, OPTIMIZER_FILE, err)) return -1;
    if (file_exists(probe)) {
        if (snprintf(buf, size, "%s", path) >= (int)size) return bp_err_set(err, "path too long (%.200s...)", path);
        return 0;
    }
    long *steps;
    long n = td_list_checkpoints(path, &steps, err);
    if (n < 0) return -1;
    int rc = n ? td_checkpoint_path(path, steps[n - 1], buf, size, err)
               : bp_err_set(err, "no checkpoint to resume: neither %s nor a checkpoint-STEP folder in it (%s)",
                            OPTIMIZER_FILE, path);
    free(steps);
    return rc;
}

static int is_checkpoint_file(const char *name) {
    for (int i = 0; checkpoint_files[i]; i++)
        if (!strcmp(name, checkpoint_files[i])) return 1;
    return 0;
}

/* Remove a checkpoint folder: its own files, then itself; one that holds anything else is left
 * whole, before a file of it is touched. */
static int remove_checkpoint(const char *dir, long step, bp_err *err) {
    char folder[4096], path[4096];
    if (td_checkpoint_path(dir, step, folder, sizeof folder, err)) return -1;
    DIR *d = opendir(folder);
    if (!d) return bp_err_set(err, "cannot list: %s (%s)", strerror(errno), folder);
    struct dirent *e;
    int foreign = 0;
    while (!foreign && (e = readdir(d)) != NULL)
        foreign = strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !is_checkpoint_file(e->d_name);
    closedir(d);
    if (foreign) return bp_err_set(err, "checkpoint folder holds other files: kept (%s)", folder);
    for (int i = 0; checkpoint_files[i]; i++) {
        if (path_join(path, sizeof path, folder, checkpoint_files[i], err)) return -1;
        if (unlink(path) && errno != ENOENT) return bp_err_set(err, "cannot remove: %s (%s)", strerror(errno), path);
    }
    if (rmdir(folder)) return bp_err_set(err, "cannot remove the folder: %s (%s)", strerror(errno), folder);
    return 0;
}

int td_rotate(const char *dir, long limit, long keep_step, long *removed, bp_err *err) {
    if (removed) *removed = 0;
    long *steps;
    long n = td_list_checkpoints(dir, &steps, err);
    if (n <= 0) return (int)n;
    /* the best goes last, so it is removed last (the Trainer's _sorted_checkpoints) */
    for (long i = 0; i + 1 < n; i++)
        if (steps[i] == keep_step) {
            memmove(steps + i, steps + i + 1, (size_t)(n - 1 - i) * sizeof *steps);
            steps[n - 1] = keep_step;
            break;
        }
    if (limit == 1 && keep_step >= 0 && steps[n - 1] == keep_step && n > 1 && steps[n - 2] > keep_step) limit = 2;
    int rc = 0;
    bp_err first;
    for (long i = 0; i + limit < n; i++) {
        if (remove_checkpoint(dir, steps[i], rc ? &first : err)) rc = -1;
        else if (removed) (*removed)++;
    }
    free(steps);
    return rc;
}

/* DIR/NAME becomes a link to (or copy of) FROM, atomically. */
static int publish_file(const char *from, const char *dir, const char *name, bp_err *err) {
    char to[4096], tmp[4200];
    if (path_join(to, sizeof to, dir, name, err)) return -1;
    snprintf(tmp, sizeof tmp, "%s/.%s.publish-%ld", dir, name, (long)getpid());
    unlink(tmp);
    if (link(from, tmp) == 0) {
        if (rename(tmp, to) == 0) return 0;
        int e = errno;
        unlink(tmp);
        return bp_err_set(err, "cannot rename into place: %s (%s)", strerror(e), to);
    }
    return af_copy_file(from, to, err);   /* no links here (another file system, FAT): copy */
}

int td_publish(const char *dir, const char *checkpoint, bp_err *err) {
    char from[4096];
    for (int i = 0; checkpoint_files[i]; i++) {
        if (!strcmp(checkpoint_files[i], OPTIMIZER_FILE) || !strcmp(checkpoint_files[i], STATE_FILE)) continue;
        if (path_join(from, sizeof from, checkpoint, checkpoint_files[i], err)) return -1;
        if (file_exists(from) && publish_file(from, dir, checkpoint_files[i], err)) return -1;
    }
    if (path_join(from, sizeof from, dir, OPTIMIZER_FILE, err)) return -1;
    if (unlink(from) && errno != ENOENT) return bp_err_set(err, "cannot remove: %s (%s)", strerror(errno), from);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd)) {
        int e = errno;
        if (fd >= 0) close(fd);
        return bp_err_set(err, "cannot sync the folder: %s (%s)", strerror(e), dir);
    }
    close(fd);
    return 0;
}

/* Everything of checkpoint-STEP into FOLDER (the save's temporary folder). */
static int write_checkpoint(const td_save_request *q, const char *folder, bp_err *err) {
    char path[4096];
    if (model_write_checkpoint_files(q->m, q->opt, q->state, folder, q->labels, q->n_labels, q->vocab_path, err) ||
        (q->vocab_path && td_write_tokenizer_files(folder, q->vocab_path, q->lowercase, q->model_max_length, err)) ||
        path_join(path, sizeof path, folder, STATE_FILE, err))
        return -1;
    return td_state_write(q->log, q->progress, q->dir, path, err);
}

int td_write_run_state(const char *dir, const td_state *log, const td_progress *progress, bp_err *err) {
    char path[4096];
    if (path_join(path, sizeof path, dir, STATE_FILE, err)) return -1;
    return td_state_write(log, progress, dir, path, err);
}

int td_save(const td_save_request *q, bp_err *err) {
    char folder[4096];
    if (af_make_dir(q->dir, err) || td_checkpoint_path(q->dir, q->state->step, folder, sizeof folder, err)) return -1;
    ad_dir save;
    if (ad_begin(&save, folder, (const char *const *)checkpoint_files, err)) return -1;
    if (write_checkpoint(q, save.tmp_path, err)) {
        bp_err inner = *err;
        ad_abort(&save);
        return bp_err_set(err, "checkpoint not saved: %s", inner.msg);
    }
    if (ad_commit(&save, err) || td_write_run_state(q->dir, q->log, q->progress, err) ||
        (q->publish && td_publish(q->dir, folder, err)))
        return -1;
    if (q->total_limit <= 0) return 0;
    return td_rotate(q->dir, q->total_limit, q->progress->best_step, NULL, err) ? 1 : 0;
}
