/* ckpt/tfckpt.c — TensorFlow tensor-bundle reader: LevelDB table index, protobuf entries, raw
 * data file (see tfckpt.h). Both files are mapped read-only; only transposed kernels are
 * copied.
 * Must never: use a length read from the files before checking it, know the model, print,
 * or exit. */
#include "ckpt/tfckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TF_TABLE_MAGIC 0xdb4775248b80fb57ull
#define TF_FOOTER_LEN 48

typedef struct tf_map {
    char *path;
    const uint8_t *bytes;
    size_t len;
} tf_map;

struct tf_owned {
    tf_map index, data;
    void **copies;          /* transposed kernels */
    size_t n_copies;
    char *key;              /* the table iterator's current key */
    size_t key_cap;
    int index_only;         /* list the variables, leave the data file alone */
    size_t capacity;        /* entries tensors[] and copies[] hold */
    size_t max_entries;     /* what the index's size allows: each entry costs >= 3 bytes */
    char *last_key;         /* the previous entry's key: keys must strictly increase */
    size_t last_key_len, last_key_cap;
    int seen_entry;
};

/* ---- CRC32C ------------------------------------------------------------------------- */

unsigned tf_crc32c(const void *bytes, size_t n) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        table[i] = c;
    }
    const uint8_t *p = bytes;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

/* Stored CRCs are rotated and offset so that a CRC of data containing CRCs stays strong. */
unsigned tf_crc32c_mask(unsigned crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- files -------------------------------------------------------------------------- */

static int tf_map_file(tf_map *map, const char *path, bp_err *err) {
    if (!(map->path = strdup(path))) return bp_err_set(err, "out of memory (%s)", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (fd >= 0) close(fd);
        return bp_err_set(err, "cannot open: %s (%s)", fd >= 0 ? "not a regular file" : strerror(e), path);
    }
    map->len = (size_t)st.st_size;
    if (map->len == 0) {
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, map->len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return bp_err_set(err, "cannot mmap: %s (%s)", strerror(e), path);
    map->bytes = p;
    return 0;
}

static void tf_unmap(tf_map *map) {
    if (map->bytes) munmap((void *)map->bytes, map->len);
    free(map->path);
}

void tf_close(tf_checkpoint *ckpt) {
    if (!ckpt) return;
    if (ckpt->owned) {
        tf_unmap(&ckpt->owned->index);
        tf_unmap(&ckpt->owned->data);
        for (size_t i = 0; i < ckpt->owned->n_copies; i++) free(ckpt->owned->copies[i]);
        free(ckpt->owned->copies);
        free(ckpt->owned->key);
        free(ckpt->owned->last_key);
        free(ckpt->owned);
    }
    free(ckpt->tensors);
    free(ckpt->prefix);
    free(ckpt);
}

/* ---- bytes, varints, protobuf ------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p, *end;
} cursor;

static int get_varint(cursor *c, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && c->p < c->end; shift += 7) {
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static uint32_t get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One protobuf field: its number, and either its varint/fixed value or its bytes. */
typedef struct pb_field {
    uint32_t number, wire;
    uint64_t value;
    cursor bytes;
} pb_field;

static int pb_next(cursor *c, pb_field *f) {
    uint64_t tag;
    if (get_varint(c, &tag) != 0) return -1;
    f->number = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    switch (f->wire) {
    case 0: return get_varint(c, &f->value);
    case 1:
        if (c->end - c->p < 8) return -1;
        f->value = (uint64_t)get_le32(c->p) | (uint64_t)get_le32(c->p + 4) << 32;
        c->p += 8;
        return 0;
    case 2:
        if (get_varint(c, &f->value) != 0 || f->value > (uint64_t)(c->end - c->p)) return -1;
        f->bytes.p = c->p;
        f->bytes.end = c->p + f->value;
        c->p += f->value;
        return 0;
    case 5:
        if (c->end - c->p < 4) return -1;
        f->value = get_le32(c->p);
        c->p += 4;
        return 0;
    default: return -1;
    }
}

/* BundleEntryProto, the fields bertpipe needs. */
typedef struct tf_entry {
    int dtype;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
    uint64_t shard_id, offset, size;
    uint32_t crc32c;
    int has_crc, has_slices, unknown_rank;
} tf_entry;

static int tf_parse_shape(cursor c, tf_entry *e) {
    pb_field f;
    while (c.p < c.end) {
        if (pb_next(&c, &f) != 0) return -1;
        if (f.number == 3 && f.wire == 0) e->unknown_rank = f.value != 0;
        if (f.number != 2 || f.wire != 2) continue;
        if (e->ndim == BP_MAX_DIMS) return -1;
        int64_t size = 0;
        pb_field d;
        while (f.bytes.p < f.bytes.end) {
            if (pb_next(&f.bytes, &d) != 0) return -1;
            if (d.number == 1 && d.wire == 0) size = (int64_t)d.value;
        }
        if (size < 0) return -1;
        e->shape[e->ndim++] = size;
    }
    return 0;
}

static int tf_parse_entry(cursor c, tf_entry *e) {
    memset(e, 0, sizeof *e);
    pb_field f;
    while (c.p < c.end) {
        if (pb_next(&c, &f) != 0) return -1;
        switch (f.number) {
        case 1: e->dtype = (int)f.value; break;
        case 2: if (f.wire != 2 || tf_parse_shape(f.bytes, e) != 0) return -1; break;
        case 3: e->shard_id = f.value; break;
        case 4: e->offset = f.value; break;
        case 5: e->size = f.value; break;
        case 6: e->crc32c = (uint32_t)f.value; e->has_crc = 1; break;
        case 7: e->has_slices = 1; break;
        default: break;
        }
    }
    return 0;
}

/* ---- TF names to Hugging Face names ------------------------------------------------- */

int tf_hf_name(const char *tf_name, char *out, size_t cap) {
    static const char *const skipped[] = {"adam_v", "adam_m", "AdamWeightDecayOptimizer",
                                          "AdamWeightDecayOptimizer_1", "global_step"};
    static const struct { const char *tf, *hf; } renamed[] = {
        {"kernel", "weight"}, {"gamma", "weight"}, {"output_weights", "weight"},
        {"beta", "bias"}, {"output_bias", "bias"}, {"squad", "classifier"},
    };
    size_t used = 0;
    int kernel = 0;
    const char *part = tf_name, *last = tf_name;
    while (*part) {
        const char *slash = strchr(part, '/');
        size_t len = slash ? (size_t)(slash - part) : strlen(part);
        char piece[160];
        if (len == 0 || len >= sizeof piece) return -1;
        memcpy(piece, part, len);
        piece[len] = '\0';
        for (size_t i = 0; i < sizeof skipped / sizeof skipped[0]; i++)
            if (strcmp(piece, skipped[i]) == 0) return -1;
        const char *hf = piece;
        for (size_t i = 0; i < sizeof renamed / sizeof renamed[0]; i++)
            if (strcmp(piece, renamed[i].tf) == 0) hf = renamed[i].hf;
        kernel = strcmp(piece, "kernel") == 0;
        last = part;
        /* "layer_3" is element 3 of the module list "layer". */
        char *underscore = strrchr(piece, '_');
        int indexed = underscore && underscore > piece && underscore[1] && strspn(underscore + 1, "0123456789") == strlen(underscore + 1);
        for (const char *ch = piece; indexed && ch < underscore; ch++)
            indexed = (*ch >= 'a' && *ch <= 'z') || (*ch >= 'A' && *ch <= 'Z');
        if (indexed) *underscore = '.';
        int n = snprintf(out + used, cap - used, "%s%s", used ? "." : "", hf);
        if (n < 0 || (size_t)n >= cap - used) return -1;
        used += (size_t)n;
        part = slash ? slash + 1 : part + len;
    }
    size_t last_len = strlen(last);
    if (last_len >= 11 && strcmp(last + last_len - 11, "_embeddings") == 0) {
        int n = snprintf(out + used, cap - used, ".weight");
        if (n < 0 || (size_t)n >= cap - used) return -1;
    }
    return kernel;
}

/* ---- the table ---------------------------------------------------------------------- */

typedef int (*entry_fn)(tf_checkpoint *ckpt, const char *key, size_t key_len, cursor value, bp_err *err);

/* Check a block handle and its trailer (compression type, masked CRC32C); give its contents. */
static int tf_block(const tf_map *index, uint64_t offset, uint64_t size, cursor *out, bp_err *err) {
    if (offset > index->len || size > index->len - offset || index->len - offset - size < 5)
        return bp_err_set(err, "table block [%llu, +%llu) outside the file: truncated index (%s)",
                          (unsigned long long)offset, (unsigned long long)size, index->path);
    const uint8_t *block = index->bytes + offset;
    uint8_t type = block[size];
    if (type != 0)
        return bp_err_set(err, "compressed table block (type %u) not supported (%s)", type, index->path);
    uint32_t stored = get_le32(block + size + 1), crc = tf_crc32c(block, (size_t)size + 1);
    if (tf_crc32c_mask(crc) != stored)
        return bp_err_set(err, "table block at %llu fails its CRC32C: corrupt index (%s)", (unsigned long long)offset,
                          index->path);
    out->p = block;
    out->end = block + size;
    return 0;
}

/* Call FN for every key/value of a block (keys are prefix-compressed against the last). */
static int tf_each_entry(tf_checkpoint *ckpt, cursor block, entry_fn fn, bp_err *err) {
    struct tf_owned *own = ckpt->owned;
    size_t size = (size_t)(block.end - block.p);
    if (size < 4) return bp_err_set(err, "table block too short (%s)", own->index.path);
    uint32_t restarts = get_le32(block.end - 4);
    if (restarts > (size - 4) / 4) return bp_err_set(err, "table block restart count is corrupt (%s)", own->index.path);
    cursor c = {block.p, block.end - 4 - 4 * (size_t)restarts};
    size_t key_len = 0;
    while (c.p < c.end) {
        uint64_t shared, unshared, value_len;
        if (get_varint(&c, &shared) != 0 || get_varint(&c, &unshared) != 0 || get_varint(&c, &value_len) != 0 ||
            shared > key_len || unshared > (uint64_t)(c.end - c.p) || value_len > (uint64_t)(c.end - c.p) - unshared)
            return bp_err_set(err, "table entry is corrupt (%s)", own->index.path);
        size_t need = (size_t)(shared + unshared) + 1;
        if (need > own->key_cap) {
            char *bigger = realloc(own->key, need);
            if (!bigger) return bp_err_set(err, "out of memory (%s)", own->index.path);
            own->key = bigger;
            own->key_cap = need;
        }
        memcpy(own->key + shared, c.p, (size_t)unshared);
        key_len = (size_t)(shared + unshared);
        own->key[key_len] = '\0';
        c.p += unshared;
        cursor value = {c.p, c.p + value_len};
        c.p += value_len;
        if (fn(ckpt, own->key, key_len, value, err) != 0) return -1;
    }
    return 0;
}

static bp_dtype tf_dtype(int tf, int *ok) {
    static const struct { int tf; bp_dtype dtype; } map[] = {
        {1, BP_F32}, {2, BP_F64}, {3, BP_I32}, {4, BP_U8}, {5, BP_I16}, {6, BP_I8},
        {9, BP_I64}, {10, BP_BOOL}, {14, BP_BF16}, {19, BP_F16},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].tf == tf) {
            *ok = 1;
            return map[i].dtype;
        }
    *ok = 0;
    return BP_F32;
}

/* Copy a TF [in, out] kernel into [out, in]. An empty one copies nothing: its other
 * dimension may be anything up to 2^63 (the entry's size, 0, bounds only the product), so
 * walking its rows would take hours over no bytes. */
static void *tf_transpose(const uint8_t *src, int64_t rows, int64_t cols, size_t esize) {
    size_t n = (size_t)(rows * cols) * esize;
    uint8_t *dst = malloc(n ? n : 1);
    if (!dst || n == 0) return dst;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            memcpy(dst + (size_t)(j * rows + i) * esize, src + (size_t)(i * cols + j) * esize, esize);
    return dst;
}

/* Room for twice as many tensors (and kernel copies). */
static int tf_grow(tf_checkpoint *ckpt) {
    struct tf_owned *own = ckpt->owned;
    size_t capacity = own->capacity ? own->capacity * 2 : 64;
    bp_named_tensor *tensors = realloc(ckpt->tensors, capacity * sizeof *tensors);
    if (!tensors) return -1;
    ckpt->tensors = tensors;
    void **copies = realloc(own->copies, capacity * sizeof *copies);
    if (!copies) return -1;
    own->copies = copies;
    memset(ckpt->tensors + own->capacity, 0, (capacity - own->capacity) * sizeof *ckpt->tensors);
    own->capacity = capacity;
    return 0;
}

/* A table's keys strictly increase (bytewise); anything else is a corrupt index, e.g. a
 * data block named twice by the index block, which would list (and copy) its tensors again. */
static int tf_key_in_order(struct tf_owned *own, const char *key, size_t key_len, bp_err *err) {
    if (own->seen_entry) {
        size_t common = key_len < own->last_key_len ? key_len : own->last_key_len;
        int order = memcmp(key, own->last_key, common);
        if (order < 0 || (order == 0 && key_len <= own->last_key_len))
            return bp_err_set(err, "index keys are not in increasing order: corrupt table (%s, variable %s)",
                              own->index.path, key);
    }
    if (key_len + 1 > own->last_key_cap) {
        char *bigger = realloc(own->last_key, key_len + 1);
        if (!bigger) return bp_err_set(err, "out of memory (%s)", own->index.path);
        own->last_key = bigger;
        own->last_key_cap = key_len + 1;
    }
    memcpy(own->last_key, key, key_len);
    own->last_key_len = key_len;
    own->seen_entry = 1;
    return 0;
}

static int tf_add_tensor(tf_checkpoint *ckpt, const char *key, size_t key_len, cursor value, bp_err *err) {
    struct tf_owned *own = ckpt->owned;
    if (tf_key_in_order(own, key, key_len, err) != 0) return -1;
    tf_entry e;
    if (tf_parse_entry(value, &e) != 0)
        return bp_err_set(err, "entry is not a valid BundleEntryProto (%s, variable %s)", own->index.path, key);
    if (key_len == 0) { /* the BundleHeaderProto */
        cursor c = value;
        pb_field f;
        while (c.p < c.end) {
            if (pb_next(&c, &f) != 0) return bp_err_set(err, "bundle header is corrupt (%s)", own->index.path);
            if (f.number == 1 && f.value > 1)
                return bp_err_set(err, "checkpoint has %llu data shards; only one is supported (%s)",
                                  (unsigned long long)f.value, own->index.path);
            if (f.number == 2 && f.value != 0)
                return bp_err_set(err, "checkpoint was saved big-endian; only little-endian is supported (%s)", own->index.path);
        }
        return 0;
    }
    /* The bound holds for a table that lists each entry once; a corrupt index block can name
     * one data block many times. */
    if (ckpt->n_tensors >= own->max_entries)
        return bp_err_set(err, "index lists more variables than its size allows: a data block is referenced twice (%s, variable %s)",
                          own->index.path, key);
    if (ckpt->n_tensors == own->capacity && tf_grow(ckpt) != 0)
        return bp_err_set(err, "out of memory (%s, variable %s)", own->index.path, key);
    bp_named_tensor *t = &ckpt->tensors[ckpt->n_tensors];
    int kernel = tf_hf_name(key, t->name, sizeof t->name);
    if (kernel < 0) return 0; /* optimizer state */
    int ok;
    t->dtype = tf_dtype(e.dtype, &ok);
    if (!ok) return bp_err_set(err, "unsupported TF dtype %d (%s, variable %s)", e.dtype, own->index.path, key);
    if (e.has_slices || e.unknown_rank)
        return bp_err_set(err, "partitioned or unknown-rank variable not supported (%s, variable %s)", own->index.path, key);
    if (e.shard_id != 0) return bp_err_set(err, "variable in data shard %llu; only one is supported (%s, variable %s)",
                                           (unsigned long long)e.shard_id, own->index.path, key);
    t->ndim = e.ndim;
    memcpy(t->shape, e.shape, sizeof t->shape);
    uint64_t nbytes = bp_dtype_size(t->dtype);
    for (int d = 0; d < e.ndim; d++)
        if (__builtin_mul_overflow(nbytes, (uint64_t)e.shape[d], &nbytes))
            return bp_err_set(err, "shape overflows (%s, variable %s)", own->index.path, key);
    if (nbytes != e.size)
        return bp_err_set(err, "entry size %llu disagrees with shape x dtype = %llu (%s, variable %s)",
                          (unsigned long long)e.size, (unsigned long long)nbytes, own->index.path, key);
    t->nbytes = (size_t)e.size;
    if (!own->index_only) {
        if (e.offset > own->data.len || e.size > own->data.len - e.offset)
            return bp_err_set(err, "variable bytes [%llu, +%llu) beyond the %zu-byte data file: truncated (%s, variable %s)",
                              (unsigned long long)e.offset, (unsigned long long)e.size, own->data.len, own->data.path, key);
        const uint8_t *bytes = own->data.bytes + e.offset;
        if (e.has_crc && tf_crc32c_mask(tf_crc32c(bytes, (size_t)e.size)) != e.crc32c)
            return bp_err_set(err, "variable bytes fail their CRC32C: corrupt data file (%s, variable %s)", own->data.path, key);
        t->data = (void *)bytes;
        if (kernel && t->ndim == 2) {
            if (!(t->data = tf_transpose(bytes, t->shape[0], t->shape[1], bp_dtype_size(t->dtype))))
                return bp_err_set(err, "out of memory (%s, variable %s)", own->data.path, key);
            own->copies[own->n_copies++] = t->data;
        }
    }
    if (kernel && t->ndim == 2) {
        int64_t rows = t->shape[0];
        t->shape[0] = t->shape[1];
        t->shape[1] = rows;
    }
    ckpt->n_tensors++;
    return 0;
}

/* Entries of the index block are handles of data blocks. */
static int tf_visit_data_block(tf_checkpoint *ckpt, const char *key, size_t key_len, cursor value, bp_err *err) {
    uint64_t offset, size;
    cursor block;
    if (get_varint(&value, &offset) != 0 || get_varint(&value, &size) != 0)
        return bp_err_set(err, "index block entry is not a block handle (%s)", ckpt->owned->index.path);
    if (tf_block(&ckpt->owned->index, offset, size, &block, err) != 0) return -1;
    return tf_each_entry(ckpt, block, tf_add_tensor, err);
}

static tf_checkpoint *tf_load(const char *prefix, int index_only, bp_err *err) {
    tf_checkpoint *ckpt = calloc(1, sizeof *ckpt);
    size_t plen = strlen(prefix);
    if (plen >= 6 && strcmp(prefix + plen - 6, ".index") == 0) plen -= 6;
    char *index_path = malloc(plen + 32), *data_path = malloc(plen + 32);
    if (!ckpt || !index_path || !data_path || !(ckpt->owned = calloc(1, sizeof *ckpt->owned)) ||
        !(ckpt->prefix = strndup(prefix, plen))) {
        bp_err_set(err, "out of memory (%s)", prefix);
        goto fail;
    }
    snprintf(index_path, plen + 32, "%.*s.index", (int)plen, prefix);
    snprintf(data_path, plen + 32, "%.*s.data-00000-of-00001", (int)plen, prefix);
    struct tf_owned *own = ckpt->owned;
    own->index_only = index_only;
    if (tf_map_file(&own->index, index_path, err) != 0 || (!index_only && tf_map_file(&own->data, data_path, err) != 0))
        goto fail;
    if (own->index.len < TF_FOOTER_LEN) {
        bp_err_set(err, "index shorter than a table footer: truncated (%s)", index_path);
        goto fail;
    }
    const uint8_t *footer = own->index.bytes + own->index.len - TF_FOOTER_LEN;
    uint64_t magic = (uint64_t)get_le32(footer + 40) | (uint64_t)get_le32(footer + 44) << 32;
    if (magic != TF_TABLE_MAGIC) {
        bp_err_set(err, "no table magic at the end: not a TF checkpoint index, or truncated (%s)", index_path);
        goto fail;
    }
    cursor c = {footer, footer + 40};
    uint64_t meta_off, meta_size, index_off, index_size;
    if (get_varint(&c, &meta_off) != 0 || get_varint(&c, &meta_size) != 0 || get_varint(&c, &index_off) != 0 ||
        get_varint(&c, &index_size) != 0) {
        bp_err_set(err, "table footer is corrupt (%s)", index_path);
        goto fail;
    }
    /* Every entry costs at least its three length varints: a safe bound on the count. The
     * arrays grow as entries come, so a large index asks for no memory up front. */
    own->max_entries = own->index.len / 3 + 1;
    if (tf_grow(ckpt) != 0) {
        bp_err_set(err, "out of memory (%s)", index_path);
        goto fail;
    }
    cursor index_block;
    if (tf_block(&own->index, index_off, index_size, &index_block, err) != 0 ||
        tf_each_entry(ckpt, index_block, tf_visit_data_block, err) != 0)
        goto fail;
    free(index_path);
    free(data_path);
    return ckpt;
fail:
    free(index_path);
    free(data_path);
    tf_close(ckpt);
    return NULL;
}

tf_checkpoint *tf_open(const char *prefix, bp_err *err) { return tf_load(prefix, 0, err); }

tf_checkpoint *tf_open_index(const char *prefix, bp_err *err) { return tf_load(prefix, 1, err); }
