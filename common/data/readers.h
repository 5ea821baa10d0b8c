/* data/readers.h — the per-format dataset readers, one file each (csv.c, imdb.c, squad.c, sst.c),
 * called by ds_read in datasets.c. Not public API: stages call ds_read.
 * Must never: be included outside common/data/; a reader must never print, exit, or know
 * about frames.
 */
#ifndef BP_DATA_READERS_H
#define BP_DATA_READERS_H
#include "data/sink.h"

/* The readers, one per format; each returns 0 or -1 with err filled. */
int ds_read_sst_trees(const char *path, ds_sink *sink, bp_err *err);
int ds_read_sst_raw(const char *path, ds_sink *sink, bp_err *err);
int ds_read_csv(const char *path, ds_sink *sink, int sst2_defaults, bp_err *err);
int ds_read_imdb(const char *path, ds_sink *sink, bp_err *err);
int ds_read_squad(const char *path, ds_sink *sink, bp_err *err);

#endif
