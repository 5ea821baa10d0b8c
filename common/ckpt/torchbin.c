/* ckpt/torchbin.c — torch.save zip reader: libarchive for the zip, a minimal pickle VM for
 * data.pkl (see torchbin.h). The VM builds values in an arena freed in one go, so corrupt
 * input can at worst produce an error, never a leak or a dangling pointer.
 * Must never: execute a pickle global it does not know (it is refused by name), print, or
 * exit. */
#include "ckpt/torchbin.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/limits.h"

/* ---- storages and owned buffers ------------------------------------------------------ */

typedef struct tb_storage {
    char *key;              /* the N of TOP/data/N */
    unsigned char *bytes;   /* owned, except when it points into the set's legacy blob */
    size_t nbytes;
    int dtype;              /* -1 until a persistent id gives it a type */
} tb_storage;

struct tb_storage_set {
    /* Each storage is its own allocation: pickle values point at them while the table
     * grows (a legacy file declares its storages as the pickle runs). */
    tb_storage **storages;
    size_t n_storages, cap_storages;
    unsigned char *blob;    /* a legacy file, read whole; its storages point into it */
    size_t blob_len;
    void **copies;          /* contiguous copies of strided tensors */
    size_t n_copies;
};

static void tb_storage_set_free(struct tb_storage_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n_storages; i++) {
        free(set->storages[i]->key);
        if (!set->blob) free(set->storages[i]->bytes);
        free(set->storages[i]);
    }
    free(set->blob);
    for (size_t i = 0; i < set->n_copies; i++) free(set->copies[i]);
    free(set->storages);
    free(set->copies);
    free(set);
}

void tb_close(tb_file *file) {
    if (!file) return;
    tb_storage_set_free(file->owned);
    free(file->tensors);
    free(file->path);
    free(file);
}

const bp_named_tensor *tb_find(const tb_file *file, const char *name) {
    for (size_t i = 0; i < file->n_tensors; i++)
        if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
    return NULL;
}

static int grow(void *array, size_t *cap, size_t need, size_t size);

static tb_storage *tb_storage_find(struct tb_storage_set *set, const char *key) {
    for (size_t i = 0; i < set->n_storages; i++)
        if (strcmp(set->storages[i]->key, key) == 0) return set->storages[i];
    return NULL;
}

/* A new, empty storage called KEY in SET (no bytes, no dtype yet), or NULL when out of
 * memory. Its address stays valid until the set is freed. */
static tb_storage *tb_storage_add(struct tb_storage_set *set, const char *key) {
    tb_storage *s = calloc(1, sizeof *s);
    if (!s || !(s->key = strdup(key)) ||
        grow(&set->storages, &set->cap_storages, set->n_storages + 1, sizeof *set->storages) != 0) {
        if (s) free(s->key);
        free(s);
        return NULL;
    }
    s->dtype = -1;
    set->storages[set->n_storages++] = s;
    return s;
}

/* ---- pickle values ------------------------------------------------------------------- */

typedef enum pv_kind {
    PV_MARK, PV_NONE, PV_BOOL, PV_INT, PV_STR, PV_TUPLE, PV_LIST, PV_DICT, PV_GLOBAL,
    PV_STORAGE, PV_TENSOR
} pv_kind;

static const char *const pv_kind_names[] = {"mark", "None", "bool", "int", "str", "tuple", "list",
                                            "dict", "global", "storage", "tensor"};

/* The only callables a state dict needs. */
typedef enum pv_global {
    G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_STORAGE_TYPE
} pv_global;

typedef struct pv {
    pv_kind kind;
    int64_t integer;          /* PV_INT, PV_BOOL */
    char *text;               /* PV_STR (NUL-terminated; length in n) */
    struct pv **items;        /* PV_TUPLE, PV_LIST: n items; PV_DICT: n/2 key-value pairs */
    size_t n, cap;
    pv_global global;         /* PV_GLOBAL */
    bp_dtype dtype;           /* PV_GLOBAL storage type; PV_TENSOR */
    tb_storage *storage;      /* PV_STORAGE, PV_TENSOR */
    int64_t offset, shape[BP_MAX_DIMS], stride[BP_MAX_DIMS]; /* PV_TENSOR, in elements */
    int ndim;
} pv;

typedef struct pickle_vm {
    const unsigned char *code;
    size_t len, pos, op_pos;
    const char *where;        /* file label for errors */
    const char *pickle_name;  /* "data.pkl", or which pickle of a legacy file */
    struct tb_storage_set *set;
    pv **arena;               /* every value ever made, freed at the end */
    size_t n_arena, cap_arena;
    size_t n_items;           /* items ever appended to containers, for the limit */
    pv **stack;
    size_t n_stack, cap_stack;
    size_t *marks;
    size_t n_marks, cap_marks;
    pv **memo;
    size_t cap_memo, n_memo;  /* n_memo: next MEMOIZE slot */
    int legacy;               /* storages are declared by persistent ids, their data follows */
    bp_err *err;
} pickle_vm;

/* Grow *array (element size SIZE) to hold at least NEED elements. */
static int grow(void *array, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t new_cap = *cap ? *cap : 16;
    while (new_cap < need) new_cap *= 2;
    void *p = realloc(*(void **)array, new_cap * size);
    if (!p) return -1;
    *(void **)array = p;
    *cap = new_cap;
    return 0;
}

static int vm_fail(pickle_vm *vm, const char *what) {
    return bp_err_set(vm->err, "%s at byte %zu of %s (%s)", what, vm->op_pos, vm->pickle_name, vm->where);
}

/* 0 while COUNT is within the pickle limits (base/limits.h), else -1 with err: a state dict
 * needs a few thousand values, so a pickle that builds millions is not one. */
static int vm_within_limit(pickle_vm *vm, size_t count, const char *what) {
    if ((uint64_t)count < BP_LIMIT_PICKLE_VALUES) return 0;
    char message[160];
    snprintf(message, sizeof message, "pickle has more than %llu %s, over the limit: not a state dict",
             (unsigned long long)BP_LIMIT_PICKLE_VALUES, what);
    return vm_fail(vm, message);
}

static pv *pv_new(pickle_vm *vm, pv_kind kind) {
    if (vm_within_limit(vm, vm->n_arena, "values") != 0) return NULL;
    pv *v = calloc(1, sizeof *v);
    if (!v || grow(&vm->arena, &vm->cap_arena, vm->n_arena + 1, sizeof *vm->arena) != 0) {
        free(v);
        vm_fail(vm, "out of memory");
        return NULL;
    }
    vm->arena[vm->n_arena++] = v;
    v->kind = kind;
    return v;
}

static int pv_append(pickle_vm *vm, pv *container, pv *item) {
    if (vm_within_limit(vm, vm->n_items++, "container items") != 0) return -1;
    if (grow(&container->items, &container->cap, container->n + 1, sizeof *container->items) != 0)
        return vm_fail(vm, "out of memory");
    container->items[container->n++] = item;
    return 0;
}

static void vm_free(pickle_vm *vm) {
    for (size_t i = 0; i < vm->n_arena; i++) {
        free(vm->arena[i]->text);
        free(vm->arena[i]->items);
        free(vm->arena[i]);
    }
    free(vm->arena);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
}

static int vm_push(pickle_vm *vm, pv *v) {
    if (!v || vm_within_limit(vm, vm->n_stack, "values on its stack") != 0) return -1;
    if (grow(&vm->stack, &vm->cap_stack, vm->n_stack + 1, sizeof *vm->stack) != 0)
        return vm_fail(vm, "out of memory");
    vm->stack[vm->n_stack++] = v;
    return 0;
}

static pv *vm_pop(pickle_vm *vm) {
    size_t floor = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
    if (vm->n_stack <= floor) {
        vm_fail(vm, "pickle stack underflow");
        return NULL;
    }
    return vm->stack[--vm->n_stack];
}

static pv *vm_top(pickle_vm *vm) {
    size_t floor = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
    if (vm->n_stack <= floor) {
        vm_fail(vm, "pickle stack underflow");
        return NULL;
    }
    return vm->stack[vm->n_stack - 1];
}

/* Pop everything above the last MARK; returns its stack index, or -1. */
static long vm_pop_mark(pickle_vm *vm) {
    if (vm->n_marks == 0) return vm_fail(vm, "pickle has no MARK to pop to");
    return (long)vm->marks[--vm->n_marks];
}

static int vm_need(pickle_vm *vm, size_t n) {
    if (vm->len - vm->pos < n) return vm_fail(vm, "pickle ends in the middle of an opcode: truncated");
    return 0;
}

static uint64_t vm_read_le(pickle_vm *vm, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)vm->code[vm->pos + i] << (8 * i);
    vm->pos += n;
    return v;
}

/* An opcode's N-byte little-endian argument. */
static int vm_arg(pickle_vm *vm, size_t n, uint64_t *out) {
    if (vm_need(vm, n) != 0) return -1;
    *out = vm_read_le(vm, n);
    return 0;
}

static int vm_push_int(pickle_vm *vm, int64_t value) {
    pv *v = pv_new(vm, PV_INT);
    if (!v) return -1;
    v->integer = value;
    return vm_push(vm, v);
}

static pv *vm_make_str(pickle_vm *vm, const unsigned char *bytes, size_t n) {
    pv *v = pv_new(vm, PV_STR);
    if (!v) return NULL;
    v->text = malloc(n + 1);
    if (!v->text) {
        vm_fail(vm, "out of memory");
        return NULL;
    }
    memcpy(v->text, bytes, n);
    v->text[n] = '\0';
    v->n = n;
    return v;
}

static int vm_push_str(pickle_vm *vm, size_t len_bytes) {
    if (vm_need(vm, len_bytes) != 0) return -1;
    uint64_t n = vm_read_le(vm, len_bytes);
    if (vm_need(vm, n) != 0) return -1;
    pv *v = vm_make_str(vm, vm->code + vm->pos, (size_t)n);
    vm->pos += n;
    return vm_push(vm, v);
}

static int vm_resolve_global(pickle_vm *vm, const char *module, const char *name) {
    static const struct { const char *name; bp_dtype dtype; } storage_types[] = {
        {"FloatStorage", BP_F32}, {"DoubleStorage", BP_F64}, {"HalfStorage", BP_F16},
        {"BFloat16Storage", BP_BF16}, {"LongStorage", BP_I64}, {"IntStorage", BP_I32},
        {"ShortStorage", BP_I16}, {"CharStorage", BP_I8}, {"ByteStorage", BP_U8}, {"BoolStorage", BP_BOOL},
    };
    pv *v = pv_new(vm, PV_GLOBAL);
    if (!v) return -1;
    if (strcmp(module, "collections") == 0 && strcmp(name, "OrderedDict") == 0) {
        v->global = G_ORDERED_DICT;
    } else if (strcmp(module, "torch._utils") == 0 && strcmp(name, "_rebuild_tensor_v2") == 0) {
        v->global = G_REBUILD_TENSOR_V2;
    } else if (strcmp(module, "torch._utils") == 0 && strcmp(name, "_rebuild_parameter") == 0) {
        v->global = G_REBUILD_PARAMETER;
    } else {
        size_t i, n = sizeof storage_types / sizeof storage_types[0];
        for (i = 0; i < n; i++)
            if (strcmp(module, "torch") == 0 && strcmp(name, storage_types[i].name) == 0) break;
        if (i == n) {
            char what[200];
            snprintf(what, sizeof what, "unsupported pickle global %.80s.%.80s", module, name);
            return vm_fail(vm, what);
        }
        v->global = G_STORAGE_TYPE;
        v->dtype = storage_types[i].dtype;
    }
    return vm_push(vm, v);
}

static int vm_op_global(pickle_vm *vm) {
    /* GLOBAL: "module\nname\n" */
    const unsigned char *start = vm->code + vm->pos, *end = vm->code + vm->len;
    const unsigned char *nl1 = memchr(start, '\n', (size_t)(end - start));
    const unsigned char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
    if (!nl2 || nl1 - start >= 100 || nl2 - nl1 - 1 >= 100)
        return vm_fail(vm, "GLOBAL opcode without module and name lines: truncated or corrupt");
    char module[100], name[100];
    memcpy(module, start, (size_t)(nl1 - start));
    module[nl1 - start] = '\0';
    memcpy(name, nl1 + 1, (size_t)(nl2 - nl1 - 1));
    name[nl2 - nl1 - 1] = '\0';
    vm->pos = (size_t)(nl2 + 1 - vm->code);
    return vm_resolve_global(vm, module, name);
}

static int vm_op_stack_global(pickle_vm *vm) {
    pv *name = vm_pop(vm), *module = name ? vm_pop(vm) : NULL;
    if (!module) return -1;
    if (module->kind != PV_STR || name->kind != PV_STR) return vm_fail(vm, "STACK_GLOBAL needs two strings");
    return vm_resolve_global(vm, module->text, name->text);
}

/* A legacy file declares storages in the pickle and stores their bytes after it. */
static tb_storage *vm_declare_storage(pickle_vm *vm, const char *key, bp_dtype dtype, int64_t numel) {
    struct tb_storage_set *set = vm->set;
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / 8) {
        vm_fail(vm, "storage size out of range");
        return NULL;
    }
    tb_storage *s = tb_storage_add(set, key);
    if (!s) {
        vm_fail(vm, "out of memory");
        return NULL;
    }
    s->nbytes = (size_t)numel * bp_dtype_size(dtype);
    return s;
}

/* BINPERSID: ('storage', storage_type, key, location, numel) -> the storage it names
 * (legacy files add a sixth item, view metadata, which must be None). */
static int vm_op_persid(pickle_vm *vm) {
    pv *pid = vm_pop(vm);
    if (!pid) return -1;
    if (pid->kind != PV_TUPLE || pid->n < 5 || pid->items[0]->kind != PV_STR ||
        strcmp(pid->items[0]->text, "storage") != 0 || pid->items[1]->kind != PV_GLOBAL ||
        pid->items[1]->global != G_STORAGE_TYPE || pid->items[2]->kind != PV_STR ||
        pid->items[4]->kind != PV_INT)
        return vm_fail(vm, "persistent id is not ('storage', type, key, location, numel)");
    if (pid->n > 5 && (!vm->legacy || pid->n > 6 || pid->items[5]->kind != PV_NONE))
        return vm_fail(vm, "storage views (legacy view_metadata) are not supported");
    const char *key = pid->items[2]->text;
    bp_dtype dtype = pid->items[1]->dtype;
    tb_storage *storage = tb_storage_find(vm->set, key);
    if (!storage && vm->legacy) storage = vm_declare_storage(vm, key, dtype, pid->items[4]->integer);
    if (!storage && vm->legacy) return -1;
    if (!storage)
        return bp_err_set(vm->err, "storage data/%s used by data.pkl is missing from the archive (%s)", key, vm->where);
    if (storage->dtype >= 0 && storage->dtype != (int)dtype)
        return bp_err_set(vm->err, "storage data/%s is used as both %s and %s (%s)", key,
                          bp_dtype_name((bp_dtype)storage->dtype), bp_dtype_name(dtype), vm->where);
    int64_t numel = pid->items[4]->integer;
    if (numel < 0 || (uint64_t)numel > storage->nbytes / bp_dtype_size(dtype))
        return bp_err_set(vm->err, "storage data/%s has %zu bytes, fewer than %lld %s elements: truncated (%s)", key,
                          storage->nbytes, (long long)numel, bp_dtype_name(dtype), vm->where);
    storage->dtype = (int)dtype;
    pv *v = pv_new(vm, PV_STORAGE);
    if (!v) return -1;
    v->storage = storage;
    v->dtype = dtype;
    return vm_push(vm, v);
}

static int pv_int_tuple(const pv *t, int64_t *out, int max) {
    if (t->kind != PV_TUPLE || t->n > (size_t)max) return -1;
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i]->kind != PV_INT) return -1;
        out[i] = t->items[i]->integer;
    }
    return (int)t->n;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static pv *vm_rebuild_tensor(pickle_vm *vm, pv *args) {
    if (args->n < 4 || args->items[0]->kind != PV_STORAGE || args->items[1]->kind != PV_INT) {
        vm_fail(vm, "_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)");
        return NULL;
    }
    pv *t = pv_new(vm, PV_TENSOR);
    if (!t) return NULL;
    t->storage = args->items[0]->storage;
    t->dtype = args->items[0]->dtype;
    t->offset = args->items[1]->integer;
    int ndim = pv_int_tuple(args->items[2], t->shape, BP_MAX_DIMS);
    int nstride = pv_int_tuple(args->items[3], t->stride, BP_MAX_DIMS);
    if (ndim < 0 || nstride != ndim) {
        vm_fail(vm, "tensor size/stride are not integer tuples of equal length (at most 8 dimensions)");
        return NULL;
    }
    t->ndim = ndim;
    /* Every element the view can touch must lie inside its storage. */
    int64_t last = t->offset, numel = 1;
    int bad = t->offset < 0;
    for (int d = 0; d < ndim && !bad; d++) {
        int64_t span;
        bad = t->shape[d] < 0 || t->stride[d] < 0 || __builtin_mul_overflow(numel, t->shape[d], &numel);
        if (!bad && t->shape[d] > 0)
            bad = __builtin_mul_overflow(t->shape[d] - 1, t->stride[d], &span) ||
                  __builtin_add_overflow(last, span, &last);
    }
    int64_t capacity = (int64_t)(t->storage->nbytes / bp_dtype_size(t->dtype));
    /* Stride-0 (expanded) views can name far more elements than their storage holds. */
    bad |= (uint64_t)numel > SIZE_MAX / bp_dtype_size(t->dtype);
    char what[200];
    if (bad || (numel > 0 && last >= capacity)) {
        snprintf(what, sizeof what, "tensor view (offset %lld) is malformed or reaches outside storage data/%.40s of %lld elements",
                 (long long)t->offset, t->storage->key, (long long)capacity);
        vm_fail(vm, what);
        return NULL;
    }
    /* More elements than the storage has means some repeat (an expanded view): its C-order
     * copy would cost memory the file does not hold (4 bytes of storage expanded to 2^30
     * elements is a 4 GiB copy), so a copy is never larger than its storage. */
    if (numel > capacity) {
        snprintf(what, sizeof what, "tensor view of %lld elements repeats elements of storage data/%.40s of %lld "
                 "(an expanded view): not supported", (long long)numel, t->storage->key, (long long)capacity);
        vm_fail(vm, what);
        return NULL;
    }
    return t;
}

static int vm_op_reduce(pickle_vm *vm) {
    pv *args = vm_pop(vm), *callable = args ? vm_pop(vm) : NULL;
    if (!callable) return -1;
    if (callable->kind != PV_GLOBAL || args->kind != PV_TUPLE)
        return vm_fail(vm, "REDUCE needs a known global and an argument tuple");
    pv *result = NULL;
    switch (callable->global) {
    case G_ORDERED_DICT:
        if (args->n != 0) return vm_fail(vm, "OrderedDict called with arguments");
        result = pv_new(vm, PV_DICT);
        break;
    case G_REBUILD_TENSOR_V2:
        result = vm_rebuild_tensor(vm, args);
        break;
    case G_REBUILD_PARAMETER:
        if (args->n < 1 || args->items[0]->kind != PV_TENSOR)
            return vm_fail(vm, "_rebuild_parameter needs a tensor");
        result = args->items[0];
        break;
    case G_STORAGE_TYPE:
        return vm_fail(vm, "storage types cannot be called");
    }
    return result ? vm_push(vm, result) : -1;
}

static int vm_setitems(pickle_vm *vm, size_t from) {
    if (from == 0 || (vm->n_stack - from) % 2 != 0) return vm_fail(vm, "SETITEMS needs a dict and key/value pairs");
    pv *dict = vm->stack[from - 1];
    if (dict->kind != PV_DICT) return vm_fail(vm, "SETITEM(S) on something that is not a dict");
    for (size_t i = from; i < vm->n_stack; i++)
        if (pv_append(vm, dict, vm->stack[i]) != 0) return -1;
    vm->n_stack = from;
    return 0;
}

static int vm_memo_put(pickle_vm *vm, uint64_t index) {
    pv *top = vm_top(vm);
    if (!top) return -1;
    /* Each memo entry costs at least two bytes of pickle: a larger index is corruption. */
    if (index > vm->len) return vm_fail(vm, "memo index out of range");
    if (vm_within_limit(vm, (size_t)index, "memo entries") != 0) return -1;
    if (grow(&vm->memo, &vm->cap_memo, (size_t)index + 1, sizeof *vm->memo) != 0)
        return vm_fail(vm, "out of memory");
    for (size_t i = vm->n_memo; i <= index; i++) vm->memo[i] = NULL;
    if (index >= vm->n_memo) vm->n_memo = (size_t)index + 1;
    vm->memo[index] = top;
    return 0;
}

static int vm_memo_get(pickle_vm *vm, uint64_t index) {
    if (index >= vm->n_memo || !vm->memo[index]) return vm_fail(vm, "memo get of an unset index");
    return vm_push(vm, vm->memo[index]);
}

static int vm_make_tuple(pickle_vm *vm, size_t from) {
    pv *t = pv_new(vm, PV_TUPLE);
    if (!t) return -1;
    for (size_t i = from; i < vm->n_stack; i++)
        if (pv_append(vm, t, vm->stack[i]) != 0) return -1;
    vm->n_stack = from;
    return vm_push(vm, t);
}

/* Run data.pkl; on success *result is the unpickled object. */
static int vm_run(pickle_vm *vm, pv **result) {
    while (vm->pos < vm->len) {
        vm->op_pos = vm->pos;
        unsigned char op = vm->code[vm->pos++];
        int rc = 0;
        long mark;
        uint64_t arg;
        pv *v, *w;
        switch (op) {
        case 0x80: /* PROTO */
            if (vm_need(vm, 1) != 0) return -1;
            if (vm->code[vm->pos++] > 5) return vm_fail(vm, "pickle protocol above 5");
            break;
        case 0x95: /* FRAME: a length hint only */
            if (vm_need(vm, 8) != 0) return -1;
            vm->pos += 8;
            break;
        case '}': rc = vm_push(vm, pv_new(vm, PV_DICT)); break;
        case ']': rc = vm_push(vm, pv_new(vm, PV_LIST)); break;
        case ')': rc = vm_push(vm, pv_new(vm, PV_TUPLE)); break;
        case 'N': rc = vm_push(vm, pv_new(vm, PV_NONE)); break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (!(v = pv_new(vm, PV_BOOL))) return -1;
            v->integer = op == 0x88;
            rc = vm_push(vm, v);
            break;
        case '(': /* MARK */
            if (vm_within_limit(vm, vm->n_marks, "nested MARKs") != 0) return -1;
            if (grow(&vm->marks, &vm->cap_marks, vm->n_marks + 1, sizeof *vm->marks) != 0)
                return vm_fail(vm, "out of memory");
            vm->marks[vm->n_marks++] = vm->n_stack;
            break;
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */
            if (vm_arg(vm, op == 'K' ? 1 : 2, &arg) != 0) return -1;
            rc = vm_push_int(vm, (int64_t)arg);
            break;
        case 'J': /* BININT: signed 32-bit */
            if (vm_arg(vm, 4, &arg) != 0) return -1;
            rc = vm_push_int(vm, (int64_t)(int32_t)(uint32_t)arg);
            break;
        case 0x8a: { /* LONG1: n-byte little-endian two's complement */
            if (vm_need(vm, 1) != 0) return -1;
            size_t n = vm->code[vm->pos++];
            if (n > 8) return vm_fail(vm, "LONG1 integer wider than 64 bits");
            if (vm_need(vm, n) != 0) return -1;
            uint64_t u = vm_read_le(vm, n);
            if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~0ull << (8 * n); /* sign-extend */
            rc = vm_push_int(vm, (int64_t)u);
            break;
        }
        case 'X': rc = vm_push_str(vm, 4); break;      /* BINUNICODE */
        case 0x8c: rc = vm_push_str(vm, 1); break;     /* SHORT_BINUNICODE */
        case 0x8d: rc = vm_push_str(vm, 8); break;     /* BINUNICODE8 */
        case 'c': rc = vm_op_global(vm); break;        /* GLOBAL */
        case 0x93: rc = vm_op_stack_global(vm); break; /* STACK_GLOBAL */
        case 'Q': rc = vm_op_persid(vm); break;        /* BINPERSID */
        case 'R': rc = vm_op_reduce(vm); break;        /* REDUCE */
        case 't': /* TUPLE */
            if ((mark = vm_pop_mark(vm)) < 0) return -1;
            rc = vm_make_tuple(vm, (size_t)mark);
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            size_t n = (size_t)(op - 0x84), floor = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
            if (vm->n_stack < floor + n) return vm_fail(vm, "pickle stack underflow");
            rc = vm_make_tuple(vm, vm->n_stack - n);
            break;
        }
        case 'a': /* APPEND */
            if (!(v = vm_pop(vm)) || !(w = vm_top(vm))) return -1;
            if (w->kind != PV_LIST) return vm_fail(vm, "APPEND to something that is not a list");
            rc = pv_append(vm, w, v);
            break;
        case 'e': /* APPENDS */
            if ((mark = vm_pop_mark(vm)) < 0) return -1;
            if (mark == 0 || vm->stack[mark - 1]->kind != PV_LIST) return vm_fail(vm, "APPENDS to something that is not a list");
            for (size_t i = (size_t)mark; i < vm->n_stack && rc == 0; i++) rc = pv_append(vm, vm->stack[mark - 1], vm->stack[i]);
            vm->n_stack = (size_t)mark;
            break;
        case 's': /* SETITEM */
            if (vm->n_stack < 3 || (vm->n_marks && vm->n_stack < vm->marks[vm->n_marks - 1] + 3))
                return vm_fail(vm, "pickle stack underflow");
            rc = vm_setitems(vm, vm->n_stack - 2);
            break;
        case 'u': /* SETITEMS */
            if ((mark = vm_pop_mark(vm)) < 0) return -1;
            rc = vm_setitems(vm, (size_t)mark);
            break;
        case 'b': /* BUILD: only OrderedDict's attribute state (_metadata), which we drop */
            if (!(v = vm_pop(vm)) || !(w = vm_top(vm))) return -1;
            if (w->kind != PV_DICT) return vm_fail(vm, "BUILD on something that is not a dict");
            break;
        case 'q': /* BINPUT */
        case 'r': /* LONG_BINPUT */
            if (vm_arg(vm, op == 'q' ? 1 : 4, &arg) != 0) return -1;
            rc = vm_memo_put(vm, arg);
            break;
        case 0x94: rc = vm_memo_put(vm, vm->n_memo); break; /* MEMOIZE */
        case 'h': /* BINGET */
        case 'j': /* LONG_BINGET */
            if (vm_arg(vm, op == 'h' ? 1 : 4, &arg) != 0) return -1;
            rc = vm_memo_get(vm, arg);
            break;
        case '.': /* STOP */
            if (vm->n_stack != 1 || vm->n_marks) return vm_fail(vm, "STOP with a stack of other than one object");
            *result = vm->stack[0];
            return 0;
        default: {
            char what[80];
            if (op >= 0x20 && op < 0x7f)
                snprintf(what, sizeof what, "unsupported pickle opcode 0x%02x '%c'", op, op);
            else
                snprintf(what, sizeof what, "unsupported pickle opcode 0x%02x", op);
            return vm_fail(vm, what);
        }
        }
        if (rc != 0) return -1;
    }
    return bp_err_set(vm->err, "%s ends without STOP: truncated (%s)", vm->pickle_name, vm->where);
}

/* ---- from pickle result to named tensors --------------------------------------------- */

static int tb_is_contiguous(const pv *t) {
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect) return 0;
        expect *= t->shape[d];
    }
    return 1;
}

/* Copy a strided view into a new C-order buffer. */
static void tb_gather(const pv *t, unsigned char *out) {
    size_t esize = bp_dtype_size(t->dtype);
    int64_t numel = bp_numel(t->shape, t->ndim), index[BP_MAX_DIMS] = {0};
    for (int64_t i = 0; i < numel; i++) {
        int64_t src = t->offset;
        for (int d = 0; d < t->ndim; d++) src += index[d] * t->stride[d];
        memcpy(out + (size_t)i * esize, t->storage->bytes + (size_t)src * esize, esize);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++index[d] < t->shape[d]) break;
            index[d] = 0;
        }
    }
}

static int tb_collect(tb_file *file, const pv *dict, bp_err *err) {
    if (dict->kind != PV_DICT)
        return bp_err_set(err, "data.pkl holds a %s, not a state dict (%s)", pv_kind_names[dict->kind], file->path);
    size_t n = dict->n / 2;
    file->tensors = calloc(n ? n : 1, sizeof *file->tensors);
    file->owned->copies = calloc(n ? n : 1, sizeof *file->owned->copies);
    if (!file->tensors || !file->owned->copies) return bp_err_set(err, "out of memory (%s)", file->path);
    for (size_t i = 0; i < n; i++) {
        const pv *key = dict->items[2 * i], *value = dict->items[2 * i + 1];
        if (key->kind != PV_STR) return bp_err_set(err, "state dict key %zu is not a string (%s)", i, file->path);
        if (value->kind != PV_TENSOR)
            return bp_err_set(err, "state dict entry is a %s, not a tensor (%s, tensor %s)",
                              pv_kind_names[value->kind], file->path, key->text);
        bp_named_tensor *t = &file->tensors[i];
        if (key->n == 0 || key->n >= sizeof t->name || memchr(key->text, '\0', key->n))
            return bp_err_set(err, "tensor name is empty or longer than %zu bytes (%s, tensor %.60s)",
                              sizeof t->name - 1, file->path, key->text);
        memcpy(t->name, key->text, key->n + 1);
        t->dtype = value->dtype;
        t->ndim = value->ndim;
        memcpy(t->shape, value->shape, sizeof t->shape);
        size_t esize = bp_dtype_size(value->dtype);
        t->nbytes = (size_t)bp_numel(value->shape, value->ndim) * esize;
        if (t->nbytes == 0) {
            t->data = value->storage->bytes;
        } else if (tb_is_contiguous(value)) {
            t->data = value->storage->bytes + (size_t)value->offset * esize;
        } else {
            unsigned char *copy = malloc(t->nbytes);
            if (!copy) return bp_err_set(err, "out of memory (%s, tensor %s)", file->path, t->name);
            file->owned->copies[file->owned->n_copies++] = copy;
            tb_gather(value, copy);
            t->data = copy;
        }
        file->n_tensors++;
    }
    return 0;
}

/* ---- the zip ------------------------------------------------------------------------- */

/* Read the current entry's data into a new buffer of at most LIMIT bytes. The size the zip
 * claims is believed only up to TRUSTED (the file's size; less for a stream), so a forged
 * header cannot make us ask for gigabytes before a byte has arrived. */
static int tb_read_entry(struct archive *ar, struct archive_entry *entry, const char *where, const char *name,
                         uint64_t limit, uint64_t trusted, unsigned char **out, size_t *out_len, bp_err *err) {
    char place[512];
    snprintf(place, sizeof place, "%s, zip entry %.200s", where, name);
    int64_t claimed = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : -1;
    if (claimed > 0 && bp_check_limit((uint64_t)claimed, limit, "bytes", "a zip entry", place, err) != 0) return -1;
    /* One spare byte when the size is known, so the read that reports the end never
     * has to grow (and double) a buffer the size of a whole embedding matrix. */
    size_t cap = claimed >= 0 ? (size_t)((uint64_t)claimed < trusted ? (uint64_t)claimed : trusted) + 1 : 65536;
    size_t len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return bp_err_set(err, "out of memory (%s)", place);
    for (;;) {
        if (len == cap) {
            if (len > limit) { /* cap stops at limit + 1: one byte more than allowed arrived */
                bp_check_limit(len, limit, "bytes", "a zip entry", place, err);
                free(buf);
                return -1;
            }
            size_t bigger_cap = cap * 2 > limit + 1 ? (size_t)limit + 1 : cap * 2;
            unsigned char *bigger = realloc(buf, bigger_cap);
            if (!bigger) {
                free(buf);
                return bp_err_set(err, "out of memory (%s)", place);
            }
            buf = bigger;
            cap = bigger_cap;
        }
        la_ssize_t got = archive_read_data(ar, buf + len, cap - len);
        if (got < 0) {
            const char *why = archive_error_string(ar);
            bp_err_set(err, "cannot read zip entry: %s (%s)", why && *why ? why : "damaged or truncated", place);
            free(buf);
            return -1;
        }
        if (got == 0) break;
        len += (size_t)got;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* Walk every entry: data.pkl into *pickle, TOP/data/KEY into the storage set. */
static int tb_read_zip(struct archive *ar, const char *where, uint64_t trusted, struct tb_storage_set *set,
                       unsigned char **pickle, size_t *pickle_len, bp_err *err) {
    struct archive_entry *entry;
    char top[256] = "";
    int r;
    while ((r = archive_read_next_header(ar, &entry)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(entry);
        const char *slash = name ? strchr(name, '/') : NULL;
        if (!slash || slash == name || (size_t)(slash - name) >= sizeof top) continue;
        if (!top[0]) {
            memcpy(top, name, (size_t)(slash - name));
            top[slash - name] = '\0';
        } else if (strncmp(top, name, (size_t)(slash - name)) != 0 || top[slash - name] != '\0') {
            return bp_err_set(err, "zip holds two top directories, %s and %.*s: not a torch.save archive (%s)", top,
                              (int)(slash - name), name, where);
        }
        const char *rest = slash + 1;
        unsigned char *bytes = NULL;
        size_t len = 0;
        if (strcmp(rest, "data.pkl") == 0) {
            if (*pickle) return bp_err_set(err, "zip holds data.pkl twice (%s)", where);
            if (tb_read_entry(ar, entry, where, name, BP_LIMIT_PICKLE_BYTES, trusted, pickle, pickle_len, err) != 0)
                return -1;
        } else if (strncmp(rest, "data/", 5) == 0 && rest[5]) {
            if (tb_storage_find(set, rest + 5)) return bp_err_set(err, "zip holds storage %s twice (%s)", rest, where);
            if (tb_read_entry(ar, entry, where, name, BP_LIMIT_TENSOR_BYTES, trusted, &bytes, &len, err) != 0)
                return -1;
            tb_storage *s = tb_storage_add(set, rest + 5);
            if (!s) {
                free(bytes);
                return bp_err_set(err, "out of memory (%s)", where);
            }
            s->bytes = bytes;
            s->nbytes = len;
        } else if (strcmp(rest, "byteorder") == 0) {
            /* Written by newer torch; storages are in the saving machine's byte order. */
            if (tb_read_entry(ar, entry, where, name, 64, trusted, &bytes, &len, err) != 0) return -1;
            int little = len == 6 && memcmp(bytes, "little", 6) == 0;
            free(bytes);
            if (!little) return bp_err_set(err, "checkpoint was saved big-endian; only little-endian is supported (%s)", where);
        }
    }
    if (r != ARCHIVE_EOF)
        return bp_err_set(err, "cannot read zip: %s: truncated or not a torch.save archive (%s)",
                          archive_error_string(ar) ? archive_error_string(ar) : "unknown error", where);
    if (!*pickle) return bp_err_set(err, "zip has no */data.pkl: not a torch.save archive (%s)", where);
    return 0;
}

/* Shared by both openers: AR is opened on the source already; TRUSTED bounds what an entry's
 * claimed size may make us allocate before its bytes arrive. Consumes AR. */
static tb_file *tb_load(struct archive *ar, const char *where, uint64_t trusted, bp_err *err) {
    tb_file *file = calloc(1, sizeof *file);
    unsigned char *pickle = NULL;
    size_t pickle_len = 0;
    if (!file || !(file->path = strdup(where)) || !(file->owned = calloc(1, sizeof *file->owned))) {
        bp_err_set(err, "out of memory (%s)", where);
        goto fail;
    }
    if (tb_read_zip(ar, where, trusted, file->owned, &pickle, &pickle_len, err) != 0) goto fail;
    pickle_vm vm = {.code = pickle, .len = pickle_len, .where = where, .pickle_name = "data.pkl",
                    .set = file->owned, .err = err};
    pv *result = NULL;
    int rc = vm_run(&vm, &result);
    if (rc == 0) rc = tb_collect(file, result, err);
    vm_free(&vm);
    if (rc != 0) goto fail;
    free(pickle);
    archive_read_free(ar);
    return file;
fail:
    free(pickle);
    archive_read_free(ar);
    tb_close(file);
    return NULL;
}

/* ---- the legacy (pre-1.6) format ------------------------------------------------------
 * Back-to-back pickles: a magic number, the protocol version 1001, a dict of system info,
 * the state dict (persistent ids declare the storages), the list of storage keys; then for
 * each key in that order an 8-byte little-endian element count and the raw bytes. */

static const unsigned char tb_legacy_magic[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                                0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};

/* Forget the previous pickle's stack and memo (each pickle has its own); keep the arena. */
static void vm_reset(pickle_vm *vm, const char *pickle_name) {
    vm->n_stack = vm->n_marks = vm->n_memo = 0;
    vm->pickle_name = pickle_name;
}

static int vm_run_next(pickle_vm *vm, const char *pickle_name, pv_kind want, pv **result) {
    vm_reset(vm, pickle_name);
    if (vm_run(vm, result) != 0) return -1;
    if ((*result)->kind != want)
        return bp_err_set(vm->err, "%s is a %s, expected a %s: not a torch.save file (%s)", pickle_name,
                          pv_kind_names[(*result)->kind], pv_kind_names[want], vm->where);
    return 0;
}

/* Attach the storage bytes that follow the pickles to the storages they declared. */
static int tb_legacy_storages(pickle_vm *vm, const pv *keys) {
    struct tb_storage_set *set = vm->set;
    size_t pos = vm->pos;
    for (size_t i = 0; i < keys->n; i++) {
        if (keys->items[i]->kind != PV_STR) return bp_err_set(vm->err, "storage key %zu is not a string (%s)", i, vm->where);
        tb_storage *s = tb_storage_find(set, keys->items[i]->text);
        if (!s || s->dtype < 0)
            return bp_err_set(vm->err, "storage %s listed but never used by the state dict (%s)", keys->items[i]->text, vm->where);
        if (set->blob_len - pos < 8)
            return bp_err_set(vm->err, "file ends before storage %s: truncated (%s)", s->key, vm->where);
        uint64_t numel = 0;
        for (int b = 7; b >= 0; b--) numel = numel << 8 | set->blob[pos + (size_t)b];
        pos += 8;
        if (numel != s->nbytes / bp_dtype_size((bp_dtype)s->dtype))
            return bp_err_set(vm->err, "storage %s holds %llu elements, the state dict says %zu (%s)", s->key,
                              (unsigned long long)numel, s->nbytes / bp_dtype_size((bp_dtype)s->dtype), vm->where);
        if (set->blob_len - pos < s->nbytes)
            return bp_err_set(vm->err, "file ends inside storage %s: truncated (%s)", s->key, vm->where);
        s->bytes = set->blob + pos;
        pos += s->nbytes;
    }
    for (size_t i = 0; i < set->n_storages; i++)
        if (!set->storages[i]->bytes)
            return bp_err_set(vm->err, "storage %s has no data in the file (%s)", set->storages[i]->key, vm->where);
    if (pos != set->blob_len)
        return bp_err_set(vm->err, "%zu bytes after the last storage: not a torch.save file (%s)", set->blob_len - pos, vm->where);
    return 0;
}

static tb_file *tb_load_legacy(const char *path, bp_err *err) {
    tb_file *file = calloc(1, sizeof *file);
    if (!file || !(file->path = strdup(path)) || !(file->owned = calloc(1, sizeof *file->owned))) {
        bp_err_set(err, "out of memory (%s)", path);
        tb_close(file);
        return NULL;
    }
    struct tb_storage_set *set = file->owned;
    FILE *fp = fopen(path, "rb");
    long len = -1;
    if (fp && fseek(fp, 0, SEEK_END) == 0) len = ftell(fp);
    if (fp && len >= 0 && fseek(fp, 0, SEEK_SET) == 0 && (set->blob = malloc(len ? (size_t)len : 1)))
        set->blob_len = fread(set->blob, 1, (size_t)len, fp);
    int read_ok = fp && len >= 0 && set->blob && set->blob_len == (size_t)len;
    if (fp) fclose(fp);
    if (!read_ok) {
        bp_err_set(err, "cannot read: %s (%s)", strerror(errno), path);
        tb_close(file);
        return NULL;
    }
    pickle_vm vm = {.code = set->blob, .len = set->blob_len, .where = path, .set = set, .legacy = 1, .err = err};
    pv *version = NULL, *info = NULL, *dict = NULL, *keys = NULL;
    int rc = -1;
    if (set->blob_len < 2 + sizeof tb_legacy_magic || memcmp(set->blob + 2, tb_legacy_magic, sizeof tb_legacy_magic) != 0) {
        bp_err_set(err, "a pickle without torch's magic number: not a torch.save file (%s)", path);
        goto out;
    }
    vm.pos = 2 + sizeof tb_legacy_magic;
    if (vm_run_next(&vm, "the protocol version pickle", PV_INT, &version) != 0) goto out;
    if (version->integer != 1001) {
        bp_err_set(err, "legacy torch protocol version %lld, only 1001 is supported (%s)", (long long)version->integer, path);
        goto out;
    }
    if (vm_run_next(&vm, "the system info pickle", PV_DICT, &info) != 0) goto out;
    for (size_t i = 0; i + 1 < info->n; i += 2)
        if (info->items[i]->kind == PV_STR && strcmp(info->items[i]->text, "little_endian") == 0 &&
            !(info->items[i + 1]->kind == PV_BOOL && info->items[i + 1]->integer)) {
            bp_err_set(err, "checkpoint was saved big-endian; only little-endian is supported (%s)", path);
            goto out;
        }
    if (vm_run_next(&vm, "the state dict pickle", PV_DICT, &dict) != 0) goto out;
    if (vm_run_next(&vm, "the storage key list pickle", PV_LIST, &keys) != 0) goto out;
    if (tb_legacy_storages(&vm, keys) != 0) goto out;
    rc = tb_collect(file, dict, err);
out:
    vm_free(&vm);
    if (rc != 0) {
        tb_close(file);
        return NULL;
    }
    return file;
}

/* A file is read through the zip's central directory, so a file cut anywhere (even
 * after the last storage) is an error; a stream can only be read entry by entry. */
static struct archive *tb_new_reader(const char *where, int seekable, bp_err *err) {
    struct archive *ar = archive_read_new();
    if (!ar || (seekable ? archive_read_support_format_zip_seekable(ar)
                         : archive_read_support_format_zip_streamable(ar)) != ARCHIVE_OK) {
        if (ar) archive_read_free(ar);
        bp_err_set(err, "cannot set up libarchive (%s)", where);
        return NULL;
    }
    return ar;
}

tb_file *tb_open(const char *path, bp_err *err) {
    /* Look at the magic first so a legacy file gets a useful message, not "not a zip". */
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        bp_err_set(err, "cannot open: %s (%s)", strerror(errno), path);
        return NULL;
    }
    struct stat st;
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, fp);
    int stat_ok = fstat(fileno(fp), &st) == 0;
    fclose(fp);
    if (got < 4) {
        bp_err_set(err, "truncated pytorch checkpoint: %zu bytes (%s)", got, path);
        return NULL;
    }
    if (magic[0] == 0x80 && magic[1] <= 5) return tb_load_legacy(path, err);
    if (memcmp(magic, "PK\x03\x04", 4) != 0) {
        bp_err_set(err, "not a torch.save file: neither a zip (PK\\3\\4) nor a legacy pickle (0x80), it starts "
                   "%02x %02x %02x %02x (%s)", magic[0], magic[1], magic[2], magic[3], path);
        return NULL;
    }
    struct archive *ar = tb_new_reader(path, 1, err);
    if (!ar) return NULL;
    if (archive_read_open_filename(ar, path, 1 << 16) != ARCHIVE_OK) {
        const char *why = archive_error_string(ar);
        bp_err_set(err, "cannot open zip: %s (%s)", why && *why ? why : "damaged or truncated", path);
        archive_read_free(ar);
        return NULL;
    }
    return tb_load(ar, path, stat_ok && st.st_size > 0 ? (uint64_t)st.st_size : 65536, err);
}

tb_file *tb_read_fd(int fd, const char *label, bp_err *err) {
    struct archive *ar = tb_new_reader(label, 0, err);
    if (!ar) return NULL;
    if (archive_read_open_fd(ar, fd, 1 << 16) != ARCHIVE_OK) {
        const char *why = archive_error_string(ar);
        bp_err_set(err, "cannot read zip: %s: not a torch.save zip archive (legacy non-zip format is not supported) (%s)",
                   why && *why ? why : "unreadable", label);
        archive_read_free(ar);
        return NULL;
    }
    /* A stream's entries get at most 64 MiB up front; larger ones grow as their bytes arrive. */
    return tb_load(ar, label, 64 * BP_MIB, err);
}
