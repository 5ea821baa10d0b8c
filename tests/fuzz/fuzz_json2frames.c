/* fuzz_json2frames.c — json2frames' parser on arbitrary text (wire/framejson.h): one JSON line
 * into a frame, the frame decoded as a reader gets it, and the replay law: once a line has
 * been through frames2json, json2frames | frames2json gives it back byte for byte.
 */
#include "wire/framejson.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bp_err err;
    bp_writer w;
    bp_writer_init(&w);
    if (bp_json_to_frame((const char *)data, size, &w, &err) == 0) {
        size_t len;
        const char *bytes = bp_finish(&w, &len);
        bp_frame f;
        if (bp_frame_decode(&f, bytes, len, NULL, NULL, &err) == 0) {
            fuzz_check_replay(&f);
            bp_frame_release(&f);
        }
    }
    bp_writer_free(&w);
    return 0;
}
