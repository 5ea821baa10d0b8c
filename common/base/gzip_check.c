/* base/gzip_check.c — gzip CRC32 and length verification with zlib (see gzip_check.h).
 * Must never: hand out the inflated bytes (libarchive decodes; this only verifies), print or exit. */
#include "base/gzip_check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum gz_state { GZ_MEMBER, GZ_BETWEEN, GZ_PADDING };

struct gz_check {
    z_stream z;
    enum gz_state state;
    int member;             /* 1-based number of the member being inflated */
    uint64_t offset;        /* bytes of the file fed so far */
    unsigned char scratch[64 * 1024];
};

int gz_is_gzip(const unsigned char *bytes, size_t n) { return n >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b; }

gz_check *gz_check_new(void) {
    gz_check *check = calloc(1, sizeof *check);
    if (!check) return NULL;
    /* 16 + MAX_WBITS: a gzip wrapper, whose trailer zlib verifies. */
    if (inflateInit2(&check->z, 16 + MAX_WBITS) != Z_OK) {
        free(check);
        return NULL;
    }
    check->state = GZ_MEMBER;
    check->member = 1;
    return check;
}

void gz_check_free(gz_check *check) {
    if (!check) return;
    inflateEnd(&check->z);
    free(check);
}

static int gz_fail(const gz_check *check, const char *what, char *why, size_t why_size) {
    snprintf(why, why_size, "corrupt gzip data: %s, member %d, near byte %llu of the file", what, check->member,
             (unsigned long long)check->offset);
    return -1;
}

int gz_check_feed(gz_check *check, const void *bytes, size_t n, char *why, size_t why_size) {
    const unsigned char *p = bytes, *end = p + n;
    while (p < end) {
        if (check->state == GZ_PADDING) {
            for (; p < end; p++, check->offset++)
                if (*p != 0) return gz_fail(check, "bytes after the last member that are not gzip data", why, why_size);
            return 0;
        }
        if (check->state == GZ_BETWEEN) {
            if (*p == 0) {
                check->state = GZ_PADDING;
                continue;
            }
            if (*p != 0x1f) return gz_fail(check, "bytes after the last member that are not gzip data", why, why_size);
            if (inflateReset(&check->z) != Z_OK) return gz_fail(check, "zlib reset failed", why, why_size);
            check->state = GZ_MEMBER;
            check->member++;
        }
        check->z.next_in = (unsigned char *)p;
        check->z.avail_in = (uInt)((size_t)(end - p) > UINT32_MAX ? UINT32_MAX : (size_t)(end - p));
        int rc;
        do {
            check->z.next_out = check->scratch;
            check->z.avail_out = sizeof check->scratch;
            rc = inflate(&check->z, Z_NO_FLUSH);
        } while (rc == Z_OK && (check->z.avail_in > 0 || check->z.avail_out == 0));
        size_t used = (size_t)(check->z.next_in - p);
        check->offset += used;
        p += used;
        if (rc == Z_STREAM_END) {
            check->state = GZ_BETWEEN;
            continue;
        }
        if (rc == Z_BUF_ERROR && check->z.avail_in == 0) continue; /* wants more input */
        if (rc != Z_OK) {
            const char *msg = check->z.msg ? check->z.msg : "inflate failed";
            if (strcmp(msg, "incorrect data check") == 0) msg = "CRC32 mismatch (incorrect data check)";
            else if (strcmp(msg, "incorrect length check") == 0) msg = "size mismatch (incorrect length check)";
            return gz_fail(check, msg, why, why_size);
        }
    }
    return 0;
}

int gz_check_finish(gz_check *check, char *why, size_t why_size) {
    if (check->state != GZ_MEMBER) return 0;
    snprintf(why, why_size, "truncated gzip data: the file ends inside member %d, after %llu bytes", check->member,
             (unsigned long long)check->offset);
    return -1;
}
