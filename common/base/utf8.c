/* base/utf8.c — whole-buffer UTF-8 validation on top of bp_utf8_step (see utf8.h).
 * Must never: accept what Python's UTF-8 decoder refuses, print, exit or allocate. */
#include "base/utf8.h"

int64_t bp_utf8_invalid_at(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    bp_utf8_state state = {0};
    size_t start = 0; /* where the sequence being decoded began */
    for (size_t i = 0; i < len; i++) {
        if (state.need == 0) start = i;
        if (bp_utf8_step(&state, p[i]) != 0) return (int64_t)start;
    }
    return bp_utf8_incomplete(&state) ? (int64_t)start : -1;
}
