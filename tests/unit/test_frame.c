/* test_frame.c — the frame codec against the protocol test vectors in proto/vectors/.
 *
 * The vectors' bytes come from an independent MessagePack encoder
 * (tests/reference/make_vectors.py), so this checks common/wire/frame.c and common/wire/framejson.c
 * against the spec, not against themselves: decode → JSON equals the .json line, JSON →
 * encode equals the .msgpack bytes, the writer API rebuilds the same bytes field by field,
 * and every bad-*.msgpack is refused with the text in its .expect. It also covers the
 * tensor and typed getters' errors (absent against wrong type, ranges, array entries, the
 * one answers rule), copying fields through, cutting a byte stream into frames, and the
 * f16/bf16 conversions. Reads files only.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire/codec.h"   /* the codec's own test may pack raw MessagePack */
#include "wire/frame.h"
#include "wire/framejson.h"
#include "tap.h"

static char vec_dir[4096];

/* Whole file into a malloc'd buffer (NUL-terminated for text); NULL when unreadable. */
static char *slurp(const char *name, const char *ext, size_t *len) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s%s", vec_dir, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *grown = realloc(buf, (cap *= 2) + 1);
            if (!grown) { free(buf); buf = NULL; }
            buf = grown;
        }
    }
    if (buf && ferror(f)) { free(buf); buf = NULL; }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    *len = n;
    return buf;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Names (without extension) of the vectors ending in `ext`, sorted; caller frees. */
static char **list_vectors(const char *ext, int *count) {
    DIR *d = opendir(vec_dir);
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    size_t elen = strlen(ext);
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= elen || strcmp(e->d_name + len - elen, ext)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **grown = realloc(names, (size_t)cap * sizeof *names);
            if (!grown) break;
            names = grown;
        }
        names[n] = strndup(e->d_name, len - elen);
        if (names[n]) n++;
    }
    if (d) closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_name);
    *count = n;
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* One good vector: both directions. Returns the number of vectors checked (0 or 1). */
static int check_vector(const char *name) {
    size_t jlen = 0, mlen = 0;
    char *json = slurp(name, ".json", &jlen), *mp = slurp(name, ".msgpack", &mlen);
    if (!tap_ok(json && mp, "%s: .json and .msgpack readable", name)) { free(json); free(mp); return 0; }
    bp_frame f;
    bp_err err = {{0}};
    if (tap_ok(bp_frame_decode(&f, mp, mlen, NULL, NULL, &err) == 0, "%s: decodes", name)) {
        char *line = NULL;
        size_t len = 0, cap = 0;
        int rc = bp_frame_to_json(&f, NULL, &line, &len, &cap, &err);
        tap_ok(rc == 0, "%s: converts to JSON", name);
        TAP_EQ_STR(line, json, "%s: JSON text equals the vector's line", name);
        free(line);
        bp_frame_release(&f);
    } else {
        tap_diag("  %s", err.msg);
    }
    bp_writer w;
    bp_writer_init(&w);
    if (tap_ok(bp_json_to_frame(json, jlen, &w, &err) == 0, "%s: JSON line encodes", name)) {
        size_t len;
        const char *bytes = bp_finish(&w, &len);
        int same = len == mlen && memcmp(bytes, mp, mlen) == 0;
        if (!tap_ok(same, "%s: encoded bytes equal the .msgpack", name))
            tap_diag("  got %zu bytes, want %zu", len, mlen);
    } else {
        tap_diag("  %s", err.msg);
    }
    bp_writer_free(&w);
    free(json);
    free(mp);
    return 1;
}

static void check_bad(const char *name) {
    size_t mlen = 0, elen = 0;
    char *mp = slurp(name, ".msgpack", &mlen), *expect = slurp(name, ".expect", &elen);
    if (!tap_ok(mp && expect, "%s: .msgpack and .expect readable", name)) { free(mp); free(expect); return; }
    while (elen && expect[elen - 1] == '\n') expect[--elen] = 0;
    bp_frame f;
    bp_err err = {{0}};
    int rc = bp_frame_decode(&f, mp, mlen, NULL, NULL, &err);
    tap_ok(rc == -1, "%s: refused", name);
    if (rc == 0) bp_frame_release(&f);
    if (!tap_ok(strstr(err.msg, expect) != NULL, "%s: error says \"%s\"", name, expect)) tap_diag("  got \"%s\"", err.msg);
    free(mp);
    free(expect);
}

/* The feature-cls vector rebuilt with the writer API must give the same bytes. */
static void check_writer(void) {
    size_t mlen = 0;
    char *mp = slurp("feature-cls", ".msgpack", &mlen);
    if (!tap_ok(mp != NULL, "writer: feature-cls.msgpack readable")) return;
    const int32_t ids[5] = {101, 1037, 4714, 3231, 102}, types[5] = {0}, mask[5] = {1, 1, 1, 1, 0};
    const int64_t shape[1] = {5};
    bp_writer w;
    bp_writer_init(&w);
    for (int round = 0; round < 2; round++) {  /* the second round proves begin resets */
        bp_begin(&w, BP_FEATURE);
        bp_put_int(&w, "seq", 0);
        bp_put_str(&w, "example_id", "train-0");
        bp_put_int(&w, "window", 0);
        bp_put_tensor(&w, "input_ids", BP_I32, 1, shape, ids);
        bp_put_tensor(&w, "token_type_ids", BP_I32, 1, shape, types);
        bp_put_tensor(&w, "attention_mask", BP_I32, 1, shape, mask);
        bp_put_int(&w, "label", 1);
        size_t len;
        const char *p = bp_finish(&w, &len);
        tap_ok(len == mlen && memcmp(p, mp, mlen) == 0, "writer: field-by-field feature equals the vector (round %d)", round);
    }
    TAP_EQ_INT(w.kind, BP_FEATURE, "writer: remembers the kind");
    /* bp_finish_release hands over the same bytes. */
    size_t len;
    char *owned = bp_finish_release(&w, &len);
    tap_ok(owned && len == mlen && memcmp(owned, mp, mlen) == 0, "writer: finish_release gives the same bytes");
    free(owned);
    bp_writer_free(&w);
    free(mp);

    /* 16+ fields need a map16 header: the writer's fix-up must pick it. */
    size_t wlen = 0;
    char *wide = slurp("wide-headers", ".msgpack", &wlen);
    if (!tap_ok(wide != NULL, "writer: wide-headers.msgpack readable")) return;
    char s32[33], s256[257];
    memset(s32, 'x', 32); s32[32] = 0;
    memset(s256, 'y', 256); s256[256] = 0;
    unsigned char blob[258];
    for (int i = 0; i < 256; i++) blob[i] = (unsigned char)i;
    blob[256] = 1; blob[257] = 2;
    bp_writer_init(&w);
    bp_begin(&w, BP_METRIC);
    bp_put_int(&w, "seq", 65536);
    bp_put_str(&w, "s32", s32);
    bp_put_str(&w, "s256", s256);
    msgpack_packer pk;
    bp_writer_packer(&w, &pk);
    bp_put_key(&w, "arr16");
    msgpack_pack_array(&pk, 16);
    for (int i = 0; i < 16; i++) msgpack_pack_int64(&pk, i);
    bp_put_int(&w, "u8", 200);
    bp_put_int(&w, "u16", 60000);
    bp_put_int(&w, "u32", 4000000000LL);
    bp_put_int(&w, "i8", -100);
    bp_put_int(&w, "i16", -1000);
    bp_put_int(&w, "i32", -100000);
    bp_put_int(&w, "i64", -(1LL << 40));
    bp_put_int(&w, "u64", 1LL << 62);
    bp_put_key(&w, "n");
    msgpack_pack_nil(&pk);
    bp_put_bool(&w, "b", 0);
    bp_put_key(&w, "blob");
    msgpack_pack_bin(&pk, sizeof blob);
    msgpack_pack_bin_body(&pk, blob, sizeof blob);
    const char *p = bp_finish(&w, &len);
    tap_ok(len == wlen && memcmp(p, wide, wlen) == 0, "writer: 17 fields, str8, bin16, array16 and every int width equal the vector");
    bp_writer_free(&w);
    free(wide);
}

static int decode_vector(const char *name, bp_frame *f, char **bytes) {
    size_t len = 0;
    bp_err err;
    *bytes = slurp(name, ".msgpack", &len);
    if (!*bytes) return -1;
    if (bp_frame_decode(f, *bytes, len, free, *bytes, &err)) { free(*bytes); return -1; }
    return 0;
}

/* A tensor map with any dtype text and payload size, to build frames the writer refuses to. */
static void put_raw_tensor(bp_writer *w, const char *key, const char *dtype, const int64_t *shape, int ndim,
                           const char *data, size_t nbytes) {
    msgpack_packer pk;
    bp_writer_packer(w, &pk);
    bp_put_key(w, key);
    msgpack_pack_map(&pk, 3);
    bp_pack_str(&pk, "dtype", 5);
    bp_pack_str(&pk, dtype, strlen(dtype));
    bp_pack_str(&pk, "shape", 5);
    msgpack_pack_array(&pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_int64(&pk, shape[i]);
    bp_pack_str(&pk, "data", 4);
    msgpack_pack_bin(&pk, nbytes);
    msgpack_pack_bin_body(&pk, data, nbytes);
}

/* Decode w's frame into f as if it were frame `index` of a stream. */
static int decode_writer(bp_writer *w, bp_frame *f, int64_t index) {
    size_t len;
    const char *bytes = bp_finish(w, &len);
    bp_err err;
    if (bp_frame_decode(f, bytes, len, NULL, NULL, &err)) {
        tap_diag("  %s", err.msg);
        return -1;
    }
    f->index = index;
    return 0;
}

static void check_getters(void) {
    bp_frame f;
    char *bytes;
    if (!tap_ok(decode_vector("feature-qa", &f, &bytes) == 0, "getters: feature-qa decodes")) return;
    TAP_EQ_INT(f.kind, BP_FEATURE, "getters: kind is feature");
    TAP_EQ_STR(bp_kind_name(f.kind), "feature", "getters: kind name");
    bp_err err = {{0}};
    int64_t i;
    double d;
    int b;
    const char *s;
    size_t n;
    tap_ok(bp_get_int(&f, "start_position", BP_I32_MIN, BP_I32_MAX, &i, &err) == 0 && i == 3, "getters: int");
    tap_ok(bp_get_int(&f, "example_seq", 0, INT64_MAX, &i, &err) == 0 && i == 1,
           "getters: feature-qa's example_seq is 1, the seq of example-qa it was made from");
    tap_ok(bp_get_float(&f, "window", &d, &err) == 0 && d == 1.0, "getters: float accepts an int");
    tap_ok(bp_get_str(&f, "example_id", &s, &n, &err) == 0 && n == 4 && memcmp(s, "q-17", 4) == 0, "getters: str view");
    char *copy = bp_get_strdup(&f, "example_id", &err);
    TAP_EQ_STR(copy, "q-17", "getters: strdup");
    free(copy);
    tap_ok(bp_get_int(&f, "nothing", BP_I32_MIN, BP_I32_MAX, &i, &err) == -1, "getters: absent int fails");
    TAP_EQ_STR(err.msg, "no field 'nothing' (feature frame)", "getters: absent field named");
    tap_ok(bp_get_int(&f, "example_id", BP_I32_MIN, BP_I32_MAX, &i, &err) == -1, "getters: str is not an int");
    TAP_EQ_STR(err.msg, "field 'example_id' is not an integer (feature frame)", "getters: int type error text");
    bp_get_str(&f, "window", &s, &n, &err);
    TAP_EQ_STR(err.msg, "field 'window' is not a string (feature frame)", "getters: str type error text");
    bp_get_bool(&f, "window", &b, &err);
    TAP_EQ_STR(err.msg, "field 'window' is not a boolean (feature frame)", "getters: bool type error text");
    bp_get_float(&f, "example_id", &d, &err);
    TAP_EQ_STR(err.msg, "field 'example_id' is not a number (feature frame)", "getters: float type error text");
    tap_ok(bp_get_strdup(&f, "nothing", &err) == NULL, "getters: strdup of an absent field is NULL");
    bp_frame hf;
    char *hbytes;
    if (decode_vector("hello", &hf, &hbytes) == 0) {   /* h owns hbytes */
        tap_ok(bp_hello_is_qa(&hf, &err) == 0, "hello: task classification is not qa");
        char **labels;
        int nl = bp_hello_labels(&hf, &labels, &err);
        tap_ok(nl == 2 && labels && !strcmp(labels[0], "negative") && !strcmp(labels[1], "positive") && !labels[2],
               "hello: labels read in order, NULL-terminated");
        bp_labels_free(labels, nl);
        bp_frame_release(&hf);
    }
    if (decode_vector("hello-minimal", &hf, &hbytes) == 0) {
        tap_ok(bp_hello_is_qa(&hf, &err) == 0, "hello: no task means classification");
        char **labels = (char **)&labels;
        tap_ok(bp_hello_labels(&hf, &labels, &err) == 0 && labels == NULL, "hello: no labels gives 0 and NULL");
        bp_frame_release(&hf);
    }
    bp_writer hw;
    bp_writer_init(&hw);
    bp_begin(&hw, BP_HELLO);
    bp_put_str(&hw, "task", "qa");
    size_t hlen;
    const char *hp = bp_finish(&hw, &hlen);
    if (tap_ok(bp_frame_decode(&hf, hp, hlen, NULL, NULL, &err) == 0, "hello: a qa hello decodes")) {
        tap_ok(bp_hello_is_qa(&hf, &err) == 1, "hello: task qa is qa");
        bp_frame_release(&hf);
    }
    bp_writer_free(&hw);
    /* msgpack-c gives an empty string no pointer: the views handed out still point somewhere,
     * so copying one is no undefined behaviour (found by tests/fuzz/fuzz_frame.c) */
    const char *empty = "{\"v\":1,\"k\":\"example\",\"example_id\":\"\",\"\":1}";
    bp_writer_init(&hw);
    if (bp_json_to_frame(empty, strlen(empty), &hw, &err) == 0 && decode_writer(&hw, &hf, 0) == 0) {
        char *empty_copy = bp_get_strdup(&hf, "example_id", &err);
        tap_ok(empty_copy && empty_copy[0] == 0, "strings: an empty string copies as empty");
        free(empty_copy);
        const char *view = NULL;
        size_t view_len = 9;
        tap_ok(bp_get_str(&hf, "example_id", &view, &view_len, &err) == 0 && view != NULL && view_len == 0,
               "strings: an empty string's view is not NULL");
        bp_frame_release(&hf);
    }
    bp_writer_free(&hw);
    /* a task that is not a string, or names no task, is an error: never read as classification */
    static const struct { const char *json, *expect; } bad_tasks[] = {
        {"{\"v\":1,\"k\":\"hello\",\"task\":1}", "field 'task' is not a string (hello frame 0)"},
        {"{\"v\":1,\"k\":\"hello\",\"task\":\"QA\"}", "field 'task' is 'QA', expected classification or qa (hello frame 0)"},
    };
    for (size_t k = 0; k < sizeof bad_tasks / sizeof bad_tasks[0]; k++) {
        bp_writer_init(&hw);
        if (bp_json_to_frame(bad_tasks[k].json, strlen(bad_tasks[k].json), &hw, &err) == 0 && decode_writer(&hw, &hf, 0) == 0) {
            tap_ok(bp_hello_is_qa(&hf, &err) == -1, "hello: %s is refused", bad_tasks[k].json);
            TAP_EQ_STR(err.msg, bad_tasks[k].expect, "hello: %s names the task field", bad_tasks[k].json);
            bp_frame_release(&hf);
        }
        bp_writer_free(&hw);
    }

    /* tensors */
    bp_tensor_view t;
    tap_ok(bp_get_tensor(&f, "offsets", &t, &err) == 0, "tensor: offsets reads");
    TAP_EQ_INT(t.dtype, BP_I32, "tensor: dtype i32");
    tap_ok(t.ndim == 2 && t.shape[0] == 4 && t.shape[1] == 2 && t.nbytes == 32, "tensor: shape [4,2], 32 bytes");
    int32_t off[8];
    bp_tensor_copy(&t, off);
    tap_ok(off[0] == -1 && off[6] == 4 && off[7] == 8, "tensor: little-endian values copied out");
    const int64_t want_ok[2] = {-1, 2}, want_bad[2] = {4, 3};
    tap_ok(bp_tensor_expect(&t, "offsets", BP_I32, 2, want_ok, &err) == 0, "tensor: expect with a free dimension passes");
    bp_tensor_expect(&t, "offsets", BP_F32, 2, NULL, &err);
    TAP_EQ_STR(err.msg, "tensor 'offsets' has dtype i32, expected f32", "tensor: wrong dtype named");
    bp_tensor_expect(&t, "offsets", BP_I32, 1, NULL, &err);
    TAP_EQ_STR(err.msg, "tensor 'offsets' has 2 dimensions, expected 1", "tensor: wrong rank named");
    bp_tensor_expect(&t, "offsets", BP_I32, 2, want_bad, &err);
    TAP_EQ_STR(err.msg, "tensor 'offsets' has shape[1] = 2, expected 3", "tensor: wrong shape named");
    tap_ok(bp_get_tensor(&f, "example_id", &t, &err) == -1, "tensor: a string is not a tensor");
    TAP_EQ_STR(err.msg, "tensor 'example_id' is not a map of dtype, shape, data (feature frame)", "tensor: not-a-map text");
    bp_frame_release(&f);
    bp_frame_release(&f); /* a released frame may be released again */

    /* A tensor whose data is one element short, built by hand. */
    bp_writer w;
    bp_writer_init(&w);
    bp_begin(&w, BP_FEATURE);
    const int64_t x_shape[2] = {2, 3};
    put_raw_tensor(&w, "x", "f32", x_shape, 2, "01234567890123456789", 20);
    put_raw_tensor(&w, "y", "c64", NULL, 0, "", 0);
    size_t len;
    const char *p = bp_finish(&w, &len);
    if (tap_ok(bp_frame_decode(&f, p, len, NULL, NULL, &err) == 0, "tensor: hand-built frame decodes")) {
        tap_ok(bp_get_tensor(&f, "x", &t, &err) == -1, "tensor: size mismatch refused");
        TAP_EQ_STR(err.msg, "tensor 'x' has 20 data bytes but dtype f32 and its shape need 24 (feature frame)", "tensor: size mismatch text");
        bp_get_tensor(&f, "y", &t, &err);
        TAP_EQ_STR(err.msg, "tensor 'y' has unknown dtype 'c64' (feature frame)", "tensor: unknown dtype text");
        bp_frame_release(&f);
    }
    bp_writer_free(&w);

    /* every dtype name and element size, from the dtypes vector */
    if (!tap_ok(decode_vector("feature-dtypes", &f, &bytes) == 0, "dtypes: vector decodes")) return;
    static const struct { const char *key; bp_dtype dt; size_t size; } dts[] = {
        {"f32", BP_F32, 4}, {"f64", BP_F64, 8}, {"f16", BP_F16, 2}, {"bf16", BP_BF16, 2}, {"i64", BP_I64, 8},
        {"i16", BP_I16, 2}, {"i8", BP_I8, 1}, {"u8", BP_U8, 1}, {"bool", BP_BOOL, 1}};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        int rc = bp_get_tensor(&f, dts[k].key, &t, &err);
        tap_ok(rc == 0 && t.dtype == dts[k].dt && t.nbytes == (size_t)bp_numel(t.shape, t.ndim) * dts[k].size,
               "dtypes: %s has its name and %zu-byte elements", dts[k].key, dts[k].size);
    }
    uint16_t h[2], bf[2];
    bp_get_tensor(&f, "f16", &t, &err);
    bp_tensor_copy(&t, h);
    tap_ok(bp_f16_to_f32(h[0]) == 1.0f && bp_f16_to_f32(h[1]) == -0.5f, "dtypes: f16 payload reads as 1, -0.5");
    bp_get_tensor(&f, "bf16", &t, &err);
    bp_tensor_copy(&t, bf);
    tap_ok(bp_bf16_to_f32(bf[0]) == 1.0f && bp_bf16_to_f32(bf[1]) == -2.0f, "dtypes: bf16 payload reads as 1, -2");
    tap_ok(bp_get_tensor(&f, "empty", &t, &err) == 0 && t.nbytes == 0 && t.shape[0] == 0, "dtypes: an empty [0,4] tensor is valid");
    bp_frame_release(&f);
}

/* The getters' rules: absent is not wrong, a wrong type is an error naming frame and field,
 * an integer outside its field's range is refused, array entries are checked one by one. */
static void check_field_rules(void) {
    bp_writer w;
    bp_writer_init(&w);
    bp_begin(&w, BP_EXAMPLE);
    bp_put_int(&w, "small", 7);
    bp_put_int(&w, "neg", -3);
    bp_put_float(&w, "real", 1.0);
    bp_put_str(&w, "text", "one");
    bp_put_int(&w, "big", INT64_C(4294967297));
    const char *ids[] = {"a", "bc"};
    bp_put_strs(&w, "ids", ids, 2);
    const bp_answer answers[2] = {{.text = "Porto", .text_len = 5, .answer_start = 3},
                                  {.text = "in Porto", .text_len = 8, .answer_start = -1}};
    bp_put_answers(&w, answers, 2);
    msgpack_packer pk;
    bp_writer_packer(&w, &pk);
    bp_put_key(&w, "huge");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    bp_put_key(&w, "mixed");
    msgpack_pack_array(&pk, 2);
    bp_pack_str(&pk, "a", 1);
    msgpack_pack_int64(&pk, 1);
    bp_frame f;
    if (!tap_ok(decode_writer(&w, &f, 17) == 0, "fields: hand-built example decodes")) return;
    bp_err err = {{0}};
    char where[64];
    TAP_EQ_STR(bp_frame_where(&f, where, sizeof where), "example frame 17", "fields: a frame from a stream is named with its index");

    int64_t v = 42;
    tap_ok(bp_find_int(&f, "nothing", 0, 10, &v, &err) == 0 && v == 42, "fields: an absent optional int is 0 and leaves the default");
    tap_ok(bp_find_int(&f, "small", 0, 10, &v, &err) == 1 && v == 7, "fields: a present optional int is 1");
    tap_ok(bp_get_int(&f, "small", 0, 10, &v, &err) == 0 && v == 7, "fields: a present required int is 0");
    tap_ok(bp_get_int(&f, "nothing", 0, 10, &v, &err) == -1, "fields: an absent required int is an error");
    TAP_EQ_STR(err.msg, "no field 'nothing' (example frame 17)", "fields: absent field named with frame and index");
    tap_ok(bp_find_int(&f, "real", 0, 10, &v, &err) == -1, "fields: a float is not taken for an absent int");
    TAP_EQ_STR(err.msg, "field 'real' is not an integer (example frame 17)", "fields: wrong type named");
    tap_ok(bp_find_int(&f, "text", 0, 10, &v, &err) == -1, "fields: a string is not taken for an absent int");
    tap_ok(bp_get_int(&f, "big", BP_I32_MIN, BP_I32_MAX, &v, &err) == -1, "fields: 2^32+1 is refused for an i32 field");
    TAP_EQ_STR(err.msg, "field 'big' is 4294967297, outside [-2147483648, 2147483647] (example frame 17)",
               "fields: out of range names value and range");
    tap_ok(bp_get_int(&f, "neg", 0, 10, &v, &err) == -1, "fields: a negative count is refused");
    TAP_EQ_STR(err.msg, "field 'neg' is -3, outside [0, 10] (example frame 17)", "fields: negative out of range text");
    tap_ok(bp_get_int(&f, "huge", 0, INT64_MAX, &v, &err) == -1, "fields: an unsigned integer past int64 is refused");
    TAP_EQ_STR(err.msg, "field 'huge' is 18446744073709551615, outside [0, 9223372036854775807] (example frame 17)",
               "fields: unsigned out of range text");

    double d = 0;
    int b = 5;
    const char *str;
    size_t n;
    tap_ok(bp_find_float(&f, "small", &d, &err) == 1 && d == 7.0, "fields: an optional float accepts an int");
    tap_ok(bp_find_float(&f, "text", &d, &err) == -1, "fields: a string is not a float");
    tap_ok(bp_find_bool(&f, "nothing", &b, &err) == 0 && b == 5, "fields: an absent optional bool leaves the default");
    tap_ok(bp_find_bool(&f, "small", &b, &err) == -1, "fields: an int is not a bool");
    tap_ok(bp_find_str(&f, "text", &str, &n, &err) == 1 && n == 3 && memcmp(str, "one", 3) == 0, "fields: optional string");
    tap_ok(bp_find_str(&f, "small", &str, &n, &err) == -1, "fields: an int is not a string");

    bp_str *views = NULL;
    tap_ok(bp_get_strs(&f, "ids", &views, &n, &err) == 0 && n == 2 && views[1].len == 2 && memcmp(views[1].ptr, "bc", 2) == 0,
           "strs: an array of strings reads as views");
    free(views);
    tap_ok(bp_find_strs(&f, "nothing", &views, &n, &err) == 0, "strs: absent is 0");
    tap_ok(bp_get_strs(&f, "mixed", &views, &n, &err) == -1, "strs: a non-string entry is refused");
    TAP_EQ_STR(err.msg, "field 'mixed'[1] is not a string (example frame 17)", "strs: the entry is named");
    bp_get_strs(&f, "text", &views, &n, &err);
    TAP_EQ_STR(err.msg, "field 'text' is not an array of strings (example frame 17)", "strs: not an array named");

    bp_answer *got = NULL;
    tap_ok(bp_find_answers(&f, &got, &n, &err) == 1 && n == 2, "answers: two read back");
    tap_ok(got && got[0].text_len == 5 && memcmp(got[0].text, "Porto", 5) == 0 && got[0].answer_start == 3 &&
               got[1].answer_start == -1,
           "answers: text and answer_start as written, a negative start kept");
    free(got);

    /* copying fields through: the copy reads back the same */
    bp_writer w2;
    bp_writer_init(&w2);
    bp_begin(&w2, BP_EXAMPLE);
    tap_ok(bp_put_copy(&w2, &f, "ids") == 1 && bp_put_copy(&w2, &f, "answers") == 1, "copy: present fields copied");
    tap_ok(bp_put_copy(&w2, &f, "nothing") == 0, "copy: an absent field writes nothing");
    bp_frame g;
    if (tap_ok(decode_writer(&w2, &g, -1) == 0, "copy: the new frame decodes")) {
        tap_ok(bp_get_strs(&g, "ids", &views, &n, &err) == 0 && n == 2 && memcmp(views[0].ptr, "a", 1) == 0,
               "copy: the array reads back");
        free(views);
        tap_ok(bp_find_answers(&g, &got, &n, &err) == 1 && n == 2 && got[1].text_len == 8, "copy: the answers read back");
        free(got);
        tap_ok(!bp_has(&g, "nothing") && !bp_has(&g, "small"), "copy: nothing else came along");
        bp_frame_release(&g);
    }
    bp_writer_free(&w2);

    /* tensors: absent is 0, a mismatch names the frame first */
    bp_tensor_view t;
    tap_ok(bp_find_tensor(&f, "nothing", &t, &err) == 0, "tensor: an absent optional tensor is 0");
    tap_ok(bp_find_tensor_of(&f, "text", BP_I32, 1, NULL, &t, &err) == -1, "tensor: a string is not an optional tensor");
    TAP_EQ_STR(err.msg, "tensor 'text' is not a map of dtype, shape, data (example frame 17)", "tensor: the frame is the WHERE");
    bp_frame_release(&f);
    bp_writer_free(&w);
}

/* Bad answers entries, each with the one message every stage gives. */
static void check_bad_answers(void) {
    static const struct { const char *json, *expect; } cases[] = {
        {"[{\"text\":\"x\",\"answer_start\":1},{\"answer_start\":2}]", "field 'answers'[1] has no string 'text' (example frame 3)"},
        {"[{\"text\":7,\"answer_start\":1}]", "field 'answers'[0] has no string 'text' (example frame 3)"},
        {"[{\"text\":\"x\"}]", "field 'answers'[0] has no integer 'answer_start' (example frame 3)"},
        {"[{\"text\":\"x\",\"answer_start\":1.0}]", "field 'answers'[0] has no integer 'answer_start' (example frame 3)"},
        {"[{\"text\":\"x\",\"answer_start\":\"1\"}]", "field 'answers'[0] has no integer 'answer_start' (example frame 3)"},
        {"[3]", "field 'answers'[0] is not a map (example frame 3)"},
        {"\"x\"", "field 'answers' is not an array (example frame 3)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"v\":1,\"k\":\"example\",\"answers\":%s}", cases[i].json);
        bp_writer w;
        bp_writer_init(&w);
        bp_err err = {{0}};
        bp_frame f;
        if (bp_json_to_frame(json, strlen(json), &w, &err) == 0 && decode_writer(&w, &f, 3) == 0) {
            bp_answer *answers = (bp_answer *)&answers;
            size_t n = 99;
            int rc = bp_find_answers(&f, &answers, &n, &err);
            tap_ok(rc == -1 && answers == NULL && n == 0, "answers: %s refused", cases[i].json);
            TAP_EQ_STR(err.msg, cases[i].expect, "answers: %s says which entry", cases[i].json);
            bp_frame_release(&f);
        } else {
            tap_ok(0, "answers: case %zu builds (%s)", i, err.msg);
        }
        bp_writer_free(&w);
    }
    bp_writer w;
    bp_writer_init(&w);
    bp_begin(&w, BP_EXAMPLE);
    bp_frame f;
    if (decode_writer(&w, &f, 0) == 0) {
        bp_answer *answers = NULL;
        size_t n = 99;
        bp_err err;
        tap_ok(bp_find_answers(&f, &answers, &n, &err) == 0 && n == 0 && answers == NULL, "answers: absent means none");
        bp_frame_release(&f);
    }
    bp_writer_free(&w);

    /* a hello label that is not a string is refused, not read as "?" */
    const char *hello = "{\"v\":1,\"k\":\"hello\",\"labels\":[\"neg\",1]}";
    bp_writer_init(&w);
    bp_err err = {{0}};
    if (bp_json_to_frame(hello, strlen(hello), &w, &err) == 0 && decode_writer(&w, &f, 0) == 0) {
        char **labels = NULL;
        tap_ok(bp_hello_labels(&f, &labels, &err) == -1 && labels == NULL, "hello: a label that is not a string is refused");
        TAP_EQ_STR(err.msg, "field 'labels'[1] is not a string (hello frame 0)", "hello: the label is named");
        bp_frame_release(&f);
    }
    bp_writer_free(&w);
}

/* bp_msgpack_size cuts a byte stream into frames: every vector measures its own length,
 * one byte short needs more, the reserved byte can never be MessagePack. */
static void check_msgpack_size(char **names, int n) {
    int right = 0, short_ok = 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        char *mp = slurp(names[i], ".msgpack", &len);
        if (!mp) continue;
        bp_err err;
        right += bp_msgpack_size(mp, len, &err) == len;
        short_ok += bp_msgpack_size(mp, len - 1, &err) == 0;
        free(mp);
    }
    TAP_EQ_INT(right, n, "size: every vector measures its own length");
    TAP_EQ_INT(short_ok, n, "size: every vector cut by one byte needs more bytes");
    const unsigned char reserved[2] = {0x91, 0xc1};
    bp_err err;
    tap_ok(bp_msgpack_size(reserved, sizeof reserved, &err) == (size_t)-1, "size: 0xc1 inside an array is never MessagePack");
    /* On a stream, a header promising more than a frame may hold fails at once instead of
     * buffering up to what it promises. */
    const unsigned char huge_bin[] = {0x81, 0xa1, 'x', 0xc6, 0x7f, 0xff, 0xff, 0xff};
    tap_ok(bp_msgpack_size(huge_bin, sizeof huge_bin, &err) == (size_t)-1, "size: a 2 GiB bin header on a stream is refused");
    TAP_EQ_STR(err.msg, "malformed MessagePack: a value of 2147483647 bytes at byte 3, more than a frame may hold (1073741824 bytes)",
               "size: the refusal names the value's size and the limit");
    const unsigned char small_bin[] = {0x81, 0xa1, 'x', 0xc6, 0x00, 0x10, 0x00, 0x00};
    tap_ok(bp_msgpack_size(small_bin, sizeof small_bin, &err) == 0, "size: a 1 MiB bin header on a stream waits for its bytes");
    const unsigned char huge_array[] = {0xdd, 0x7f, 0xff, 0xff, 0xff};
    tap_ok(bp_msgpack_size(huge_array, sizeof huge_array, &err) == (size_t)-1 &&
               strstr(err.msg, "array at byte 0 announces 2147483647 elements") != NULL,
           "size: an array of more elements than a frame has bytes is refused on a stream");
}

static void check_half_floats(void) {
    /* every finite f16 survives f16 -> f32 -> f16 (NaN payloads aside) */
    int bad16 = 0, badbf = 0;
    for (uint32_t u = 0; u < 0x10000; u++) {
        uint16_t h = (uint16_t)u;
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        if (bp_f32_to_f16(bp_f16_to_f32(h)) != h) bad16++;
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
        if (bp_f32_to_bf16(bp_bf16_to_f32(h)) != h) badbf++;
    }
    TAP_EQ_INT(bad16, 0, "f16: every non-NaN value round-trips through f32");
    TAP_EQ_INT(badbf, 0, "bf16: every non-NaN value round-trips through f32");
    TAP_EQ_INT(bp_f32_to_f16(65504.0f), 0x7bff, "f16: largest finite");
    TAP_EQ_INT(bp_f32_to_f16(1e6f), 0x7c00, "f16: overflow gives +inf");
    TAP_EQ_INT(bp_f32_to_f16(5.9604645e-08f), 0x0001, "f16: smallest subnormal");
    /* ties go to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 */
    TAP_EQ_INT(bp_f32_to_f16(1.0f + 0x1p-11f), 0x3c00, "f16: tie rounds to even (down)");
    TAP_EQ_INT(bp_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02, "f16: tie rounds to even (up)");
    TAP_EQ_INT(bp_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80, "bf16: tie rounds to even (down)");
    TAP_EQ_INT(bp_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82, "bf16: tie rounds to even (up)");
    TAP_EQ_INT(bp_f32_to_bf16(-2.0f), 0xc000, "bf16: -2");
    float nan = bp_f16_to_f32(bp_f32_to_f16(__builtin_nanf("")));
    tap_ok(nan != nan, "f16: NaN stays NaN");
    nan = bp_bf16_to_f32(bp_f32_to_bf16(__builtin_nanf("")));
    tap_ok(nan != nan, "bf16: NaN stays NaN");
}

/* The spans view (framejson.h): a context known for example "a" only. */
static const char *context_of_a(void *ctx, const char *id, size_t id_len, size_t *text_len) {
    (void)ctx;
    if (id_len != 1 || id[0] != 'a') return NULL;
    *text_len = strlen("Zo\u00eb in K\u00f6ln");
    return "Zo\u00eb in K\u00f6ln";
}

/* spans of a JSON frame, "" when the view has none; the view's line into got */
static void span_view(const char *json, char *got, size_t size) {
    bp_writer w;
    bp_writer_init(&w);
    bp_err err = {{0}};
    bp_frame f;
    got[0] = 0;
    size_t len = 0;
    const char *bytes = bp_json_to_frame(json, strlen(json), &w, &err) == 0 ? bp_finish(&w, &len) : NULL;
    if (bytes && bp_frame_decode(&f, bytes, len, NULL, NULL, &err) == 0) {
        bp_json_opts opts = {.context_of = context_of_a};
        char *line = NULL;
        size_t n = 0, cap = 0;
        if (bp_frame_to_json(&f, &opts, &line, &n, &cap, &err) == 0) {
            const char *spans = strstr(line, ",\"spans\":");
            snprintf(got, size, "%s", spans ? spans + 9 : "");
            char *end = strstr(got, ",\"window\"");   /* the field after offsets in these frames */
            if (!end) end = strstr(got, ",\"epoch\"");
            if (end) *end = 0;
        }
        free(line);
        bp_frame_release(&f);
    }
    if (err.msg[0]) tap_diag("  %s", err.msg);
    bp_writer_free(&w);
}

static void check_spans(void) {
    char got[512];
    /* offsets (-1,-1) (0,3) (3,3) (4,6) (7,11) (2,12) (5,4), base64 of their i32 little-endian
     * bytes (Python: base64.b64encode(struct.pack('<14i', ...))); the context has 11 code points
     * and 13 bytes: a byte offset would cut "K\u00f6ln" */
    span_view("{\"v\":1,\"k\":\"feature\",\"seq\":0,\"example_id\":\"a\",\"offsets\":{\"dtype\":\"i32\",\"shape\":[7,2],"
              "\"data\":{\"$bin\":\"//////////8AAAAAAwAAAAMAAAADAAAABAAAAAYAAAAHAAAACwAAAAIAAAAMAAAABQAAAAQAAAA=\"}},\"window\":0}",
              got, sizeof got);
    TAP_EQ_STR(got, "[null,\"Zo\u00eb\",\"\",\"in\",\"K\u00f6ln\",null,null]",
               "spans: code points of the context; null outside it, past its end or reversed; \"\" when empty");
    span_view("{\"v\":1,\"k\":\"feature\",\"seq\":0,\"example_id\":\"b\",\"offsets\":{\"dtype\":\"i32\",\"shape\":[7,2],"
              "\"data\":{\"$bin\":\"//////////8AAAAAAwAAAAMAAAADAAAABAAAAAYAAAAHAAAACwAAAAIAAAAMAAAABQAAAAQAAAA=\"}},\"window\":0}",
              got, sizeof got);
    TAP_EQ_STR(got, "", "spans: none for a frame whose example is unknown");
    /* a batch: rows "a" (0,3) (-1,-1) and "x" (0,2) (3,4) */
    span_view("{\"v\":1,\"k\":\"batch\",\"seq\":0,\"example_ids\":[\"a\",\"x\"],\"offsets\":{\"dtype\":\"i32\",\"shape\":[2,2,2],"
              "\"data\":{\"$bin\":\"AAAAAAMAAAD//////////wAAAAACAAAAAwAAAAQAAAA=\"}},\"epoch\":1}",
              got, sizeof got);
    TAP_EQ_STR(got, "[[\"Zo\u00eb\",null],null]", "spans: a batch has a list per row, null for an unknown row's");
}

int main(void) {
    const char *top = getenv("BERTPIPE_TOP");
    snprintf(vec_dir, sizeof vec_dir, "%s/proto/vectors", top && *top ? top : ".");
    int n_json = 0, n_bad = 0;
    char **good = list_vectors(".json", &n_json), **bad = list_vectors(".expect", &n_bad);
    if (!tap_ok(n_json >= 10 && n_bad >= 6, "found the vectors in %s (%d good, %d bad)", vec_dir, n_json, n_bad))
        tap_diag("  run from the repository root or set BERTPIPE_TOP");
    /* every kind has at least one vector */
    for (int k = 0; k < BP_KIND_COUNT; k++) {
        const char *kind = bp_kind_name((bp_kind)k);
        int seen = 0;
        size_t kl = strlen(kind);
        for (int i = 0; i < n_json; i++)
            seen += strncmp(good[i], kind, kl) == 0 && (good[i][kl] == 0 || good[i][kl] == '-');
        tap_ok(seen > 0, "a vector exists for kind %s", kind);
    }
    for (int i = 0; i < n_json; i++) check_vector(good[i]);
    for (int i = 0; i < n_bad; i++) check_bad(bad[i]);
    check_msgpack_size(good, n_json);
    free_names(good, n_json);
    free_names(bad, n_bad);
    check_writer();
    check_getters();
    check_field_rules();
    check_bad_answers();
    check_half_floats();
    check_spans();
    return tap_done();
}
