/* base/atomic_dir.h — replace a whole folder so that readers see the old one or the whole new one.
 *
 * A checkpoint is several files (weights, config, vocabulary, optimizer state) that are only
 * right together: a save that stops half-way (full disk, killed trainer) must never leave new
 * weights beside old optimizer state. So the new folder is written beside the old one, as
 * DIR.tmp-PID, then swapped in by renames:
 *
 *   write DIR.tmp-PID, fsync its files and itself   (DIR untouched)
 *   rename DIR.tmp-PID -> DIR.new                   (DIR.new only ever names a complete save)
 *   rename DIR -> DIR.old, rename DIR.new -> DIR    (rename(2) cannot replace a non-empty folder)
 *   remove DIR.old
 *
 * with the parent folder fsync'ed after each rename. At every moment DIR is the whole old or
 * the whole new folder, except in the instant between the two middle renames, when DIR is
 * missing and DIR.new is complete: ad_recover finishes such a swap, and every loader calls it
 * first. Files of the old folder that the save does not write (a README, tokenizer_config.json)
 * are carried into the new one as hard links; a sub-folder is refused, since it could not be
 * carried over atomically. Nothing outside the save's own names is ever deleted: removing
 * DIR.old unlinks only the names the save replaces and the links it made.
 *
 * Errors are one line naming the folder and the file at fault.
 *
 * Must never: print or exit.
 */
#ifndef BP_ATOMIC_DIR_H
#define BP_ATOMIC_DIR_H
#include "base/log.h"

typedef struct ad_dir {
    char *path;      /* DIR, as resolved (symbolic links followed): what the swap replaces */
    char *tmp_path;  /* DIR.tmp-PID: write the new files here, between ad_begin and ad_commit */
    const char *const *replaced; /* private: the names the save writes, NULL-terminated */
    char *parent;    /* private: DIR's parent folder */
    int parent_fd;   /* private: open on the parent, locked (flock) from begin to commit/abort */
} ad_dir;

/* Start replacing folder PATH (it need not exist; its parent must). REPLACED lists the file
 * names the new folder gets from the caller (NULL-terminated, kept by pointer until commit or
 * abort): the old folder's files of those names are not carried over, even when the caller
 * does not write them. Finishes an interrupted swap first, removes what an earlier save left,
 * and refuses a PATH holding a sub-folder, a PATH that is the current directory or holds it,
 * and a PATH of "/". Returns 0 with d->tmp_path created (empty), or -1 with err. */
int ad_begin(ad_dir *d, const char *path, const char *const *replaced, bp_err *err);

/* Carry the old folder's other files over, fsync everything, swap, remove the old folder.
 * Frees d's strings. Returns 0, or -1 with err; on failure before the swap the old folder is
 * untouched and the temporary one removed. */
int ad_commit(ad_dir *d, bp_err *err);

/* Remove the temporary folder (the names in REPLACED that were written there) and free d's
 * strings; PATH is untouched. Can't fail. */
void ad_abort(ad_dir *d);

/* When PATH is missing but PATH.new (a complete save) or PATH.old is there, a swap was
 * interrupted: move the right one into place. Returns 0 when PATH is usable or there is
 * nothing to recover (a missing PATH stays missing), -1 with err when moving failed. */
int ad_recover(const char *path, bp_err *err);

#endif
