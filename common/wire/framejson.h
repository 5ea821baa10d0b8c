/* wire/framejson.h — frames as JSON lines, and back (tap, frames2json, json2frames).
 *
 * Mapping: nil/bool/int/str/array/map as in JSON; floats always print with a '.' or an
 * exponent (shortest text that reads back to the same double), so a float stays a float;
 * bin is {"$bin": "BASE64"}. frames2json | json2frames | frames2json is byte-identical.
 * Must never: do I/O beyond the caller's buffers.
 */
#ifndef BP_FRAMEJSON_H
#define BP_FRAMEJSON_H
#include <stdio.h>

#include "wire/frame.h"

/* Options for bp_frame_to_json. brief: a bin longer than 32 bytes is shown as
 * {"$bin_bytes": N} (for reading, not for replay). */
typedef struct bp_json_opts { int brief; } bp_json_opts;

/* Append one JSON line (with '\n') for the frame to a growable buffer *buf (*cap bytes, *len
 * used). Returns 0, -1 on out of memory or a map key that is not a string (err set). */
int bp_frame_to_json(const bp_frame *f, const bp_json_opts *opts, char **buf, size_t *len,
                     size_t *cap, bp_err *err);

/* Parse one JSON text (one line) and pack it into w as a complete frame (w->kind set from "k";
 * bp_finish gives its bytes). Returns 0, or -1 with err saying what is wrong (invalid JSON, not
 * an object, bad $bin...). */
int bp_json_to_frame(const char *text, size_t len, bp_writer *w, bp_err *err);

#endif
