/* wire/frame.h — the one frame codec of bertpipe (protocol v1, see proto/frames.md).
 *
 * A frame is one MessagePack map with "v" (major version) and "k" (kind) first, then the
 * kind's fields. wire/ (this codec, wire/endpoint.c and wire/framejson.c) is the only code
 * that knows MessagePack.
 * Must never: do I/O: endpoint.h moves the bytes.
 *
 * Reading: a bp_frame owns its raw bytes and the unpacked object tree that points into them;
 * accessors return views valid until bp_frame_release().
 * Writing: a bp_writer packs "v" and "k" then fields; the map header is fixed up at the end,
 * so callers never count fields.
 */
#ifndef BP_FRAME_H
#define BP_FRAME_H
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "base/tensor.h"

#define BP_PROTO_VERSION 1

typedef enum bp_kind {
    BP_HELLO = 0, BP_EXAMPLE, BP_FEATURE, BP_BATCH, BP_LOGITS, BP_PREDICTION, BP_METRIC,
    BP_EPOCH, BP_EOS, BP_ERROR, BP_KIND_COUNT
} bp_kind;

const char *bp_kind_name(bp_kind k);

/* ---- reading ---------------------------------------------------------------------- */

typedef struct bp_frame {
    bp_kind kind;
    const char *raw;              /* the frame's exact bytes */
    size_t raw_len;
    /* ownership (private) */
    msgpack_unpacked unpacked;
    void (*release_fn)(void *);   /* frees the bytes: free() or the endpoint's zmq_msg closer */
    void *release_arg;
    int live;                     /* decoded and valid */
    int borrowed;                 /* a view of a frame someone else owns: release is a no-op */
} bp_frame;

/* Decode `len` bytes that must hold exactly one frame. The object tree points into `bytes`,
 * which must outlive the frame: on success, if release_fn is not NULL the frame owns the bytes
 * and calls release_fn(release_arg) in bp_frame_release. Returns 0, or -1 with err =
 * "malformed MessagePack" / "frame is not a map" / "frame has no 'k' (kind)" /
 * "unsupported protocol version N (this build speaks 1)" / ...; on failure nothing is freed
 * (the caller still owns what it passed). */
int bp_frame_decode(bp_frame *f, const char *bytes, size_t len, void (*release_fn)(void *),
                    void *release_arg, bp_err *err);

/* Free what the frame owns; safe on a zeroed or released frame. */
void bp_frame_release(bp_frame *f);

/* The frame's map. Frames may be copied by value: nothing points into the struct itself. */
static inline const msgpack_object *bp_root(const bp_frame *f) { return &f->unpacked.data; }

/* Field lookup (linear over the map: frames have few keys). NULL when absent. */
const msgpack_object *bp_get(const bp_frame *f, const char *key);
const msgpack_object *bp_map_get(const msgpack_object *map, const char *key);

/* Typed getters: 0 on success; -1 when absent or of another type (err says which). */
int bp_get_int(const bp_frame *f, const char *key, int64_t *out, bp_err *err);
int bp_get_float(const bp_frame *f, const char *key, double *out, bp_err *err); /* ints accepted */
int bp_get_bool(const bp_frame *f, const char *key, int *out, bp_err *err);
/* Points into the frame, NOT NUL-terminated. */
int bp_get_str(const bp_frame *f, const char *key, const char **s, size_t *len, bp_err *err);
/* A malloc'd NUL-terminated copy, or NULL with err set. Caller frees. */
char *bp_get_strdup(const bp_frame *f, const char *key, bp_err *err);
/* 1 when a hello says "task": "qa"; 0 for classification (the default when absent). */
int bp_hello_is_qa(const bp_frame *hello);
/* A hello's "labels" as malloc'd C strings (a non-string entry becomes "?"), NULL-terminated
 * in *labels; returns their count, 0 (and *labels NULL) when the hello has none, -1 with err
 * when out of memory. Free with bp_labels_free. */
int bp_hello_labels(const bp_frame *hello, char ***labels, bp_err *err);
void bp_labels_free(char **labels, int n);

/* A tensor field: {"dtype": str, "shape": [int...], "data": bin}. data points into the
 * frame and may be unaligned: copy it out (bp_tensor_copy) before typed access. */
typedef struct bp_tensor_view {
    bp_dtype dtype;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
    const void *data;
    size_t nbytes;
} bp_tensor_view;
int bp_tensor_from_object(const msgpack_object *o, bp_tensor_view *t, const char *key, bp_err *err);
int bp_get_tensor(const bp_frame *f, const char *key, bp_tensor_view *t, bp_err *err);
/* Check dtype and rank, and shape where want_shape[i] >= 0. */
int bp_tensor_expect(const bp_tensor_view *t, const char *key, bp_dtype dtype, int ndim,
                     const int64_t *want_shape, bp_err *err);
/* Copy the payload to dst (caller-sized nbytes). */
void bp_tensor_copy(const bp_tensor_view *t, void *dst);

/* ---- writing ---------------------------------------------------------------------- */

typedef struct bp_writer {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    uint32_t fields;   /* key/value pairs written so far, "v" and "k" included */
    bp_kind kind;
    int open;
} bp_writer;

void bp_writer_init(bp_writer *w);
void bp_writer_free(bp_writer *w);
/* Start a frame of `kind` (discarding any previous content): writes "v" and "k". */
void bp_begin(bp_writer *w, bp_kind kind);
void bp_put_int(bp_writer *w, const char *key, int64_t v);
void bp_put_float(bp_writer *w, const char *key, double v);
void bp_put_bool(bp_writer *w, const char *key, int v);
void bp_put_str(bp_writer *w, const char *key, const char *s);
void bp_put_strn(bp_writer *w, const char *key, const char *s, size_t len);
void bp_put_tensor(bp_writer *w, const char *key, bp_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
/* Write a key whose value the caller packs itself with w->pk (arrays, maps). */
void bp_put_key(bp_writer *w, const char *key);
/* Finish: fix the map header. Returns the bytes (owned by w, valid until the next begin). */
const char *bp_finish(bp_writer *w, size_t *len);
/* Finish and hand the buffer over (malloc'd; caller frees); w is reset to empty. */
char *bp_finish_release(bp_writer *w, size_t *len);

/* Helpers for packing values inside a key written by bp_put_key. */
void bp_pack_str(msgpack_packer *pk, const char *s, size_t len);

#endif
