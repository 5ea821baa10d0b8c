/* model/optim.c — AdamW + linear schedule + clipping over flat parameter segments (see optim.h).
 * Must never: read or write tensor memory directly (only through the backend), or know what
 * the parameters are. */
#include "model/optim.h"

#include <math.h>
#include <stdlib.h>

void optim_config_default(optim_config *cfg) {
    cfg->lr = 5e-5f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
    cfg->weight_decay = 0.0f;
    cfg->max_grad_norm = 1.0f;
    cfg->warmup_steps = 0;
    cfg->total_steps = 0;
}

optim_adamw *optim_create(backend *be, const optim_config *cfg, size_t n, bp_err *err) {
    optim_adamw *opt = calloc(1, sizeof *opt);
    if (!opt) {
        bp_err_set(err, "out of memory creating the optimizer");
        return NULL;
    }
    opt->be = be;
    opt->cfg = *cfg;
    opt->n = n;
    /* both moments in one allocation */
    opt->m = be->alloc(be, 2 * n * sizeof(float), err);
    if (!opt->m) {
        free(opt);
        return NULL;
    }
    opt->v = opt->m + n;
    return opt;
}

void optim_free(optim_adamw *opt) {
    if (!opt) return;
    opt->be->free(opt->be, opt->m);
    free(opt);
}

float optim_schedule_lr(const optim_config *cfg, long step) {
    double factor;
    if (step < cfg->warmup_steps) {
        factor = (double)step / (double)(cfg->warmup_steps > 1 ? cfg->warmup_steps : 1);
    } else if (cfg->total_steps <= 0) {
        factor = 1.0;
    } else {
        long span = cfg->total_steps - cfg->warmup_steps;
        factor = (double)(cfg->total_steps - step) / (double)(span > 1 ? span : 1);
        if (factor < 0) factor = 0;
    }
    /* LambdaLR multiplies the float lr by a python float: do it in double, round once */
    return (float)((double)cfg->lr * factor);
}

double optim_grad_norm(optim_adamw *opt, const float *grads, const optim_segment *segs, int nseg) {
    double sum = 0.0;
    for (int s = 0; s < nseg; s++)
        sum += opt->be->sumsq(opt->be, grads + segs[s].offset, segs[s].rows, segs[s].row_len,
                              segs[s].touched);
    return sqrt(sum);
}

int optim_step(optim_adamw *opt, float *params, const float *grads, const optim_segment *segs,
               int nseg, double *grad_norm_out, float *lr_out, bp_err *err) {
    const optim_config *cfg = &opt->cfg;
    double norm = optim_grad_norm(opt, grads, segs, nseg);
    if (grad_norm_out) *grad_norm_out = norm;
    if (!isfinite(norm)) {
        /* a failed backend returns NaN: then its failure is the reason, not the gradients */
        if (opt->be->check(opt->be, err) != 0) return -1;
        return bp_err_set(err, "gradient norm is %g at optimizer step %ld (optim)", norm, opt->step + 1);
    }
    float grad_scale = 1.0f;
    if (cfg->max_grad_norm > 0) {
        /* clip_grad_norm_: coef = max / (norm + 1e-6), clamped to 1, all in float32 */
        float coef = cfg->max_grad_norm / ((float)norm + 1e-6f);
        if (coef < 1.0f) grad_scale = coef;
    }
    float lr = optim_schedule_lr(cfg, opt->step);
    if (lr_out) *lr_out = lr;
    long t = opt->step + 1;
    double bias_correction1 = 1.0 - pow((double)cfg->beta1, (double)t);
    double bias_correction2 = 1.0 - pow((double)cfg->beta2, (double)t);
    backend_adamw_args args = {
        .beta1 = cfg->beta1, .beta2 = cfg->beta2, .eps = cfg->eps,
        .step_size = (float)((double)lr / bias_correction1),
        .bias_correction2_sqrt = (float)sqrt(bias_correction2),
        .grad_scale = grad_scale,
    };
    for (int s = 0; s < nseg; s++) {
        const optim_segment *seg = &segs[s];
        double weight_decay = seg->decay ? (double)cfg->weight_decay : 0.0;
        args.decay = (float)(1.0 - (double)lr * weight_decay);
        opt->be->adamw(opt->be, params + seg->offset, grads + seg->offset, opt->m + seg->offset,
                       opt->v + seg->offset, seg->rows, seg->row_len, seg->touched, &args);
    }
    if (opt->be->check(opt->be, err) != 0) return -1;
    opt->step = t;
    return 0;
}
