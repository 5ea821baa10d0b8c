/* wire/codec.h — the MessagePack side of frame.h, private to the wire layer.
 *
 * frame.c implements it; endpoint.c (frame boundaries on a byte stream, passing hello fields
 * on), framejson.c (frames as JSON) and the codec's own unit test use it. Nothing outside
 * common/wire/ and tests/unit/test_frame.c may include it: stages and lower layers go
 * through frame.h, so the encoding stays one module's business.
 *
 * Must never: be included outside common/wire/ (and the codec's unit test).
 */
#ifndef BP_CODEC_H
#define BP_CODEC_H
#include <msgpack.h>

#include "wire/frame.h"

/* The decoded tree a bp_frame points to. */
struct bp_frame_tree { msgpack_unpacked unpacked; };

/* The frame's map (NULL on a released frame) and a field of it (NULL when absent). */
const msgpack_object *bp_frame_root(const bp_frame *f);
const msgpack_object *bp_frame_field(const bp_frame *f, const char *key);
/* A key of any map object; NULL when absent or when `map` is not a map. */
const msgpack_object *bp_map_get(const msgpack_object *map, const char *key);

/* Length of the first MessagePack object in p[0..len): its size in bytes, 0 when more bytes
 * are needed, (size_t)-1 with err when the bytes can never be a frame (the reserved 0xc1,
 * nesting past BP_FRAME_MAX_DEPTH, an array, map, string or bin larger than
 * BP_FRAME_MAX_BYTES could hold). How a byte stream is cut into frames without decoding them
 * twice, and without buffering for ever what a header promises. */
size_t bp_msgpack_size(const void *p, size_t len, bp_err *err);

/* A packer that appends to w's frame (out of memory marks w failed). */
void bp_writer_packer(bp_writer *w, msgpack_packer *pk);
/* Write a key whose value the caller packs itself with a bp_writer_packer. */
void bp_put_key(bp_writer *w, const char *key);
void bp_pack_str(msgpack_packer *pk, const char *s, size_t len);
/* Empty w for a frame packed whole by the caller (no map header to fix up): JSON lines. */
void bp_writer_reset_raw(bp_writer *w, bp_kind kind);
/* Finish w and take its buffer: returns the block to free (NULL when w is empty) and sets
 * *frame / *len to the frame inside it. w is left empty. How the endpoint hands a frame to
 * ZeroMQ without a copy. */
char *bp_writer_take(bp_writer *w, const char **frame, size_t *len);

#endif
