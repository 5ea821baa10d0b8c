/* model/params.c — the named-parameter list (see params.h).
 * Must never: touch tensor memory. */
#include "model/params.h"

#include "backend/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

model_param *param_list_add(param_list *list, const char *name, float *value, float *grad, int decay,
                            const float *memory, size_t flat_base, int ndim, int64_t d0, int64_t d1, int64_t d2,
                            bp_err *err) {
    if (list->n == list->cap) {
        int cap = list->cap ? 2 * list->cap : 64;
        model_param *grown = realloc(list->items, (size_t)cap * sizeof *grown);
        if (!grown) {
            bp_err_set(err, "out of memory listing parameters (%s)", name);
            return NULL;
        }
        list->items = grown;
        list->cap = cap;
    }
    model_param *p = &list->items[list->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    int64_t dims[3] = { d0, d1, d2 };
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = dims[d];
        p->numel *= (size_t)dims[d];
    }
    p->value = value;
    p->grad = grad;
    p->decay = decay;
    p->trainable = p->used = 1;
    p->flat_offset = flat_base + (size_t)(value - memory);
    p->state_offset = -1;
    return p;
}

void param_list_free(param_list *list) {
    free(list->items);
    memset(list, 0, sizeof *list);
}

float param_draw_uniform(uint64_t seed, uint64_t index) {
    uint64_t a = backend_splitmix64(seed ^ backend_splitmix64(index));
    return (float)(a >> 40) * (1.0f / 16777216.0f);
}

float param_draw_normal(uint64_t seed, uint64_t index) {
    uint64_t a = backend_splitmix64(seed ^ backend_splitmix64(2 * index));
    uint64_t b = backend_splitmix64(seed ^ backend_splitmix64(2 * index + 1));
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0);   /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void linear_init_host(float *weight, float *bias, int out, int in, uint64_t seed) {
    /* kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(in), the bias the same */
    float bound = 1.0f / sqrtf((float)in);
    size_t n = (size_t)out * in;
    for (size_t i = 0; i < n; i++) weight[i] = (2.0f * param_draw_uniform(seed, i) - 1.0f) * bound;
    for (int i = 0; i < out; i++) bias[i] = (2.0f * param_draw_uniform(seed ^ 0x5bd1e995u, (uint64_t)i) - 1.0f) * bound;
}
