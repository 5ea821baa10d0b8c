/* ckpt/safetensors.h — read and write Hugging Face `model.safetensors` files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "NAME": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the tensor bytes (little-endian, C order), offsets relative to the byte after the
 * header. The reader accepts exactly what the safetensors library accepts (offsets
 * contiguous from 0, the last one ending at the end of the file); the writer lays files
 * out as that library does, so transformers loads them unchanged.
 *
 * Must never: print, exit, or know the model: it deals in bp_named_tensor lists only.
 */
#ifndef BP_SAFETENSORS_H
#define BP_SAFETENSORS_H
#include <stddef.h>

#include "base/log.h"
#include "base/tensor.h"

/* An open safetensors file. Fields are read-only for callers. */
typedef struct st_file {
    char *path;                       /* as given to st_open */
    bp_named_tensor *tensors;         /* in file (offset) order; data points into the map */
    size_t n_tensors;
    char **metadata_keys;             /* "__metadata__" entries, in header order */
    char **metadata_values;
    size_t n_metadata;
    void *map;                        /* private: the read-only mapping of the whole file */
    size_t map_size;
} st_file;

/* Map PATH read-only and validate its header: dtypes, shapes, offsets in order, contiguous,
 * inside the file and equal to shape x dtype size. Tensor data pointers point into the map
 * and are aligned to their element size when the writer followed the library's layout;
 * readers of foreign files should still memcpy (the loader does).
 * Returns a new st_file (free with st_close) or NULL with err = one line naming the file
 * and, where one is at fault, the tensor. */
st_file *st_open(const char *path, bp_err *err);

/* Unmap and free everything; NULL is fine. Tensor pointers from the file die with it. */
void st_close(st_file *file);

/* The tensor called NAME, or NULL. Linear scan: files hold hundreds of tensors, not millions. */
const bp_named_tensor *st_find(const st_file *file, const char *name);

/* The __metadata__ value for KEY, or NULL when absent. Owned by the file. */
const char *st_metadata(const st_file *file, const char *key);
/* The __metadata__ value for KEY as an unsigned decimal. Returns 0, or -1 with err naming the
 * key and the file when it is absent or not a number. */
int st_metadata_u64(const st_file *file, const char *key, uint64_t *out, bp_err *err);

/* Write N tensors (any dtypes, contiguous, nbytes == numel x dtype size, unique non-empty
 * names) and N_META string pairs to PATH, laid out as the Python safetensors library lays
 * them out: tensors sorted by descending dtype alignment then name, offsets contiguous from
 * 0, compact JSON header padded with spaces to a multiple of 8. When the metadata has no
 * "format" key, "format": "pt" is added, because transformers refuses files without it.
 * Writes to a temporary file in the same directory and renames it over PATH, so readers
 * never see half a file. Returns 0, or -1 with err naming the file (and tensor). */
int st_write(const char *path, const bp_named_tensor *tensors, size_t n,
             const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
             bp_err *err);

/* The safetensors dtype name ("F32", "BF16", ...) of T. */
const char *st_dtype_name(bp_dtype t);

#endif
