/* base/atomic_file.c — temp file + fsync + rename (see atomic_file.h).
 * Must never: rename a file that failed to write or sync (af_abort unlinks it), print, or exit. */
#include "base/atomic_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int af_open(af_file *file, const char *path, bp_err *err) {
    memset(file, 0, sizeof *file);
    size_t len = strlen(path);
    file->path = strdup(path);
    file->tmp_path = malloc(len + sizeof ".tmp.XXXXXX");
    if (!file->path || !file->tmp_path) {
        af_abort(file);
        return bp_err_set(err, "out of memory (%s)", path);
    }
    memcpy(file->tmp_path, path, len);
    memcpy(file->tmp_path + len, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkstemp(file->tmp_path);
    if (fd < 0) {
        int e = errno;
        free(file->tmp_path);
        file->tmp_path = NULL;
        af_abort(file);
        return bp_err_set(err, "cannot create a temporary file: %s (%s)", strerror(e), path);
    }
    /* mkstemp makes 0600; a checkpoint should get the usual umask-based mode. */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) {
        int e = errno;
        close(fd);
        af_abort(file);
        return bp_err_set(err, "cannot set the mode of a temporary file: %s (%s)", strerror(e), path);
    }
    file->fp = fdopen(fd, "wb");
    if (!file->fp) {
        int e = errno;
        close(fd);
        af_abort(file);
        return bp_err_set(err, "cannot open a temporary file: %s (%s)", strerror(e), path);
    }
    return 0;
}

int af_commit(af_file *file, bp_err *err) {
    int failed = ferror(file->fp) || fflush(file->fp) != 0 || fsync(fileno(file->fp)) != 0;
    int e = errno;
    if (fclose(file->fp) != 0 && !failed) {
        failed = 1;
        e = errno;
    }
    file->fp = NULL;
    if (!failed && rename(file->tmp_path, file->path) != 0) {
        failed = 1;
        e = errno;
    }
    if (failed) {
        bp_err_set(err, "cannot write: %s (%s)", strerror(e), file->path);
        af_abort(file);
        return -1;
    }
    free(file->tmp_path);
    free(file->path);
    file->tmp_path = file->path = NULL;
    return 0;
}

void af_abort(af_file *file) {
    if (file->fp) fclose(file->fp);
    if (file->tmp_path) unlink(file->tmp_path);
    free(file->tmp_path);
    free(file->path);
    file->fp = NULL;
    file->tmp_path = file->path = NULL;
}

int af_copy_file(const char *from, const char *to, bp_err *err) {
    FILE *in = fopen(from, "rb");
    if (!in) return bp_err_set(err, "cannot open: %s (%s)", strerror(errno), from);
    af_file out;
    if (af_open(&out, to, err)) { fclose(in); return -1; }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out.fp) != n) {
            fclose(in);
            af_abort(&out);
            return bp_err_set(err, "write failed (%s)", to);
        }
    int bad = ferror(in);
    fclose(in);
    if (bad) { af_abort(&out); return bp_err_set(err, "read failed (%s)", from); }
    return af_commit(&out, err);
}

int af_make_dir(const char *dir, bp_err *err) {
    if (mkdir(dir, 0755) && errno != EEXIST) return bp_err_set(err, "cannot create directory: %s (%s)", strerror(errno), dir);
    return 0;
}

int af_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
