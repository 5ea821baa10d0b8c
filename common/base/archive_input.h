/* base/archive_input.h — open a dataset path and read its files as byte or line streams.
 *
 * A path may be a plain file, a compressed file (.gz, .bz2, .xz, .zst: decompressed on the
 * fly), an archive (.zip, .tar, .tar.gz, ...) or a directory. Each is seen as a sequence of
 * named members: an archive's regular files in archive order, a directory's regular files
 * (recursively, sorted by name), or, for a plain or compressed file, one member named after
 * the file (compression suffix dropped). Nothing is ever extracted to disk and a member is
 * read once, forward only, so memory stays bounded whatever the archive size.
 *
 * Must never: know a dataset format, print or exit: failures fill a bp_err with
 * "WHAT (WHERE)" naming the path, member and line.
 */
#ifndef BP_ARCHIVE_INPUT_H
#define BP_ARCHIVE_INPUT_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/log.h"

typedef struct arc_input arc_input;

/* Open path (file, compressed file, archive or directory). Returns a handle positioned
 * before the first member (call arc_next_member or arc_find_member), or NULL with err
 * filled when the path cannot be opened. Free with arc_close. */
arc_input *arc_open(const char *path, bp_err *err);

/* Advance to the next regular-file member. Returns 1 when positioned on one, 0 when there
 * are no more, -1 with err filled on a damaged or truncated archive. Before it returns 0
 * the end itself is checked: a tar must close with its end-of-archive blocks, a gzip file's
 * last CRC32 and size must match, so a file cut at a member boundary is an error. */
int arc_next_member(arc_input *in, bp_err *err);

/* Advance to the first member whose name equals name or ends with "/" name (so "train.tsv"
 * finds "SST-2/train.tsv"). Only members after the current one are searched: to look up
 * several members, open the path once per member. Returns 1 when found, 0 when not found
 * (err filled with "no member NAME (PATH)"), -1 on a damaged archive. The member found is
 * the only one the caller reads (see arc_want_only_current). */
int arc_find_member(arc_input *in, const char *name, bp_err *err);

/* Say that the current member is the last one the caller will read. When it has been read
 * to its end, the rest of the file is read and checked as arc_next_member checks an end (a
 * .gz's CRC32 covers the whole file), and a failure there is the read's error; there are no
 * more members afterwards. Can't fail. */
void arc_want_only_current(arc_input *in);

/* Name of the current member (archive-relative, or the file's own base name); NULL
 * before the first arc_next_member. Owned by in, valid until the next move. */
const char *arc_member_name(const arc_input *in);

/* "PATH" for a single file, "PATH:MEMBER" for an archive or directory member: the WHERE
 * of error messages. Owned by in, valid until the next move. */
const char *arc_where(arc_input *in);

/* 1 when the path is an archive or a directory (members have their own names), 0 for a
 * plain or compressed single file. Can't fail. */
int arc_is_container(const arc_input *in);

/* Read up to size bytes of the current member. Returns the count, 0 at its end, -1 with
 * err filled on a read error (truncated archive, corrupt compressed data, and for a single
 * file or a member wanted alone, a damaged rest of the file). Do not mix with
 * arc_read_line on the same member. */
ssize_t arc_read(arc_input *in, void *buf, size_t size, bp_err *err);

/* Read the next line of the current member, without its "\n" (and without a "\r" before
 * it, as Python's universal newlines do). *line points into a buffer owned by in, valid
 * until the next call, NUL-terminated; *len is its length. Returns 1 for a line, 0 at the
 * end of the member, -1 with err filled on a read error, a line holding a NUL byte or
 * bytes that are not UTF-8 (base/utf8.h), or a line over BP_LIMIT_LINE_BYTES (base/limits.h). */
int arc_read_line(arc_input *in, char **line, size_t *len, bp_err *err);

/* 1-based number of the last line returned by arc_read_line in this member (0 before). */
int64_t arc_line_number(const arc_input *in);

/* Close and free everything (NULL is fine). */
void arc_close(arc_input *in);

#endif
