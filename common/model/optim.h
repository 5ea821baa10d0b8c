/* model/optim.h — AdamW, the linear warm-up/decay schedule and global-norm clipping, with the exact
 * semantics of torch.optim.AdamW, transformers' get_linear_schedule_with_warmup and
 * torch.nn.utils.clip_grad_norm_ (what the Hugging Face Trainer runs by default).
 *
 * The optimizer sees parameters as flat device arrays cut into segments (one per group of
 * tensors sharing a weight-decay setting); it owns the two moment buffers and the step count.
 * Must never: know BERT or parameter names (the model lays out the segments), or touch memory
 * except through backend ops.
 */
#ifndef BP_OPTIM_H
#define BP_OPTIM_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"

/* A run of parameters [offset, offset + rows*row_len) with one weight-decay setting.
 * touched (device, may be NULL): per-row flags of a row-sparse gradient (see backend.h). */
typedef struct optim_segment {
    size_t offset, rows, row_len;
    int decay;
    const uint8_t *touched;
} optim_segment;

typedef struct optim_config {
    float lr;               /* peak learning rate */
    float beta1, beta2;     /* 0.9, 0.999 */
    float eps;              /* 1e-8 */
    float weight_decay;     /* applied to segments with decay = 1 only */
    float max_grad_norm;    /* <= 0: no clipping */
    long warmup_steps;      /* linear warm-up from 0 */
    long total_steps;       /* linear decay to 0 at total_steps */
} optim_config;

/* Fill cfg with the Trainer's defaults (lr 5e-5, betas 0.9/0.999, eps 1e-8, no decay,
 * max_grad_norm 1, no warm-up, total_steps 0 = constant after warm-up). Can't fail. */
void optim_config_default(optim_config *cfg);

typedef struct optim_adamw {
    backend *be;
    optim_config cfg;
    size_t n;          /* parameters covered */
    float *m, *v;      /* first and second moments [n] (device), one allocation */
    long step;         /* optimizer steps taken (t of the bias corrections; scheduler step) */
} optim_adamw;

/* Create an optimizer for n parameters; moments start at zero. Caller frees with optim_free.
 * Returns NULL with err filled when out of memory. */
optim_adamw *optim_create(backend *be, const optim_config *cfg, size_t n, bp_err *err);
void optim_free(optim_adamw *opt);

/* Learning rate for the next step under get_linear_schedule_with_warmup: peak lr times
 * step/warmup during warm-up, then (total - step)/(total - warmup), never below 0.
 * `step` counts steps already taken (the first update uses step 0). total <= 0: no decay. */
float optim_schedule_lr(const optim_config *cfg, long step);

/* Global L2 norm of the gradients over all segments (row-sparse rows skipped when untouched). */
double optim_grad_norm(optim_adamw *opt, const float *grads, const optim_segment *segs, int nseg);

/* One update: clip to cfg.max_grad_norm (scale folded into AdamW, gradients left as they are),
 * scheduled learning rate, AdamW on every parameter of every segment (untouched sparse rows
 * included, with zero gradient), then step += 1. *grad_norm_out (may be NULL) gets the norm
 * before clipping and *lr_out (may be NULL) the rate used. Returns -1 with err filled when
 * the gradient norm is not finite (nothing is updated then; when a backend failure made it so,
 * err is that failure), or with the backend's failure when an update op met one (step is not
 * advanced; the parameters are unknown). */
int optim_step(optim_adamw *opt, float *params, const float *grads, const optim_segment *segs,
               int nseg, double *grad_norm_out, float *lr_out, bp_err *err);

#endif
