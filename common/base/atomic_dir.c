/* base/atomic_dir.c — folder replacement by write-beside and rename (see atomic_dir.h).
 * Must never: delete a name the save did not write, or print or exit. */
#include "base/atomic_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* "A/B" in a new string, or NULL when out of memory. */
static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* PATH followed by SUFFIX, in a new string. */
static char *with_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", path, suffix);
    return s;
}

static int is_folder(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static int listed(const char *name, const char *const *names) {
    for (size_t i = 0; names && names[i]; i++)
        if (strcmp(name, names[i]) == 0) return 1;
    return 0;
}

/* Remove FOLDER, which a save made: its entries may be names in REPLACED, or links to the
 * file of the same name in LIVE (may be NULL). Anything else stays, and then so does FOLDER:
 * returns -1 with err naming what is in the way. A missing FOLDER is fine. */
static int remove_save_folder(const char *folder, const char *live, const char *const *replaced, bp_err *err) {
    DIR *dir = opendir(folder);
    if (!dir) return errno == ENOENT ? 0 : bp_err_set(err, "cannot list: %s (%s)", strerror(errno), folder);
    char kept[256] = "";
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char *path = join(folder, entry->d_name), *twin = live ? join(live, entry->d_name) : NULL;
        struct stat st, twin_st;
        int removable = path && lstat(path, &st) == 0 && (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) &&
                        (listed(entry->d_name, replaced) ||
                         (twin && lstat(twin, &twin_st) == 0 && twin_st.st_dev == st.st_dev && twin_st.st_ino == st.st_ino));
        if (!removable || unlink(path) != 0)
            if (!kept[0]) snprintf(kept, sizeof kept, "%s", entry->d_name);
        free(path);
        free(twin);
    }
    closedir(dir);
    if (rmdir(folder) == 0) return 0;
    if (kept[0])
        return bp_err_set(err, "%s, left by an earlier save, holds %s, which no save put there: move it away (%s)", folder,
                          kept, folder);
    return bp_err_set(err, "cannot remove: %s (%s)", strerror(errno), folder);
}

static int sync_fd_path(const char *path, int flags) {
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Rename FROM to TO and make it durable (fsync of the parent both live in). */
static int durable_rename(const ad_dir *d, const char *from, const char *to, bp_err *err) {
    if (rename(from, to) != 0) return bp_err_set(err, "cannot rename %s to %s: %s (%s)", from, to, strerror(errno), d->path);
    if (fsync(d->parent_fd) != 0) return bp_err_set(err, "cannot sync folder: %s (%s)", strerror(errno), d->parent);
    return 0;
}

/* Finish a swap that stopped between its renames (see atomic_dir.h). PARENT_FD may be -1. */
static int recover_locked(const char *path, int parent_fd, bp_err *err) {
    if (exists(path)) return 0;
    char *fresh = with_suffix(path, ".new"), *old = with_suffix(path, ".old");
    int rc = 0;
    if (!fresh || !old) {
        rc = bp_err_set(err, "out of memory (%s)", path);
    } else {
        const char *from = is_folder(fresh) ? fresh : is_folder(old) ? old : NULL;
        if (from && rename(from, path) != 0)
            rc = bp_err_set(err, "folder is missing and %s holds the %s save, but it cannot be moved into place: %s (%s)",
                            from, from == fresh ? "last complete" : "previous", strerror(errno), path);
        if (from && rc == 0 && parent_fd >= 0) fsync(parent_fd);
    }
    free(fresh);
    free(old);
    return rc;
}

static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Open and lock PATH's parent (two saves into one parent wait for each other). */
static int lock_parent(const char *path, char **parent, int *fd, bp_err *err) {
    if (!(*parent = parent_of(path))) return bp_err_set(err, "out of memory (%s)", path);
    *fd = open(*parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return bp_err_set(err, "cannot open the folder that holds it: %s (%s)", strerror(errno), path);
    /* Where the file system has no locks (some network mounts), saves are simply not serialised. */
    while (flock(*fd, LOCK_EX) != 0 && errno == EINTR) continue;
    return 0;
}

int ad_recover(const char *path, bp_err *err) {
    if (exists(path)) return 0;
    char *fresh = with_suffix(path, ".new"), *old = with_suffix(path, ".old");
    int interrupted = fresh && old && (is_folder(fresh) || is_folder(old));
    free(fresh);
    free(old);
    if (!interrupted) return 0; /* missing, and nothing to recover: the caller's open says so */
    char *parent = NULL;
    int fd = -1;
    int rc = lock_parent(path, &parent, &fd, err);
    if (rc == 0) rc = recover_locked(path, fd, err);
    if (fd >= 0) close(fd);
    free(parent);
    return rc;
}

/* Remove what earlier saves of PATH left: a complete DIR.new that was never swapped in, a
 * DIR.old that was not removed, DIR.tmp-PID of saves whose process is gone. */
static int remove_leftovers(const ad_dir *d, bp_err *err) {
    char *fresh = with_suffix(d->path, ".new"), *old = with_suffix(d->path, ".old");
    int rc = fresh && old ? 0 : bp_err_set(err, "out of memory (%s)", d->path);
    if (rc == 0) rc = remove_save_folder(fresh, d->path, d->replaced, err);
    if (rc == 0) rc = remove_save_folder(old, d->path, d->replaced, err);
    free(fresh);
    free(old);
    if (rc != 0) return -1;
    const char *base = strrchr(d->path, '/');
    base = base ? base + 1 : d->path;
    size_t base_len = strlen(base);
    DIR *dir = opendir(d->parent);
    if (!dir) return bp_err_set(err, "cannot list: %s (%s)", strerror(errno), d->parent);
    struct dirent *entry;
    while (rc == 0 && (entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (strncmp(name, base, base_len) != 0 || strncmp(name + base_len, ".tmp-", 5) != 0) continue;
        char *end;
        long pid = strtol(name + base_len + 5, &end, 10);
        if (*end || pid <= 0 || pid > INT_MAX) continue;
        if (pid != (long)getpid() && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH)) continue; /* a live save */
        char *stale = join(d->parent, name);
        rc = stale ? remove_save_folder(stale, d->path, d->replaced, err) : bp_err_set(err, "out of memory (%s)", d->path);
        free(stale);
    }
    closedir(dir);
    return rc;
}

/* Call FN for each entry of FOLDER but "." and "..", with its path and lstat; stops at the
 * first non-zero return and returns it. A missing FOLDER has no entries. */
typedef int (*entry_fn)(const ad_dir *d, const char *path, const char *name, const struct stat *st, bp_err *err);
static int each_entry(const ad_dir *d, const char *folder, entry_fn fn, bp_err *err) {
    DIR *dir = opendir(folder);
    if (!dir) return errno == ENOENT ? 0 : bp_err_set(err, "cannot list: %s (%s)", strerror(errno), folder);
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char *path = join(folder, entry->d_name);
        struct stat st;
        if (!path) rc = bp_err_set(err, "out of memory (%s)", d->path);
        else if (lstat(path, &st) != 0) rc = bp_err_set(err, "cannot stat %s: %s (%s)", entry->d_name, strerror(errno), folder);
        else rc = fn(d, path, entry->d_name, &st, err);
        free(path);
    }
    closedir(dir);
    return rc;
}

static int refuse_non_file(const ad_dir *d, const char *path, const char *name, const struct stat *st, bp_err *err) {
    if (S_ISREG(st->st_mode) || S_ISLNK(st->st_mode)) return 0;
    return bp_err_set(err, "holds %s, which is not a file: a save replaces the whole folder and could not carry it "
                      "over; save into a folder of its own (%s)", name, d->path);
}

/* PATH must be a folder of files only, and not where this process stands. */
static int check_replaceable(const ad_dir *d, bp_err *err) {
    struct stat st;
    if (lstat(d->path, &st) != 0) return 0; /* a first save */
    if (!S_ISDIR(st.st_mode)) return bp_err_set(err, "exists and is not a folder (%s)", d->path);
    char *real = realpath(d->path, NULL), cwd[PATH_MAX];
    int inside = real && getcwd(cwd, sizeof cwd) &&
                 strncmp(cwd, real, strlen(real)) == 0 && (cwd[strlen(real)] == '\0' || cwd[strlen(real)] == '/');
    free(real);
    if (inside)
        return bp_err_set(err, "is the current directory or holds it; a save replaces the whole folder: save elsewhere (%s)",
                          d->path);
    return each_entry(d, d->path, refuse_non_file, err);
}

static void ad_free(ad_dir *d) {
    if (d->parent_fd >= 0) close(d->parent_fd); /* releases the lock */
    free(d->path);
    free(d->tmp_path);
    free(d->parent);
    d->path = d->tmp_path = d->parent = NULL;
    d->parent_fd = -1;
}

int ad_begin(ad_dir *d, const char *path, const char *const *replaced, bp_err *err) {
    memset(d, 0, sizeof *d);
    d->parent_fd = -1;
    d->replaced = replaced;
    /* A symbolic link keeps pointing where it points: the folder it names is replaced. */
    struct stat st;
    d->path = lstat(path, &st) == 0 && S_ISLNK(st.st_mode) ? realpath(path, NULL) : strdup(path);
    if (!d->path) return bp_err_set(err, "cannot resolve: %s (%s)", strerror(errno), path);
    size_t n = strlen(d->path);
    while (n > 1 && d->path[n - 1] == '/') d->path[--n] = '\0';
    if (n == 0 || strcmp(d->path, "/") == 0 || strcmp(d->path, ".") == 0 || strcmp(d->path, "..") == 0) {
        ad_free(d);
        return bp_err_set(err, "cannot replace this folder: a save replaces the whole folder (%s)", path);
    }
    char suffix[32];
    snprintf(suffix, sizeof suffix, ".tmp-%ld", (long)getpid());
    if (!(d->tmp_path = with_suffix(d->path, suffix))) {
        ad_free(d);
        return bp_err_set(err, "out of memory (%s)", path);
    }
    if (lock_parent(d->path, &d->parent, &d->parent_fd, err) != 0 || recover_locked(d->path, d->parent_fd, err) != 0 ||
        remove_leftovers(d, err) != 0 || check_replaceable(d, err) != 0) {
        ad_free(d);
        return -1;
    }
    if (mkdir(d->tmp_path, 0777) != 0) {
        bp_err_set(err, "cannot create %s: %s (%s)", d->tmp_path, strerror(errno), d->path);
        ad_free(d);
        return -1;
    }
    /* The new folder keeps the old one's permissions. */
    if (lstat(d->path, &st) == 0) chmod(d->tmp_path, st.st_mode & 07777);
    return 0;
}

void ad_abort(ad_dir *d) {
    if (d->tmp_path) remove_save_folder(d->tmp_path, d->path, d->replaced, NULL);
    ad_free(d);
}

/* Hard-link a file of the old folder that the save does not replace into the new one. */
static int link_into_new(const ad_dir *d, const char *path, const char *name, const struct stat *st, bp_err *err) {
    if (listed(name, d->replaced)) return 0;
    char *to = join(d->tmp_path, name);
    int rc = to ? 0 : bp_err_set(err, "out of memory (%s)", d->path);
    if (rc == 0 && !exists(to) && linkat(AT_FDCWD, path, AT_FDCWD, to, 0) != 0)
        rc = bp_err_set(err, "cannot keep %s in the new folder: %s (%s)", name, strerror(errno), d->path);
    free(to);
    return rc;
}

static int sync_file(const ad_dir *d, const char *path, const char *name, const struct stat *st, bp_err *err) {
    if (S_ISREG(st->st_mode) && sync_fd_path(path, O_RDONLY) != 0)
        return bp_err_set(err, "cannot sync %s: %s (%s)", name, strerror(errno), d->path);
    return 0;
}

/* fsync every file of the new folder, then the folder itself. */
static int sync_folder(const ad_dir *d, bp_err *err) {
    if (each_entry(d, d->tmp_path, sync_file, err) != 0) return -1;
    if (sync_fd_path(d->tmp_path, O_RDONLY | O_DIRECTORY) != 0)
        return bp_err_set(err, "cannot sync %s: %s (%s)", d->tmp_path, strerror(errno), d->path);
    return 0;
}

int ad_commit(ad_dir *d, bp_err *err) {
    char *fresh = with_suffix(d->path, ".new"), *old = with_suffix(d->path, ".old");
    int had_old = is_folder(d->path);
    int rc = fresh && old ? 0 : bp_err_set(err, "out of memory (%s)", d->path);
    if (rc == 0) rc = each_entry(d, d->path, link_into_new, err);
    if (rc == 0) rc = sync_folder(d, err);
    if (rc == 0) rc = durable_rename(d, d->tmp_path, fresh, err);
    if (rc != 0) {
        ad_abort(d);
        free(fresh);
        free(old);
        return -1;
    }
    /* From here DIR.new is a complete save: a stop leaves either DIR or DIR.new whole. */
    if (had_old && durable_rename(d, d->path, old, err) != 0) {
        remove_save_folder(fresh, d->path, d->replaced, NULL);
        rc = -1;
    } else if (durable_rename(d, fresh, d->path, err) != 0) {
        if (had_old && rename(old, d->path) == 0) fsync(d->parent_fd);
        rc = -1; /* if even that failed, ad_recover moves DIR.new into place on the next load */
    } else if (had_old) {
        /* The save has succeeded; what cannot be removed now is removed by the next one. */
        remove_save_folder(old, d->path, d->replaced, NULL);
        fsync(d->parent_fd);
    }
    free(fresh);
    free(old);
    ad_free(d);
    return rc;
}
