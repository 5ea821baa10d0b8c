/* wire/framejson.c — lossless JSON view of frames (see framejson.h).
 * Must never: lose a value on the way to JSON and back (a float stays a float, bin stays
 * bin), or do I/O. */
#include "wire/framejson.h"

#include "wire/codec.h"

#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf { char **buf; size_t *len, *cap; int oom; } sbuf;

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
            put_json_string(s, kv->key.via.str.ptr, kv->key.via.str.size);
            puts_(s, ":");
            if (emit(s, &kv->val, opts, err)) return -1;
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
    sbuf s = {buf, len, cap, 0};
    const msgpack_object *root = bp_frame_root(f);
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
