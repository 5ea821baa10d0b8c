/* test_checkpoint_formats.c — safetensors and torch.save readers, the safetensors writer,
 * config.json, and loading by name, against fixtures made by
 * tests/reference/make_checkpoint_fixtures.py (tests/fixtures/ckpt, or $BP_CKPT_FIXTURES).
 *
 * Corrupt inputs are made here, in a temporary directory, by truncating and patching copies
 * of the fixtures or by zipping hand-written pickles; each must give its one-line error and
 * never crash (this runs under ASan/UBSan).
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/limits.h"
#include "ckpt/load.h"
#include "ckpt/hfconfig.h"
#include "ckpt/safetensors.h"
#include "tap.h"
#include "ckpt/tfckpt.h"
#include "ckpt/torchbin.h"

static char fixtures[1024];
static char tmpdir[] = "/tmp/bp-ckpt-test-XXXXXX";

/* DIR/NAME in one of four rotating buffers, so a call can take two such paths. */
static const char *in_dir(const char *dir, const char *name) {
    static char path[4][1200];
    static int which;
    which = (which + 1) % 4;
    snprintf(path[which], sizeof path[which], "%s/%s", dir, name);
    return path[which];
}
#define fixture(name) in_dir(fixtures, name)
#define temp(name) in_dir(tmpdir, name)

/* ---- file helpers ------------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static int spit(const char *path, const void *bytes, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    int ok = fwrite(bytes, 1, len, fp) == len;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

/* A copy of BYTES[0..LEN) with FROM replaced by TO (same length) at its first occurrence. */
static unsigned char *patched(const unsigned char *bytes, size_t len, const char *from, const char *to) {
    unsigned char *copy = malloc(len);
    memcpy(copy, bytes, len);
    unsigned char *at = memmem(copy, len, from, strlen(from));
    if (!at || strlen(from) != strlen(to)) {
        free(copy);
        return NULL;
    }
    memcpy(at, to, strlen(to));
    return copy;
}

static int one_line(const bp_err *err) { return err->msg[0] && !strchr(err->msg, '\n'); }

/* ---- expected values ---------------------------------------------------------------- */

static json_t *expected_tensors, *expected_tf_only;

static double element(const bp_named_tensor *t, int64_t i) {
    const unsigned char *p = (const unsigned char *)t->data + (size_t)i * bp_dtype_size(t->dtype);
    float f;
    double d;
    int64_t l;
    uint16_t h;
    switch (t->dtype) {
    case BP_F32: memcpy(&f, p, 4); return f;
    case BP_F64: memcpy(&d, p, 8); return d;
    case BP_I64: memcpy(&l, p, 8); return (double)l;
    case BP_F16: memcpy(&h, p, 2); return bp_f16_to_f32(h);
    case BP_BF16: memcpy(&h, p, 2); return bp_bf16_to_f32(h);
    default: return NAN;
    }
}

/* Does T have exactly the dtype (when WANT has one), shape and values of WANT (an
 * expected.json entry, or a bare list of values for a 1-D/2-D tensor checked by count)? */
static int tensor_matches(const bp_named_tensor *t, json_t *want, const char *what) {
    json_t *values = json_is_array(want) ? want : json_object_get(want, "values");
    if (json_is_object(want)) {
        bp_dtype dtype;
        const char *dtype_name = json_string_value(json_object_get(want, "dtype"));
        char lower[8];
        size_t k;
        for (k = 0; dtype_name[k] && k < 7; k++) lower[k] = (char)(dtype_name[k] | 0x20);
        lower[k] = '\0';
        json_t *shape = json_object_get(want, "shape");
        if (bp_dtype_parse(lower, k, &dtype) != 0 || dtype != t->dtype || (size_t)t->ndim != json_array_size(shape)) {
            tap_diag("%s: %s has dtype %s ndim %d", what, t->name, bp_dtype_name(t->dtype), t->ndim);
            return 0;
        }
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] != json_integer_value(json_array_get(shape, (size_t)d))) {
                tap_diag("%s: %s dim %d is %lld", what, t->name, d, (long long)t->shape[d]);
                return 0;
            }
    }
    int64_t numel = bp_numel(t->shape, t->ndim);
    if ((size_t)numel != json_array_size(values) || t->nbytes != (size_t)numel * bp_dtype_size(t->dtype)) {
        tap_diag("%s: %s has %lld elements", what, t->name, (long long)numel);
        return 0;
    }
    for (int64_t e = 0; e < numel; e++)
        if (element(t, e) != json_number_value(json_array_get(values, (size_t)e))) {
            tap_diag("%s: %s[%lld] = %.9g, want %.9g", what, t->name, (long long)e, element(t, e),
                     json_number_value(json_array_get(values, (size_t)e)));
            return 0;
        }
    return 1;
}

/* Do the tensors of a reader match expected.json exactly (names, dtypes, shapes, values)? */
static int matches_expected(const bp_named_tensor *tensors, size_t n, const char *what) {
    if (n != json_object_size(expected_tensors)) {
        tap_diag("%s: %zu tensors, expected %zu", what, n, json_object_size(expected_tensors));
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *want = json_object_get(expected_tensors, tensors[i].name);
        if (!want) {
            tap_diag("%s: unexpected tensor %s", what, tensors[i].name);
            return 0;
        }
        if (!tensor_matches(&tensors[i], want, what)) return 0;
    }
    return 1;
}

/* ---- readers ------------------------------------------------------------------------ */

static void test_safetensors_reader(void) {
    bp_err err = {{0}};
    st_file *st = st_open(fixture("model.safetensors"), &err);
    if (!tap_ok(st != NULL, "safetensors fixture opens")) {
        tap_diag("%s", err.msg);
        return;
    }
    tap_ok(matches_expected(st->tensors, st->n_tensors, "safetensors"), "safetensors tensors equal expected.json");
    TAP_EQ_STR(st_metadata(st, "format"), "pt", "safetensors __metadata__ format");
    TAP_EQ_STR(st_metadata(st, "written_by"), "make_checkpoint_fixtures.py", "safetensors __metadata__ written_by");
    tap_ok(st_metadata(st, "absent") == NULL, "absent metadata key gives NULL");
    const bp_named_tensor *q = st_find(st, "bert.encoder.layer.0.attention.self.query.weight");
    tap_ok(q && (uintptr_t)q->data % 4 == 0, "safetensors f32 data is 4-byte aligned in the map");
    tap_ok(st_find(st, "nope") == NULL, "st_find of an absent name gives NULL");
    st_close(st);
}

static void test_torch_reader(void) {
    const char *files[] = {"pytorch_model.bin", "pytorch_model_p4.bin", "pytorch_model_legacy.bin"};
    for (int i = 0; i < 3; i++) {
        bp_err err = {{0}};
        tb_file *tb = tb_open(fixture(files[i]), &err);
        if (!tap_ok(tb != NULL, "%s opens", files[i])) {
            tap_diag("%s", err.msg);
            continue;
        }
        tap_ok(matches_expected(tb->tensors, tb->n_tensors, files[i]),
               "%s tensors equal expected.json (transposed view, offsets, f16, bf16, i64)", files[i]);
        const bp_named_tensor *first = &tb->tensors[0];
        TAP_EQ_STR(first->name, "bert.embeddings.word_embeddings.weight", "%s keeps state dict order", files[i]);
        tb_close(tb);
    }

    /* The same archive through a pipe: libarchive must fall back to streaming. */
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        size_t len;
        unsigned char *bytes = slurp(fixture("pytorch_model.bin"), &len);
        size_t done = 0;
        while (bytes && done < len) {
            ssize_t w = write(fds[1], bytes + done, len - done);
            if (w <= 0) break;
            done += (size_t)w;
        }
        _exit(done == len ? 0 : 1);
    }
    close(fds[1]);
    bp_err err = {{0}};
    tb_file *tb = tb_read_fd(fds[0], "<pipe>", &err);
    close(fds[0]);
    int status = 0;
    waitpid(child, &status, 0);
    if (tap_ok(tb != NULL, "pytorch_model.bin read as a stream from a pipe"))
        tap_ok(matches_expected(tb->tensors, tb->n_tensors, "pipe"), "streamed tensors equal expected.json");
    else
        tap_diag("%s", err.msg);
    tb_close(tb);

}

/* Every tensor of TB is in ST with the same dtype, shape and bytes, and nothing more. */
static int same_tensors(const tb_file *tb, const st_file *st) {
    int same = tb && st && st->n_tensors == tb->n_tensors;
    for (size_t i = 0; same && i < tb->n_tensors; i++) {
        const bp_named_tensor *a = &tb->tensors[i], *b = st_find(st, a->name);
        same = b && a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes &&
               memcmp(a->shape, b->shape, sizeof a->shape) == 0 && memcmp(a->data, b->data, a->nbytes) == 0;
        if (!same) tap_diag("differs: %s", a->name);
    }
    return same;
}

static void test_formats_agree(void) {
    bp_err err = {{0}};
    st_file *st = st_open(fixture("model.safetensors"), &err);
    tb_file *tb = tb_open(fixture("pytorch_model.bin"), &err);
    tap_ok(same_tensors(tb, st), "pytorch_model.bin and model.safetensors hold byte-identical tensors");
    st_close(st);
    tb_close(tb);

    /* More storages than the storage table's first allocation (16): it grows while the
     * pickle's values already point at storages (a use-after-free before the fix). */
    st = st_open(fixture("model_l2.safetensors"), &err);
    tb = tb_open(fixture("pytorch_model_legacy_l2.bin"), &err);
    if (!tb) tap_diag("%s", err.msg);
    tap_ok(tb && tb->n_tensors == 41, "a legacy 2-layer checkpoint with 41 storages opens (%zu tensors)",
           tb ? tb->n_tensors : 0);
    tap_ok(same_tensors(tb, st), "its 41 tensors equal its safetensors twin, byte for byte");
    st_close(st);
    tb_close(tb);
    ckpt_source *src = ckpt_open(fixture("pytorch_model_legacy_l2.bin"), &err);
    tap_ok(src && strcmp(src->format, "pytorch") == 0 && src->n_tensors == 41,
           "ckpt_open sniffs it as a torch file and loads all 41 %s", src ? "" : err.msg);
    ckpt_close(src);
}

/* ---- writer ------------------------------------------------------------------------- */

static void test_writer(void) {
    bp_err err = {{0}};
    tb_file *tb = tb_open(fixture("pytorch_model.bin"), &err);
    if (!tb) return;
    const char *keys[] = {"written_by"}, *values[] = {"make_checkpoint_fixtures.py"};
    int rc = st_write(temp("written.safetensors"), tb->tensors, tb->n_tensors, keys, values, 1, &err);
    if (!tap_ok(rc == 0, "st_write writes the torch tensors")) tap_diag("%s", err.msg);
    size_t a_len = 0, b_len = 0;
    unsigned char *a = slurp(temp("written.safetensors"), &a_len), *b = slurp(fixture("model.safetensors"), &b_len);
    tap_ok(a && b && a_len == b_len && memcmp(a, b, a_len) == 0,
           "C-written file is byte-identical to the reference script's (layout, padding, metadata)");
    free(a);
    free(b);
    st_file *st = st_open(temp("written.safetensors"), &err);
    tap_ok(st && matches_expected(st->tensors, st->n_tensors, "round trip"), "written file reads back equal");
    st_close(st);

    /* No metadata at all: "format": "pt" is still written (transformers requires it). */
    rc = st_write(temp("plain.safetensors"), tb->tensors, 2, NULL, NULL, 0, &err);
    st = rc == 0 ? st_open(temp("plain.safetensors"), &err) : NULL;
    TAP_EQ_STR(st ? st_metadata(st, "format") : NULL, "pt", "writer adds format=pt when missing");
    size_t len = 0;
    unsigned char *bytes = slurp(temp("plain.safetensors"), &len);
    uint64_t header_len = 0;
    for (int i = 7; bytes && i >= 0; i--) header_len = header_len << 8 | bytes[i];
    tap_ok(bytes && header_len % 8 == 0 && bytes[8 + header_len - 1] != '\0', "header length is a multiple of 8, space padded");
    free(bytes);
    st_close(st);

    bp_named_tensor dup[2];
    memcpy(&dup[0], &tb->tensors[0], sizeof dup[0]);
    memcpy(&dup[1], &tb->tensors[0], sizeof dup[1]);
    rc = st_write(temp("dup.safetensors"), dup, 2, NULL, NULL, 0, &err);
    tap_ok(rc == -1 && strstr(err.msg, "duplicate tensor name") && access(temp("dup.safetensors"), F_OK) != 0,
           "duplicate names refused, nothing written: %s", err.msg);
    dup[0].nbytes -= 4;
    rc = st_write(temp("short.safetensors"), dup, 1, NULL, NULL, 0, &err);
    tap_ok(rc == -1 && strstr(err.msg, dup[0].name), "nbytes disagreeing with shape refused: %s", err.msg);
    rc = st_write("/nonexistent-dir/x.safetensors", tb->tensors, 1, NULL, NULL, 0, &err);
    tap_ok(rc == -1 && strstr(err.msg, "/nonexistent-dir/x.safetensors"), "unwritable path refused: %s", err.msg);
    tb_close(tb);
}

/* ---- corrupt safetensors ------------------------------------------------------------ */

static void expect_st_error(const char *name, const void *bytes, size_t len, const char *want1, const char *want2) {
    bp_err err = {{0}};
    spit(temp(name), bytes, len);
    st_file *st = st_open(temp(name), &err);
    tap_ok(!st && one_line(&err) && strstr(err.msg, want1) && (!want2 || strstr(err.msg, want2)) && strstr(err.msg, name),
           "%s: %s", name, err.msg);
    st_close(st);
}

static void test_corrupt_safetensors(void) {
    size_t len = 0;
    unsigned char *good = slurp(fixture("model.safetensors"), &len);
    if (!good) return;
    expect_st_error("empty.safetensors", good, 0, "truncated safetensors file", NULL);
    expect_st_error("tiny.safetensors", good, 5, "truncated safetensors file", NULL);
    expect_st_error("cut-header.safetensors", good, 100, "truncated safetensors file: header needs", NULL);
    expect_st_error("cut-data.safetensors", good, len - 10, "truncated file?", "bert.pooler.dense.weight");
    unsigned char *longer = malloc(len + 3);
    memcpy(longer, good, len);
    memcpy(longer + len, "xyz", 3);
    expect_st_error("trailing.safetensors", longer, len + 3, "header and tensors account for", NULL);
    memcpy(longer, good, len);
    longer[5] = 1; /* header length 2^40 */
    expect_st_error("huge-length.safetensors", longer, len, "100 MB limit", NULL);
    free(longer);

    struct { const char *name, *from, *to, *want1, *want2; } patches[] = {
        {"not-object.safetensors", "{\"__metadata__\"", "[\"__metadata__\"", "does not start with '{'", NULL},
        {"bad-json.safetensors", "\"shape\":[1,6]", "\"shape\":[1,6}", "not valid JSON", NULL},
        {"unknown-dtype.safetensors", "\"dtype\":\"F32\"", "\"dtype\":\"F33\"", "unknown dtype \"F33\"", "bert.embeddings.LayerNorm.bias"},
        {"u16-dtype.safetensors", "\"dtype\":\"F16\"", "\"dtype\":\"U16\"", "unsupported dtype \"U16\"", "bert.pooler.dense.weight"},
        {"span.safetensors", "\"data_offsets\":[0,48]", "\"data_offsets\":[0,49]", "needs 48", "bert.embeddings.position_ids"},
        {"overlap.safetensors", "[48,80]", "[44,76]", "overlap or leave a gap", "bert.embeddings.LayerNorm.bias"},
        {"negative-dim.safetensors", "\"shape\":[12,8]", "\"shape\":[-2,8]", "shape entry 0 is not a non-negative integer",
         "bert.embeddings.word_embeddings.weight"},
        {"bad-meta.safetensors", "\"format\":\"pt\"", "\"format\":1234", "not a string", NULL},
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        unsigned char *bad = patched(good, len, patches[i].from, patches[i].to);
        if (!tap_ok(bad != NULL, "patch for %s applies", patches[i].name)) continue;
        expect_st_error(patches[i].name, bad, len, patches[i].want1, patches[i].want2);
        free(bad);
    }
    free(good);
}

/* ---- corrupt torch archives --------------------------------------------------------- */

/* Zip PICKLE as archive/data.pkl plus storage "0" (4 floats 1..4), the way torch.save
 * lays the archive out. */
static int write_torch_zip(const char *path, const unsigned char *pickle, size_t pickle_len) {
    struct archive *ar = archive_write_new();
    if (!ar || archive_write_set_format_zip(ar) != ARCHIVE_OK || archive_write_open_filename(ar, path) != ARCHIVE_OK)
        return -1;
    float data[4] = {1, 2, 3, 4};
    struct { const char *name; const void *bytes; size_t len; } entries[] = {
        {"archive/data.pkl", pickle, pickle_len}, {"archive/data/0", data, sizeof data}, {"archive/version", "3\n", 2},
    };
    for (size_t i = 0; i < 3; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, entries[i].name);
        archive_entry_set_size(e, (la_int64_t)entries[i].len);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        if (archive_write_header(ar, e) != ARCHIVE_OK ||
            archive_write_data(ar, entries[i].bytes, entries[i].len) != (la_ssize_t)entries[i].len) {
            archive_entry_free(e);
            archive_write_free(ar);
            return -1;
        }
        archive_entry_free(e);
    }
    archive_write_close(ar);
    archive_write_free(ar);
    return 0;
}

typedef struct bytes_builder { unsigned char b[1024]; size_t n; } bytes_builder;
static void put(bytes_builder *bb, const void *p, size_t n) {
    memcpy(bb->b + bb->n, p, n);
    bb->n += n;
}
static void put_str(bytes_builder *bb, const char *s) { /* BINUNICODE */
    uint32_t n = (uint32_t)strlen(s);
    unsigned char len[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
    put(bb, "X", 1);
    put(bb, len, 4);
    put(bb, s, n);
}
#define PUT(bb, lit) put(bb, lit, sizeof lit - 1)

/* {"t": _rebuild_tensor_v2(storage(KEY, NUMEL floats), OFFSET, SIZE, STRIDE, False, OrderedDict())}
 * with GLOBAL_LINE as the tensor rebuilder; VIEW_OPS are the opcodes pushing offset, size
 * tuple and stride tuple (a C string literal, so its length is known). */
#define make_pickle(bb, global_line, key, numel, view_ops) \
    make_pickle_ops(bb, global_line, key, numel, view_ops, sizeof view_ops - 1)
static size_t make_pickle_ops(bytes_builder *bb, const char *global_line, const char *key, int numel,
                              const char *view_ops, size_t view_len) {
    bb->n = 0;
    PUT(bb, "\x80\x02}q\x00(");
    put_str(bb, "t");
    put(bb, "c", 1);
    put(bb, global_line, strlen(global_line));
    PUT(bb, "((");
    put_str(bb, "storage");
    PUT(bb, "ctorch\nFloatStorage\n");
    put_str(bb, key);
    put_str(bb, "cpu");
    unsigned char k[2] = {'K', (unsigned char)numel};
    put(bb, k, 2);
    PUT(bb, "tQ");
    put(bb, view_ops, view_len);
    PUT(bb, "\x89" "ccollections\nOrderedDict\n)RtRu.");
    return bb->n;
}

static void expect_tb_error(const char *name, const unsigned char *pickle, size_t len, const char *want) {
    bp_err err = {{0}};
    tb_file *tb = write_torch_zip(temp(name), pickle, len) == 0 ? tb_open(temp(name), &err) : NULL;
    tap_ok(!tb && one_line(&err) && strstr(err.msg, want) && strstr(err.msg, name), "%s: %s", name, err.msg);
    tb_close(tb);
}

/* Write GOOD cut at 0, STEP, 2 STEP, ... below UPTO bytes to NAME and open each (as a file,
 * or as a stream when AS_STREAM): every one must fail with a one-line error naming it. */
static int every_cut_fails(const unsigned char *good, size_t upto, size_t step, const char *name, int as_stream) {
    int all_failed = 1;
    for (size_t cut = 0; cut < upto; cut += step) {
        bp_err err = {{0}};
        spit(temp(name), good, cut);
        FILE *fp = as_stream ? fopen(temp(name), "rb") : NULL;
        tb_file *tb = as_stream ? (fp ? tb_read_fd(fileno(fp), name, &err) : NULL) : tb_open(temp(name), &err);
        if (fp) fclose(fp);
        if (tb || !one_line(&err) || !strstr(err.msg, name)) {
            tap_diag("%s cut at %zu: %s", name, cut, tb ? "loaded" : err.msg);
            all_failed = 0;
        }
        tb_close(tb);
    }
    return all_failed;
}

static void test_corrupt_torch(void) {
    const char *rebuild = "torch._utils\n_rebuild_tensor_v2\n";
    bytes_builder bb;
    bp_err err = {{0}};
    size_t n = make_pickle(&bb, rebuild, "0", 4, "K\x01" "K\x03\x85" "K\x01\x85");
    tb_file *tb = write_torch_zip(temp("handmade.bin"), bb.b, n) == 0 ? tb_open(temp("handmade.bin"), &err) : NULL;
    float want[3] = {2, 3, 4};
    tap_ok(tb && tb->n_tensors == 1 && tb->tensors[0].nbytes == 12 && memcmp(tb->tensors[0].data, want, 12) == 0,
           "hand-written pickle with storage offset 1 loads [2, 3, 4] %s", err.msg);
    tb_close(tb);

    n = make_pickle(&bb, rebuild, "0", 4, "G\x3f\xf0\x00\x00\x00\x00\x00\x00" "K\x03\x85" "K\x01\x85");
    expect_tb_error("opcode.bin", bb.b, n, "unsupported pickle opcode 0x47 'G'");
    n = make_pickle(&bb, "os\nsystem\n", "0", 4, "K\x00" "K\x03\x85" "K\x01\x85");
    expect_tb_error("global.bin", bb.b, n, "unsupported pickle global os.system");
    n = make_pickle(&bb, rebuild, "7", 4, "K\x00" "K\x03\x85" "K\x01\x85");
    expect_tb_error("missing-storage.bin", bb.b, n, "storage data/7 used by data.pkl is missing");
    n = make_pickle(&bb, rebuild, "0", 4, "K\x01" "K\x04\x85" "K\x01\x85");
    expect_tb_error("outside.bin", bb.b, n, "reaches outside storage data/0");
    n = make_pickle(&bb, rebuild, "0", 9, "K\x00" "K\x03\x85" "K\x01\x85");
    expect_tb_error("numel.bin", bb.b, n, "fewer than 9 f32 elements");
    /* A stride-0 view of 2^62 elements: in bounds, but its bytes overflow size_t. */
    n = make_pickle(&bb, rebuild, "0", 4, "K\x00" "\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40\x85" "K\x00\x85");
    expect_tb_error("expanded.bin", bb.b, n, "reaches outside storage");
    /* In bounds and small, but 8 elements of a 4-element storage: a copy larger than the
     * storage, which a tiny file could make gigabytes. */
    n = make_pickle(&bb, rebuild, "0", 4, "K\x00" "K\x08\x85" "K\x00\x85");
    expect_tb_error("repeats.bin", bb.b, n, "repeats elements of storage data/0 of 4");
    /* A transposed 2x2 view (strides (1, 2)) is gathered into C order. */
    n = make_pickle(&bb, rebuild, "0", 4, "K\x00" "K\x02K\x02\x86" "K\x01K\x02\x86");
    bp_err terr = {{0}};
    tb = write_torch_zip(temp("transposed.bin"), bb.b, n) == 0 ? tb_open(temp("transposed.bin"), &terr) : NULL;
    float transposed[4] = {1, 3, 2, 4};
    tap_ok(tb && tb->tensors[0].nbytes == 16 && memcmp(tb->tensors[0].data, transposed, 16) == 0,
           "strided view gathered into C order %s", terr.msg);
    tb_close(tb);
    n = make_pickle(&bb, rebuild, "0", 4, "K\x00" "K\x03\x85" "K\x01\x85");
    expect_tb_error("no-stop.bin", bb.b, n - 1, "ends without STOP");
    expect_tb_error("mid-opcode.bin", bb.b, 8, "truncated");
    const unsigned char underflow[] = "\x80\x02R.";
    expect_tb_error("underflow.bin", underflow, sizeof underflow - 1, "stack underflow");
    const unsigned char not_dict[] = "\x80\x02K\x05.";
    expect_tb_error("not-dict.bin", not_dict, sizeof not_dict - 1, "holds a int, not a state dict");
    const unsigned char bad_memo[] = "\x80\x02h\x05.";
    expect_tb_error("memo.bin", bad_memo, sizeof bad_memo - 1, "memo get of an unset index");

    /* Every truncation of a real archive: an error naming the file, never a crash. */
    size_t len = 0;
    unsigned char *good = slurp(fixture("pytorch_model.bin"), &len);
    tap_ok(good && every_cut_fails(good, len, 61, "cut.bin", 0),
           "every truncation of pytorch_model.bin gives a one-line error naming the file");
    /* As a stream only local headers are seen: every cut before the central directory
     * (where the entries' data ends) must still fail. */
    const unsigned char *central = good ? memmem(good, len, "PK\x01\x02", 4) : NULL;
    tap_ok(central && every_cut_fails(good, (size_t)(central - good), 61, "stream-cut.bin", 1),
           "every truncation before the central directory fails when streamed");
    /* Flipping a storage byte breaks the zip CRC, which libarchive checks. */
    unsigned char *flipped = good ? malloc(len) : NULL;
    if (flipped) {
        memcpy(flipped, good, len);
        flipped[len / 2] ^= 0x5a;
        spit(temp("flipped.bin"), flipped, len);
        err.msg[0] = '\0';
        tb = tb_open(temp("flipped.bin"), &err);
        tap_ok(!tb && one_line(&err) && strstr(err.msg, "flipped.bin"), "corrupted byte detected: %s", err.msg);
        tb_close(tb);
        free(flipped);
    }
    free(good);

    /* The legacy format has no checksums, but every cut must still be noticed. */
    good = slurp(fixture("pytorch_model_legacy.bin"), &len);
    tap_ok(good && every_cut_fails(good, len, 7, "legacy-cut.bin", 0),
           "every truncation of the legacy file gives a one-line error naming the file");
    unsigned char *longer = good ? malloc(len + 1) : NULL;
    if (longer) {
        memcpy(longer, good, len);
        longer[len] = 0;
        spit(temp("legacy-long.bin"), longer, len + 1);
        tb = tb_open(temp("legacy-long.bin"), &err);
        tap_ok(!tb && strstr(err.msg, "1 bytes after the last storage"), "legacy file with trailing bytes: %s", err.msg);
        tb_close(tb);
        free(longer);
    }
    free(good);
}

/* Allocations over 1 GiB fail in this test binary instead of succeeding lazily, so a reader
 * that believes a forged size shows it as "out of memory". */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "max_allocation_size_mb=1024:allocator_may_return_null=1"; }

/* A pickle that builds millions of values is refused at the limit, before it takes gigabytes;
 * a zip entry claiming 4 GB in a 1 KB file gets an error about the file, not a 4 GB buffer. */
static void test_pickle_limits(void) {
    bytes_builder bb;
    size_t len = make_pickle(&bb, "torch._utils\n_rebuild_tensor_v2\n", "0", 4, "K\x00K\x04\x85K\x01\x85");
    if (write_torch_zip(temp("claims.bin"), bb.b, len) == 0) {
        size_t zlen;
        unsigned char *zip = slurp(temp("claims.bin"), &zlen);
        if (!zip) zlen = 0;
        /* archive/data/0's uncompressed size: at 22 of its local header (name at 30), at 24 of
         * its central directory entry (name at 46). */
        int patched_headers = 0;
        for (unsigned char *p = zip; p && (p = memmem(p, zlen - (size_t)(p - zip), "archive/data/0", 14)); p++) {
            if (p - zip >= 30 && memcmp(p - 30, "PK\x03\x04", 4) == 0) memcpy(p - 8, "\x00\x00\x00\xf0", 4), patched_headers++;
            if (p - zip >= 46 && memcmp(p - 46, "PK\x01\x02", 4) == 0) memcpy(p - 22, "\x00\x00\x00\xf0", 4), patched_headers++;
        }
        if (tap_ok(patched_headers == 2, "both headers of archive/data/0 now claim 4026531840 bytes")) {
            spit(temp("claims.bin"), zip, zlen);
            bp_err err = {{0}};
            tb_file *tb = tb_open(temp("claims.bin"), &err);
            tap_ok(!tb && !strstr(err.msg, "out of memory") && strstr(err.msg, "claims.bin") && strstr(err.msg, "archive/data/0") &&
                       one_line(&err),
                   "a zip entry claiming 4 GB in a small file: an error about the file, no 4 GB buffer: %s", err.msg);
            tb_close(tb);
        }
        free(zip);
    }

    size_t n = (size_t)BP_LIMIT_PICKLE_VALUES + 16;
    unsigned char *pickle = malloc(n + 3);
    if (!pickle) return;
    pickle[0] = 0x80;
    pickle[1] = 2;
    memset(pickle + 2, 'N', n);
    pickle[n + 2] = '.';
    expect_tb_error("million-nones.bin", pickle, n + 3, "more than 1048576 values");
    memset(pickle + 2, '(', n); /* MARKs only: no value, but a mark stack without end */
    expect_tb_error("million-marks.bin", pickle, n + 3, "more than 1048576 nested MARKs");
    free(pickle);
}

/* ---- config.json -------------------------------------------------------------------- */

static void test_config(void) {
    bp_err err = {{0}};
    hfc_config cfg;
    const char *hf =
        "{\"architectures\": [\"BertForSequenceClassification\"], \"model_type\": \"bert\", \"vocab_size\": 12,"
        " \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 16,"
        " \"hidden_act\": \"gelu\", \"max_position_embeddings\": 6, \"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12,"
        " \"hidden_dropout_prob\": 0.1, \"attention_probs_dropout_prob\": 0.0, \"initializer_range\": 0.02,"
        " \"id2label\": {\"0\": \"negative\", \"1\": \"neutral\", \"2\": \"positive\"},"
        " \"label2id\": {\"negative\": 0, \"neutral\": 1, \"positive\": 2}, \"problem_type\": \"single_label_classification\","
        " \"pad_token_id\": 0, \"transformers_version\": \"4.40.0\"}";
    spit(temp("config.json"), hf, strlen(hf));
    int rc = hfc_read(temp("config.json"), &cfg, &err);
    if (!tap_ok(rc == 0, "HF config.json parses")) tap_diag("%s", err.msg);
    if (rc == 0) {
        tap_ok(cfg.vocab_size == 12 && cfg.hidden_size == 8 && cfg.num_hidden_layers == 1 && cfg.num_attention_heads == 2 &&
                   cfg.intermediate_size == 16 && cfg.max_position_embeddings == 6 && cfg.attention_probs_dropout_prob == 0.0 &&
                   cfg.layer_norm_eps == 1e-12 && cfg.classifier_dropout < 0,
               "hyper-parameters read");
        TAP_EQ_INT(cfg.num_labels, 3, "num_labels from id2label");
        TAP_EQ_STR(cfg.id2label[2], "positive", "id2label[2]");
        TAP_EQ_STR(cfg.architecture, "BertForSequenceClassification", "architecture");
        TAP_EQ_STR(cfg.problem_type, "single_label_classification", "problem_type");

        rc = hfc_write(temp("written-config.json"), &cfg, &err);
        hfc_config back;
        int rc2 = rc == 0 ? hfc_read(temp("written-config.json"), &back, &err) : -1;
        tap_ok(rc2 == 0 && back.num_labels == 3 && strcmp(back.id2label[1], "neutral") == 0 && back.layer_norm_eps == 1e-12 &&
                   back.hidden_dropout_prob == 0.1 && strcmp(back.model_type, "bert") == 0 &&
                   strcmp(back.architecture, "BertForSequenceClassification") == 0,
               "config.json write/read round trip %s", err.msg);
        if (rc2 == 0) hfc_free(&back);
        size_t len = 0;
        char *text = (char *)slurp(temp("written-config.json"), &len);
        char *z = text ? realloc(text, len + 1) : NULL;
        if (z) z[len] = '\0';
        tap_ok(z && strstr(z, "\"layer_norm_eps\": 1e-12") && strstr(z, "\"2\": \"positive\"") &&
                   strstr(z, "\"positive\": 2") && strstr(z, "\"model_type\": \"bert\""),
               "written config has short reals, id2label and label2id");
        free(z ? z : text);

        int64_t lines = 0;
        const char *vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfilm\nwas\ngood\nbad\n.\n,";
        spit(temp("vocab.txt"), vocab, strlen(vocab));
        TAP_EQ_INT(hfc_check_vocab(&cfg, "config.json", temp("vocab.txt"), &lines, &err), 0, "12-token vocab matches vocab_size 12");
        TAP_EQ_INT(lines, 12, "last line without newline counts");
        spit(temp("vocab.txt"), "a\nb\nc\n", 6);
        TAP_EQ_INT(hfc_check_vocab(&cfg, "config.json", temp("vocab.txt"), &lines, &err), 1, "smaller vocab is reported, not an error");
        cfg.vocab_size = 2;
        rc = hfc_check_vocab(&cfg, "my/config.json", temp("vocab.txt"), &lines, &err);
        tap_ok(rc == -1 && strstr(err.msg, "config/vocab mismatch") && strstr(err.msg, "my/config.json") && strstr(err.msg, "vocab.txt"),
               "larger vocab is an error naming both files: %s", err.msg);
        hfc_free(&cfg);
    }

    /* Google's bert_config.json: same keys, no model_type or labels: HF defaults. */
    const char *google = "{\"attention_probs_dropout_prob\": 0.1, \"hidden_act\": \"gelu\", \"hidden_dropout_prob\": 0.1,"
                         " \"hidden_size\": 256, \"initializer_range\": 0.02, \"intermediate_size\": 1024,"
                         " \"max_position_embeddings\": 512, \"num_attention_heads\": 4, \"num_hidden_layers\": 4,"
                         " \"type_vocab_size\": 2, \"vocab_size\": 30522}";
    spit(temp("bert_config.json"), google, strlen(google));
    err.msg[0] = '\0';
    rc = hfc_read(temp("bert_config.json"), &cfg, &err);
    tap_ok(rc == 0 && cfg.hidden_size == 256 && cfg.num_labels == 2 && strcmp(cfg.id2label[1], "LABEL_1") == 0 &&
               cfg.layer_norm_eps == 1e-12 && cfg.architecture[0] == '\0',
           "Google bert_config.json parses with HF defaults %s", err.msg);
    if (rc == 0) hfc_free(&cfg);

    const char *at_limit = "{\"num_labels\": 100000}";   /* BP_LIMIT_LABELS: accepted, names made */
    spit(temp("at-limit.json"), at_limit, strlen(at_limit));
    err.msg[0] = '\0';
    rc = hfc_read(temp("at-limit.json"), &cfg, &err);
    tap_ok(rc == 0 && cfg.num_labels == 100000 && strcmp(cfg.id2label[99999], "LABEL_99999") == 0,
           "num_labels at the limit (100000) is accepted with default names %s", err.msg);
    if (rc == 0) hfc_free(&cfg);

    struct { const char *name, *json, *want; } bad[] = {
        {"relu.json", "{\"hidden_act\": \"relu\"}", "hidden_act \"relu\" not supported"},
        {"huge.json", "{\"vocab_size\": 2000000000, \"hidden_size\": 8192, \"num_attention_heads\": 64}",
         "the parameter count it implies is 16"},
        {"heads.json", "{\"hidden_size\": 10, \"num_attention_heads\": 4}", "not a multiple of num_attention_heads"},
        {"labels.json", "{\"num_labels\": 3, \"id2label\": {\"0\": \"a\", \"1\": \"b\"}}", "num_labels 3 disagrees"},
        {"num-labels-wraps.json", "{\"num_labels\": 4294967298}", "num_labels is 4294967298, over the limit of 100000"},
        {"num-labels-limit.json", "{\"num_labels\": 100001}", "num_labels is 100001, over the limit of 100000"},
        {"gap.json", "{\"id2label\": {\"0\": \"a\", \"2\": \"b\"}}", "id2label must map the ids 0..1"},
        {"type.json", "{\"vocab_size\": \"big\"}", "vocab_size is not an integer"},
        {"roberta.json", "{\"model_type\": \"roberta\"}", "model_type \"roberta\" is not \"bert\""},
        {"broken.json", "{\"vocab_size\": 3", "cannot parse config"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        spit(temp(bad[i].name), bad[i].json, strlen(bad[i].json));
        err.msg[0] = '\0';
        rc = hfc_read(temp(bad[i].name), &cfg, &err);
        tap_ok(rc == -1 && one_line(&err) && strstr(err.msg, bad[i].want) && strstr(err.msg, bad[i].name), "%s: %s",
               bad[i].name, err.msg);
        if (rc == 0) hfc_free(&cfg);
    }
}

/* ---- loading by name ---------------------------------------------------------------- */

/* The model's side: f32 destinations named and shaped like the fixture's float tensors. */
typedef struct model_params {
    bp_named_tensor list[32];
    size_t n;
    float storage[4096];
} model_params;

static void add_param(model_params *m, const char *name, int64_t rows, int64_t cols) {
    static size_t used;
    if (m->n == 0) used = 0;
    bp_named_tensor *t = &m->list[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = BP_F32;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->data = &m->storage[used];
    t->nbytes = (size_t)(rows * (cols ? cols : 1)) * 4;
    used += (size_t)(rows * (cols ? cols : 1));
}

/* BertForSequenceClassification's names in the fixture (no pooler), plus a value weight the
 * checkpoint lacks. PREFIX is "bert." or "" (BertModel). */
static void make_model(model_params *m, const char *prefix, int with_head) {
    static const struct { const char *name; int rows, cols; } base[] = {
        {"embeddings.word_embeddings.weight", 12, 8}, {"embeddings.position_embeddings.weight", 6, 8},
        {"embeddings.token_type_embeddings.weight", 2, 8}, {"embeddings.LayerNorm.weight", 8, 0},
        {"embeddings.LayerNorm.bias", 8, 0}, {"encoder.layer.0.attention.self.query.weight", 8, 8},
        {"encoder.layer.0.attention.self.query.bias", 8, 0}, {"encoder.layer.0.attention.self.key.bias", 8, 0},
        {"encoder.layer.0.attention.self.value.weight", 8, 8},
    };
    m->n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, base[i].name);
        add_param(m, name, base[i].rows, base[i].cols);
    }
    if (with_head) {
        add_param(m, "classifier.weight", 3, 8);
        add_param(m, "classifier.bias", 3, 0);
    }
}

static int param_equals(const model_params *m, size_t i, const bp_named_tensor *src) {
    int64_t numel = bp_numel(src->shape, src->ndim);
    for (int64_t e = 0; e < numel; e++)
        if (((const float *)m->list[i].data)[e] != (float)element(src, e)) return 0;
    return 1;
}

static void test_load_into(void) {
    bp_err err = {{0}};
    ckpt_source *src = ckpt_open(fixtures, &err);
    if (!tap_ok(src != NULL, "ckpt_open on the fixture directory")) {
        tap_diag("%s", err.msg);
        return;
    }
    TAP_EQ_STR(src->format, "safetensors", "directory: model.safetensors preferred over pytorch_model.bin");
    ckpt_source *bin = ckpt_open(fixture("pytorch_model.bin"), &err);
    TAP_EQ_STR(bin ? bin->format : NULL, "pytorch", "a .bin file is sniffed as torch");
    ckpt_source *legacy = ckpt_open(fixture("pytorch_model_legacy.bin"), &err);
    tap_ok(legacy && strcmp(legacy->format, "pytorch") == 0 && legacy->n_tensors == 13, "a legacy .bin is sniffed as torch");
    ckpt_close(legacy);

    model_params *m = calloc(1, sizeof *m);
    unsigned char loaded[32];
    ckpt_report rep;
    make_model(m, "bert.", 1);
    int rc = ckpt_load_into(m->list, m->n, loaded, bin->tensors, bin->n_tensors, "ckpt", "bert", NULL, &rep, &err);
    tap_ok(rc == 0, "load BertForSequenceClassification params from pytorch_model.bin %s", err.msg);
    int values_ok = 1;
    for (size_t i = 0; rc == 0 && i < m->n; i++) {
        const bp_named_tensor *t = tb_find(bin->tb, m->list[i].name);
        if (t && (!loaded[i] || !param_equals(m, i, t))) values_ok = 0;
        if (!t && loaded[i]) values_ok = 0;
    }
    tap_ok(rc == 0 && values_ok && loaded[2], "loaded values equal the checkpoint (bf16 converted to f32)");
    char *unexpected = rc == 0 ? ckpt_format_unexpected(&rep, "ckpt", "BertForSequenceClassification") : NULL;
    char *missing = rc == 0 ? ckpt_format_missing(&rep, "ckpt", "BertForSequenceClassification") : NULL;
    TAP_EQ_STR(unexpected,
               "Some weights of the model checkpoint at ckpt were not used when initializing BertForSequenceClassification: "
               "['bert.pooler.dense.bias', 'bert.pooler.dense.weight']",
               "unexpected keys reported as transformers does");
    TAP_EQ_STR(missing,
               "Some weights of BertForSequenceClassification were not initialized from the model checkpoint at ckpt and are "
               "newly initialized: ['bert.encoder.layer.0.attention.self.value.weight']",
               "missing keys reported as transformers does");
    free(unexpected);
    free(missing);
    if (rc == 0) ckpt_report_free(&rep);

    const char *ignore[] = {"pooler", NULL};
    rc = ckpt_load_into(m->list, m->n, NULL, src->tensors, src->n_tensors, "ckpt", "bert", ignore, &rep, &err);
    tap_ok(rc == 0 && rep.n_unexpected == 0 && rep.n_missing == 1, "pooler ignored as BertForQuestionAnswering does");
    if (rc == 0) ckpt_report_free(&rep);

    /* A BertModel checkpoint (no "bert." prefix, old gamma/beta names) into the classifier. */
    bp_named_tensor renamed[32];
    size_t n_renamed = 0;
    for (size_t i = 0; i < bin->n_tensors && i < 32; i++) {
        if (strncmp(bin->tensors[i].name, "bert.", 5) != 0) continue;
        renamed[n_renamed] = bin->tensors[i];
        snprintf(renamed[n_renamed].name, sizeof renamed[n_renamed].name, "%s", bin->tensors[i].name + 5);
        char *ln = strstr(renamed[n_renamed].name, "LayerNorm.weight");
        if (ln) strcpy(ln, "LayerNorm.gamma");
        ln = strstr(renamed[n_renamed].name, "LayerNorm.bias");
        if (ln) strcpy(ln, "LayerNorm.beta");
        n_renamed++;
    }
    rc = ckpt_load_into(m->list, m->n, loaded, renamed, n_renamed, "base", "bert", NULL, &rep, &err);
    missing = rc == 0 ? ckpt_format_missing(&rep, "base", "BertForSequenceClassification") : NULL;
    TAP_EQ_STR(missing,
               "Some weights of BertForSequenceClassification were not initialized from the model checkpoint at base and are "
               "newly initialized: ['classifier.bias', 'classifier.weight', 'encoder.layer.0.attention.self.value.weight']",
               "prefix-less BertModel checkpoint: prefix stripped for matching");
    tap_ok(rc == 0 && loaded[3] && loaded[4] && param_equals(m, 3, tb_find(bin->tb, "bert.embeddings.LayerNorm.weight")),
           "gamma/beta load into LayerNorm weight/bias");
    free(missing);
    if (rc == 0) ckpt_report_free(&rep);

    /* The opposite: a BertModel (no prefix, no head) from a classifier checkpoint. */
    make_model(m, "", 0);
    rc = ckpt_load_into(m->list, m->n, loaded, bin->tensors, bin->n_tensors, "cls", "bert", ignore, &rep, &err);
    unexpected = rc == 0 ? ckpt_format_unexpected(&rep, "cls", "BertModel") : NULL;
    TAP_EQ_STR(unexpected,
               "Some weights of the model checkpoint at cls were not used when initializing BertModel: "
               "['classifier.bias', 'classifier.weight']",
               "BertModel from a classifier checkpoint: prefix added for matching");
    tap_ok(rc == 0 && loaded[0] && param_equals(m, 0, tb_find(bin->tb, "bert.embeddings.word_embeddings.weight")),
           "BertModel parameters loaded");
    free(unexpected);
    if (rc == 0) ckpt_report_free(&rep);

    make_model(m, "bert.", 0);
    add_param(m, "classifier.weight", 4, 8);
    rc = ckpt_load_into(m->list, m->n, loaded, bin->tensors, bin->n_tensors, "ckpt-dir", "bert", NULL, &rep, &err);
    tap_ok(rc == -1 && one_line(&err) &&
               strstr(err.msg, "size mismatch for classifier.weight: checkpoint has shape [3, 8], the model expects [4, 8]") &&
               strstr(err.msg, "ckpt-dir"),
           "shape mismatch names the tensor and both shapes: %s", err.msg);

    bp_named_tensor as_int = *tb_find(bin->tb, "bert.embeddings.position_ids");
    snprintf(as_int.name, sizeof as_int.name, "bert.embeddings.ids");
    m->n = 0;
    add_param(m, "bert.embeddings.ids", 1, 6);
    rc = ckpt_load_into(m->list, m->n, loaded, &as_int, 1, "ckpt", "bert", NULL, &rep, &err);
    tap_ok(rc == -1 && strstr(err.msg, "i64 cannot be loaded into a f32 parameter"), "integer tensor into f32 refused: %s", err.msg);

    bp_named_tensor twice[2] = {*tb_find(bin->tb, "bert.embeddings.LayerNorm.weight"),
                                *tb_find(bin->tb, "bert.embeddings.LayerNorm.weight")};
    snprintf(twice[1].name, sizeof twice[1].name, "bert.embeddings.LayerNorm.gamma");
    rc = ckpt_load_into(m->list, m->n, loaded, twice, 2, "ckpt", "bert", NULL, &rep, &err);
    tap_ok(rc == -1 && strstr(err.msg, "both mean bert.embeddings.LayerNorm.weight"), "gamma and weight both present refused: %s", err.msg);

    err.msg[0] = '\0';
    ckpt_source *none = ckpt_open(tmpdir, &err);
    tap_ok(!none && strstr(err.msg, "no model.safetensors, pytorch_model.bin or bert_model.ckpt.index"), "empty directory: %s", err.msg);
    free(m);
    ckpt_close(bin);
    ckpt_close(src);
}

/* ---- TensorFlow checkpoints ---------------------------------------------------------- */

static void expect_tf_error(const char *name, const char *want1, const char *want2) {
    bp_err err = {{0}};
    tf_checkpoint *tf = tf_open(temp(name), &err);
    tap_ok(!tf && one_line(&err) && strstr(err.msg, want1) && (!want2 || strstr(err.msg, want2)), "%s: %s", name, err.msg);
    tf_close(tf);
}

static void test_tf_reader(void) {
    bp_err err = {{0}};
    tf_checkpoint *tf = tf_open(fixture("tf/bert_model.ckpt"), &err);
    if (!tap_ok(tf != NULL, "TF checkpoint opens")) {
        tap_diag("%s", err.msg);
        return;
    }
    int all = tf->n_tensors == 12;
    for (size_t i = 0; i < tf->n_tensors && all; i++) {
        json_t *want = json_object_get(expected_tensors, tf->tensors[i].name);
        if (!want) want = json_object_get(expected_tf_only, tf->tensors[i].name);
        all = want && tensor_matches(&tf->tensors[i], want, "tf");
        if (!want) tap_diag("tf: unexpected %s", tf->tensors[i].name);
    }
    tap_ok(all, "TF tensors under HF names equal expected.json (kernels transposed back, gamma/beta, skipped slots)");
    tf_close(tf);

    char name[160];
    TAP_EQ_INT(tf_hf_name("bert/encoder/layer_11/output/LayerNorm/gamma", name, sizeof name), 0, "gamma is no kernel");
    TAP_EQ_STR(name, "bert.encoder.layer.11.output.LayerNorm.weight", "layer_11/.../gamma renamed");
    TAP_EQ_INT(tf_hf_name("bert/pooler/dense/kernel", name, sizeof name), 1, "kernel is transposed");
    TAP_EQ_STR(name, "bert.pooler.dense.weight", "kernel renamed");
    tf_hf_name("cls/predictions/output_bias", name, sizeof name);
    TAP_EQ_STR(name, "cls.predictions.bias", "output_bias renamed");
    TAP_EQ_INT(tf_hf_name("bert/embeddings/word_embeddings/adam_v", name, sizeof name), -1, "optimizer slots skipped");
    TAP_EQ_INT(tf_hf_name("global_step", name, sizeof name), -1, "global_step skipped");
    TAP_EQ_INT(tf_crc32c("123456789", 9), 0xe3069283u, "CRC32C check value");

    /* Corrupt copies: the index and data files of the fixture, cut and patched. */
    size_t index_len = 0, data_len = 0;
    unsigned char *index = slurp(fixture("tf/bert_model.ckpt.index"), &index_len);
    unsigned char *data = slurp(fixture("tf/bert_model.ckpt.data-00000-of-00001"), &data_len);
    if (!index || !data) {
        free(index);
        free(data);
        return;
    }
    spit(temp("good.ckpt.index"), index, index_len);
    spit(temp("good.ckpt.data-00000-of-00001"), data, data_len);
    spit(temp("cut-data.ckpt.index"), index, index_len);
    /* The last 8 bytes are global_step, which is skipped unread; cut into the tensor before. */
    spit(temp("cut-data.ckpt.data-00000-of-00001"), data, data_len - 9);
    expect_tf_error("cut-data.ckpt", "truncated", "variable cls/seq_relationship/output_weights");
    spit(temp("no-data.ckpt.index"), index, index_len);
    expect_tf_error("no-data.ckpt", "cannot open", "no-data.ckpt.data-00000-of-00001");
    data[3] ^= 1;
    spit(temp("flip-data.ckpt.index"), index, index_len);
    spit(temp("flip-data.ckpt.data-00000-of-00001"), data, data_len);
    expect_tf_error("flip-data.ckpt", "fail their CRC32C", "variable bert/embeddings/LayerNorm/beta");
    data[3] ^= 1;
    index[20] ^= 1;
    spit(temp("flip-index.ckpt.index"), index, index_len);
    spit(temp("flip-index.ckpt.data-00000-of-00001"), data, data_len);
    expect_tf_error("flip-index.ckpt", "fails its CRC32C", "flip-index.ckpt.index");
    index[20] ^= 1;
    int all_fail = 1;
    spit(temp("cut-index.ckpt.data-00000-of-00001"), data, data_len);
    for (size_t cut = 0; cut < index_len; cut += 5) {
        spit(temp("cut-index.ckpt.index"), index, cut);
        err.msg[0] = '\0';
        tf = tf_open(temp("cut-index.ckpt"), &err);
        if (tf || !one_line(&err) || !strstr(err.msg, "cut-index.ckpt.index")) {
            tap_diag("cut at %zu: %s", cut, tf ? "loaded" : err.msg);
            all_fail = 0;
        }
        tf_close(tf);
    }
    tap_ok(all_fail, "every truncation of the index gives a one-line error naming it");
    free(index);
    free(data);

    ckpt_source *src = ckpt_open(fixture("tf"), &err);
    TAP_EQ_STR(src ? src->format : NULL, "tensorflow", "a directory with bert_model.ckpt.index opens as TF");
    if (src) {
        /* Google's pre-training checkpoint into a classifier: the NSP head is unexpected. */
        model_params *m = calloc(1, sizeof *m);
        ckpt_report rep;
        make_model(m, "bert.", 1);
        int rc = ckpt_load_into(m->list, m->n, NULL, src->tensors, src->n_tensors, "tf", "bert", NULL, &rep, &err);
        char *unexpected = rc == 0 ? ckpt_format_unexpected(&rep, "tf", "BertForSequenceClassification") : NULL;
        TAP_EQ_STR(unexpected,
                   "Some weights of the model checkpoint at tf were not used when initializing BertForSequenceClassification: "
                   "['bert.pooler.dense.bias', 'bert.pooler.dense.weight', 'cls.seq_relationship.bias', 'cls.seq_relationship.weight']",
                   "TF checkpoint loads by name; its NSP head (and the pooler this test model lacks) reported unused");
        json_t *query = json_object_get(expected_tensors, "bert.encoder.layer.0.attention.self.query.weight");
        tap_ok(rc == 0 && (double)((float *)m->list[5].data)[1] == json_number_value(json_array_get(json_object_get(query, "values"), 1)),
               "TF kernel lands in [out, in] order");
        free(unexpected);
        if (rc == 0) ckpt_report_free(&rep);
        free(m);
    }
    ckpt_close(src);
    src = ckpt_open(temp("good.ckpt.index"), &err);
    tap_ok(src && src->n_tensors == 12, "a .ckpt.index path opens as TF %s", src ? "" : err.msg);
    ckpt_close(src);
}

/* A weights file of no known format is named for what it is not, never "truncated safetensors". */
static void test_unknown_weights(void) {
    mkdir(temp("html-ckpt"), 0755);
    const char html[] = "<!DOCTYPE html><html><body>404: Not Found</body></html>\n";
    spit(temp("html-ckpt/pytorch_model.bin"), html, sizeof html - 1);
    bp_err err = {{0}};
    ckpt_source *src = ckpt_open(temp("html-ckpt"), &err);
    tap_ok(!src && strstr(err.msg, "not a checkpoint") && strstr(err.msg, "torch.save zip") &&
               strstr(err.msg, "3c 21 44 4f") && strstr(err.msg, "html-ckpt/pytorch_model.bin") &&
               !strstr(err.msg, "truncated") && one_line(&err),
           "a pytorch_model.bin that is an HTML page: %s", err.msg);
    ckpt_close(src);
    const char lfs[] = "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 440473133\n";
    spit(temp("html-ckpt/pytorch_model.bin"), lfs, sizeof lfs - 1);
    src = ckpt_open(temp("html-ckpt/pytorch_model.bin"), &err);
    tap_ok(!src && strstr(err.msg, "Git LFS pointer") && strstr(err.msg, "pytorch_model.bin"),
           "a Git LFS pointer instead of the weights: %s", err.msg);
    ckpt_close(src);
    tb_file *tb = tb_open(temp("html-ckpt/pytorch_model.bin"), &err);
    tap_ok(!tb && strstr(err.msg, "not a torch.save file") && strstr(err.msg, "76 65 72 73"),
           "tb_open on a file that is no zip or pickle says what it starts with: %s", err.msg);
    tb_close(tb);
    spit(temp("html-ckpt/model.safetensors"), "\x10\0\0\0\0\0\0\0{", 9);
    src = ckpt_open(temp("html-ckpt/model.safetensors"), &err);
    tap_ok(!src && strstr(err.msg, "truncated safetensors file") && strstr(err.msg, "model.safetensors"),
           "a cut *.safetensors still gets the safetensors diagnosis: %s", err.msg);
    ckpt_close(src);
}

int main(void) {
    const char *dir = getenv("BP_CKPT_FIXTURES");
    snprintf(fixtures, sizeof fixtures, "%s", dir && *dir ? dir : "tests/fixtures/ckpt");
    if (!mkdtemp(tmpdir)) {
        tap_ok(0, "cannot create a temporary directory: %s", strerror(errno));
        return tap_done();
    }
    json_error_t jerr;
    json_t *expected = json_load_file(fixture("expected.json"), 0, &jerr);
    expected_tensors = json_object_get(expected, "tensors");
    expected_tf_only = json_object_get(expected, "tf_only");
    if (!tap_ok(expected_tensors != NULL, "expected.json loads from %s (run from the repo root)", fixtures)) {
        tap_diag("%s", jerr.text);
        return tap_done();
    }
    test_safetensors_reader();
    test_torch_reader();
    test_formats_agree();
    test_writer();
    test_corrupt_safetensors();
    test_corrupt_torch();
    test_pickle_limits();
    test_tf_reader();
    test_config();
    test_load_into();
    test_unknown_weights();
    json_decref(expected);

    /* Leave nothing behind. */
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", tmpdir);
    if (system(command) != 0) tap_diag("could not remove %s", tmpdir);
    return tap_done();
}
