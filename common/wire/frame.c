/* wire/frame.c — MessagePack encoding and decoding of protocol-v1 frames (see frame.h).
 *
 * Must never: do I/O or exit: errors go back through bp_err.
 */
#include "wire/frame.h"

#include <stdlib.h>
#include <string.h>

static const char *kind_names[BP_KIND_COUNT] = {
    "hello", "example", "feature", "batch", "logits", "prediction", "metric", "epoch", "eos", "error",
};

const char *bp_kind_name(bp_kind k) { return (unsigned)k < BP_KIND_COUNT ? kind_names[k] : "?"; }

static int key_is(const msgpack_object *k, const char *key) {
    size_t n = strlen(key);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0;
}

const msgpack_object *bp_map_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

const msgpack_object *bp_get(const bp_frame *f, const char *key) { return f->live ? bp_map_get(bp_root(f), key) : NULL; }

int bp_frame_decode(bp_frame *f, const char *bytes, size_t len, void (*release_fn)(void *),
                    void *release_arg, bp_err *err) {
    memset(f, 0, sizeof *f);
    msgpack_unpacked_init(&f->unpacked);
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(&f->unpacked, bytes, len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&f->unpacked);
        return bp_err_set(err, r == MSGPACK_UNPACK_CONTINUE ? "malformed MessagePack: frame truncated"
                                                            : "malformed MessagePack");
    }
    if (off != len) {
        msgpack_unpacked_destroy(&f->unpacked);
        return bp_err_set(err, "malformed frame: %zu trailing bytes after the map", len - off);
    }
    const msgpack_object *root = &f->unpacked.data;
    const char *problem = NULL;
    char buf[160];
    if (root->type != MSGPACK_OBJECT_MAP) {
        problem = "frame is not a map";
    } else {
        const msgpack_object *v = bp_map_get(root, "v"), *k = bp_map_get(root, "k");
        if (!v) {
            problem = "frame has no 'v' (protocol version)";
        } else if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            problem = "frame 'v' is not a positive integer";
        } else if (v->via.u64 != BP_PROTO_VERSION) {
            snprintf(buf, sizeof buf, "unsupported protocol version %llu (this build speaks %d)",
                     (unsigned long long)v->via.u64, BP_PROTO_VERSION);
            problem = buf;
        } else if (!k) {
            problem = "frame has no 'k' (kind)";
        } else if (k->type != MSGPACK_OBJECT_STR) {
            problem = "frame 'k' is not a string";
        } else {
            int found = -1;
            for (int i = 0; i < BP_KIND_COUNT; i++)
                if (key_is(k, kind_names[i])) found = i;
            if (found < 0) {
                snprintf(buf, sizeof buf, "unknown frame kind '%.*s'", (int)(k->via.str.size > 40 ? 40 : k->via.str.size),
                         k->via.str.ptr);
                problem = buf;
            } else {
                f->kind = (bp_kind)found;
            }
        }
    }
    if (problem) {
        msgpack_unpacked_destroy(&f->unpacked);
        memset(f, 0, sizeof *f);
        return bp_err_set(err, "%s", problem);
    }
    f->raw = bytes;
    f->raw_len = len;
    f->release_fn = release_fn;
    f->release_arg = release_arg;
    f->live = 1;
    return 0;
}

void bp_frame_release(bp_frame *f) {
    if (!f->live) return;
    if (!f->borrowed) {
        msgpack_unpacked_destroy(&f->unpacked);
        if (f->release_fn) f->release_fn(f->release_arg);
    }
    memset(f, 0, sizeof *f);
}

static const msgpack_object *need(const bp_frame *f, const char *key, bp_err *err) {
    const msgpack_object *o = bp_get(f, key);
    if (!o) bp_err_set(err, "%s frame has no '%s'", bp_kind_name(f->kind), key);
    return o;
}

int bp_get_int(const bp_frame *f, const char *key, int64_t *out, bp_err *err) {
    const msgpack_object *o = need(f, key, err);
    if (!o) return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) *out = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *out = o->via.i64;
    else return bp_err_set(err, "%s frame field '%s' is not an integer", bp_kind_name(f->kind), key);
    return 0;
}

int bp_get_float(const bp_frame *f, const char *key, double *out, bp_err *err) {
    const msgpack_object *o = need(f, key, err);
    if (!o) return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
    default: return bp_err_set(err, "%s frame field '%s' is not a number", bp_kind_name(f->kind), key);
    }
}

int bp_get_bool(const bp_frame *f, const char *key, int *out, bp_err *err) {
    const msgpack_object *o = need(f, key, err);
    if (!o) return -1;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return bp_err_set(err, "%s frame field '%s' is not a boolean", bp_kind_name(f->kind), key);
    *out = o->via.boolean;
    return 0;
}

int bp_get_str(const bp_frame *f, const char *key, const char **s, size_t *len, bp_err *err) {
    const msgpack_object *o = need(f, key, err);
    if (!o) return -1;
    if (o->type != MSGPACK_OBJECT_STR)
        return bp_err_set(err, "%s frame field '%s' is not a string", bp_kind_name(f->kind), key);
    *s = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

char *bp_get_strdup(const bp_frame *f, const char *key, bp_err *err) {
    const char *s;
    size_t n;
    if (bp_get_str(f, key, &s, &n, err)) return NULL;
    char *copy = malloc(n + 1);
    if (!copy) { bp_err_set(err, "out of memory copying '%s'", key); return NULL; }
    memcpy(copy, s, n);
    copy[n] = 0;
    return copy;
}

int bp_tensor_from_object(const msgpack_object *o, bp_tensor_view *t, const char *key, bp_err *err) {
    memset(t, 0, sizeof *t);
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return bp_err_set(err, "tensor '%s' is not a map of dtype, shape, data", key);
    const msgpack_object *dt = bp_map_get(o, "dtype"), *sh = bp_map_get(o, "shape"), *data = bp_map_get(o, "data");
    if (!dt || dt->type != MSGPACK_OBJECT_STR) return bp_err_set(err, "tensor '%s' has no string 'dtype'", key);
    if (bp_dtype_parse(dt->via.str.ptr, dt->via.str.size, &t->dtype))
        return bp_err_set(err, "tensor '%s' has unknown dtype '%.*s'", key, (int)(dt->via.str.size > 16 ? 16 : dt->via.str.size),
                          dt->via.str.ptr);
    if (!sh || sh->type != MSGPACK_OBJECT_ARRAY) return bp_err_set(err, "tensor '%s' has no array 'shape'", key);
    if (sh->via.array.size > BP_MAX_DIMS) return bp_err_set(err, "tensor '%s' has more than %d dimensions", key, BP_MAX_DIMS);
    t->ndim = (int)sh->via.array.size;
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        const msgpack_object *d = &sh->via.array.ptr[i];
        if (d->type != MSGPACK_OBJECT_POSITIVE_INTEGER || d->via.u64 > (1ull << 40))
            return bp_err_set(err, "tensor '%s' shape[%d] is not a non-negative integer", key, i);
        t->shape[i] = (int64_t)d->via.u64;
        numel *= d->via.u64;
        if (numel > (1ull << 40)) return bp_err_set(err, "tensor '%s' is impossibly large", key);
    }
    if (!data || data->type != MSGPACK_OBJECT_BIN) return bp_err_set(err, "tensor '%s' has no bin 'data'", key);
    size_t want = (size_t)numel * bp_dtype_size(t->dtype);
    if (data->via.bin.size != want)
        return bp_err_set(err, "tensor '%s' has %u data bytes but dtype %s and its shape need %zu", key,
                          data->via.bin.size, bp_dtype_name(t->dtype), want);
    t->data = data->via.bin.ptr;
    t->nbytes = want;
    return 0;
}

int bp_get_tensor(const bp_frame *f, const char *key, bp_tensor_view *t, bp_err *err) {
    const msgpack_object *o = need(f, key, err);
    if (!o) return -1;
    return bp_tensor_from_object(o, t, key, err);
}

int bp_tensor_expect(const bp_tensor_view *t, const char *key, bp_dtype dtype, int ndim,
                     const int64_t *want_shape, bp_err *err) {
    if (t->dtype != dtype)
        return bp_err_set(err, "tensor '%s' has dtype %s, expected %s", key, bp_dtype_name(t->dtype), bp_dtype_name(dtype));
    if (t->ndim != ndim) return bp_err_set(err, "tensor '%s' has %d dimensions, expected %d", key, t->ndim, ndim);
    for (int i = 0; want_shape && i < ndim; i++)
        if (want_shape[i] >= 0 && t->shape[i] != want_shape[i])
            return bp_err_set(err, "tensor '%s' has shape[%d] = %lld, expected %lld", key, i, (long long)t->shape[i],
                              (long long)want_shape[i]);
    return 0;
}

void bp_tensor_copy(const bp_tensor_view *t, void *dst) {
    if (t->nbytes) memcpy(dst, t->data, t->nbytes);
}

/* ---- writing ---------------------------------------------------------------------- */

/* Room for a map32 header, fixed up to the smallest form in bp_finish. */
#define HEADER_ROOM 5

void bp_writer_init(bp_writer *w) {
    memset(w, 0, sizeof *w);
    msgpack_sbuffer_init(&w->buf);
    msgpack_packer_init(&w->pk, &w->buf, msgpack_sbuffer_write);
}

void bp_writer_free(bp_writer *w) {
    msgpack_sbuffer_destroy(&w->buf);
    memset(w, 0, sizeof *w);
}

void bp_pack_str(msgpack_packer *pk, const char *s, size_t len) {
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

void bp_put_key(bp_writer *w, const char *key) {
    bp_pack_str(&w->pk, key, strlen(key));
    w->fields++;
}

void bp_begin(bp_writer *w, bp_kind kind) {
    msgpack_sbuffer_clear(&w->buf);
    static const char room[HEADER_ROOM] = {0};
    msgpack_sbuffer_write(&w->buf, room, HEADER_ROOM);
    w->fields = 0;
    w->kind = kind;
    w->open = 1;
    bp_put_int(w, "v", BP_PROTO_VERSION);
    bp_put_str(w, "k", bp_kind_name(kind));
}

void bp_put_int(bp_writer *w, const char *key, int64_t v) {
    bp_put_key(w, key);
    msgpack_pack_int64(&w->pk, v);
}

void bp_put_float(bp_writer *w, const char *key, double v) {
    bp_put_key(w, key);
    msgpack_pack_double(&w->pk, v);
}

void bp_put_bool(bp_writer *w, const char *key, int v) {
    bp_put_key(w, key);
    if (v) msgpack_pack_true(&w->pk);
    else msgpack_pack_false(&w->pk);
}

void bp_put_strn(bp_writer *w, const char *key, const char *s, size_t len) {
    bp_put_key(w, key);
    bp_pack_str(&w->pk, s, len);
}

void bp_put_str(bp_writer *w, const char *key, const char *s) { bp_put_strn(w, key, s, strlen(s)); }

void bp_put_tensor(bp_writer *w, const char *key, bp_dtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    bp_put_key(w, key);
    msgpack_pack_map(&w->pk, 3);
    bp_pack_str(&w->pk, "dtype", 5);
    const char *name = bp_dtype_name(dtype);
    bp_pack_str(&w->pk, name, strlen(name));
    bp_pack_str(&w->pk, "shape", 5);
    msgpack_pack_array(&w->pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_int64(&w->pk, shape[i]);
    bp_pack_str(&w->pk, "data", 4);
    size_t nbytes = (size_t)bp_numel(shape, ndim) * bp_dtype_size(dtype);
    msgpack_pack_bin(&w->pk, nbytes);
    msgpack_pack_bin_body(&w->pk, data, nbytes);
}

/* Rewrite the 5 reserved bytes as the smallest map header and return where the frame starts. */
static size_t fix_header(bp_writer *w) {
    unsigned char *b = (unsigned char *)w->buf.data;
    uint32_t n = w->fields;
    size_t start;
    if (n <= 15) {
        start = 4;
        b[4] = (unsigned char)(0x80 | n);
    } else if (n <= 0xffff) {
        start = 2;
        b[2] = 0xde; b[3] = (unsigned char)(n >> 8); b[4] = (unsigned char)n;
    } else {
        start = 0;
        b[0] = 0xdf; b[1] = (unsigned char)(n >> 24); b[2] = (unsigned char)(n >> 16);
        b[3] = (unsigned char)(n >> 8); b[4] = (unsigned char)n;
    }
    w->open = 0;
    return start;
}

const char *bp_finish(bp_writer *w, size_t *len) {
    size_t start = fix_header(w);
    *len = w->buf.size - start;
    return w->buf.data + start;
}

char *bp_finish_release(bp_writer *w, size_t *len) {
    size_t start = fix_header(w);
    size_t size = w->buf.size;
    char *data = msgpack_sbuffer_release(&w->buf);
    if (start) memmove(data, data + start, size - start);
    *len = size - start;
    return data;
}

int bp_hello_is_qa(const bp_frame *hello) {
    const msgpack_object *o = bp_get(hello, "task");
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == 2 && memcmp(o->via.str.ptr, "qa", 2) == 0;
}

int bp_hello_labels(const bp_frame *hello, char ***labels, bp_err *err) {
    *labels = NULL;
    const msgpack_object *l = bp_get(hello, "labels");
    if (!l || l->type != MSGPACK_OBJECT_ARRAY) return 0;
    char **out = calloc(l->via.array.size + 1, sizeof *out);
    if (!out) return bp_err_set(err, "out of memory reading the hello's labels");
    for (uint32_t i = 0; i < l->via.array.size; i++) {
        const msgpack_object *o = &l->via.array.ptr[i];
        out[i] = o->type == MSGPACK_OBJECT_STR ? strndup(o->via.str.ptr, o->via.str.size) : strdup("?");
        if (!out[i]) {
            bp_labels_free(out, (int)i);
            return bp_err_set(err, "out of memory reading the hello's labels");
        }
    }
    *labels = out;
    return (int)l->via.array.size;
}

void bp_labels_free(char **labels, int n) {
    for (int i = 0; labels && i < n; i++) free(labels[i]);
    free(labels);
}
