/* base/archive_input.c — files, compressed files, archives and directories as member streams
 * (see archive_input.h).
 *
 * libarchive does the decoding: archives through its zip and tar readers, single files
 * through its "raw" format with every decompression filter enabled, so a plain text file
 * and a .gz read the same way. Directories are walked here and read with stdio.
 * Must never: know a dataset format, extract to disk, print, or exit.
 */
#include "base/archive_input.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define READ_CHUNK (64 * 1024)

struct arc_input {
    char *path;
    int is_dir;
    /* directory mode: sorted relative paths of every regular file below path */
    char **dir_members;
    size_t n_dir_members, next_dir_member;
    FILE *dir_file;
    /* archive / single-file mode */
    struct archive *archive;
    int is_raw;          /* a single (possibly compressed) file, not an archive */
    int raw_consumed;    /* its one member has been handed out */
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

/* ---- opening ---------------------------------------------------------------------- */

/* Archive formats first, raw last: raw accepts anything, so it must only win when no
 * archive format recognises the bytes. */
static struct archive *new_reader(int raw, bp_err *err, const char *path) {
    struct archive *a = archive_read_new();
    if (!a) {
        bp_err_set(err, "out of memory opening archive (%s)", path);
        return NULL;
    }
    archive_read_support_filter_all(a);
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
    struct archive *a = new_reader(0, err, in->path);
    if (!a) return -1;
    if (archive_read_open_filename(a, in->path, READ_CHUNK) != ARCHIVE_OK) {
        int saved_errno = archive_errno(a);
        archive_read_free(a);
        if (saved_errno == ENOENT || saved_errno == EACCES)
            return bp_err_set(err, "cannot open: %s (%s)", strerror(saved_errno), in->path);
        return 0;
    }
    /* Format detection happens on the first header: peek it and remember it. */
    struct archive_entry *entry;
    int rc = archive_read_next_header(a, &entry);
    if (rc == ARCHIVE_OK || rc == ARCHIVE_WARN) {
        archive_read_free(a);
        /* Re-open so arc_next_member sees the first entry through the normal path. */
        a = new_reader(0, err, in->path);
        if (!a) return -1;
        if (archive_read_open_filename(a, in->path, READ_CHUNK) != ARCHIVE_OK) {
            bp_err_set(err, "cannot open archive: %s (%s)", archive_error_string(a), in->path);
            archive_read_free(a);
            return -1;
        }
        in->archive = a;
        return 1;
    }
    /* An archive format that recognised the bytes but then failed is a damaged archive;
     * "unrecognized format" means plain data. */
    int format = archive_format(a);
    const char *message = archive_error_string(a);
    if (format != 0 && rc != ARCHIVE_EOF) {
        bp_err_set(err, "damaged archive: %s (%s)", message ? message : "unknown error", in->path);
        archive_read_free(a);
        return -1;
    }
    archive_read_free(a);
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
        in->archive = new_reader(1, err, path);
        if (!in->archive) {
            arc_close(in);
            return NULL;
        }
        if (archive_read_open_filename(in->archive, path, READ_CHUNK) != ARCHIVE_OK) {
            /* The file exists (stat above), so this is a compressed stream that fails to
             * decode from its first block: a cut or corrupt download. */
            bp_err_set(err, "damaged or truncated data: %s (%s)", archive_error_string(in->archive), path);
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
    if (in->is_raw) {
        if (in->raw_consumed) return 0;
        struct archive_entry *entry;
        int rc = archive_read_next_header(in->archive, &entry);
        /* libarchive's raw format gives no entry for an empty file; that is an empty member. */
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN && rc != ARCHIVE_EOF)
            return bp_err_set(err, "cannot read: %s (%s)", archive_error_string(in->archive), in->path);
        in->raw_consumed = 1;
        char *name = single_member_name(in->path);
        if (!name) return bp_err_set(err, "out of memory (%s)", in->path);
        int set = set_member(in, name, err);
        free(name);
        if (rc == ARCHIVE_EOF) in->member_eof = 1;
        return set == 0 ? 1 : -1;
    }
    for (;;) {
        struct archive_entry *entry;
        int rc = archive_read_next_header(in->archive, &entry);
        if (rc == ARCHIVE_EOF) return 0;
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
            return bp_err_set(err, "damaged or truncated archive: %s (%s)",
                              archive_error_string(in->archive), in->path);
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
        if (in->is_raw || name_matches(in->member, name)) return 1;
    }
}

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
        return bp_err_set(err, "damaged or truncated data: %s (%s)", archive_error_string(in->archive), in->where);
    }
    if (got == 0) in->member_eof = 1;
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
    free(in->member);
    free(in->where);
    free(in->chunk);
    free(in->line);
    free(in->path);
    free(in);
}
