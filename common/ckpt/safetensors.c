/* ckpt/safetensors.c — model.safetensors reader (mmap + header validation) and writer
 * (see safetensors.h for the format and the contract).
 * Must never: trust an offset or a length from the file before checking it against the file
 * size, know the model, print, or exit. */
#include "ckpt/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_file.h"

/* The safetensors library refuses headers above 100 MB; so do we (a corrupt length field
 * must not make us parse gigabytes). */
#define ST_MAX_HEADER 100000000ull

/* Names and alignment rank of the dtypes bertpipe can hold. The rank is the position in the
 * safetensors library's dtype enum, which orders by alignment: the writer sorts by it
 * (descending) so every tensor starts aligned to its element size. */
static const struct { const char *name; bp_dtype dtype; int rank; } st_dtypes[] = {
    {"BOOL", BP_BOOL, 0}, {"U8", BP_U8, 1},   {"I8", BP_I8, 2},     {"I16", BP_I16, 5},
    {"F16", BP_F16, 7},   {"BF16", BP_BF16, 8}, {"I32", BP_I32, 9}, {"F32", BP_F32, 11},
    {"F64", BP_F64, 12},  {"I64", BP_I64, 13},
};
#define ST_N_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

/* Known to the format but not representable here: refused by name rather than as "unknown". */
static const char *const st_unsupported[] = {"U16", "U32", "U64", "F8_E5M2", "F8_E4M3"};

const char *st_dtype_name(bp_dtype t) {
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dtype == t) return st_dtypes[i].name;
    return "?";
}

static int st_dtype_rank(bp_dtype t) {
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dtype == t) return st_dtypes[i].rank;
    return -1;
}

/* ---- reader ------------------------------------------------------------------------- */

void st_close(st_file *file) {
    if (!file) return;
    if (file->map && file->map != MAP_FAILED) munmap(file->map, file->map_size);
    for (size_t i = 0; i < file->n_metadata; i++) {
        if (file->metadata_keys) free(file->metadata_keys[i]);
        if (file->metadata_values) free(file->metadata_values[i]);
    }
    free(file->metadata_keys);
    free(file->metadata_values);
    free(file->tensors);
    free(file->path);
    free(file);
}

/* Only used while sorting by offsets: the begin offset lives beside the tensor. */
typedef struct st_entry {
    bp_named_tensor tensor;
    uint64_t begin, end;
} st_entry;

static int st_entry_by_offset(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int st_read_metadata(st_file *file, json_t *meta, bp_err *err) {
    if (!json_is_object(meta))
        return bp_err_set(err, "safetensors __metadata__ is not an object (%s)", file->path);
    size_t n = json_object_size(meta);
    file->metadata_keys = calloc(n ? n : 1, sizeof(char *));
    file->metadata_values = calloc(n ? n : 1, sizeof(char *));
    if (!file->metadata_keys || !file->metadata_values)
        return bp_err_set(err, "out of memory (%s)", file->path);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value))
            return bp_err_set(err, "safetensors __metadata__ value for \"%s\" is not a string (%s)",
                              key, file->path);
        size_t i = file->n_metadata;
        file->metadata_keys[i] = strdup(key);
        file->metadata_values[i] = strdup(json_string_value(value));
        file->n_metadata++;
        if (!file->metadata_keys[i] || !file->metadata_values[i])
            return bp_err_set(err, "out of memory (%s)", file->path);
    }
    return 0;
}

/* Fill ENTRY from one header value; everything but the offsets' agreement with the file. */
static int st_parse_entry(const st_file *file, const char *name, json_t *info, st_entry *entry,
                          bp_err *err) {
    memset(entry, 0, sizeof *entry);
    if (strlen(name) == 0 || strlen(name) >= sizeof entry->tensor.name)
        return bp_err_set(err, "safetensors tensor name is empty or longer than %zu bytes (%s, tensor %.60s)",
                          sizeof entry->tensor.name - 1, file->path, name);
    strcpy(entry->tensor.name, name);
    if (!json_is_object(info))
        return bp_err_set(err, "safetensors header entry is not an object (%s, tensor %s)", file->path, name);
    json_t *dtype = json_object_get(info, "dtype"), *shape = json_object_get(info, "shape"),
           *offsets = json_object_get(info, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets) ||
        json_array_size(offsets) != 2)
        return bp_err_set(err, "safetensors header entry needs dtype, shape and data_offsets [begin, end] (%s, tensor %s)",
                          file->path, name);
    const char *dtype_name = json_string_value(dtype);
    size_t i;
    for (i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, dtype_name) == 0) break;
    if (i == ST_N_DTYPES) {
        for (size_t u = 0; u < sizeof st_unsupported / sizeof st_unsupported[0]; u++)
            if (strcmp(st_unsupported[u], dtype_name) == 0)
                return bp_err_set(err, "unsupported dtype \"%s\" (%s, tensor %s)", dtype_name, file->path, name);
        return bp_err_set(err, "unknown dtype \"%s\" (%s, tensor %s)", dtype_name, file->path, name);
    }
    entry->tensor.dtype = st_dtypes[i].dtype;
    if (json_array_size(shape) > BP_MAX_DIMS)
        return bp_err_set(err, "tensor has %zu dimensions, at most %d supported (%s, tensor %s)",
                          json_array_size(shape), BP_MAX_DIMS, file->path, name);
    entry->tensor.ndim = (int)json_array_size(shape);
    uint64_t nbytes = bp_dtype_size(entry->tensor.dtype);
    for (int d = 0; d < entry->tensor.ndim; d++) {
        json_t *dim = json_array_get(shape, (size_t)d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return bp_err_set(err, "shape entry %d is not a non-negative integer (%s, tensor %s)", d, file->path, name);
        entry->tensor.shape[d] = json_integer_value(dim);
        if (__builtin_mul_overflow(nbytes, (uint64_t)entry->tensor.shape[d], &nbytes))
            return bp_err_set(err, "shape overflows (%s, tensor %s)", file->path, name);
    }
    json_t *begin = json_array_get(offsets, 0), *end = json_array_get(offsets, 1);
    if (!json_is_integer(begin) || !json_is_integer(end) || json_integer_value(begin) < 0 ||
        json_integer_value(end) < json_integer_value(begin))
        return bp_err_set(err, "data_offsets are not integers 0 <= begin <= end (%s, tensor %s)", file->path, name);
    entry->begin = (uint64_t)json_integer_value(begin);
    entry->end = (uint64_t)json_integer_value(end);
    if (entry->end - entry->begin != nbytes)
        return bp_err_set(err, "data_offsets span %llu bytes but shape x %s needs %llu (%s, tensor %s)",
                          (unsigned long long)(entry->end - entry->begin), dtype_name,
                          (unsigned long long)nbytes, file->path, name);
    entry->tensor.nbytes = (size_t)nbytes;
    return 0;
}

static int st_parse_header(st_file *file, const char *header, size_t header_len, bp_err *err) {
    if (header_len == 0 || header[0] != '{')
        return bp_err_set(err, "safetensors header does not start with '{' (%s)", file->path);
    json_error_t jerr;
    json_t *root = json_loadb(header, header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bp_err_set(err, "safetensors header is not valid JSON: %s at byte %d (%s)", jerr.text,
                          jerr.position, file->path);
    st_entry *entries = NULL;
    int rc = -1;
    if (!json_is_object(root)) {
        bp_err_set(err, "safetensors header is not a JSON object (%s)", file->path);
        goto out;
    }
    size_t n = json_object_size(root);
    entries = calloc(n ? n : 1, sizeof *entries);
    file->tensors = calloc(n ? n : 1, sizeof *file->tensors);
    if (!entries || !file->tensors) {
        bp_err_set(err, "out of memory (%s)", file->path);
        goto out;
    }
    const char *key;
    json_t *value;
    size_t count = 0;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            if (st_read_metadata(file, value, err) != 0) goto out;
            continue;
        }
        if (st_parse_entry(file, key, value, &entries[count], err) != 0) goto out;
        count++;
    }
    /* Files from other writers may list tensors in any order; the data must still tile
     * the buffer exactly, as the safetensors library checks. */
    qsort(entries, count, sizeof *entries, st_entry_by_offset);
    uint64_t data_start = 8 + (uint64_t)header_len, expected = 0;
    for (size_t i = 0; i < count; i++) {
        if (entries[i].begin != expected) {
            bp_err_set(err, "data_offsets begin at %llu, expected %llu: tensors overlap or leave a gap (%s, tensor %s)",
                       (unsigned long long)entries[i].begin, (unsigned long long)expected, file->path,
                       entries[i].tensor.name);
            goto out;
        }
        if (entries[i].end > file->map_size - data_start) {
            bp_err_set(err, "data_offsets end at %llu beyond the %llu data bytes in the file: truncated file? (%s, tensor %s)",
                       (unsigned long long)entries[i].end,
                       (unsigned long long)(file->map_size - data_start), file->path, entries[i].tensor.name);
            goto out;
        }
        expected = entries[i].end;
        file->tensors[i] = entries[i].tensor;
        file->tensors[i].data = (char *)file->map + data_start + entries[i].begin;
    }
    file->n_tensors = count;
    if (data_start + expected != file->map_size) {
        bp_err_set(err, "file has %llu bytes but header and tensors account for %llu (%s)",
                   (unsigned long long)file->map_size, (unsigned long long)(data_start + expected), file->path);
        goto out;
    }
    rc = 0;
out:
    free(entries);
    json_decref(root);
    return rc;
}

st_file *st_open(const char *path, bp_err *err) {
    st_file *file = calloc(1, sizeof *file);
    if (!file || !(file->path = strdup(path))) {
        free(file);
        bp_err_set(err, "out of memory (%s)", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        bp_err_set(err, "cannot open: %s (%s)", strerror(errno), path);
        if (fd >= 0) close(fd);
        st_close(file);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        bp_err_set(err, "not a regular file (%s)", path);
        st_close(file);
        return NULL;
    }
    if (st.st_size < 8) {
        close(fd);
        bp_err_set(err, "truncated safetensors file: %lld bytes, not even the 8-byte header length (%s)",
                   (long long)st.st_size, path);
        st_close(file);
        return NULL;
    }
    file->map_size = (size_t)st.st_size;
    file->map = mmap(NULL, file->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (file->map == MAP_FAILED) {
        file->map = NULL;
        bp_err_set(err, "cannot mmap: %s (%s)", strerror(map_errno), path);
        st_close(file);
        return NULL;
    }
    const unsigned char *bytes = file->map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
    if (header_len > ST_MAX_HEADER) {
        bp_err_set(err, "safetensors header length %llu is over the 100 MB limit: not a safetensors file? (%s)",
                   (unsigned long long)header_len, path);
        st_close(file);
        return NULL;
    }
    if (header_len > file->map_size - 8) {
        bp_err_set(err, "truncated safetensors file: header needs %llu bytes, file has %zu after the length (%s)",
                   (unsigned long long)header_len, file->map_size - 8, path);
        st_close(file);
        return NULL;
    }
    if (st_parse_header(file, (const char *)bytes + 8, (size_t)header_len, err) != 0) {
        st_close(file);
        return NULL;
    }
    return file;
}

const bp_named_tensor *st_find(const st_file *file, const char *name) {
    for (size_t i = 0; i < file->n_tensors; i++)
        if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
    return NULL;
}

const char *st_metadata(const st_file *file, const char *key) {
    for (size_t i = 0; i < file->n_metadata; i++)
        if (strcmp(file->metadata_keys[i], key) == 0) return file->metadata_values[i];
    return NULL;
}

int st_metadata_u64(const st_file *file, const char *key, uint64_t *out, bp_err *err) {
    const char *v = st_metadata(file, key);
    char *end;
    if (!v || !*v) return bp_err_set(err, "optimizer state has no '%s' (%s)", key, file->path);
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end) return bp_err_set(err, "optimizer state '%s' is not a number: '%s' (%s)", key, v, file->path);
    *out = x;
    return 0;
}

/* ---- writer ------------------------------------------------------------------------- */

static int st_tensor_layout_order(const void *a, const void *b) {
    const bp_named_tensor *x = *(const bp_named_tensor *const *)a, *y = *(const bp_named_tensor *const *)b;
    int rx = st_dtype_rank(x->dtype), ry = st_dtype_rank(y->dtype);
    if (rx != ry) return ry - rx; /* descending alignment */
    return strcmp(x->name, y->name);
}

static int st_index_by_key(const void *a, const void *b, void *keys) {
    const char *const *k = keys;
    return strcmp(k[*(const size_t *)a], k[*(const size_t *)b]);
}

/* The header JSON: __metadata__ (keys sorted, "format" added when missing) then tensors in
 * layout order. Returns a malloc'd string padded with spaces to a multiple of 8, or NULL. */
static char *st_build_header(const char *path, const bp_named_tensor *const *order, size_t n,
                             const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                             size_t *header_len, bp_err *err) {
    json_t *root = json_object(), *meta = json_object();
    size_t *meta_order = malloc((n_meta ? n_meta : 1) * sizeof *meta_order);
    char *text = NULL;
    if (!root || !meta || !meta_order) {
        bp_err_set(err, "out of memory (%s)", path);
        goto out;
    }
    int has_format = 0;
    for (size_t i = 0; i < n_meta; i++) {
        meta_order[i] = i;
        if (strcmp(meta_keys[i], "format") == 0) has_format = 1;
    }
    qsort_r(meta_order, n_meta, sizeof *meta_order, st_index_by_key, (void *)meta_keys);
    int failed = 0;
    for (size_t i = 0; i < n_meta; i++) {
        const char *key = meta_keys[meta_order[i]];
        if (!has_format && strcmp(key, "format") > 0) {
            failed |= json_object_set_new(meta, "format", json_string("pt"));
            has_format = 1;
        }
        failed |= json_object_set_new(meta, key, json_string(meta_values[meta_order[i]]));
    }
    if (!has_format) failed |= json_object_set_new(meta, "format", json_string("pt"));
    failed |= json_object_set(root, "__metadata__", meta);
    uint64_t offset = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        json_t *info = json_object(), *shape = json_array();
        failed |= !info || !shape;
        for (int d = 0; d < order[i]->ndim && !failed; d++)
            failed |= json_array_append_new(shape, json_integer(order[i]->shape[d]));
        failed |= json_object_set_new(info, "dtype", json_string(st_dtype_name(order[i]->dtype)));
        failed |= json_object_set_new(info, "shape", shape);
        failed |= json_object_set_new(info, "data_offsets",
                                      json_pack("[II]", (json_int_t)offset,
                                                (json_int_t)(offset + order[i]->nbytes)));
        failed |= json_object_set_new(root, order[i]->name, info);
        offset += order[i]->nbytes;
    }
    if (failed) {
        bp_err_set(err, "cannot build safetensors header: out of memory or invalid UTF-8 in a name (%s)", path);
        goto out;
    }
    char *json = json_dumps(root, JSON_COMPACT);
    if (!json) {
        bp_err_set(err, "cannot serialise safetensors header (%s)", path);
        goto out;
    }
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    text = realloc(json, padded + 1);
    if (!text) {
        free(json);
        bp_err_set(err, "out of memory (%s)", path);
        goto out;
    }
    memset(text + len, ' ', padded - len);
    text[padded] = '\0';
    *header_len = padded;
out:
    free(meta_order);
    json_decref(meta);
    json_decref(root);
    return text;
}

/* Refuse what would make a file the library (or our reader) rejects. */
static int st_check_tensors(const char *path, const bp_named_tensor *const *order, size_t n, bp_err *err) {
    for (size_t i = 0; i < n; i++) {
        const bp_named_tensor *t = order[i];
        if (t->name[0] == '\0' || strcmp(t->name, "__metadata__") == 0)
            return bp_err_set(err, "invalid tensor name \"%s\" (%s)", t->name, path);
        if (st_dtype_rank(t->dtype) < 0)
            return bp_err_set(err, "dtype %d has no safetensors name (%s, tensor %s)", (int)t->dtype, path, t->name);
        if (t->ndim < 0 || t->ndim > BP_MAX_DIMS)
            return bp_err_set(err, "bad ndim %d (%s, tensor %s)", t->ndim, path, t->name);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0) return bp_err_set(err, "negative dimension (%s, tensor %s)", path, t->name);
        uint64_t want = (uint64_t)bp_numel(t->shape, t->ndim) * bp_dtype_size(t->dtype);
        if (want != t->nbytes)
            return bp_err_set(err, "tensor has %zu bytes but shape x %s needs %llu (%s, tensor %s)", t->nbytes,
                              st_dtype_name(t->dtype), (unsigned long long)want, path, t->name);
        if (t->nbytes && !t->data) return bp_err_set(err, "tensor has no data (%s, tensor %s)", path, t->name);
        if (i > 0 && strcmp(order[i - 1]->name, t->name) == 0)
            return bp_err_set(err, "duplicate tensor name (%s, tensor %s)", path, t->name);
    }
    return 0;
}

static int st_name_order(const void *a, const void *b) {
    return strcmp((*(const bp_named_tensor *const *)a)->name, (*(const bp_named_tensor *const *)b)->name);
}

int st_write(const char *path, const bp_named_tensor *tensors, size_t n, const char *const *meta_keys,
             const char *const *meta_values, size_t n_meta, bp_err *err) {
    const bp_named_tensor **order = malloc((n ? n : 1) * sizeof *order);
    char *header = NULL;
    if (!order) return bp_err_set(err, "out of memory (%s)", path);
    for (size_t i = 0; i < n; i++) order[i] = &tensors[i];
    /* Duplicates are found next to each other in name order; then lay out by alignment. */
    qsort(order, n, sizeof *order, st_name_order);
    int rc = -1;
    if (st_check_tensors(path, order, n, err) != 0) goto out;
    for (size_t i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_values[i]) {
            bp_err_set(err, "metadata entry %zu is NULL (%s)", i, path);
            goto out;
        }
    qsort(order, n, sizeof *order, st_tensor_layout_order);
    size_t header_len = 0;
    header = st_build_header(path, order, n, meta_keys, meta_values, n_meta, &header_len, err);
    if (!header) goto out;
    af_file out_file;
    if (af_open(&out_file, path, err) != 0) goto out;
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    int failed = fwrite(len_bytes, 1, 8, out_file.fp) != 8 ||
                 fwrite(header, 1, header_len, out_file.fp) != header_len;
    for (size_t i = 0; i < n && !failed; i++)
        if (order[i]->nbytes) failed = fwrite(order[i]->data, 1, order[i]->nbytes, out_file.fp) != order[i]->nbytes;
    if (failed) {
        bp_err_set(err, "cannot write: %s (%s)", strerror(errno), path);
        af_abort(&out_file);
        goto out;
    }
    rc = af_commit(&out_file, err);
out:
    free(header);
    free(order);
    return rc;
}
