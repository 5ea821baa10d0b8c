/* model/params.h — the list of named parameters every model component fills in: torch's name
 * and shape of each tensor, where its value and gradient live on the device, and whether it
 * trains (requires_grad), gets a gradient at all in this variant, and takes weight decay.
 * model/model.c builds the parameter counts, the optimizer segments and the checkpoint tensors
 * from it, so a component never deals with any of those itself.
 * Must never: allocate tensor memory or touch it (entries only point at device memory).
 */
#ifndef BP_PARAMS_H
#define BP_PARAMS_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

typedef struct model_param {
    char name[160];           /* as the notebook's nn.Module names it in its state_dict */
    int ndim;
    int64_t shape[3];
    size_t numel;
    float *value, *grad;      /* device; grad NULL when no gradient is kept for it */
    int decay;                /* weights and embeddings: 1; biases and LayerNorm: 0 (HF Trainer) */
    const uint8_t *touched;   /* row flags of a row-sparse gradient (embeddings), else NULL */
    size_t row_len;           /* elements per flagged row */
    int trainable;            /* not frozen: torch's requires_grad, what the counts report */
    int used;                 /* receives a gradient in this variant: BertModel's pooler under an
                                 rnn head does not, and torch's optimizers then skip it */
    size_t flat_offset;       /* floats from the start of the model's host layout */
    long state_offset;        /* floats into each optimizer buffer; -1: not optimized */
} model_param;

typedef struct param_list {
    model_param *items;
    int n, cap;
} param_list;

/* Append a parameter of shape (d0[, d1[, d2]]) (ndim 1..3): trainable and used, no sparse rows,
 * flat_offset = flat_base + (value - memory), i.e. the component's host block at flat_base
 * mirrors its device allocation `memory`. Returns the entry (valid until the next add), or NULL
 * with err when out of memory. */
model_param *param_list_add(param_list *list, const char *name, float *value, float *grad, int decay,
                            const float *memory, size_t flat_base, int ndim, int64_t d0, int64_t d1, int64_t d2,
                            bp_err *err);
void param_list_free(param_list *list);

/* Counter-based draws for fresh weights, so that one seed gives one model on any backend:
 * element `index` of a tensor seeded `seed`. Uniform in [0, 1); standard normal. */
float param_draw_uniform(uint64_t seed, uint64_t index);
float param_draw_normal(uint64_t seed, uint64_t index);
/* nn.Linear's default initialisation of a weight (out, in) and its bias (kaiming_uniform with
 * a = sqrt(5): both uniform(+-1/sqrt(in))), into host memory. Can't fail. */
void linear_init_host(float *weight, float *bias, int out, int in, uint64_t seed);

#endif
