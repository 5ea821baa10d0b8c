/* wire/frame.h — the one frame codec of bertpipe (protocol v1, see proto/frames.md).
 *
 * A frame is one MessagePack map with "v" (major version) and "k" (kind) first, then the
 * kind's fields. Only wire/ knows MessagePack (frame.c, endpoint.c, framejson.c): nothing in
 * this header shows it, so stages read and write frames through the typed getters and
 * putters below and never see the encoding.
 * Must never: do I/O: endpoint.h moves the bytes.
 *
 * Reading: a bp_frame owns its raw bytes and the decoded tree that points into them; views
 * (strings, tensors, arrays of views) are valid until bp_frame_release(). Frames may be copied
 * by value (nothing points into the struct itself): the copy takes the ownership over, so
 * release exactly one of them.
 *
 * Getters come in two forms, so that a field that is absent and a field of the wrong type
 * are never the same answer:
 *   bp_get_X   a required field: 0, or -1 when it is absent, of another type or out of range;
 *   bp_find_X  an optional field: 1 when present and valid, 0 when absent (outputs left as
 *              they are: set the default first), -1 when present but of another type or
 *              out of range.
 * Their errors say what is wrong with which field, then, as the WHERE of the one error format,
 * the frame kind and its index in its stream (when it came from one):
 *   "no field 'input_ids' (feature frame 12)"
 *   "field 'label' is not an integer (feature frame 12)"
 *   "field 'epoch' is 4294967297, outside [1, 2147483647] (batch frame 3)"
 *   "field 'answers'[2] has no string 'text' (example frame 17)"
 *   "tensor 'input_ids' has dtype f32, expected i32 (batch frame 3)"
 * Integer getters take the range the protocol allows for the field ([BP_I32_MIN, BP_I32_MAX]
 * for an i32 value, [0, ...] for a count): one checked conversion, width and range at once.
 *
 * Writing: a bp_writer packs "v" and "k", then the fields in call order; the map header is
 * fixed up at the end, so callers never count fields. Running out of memory while packing is
 * remembered (bp_writer_failed) and the endpoint refuses to send such a frame: never a
 * truncated frame.
 */
#ifndef BP_FRAME_H
#define BP_FRAME_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "base/tensor.h"

#define BP_PROTO_VERSION 1

/* The largest frame a reader takes, and the deepest nesting of arrays and maps inside one
 * (proto/frames.md, section 1). The biggest frames bertpipe writes (a batch of 64 x 512
 * tokens with offsets, its logits) are a few MB; frames nest 3 levels (frame, tensor, shape). */
#define BP_FRAME_MAX_BYTES ((size_t)1 << 30)
#define BP_FRAME_MAX_DEPTH 16

/* The range of an i32 field, for the integer getters. */
#define BP_I32_MIN INT64_C(-2147483648)
#define BP_I32_MAX INT64_C(2147483647)

typedef enum bp_kind {
    BP_HELLO = 0, BP_EXAMPLE, BP_FEATURE, BP_BATCH, BP_LOGITS, BP_PREDICTION, BP_METRIC,
    BP_EPOCH, BP_EOS, BP_ERROR, BP_KIND_COUNT
} bp_kind;

const char *bp_kind_name(bp_kind k);

/* ---- reading ---------------------------------------------------------------------- */

typedef struct bp_frame {
    bp_kind kind;
    int64_t index;                /* 0-based among the frames of this kind in its stream (set by
                                     the endpoint; a stage may set it); -1 when not from a stream */
    const char *raw;              /* the frame's exact bytes */
    size_t raw_len;
    /* private (frame.c) */
    struct bp_frame_tree *tree;   /* the decoded map, on the heap */
    void (*release_fn)(void *);   /* frees the bytes: free() or the endpoint's zmq_msg closer */
    void *release_arg;
    int live;                     /* decoded and valid */
    int borrowed;                 /* a view of a frame someone else owns: release is a no-op */
} bp_frame;

/* Decode `len` bytes that must hold exactly one frame (index -1). The tree points into
 * `bytes`, which must outlive the frame: on success, if release_fn is not NULL the frame owns
 * the bytes and calls release_fn(release_arg) in bp_frame_release. Returns 0, or -1 with err =
 * "malformed MessagePack" / "frame is not a map" / "frame has no 'k' (kind)" /
 * "unsupported protocol version N (this build speaks 1)" / "frame has key 'label' twice" /
 * "frame field 'input_ids' has a key that is not a string" / ...; on failure nothing is freed
 * (the caller still owns what it passed). The bytes are walked before msgpack-c sees them, so
 * what decoding allocates is bounded by a small multiple of len whatever the headers claim. */
int bp_frame_decode(bp_frame *f, const char *bytes, size_t len, void (*release_fn)(void *),
                    void *release_arg, bp_err *err);

/* Free what the frame owns; safe on a zeroed or released frame. */
void bp_frame_release(bp_frame *f);

/* "KIND frame N" (or "KIND frame" outside a stream) into buf: how errors name a frame, for
 * a stage that reports a problem of its own about one. Returns buf. */
const char *bp_frame_where(const bp_frame *f, char *buf, size_t size);

/* 1 when the frame has the field (of any type). */
int bp_has(const bp_frame *f, const char *key);

int bp_get_int(const bp_frame *f, const char *key, int64_t min, int64_t max, int64_t *out, bp_err *err);
int bp_find_int(const bp_frame *f, const char *key, int64_t min, int64_t max, int64_t *out, bp_err *err);
/* An integer is taken as a float (proto/frames.md, section 3). */
int bp_get_float(const bp_frame *f, const char *key, double *out, bp_err *err);
int bp_find_float(const bp_frame *f, const char *key, double *out, bp_err *err);
int bp_get_bool(const bp_frame *f, const char *key, int *out, bp_err *err);
int bp_find_bool(const bp_frame *f, const char *key, int *out, bp_err *err);
/* Points into the frame, NOT NUL-terminated. */
int bp_get_str(const bp_frame *f, const char *key, const char **s, size_t *len, bp_err *err);
int bp_find_str(const bp_frame *f, const char *key, const char **s, size_t *len, bp_err *err);
/* A malloc'd NUL-terminated copy of a required string, or NULL with err set. Caller frees. */
char *bp_get_strdup(const bp_frame *f, const char *key, bp_err *err);

/* A view of a string inside a frame (not NUL-terminated). */
typedef struct bp_str { const char *ptr; size_t len; } bp_str;

/* An array of strings ("example_ids", a prediction's "answers"): *items gets a malloc'd
 * array of *n views (NULL when empty; the caller frees the array, the views die with the
 * frame). An entry that is not a string is an error naming it. */
int bp_get_strs(const bp_frame *f, const char *key, bp_str **items, size_t *n, bp_err *err);
int bp_find_strs(const bp_frame *f, const char *key, bp_str **items, size_t *n, bp_err *err);

/* One answer of an example: its text (a view into the frame when read) and answer_start,
 * in Unicode code points of the context (negative values pass: the tokenizer reports an
 * answer that does not slice its context). */
typedef struct bp_answer {
    const char *text;
    size_t text_len;
    int64_t answer_start;
} bp_answer;

/* An example's "answers" ([{"text": str, "answer_start": int}]), the one reader of that
 * field: 1 with *answers a malloc'd array of *n (NULL when empty; caller frees the array),
 * 0 when absent (*n = 0, *answers NULL), -1 when it is not an array or an entry is not a
 * map with a string 'text' and an integer 'answer_start':
 *   "field 'answers'[2] has no string 'text' (example frame 17)". */
int bp_find_answers(const bp_frame *f, bp_answer **answers, size_t *n, bp_err *err);

/* A hello's "task": 1 for "qa", 0 for "classification" (the default when absent), -1 with err
 * when it is not a string or names another task ("field 'task' is 'qa2', expected
 * classification or qa (hello frame 0)"): a task misread as classification would train the wrong
 * head in silence. */
int bp_hello_is_qa(const bp_frame *hello, bp_err *err);
/* A hello's "labels" as malloc'd C strings, NULL-terminated in *labels; returns their count,
 * 0 (and *labels NULL) when the hello has none, -1 with err when an entry is not a string
 * or out of memory. Free with bp_labels_free. */
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
int bp_get_tensor(const bp_frame *f, const char *key, bp_tensor_view *t, bp_err *err);
int bp_find_tensor(const bp_frame *f, const char *key, bp_tensor_view *t, bp_err *err);
/* Check dtype and rank, and shape where want_shape[i] >= 0 (want_shape may be NULL). */
int bp_tensor_expect(const bp_tensor_view *t, const char *key, bp_dtype dtype, int ndim,
                     const int64_t *want_shape, bp_err *err);
/* bp_get_tensor / bp_find_tensor, then bp_tensor_expect: what a stage usually wants. */
int bp_get_tensor_of(const bp_frame *f, const char *key, bp_dtype dtype, int ndim, const int64_t *want_shape,
                     bp_tensor_view *t, bp_err *err);
int bp_find_tensor_of(const bp_frame *f, const char *key, bp_dtype dtype, int ndim, const int64_t *want_shape,
                      bp_tensor_view *t, bp_err *err);
/* Copy the payload to dst (caller-sized nbytes). */
void bp_tensor_copy(const bp_tensor_view *t, void *dst);

/* ---- writing ---------------------------------------------------------------------- */

typedef struct bp_writer {
    bp_kind kind;       /* of the frame begun last */
    /* private (frame.c) */
    char *data;         /* the packed bytes; room for the map header is kept in front */
    size_t size, cap;
    size_t start;       /* where the finished frame begins in data */
    uint32_t fields;    /* key/value pairs written so far, "v" and "k" included */
    int open;           /* begun and not finished: the header still needs its fix-up */
    int failed;         /* out of memory while packing: the frame is incomplete */
} bp_writer;

void bp_writer_init(bp_writer *w);
void bp_writer_free(bp_writer *w);
/* 1 when packing ran out of memory since the last begin: the frame must not be sent. */
int bp_writer_failed(const bp_writer *w);
/* Start a frame of `kind` (discarding any previous content): writes "v" and "k". */
void bp_begin(bp_writer *w, bp_kind kind);
void bp_put_int(bp_writer *w, const char *key, int64_t v);
void bp_put_float(bp_writer *w, const char *key, double v);
void bp_put_bool(bp_writer *w, const char *key, int v);
void bp_put_str(bp_writer *w, const char *key, const char *s);
void bp_put_strn(bp_writer *w, const char *key, const char *s, size_t len);
/* An array of n NUL-terminated strings. */
void bp_put_strs(bp_writer *w, const char *key, const char *const *items, size_t n);
/* An example's "answers": [{"text": ..., "answer_start": ...}], n entries. */
void bp_put_answers(bp_writer *w, const bp_answer *answers, size_t n);
void bp_put_tensor(bp_writer *w, const char *key, bp_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
/* Copy field `key` of `from` unchanged, whatever it holds. Returns 1 when copied, 0 when
 * `from` has no such field (nothing written). */
int bp_put_copy(bp_writer *w, const bp_frame *from, const char *key);
/* Finish: fix the map header. Returns the bytes (owned by w, valid until the next begin).
 * Finishing again returns the same bytes. */
const char *bp_finish(bp_writer *w, size_t *len);
/* Finish and hand the buffer over (malloc'd; caller frees); w is reset to empty. */
char *bp_finish_release(bp_writer *w, size_t *len);

#endif
