/* test_checkpoint_dir.c — a checkpoint folder is saved whole or not at all (ckpt/model_io.h,
 * base/atomic_dir.h).
 *
 * A tiny random BERT with an optimizer is saved with model_save_checkpoint; each case then
 * checks what a resume would read: model_open and model_load_train_state must find one save
 * whole, never weights of one save beside optimizer state of another. The full-disk case runs
 * on a small tmpfs mounted in a private mount namespace of a child process (as root, or in a
 * user namespace); where mounting is not allowed it is skipped with the reason. The states a
 * killed save can leave (DIR.new, DIR.old, DIR.tmp-PID) are built by hand, the way the swap's
 * renames leave them.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "base/atomic_dir.h"
#include "ckpt/model_io.h"
#include "ckpt/trainer_dir.h"
#include "model/model.h"
#include "tap.h"

static char tmpdir[] = "/tmp/bp-ckpt-dir-XXXXXX";
static backend *be;

static const char *in_tmp(const char *name) {
    static char paths[4][1200];
    static int which;
    which = (which + 1) % 4;
    snprintf(paths[which], sizeof paths[which], "%s/%s", tmpdir, name);
    return paths[which];
}

static const char *in_dir(const char *dir, const char *name) {
    static char paths[4][1200];
    static int which;
    which = (which + 1) % 4;
    snprintf(paths[which], sizeof paths[which], "%s/%s", dir, name);
    return paths[which];
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int same_file_bytes(const char *path, const char *bytes, size_t len) {
    size_t got_len;
    char *got = slurp(path, &got_len);
    int same = got && bytes && got_len == len && memcmp(got, bytes, len) == 0;
    free(got);
    return same;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static int run(const char *cmd) {
    int rc = system(cmd);
    if (rc != 0) tap_diag("command failed (%d): %s", rc, cmd);
    return rc;
}

/* ---- a tiny model and its training state -------------------------------------------- */

typedef struct trained {
    model *m;
    optimizer *opt;
    bert_train_state state;
} trained;

static const char *vocab_path;

/* A model with weights from SEED, optimizer moments set to SEED, and state step STEP. */
static int make_trained(trained *t, uint64_t seed, long step) {
    bp_err err = {{0}};
    model_config cfg;
    model_config_default(&cfg);
    cfg.bert.vocab_size = 16;
    cfg.bert.hidden_size = 16;
    cfg.bert.num_hidden_layers = 1;
    cfg.bert.num_attention_heads = 2;
    cfg.bert.intermediate_size = 32;
    cfg.bert.max_position_embeddings = 16;
    cfg.bert.num_labels = 2;
    memset(t, 0, sizeof *t);
    t->m = model_create(&cfg, be, 2, 8, MODEL_FOR_TRAINING, &err);
    if (!t->m || model_init_weights(t->m, seed, &err)) {
        tap_diag("model: %s", err.msg);
        return -1;
    }
    optim_config oc;
    optim_config_default(&oc);
    t->opt = model_optim_create(t->m, &oc, &err);
    float *moments = t->opt ? malloc(t->m->num_params * sizeof *moments) : NULL;
    if (!moments) {
        tap_diag("optimizer: %s", err.msg);
        return -1;
    }
    /* The seed marks all three parts of a save: the first weight, the first moment and the
     * state's dropout_seed; a resume that finds them different mixes two saves. */
    int rc = model_copy_to_host(t->m, NULL, MODEL_STATE_PARAMS, 0, moments, &err);
    moments[0] = (float)seed;
    rc = rc || model_copy_from_host(t->m, NULL, MODEL_STATE_PARAMS, 0, moments, &err);
    for (size_t i = 0; i < t->m->num_params; i++) moments[i] = (float)seed + (float)i * 1e-3f;
    /* AdamW's two buffers: exp_avg, exp_avg_sq */
    rc = rc || model_copy_from_host(t->m, t->opt, MODEL_STATE_OPTIM, 0, moments, &err) ||
         model_copy_from_host(t->m, t->opt, MODEL_STATE_OPTIM, 1, moments, &err);
    free(moments);
    t->state = (bert_train_state){.step = step, .epoch = 0, .batches_consumed = step * 4, .dropout_seed = seed};
    return rc ? -1 : 0;
}

static void trained_free(trained *t) {
    optim_free(t->opt);
    model_free(t->m);
}

static int save(trained *t, const char *dir, bp_err *err) {
    static const char *const labels[] = {"negative", "positive"};
    err->msg[0] = '\0';
    return model_save_checkpoint(t->m, t->opt, &t->state, dir, labels, 2, vocab_path, err);
}

/* The step a resume from DIR would continue at, or -1 when DIR does not load as one whole
 * checkpoint (weights and optimizer state). */
static long resume_step(const char *dir, bp_err *err) {
    err->msg[0] = '\0';
    model_config cfg;
    if (model_read_config(dir, BERT_HEAD_CLASSIFICATION, 0, &cfg, NULL, err)) return -1;
    model *m = model_open(&cfg, dir, MODEL_LOAD_MATCHING, MODEL_FOR_TRAINING, be, 2, 8, 1, NULL, err);
    if (!m) return -1;
    optim_config oc;
    optim_config_default(&oc);
    optimizer *opt = model_optim_create(m, &oc, err);
    bert_train_state state = {0};
    long step = opt && model_load_train_state(m, opt, dir, &state, err) == 0 ? state.step : -1;
    /* Weights, moments and state must come from one save (see make_trained). */
    float *moments = step >= 0 ? malloc(m->num_params * sizeof *moments) : NULL;
    float *weights = step >= 0 ? malloc(m->num_params * sizeof *weights) : NULL;
    if (moments && weights && model_copy_to_host(m, opt, MODEL_STATE_OPTIM, 0, moments, err) == 0 &&
        model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, weights, err) == 0 &&
        (moments[0] != (float)state.dropout_seed || weights[0] != (float)state.dropout_seed)) {
        bp_err_set(err, "weights of seed %g, optimizer moments of seed %g, state of seed %llu: two saves mixed",
                   weights[0], moments[0], (unsigned long long)state.dropout_seed);
        step = -1;
    }
    free(moments);
    free(weights);
    optim_free(opt);
    model_free(m);
    return step;
}

/* ---- saving, keeping, refusing ------------------------------------------------------- */

static void test_save_and_replace(void) {
    trained first, second;
    if (make_trained(&first, 11, 1) || make_trained(&second, 22, 2)) return;
    bp_err err = {{0}};
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", in_tmp("ck"));
    tap_ok(save(&first, dir, &err) == 0, "first save %s", err.msg);
    TAP_EQ_INT(resume_step(dir, &err), 1, "it resumes at step 1 %s", err.msg);
    FILE *f = fopen(in_dir(dir, "README.md"), "w");
    if (f) fputs("notes of ours\n", f), fclose(f);
    tap_ok(save(&second, dir, &err) == 0, "second save replaces the folder %s", err.msg);
    TAP_EQ_INT(resume_step(dir, &err), 2, "it resumes at step 2 %s", err.msg);
    size_t len;
    char *readme = slurp(in_dir(dir, "README.md"), &len);
    tap_ok(readme && len == 14 && memcmp(readme, "notes of ours\n", 14) == 0, "a file the save does not write is kept");
    free(readme);
    char leftovers[1400];
    snprintf(leftovers, sizeof leftovers, "ls -d '%s'.* 2>/dev/null | grep -q .", dir);
    tap_ok(system(leftovers) != 0, "nothing is left beside the folder (no .new, .old, .tmp-PID)");

    /* A sub-folder could not be carried over atomically: the save is refused, DIR untouched. */
    mkdir(in_dir(dir, "runs"), 0755);
    int rc = save(&first, dir, &err);
    tap_ok(rc == -1 && strstr(err.msg, "holds runs") && strstr(err.msg, "ck") && !strchr(err.msg, '\n'),
           "a folder holding a sub-folder is refused: %s", err.msg);
    TAP_EQ_INT(resume_step(dir, &err), 2, "and still resumes at step 2 %s", err.msg);
    rmdir(in_dir(dir, "runs"));

    /* The folder given through a symbolic link: the link keeps pointing at the new save. */
    symlink("ck", in_tmp("ck-link"));
    tap_ok(save(&first, in_tmp("ck-link"), &err) == 0, "saving through a symbolic link %s", err.msg);
    struct stat st;
    tap_ok(lstat(in_tmp("ck-link"), &st) == 0 && S_ISLNK(st.st_mode), "the link is still a link");
    TAP_EQ_INT(resume_step(in_tmp("ck-link"), &err), 1, "it resumes at step 1 through the link %s", err.msg);
    trained_free(&first);
    trained_free(&second);
}

/* The states a save killed between its renames leaves behind; each must load as one save. */
static void test_interrupted_swaps(void) {
    trained first, second;
    if (make_trained(&first, 11, 1) || make_trained(&second, 22, 2)) return;
    bp_err err = {{0}};
    char cmd[8192], a[256], b[256];
    snprintf(a, sizeof a, "%s", in_tmp("a"));
    snprintf(b, sizeof b, "%s", in_tmp("b"));
    save(&first, a, &err);
    save(&second, b, &err);

    /* Killed after "DIR -> DIR.old", before "DIR.new -> DIR": DIR is missing. */
    snprintf(cmd, sizeof cmd, "rm -rf '%s/x'* && cp -r '%s' '%s/x.old' && cp -r '%s' '%s/x.new'", tmpdir, a, tmpdir, b, tmpdir);
    run(cmd);
    TAP_EQ_INT(resume_step(in_tmp("x"), &err), 2, "DIR missing, DIR.new complete: the loader moves the new save in %s", err.msg);
    tap_ok(!exists(in_tmp("x.new")), "DIR.new is gone once recovered");

    snprintf(cmd, sizeof cmd, "rm -rf '%s/x'* && cp -r '%s' '%s/x.old'", tmpdir, a, tmpdir);
    run(cmd);
    TAP_EQ_INT(resume_step(in_tmp("x"), &err), 1, "DIR missing, only DIR.old: the previous save is moved back %s", err.msg);

    /* Killed before the swap: DIR is the old save; a complete DIR.new and a dead save's
     * DIR.tmp-PID lie beside it. The loader takes DIR; the next save clears the rest. */
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s/x'* && cp -r '%s' '%s/x' && cp -r '%s' '%s/x.new' && cp -r '%s' '%s/x.old' && "
             "mkdir '%s/x.tmp-999999999' && cp '%s/model.safetensors' '%s/x.tmp-999999999/'",
             tmpdir, a, tmpdir, b, tmpdir, a, tmpdir, tmpdir, b, tmpdir);
    run(cmd);
    TAP_EQ_INT(resume_step(in_tmp("x"), &err), 1, "DIR and a never swapped-in DIR.new: DIR is what loads %s", err.msg);
    tap_ok(save(&second, in_tmp("x"), &err) == 0, "the next save succeeds over the leftovers %s", err.msg);
    tap_ok(!exists(in_tmp("x.new")) && !exists(in_tmp("x.old")) && !exists(in_tmp("x.tmp-999999999")),
           "and removes DIR.new, DIR.old and a dead save's DIR.tmp-PID");
    TAP_EQ_INT(resume_step(in_tmp("x"), &err), 2, "it resumes at step 2 %s", err.msg);

    /* A leftover holding something no save put there is never deleted. */
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s/x.old' && echo mine > '%s/x.old/thesis.tex'", a, tmpdir, tmpdir);
    run(cmd);
    int rc = save(&first, in_tmp("x"), &err);
    tap_ok(rc == -1 && strstr(err.msg, "thesis.tex") && exists(in_tmp("x.old/thesis.tex")),
           "a DIR.old holding a foreign file stops the save and is kept: %s", err.msg);
    TAP_EQ_INT(resume_step(in_tmp("x"), &err), 2, "DIR still resumes at step 2 %s", err.msg);
    trained_free(&first);
    trained_free(&second);
}

/* ---- a full disk --------------------------------------------------------------------- */

/* Results travel from the child (which owns the mount) to the parent, which prints TAP. */
typedef struct verdict {
    int skipped;
    char skip_why[200];
    int n;
    struct { int ok; char what[400]; } items[8];
} verdict;

static void note(verdict *v, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(verdict *v, int ok, const char *fmt, ...) {
    if (v->n == 8) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->items[v->n].what, sizeof v->items[v->n].what, fmt, ap);
    va_end(ap);
    v->items[v->n++].ok = ok;
}

/* A mount namespace of our own: as root directly, else inside a user namespace. */
static int private_mounts(char *why, size_t why_size) {
    if (unshare(CLONE_NEWNS) != 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
            snprintf(why, why_size, "no mount namespace: %s", strerror(errno));
            return -1;
        }
        char map[64];
        int fd = open("/proc/self/setgroups", O_WRONLY);
        if (fd >= 0) (void)!write(fd, "deny", 4), close(fd);
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        fd = open("/proc/self/uid_map", O_WRONLY);
        int ok = fd >= 0 && write(fd, map, strlen(map)) == (ssize_t)strlen(map);
        if (fd >= 0) close(fd);
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        fd = open("/proc/self/gid_map", O_WRONLY);
        ok = ok && fd >= 0 && write(fd, map, strlen(map)) == (ssize_t)strlen(map);
        if (fd >= 0) close(fd);
        if (!ok) {
            snprintf(why, why_size, "cannot map the user namespace: %s", strerror(errno));
            return -1;
        }
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(why, why_size, "cannot make mounts private: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void full_disk_child(verdict *v) {
    char mnt[1200], dir[1300];
    snprintf(mnt, sizeof mnt, "%s", in_tmp("small"));
    mkdir(mnt, 0755);
    if (private_mounts(v->skip_why, sizeof v->skip_why) != 0 || mount("tmpfs", mnt, "tmpfs", 0, "size=16m") != 0) {
        if (!v->skip_why[0]) snprintf(v->skip_why, sizeof v->skip_why, "cannot mount a tmpfs: %s", strerror(errno));
        v->skipped = 1;
        return;
    }
    trained first, second;
    if (make_trained(&first, 11, 1) || make_trained(&second, 22, 2)) {
        note(v, 0, "models for the full-disk case");
        return;
    }
    bp_err err = {{0}};
    snprintf(dir, sizeof dir, "%s/ck", mnt);
    note(v, save(&first, dir, &err) == 0, "first save on the tmpfs %s", err.msg);
    size_t weights_len;
    char *weights = slurp(in_dir(dir, "model.safetensors"), &weights_len);
    /* Shrink the tmpfs to what is used plus half a checkpoint: the second save runs out. */
    struct statvfs fs;
    struct stat st_model, st_opt;
    int measured = statvfs(mnt, &fs) == 0 && stat(in_dir(dir, "model.safetensors"), &st_model) == 0 &&
                   stat(in_dir(dir, "optimizer.safetensors"), &st_opt) == 0;
    unsigned long long used = measured ? (unsigned long long)(fs.f_blocks - fs.f_bfree) * fs.f_frsize : 0;
    unsigned long long size = used + (unsigned long long)(st_model.st_size + st_opt.st_size) / 2;
    char options[64];
    snprintf(options, sizeof options, "size=%llu", size);
    int remounted = measured && mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, options) == 0;
    note(v, remounted, "the tmpfs shrunk to %s bytes, half a checkpoint free%s%s", options + 5, remounted ? "" : ": ",
         remounted ? "" : strerror(errno));
    int rc = save(&second, dir, &err);
    note(v, rc == -1 && strstr(err.msg, "No space left on device") && strstr(err.msg, ".safetensors") &&
                strstr(err.msg, "still holds the previous one") && !strchr(err.msg, '\n'),
         "a save that runs out of space fails naming the file: %s", err.msg);
    note(v, same_file_bytes(in_dir(dir, "model.safetensors"), weights, weights_len),
         "the previous weights are still in place, byte for byte");
    long step = resume_step(dir, &err);
    note(v, step == 1, "the previous checkpoint is whole: weights and optimizer state resume at step 1 (%ld) %s", step,
         step == 1 ? "" : err.msg);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "ls -d '%s'.* 2>/dev/null | grep -q .", dir);
    note(v, system(cmd) != 0, "the failed save left nothing beside the folder");

    /* The two calls the train stage makes today (weights, then optimizer state): on a full
     * disk a resume may fail, but never from new weights beside old optimizer state. */
    static const char *const labels[] = {"negative", "positive"};
    char dir2[1300];
    snprintf(dir2, sizeof dir2, "%s/ck2", mnt);
    mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=16m");
    int saved = model_save_pretrained(first.m, dir2, labels, 2, vocab_path, &err) == 0 &&
                model_save_train_state(first.m, first.opt, dir2, &first.state, &err) == 0;
    /* Room for new weights (one page more), not for new optimizer state (twice the weights). */
    unsigned long long page = 4096, weights_pages = ((unsigned long long)st_model.st_size + page - 1) / page * page;
    remounted = saved && statvfs(mnt, &fs) == 0;
    used = (unsigned long long)(fs.f_blocks - fs.f_bfree) * fs.f_frsize;
    snprintf(options, sizeof options, "size=%llu", used + weights_pages + page);
    remounted = remounted && mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, options) == 0;
    rc = remounted && model_save_pretrained(second.m, dir2, labels, 2, vocab_path, &err) == 0 &&
         model_save_train_state(second.m, second.opt, dir2, &second.state, &err) == 0;
    step = resume_step(dir2, &err);
    note(v, remounted && !rc && !strstr(err.msg, "two saves mixed"),
         "weights then optimizer state on a full disk: the save fails and no resume mixes two saves (%s)", err.msg);
    free(weights);
    trained_free(&first);
    trained_free(&second);
    umount(mnt);
}

static void test_full_disk(void) {
    verdict *v = mmap(NULL, sizeof *v, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (v == MAP_FAILED) {
        tap_ok(0, "shared memory for the full-disk child: %s", strerror(errno));
        return;
    }
    memset(v, 0, sizeof *v);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        full_disk_child(v);
        _exit(0);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        tap_ok(0, "the full-disk child ran to its end (status %d)", status);
    } else if (v->skipped) {
        tap_ok(1, "a save on a full disk keeps the previous checkpoint # skip %s", v->skip_why);
    } else {
        for (int i = 0; i < v->n; i++) tap_ok(v->items[i].ok, "%s", v->items[i].what);
    }
    munmap(v, sizeof *v);
}

/* trainer_state.json's patience counter is a count: a number past long's range is an error
 * naming the file, not a cast with no defined result. */
static void test_state_counter(void) {
    static const struct { const char *value; int want_rc; long want; } cases[] = {
        {"3", 1, 3}, {"1e300", -1, 0}, {"-1", -1, 0}, {"2.5", -1, 0},
    };
    char dir[1200], file[1300];
    snprintf(dir, sizeof dir, "%s", in_tmp("state"));
    snprintf(file, sizeof file, "%s/trainer_state.json", dir);
    if (!tap_ok(mkdir(dir, 0755) == 0, "state folder %s", dir)) return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(file, "w");
        if (!tap_ok(f != NULL, "write trainer_state.json")) return;
        fprintf(f, "{\"log_history\": [], \"stateful_callbacks\": {\"EarlyStoppingCallback\": "
                   "{\"attributes\": {\"early_stopping_patience_counter\": %s}}}}\n", cases[i].value);
        if (!tap_ok(fclose(f) == 0, "close trainer_state.json")) return;
        bp_err err = {{0}};
        td_state *s = NULL;
        td_progress p;
        memset(&p, 0, sizeof p);
        int rc = td_state_read(dir, &s, &p, &err);
        if (cases[i].want_rc > 0)
            tap_ok(rc == 1 && p.patience_counter == cases[i].want, "patience counter %s reads back %s", cases[i].value,
                   err.msg);
        else
            tap_ok(rc == -1 && strstr(err.msg, "early_stopping_patience_counter") && strstr(err.msg, "trainer_state.json") &&
                       !strchr(err.msg, '\n'),
                   "patience counter %s refused: %s", cases[i].value, err.msg);
        td_state_free(s);
    }
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        tap_ok(0, "cannot create a temporary directory: %s", strerror(errno));
        return tap_done();
    }
    bp_err err = {{0}};
    be = backend_cpu_create(1, &err);
    if (!tap_ok(be != NULL, "CPU backend %s", err.msg)) return tap_done();
    static char vocab[1200];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", tmpdir);
    FILE *f = fopen(vocab, "w");
    if (f) fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfilm\nwas\ngood\nbad\n.\n", f), fclose(f);
    vocab_path = vocab;
    test_save_and_replace();
    test_interrupted_swaps();
    test_full_disk();
    test_state_counter();
    be->destroy(be);
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", tmpdir);
    if (system(command) != 0) tap_diag("could not remove %s", tmpdir);
    return tap_done();
}
