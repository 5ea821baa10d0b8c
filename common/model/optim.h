/* model/optim.h — the optimizers (torch.optim.AdamW, Adam and SGD), the linear warm-up/decay
 * schedule and global-norm clipping, with the exact semantics of torch.optim, transformers'
 * get_linear_schedule_with_warmup and torch.nn.utils.clip_grad_norm_ (AdamW is what the
 * Hugging Face Trainer runs by default).
 *
 * The optimizer sees parameters as device arrays cut into segments (runs of tensors sharing a
 * weight-decay setting); it owns its state buffers (AdamW/Adam: two moments; SGD with momentum:
 * the momentum buffer; plain SGD: none) and the step count. Only the parameters a segment covers
 * have state: frozen ones are simply left out.
 * Must never: know BERT or parameter names (the model lays out the segments), or touch memory
 * except through backend ops.
 */
#ifndef BP_OPTIM_H
#define BP_OPTIM_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"

/* A run of rows*row_len parameters with one weight-decay setting: param and grad are device
 * pointers, state_offset where its state starts in each of the optimizer's buffers.
 * touched (device, may be NULL): per-row flags of a row-sparse gradient (see backend.h). */
typedef struct optim_segment {
    float *param;
    const float *grad;
    size_t state_offset, rows, row_len;
    int decay;
    const uint8_t *touched;
} optim_segment;

typedef enum optim_kind {
    OPTIM_ADAMW = 0,   /* torch.optim.AdamW: decoupled decay p *= 1 - lr * wd */
    OPTIM_ADAM = 1,    /* torch.optim.Adam: L2 decay, g += wd * p, before the moments */
    OPTIM_SGD = 2,     /* torch.optim.SGD: L2 decay, momentum, dampening, Nesterov */
} optim_kind;

typedef struct optim_config {
    optim_kind kind;        /* OPTIM_ADAMW */
    float lr;               /* peak learning rate */
    float beta1, beta2;     /* 0.9, 0.999 (Adam, AdamW) */
    float eps;              /* 1e-8 (Adam, AdamW) */
    float weight_decay;     /* applied to segments with decay = 1 only */
    float momentum;         /* 0 (SGD; 0 keeps no state) */
    float dampening;        /* 0 (SGD) */
    int nesterov;           /* 0 (SGD; needs momentum > 0 and dampening 0, as torch) */
    float max_grad_norm;    /* <= 0: no clipping */
    long warmup_steps;      /* linear warm-up from 0 */
    long total_steps;       /* linear decay to 0 at total_steps */
} optim_config;

/* Fill cfg with the Trainer's defaults (AdamW, lr 5e-5, betas 0.9/0.999, eps 1e-8, no decay,
 * max_grad_norm 1, no warm-up, total_steps 0 = constant after warm-up; SGD fields 0).
 * Can't fail. */
void optim_config_default(optim_config *cfg);

/* "adamw", "adam" or "sgd" -> kind. Returns 0, or -1 with err naming the value. */
int optim_parse_kind(const char *name, optim_kind *out, bp_err *err);
/* The name optim_parse_kind reads. Can't fail. */
const char *optim_kind_name(optim_kind kind);
/* Check the settings torch would refuse (negative rates, Nesterov without momentum or with
 * dampening, betas outside [0, 1)). Returns 0, or -1 with err naming the field. */
int optim_config_check(const optim_config *cfg, bp_err *err);

typedef struct optimizer {
    backend *be;
    optim_config cfg;
    size_t n;          /* parameters covered (the sum of the segments' sizes) */
    float *m, *v;      /* state [n] each (device), one allocation: Adam(W) moments; SGD: m is the
                          momentum buffer and v NULL; plain SGD: both NULL */
    long step;         /* optimizer steps taken (t of the bias corrections; scheduler step) */
} optimizer;
typedef optimizer optim_adamw;   /* the name of its first kind, kept for existing callers */

/* The state buffers an optimizer of this kind keeps (2, 1 or 0). Can't fail. */
int optim_state_count(const optim_config *cfg);
/* Their names in torch's optimizer state_dict ("exp_avg", "exp_avg_sq"; "momentum_buffer"),
 * index < optim_state_count. Can't fail. */
const char *optim_state_name(const optim_config *cfg, int index);
/* Device pointer of state buffer `index` (opt->m or opt->v). */
float *optim_state_buffer(optimizer *opt, int index);

/* Create an optimizer for n parameters; its state starts at zero. Caller frees with optim_free.
 * Returns NULL with err filled when out of memory or the config is invalid. */
optimizer *optim_create(backend *be, const optim_config *cfg, size_t n, bp_err *err);
void optim_free(optimizer *opt);

/* Learning rate for the next step under get_linear_schedule_with_warmup: peak lr times
 * step/warmup during warm-up, then (total - step)/(total - warmup), never below 0.
 * `step` counts steps already taken (the first update uses step 0). total <= 0: no decay. */
float optim_schedule_lr(const optim_config *cfg, long step);

/* Global L2 norm of the gradients over all segments (row-sparse rows skipped when untouched). */
double optim_grad_norm(optimizer *opt, const optim_segment *segs, int nseg);

/* One update: clip to cfg.max_grad_norm (scale folded into the update, gradients left as they
 * are), scheduled learning rate, the optimizer's rule on every parameter of every segment
 * (untouched sparse rows included, with zero gradient), then step += 1. *grad_norm_out (may be
 * NULL) gets the norm before clipping and *lr_out (may be NULL) the rate used. Returns -1 with
 * err filled when the gradient norm is not finite (nothing is updated then; when a backend
 * failure made it so, err is that failure), when a segment reaches past the state, or with the
 * backend's failure when an update op met one (step is not advanced; the parameters are
 * unknown). */
int optim_step(optimizer *opt, const optim_segment *segs, int nseg, double *grad_norm_out, float *lr_out,
               bp_err *err);

#endif
