/* base/limits.c — the one message for an input over a size limit (see limits.h). */
#include "base/limits.h"

#include <inttypes.h>

int bp_check_limit(uint64_t n, uint64_t limit, const char *unit, const char *what, const char *where,
                   bp_err *err) {
    if (n <= limit) return 0;
    if (where)
        return bp_err_set(err, "%s is %" PRIu64 " %s, over the limit of %" PRIu64 " %s (%s)", what, n, unit, limit,
                          unit, where);
    return bp_err_set(err, "%s is %" PRIu64 " %s, over the limit of %" PRIu64 " %s", what, n, unit, limit, unit);
}
