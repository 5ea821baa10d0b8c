/* base/gzip_check.h — prove that a gzip file is whole and uncorrupted while it is read.
 *
 * libarchive's gzip reader never checks a member's CRC32 or length trailer, so a flipped bit
 * in a .gz or .tar.gz would reach the data unnoticed. archive_input.c feeds every byte of a
 * gzip file through a gz_check as libarchive reads it: the check inflates the bytes again
 * with zlib (into scratch, nothing is kept), which verifies each member's CRC32 and size,
 * and at the end says whether the file stopped inside a member. Concatenated members and
 * zero padding after the last one are accepted (as gzip -d accepts them); other trailing
 * bytes are not.
 *
 * Messages are "WHAT" only: the caller adds the file.
 *
 * Must never: print or exit.
 */
#ifndef BP_GZIP_CHECK_H
#define BP_GZIP_CHECK_H
#include <stddef.h>

typedef struct gz_check gz_check;

/* A check positioned before the first byte of a gzip file; NULL when out of memory. */
gz_check *gz_check_new(void);

/* Feed the next n bytes of the file. Returns 0, or -1 with why (size why_size) filled:
 * bad header, corrupt deflate data, CRC32 or length mismatch, bytes after the last member. */
int gz_check_feed(gz_check *check, const void *bytes, size_t n, char *why, size_t why_size);

/* The file has ended. Returns 0 when it ended between members, -1 with why filled
 * ("truncated") when inside one. */
int gz_check_finish(gz_check *check, char *why, size_t why_size);

/* 1 when bytes (n >= 2) start with the gzip magic 1f 8b. Can't fail. */
int gz_is_gzip(const unsigned char *bytes, size_t n);

void gz_check_free(gz_check *check); /* NULL is fine */

#endif
