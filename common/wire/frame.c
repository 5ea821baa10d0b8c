/* wire/frame.c — MessagePack encoding and decoding of protocol-v1 frames (see frame.h and
 * codec.h): the one place that knows the byte format.
 *
 * Must never: do I/O or exit: errors go back through bp_err.
 */
#include "wire/codec.h"

#include "base/utf8.h"

#include <inttypes.h>
#include <stdarg.h>
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

const msgpack_object *bp_frame_root(const bp_frame *f) { return f->live ? &f->tree->unpacked.data : NULL; }

const msgpack_object *bp_frame_field(const bp_frame *f, const char *key) { return bp_map_get(bp_frame_root(f), key); }

int bp_has(const bp_frame *f, const char *key) { return bp_frame_field(f, key) != NULL; }

/* ---- walking the bytes ---------------------------------------------------------------- */

/* Walk the first MessagePack object of p[0..len) without decoding or allocating. Returns its
 * size in bytes; 0 when the bytes end before it does; (size_t)-1 with err when they can never
 * be a frame: the reserved byte 0xc1, nesting deeper than BP_FRAME_MAX_DEPTH, or more than a
 * frame can hold. `whole`: p holds the whole message, so every container is checked against
 * the bytes actually there (each value takes at least one byte: an array32 header announcing
 * 4 billion elements in a 21-byte message is refused here, before msgpack-c would allocate
 * 96 GiB of objects for it); otherwise p is the start of a byte stream and the bound is
 * BP_FRAME_MAX_BYTES. The values still to read are counted at every level, so what msgpack-c
 * allocates for one frame is bounded by a small multiple of its size. */
static size_t msgpack_walk(const void *bytes, size_t len, int whole, bp_err *err) {
    const unsigned char *p = bytes;
    const size_t room = whole ? len : BP_FRAME_MAX_BYTES;
    size_t pos = 0;
    uint64_t pending[BP_FRAME_MAX_DEPTH + 1];   /* values still to read at each open level */
    uint64_t total = 1;                         /* ... and at all of them */
    int depth = 0;
    pending[0] = 1;
    for (;;) {
        while (pending[depth] == 0) {
            if (depth == 0) return pos;
            depth--;
        }
        if (pos >= len) return 0;
        size_t at = pos;
        unsigned char b = p[pos++];
        pending[depth]--;
        total--;
        uint64_t skip = 0, n = 0;
        size_t hdr = 0; /* bytes of big-endian length after the type byte */
        int kind = 0;   /* 0 scalar/payload, 1 array, 2 map */
        if (b <= 0x7f || b >= 0xe0) {
        } else if (b <= 0x8f) { kind = 2; n = b & 0x0f;
        } else if (b <= 0x9f) { kind = 1; n = b & 0x0f;
        } else if (b <= 0xbf) { skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc0: case 0xc2: case 0xc3: break;
            case 0xc1: return bp_err_set(err, "malformed MessagePack: reserved byte 0xc1 at byte %zu", at), (size_t)-1;
            case 0xc4: case 0xd9: hdr = 1; break;          /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; break;          /* bin16, str16 */
            case 0xc6: case 0xdb: hdr = 4; break;          /* bin32, str32 */
            case 0xc7: hdr = 1; skip = 1; break;           /* ext8: len + type */
            case 0xc8: hdr = 2; skip = 1; break;
            case 0xc9: hdr = 4; skip = 1; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                     /* fixext 1..16 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: hdr = 2; kind = 1; break;
            case 0xdd: hdr = 4; kind = 1; break;
            case 0xde: hdr = 2; kind = 2; break;
            case 0xdf: hdr = 4; kind = 2; break;
            }
        }
        if (hdr) {
            if (len - pos < hdr) return 0;
            uint64_t v = 0;
            for (size_t i = 0; i < hdr; i++) v = (v << 8) | p[pos + i];
            pos += hdr;
            if (kind) n = v;
            else skip += v;
        }
        uint64_t left = pos < room ? room - pos : 0;
        if (kind) {
            uint64_t values = kind == 2 ? 2 * n : n;
            if (values > left - total)
                return bp_err_set(err, "malformed MessagePack: %s at byte %zu announces %" PRIu64
                                  " elements, more than the frame can hold", kind == 2 ? "map" : "array", at, n),
                       (size_t)-1;
            if (values == 0) continue;
            if (depth == BP_FRAME_MAX_DEPTH)
                return bp_err_set(err, "malformed MessagePack: nested deeper than %d levels", BP_FRAME_MAX_DEPTH),
                       (size_t)-1;
            total += values;
            pending[++depth] = values;
            continue;
        }
        if (skip > left) {
            if (whole) return 0;
            return bp_err_set(err, "malformed MessagePack: a value of %" PRIu64 " bytes at byte %zu, more than a "
                              "frame may hold (%zu bytes)", skip, at, (size_t)BP_FRAME_MAX_BYTES), (size_t)-1;
        }
        if (skip > len - pos) return 0;
        pos += (size_t)skip;
    }
}

size_t bp_msgpack_size(const void *bytes, size_t len, bp_err *err) { return msgpack_walk(bytes, len, 0, err); }

/* ---- map keys ------------------------------------------------------------------------ */

/* "frame field 'answers'[1]": where a nested map is, for messages. */
typedef struct key_path { char text[160]; } key_path;

static void path_push(key_path *child, const key_path *parent, const msgpack_object *key, long index) {
    size_t used = strlen(parent->text), room = sizeof child->text - used;
    memcpy(child->text, parent->text, used + 1);
    char *end = child->text + used;
    int n = 0;
    if (key) {
        int klen = (int)(key->via.str.size > 40 ? 40 : key->via.str.size);
        n = used ? snprintf(end, room, "['%.*s']", klen, key->via.str.ptr) : snprintf(end, room, " field '%.*s'", klen, key->via.str.ptr);
    } else {
        n = snprintf(end, room, "[%ld]", index);
    }
    if (n < 0) *end = 0;   /* a path too long to say is cut, never a reason to fail */
    for (char *c = child->text; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

static int cmp_key(const void *a, const void *b) {
    const msgpack_object *x = *(const msgpack_object *const *)a, *y = *(const msgpack_object *const *)b;
    if (x->via.str.size != y->via.str.size) return x->via.str.size < y->via.str.size ? -1 : 1;
    return x->via.str.size ? memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size) : 0;
}

static int same_key(const msgpack_object *x, const msgpack_object *y) { return cmp_key(&x, &y) == 0; }

static int duplicate_key(const msgpack_object *key, const key_path *at, bp_err *err) {
    char name[48];
    size_t n = key->via.str.size > 40 ? 40 : key->via.str.size;
    memcpy(name, key->via.str.ptr, n);
    name[n] = 0;
    for (char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
    return bp_err_set(err, "frame%s has key '%s' twice", at->text, name);
}

/* A string of the frame, UTF-8 as the protocol says: what JSON (frames2json, then
 * json2frames) can carry unchanged. */
static int check_string(msgpack_object *o, const key_path *at, bp_err *err) {
    /* msgpack-c gives an empty string no pointer: every view handed out points somewhere */
    if (o->via.str.size == 0) o->via.str.ptr = "";
    int64_t bad = bp_utf8_invalid_at(o->via.str.ptr, o->via.str.size);
    if (bad >= 0) return bp_err_set(err, "frame%s is a string that is not UTF-8 (byte %lld)", at->text, (long long)bad);
    return 0;
}

/* Every map in o has UTF-8 string keys without NUL, each once: a frame read by name must mean
 * one thing (a reader taking the first 'label' and a JSON round trip keeping the last would
 * not), and every string is UTF-8. Sorting keeps a hostile map of a million keys from costing
 * a million squared comparisons. */
static int check_keys(msgpack_object *o, const key_path *at, bp_err *err) {
    key_path child;
    if (o->type == MSGPACK_OBJECT_STR) return check_string(o, at, err);
    if (o->type == MSGPACK_OBJECT_BIN && o->via.bin.size == 0) o->via.bin.ptr = "";
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            msgpack_object *item = &o->via.array.ptr[i];
            if (item->type != MSGPACK_OBJECT_ARRAY && item->type != MSGPACK_OBJECT_MAP && item->type != MSGPACK_OBJECT_STR &&
                item->type != MSGPACK_OBJECT_BIN)
                continue;
            path_push(&child, at, NULL, (long)i);
            if (check_keys(item, &child, err)) return -1;
        }
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_MAP) return 0;
    uint32_t n = o->via.map.size;
    msgpack_object_kv *kv = o->via.map.ptr;
    for (uint32_t i = 0; i < n; i++) {
        msgpack_object *key = &kv[i].key;
        if (key->type != MSGPACK_OBJECT_STR) return bp_err_set(err, "frame%s has a key that is not a string", at->text);
        if (key->via.str.size == 0) key->via.str.ptr = "";
        if (memchr(key->via.str.ptr, 0, key->via.str.size) ||
            bp_utf8_invalid_at(key->via.str.ptr, key->via.str.size) >= 0)
            return bp_err_set(err, "frame%s has a key that is not a name (a NUL byte, or not UTF-8)", at->text);
    }
    if (n <= 16) {
        for (uint32_t i = 1; i < n; i++)
            for (uint32_t j = 0; j < i; j++)
                if (same_key(&kv[i].key, &kv[j].key)) return duplicate_key(&kv[i].key, at, err);
    } else {
        const msgpack_object **keys = malloc(n * sizeof *keys);
        if (!keys) return bp_err_set(err, "out of memory checking a map of %u keys", (unsigned)n);
        for (uint32_t i = 0; i < n; i++) keys[i] = &kv[i].key;
        qsort(keys, n, sizeof *keys, cmp_key);
        for (uint32_t i = 1; i < n; i++)
            if (same_key(keys[i], keys[i - 1])) {
                duplicate_key(keys[i], at, err);
                free(keys);
                return -1;
            }
        free(keys);
    }
    for (uint32_t i = 0; i < n; i++) {
        msgpack_object *v = &kv[i].val;
        if (v->type != MSGPACK_OBJECT_ARRAY && v->type != MSGPACK_OBJECT_MAP && v->type != MSGPACK_OBJECT_STR &&
            v->type != MSGPACK_OBJECT_BIN)
            continue;
        path_push(&child, at, &kv[i].key, 0);
        if (check_keys(v, &child, err)) return -1;
    }
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------ */

/* What is wrong with the decoded root as a frame (NULL when nothing), its kind in *kind. */
static const char *check_root(const msgpack_object *root, bp_kind *kind, char *buf, size_t size) {
    if (root->type != MSGPACK_OBJECT_MAP) return "frame is not a map";
    const msgpack_object *v = bp_map_get(root, "v"), *k = bp_map_get(root, "k");
    if (!v) return "frame has no 'v' (protocol version)";
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return "frame 'v' is not a positive integer";
    if (v->via.u64 != BP_PROTO_VERSION) {
        snprintf(buf, size, "unsupported protocol version %llu (this build speaks %d)", (unsigned long long)v->via.u64,
                 BP_PROTO_VERSION);
        return buf;
    }
    if (!k) return "frame has no 'k' (kind)";
    if (k->type != MSGPACK_OBJECT_STR) return "frame 'k' is not a string";
    for (int i = 0; i < BP_KIND_COUNT; i++)
        if (key_is(k, kind_names[i])) {
            *kind = (bp_kind)i;
            return NULL;
        }
    snprintf(buf, size, "unknown frame kind '%.*s'", (int)(k->via.str.size > 40 ? 40 : k->via.str.size), k->via.str.ptr);
    return buf;
}

int bp_frame_decode(bp_frame *f, const char *bytes, size_t len, void (*release_fn)(void *),
                    void *release_arg, bp_err *err) {
    memset(f, 0, sizeof *f);
    f->index = -1;
    struct bp_frame_tree *tree = malloc(sizeof *tree);
    if (!tree) return bp_err_set(err, "out of memory decoding a %zu-byte frame", len);
    msgpack_unpacked_init(&tree->unpacked);
    char buf[sizeof(bp_err)];
    const char *problem = NULL;
    bp_kind kind = BP_HELLO;
    bp_err walk_err;
    /* Walked first: nothing reaches msgpack-c that could make it allocate beyond the bytes. */
    size_t size = len > BP_FRAME_MAX_BYTES ? SIZE_MAX : msgpack_walk(bytes, len, 1, &walk_err);
    if (len > BP_FRAME_MAX_BYTES) {
        snprintf(buf, sizeof buf, "frame of %zu bytes is over the limit of %zu bytes", len, (size_t)BP_FRAME_MAX_BYTES);
        problem = buf;
    } else if (size == (size_t)-1) {
        problem = walk_err.msg;
    } else if (size == 0) {
        problem = "malformed MessagePack: frame truncated";
    } else if (size != len) {
        snprintf(buf, sizeof buf, "malformed frame: %zu trailing bytes after the map", len - size);
        problem = buf;
    } else {
        size_t off = 0;
        msgpack_unpack_return r = msgpack_unpack_next(&tree->unpacked, bytes, len, &off);
        if (r != MSGPACK_UNPACK_SUCCESS || off != len) problem = "malformed MessagePack";
        else if (tree->unpacked.data.type != MSGPACK_OBJECT_MAP) problem = "frame is not a map";
        else if (check_keys(&tree->unpacked.data, &(key_path){{0}}, &walk_err)) problem = walk_err.msg;
        else problem = check_root(&tree->unpacked.data, &kind, buf, sizeof buf);
    }
    if (problem) {
        msgpack_unpacked_destroy(&tree->unpacked);
        free(tree);
        return bp_err_set(err, "%s", problem);
    }
    f->kind = kind;
    f->tree = tree;
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
        msgpack_unpacked_destroy(&f->tree->unpacked);
        free(f->tree);
        if (f->release_fn) f->release_fn(f->release_arg);
    }
    memset(f, 0, sizeof *f);
}

/* ---- getters ------------------------------------------------------------------------- */

const char *bp_frame_where(const bp_frame *f, char *buf, size_t size) {
    if (f->index >= 0) snprintf(buf, size, "%s frame %" PRId64, bp_kind_name(f->kind), f->index);
    else snprintf(buf, size, "%s frame", bp_kind_name(f->kind));
    return buf;
}

/* "field 'KEY' ... (KIND frame N)": every field error has this shape, the frame as its WHERE. */
static int field_error(const bp_frame *f, const char *key, bp_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int field_error(const bp_frame *f, const char *key, bp_err *err, const char *fmt, ...) {
    char where[64], what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return bp_err_set(err, "field '%s'%s (%s)", key, what, bp_frame_where(f, where, sizeof where));
}

/* The field, or NULL: with err set when `required` (the field is absent). */
static const msgpack_object *lookup(const bp_frame *f, const char *key, int required, bp_err *err) {
    const msgpack_object *o = bp_frame_field(f, key);
    char where[64];
    if (!o && required) bp_err_set(err, "no field '%s' (%s)", key, bp_frame_where(f, where, sizeof where));
    return o;
}

/* What a getter returns for an absent field (lookup set err when it was required) and for a
 * present, valid one: bp_get_X 0, bp_find_X 1. */
static int absent(int required) { return required ? -1 : 0; }
static int present(int required) { return required ? 0 : 1; }

static int int_of(const bp_frame *f, const char *key, const msgpack_object *o, int64_t min, int64_t max,
                  int64_t *out, bp_err *err) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX || (int64_t)o->via.u64 > max || (int64_t)o->via.u64 < min)
            return field_error(f, key, err, " is %" PRIu64 ", outside [%" PRId64 ", %" PRId64 "]", o->via.u64, min, max);
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (o->via.i64 < min || o->via.i64 > max)
            return field_error(f, key, err, " is %" PRId64 ", outside [%" PRId64 ", %" PRId64 "]", o->via.i64, min, max);
        *out = o->via.i64;
        return 0;
    }
    return field_error(f, key, err, " is not an integer");
}

static int get_int(const bp_frame *f, const char *key, int required, int64_t min, int64_t max, int64_t *out,
                   bp_err *err) {
    const msgpack_object *o = lookup(f, key, required, err);
    if (!o) return absent(required);
    return int_of(f, key, o, min, max, out, err) ? -1 : present(required);
}
int bp_get_int(const bp_frame *f, const char *key, int64_t min, int64_t max, int64_t *out, bp_err *err) {
    return get_int(f, key, 1, min, max, out, err);
}
int bp_find_int(const bp_frame *f, const char *key, int64_t min, int64_t max, int64_t *out, bp_err *err) {
    return get_int(f, key, 0, min, max, out, err);
}

static int float_of(const bp_frame *f, const char *key, const msgpack_object *o, double *out, bp_err *err) {
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
    default: return field_error(f, key, err, " is not a number");
    }
}

static int get_float(const bp_frame *f, const char *key, int required, double *out, bp_err *err) {
    const msgpack_object *o = lookup(f, key, required, err);
    if (!o) return absent(required);
    return float_of(f, key, o, out, err) ? -1 : present(required);
}
int bp_get_float(const bp_frame *f, const char *key, double *out, bp_err *err) { return get_float(f, key, 1, out, err); }
int bp_find_float(const bp_frame *f, const char *key, double *out, bp_err *err) { return get_float(f, key, 0, out, err); }

static int bool_of(const bp_frame *f, const char *key, const msgpack_object *o, int *out, bp_err *err) {
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return field_error(f, key, err, " is not a boolean");
    *out = o->via.boolean;
    return 0;
}

static int get_bool(const bp_frame *f, const char *key, int required, int *out, bp_err *err) {
    const msgpack_object *o = lookup(f, key, required, err);
    if (!o) return absent(required);
    return bool_of(f, key, o, out, err) ? -1 : present(required);
}
int bp_get_bool(const bp_frame *f, const char *key, int *out, bp_err *err) { return get_bool(f, key, 1, out, err); }
int bp_find_bool(const bp_frame *f, const char *key, int *out, bp_err *err) { return get_bool(f, key, 0, out, err); }

static int str_of(const bp_frame *f, const char *key, const msgpack_object *o, const char **s, size_t *len,
                  bp_err *err) {
    if (o->type != MSGPACK_OBJECT_STR) return field_error(f, key, err, " is not a string");
    *s = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

static int get_str(const bp_frame *f, const char *key, int required, const char **s, size_t *len, bp_err *err) {
    const msgpack_object *o = lookup(f, key, required, err);
    if (!o) return absent(required);
    return str_of(f, key, o, s, len, err) ? -1 : present(required);
}
int bp_get_str(const bp_frame *f, const char *key, const char **s, size_t *len, bp_err *err) {
    return get_str(f, key, 1, s, len, err);
}
int bp_find_str(const bp_frame *f, const char *key, const char **s, size_t *len, bp_err *err) {
    return get_str(f, key, 0, s, len, err);
}

char *bp_get_strdup(const bp_frame *f, const char *key, bp_err *err) {
    const char *s = NULL;
    size_t n = 0;
    if (bp_get_str(f, key, &s, &n, err)) return NULL;
    char *copy = malloc(n + 1);
    if (!copy) { bp_err_set(err, "out of memory copying '%s'", key); return NULL; }
    memcpy(copy, s, n);
    copy[n] = 0;
    return copy;
}

static int strs_of(const bp_frame *f, const char *key, const msgpack_object *o, bp_str **items, size_t *n,
                   bp_err *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY) return field_error(f, key, err, " is not an array of strings");
    uint32_t count = o->via.array.size;
    bp_str *views = NULL;
    if (count && !(views = malloc(count * sizeof *views))) return bp_err_set(err, "out of memory reading '%s'", key);
    for (uint32_t i = 0; i < count; i++) {
        const msgpack_object *s = &o->via.array.ptr[i];
        if (s->type != MSGPACK_OBJECT_STR) {
            free(views);
            return field_error(f, key, err, "[%u] is not a string", (unsigned)i);
        }
        views[i] = (bp_str){s->via.str.ptr, s->via.str.size};
    }
    *items = views;
    *n = count;
    return 0;
}

static int get_strs(const bp_frame *f, const char *key, int required, bp_str **items, size_t *n, bp_err *err) {
    const msgpack_object *o = lookup(f, key, required, err);
    if (!o) return absent(required);
    return strs_of(f, key, o, items, n, err) ? -1 : present(required);
}
int bp_get_strs(const bp_frame *f, const char *key, bp_str **items, size_t *n, bp_err *err) {
    return get_strs(f, key, 1, items, n, err);
}
int bp_find_strs(const bp_frame *f, const char *key, bp_str **items, size_t *n, bp_err *err) {
    return get_strs(f, key, 0, items, n, err);
}

/* answers[i]: a map with a string "text" and an integer "answer_start". */
static int answer_of(const bp_frame *f, const msgpack_object *a, uint32_t i, bp_answer *out, bp_err *err) {
    if (a->type != MSGPACK_OBJECT_MAP) return field_error(f, "answers", err, "[%u] is not a map", (unsigned)i);
    const msgpack_object *text = bp_map_get(a, "text"), *start = bp_map_get(a, "answer_start");
    if (!text || text->type != MSGPACK_OBJECT_STR)
        return field_error(f, "answers", err, "[%u] has no string 'text'", (unsigned)i);
    if (!start || (start->type != MSGPACK_OBJECT_NEGATIVE_INTEGER &&
                   (start->type != MSGPACK_OBJECT_POSITIVE_INTEGER || start->via.u64 > (uint64_t)INT64_MAX)))
        return field_error(f, "answers", err, "[%u] has no integer 'answer_start'", (unsigned)i);
    out->text = text->via.str.ptr;
    out->text_len = text->via.str.size;
    out->answer_start = start->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)start->via.u64 : start->via.i64;
    return 0;
}

int bp_find_answers(const bp_frame *f, bp_answer **answers, size_t *n, bp_err *err) {
    *answers = NULL;
    *n = 0;
    const msgpack_object *o = bp_frame_field(f, "answers");
    if (!o) return 0;
    if (o->type != MSGPACK_OBJECT_ARRAY) return field_error(f, "answers", err, " is not an array");
    uint32_t count = o->via.array.size;
    bp_answer *list = NULL;
    if (count && !(list = malloc(count * sizeof *list))) return bp_err_set(err, "out of memory reading 'answers'");
    for (uint32_t i = 0; i < count; i++)
        if (answer_of(f, &o->via.array.ptr[i], i, &list[i], err)) {
            free(list);
            return -1;
        }
    *answers = list;
    *n = count;
    return 1;
}

int bp_hello_is_qa(const bp_frame *hello, bp_err *err) {
    const char *task = NULL;
    size_t n = 0;
    int found = bp_find_str(hello, "task", &task, &n, err);
    if (found <= 0) return found;
    if (n == 2 && memcmp(task, "qa", 2) == 0) return 1;
    if (n == 14 && memcmp(task, "classification", 14) == 0) return 0;
    return field_error(hello, "task", err, " is '%.*s', expected classification or qa", (int)(n > 40 ? 40 : n), task);
}

int bp_hello_labels(const bp_frame *hello, char ***labels, bp_err *err) {
    *labels = NULL;
    bp_str *views;
    size_t n;
    int found = bp_find_strs(hello, "labels", &views, &n, err);
    if (found <= 0) return found;
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        if (!(out[i] = strndup(views[i].ptr, views[i].len))) {
            bp_labels_free(out, (int)i);
            out = NULL;
        }
    free(views);
    if (!out) return bp_err_set(err, "out of memory reading the hello's labels");
    *labels = out;
    return (int)n;
}

void bp_labels_free(char **labels, int n) {
    for (int i = 0; labels && i < n; i++) free(labels[i]);
    free(labels);
}

/* ---- tensors ------------------------------------------------------------------------- */

static int tensor_of(const msgpack_object *o, bp_tensor_view *t, const char *key, bp_err *err) {
    memset(t, 0, sizeof *t);
    if (o->type != MSGPACK_OBJECT_MAP) return bp_err_set(err, "tensor '%s' is not a map of dtype, shape, data", key);
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

/* A tensor error names its frame as its WHERE: "tensor 'x' ... (batch frame 3)". */
static int name_frame(const bp_frame *f, bp_err *err) {
    char where[64], what[sizeof err->msg];
    if (err) {
        snprintf(what, sizeof what, "%s", err->msg);
        bp_err_set(err, "%s (%s)", what, bp_frame_where(f, where, sizeof where));
    }
    return -1;
}

/* want_dtype < 0: any tensor (no expectation). */
static int get_tensor(const bp_frame *f, const char *key, int required, int want_dtype, int ndim,
                      const int64_t *want_shape, bp_tensor_view *t, bp_err *err) {
    const msgpack_object *o = lookup(f, key, required, err);
    if (!o) return absent(required);
    if (tensor_of(o, t, key, err) || (want_dtype >= 0 && bp_tensor_expect(t, key, (bp_dtype)want_dtype, ndim, want_shape, err)))
        return name_frame(f, err);
    return present(required);
}

int bp_get_tensor(const bp_frame *f, const char *key, bp_tensor_view *t, bp_err *err) {
    return get_tensor(f, key, 1, -1, 0, NULL, t, err);
}
int bp_find_tensor(const bp_frame *f, const char *key, bp_tensor_view *t, bp_err *err) {
    return get_tensor(f, key, 0, -1, 0, NULL, t, err);
}
int bp_get_tensor_of(const bp_frame *f, const char *key, bp_dtype dtype, int ndim, const int64_t *want_shape,
                     bp_tensor_view *t, bp_err *err) {
    return get_tensor(f, key, 1, (int)dtype, ndim, want_shape, t, err);
}
int bp_find_tensor_of(const bp_frame *f, const char *key, bp_dtype dtype, int ndim, const int64_t *want_shape,
                      bp_tensor_view *t, bp_err *err) {
    return get_tensor(f, key, 0, (int)dtype, ndim, want_shape, t, err);
}

void bp_tensor_copy(const bp_tensor_view *t, void *dst) {
    if (t->nbytes) memcpy(dst, t->data, t->nbytes);
}

/* ---- writing ------------------------------------------------------------------------- */

/* Room for a map32 header, fixed up to the smallest form in bp_finish. */
#define HEADER_ROOM 5

/* The packer's sink: append to w, or remember that memory ran out. */
static int writer_append(void *data, const char *buf, size_t len) {
    bp_writer *w = data;
    if (w->failed) return -1;
    if (len == 0) return 0;   /* an empty payload may come with no pointer */
    if (len > w->cap - w->size) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->size < len) {
            if (cap > SIZE_MAX / 2) { w->failed = 1; return -1; }
            cap *= 2;
        }
        char *grown = realloc(w->data, cap);
        if (!grown) { w->failed = 1; return -1; }
        w->data = grown;
        w->cap = cap;
    }
    memcpy(w->data + w->size, buf, len);
    w->size += len;
    return 0;
}

void bp_writer_packer(bp_writer *w, msgpack_packer *pk) { msgpack_packer_init(pk, w, writer_append); }

void bp_writer_init(bp_writer *w) { memset(w, 0, sizeof *w); }

void bp_writer_free(bp_writer *w) {
    free(w->data);
    memset(w, 0, sizeof *w);
}

int bp_writer_failed(const bp_writer *w) { return w->failed; }

void bp_pack_str(msgpack_packer *pk, const char *s, size_t len) {
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

/* The packer for the next value of w (after its key). */
static msgpack_packer packer(bp_writer *w) {
    msgpack_packer pk;
    bp_writer_packer(w, &pk);
    return pk;
}

void bp_put_key(bp_writer *w, const char *key) {
    msgpack_packer pk = packer(w);
    bp_pack_str(&pk, key, strlen(key));
    w->fields++;
}

void bp_writer_reset_raw(bp_writer *w, bp_kind kind) {
    w->size = w->start = 0;
    w->fields = 0;
    w->open = w->failed = 0;
    w->kind = kind;
}

void bp_begin(bp_writer *w, bp_kind kind) {
    static const char room[HEADER_ROOM] = {0};
    bp_writer_reset_raw(w, kind);
    writer_append(w, room, HEADER_ROOM);
    w->open = 1;
    bp_put_int(w, "v", BP_PROTO_VERSION);
    bp_put_str(w, "k", bp_kind_name(kind));
}

void bp_put_int(bp_writer *w, const char *key, int64_t v) {
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    msgpack_pack_int64(&pk, v);
}

void bp_put_float(bp_writer *w, const char *key, double v) {
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    msgpack_pack_double(&pk, v);
}

void bp_put_bool(bp_writer *w, const char *key, int v) {
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    if (v) msgpack_pack_true(&pk);
    else msgpack_pack_false(&pk);
}

void bp_put_strn(bp_writer *w, const char *key, const char *s, size_t len) {
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    bp_pack_str(&pk, s, len);
}

void bp_put_str(bp_writer *w, const char *key, const char *s) { bp_put_strn(w, key, s, strlen(s)); }

void bp_put_strs(bp_writer *w, const char *key, const char *const *items, size_t n) {
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) bp_pack_str(&pk, items[i], strlen(items[i]));
}

void bp_put_answers(bp_writer *w, const bp_answer *answers, size_t n) {
    bp_put_key(w, "answers");
    msgpack_packer pk = packer(w);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(&pk, 2);
        bp_pack_str(&pk, "text", 4);
        bp_pack_str(&pk, answers[i].text, answers[i].text_len);
        bp_pack_str(&pk, "answer_start", 12);
        msgpack_pack_int64(&pk, answers[i].answer_start);
    }
}

void bp_put_tensor(bp_writer *w, const char *key, bp_dtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    msgpack_pack_map(&pk, 3);
    bp_pack_str(&pk, "dtype", 5);
    const char *name = bp_dtype_name(dtype);
    bp_pack_str(&pk, name, strlen(name));
    bp_pack_str(&pk, "shape", 5);
    msgpack_pack_array(&pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_int64(&pk, shape[i]);
    bp_pack_str(&pk, "data", 4);
    size_t nbytes = (size_t)bp_numel(shape, ndim) * bp_dtype_size(dtype);
    msgpack_pack_bin(&pk, nbytes);
    msgpack_pack_bin_body(&pk, data, nbytes);
}

int bp_put_copy(bp_writer *w, const bp_frame *from, const char *key) {
    const msgpack_object *o = bp_frame_field(from, key);
    if (!o) return 0;
    bp_put_key(w, key);
    msgpack_packer pk = packer(w);
    msgpack_pack_object(&pk, *o);
    return 1;
}

/* Rewrite the reserved bytes as the smallest map header; the frame then starts at w->start. */
static void fix_header(bp_writer *w) {
    if (!w->open) return;
    w->open = 0;
    if (w->size < HEADER_ROOM) return;   /* out of memory before the room was reserved */
    unsigned char *b = (unsigned char *)w->data;
    uint32_t n = w->fields;
    if (n <= 15) {
        w->start = 4;
        b[4] = (unsigned char)(0x80 | n);
    } else if (n <= 0xffff) {
        w->start = 2;
        b[2] = 0xde; b[3] = (unsigned char)(n >> 8); b[4] = (unsigned char)n;
    } else {
        w->start = 0;
        b[0] = 0xdf; b[1] = (unsigned char)(n >> 24); b[2] = (unsigned char)(n >> 16);
        b[3] = (unsigned char)(n >> 8); b[4] = (unsigned char)n;
    }
}

const char *bp_finish(bp_writer *w, size_t *len) {
    fix_header(w);
    *len = w->size - w->start;
    return w->data ? w->data + w->start : "";
}

char *bp_writer_take(bp_writer *w, const char **frame, size_t *len) {
    *frame = bp_finish(w, len);
    char *block = w->data;
    w->data = NULL;
    w->size = w->cap = w->start = 0;
    return block;
}

char *bp_finish_release(bp_writer *w, size_t *len) {
    const char *frame;
    char *block = bp_writer_take(w, &frame, len);
    if (block && frame != block) memmove(block, frame, *len);
    return block;
}
