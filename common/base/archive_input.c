/* base/archive_input.c — files, compressed files, archives and directories as member streams
 * (see archive_input.h).
 *
 * libarchive does the decoding: archives through its zip and tar readers, single files
 * through its "raw" format with every decompression filter enabled, so a plain text file
 * and a .gz read the same way. Directories are walked here and read with stdio.
 *
 * What libarchive lets pass is checked here: a gzip file's bytes also go through a gz_check
 * (libarchive ignores the CRC32 trailer), a tar must end with its end-of-archive blocks
 * (libarchive accepts a tar cut at a member boundary as complete), and once the last member
 * is read, or the one member arc_find_member looked for, the rest of the file is read so
 * that a cut or corrupt tail is an error too.
 * Must never: know a dataset format, extract to disk, print, or exit.
 */
#include "base/archive_input.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/gzip_check.h"
#include "base/limits.h"
#include "base/utf8.h"

#define READ_CHUNK (64 * 1024)

/* The bytes of a gzip file, read by us and handed to libarchive, so that gz_check sees
 * every one of them exactly once, in order. */
typedef struct arc_source {
    int fd;
    gz_check *gz;
    int ended;             /* read() returned 0 */
    char error[256];       /* why the source failed: more precise than libarchive's wording */
    unsigned char buf[READ_CHUNK];
} arc_source;

struct arc_input {
    char *path;
    int is_dir;
    /* directory mode: sorted relative paths of every regular file below path */
    char **dir_members;
    size_t n_dir_members, next_dir_member;
    FILE *dir_file;
    /* archive / single-file mode */
    struct archive *archive;
    arc_source *source;  /* gzip files only; others are opened by libarchive itself */
    int is_raw;          /* a single (possibly compressed) file, not an archive */
    int raw_consumed;    /* its one member has been handed out */
    int have_entry;      /* libarchive has returned an entry header */
    int find_mode;       /* positioned by arc_find_member: the rest is checked at member end */
    int finished;        /* the whole file has been read and checked: no more members */
    /* current member */
    char *member;
    char *where;
    int member_open;
    int member_eof;
    /* line reading over the current member */
    char *chunk;
    size_t chunk_len, chunk_pos;
    char *line;
    size_t line_cap;
    int64_t line_number;
    int64_t file_size;   /* of path, for telling a cut file from a corrupt one */
};

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

/* ---- directory walk -------------------------------------------------------------- */

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push_member(arc_input *in, size_t *cap, const char *relative, bp_err *err) {
    if (in->n_dir_members == *cap) {
        size_t new_cap = *cap ? *cap * 2 : 64;
        char **grown = realloc(in->dir_members, new_cap * sizeof *grown);
        if (!grown) return bp_err_set(err, "out of memory listing directory (%s)", in->path);
        in->dir_members = grown;
        *cap = new_cap;
    }
    char *copy = copy_string(relative);
    if (!copy) return bp_err_set(err, "out of memory listing directory (%s)", in->path);
    in->dir_members[in->n_dir_members++] = copy;
    return 0;
}

/* Collect regular files below in->path/relative (relative "" for the top). */
static int walk_directory(arc_input *in, size_t *cap, const char *relative, bp_err *err) {
    char full[4096];
    if (snprintf(full, sizeof full, "%s%s%s", in->path, *relative ? "/" : "", relative) >= (int)sizeof full)
        return bp_err_set(err, "path too long (%s/%s)", in->path, relative);
    DIR *dir = opendir(full);
    if (!dir) return bp_err_set(err, "cannot list directory: %s (%s)", strerror(errno), full);
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char child[4096], child_full[4096];
        if (snprintf(child, sizeof child, "%s%s%s", relative, *relative ? "/" : "", entry->d_name) >= (int)sizeof child ||
            snprintf(child_full, sizeof child_full, "%s/%s", in->path, child) >= (int)sizeof child_full) {
            rc = bp_err_set(err, "path too long (%s/%s)", full, entry->d_name);
            break;
        }
        struct stat st;
        if (stat(child_full, &st) != 0) {
            rc = bp_err_set(err, "cannot stat: %s (%s)", strerror(errno), child_full);
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk_directory(in, cap, child, err);
        } else if (S_ISREG(st.st_mode)) {
            rc = push_member(in, cap, child, err);
        }
    }
    closedir(dir);
    return rc;
}

/* ---- the byte source ---------------------------------------------------------------- */

static void source_free(arc_source *source) {
    if (!source) return;
    if (source->fd >= 0) close(source->fd);
    gz_check_free(source->gz);
    free(source);
}

/* A source for path when it is a gzip file; *source stays NULL for any other file (libarchive
 * then opens it itself, with seeking for zips). Returns 0, or -1 with err. */
static int source_open(const char *path, arc_source **source, bp_err *err) {
    *source = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bp_err_set(err, "cannot open: %s (%s)", strerror(errno), path);
    unsigned char magic[2];
    ssize_t got = pread(fd, magic, sizeof magic, 0);
    if (got < 0) {
        int e = errno;
        close(fd);
        return bp_err_set(err, "cannot read: %s (%s)", strerror(e), path);
    }
    if (!gz_is_gzip(magic, (size_t)got)) {
        close(fd);
        return 0;
    }
    arc_source *s = calloc(1, sizeof *s);
    if (!s || !(s->gz = gz_check_new())) {
        free(s);
        close(fd);
        return bp_err_set(err, "out of memory (%s)", path);
    }
    s->fd = fd;
    *source = s;
    return 0;
}

/* The next bytes of the file, checked. Returns their count, 0 at the end, -1 with
 * source->error filled. */
static ssize_t source_pull(arc_source *s) {
    if (s->error[0]) return -1;
    if (s->ended) return 0;
    ssize_t n;
    do n = read(s->fd, s->buf, sizeof s->buf);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        snprintf(s->error, sizeof s->error, "read error: %s", strerror(errno));
        return -1;
    }
    if (n == 0) {
        s->ended = 1;
        return gz_check_finish(s->gz, s->error, sizeof s->error) == 0 ? 0 : -1;
    }
    return gz_check_feed(s->gz, s->buf, (size_t)n, s->error, sizeof s->error) == 0 ? n : -1;
}

static la_ssize_t source_read(struct archive *a, void *user, const void **buffer) {
    arc_source *s = user;
    ssize_t n = source_pull(s);
    if (n < 0) {
        archive_set_error(a, EIO, "%s", s->error);
        return -1;
    }
    *buffer = s->buf;
    return (la_ssize_t)n;
}

/* Read and check what libarchive left unread (padding after a tar's end, the gzip trailer). */
static int source_drain(arc_source *s) {
    if (!s) return 0;
    ssize_t n;
    while ((n = source_pull(s)) > 0) continue;
    return n < 0 ? -1 : 0;
}

/* Why libarchive failed, in words that are never NULL. */
static const char *arc_reason(const arc_input *in) {
    if (in->source && in->source->error[0]) return in->source->error;
    const char *message = in->archive ? archive_error_string(in->archive) : NULL;
    if (message && *message) return message;
    /* libarchive's streaming zip reader says nothing when the file ends where a header
     * should be: say so when the whole file has been read. */
    if (in->archive && archive_filter_bytes(in->archive, -1) >= in->file_size)
        return "the file ends where another member or the zip's central directory should start: truncated";
    return "libarchive gives no reason (an unreadable header or entry)";
}

/* "damaged or truncated data: REASON (WHERE)"; our own gzip check's reasons say it all. */
static int arc_fail(const arc_input *in, const char *what, const char *where, bp_err *err) {
    if (in->source && in->source->error[0]) return bp_err_set(err, "%s (%s)", in->source->error, where);
    return bp_err_set(err, "%s: %s (%s)", what, arc_reason(in), where);
}

/* ---- opening ---------------------------------------------------------------------- */

/* Archive formats first, raw last: raw accepts anything, so it must only win when no
 * archive format recognises the bytes. Only the compressions the documentation names are
 * enabled (libarchive's others may run external programs chosen by the input's magic). */
static struct archive *new_reader(int raw, bp_err *err, const char *path) {
    struct archive *a = archive_read_new();
    if (!a) {
        bp_err_set(err, "out of memory opening archive (%s)", path);
        return NULL;
    }
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_lzma(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_filter_lz4(a);
    archive_read_support_filter_compress(a);
    if (raw) {
        /* "empty" lets an empty (or empty-when-decompressed) file be an empty member. */
        archive_read_support_format_empty(a);
        archive_read_support_format_raw(a);
    } else {
        archive_read_support_format_zip(a);
        archive_read_support_format_tar(a);
        archive_read_support_format_gnutar(a);
        archive_read_support_format_7zip(a);
    }
    return a;
}

/* A reader on path (an archive reader, or raw), with in->source replaced by a fresh one for
 * a gzip file. Returns the reader, or NULL with err; *refused is set to 1 when libarchive
 * refused the bytes (not a missing or unreadable file, not out of memory). */
static struct archive *open_reader(arc_input *in, int raw, int *refused, bp_err *err) {
    *refused = 0;
    source_free(in->source);
    in->source = NULL;
    if (source_open(in->path, &in->source, err) != 0) return NULL;
    struct archive *a = new_reader(raw, err, in->path);
    if (!a) return NULL;
    int rc = in->source ? archive_read_open(a, in->source, NULL, source_read, NULL)
                        : archive_read_open_filename(a, in->path, READ_CHUNK);
    if (rc != ARCHIVE_OK) {
        int saved_errno = archive_errno(a);
        *refused = saved_errno != ENOENT && saved_errno != EACCES;
        const char *message = archive_error_string(a);
        if (!*refused)
            bp_err_set(err, "cannot open: %s (%s)", strerror(saved_errno), in->path);
        else if (in->source && in->source->error[0])
            bp_err_set(err, "%s (%s)", in->source->error, in->path);
        else
            bp_err_set(err, "damaged or truncated data: %s (%s)", message && *message ? message : "unreadable", in->path);
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* Base name of path without a compression suffix: the name of a single file's member. */
static char *single_member_name(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *name = copy_string(base);
    if (!name) return NULL;
    static const char *suffixes[] = {".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t s = strlen(suffixes[i]);
        if (n > s && strcmp(name + n - s, suffixes[i]) == 0) {
            name[n - s] = '\0';
            break;
        }
    }
    return name;
}

/* Try to open path as a real archive. Returns 1 when libarchive recognised one (reader
 * kept in in->archive), 0 when it is not an archive, -1 on an I/O error. */
static int try_open_archive(arc_input *in, bp_err *err) {
    int refused;
    struct archive *a = open_reader(in, 0, &refused, err);
    /* Unrecognised bytes fail the open; only a missing or unreadable file is an error. */
    if (!a && refused && err) err->msg[0] = '\0';
    if (!a) return refused ? 0 : -1;
    /* Format detection happens on the first header: peek it and remember it. */
    struct archive_entry *entry;
    int rc = archive_read_next_header(a, &entry);
    if (rc == ARCHIVE_OK || rc == ARCHIVE_WARN) {
        archive_read_free(a);
        /* Re-open so arc_next_member sees the first entry through the normal path. */
        a = open_reader(in, 0, &refused, err);
        if (!a) return -1;
        in->archive = a;
        return 1;
    }
    /* An archive format that recognised the bytes but then failed is a damaged archive;
     * "unrecognized format" means plain data. */
    int format = archive_format(a);
    if (format != 0 && rc != ARCHIVE_EOF) {
        in->archive = a;
        arc_fail(in, "damaged archive", in->path, err);
        in->archive = NULL;
        archive_read_free(a);
        return -1;
    }
    archive_read_free(a);
    if (err) err->msg[0] = '\0';
    return 0;
}

arc_input *arc_open(const char *path, bp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        bp_err_set(err, "cannot open: %s (%s)", strerror(errno), path);
        return NULL;
    }
    arc_input *in = calloc(1, sizeof *in);
    if (!in || !(in->path = copy_string(path)) || !(in->chunk = malloc(READ_CHUNK))) {
        bp_err_set(err, "out of memory (%s)", path);
        arc_close(in);
        return NULL;
    }
    in->file_size = (int64_t)st.st_size;
    if (S_ISDIR(st.st_mode)) {
        in->is_dir = 1;
        size_t cap = 0;
        if (walk_directory(in, &cap, "", err) != 0) {
            arc_close(in);
            return NULL;
        }
        if (in->n_dir_members)
            qsort(in->dir_members, in->n_dir_members, sizeof *in->dir_members, compare_names);
        return in;
    }
    int rc = try_open_archive(in, err);
    if (rc < 0) {
        arc_close(in);
        return NULL;
    }
    if (rc == 0) {
        in->is_raw = 1;
        /* The file exists (stat above), so a refused open is a compressed stream that fails
         * to decode from its first block: a cut or corrupt download. */
        int refused;
        if (!(in->archive = open_reader(in, 1, &refused, err))) {
            arc_close(in);
            return NULL;
        }
    }
    return in;
}

/* ---- members ---------------------------------------------------------------------- */

static int set_member(arc_input *in, const char *name, bp_err *err) {
    free(in->member);
    free(in->where);
    in->member = copy_string(name);
    size_t n = strlen(in->path) + strlen(name) + 2;
    in->where = malloc(n);
    if (!in->member || !in->where) return bp_err_set(err, "out of memory (%s)", in->path);
    if (in->is_raw)
        snprintf(in->where, n, "%s", in->path);
    else
        snprintf(in->where, n, "%s:%s", in->path, name);
    in->member_open = 1;
    in->member_eof = 0;
    in->chunk_len = in->chunk_pos = 0;
    in->line_number = 0;
    return 0;
}

/* The archive said it has no more entries: make sure it really ended. A tar ends with two
 * zero blocks, which libarchive consumes; when it returns EOF having consumed none, the tar
 * was cut at a member boundary. Then whatever libarchive left unread goes through the
 * source, so a gzip trailer is checked too. position_before is where the header read that
 * found the end started. Returns 0, or -1 with err naming the file. */
static int archive_ended(arc_input *in, int64_t position_before, bp_err *err) {
    in->finished = 1;
    int64_t consumed = archive_filter_bytes(in->archive, 0) - position_before;
    if ((archive_format(in->archive) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_TAR && consumed < 1024)
        return bp_err_set(err, "truncated tar archive: it ends after a member without the two zero blocks that close a tar (%s)",
                          in->path);
    if (source_drain(in->source) != 0) return arc_fail(in, "damaged or truncated data", in->path, err);
    return 0;
}

/* The next entry of an archive. Returns 1 with *entry set, 0 at a verified end, -1 with err. */
static int next_entry(arc_input *in, struct archive_entry **entry, bp_err *err) {
    /* Skip the current entry's rest first, so the position below is where the next header
     * starts (libarchive would skip it inside archive_read_next_header anyway). */
    if (in->have_entry) {
        int skipped = archive_read_data_skip(in->archive);
        if (skipped != ARCHIVE_OK && skipped != ARCHIVE_WARN)
            return arc_fail(in, "damaged or truncated archive", in->path, err);
    }
    int64_t before = archive_filter_bytes(in->archive, 0);
    int rc = archive_read_next_header(in->archive, entry);
    in->have_entry = rc == ARCHIVE_OK || rc == ARCHIVE_WARN;
    if (rc == ARCHIVE_EOF) return archive_ended(in, before, err) == 0 ? 0 : -1;
    if (!in->have_entry) return arc_fail(in, "damaged or truncated archive", in->path, err);
    return 1;
}

/* The current member has been read to its end. A single file is then wholly read; a member
 * found by name is all its reader wants, so the rest of the archive is walked now: a file
 * that is cut or corrupt after that member must not pass for whole. */
static int member_ended(arc_input *in, bp_err *err) {
    in->member_eof = 1;
    if (in->is_dir || in->finished) return 0;
    if (in->is_raw) {
        in->finished = 1;
        if (source_drain(in->source) != 0) return arc_fail(in, "damaged or truncated data", in->path, err);
        return 0;
    }
    if (!in->find_mode) return 0;
    struct archive_entry *entry;
    int rc;
    while ((rc = next_entry(in, &entry, err)) == 1) continue;
    return rc;
}

int arc_next_member(arc_input *in, bp_err *err) {
    in->member_open = 0;
    if (in->is_dir) {
        if (in->dir_file) {
            fclose(in->dir_file);
            in->dir_file = NULL;
        }
        if (in->next_dir_member >= in->n_dir_members) return 0;
        const char *name = in->dir_members[in->next_dir_member++];
        char full[8192];
        snprintf(full, sizeof full, "%s/%s", in->path, name);
        in->dir_file = fopen(full, "rb");
        if (!in->dir_file) return bp_err_set(err, "cannot open: %s (%s)", strerror(errno), full);
        return set_member(in, name, err) == 0 ? 1 : -1;
    }
    if (in->finished) return 0;
    if (in->is_raw) {
        if (in->raw_consumed) return 0;
        struct archive_entry *entry;
        int rc = archive_read_next_header(in->archive, &entry);
        /* libarchive's raw format gives no entry for an empty file; that is an empty member. */
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN && rc != ARCHIVE_EOF)
            return arc_fail(in, "damaged or truncated data", in->path, err);
        in->raw_consumed = 1;
        char *name = single_member_name(in->path);
        if (!name) return bp_err_set(err, "out of memory (%s)", in->path);
        int set = set_member(in, name, err);
        free(name);
        if (set != 0) return -1;
        if (rc == ARCHIVE_EOF && member_ended(in, err) != 0) return -1;
        return 1;
    }
    for (;;) {
        struct archive_entry *entry;
        int rc = next_entry(in, &entry, err);
        if (rc <= 0) return rc;
        if (archive_entry_filetype(entry) != AE_IFREG) continue;
        const char *name = archive_entry_pathname(entry);
        if (!name) continue;
        if (name[0] == '.' && name[1] == '/') name += 2;
        return set_member(in, name, err) == 0 ? 1 : -1;
    }
}

static int name_matches(const char *member, const char *wanted) {
    size_t m = strlen(member), w = strlen(wanted);
    if (m == w) return strcmp(member, wanted) == 0;
    return m > w && member[m - w - 1] == '/' && strcmp(member + m - w, wanted) == 0;
}

int arc_find_member(arc_input *in, const char *name, bp_err *err) {
    for (;;) {
        int rc = arc_next_member(in, err);
        if (rc < 0) return -1;
        if (rc == 0) {
            bp_err_set(err, "no member %s (%s)", name, in->path);
            return 0;
        }
        if (in->is_raw || name_matches(in->member, name)) {
            in->find_mode = 1;
            return 1;
        }
    }
}

void arc_want_only_current(arc_input *in) { in->find_mode = 1; }

const char *arc_member_name(const arc_input *in) { return in->member_open || in->member ? in->member : NULL; }

const char *arc_where(arc_input *in) { return in->where ? in->where : in->path; }

int arc_is_container(const arc_input *in) { return !in->is_raw; }

/* ---- reading ---------------------------------------------------------------------- */

ssize_t arc_read(arc_input *in, void *buf, size_t size, bp_err *err) {
    if (!in->member_open) return bp_err_set(err, "read with no current member (%s)", in->path);
    if (in->member_eof || size == 0) return 0;
    if (in->is_dir) {
        size_t got = fread(buf, 1, size, in->dir_file);
        if (got == 0) {
            if (ferror(in->dir_file)) return bp_err_set(err, "read error: %s (%s)", strerror(errno), in->where);
            in->member_eof = 1;
        }
        return (ssize_t)got;
    }
    la_ssize_t got = archive_read_data(in->archive, buf, size);
    if (got < 0) {
        /* A warning still delivered no data we can trust; treat every failure as fatal. */
        return arc_fail(in, "damaged or truncated data", in->where, err);
    }
    if (got == 0 && member_ended(in, err) != 0) return -1;
    return (ssize_t)got;
}

int arc_read_line(arc_input *in, char **line, size_t *len, bp_err *err) {
    size_t used = 0;
    int saw_any = 0;
    for (;;) {
        if (in->chunk_pos == in->chunk_len) {
            ssize_t got = arc_read(in, in->chunk, READ_CHUNK, err);
            if (got < 0) return -1;
            if (got == 0) {
                if (!saw_any) return 0;
                break; /* last line without a newline */
            }
            in->chunk_len = (size_t)got;
            in->chunk_pos = 0;
        }
        saw_any = 1;
        const char *start = in->chunk + in->chunk_pos;
        size_t avail = in->chunk_len - in->chunk_pos;
        const char *newline = memchr(start, '\n', avail);
        size_t take = newline ? (size_t)(newline - start) : avail;
        if (used + take > BP_LIMIT_LINE_BYTES) {
            char place[600];
            snprintf(place, sizeof place, "%s:%lld", in->where, (long long)in->line_number + 1);
            return bp_check_limit(used + take, BP_LIMIT_LINE_BYTES, "bytes", "a line", place, err);
        }
        if (used + take + 1 > in->line_cap) {
            size_t cap = in->line_cap ? in->line_cap : 256;
            while (cap < used + take + 1) cap *= 2;
            char *grown = realloc(in->line, cap);
            if (!grown) return bp_err_set(err, "out of memory reading a line (%s:%lld)", in->where, (long long)in->line_number + 1);
            in->line = grown;
            in->line_cap = cap;
        }
        memcpy(in->line + used, start, take);
        used += take;
        in->chunk_pos += take + (newline ? 1 : 0);
        if (newline) break;
    }
    in->line_number++;
    if (used > 0 && in->line[used - 1] == '\r') used--;
    in->line[used] = '\0';
    if (memchr(in->line, '\0', used))
        return bp_err_set(err, "NUL byte in text (%s:%lld)", in->where, (long long)in->line_number);
    int64_t bad = bp_utf8_invalid_at(in->line, used);
    if (bad >= 0)
        return bp_err_set(err, "text is not valid UTF-8: byte 0x%02x at column %lld (%s:%lld)",
                          (unsigned char)in->line[bad], (long long)bad + 1, in->where, (long long)in->line_number);
    *line = in->line;
    *len = used;
    return 1;
}

int64_t arc_line_number(const arc_input *in) { return in->line_number; }

void arc_close(arc_input *in) {
    if (!in) return;
    if (in->dir_file) fclose(in->dir_file);
    for (size_t i = 0; i < in->n_dir_members; i++) free(in->dir_members[i]);
    free(in->dir_members);
    if (in->archive) archive_read_free(in->archive);
    source_free(in->source);
    free(in->member);
    free(in->where);
    free(in->chunk);
    free(in->line);
    free(in->path);
    free(in);
}
