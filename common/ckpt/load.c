/* ckpt/load.c — format-independent checkpoint opening and name matching (see ckpt/load.h).
 * Must never: know the model's structure (only names, shapes and dtypes), print, or exit. */
#include "ckpt/load.h"

#include "base/atomic_dir.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- opening ------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

void ckpt_close(ckpt_source *source) {
    if (!source) return;
    st_close(source->st);
    tb_close(source->tb);
    tf_close(source->tf);
    free(source->path);
    free(source);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (path) snprintf(path, n, "%s/%s", dir, name);
    return path;
}

/* The weights file in DIR, as transformers picks it; Google's TF checkpoint last. */
static char *ckpt_pick_file(const char *dir, bp_err *err) {
    static const char *const names[] = {"model.safetensors", "pytorch_model.bin", "bert_model.ckpt.index"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = join_path(dir, names[i]);
        if (!path) {
            bp_err_set(err, "out of memory (%s)", dir);
            return NULL;
        }
        if (file_exists(path)) return path;
        free(path);
    }
    char *index = join_path(dir, "model.safetensors.index.json");
    int sharded = index && file_exists(index);
    free(index);
    bp_err_set(err, sharded ? "sharded checkpoints (model.safetensors.index.json) are not supported (%s)"
                            : "no model.safetensors, pytorch_model.bin or bert_model.ckpt.index in the checkpoint directory (%s)",
               dir);
    return NULL;
}

/* The error for a weights file of no format we know: what it is not, what it starts with. */
static void ckpt_describe_unknown(const char *path, const unsigned char *magic, size_t got, bp_err *err) {
    if (got >= 16 && memcmp(magic, "version https://", 16) == 0) {
        bp_err_set(err, "a Git LFS pointer, not the weights: fetch the file itself (git lfs pull) (%s)", path);
        return;
    }
    char start[40] = "";
    for (size_t i = 0, used = 0; i < got && i < 8; i++)
        used += (size_t)snprintf(start + used, sizeof start - used, "%s%02x", i ? " " : "", magic[i]);
    bp_err_set(err, "not a checkpoint: neither safetensors (8-byte length, then '{'), a torch.save zip nor a legacy torch "
               "pickle; its %zu first bytes are %s (%s)", got < 8 ? got : (size_t)8, got ? start : "(empty file)", path);
}

ckpt_source *ckpt_open(const char *path, bp_err *err) {
    if (ad_recover(path, err) != 0) return NULL; /* a checkpoint folder whose swap a stop interrupted */
    struct stat st;
    if (ends_with(path, ".ckpt") || ends_with(path, ".ckpt.index")) st.st_mode = S_IFREG; /* a TF prefix need not exist */
    else if (stat(path, &st) != 0) {
        bp_err_set(err, "cannot open checkpoint: %s (%s)", strerror(errno), path);
        return NULL;
    }
    ckpt_source *source = calloc(1, sizeof *source);
    if (!source) {
        bp_err_set(err, "out of memory (%s)", path);
        return NULL;
    }
    source->path = S_ISDIR(st.st_mode) ? ckpt_pick_file(path, err) : strdup(path);
    if (!source->path) {
        if (!S_ISDIR(st.st_mode)) bp_err_set(err, "out of memory (%s)", path);
        free(source);
        return NULL;
    }
    if (ends_with(source->path, ".ckpt") || ends_with(source->path, ".ckpt.index")) {
        source->format = "tensorflow";
        if (!(source->tf = tf_open(source->path, err))) {
            ckpt_close(source);
            return NULL;
        }
        source->tensors = source->tf->tensors;
        source->n_tensors = source->tf->n_tensors;
        return source;
    }
    unsigned char magic[48] = {0};
    FILE *fp = fopen(source->path, "rb");
    size_t got = fp ? fread(magic, 1, sizeof magic, fp) : 0;
    if (fp) fclose(fp);
    /* safetensors: an 8-byte length (any bytes) then '{'. torch: a zip (>= 1.6) or a pickle
     * starting with the magic number (legacy). A file that is none of them is named for what
     * it is not, except a *.safetensors file, which gets st_open's precise diagnosis. */
    int is_safetensors = got >= 9 && magic[8] == '{';
    int is_zip = got >= 4 && memcmp(magic, "PK\x03\x04", 4) == 0;
    int is_pickle = got >= 3 && magic[0] == 0x80 && magic[1] <= 5 && magic[2] == 0x8a;
    if (!is_safetensors && (is_zip || is_pickle)) {
        source->format = "pytorch";
        source->tb = tb_open(source->path, err);
        if (source->tb) {
            source->tensors = source->tb->tensors;
            source->n_tensors = source->tb->n_tensors;
        }
    } else if (is_safetensors || ends_with(source->path, ".safetensors")) {
        source->format = "safetensors";
        source->st = st_open(source->path, err);
        if (source->st) {
            source->tensors = source->st->tensors;
            source->n_tensors = source->st->n_tensors;
        }
    } else {
        ckpt_describe_unknown(source->path, magic, got, err);
    }
    if (!source->st && !source->tb) {
        ckpt_close(source);
        return NULL;
    }
    return source;
}

/* ---- matching ------------------------------------------------------------------------ */

typedef struct named_index {
    char name[sizeof ((bp_named_tensor *)0)->name];
    size_t index;
} named_index;

static int named_index_order(const void *a, const void *b) {
    return strcmp(((const named_index *)a)->name, ((const named_index *)b)->name);
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* Old TF-converted checkpoints call LayerNorm's parameters gamma and beta. */
static void fix_legacy_name(char *name, size_t cap) {
    size_t n = strlen(name);
    if (ends_with(name, ".gamma")) snprintf(name + n - 6, cap - (n - 6), ".weight");
    else if (ends_with(name, ".beta")) snprintf(name + n - 5, cap - (n - 5), ".bias");
}

static void format_shape(const bp_named_tensor *t, char *out, size_t cap) {
    size_t used = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < t->ndim && used < cap; d++)
        used += (size_t)snprintf(out + used, cap - used, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (used < cap) snprintf(out + used, cap - used, "]");
}

/* Copy SRC into DST, converting to f32 when DST is f32. */
static int copy_tensor(const bp_named_tensor *dst, const bp_named_tensor *src, const char *label, bp_err *err) {
    int64_t numel = bp_numel(src->shape, src->ndim);
    if (dst->nbytes != (size_t)numel * bp_dtype_size(dst->dtype) || (numel && !dst->data))
        return bp_err_set(err, "parameter buffer holds %zu bytes, not %lld %s elements (%s, tensor %s)", dst->nbytes,
                          (long long)numel, bp_dtype_name(dst->dtype), label, dst->name);
    if (src->dtype == dst->dtype) {
        if (numel) memcpy(dst->data, src->data, dst->nbytes);
        return 0;
    }
    if (dst->dtype != BP_F32 || !(src->dtype == BP_F16 || src->dtype == BP_BF16 || src->dtype == BP_F64))
        return bp_err_set(err, "checkpoint dtype %s cannot be loaded into a %s parameter (%s, tensor %s)",
                          bp_dtype_name(src->dtype), bp_dtype_name(dst->dtype), label, src->name);
    /* memcpy per element: checkpoint data need not be aligned. */
    const unsigned char *in = src->data;
    float *out = dst->data;
    for (int64_t i = 0; i < numel; i++) {
        if (src->dtype == BP_F64) {
            double v;
            memcpy(&v, in + 8 * i, 8);
            out[i] = (float)v;
        } else {
            uint16_t h;
            memcpy(&h, in + 2 * i, 2);
            out[i] = src->dtype == BP_F16 ? bp_f16_to_f32(h) : bp_bf16_to_f32(h);
        }
    }
    return 0;
}

static int string_order(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void ckpt_report_free(ckpt_report *report) {
    for (size_t i = 0; i < report->n_missing; i++) free(report->missing[i]);
    for (size_t i = 0; i < report->n_unexpected; i++) free(report->unexpected[i]);
    for (size_t i = 0; i < report->n_mismatched; i++) free(report->mismatched[i]);
    free(report->missing);
    free(report->unexpected);
    free(report->mismatched);
    memset(report, 0, sizeof *report);
}

static int matches_any(const char *name, const char *const *substrings) {
    for (size_t i = 0; substrings && substrings[i]; i++)
        if (strstr(name, substrings[i])) return 1;
    return 0;
}

/* A parameter whose checkpoint tensor has another shape: an error, or (ignoring sizes) one line
 * of the report as transformers words it, the parameter left as initialised. */
static int mismatched(const bp_named_tensor *param, const bp_named_tensor *src, int ignore, const char *ckpt_label,
                      ckpt_report *report, bp_err *err) {
    char want[128], got[128];
    format_shape(param, want, sizeof want);
    format_shape(src, got, sizeof got);
    if (!ignore)
        return bp_err_set(err, "size mismatch for %s: checkpoint has shape %s, the model expects %s (%s)", src->name, got,
                          want, ckpt_label);
    char *line = NULL;
    if (asprintf(&line, "- %s: found shape torch.Size(%s) in the checkpoint and torch.Size(%s) in the model instantiated",
                 param->name, got, want) < 0)
        return bp_err_set(err, "out of memory (%s)", ckpt_label);
    report->mismatched[report->n_mismatched++] = line;
    return 0;
}

static int load_into(const bp_named_tensor *params, size_t n_params, unsigned char *loaded, const bp_named_tensor *ckpt,
                     size_t n_ckpt, const char *ckpt_label, const char *base_prefix,
                     const char *const *ignore_unexpected, int ignore_sizes, ckpt_report *report, bp_err *err) {
    memset(report, 0, sizeof *report);
    named_index *names = calloc(n_ckpt ? n_ckpt : 1, sizeof *names);
    unsigned char *used = calloc(n_ckpt ? n_ckpt : 1, 1);
    report->missing = calloc(n_params ? n_params : 1, sizeof(char *));
    report->unexpected = calloc(n_ckpt ? n_ckpt : 1, sizeof(char *));
    report->mismatched = calloc(n_params ? n_params : 1, sizeof(char *));
    char prefix[64] = "";
    int rc = -1;
    if (!names || !used || !report->missing || !report->unexpected || !report->mismatched) {
        bp_err_set(err, "out of memory (%s)", ckpt_label);
        goto out;
    }
    if (base_prefix && base_prefix[0]) snprintf(prefix, sizeof prefix, "%s.", base_prefix);
    size_t n_names = 0;
    int has_prefix = 0, expects_prefix = 0;
    for (size_t i = 0; i < n_ckpt; i++) {
        if (strstr(ckpt[i].name, "position_ids")) continue; /* a buffer, not a weight */
        snprintf(names[n_names].name, sizeof names[n_names].name, "%s", ckpt[i].name);
        fix_legacy_name(names[n_names].name, sizeof names[n_names].name);
        names[n_names].index = i;
        if (prefix[0] && starts_with(names[n_names].name, prefix)) has_prefix = 1;
        n_names++;
    }
    for (size_t i = 0; i < n_params && prefix[0]; i++)
        if (starts_with(params[i].name, prefix)) expects_prefix = 1;
    qsort(names, n_names, sizeof *names, named_index_order);
    for (size_t i = 1; i < n_names; i++)
        if (strcmp(names[i - 1].name, names[i].name) == 0) {
            bp_err_set(err, "checkpoint tensors %s and %s both mean %s (%s)", ckpt[names[i - 1].index].name,
                       ckpt[names[i].index].name, names[i].name, ckpt_label);
            goto out;
        }
    for (size_t p = 0; p < n_params; p++) {
        if (loaded) loaded[p] = 0;
        if (strstr(params[p].name, "position_ids")) continue;
        named_index key;
        const char *name = params[p].name;
        if (expects_prefix && !has_prefix && starts_with(name, prefix)) name += strlen(prefix);
        if (has_prefix && !expects_prefix) snprintf(key.name, sizeof key.name, "%s%s", prefix, name);
        else snprintf(key.name, sizeof key.name, "%s", name);
        const named_index *hit = bsearch(&key, names, n_names, sizeof *names, named_index_order);
        if (!hit) {
            if (!(report->missing[report->n_missing++] = strdup(key.name))) {
                bp_err_set(err, "out of memory (%s)", ckpt_label);
                goto out;
            }
            continue;
        }
        const bp_named_tensor *src = &ckpt[hit->index];
        int same = src->ndim == params[p].ndim;
        for (int d = 0; d < src->ndim && same; d++) same = src->shape[d] == params[p].shape[d];
        if (!same) {
            if (mismatched(&params[p], src, ignore_sizes, ckpt_label, report, err)) goto out;
            used[hit - names] = 1;   /* used: replaced, not unexpected */
            continue;
        }
        if (copy_tensor(&params[p], src, ckpt_label, err) != 0) goto out;
        used[hit - names] = 1;
        if (loaded) loaded[p] = 1;
    }
    for (size_t i = 0; i < n_names; i++) {
        if (used[i] || matches_any(names[i].name, ignore_unexpected)) continue;
        if (!(report->unexpected[report->n_unexpected++] = strdup(names[i].name))) {
            bp_err_set(err, "out of memory (%s)", ckpt_label);
            goto out;
        }
    }
    qsort(report->missing, report->n_missing, sizeof(char *), string_order);
    /* report->unexpected is already in name order. */
    rc = 0;
out:
    if (rc != 0) ckpt_report_free(report);
    free(names);
    free(used);
    return rc;
}

int ckpt_load_into(const bp_named_tensor *params, size_t n_params, unsigned char *loaded,
                   const bp_named_tensor *ckpt, size_t n_ckpt, const char *ckpt_label, const char *base_prefix,
                   const char *const *ignore_unexpected, ckpt_report *report, bp_err *err) {
    return load_into(params, n_params, loaded, ckpt, n_ckpt, ckpt_label, base_prefix, ignore_unexpected, 0, report, err);
}

int ckpt_load_into_ignoring_sizes(const bp_named_tensor *params, size_t n_params, unsigned char *loaded,
                                  const bp_named_tensor *ckpt, size_t n_ckpt, const char *ckpt_label,
                                  const char *base_prefix, const char *const *ignore_unexpected, ckpt_report *report,
                                  bp_err *err) {
    return load_into(params, n_params, loaded, ckpt, n_ckpt, ckpt_label, base_prefix, ignore_unexpected, 1, report, err);
}

/* "['a', 'b']" as Python prints a list of plain names. */
static char *python_list(char **items, size_t n) {
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) cap += strlen(items[i]) + 4;
    char *out = malloc(cap), *at = out;
    if (!out) return NULL;
    *at++ = '[';
    for (size_t i = 0; i < n; i++) at += sprintf(at, i ? ", '%s'" : "'%s'", items[i]);
    *at++ = ']';
    *at = '\0';
    return out;
}

static char *format_line(char **items, size_t n, const char *fmt_before, const char *a, const char *b) {
    if (n == 0) return NULL;
    char *list = python_list(items, n), *line = NULL;
    if (list && asprintf(&line, fmt_before, a, b, list) < 0) line = NULL;
    free(list);
    return line;
}

char *ckpt_format_unexpected(const ckpt_report *report, const char *ckpt_label, const char *model_class) {
    return format_line(report->unexpected, report->n_unexpected,
                       "Some weights of the model checkpoint at %s were not used when initializing %s: %s",
                       ckpt_label, model_class);
}

char *ckpt_format_mismatched(const ckpt_report *report, const char *ckpt_label, const char *model_class) {
    if (report->n_mismatched == 0) return NULL;
    size_t cap = strlen(ckpt_label) + strlen(model_class) + 300;
    for (size_t i = 0; i < report->n_mismatched; i++) cap += strlen(report->mismatched[i]) + 1;
    char *out = malloc(cap);
    if (!out) return NULL;
    int n = snprintf(out, cap, "Some weights of %s were not initialized from the model checkpoint at %s and are newly "
                     "initialized because the shapes did not match:", model_class, ckpt_label);
    for (size_t i = 0; i < report->n_mismatched; i++) n += snprintf(out + n, cap - (size_t)n, "\n%s", report->mismatched[i]);
    snprintf(out + n, cap - (size_t)n, "\nYou should probably TRAIN this model on a down-stream task to be able to use it "
             "for predictions and inference.");
    return out;
}

char *ckpt_format_missing(const ckpt_report *report, const char *ckpt_label, const char *model_class) {
    return format_line(report->missing, report->n_missing,
                       "Some weights of %s were not initialized from the model checkpoint at %s and are newly initialized: %s",
                       model_class, ckpt_label);
}

/* A and B (either may be NULL) as one text, one per line; both are freed. */
static char *join_lines(char *a, char *b) {
    if (!a) return b;
    if (!b) return a;
    size_t n = strlen(a) + strlen(b) + 2;
    char *both = malloc(n);
    if (both) snprintf(both, n, "%s\n%s", a, b);
    free(a);
    free(b);
    return both;
}

char *ckpt_format_notes(const ckpt_report *report, const char *ckpt_label, const char *model_class) {
    return join_lines(join_lines(ckpt_format_unexpected(report, ckpt_label, model_class),
                                 ckpt_format_missing(report, ckpt_label, model_class)),
                      ckpt_format_mismatched(report, ckpt_label, model_class));
}
