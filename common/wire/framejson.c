/* wire/framejson.c — lossless JSON view of frames (see framejson.h).
 * Must never: lose a value on the way to JSON and back (a float stays a float, bin stays
 * bin), or do I/O. */
#include "wire/framejson.h"

#include "base/tensor.h"
#include "wire/codec.h"

#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char **buf;
    size_t *len, *cap;
    int oom;
    const msgpack_object *root;   /* the frame's map: spans look up its example ids */
} sbuf;

static void put(sbuf *s, const char *p, size_t n) {
    if (s->oom) return;
    if (*s->len + n + 1 > *s->cap) {
        size_t cap = *s->cap ? *s->cap : 256;
        while (cap < *s->len + n + 1) cap *= 2;
        char *grown = realloc(*s->buf, cap);
        if (!grown) { s->oom = 1; return; }
        *s->buf = grown;
        *s->cap = cap;
    }
    memcpy(*s->buf + *s->len, p, n);
    *s->len += n;
    (*s->buf)[*s->len] = 0;
}

static void puts_(sbuf *s, const char *p) { put(s, p, strlen(p)); }

static void put_json_string(sbuf *s, const char *p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    put(s, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(s, p + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0};
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\t': esc[1] = 't'; break;
        case '\r': esc[1] = 'r'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default: esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15]; break;
        }
        puts_(s, esc);
    }
    put(s, p + run, n - run);
    put(s, "\"", 1);
}

/* Shortest decimal that reads back to the same double, always marked as a float. */
static void put_double(sbuf *s, double d) {
    char text[40];
    if (isnan(d) || isinf(d)) {
        /* JSON has no NaN/inf: spell them as strings that json2frames maps back. */
        puts_(s, d != d ? "{\"$float\":\"nan\"}" : d > 0 ? "{\"$float\":\"inf\"}" : "{\"$float\":\"-inf\"}");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, d);
        if (strtod(text, NULL) == d) break;
    }
    if (!strpbrk(text, ".eEn")) strcat(text, ".0");
    puts_(s, text);
}

static void put_base64(sbuf *s, const unsigned char *p, size_t n) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        out[0] = tbl[v >> 18 & 63];
        out[1] = tbl[v >> 12 & 63];
        out[2] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        out[3] = i + 2 < n ? tbl[v & 63] : '=';
        put(s, out, 4);
    }
}

/* ---- tensors as arrays, ids as tokens (views for reading) ----------------------------- */

/* A tensor map's parts: {"dtype": str, "shape": [uint...], "data": bin} whose byte count fits
 * the shape. Returns 0 when o is one (else the map is shown as it is). */
typedef struct tensor_view { bp_dtype dtype; int ndim; int64_t shape[BP_MAX_DIMS]; const unsigned char *data; } tensor_view;

static const msgpack_object *map_get(const msgpack_object *o, const char *key) {
    size_t n = strlen(key);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && !memcmp(k->via.str.ptr, key, n))
            return &o->via.map.ptr[i].val;
    }
    return NULL;
}

static int as_tensor(const msgpack_object *o, tensor_view *t) {
    if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != 3) return -1;
    const msgpack_object *dtype = map_get(o, "dtype"), *shape = map_get(o, "shape"), *data = map_get(o, "data");
    if (!dtype || !shape || !data || dtype->type != MSGPACK_OBJECT_STR || shape->type != MSGPACK_OBJECT_ARRAY ||
        data->type != MSGPACK_OBJECT_BIN || shape->via.array.size > BP_MAX_DIMS)
        return -1;
    if (bp_dtype_parse(dtype->via.str.ptr, dtype->via.str.size, &t->dtype)) return -1;
    t->ndim = (int)shape->via.array.size;
    for (int i = 0; i < t->ndim; i++) {
        const msgpack_object *d = &shape->via.array.ptr[i];
        if (d->type != MSGPACK_OBJECT_POSITIVE_INTEGER || d->via.u64 > (1u << 30)) return -1;
        t->shape[i] = (int64_t)d->via.u64;
    }
    int64_t n = bp_numel(t->shape, t->ndim);
    if ((uint64_t)n * bp_dtype_size(t->dtype) != data->via.bin.size) return -1;
    t->data = (const unsigned char *)data->via.bin.ptr;
    return 0;
}

static uint64_t load_le(const unsigned char *p, size_t size) {
    uint64_t v = 0;
    for (size_t i = 0; i < size; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Element i of t as JSON text: a number, or the token of an id (tokens != 0). */
static void put_element(sbuf *s, const tensor_view *t, int64_t i, const bp_json_opts *opts, int tokens) {
    size_t size = bp_dtype_size(t->dtype);
    uint64_t bits = load_le(t->data + (size_t)i * size, size);
    char num[32];
    if (tokens) {
        const char *tok = opts->token_of(opts->token_ctx, (int32_t)(uint32_t)bits);
        if (tok) put_json_string(s, tok, strlen(tok));
        else puts_(s, "null");
        return;
    }
    switch (t->dtype) {
    case BP_F32: { float f; uint32_t b = (uint32_t)bits; memcpy(&f, &b, 4); put_double(s, f); return; }
    case BP_F64: { double d; memcpy(&d, &bits, 8); put_double(s, d); return; }
    case BP_F16: put_double(s, bp_f16_to_f32((uint16_t)bits)); return;
    case BP_BF16: put_double(s, bp_bf16_to_f32((uint16_t)bits)); return;
    case BP_I64: snprintf(num, sizeof num, "%lld", (long long)(int64_t)bits); break;
    case BP_I32: snprintf(num, sizeof num, "%d", (int)(int32_t)(uint32_t)bits); break;
    case BP_I16: snprintf(num, sizeof num, "%d", (int)(int16_t)(uint16_t)bits); break;
    case BP_I8: snprintf(num, sizeof num, "%d", (int)(int8_t)(uint8_t)bits); break;
    default: snprintf(num, sizeof num, "%u", (unsigned)bits); break; /* u8, bool */
    }
    puts_(s, num);
}

/* Dimension dim of t from element *next on, as nested arrays. */
static void put_nested(sbuf *s, const tensor_view *t, int dim, int64_t *next, const bp_json_opts *opts, int tokens) {
    if (dim == t->ndim) { put_element(s, t, (*next)++, opts, tokens); return; }
    puts_(s, "[");
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        if (i) puts_(s, ",");
        put_nested(s, t, dim + 1, next, opts, tokens);
    }
    puts_(s, "]");
}

static void put_tensor_arrays(sbuf *s, const msgpack_object *o, const tensor_view *t, const bp_json_opts *opts) {
    const msgpack_object *dtype = map_get(o, "dtype");
    puts_(s, "{\"dtype\":");
    put_json_string(s, dtype->via.str.ptr, dtype->via.str.size);
    puts_(s, ",\"shape\":[");
    for (int i = 0; i < t->ndim; i++) {
        char num[24];
        snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        puts_(s, num);
    }
    puts_(s, "],\"data\":");
    int64_t next = 0;
    put_nested(s, t, 0, &next, opts, 0);
    puts_(s, "}");
}

/* ---- offsets as text spans ----------------------------------------------------------- */

/* The context of row `row` of the frame: its example_id ([T,2] offsets) or example_ids[row]
 * ([B,T,2]), looked up with opts->context_of. NULL when the frame has no such id or the
 * caller knows no context for it. */
static const char *row_context(const sbuf *s, int batched, int64_t row, const bp_json_opts *opts, size_t *len) {
    const msgpack_object *ids = map_get(s->root, batched ? "example_ids" : "example_id");
    if (ids && batched) {
        if (ids->type != MSGPACK_OBJECT_ARRAY || (int64_t)ids->via.array.size <= row) return NULL;
        ids = &ids->via.array.ptr[row];
    }
    if (!ids || ids->type != MSGPACK_OBJECT_STR) return NULL;
    return opts->context_of(opts->context_ctx, ids->via.str.ptr, ids->via.str.size, len);
}

/* A walk over a UTF-8 text by code point, forward from where the last lookup ended (offsets
 * mostly increase along a row), from the start again when a target lies behind it. */
typedef struct cp_cursor { const char *text; size_t len, byte; int64_t cp; } cp_cursor;

static size_t byte_of(cp_cursor *c, int64_t cp) {
    if (cp < c->cp) c->cp = 0, c->byte = 0;
    while (c->cp < cp && c->byte < c->len) {
        c->byte++;
        while (c->byte < c->len && ((unsigned char)c->text[c->byte] & 0xC0) == 0x80) c->byte++;
        c->cp++;
    }
    return c->byte;
}

static int64_t count_code_points(const char *text, size_t len) {
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)text[i] & 0xC0) != 0x80;
    return n;
}

/* The spans of one row of T (start, end) pairs starting at element pair0 of t. */
static void put_row_spans(sbuf *s, const tensor_view *t, int64_t pair0, int64_t T, const char *text, size_t len) {
    cp_cursor c = {text, len, 0, 0};
    int64_t ncp = count_code_points(text, len);
    puts_(s, "[");
    for (int64_t i = 0; i < T; i++) {
        int32_t start = (int32_t)(uint32_t)load_le(t->data + (size_t)(pair0 + i) * 8, 4);
        int32_t end = (int32_t)(uint32_t)load_le(t->data + (size_t)(pair0 + i) * 8 + 4, 4);
        if (i) puts_(s, ",");
        if (start < 0 || end < start || end > ncp) { puts_(s, "null"); continue; }
        size_t from = byte_of(&c, start), to = byte_of(&c, end);
        put_json_string(s, text + from, to - from);
    }
    puts_(s, "]");
}

/* ,"spans":... after an offsets tensor (framejson.h), when any row's context is known. */
static void put_spans(sbuf *s, const tensor_view *t, const bp_json_opts *opts) {
    int batched = t->ndim == 3;
    int64_t rows = batched ? t->shape[0] : 1, T = t->shape[t->ndim - 2], known = 0;
    for (int64_t r = 0; r < rows && !known; r++) {
        size_t len;
        known = row_context(s, batched, r, opts, &len) != NULL;
    }
    if (!known) return;
    puts_(s, batched ? ",\"spans\":[" : ",\"spans\":");
    for (int64_t r = 0; r < rows; r++) {
        size_t len = 0;
        const char *text = row_context(s, batched, r, opts, &len);
        if (r) puts_(s, ",");
        if (text) put_row_spans(s, t, r * T, T, text, len);
        else puts_(s, "null");
    }
    if (batched) puts_(s, "]");
}

static int is_offsets(const tensor_view *t) {
    return t->dtype == BP_I32 && (t->ndim == 2 || t->ndim == 3) && t->shape[t->ndim - 1] == 2;
}

static int is_key(const msgpack_object *k, const char *name) {
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(name) && !memcmp(k->via.str.ptr, name, k->via.str.size);
}

static int emit(sbuf *s, const msgpack_object *o, const bp_json_opts *opts, bp_err *err);

/* One "key":value of a map (top: the frame's own map), with the views opts asks for. */
static int emit_pair(sbuf *s, const msgpack_object_kv *kv, int top, const bp_json_opts *opts, bp_err *err) {
    put_json_string(s, kv->key.via.str.ptr, kv->key.via.str.size);
    puts_(s, ":");
    tensor_view t;
    int tensor = opts && (opts->arrays || opts->token_of || opts->context_of) && !as_tensor(&kv->val, &t);
    if (tensor && opts->arrays) put_tensor_arrays(s, &kv->val, &t, opts);
    else if (emit(s, &kv->val, opts, err)) return -1;
    if (tensor && opts->token_of && t.dtype == BP_I32 && is_key(&kv->key, "input_ids")) {
        int64_t next = 0;
        puts_(s, ",\"tokens\":");
        put_nested(s, &t, 0, &next, opts, 1);
    }
    if (tensor && top && opts->context_of && is_offsets(&t) && is_key(&kv->key, "offsets")) put_spans(s, &t, opts);
    return 0;
}

static int emit(sbuf *s, const msgpack_object *o, const bp_json_opts *opts, bp_err *err) {
    char num[32];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: puts_(s, "null"); break;
    case MSGPACK_OBJECT_BOOLEAN: puts_(s, o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* JSON readers (jansson included) hold integers in int64: larger ones travel as strings */
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            snprintf(num, sizeof num, "{\"$u64\":\"%llu\"}", (unsigned long long)o->via.u64);
        } else {
            snprintf(num, sizeof num, "%llu", (unsigned long long)o->via.u64);
        }
        puts_(s, num);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: snprintf(num, sizeof num, "%lld", (long long)o->via.i64); puts_(s, num); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: put_double(s, o->via.f64); break;
    case MSGPACK_OBJECT_STR: put_json_string(s, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        if (opts && opts->brief && o->via.bin.size > 32) {
            snprintf(num, sizeof num, "%u", o->via.bin.size);
            puts_(s, "{\"$bin_bytes\":");
            puts_(s, num);
            puts_(s, "}");
        } else {
            puts_(s, "{\"$bin\":\"");
            put_base64(s, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
            puts_(s, "\"}");
        }
        break;
    case MSGPACK_OBJECT_ARRAY:
        puts_(s, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) puts_(s, ",");
            if (emit(s, &o->via.array.ptr[i], opts, err)) return -1;
        }
        puts_(s, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        puts_(s, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) return bp_err_set(err, "map key is not a string");
            if (i) puts_(s, ",");
            if (emit_pair(s, kv, o == s->root, opts, err)) return -1;
        }
        puts_(s, "}");
        break;
    default:
        return bp_err_set(err, "MessagePack ext values have no JSON form");
    }
    return 0;
}

int bp_frame_to_json(const bp_frame *f, const bp_json_opts *opts, char **buf, size_t *len,
                     size_t *cap, bp_err *err) {
    const msgpack_object *root = bp_frame_root(f);
    sbuf s = {buf, len, cap, 0, root};
    if (!root) return bp_err_set(err, "no frame to write as JSON");
    if (emit(&s, root, opts, err)) return -1;
    put(&s, "\n", 1);
    if (s.oom) return bp_err_set(err, "out of memory writing JSON");
    return 0;
}

/* ---- JSON -> MessagePack ----------------------------------------------------------- */

static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static int pack_base64(msgpack_packer *pk, const char *text, size_t n, bp_err *err) {
    if (n % 4) return bp_err_set(err, "$bin is not base64 (length %zu is not a multiple of 4)", n);
    size_t pad = n >= 1 && text[n - 1] == '=' ? (n >= 2 && text[n - 2] == '=' ? 2 : 1) : 0;
    size_t out_len = n / 4 * 3 - pad;
    unsigned char *out = malloc(out_len ? out_len : 1);
    if (!out) return bp_err_set(err, "out of memory decoding $bin");
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            int c = text[i + j];
            v[j] = (c == '=' && i + 4 == n && j >= 4 - (int)pad) ? 0 : b64_value(c);
            if (v[j] < 0) { free(out); return bp_err_set(err, "$bin is not base64 (bad character at %zu)", i + (size_t)j); }
        }
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if (o < out_len) out[o++] = (unsigned char)(bits >> 16);
        if (o < out_len) out[o++] = (unsigned char)(bits >> 8);
        if (o < out_len) out[o++] = (unsigned char)bits;
    }
    msgpack_pack_bin(pk, out_len);
    msgpack_pack_bin_body(pk, out, out_len);
    free(out);
    return 0;
}

static int pack_json(msgpack_packer *pk, json_t *j, bp_err *err) {
    switch (json_typeof(j)) {
    case JSON_NULL: msgpack_pack_nil(pk); return 0;
    case JSON_TRUE: msgpack_pack_true(pk); return 0;
    case JSON_FALSE: msgpack_pack_false(pk); return 0;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); return 0;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); return 0;
    case JSON_STRING: bp_pack_str(pk, json_string_value(j), json_string_length(j)); return 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
            if (pack_json(pk, json_array_get(j, i), err)) return -1;
        return 0;
    }
    case JSON_OBJECT: {
        json_t *special;
        if (json_object_size(j) == 1 && (special = json_object_get(j, "$bin")) != NULL) {
            if (!json_is_string(special)) return bp_err_set(err, "$bin must be a base64 string");
            return pack_base64(pk, json_string_value(special), json_string_length(special), err);
        }
        if (json_object_size(j) == 1 && (special = json_object_get(j, "$float")) != NULL) {
            const char *v = json_is_string(special) ? json_string_value(special) : "";
            /* NAN and INFINITY, not 0.0/0.0: x86 makes that a negative NaN, another bit pattern */
            double d = strcmp(v, "nan") == 0 ? (double)NAN : strcmp(v, "inf") == 0 ? (double)INFINITY
                     : strcmp(v, "-inf") == 0 ? -(double)INFINITY : 0;
            if (d == 0) return bp_err_set(err, "$float must be \"nan\", \"inf\" or \"-inf\"");
            msgpack_pack_double(pk, d);
            return 0;
        }
        if (json_object_size(j) == 1 && (special = json_object_get(j, "$u64")) != NULL) {
            const char *v = json_is_string(special) ? json_string_value(special) : "";
            char *end = NULL;
            errno = 0;
            unsigned long long u = strtoull(v, &end, 10);
            if (!*v || *v == '-' || *end || errno || u <= (unsigned long long)INT64_MAX)
                return bp_err_set(err, "$u64 must be a decimal string above 9223372036854775807");
            msgpack_pack_uint64(pk, (uint64_t)u);
            return 0;
        }
        if (json_object_get(j, "$bin_bytes"))
            return bp_err_set(err, "a --brief JSON line cannot be replayed ($bin_bytes has no data)");
        msgpack_pack_map(pk, json_object_size(j));
        const char *key;
        json_t *val;
        json_object_foreach(j, key, val) {
            bp_pack_str(pk, key, strlen(key));
            if (pack_json(pk, val, err)) return -1;
        }
        return 0;
    }
    }
    return bp_err_set(err, "unexpected JSON value");
}

int bp_json_to_frame(const char *text, size_t len, bp_writer *w, bp_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return bp_err_set(err, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = bp_err_set(err, "a frame must be a JSON object");
    } else {
        bp_kind kind = BP_KIND_COUNT;
        json_t *k = json_object_get(root, "k");
        if (json_is_string(k))
            for (int i = 0; i < BP_KIND_COUNT; i++)
                if (strcmp(json_string_value(k), bp_kind_name((bp_kind)i)) == 0) kind = (bp_kind)i;
        bp_writer_reset_raw(w, kind);
        msgpack_packer pk;
        bp_writer_packer(w, &pk);
        rc = pack_json(&pk, root, err);
        if (rc == 0 && bp_writer_failed(w)) rc = bp_err_set(err, "out of memory encoding the frame");
    }
    json_decref(root);
    return rc;
}
