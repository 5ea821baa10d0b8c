/* base/atomic_file.h — write a file so that readers see the old one or the whole new one, never half.
 *
 * Checkpoints are written while other processes (eval, a user's Python) may read them, and a
 * trainer can be killed mid-save: so we write PATH.tmp.XXXXXX in the same directory, fsync,
 * then rename over PATH.
 * Must never: let a reader see a half-written PATH, print, or exit.
 */
#ifndef BP_ATOMIC_FILE_H
#define BP_ATOMIC_FILE_H
#include <stdio.h>

#include "base/log.h"

typedef struct af_file {
    FILE *fp;        /* write here between af_open and af_commit/af_abort */
    char *tmp_path;  /* private */
    char *path;      /* private: the final name */
} af_file;

/* Create a temporary file next to PATH and open it for writing. Returns 0, or -1 with err
 * naming PATH (e.g. its directory does not exist). */
int af_open(af_file *file, const char *path, bp_err *err);

/* Flush, fsync, close and rename the temporary over PATH; frees the af_file's strings.
 * Returns 0, or -1 with err (the temporary is removed and PATH is left untouched). */
int af_commit(af_file *file, bp_err *err);

/* Close and remove the temporary, leaving PATH untouched; frees the strings. Can't fail. */
void af_abort(af_file *file);

/* Copy FROM to TO atomically (as above). Returns 0, or -1 with err naming the file at fault. */
int af_copy_file(const char *from, const char *to, bp_err *err);

/* Create directory DIR (mode 0755; an existing one is fine). Returns 0, or -1 with err. */
int af_make_dir(const char *dir, bp_err *err);

/* 1 when PATH is a directory, else 0. Can't fail. */
int af_is_dir(const char *path);

#endif
