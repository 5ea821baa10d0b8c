/* base/limits.h — how much memory one piece of input may make bertpipe ask for.
 *
 * Length fields in checkpoints (a safetensors header length, a pickle string or list, a zip
 * entry's size, a TF block handle) and the lines, records and documents of data sets decide
 * the size of allocations. A corrupt or hostile file must get a one-line error naming the
 * limit and the place, never a multi-gigabyte malloc or an allocation that grows without
 * end. Each limit is far above what real checkpoints and data sets need (the numbers they
 * need are beside each), so only broken input meets them. They are compile-time constants:
 * raise one here, with its reason, if a real file ever needs more.
 *
 * docs/reliability.md lists the limits and what enforces them.
 *
 * Must never: print or exit.
 */
#ifndef BP_LIMITS_H
#define BP_LIMITS_H
#include <stdint.h>

#include "base/log.h"

#define BP_MIB (UINT64_C(1) << 20)

/* One line of a text file; one CSV/TSV record (quoted fields may span lines); one PTB tree.
 * Real ones: SST trees < 2 KB, an IMDB review < 14 KB, SQuAD contexts < 30 KB. */
#define BP_LIMIT_LINE_BYTES (64 * BP_MIB)
/* Fields of one CSV/TSV record (GLUE files have 2 to 4). */
#define BP_LIMIT_CSV_FIELDS (UINT64_C(1) << 20)
/* One document read whole: an IMDB review, one SQuAD article (the largest is ~ 600 KB). */
#define BP_LIMIT_DOCUMENT_BYTES (64 * BP_MIB)
/* A small JSON file read whole: config.json, tokenizer_config.json (a few KB). */
#define BP_LIMIT_JSON_FILE_BYTES (64 * BP_MIB)
/* vocab.txt (bert-base: 230 KB; multilingual: 1 MB). */
#define BP_LIMIT_VOCAB_BYTES (64 * BP_MIB)
/* An index in sst-raw's tables (dictionary.txt has 239,232 phrases). */
#define BP_LIMIT_TABLE_INDEX (UINT64_C(1) << 24)
/* A torch.save data.pkl (bert-large: ~ 60 KB) and the values its pickle VM may build
 * (bert-large: ~ 10,000). */
#define BP_LIMIT_PICKLE_BYTES (256 * BP_MIB)
#define BP_LIMIT_PICKLE_VALUES (UINT64_C(1) << 20)
/* One tensor or storage held in memory (bert-large's largest, the word embeddings: 125 MB). */
#define BP_LIMIT_TENSOR_BYTES (UINT64_C(4) << 30)

/* Parameters a config.json may describe (bert-large: 335 million; this is 2.1 billion): a
 * config with absurd sizes must not make the model ask for terabytes. */
#define BP_LIMIT_MODEL_PARAMETERS (UINT64_C(1) << 31)

/* Class labels of a config.json (GLUE tasks have 2 or 3). Every label is a name in id2label and
 * label2id when the config is written back: at 100,000 that file is 5.4 MB, written and read back in
 * 1 s by the ASan fuzz build; at the old 1,000,000 a 21-byte config ({"num_labels":771919})
 * took over 10 s, libFuzzer's timeout, so make test's fuzz run failed on it. */
#define BP_LIMIT_LABELS UINT64_C(100000)

/* 0 when n <= limit. Otherwise -1 with err = "WHAT is N UNIT, over the limit of LIMIT UNIT
 * (WHERE)"; UNIT is e.g. "bytes" or "fields" ("" for a plain number). where may be NULL. */
int bp_check_limit(uint64_t n, uint64_t limit, const char *unit, const char *what, const char *where,
                   bp_err *err);

/* 0 when the file at path is at most limit bytes (or cannot be stat'ed: its opener then
 * reports that); else -1 with err = "WHAT is N bytes, over the limit of LIMIT bytes (PATH)".
 * For files read whole. */
int bp_check_file_size(const char *path, uint64_t limit, const char *what, bp_err *err);

#endif
