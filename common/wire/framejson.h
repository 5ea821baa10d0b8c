/* wire/framejson.h — frames as JSON lines, and back (tap, frames2json, json2frames).
 *
 * Mapping: nil/bool/int/str/array/map as in JSON; floats always print with a '.' or an
 * exponent (shortest text that reads back to the same double), so a float stays a float;
 * bin is {"$bin": "BASE64"}. frames2json | json2frames | frames2json is byte-identical.
 * Must never: do I/O beyond the caller's buffers.
 */
#ifndef BP_FRAMEJSON_H
#define BP_FRAMEJSON_H
#include <stdint.h>
#include <stdio.h>

#include "wire/frame.h"

/* Options for bp_frame_to_json. Each of these makes a view for reading, not for replay:
 *   brief: a bin longer than 32 bytes is shown as {"$bin_bytes": N};
 *   arrays: a tensor ({"dtype", "shape", "data": bin}) shows its data as nested JSON arrays of
 *     numbers, one level per dimension (f16/bf16 widened to float, bool as 0/1);
 *   token_of: when set, an i32 "input_ids" tensor is followed by a "tokens" field, the same
 *     nesting of the token text of each id (null for an id it does not know). The caller
 *     supplies the lookup, so this layer knows nothing of vocabularies.
 *   context_of: when set, an i32 "offsets" tensor of (start, end) pairs at the top of a frame
 *     ([T,2] in a feature, [B,T,2] in a batch or logits frame) is followed by a "spans" field:
 *     for each pair, the text of code points [start, end) of the context that context_of
 *     returns for the frame's example_id (row b: example_ids[b]), as proto/frames.md defines
 *     offsets; "" for an empty pair (start == end), null for a pair outside the context (-1,-1,
 *     or past its end), null in place of a row whose context is unknown, and no field at all
 *     when no row's is known. context_of returns the UTF-8 text and its byte length, or NULL;
 *     what it returns must stay valid until bp_frame_to_json returns. */
typedef struct bp_json_opts {
    int brief, arrays;
    const char *(*token_of)(void *ctx, int32_t id);
    void *token_ctx;
    const char *(*context_of)(void *ctx, const char *example_id, size_t id_len, size_t *text_len);
    void *context_ctx;
} bp_json_opts;

/* Append one JSON line (with '\n') for the frame to a growable buffer *buf (*cap bytes, *len
 * used). Returns 0, -1 on out of memory or a map key that is not a string (err set). */
int bp_frame_to_json(const bp_frame *f, const bp_json_opts *opts, char **buf, size_t *len,
                     size_t *cap, bp_err *err);

/* Parse one JSON text (one line) and pack it into w as a complete frame (w->kind set from "k";
 * bp_finish gives its bytes). Returns 0, or -1 with err saying what is wrong (invalid JSON, not
 * an object, bad $bin...). */
int bp_json_to_frame(const char *text, size_t len, bp_writer *w, bp_err *err);

#endif
