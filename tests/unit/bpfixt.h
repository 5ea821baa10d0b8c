/* bpfixt.h — reader of the BPFIXT01 fixtures that tests/reference/bert_ref.py and
 * bf16_autocast_ref.py write (format at the top of bert_ref.py): named f32 / i32 tensors.
 * Header-only, static: each test binary has its own copy. Must never: need files outside
 * tests/.
 */
#ifndef BP_BPFIXT_H
#define BP_BPFIXT_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

typedef struct fx_tensor {
    char name[160];
    int dtype;   /* 0 f32, 1 i32 */
    int ndim;
    uint32_t dims[4];
    size_t count;
    void *data;
} fx_tensor;

typedef struct fixture {
    int n;
    fx_tensor *t;
} fixture;

static void fixture_free(fixture *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].data);
    free(f->t);
    f->n = 0;
    f->t = NULL;
}

static int read_exact(FILE *fp, void *dst, size_t n) { return fread(dst, 1, n, fp) == n ? 0 : -1; }

static int fixture_load(const char *path, fixture *f) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) { tap_diag("cannot open %s", path); return -1; }
    char magic[8];
    uint32_t count;
    if (read_exact(fp, magic, 8) || memcmp(magic, "BPFIXT01", 8) || read_exact(fp, &count, 4) || count > 100000) {
        fclose(fp);
        tap_diag("%s: not a BPFIXT01 fixture", path);
        return -1;
    }
    f->t = calloc(count, sizeof *f->t);
    if (!f->t) { fclose(fp); return -1; }
    for (uint32_t i = 0; i < count; i++) {
        fx_tensor *t = &f->t[i];
        uint16_t len;
        uint8_t dtype, ndim;
        if (read_exact(fp, &len, 2) || len >= sizeof t->name || read_exact(fp, t->name, len) ||
            read_exact(fp, &dtype, 1) || read_exact(fp, &ndim, 1) || ndim > 4 || dtype > 1 ||
            read_exact(fp, t->dims, 4u * ndim))
            goto bad;
        t->dtype = dtype;
        t->ndim = ndim;
        t->count = 1;
        for (int d = 0; d < ndim; d++) t->count *= t->dims[d];
        t->data = malloc(t->count * 4 + 1);
        f->n = (int)i + 1;
        if (!t->data || read_exact(fp, t->data, t->count * 4)) goto bad;
    }
    fclose(fp);
    return 0;
bad:
    tap_diag("%s: truncated or malformed at tensor %d", path, f->n);
    fclose(fp);
    fixture_free(f);
    return -1;
}

static const fx_tensor *fx_get(const fixture *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}
static const float *fx_f32(const fixture *f, const char *name) {
    const fx_tensor *t = fx_get(f, name);
    return t && t->dtype == 0 ? t->data : NULL;
}
static const int32_t *fx_i32(const fixture *f, const char *name) {
    const fx_tensor *t = fx_get(f, name);
    return t && t->dtype == 1 ? t->data : NULL;
}

#endif
