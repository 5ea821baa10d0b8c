/* base/limits.c — the one message for an input over a size limit (see limits.h).
 * Must never: print or exit. */
#include "base/limits.h"

#include <inttypes.h>
#include <sys/stat.h>

int bp_check_limit(uint64_t n, uint64_t limit, const char *unit, const char *what, const char *where,
                   bp_err *err) {
    if (n <= limit) return 0;
    const char *space = unit && *unit ? " " : "";
    if (!unit) unit = "";
    if (where)
        return bp_err_set(err, "%s is %" PRIu64 "%s%s, over the limit of %" PRIu64 "%s%s (%s)", what, n, space, unit,
                          limit, space, unit, where);
    return bp_err_set(err, "%s is %" PRIu64 "%s%s, over the limit of %" PRIu64 "%s%s", what, n, space, unit, limit,
                      space, unit);
}

int bp_check_file_size(const char *path, uint64_t limit, const char *what, bp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    return bp_check_limit((uint64_t)st.st_size, limit, "bytes", what, path, err);
}
