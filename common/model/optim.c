/* model/optim.c — AdamW, Adam and SGD + linear schedule + clipping over parameter segments (see
 * optim.h).
 * Must never: read or write tensor memory directly (only through the backend), or know what
 * the parameters are. */
#include "model/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = { "adamw", "adam", "sgd" };

void optim_config_default(optim_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = OPTIM_ADAMW;
    cfg->lr = 5e-5f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
    cfg->weight_decay = 0.0f;
    cfg->max_grad_norm = 1.0f;
    cfg->warmup_steps = 0;
    cfg->total_steps = 0;
}

int optim_parse_kind(const char *name, optim_kind *out, bp_err *err) {
    for (int k = 0; k < 3; k++)
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (optim_kind)k;
            return 0;
        }
    return bp_err_set(err, "optimizer '%s' unknown (adamw, adam, sgd)", name);
}

const char *optim_kind_name(optim_kind kind) {
    return (unsigned)kind < 3 ? kind_names[kind] : "unknown";
}

int optim_config_check(const optim_config *cfg, bp_err *err) {
    if ((unsigned)cfg->kind > OPTIM_SGD) return bp_err_set(err, "optimizer kind %d unknown (optim)", (int)cfg->kind);
    if (!(cfg->lr >= 0)) return bp_err_set(err, "learning rate %g must not be negative (optim)", cfg->lr);
    if (!(cfg->weight_decay >= 0)) return bp_err_set(err, "weight decay %g must not be negative (optim)", cfg->weight_decay);
    if (cfg->kind != OPTIM_SGD) {
        if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1))
            return bp_err_set(err, "betas %g, %g must be in [0, 1) (optim)", cfg->beta1, cfg->beta2);
        if (!(cfg->eps >= 0)) return bp_err_set(err, "eps %g must not be negative (optim)", cfg->eps);
        return 0;
    }
    if (!(cfg->momentum >= 0)) return bp_err_set(err, "momentum %g must not be negative (optim)", cfg->momentum);
    if (cfg->nesterov && (cfg->momentum <= 0 || cfg->dampening != 0))
        return bp_err_set(err, "Nesterov momentum requires a momentum and zero dampening (optim)");
    return 0;
}

int optim_state_count(const optim_config *cfg) {
    if (cfg->kind == OPTIM_SGD) return cfg->momentum != 0 ? 1 : 0;
    return 2;
}

const char *optim_state_name(const optim_config *cfg, int index) {
    if (cfg->kind == OPTIM_SGD) return "momentum_buffer";
    return index == 0 ? "exp_avg" : "exp_avg_sq";
}

float *optim_state_buffer(optimizer *opt, int index) { return index == 0 ? opt->m : opt->v; }

optimizer *optim_create(backend *be, const optim_config *cfg, size_t n, bp_err *err) {
    if (optim_config_check(cfg, err) != 0) return NULL;
    optimizer *opt = calloc(1, sizeof *opt);
    if (!opt) {
        bp_err_set(err, "out of memory creating the optimizer");
        return NULL;
    }
    opt->be = be;
    opt->cfg = *cfg;
    opt->n = n;
    int buffers = optim_state_count(cfg);
    if (buffers == 0) return opt;
    /* all state in one allocation */
    opt->m = be->alloc(be, (size_t)buffers * n * sizeof(float), err);
    if (!opt->m) {
        free(opt);
        return NULL;
    }
    opt->v = buffers == 2 ? opt->m + n : NULL;
    return opt;
}

void optim_free(optimizer *opt) {
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

double optim_grad_norm(optimizer *opt, const optim_segment *segs, int nseg) {
    double sum = 0.0;
    for (int s = 0; s < nseg; s++)
        sum += opt->be->sumsq(opt->be, segs[s].grad, segs[s].rows, segs[s].row_len, segs[s].touched);
    return sqrt(sum);
}

/* The Adam family: AdamW decays the weights before the update, Adam adds wd * p to g. */
static void adam_segment(optimizer *opt, const optim_segment *seg, backend_adamw_args args, float lr) {
    const optim_config *cfg = &opt->cfg;
    double weight_decay = seg->decay ? (double)cfg->weight_decay : 0.0;
    if (cfg->kind == OPTIM_ADAMW) {
        args.decay = (float)(1.0 - (double)lr * weight_decay);
    } else {
        args.decay = 1.0f;
        args.l2 = (float)weight_decay;
    }
    opt->be->adamw(opt->be, seg->param, seg->grad, opt->m + seg->state_offset, opt->v + seg->state_offset,
                   seg->rows, seg->row_len, seg->touched, &args);
}

int optim_step(optimizer *opt, const optim_segment *segs, int nseg, double *grad_norm_out, float *lr_out,
               bp_err *err) {
    const optim_config *cfg = &opt->cfg;
    for (int s = 0; s < nseg; s++)
        if (segs[s].state_offset + segs[s].rows * segs[s].row_len > opt->n)
            return bp_err_set(err, "segment %d reaches past the optimizer's %zu parameters (optim)", s, opt->n);
    double norm = optim_grad_norm(opt, segs, nseg);
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
    if (cfg->kind == OPTIM_SGD) {
        backend_sgd_args args = { .lr = lr, .momentum = cfg->momentum, .dampening = cfg->dampening,
                                  .nesterov = cfg->nesterov, .first = opt->step == 0, .grad_scale = grad_scale };
        for (int s = 0; s < nseg; s++) {
            args.weight_decay = segs[s].decay ? cfg->weight_decay : 0.0f;
            opt->be->sgd(opt->be, segs[s].param, segs[s].grad, opt->m ? opt->m + segs[s].state_offset : NULL,
                         segs[s].rows, segs[s].row_len, segs[s].touched, &args);
        }
    } else {
        double bias_correction1 = 1.0 - pow((double)cfg->beta1, (double)t);
        double bias_correction2 = 1.0 - pow((double)cfg->beta2, (double)t);
        backend_adamw_args args = {
            .beta1 = cfg->beta1, .beta2 = cfg->beta2, .eps = cfg->eps,
            .step_size = (float)((double)lr / bias_correction1),
            .bias_correction2_sqrt = (float)sqrt(bias_correction2),
            .grad_scale = grad_scale,
        };
        for (int s = 0; s < nseg; s++) adam_segment(opt, &segs[s], args, lr);
    }
    if (opt->be->check(opt->be, err) != 0) return -1;
    opt->step = t;
    return 0;
}
