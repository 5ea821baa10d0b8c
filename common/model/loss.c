/* model/loss.c — targets to the device and the objectives on backend ops (see loss.h).
 * Must never: touch device memory other than through the backend, print or exit. */
#include "model/loss.h"

#include <stdlib.h>

static int upload_positions(backend *be, loss_targets *t, int B, int T, const int32_t *starts, const int32_t *ends,
                            bp_err *err) {
    if (!starts && !ends) return 0;
    if (!starts || !ends)
        return bp_err_set(err, "batch has start_positions or end_positions but not both (loss)");
    int32_t *pos = malloc(2 * (size_t)B * sizeof(int32_t));
    if (!pos) return bp_err_set(err, "out of memory reading targets (loss)");
    t->counted = t->counted_end = 0;
    for (int i = 0; i < B; i++) {
        int s = starts[i], e = ends[i];
        s = s < 0 ? 0 : s > T ? T : s;
        e = e < 0 ? 0 : e > T ? T : e;
        pos[i] = s;
        pos[B + i] = e;
        t->counted += s < T;
        t->counted_end += e < T;
    }
    be->upload(be, t->ids, pos, 2 * (size_t)B * sizeof(int32_t));
    free(pos);
    return 1;
}

int loss_upload(backend *be, loss_targets *t, int B, int T, const int32_t *labels, const float *values,
                const int32_t *starts, const int32_t *ends, bp_err *err) {
    t->B = B;
    t->T = T;
    t->counted = t->counted_end = 0;
    if (t->kind == LOSS_QA_SPAN) return upload_positions(be, t, B, T, starts, ends, err);
    if (t->kind == LOSS_CROSS_ENTROPY) {
        if (!labels) return 0;
        for (int i = 0; i < B; i++) t->counted += labels[i] != -100;
        be->upload(be, t->ids, labels, (size_t)B * sizeof(int32_t));
        return 1;
    }
    if (!values && !labels) return 0;
    float *host = malloc((size_t)B * sizeof(float));
    if (!host) return bp_err_set(err, "out of memory reading targets (loss)");
    for (int i = 0; i < B; i++) host[i] = values ? values[i] : (float)labels[i];
    t->counted = B;
    be->upload(be, t->values, host, (size_t)B * sizeof(float));
    free(host);
    return 1;
}

void loss_apply(backend *be, const loss_targets *t, const float *logits, float *dlogits, float *loss_out,
                float loss_scale) {
    int B = t->B, T = t->T;
    float scale = t->counted ? 1.0f / t->counted : 0.0f;
    switch (t->kind) {
    case LOSS_QA_SPAN: {
        float s_scale = t->counted ? 0.5f / t->counted : 0.0f;
        float e_scale = t->counted_end ? 0.5f / t->counted_end : 0.0f;
        be->cross_entropy(be, loss_out, dlogits, logits, t->ids, B, T, 2 * T, 2, s_scale, s_scale * loss_scale);
        be->cross_entropy(be, loss_out, dlogits + 1, logits + 1, t->ids + B, B, T, 2 * T, 2, e_scale,
                          e_scale * loss_scale);
        break;
    }
    case LOSS_MSE:
        be->mse(be, loss_out, dlogits, logits, t->values, B, scale, scale * loss_scale);
        break;
    case LOSS_BCE:
        be->bce_with_logits(be, loss_out, dlogits, logits, t->values, B, scale, scale * loss_scale);
        break;
    case LOSS_CROSS_ENTROPY:
        be->cross_entropy(be, loss_out, dlogits, logits, t->ids, B, t->classes, t->classes, 1, scale,
                          scale * loss_scale);
        break;
    }
}
