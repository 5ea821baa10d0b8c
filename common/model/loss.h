/* model/loss.h — the training objectives every model variant ends in, on a backend, with torch's
 * reductions: cross-entropy over classes (F.cross_entropy, label -100 ignored), BCE with logits
 * on one logit (nn.BCEWithLogitsLoss), mean-squared error (nn.MSELoss) and
 * BertForQuestionAnswering's span loss ((CE(start) + CE(end)) / 2, positions clamped to [0, T],
 * T ignored). Means are over the targets counted; a batch with none counted adds 0 (torch: NaN).
 * Must never: allocate device memory (the caller plans the target buffers), print or exit.
 */
#ifndef BP_LOSS_H
#define BP_LOSS_H
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"

typedef enum loss_kind {
    LOSS_CROSS_ENTROPY = 0,   /* logits [B, classes], int labels */
    LOSS_BCE = 1,             /* logits [B] (one per row), float targets */
    LOSS_MSE = 2,             /* logits [B], float targets */
    LOSS_QA_SPAN = 3,         /* logits [B*T, 2] (start, end per token), start/end positions */
} loss_kind;

/* One batch's targets on the device. ids and values point into the caller's buffers, planned
 * for the largest batch: ids [2 * max_B], values [max_B]. */
typedef struct loss_targets {
    loss_kind kind;
    int classes;              /* cross-entropy */
    int32_t *ids;             /* class ids, or start positions then end positions */
    float *values;            /* float targets */
    int B, T;                 /* of the last upload */
    int counted, counted_end; /* targets in the means: labels other than -100 (CE), all rows
                                 (BCE, MSE), starts < T (QA); ends < T (QA) */
} loss_targets;

/* Copy the targets of a batch of B rows x T tokens for t->kind: labels (CE; BCE and MSE read
 * them as floats when values is NULL, as HF's .float()), values, or start and end positions
 * (QA, clamped to [0, T]). Returns 1 when the batch has them, 0 when it has none (no loss), -1
 * with err when out of host memory or QA has one of starts/ends only. */
int loss_upload(backend *be, loss_targets *t, int B, int T, const int32_t *labels, const float *values,
                const int32_t *starts, const int32_t *ends, bp_err *err);

/* *loss_out += the loss of logits (layout per kind above) for the uploaded targets;
 * dlogits (same layout) = loss_scale * d(loss)/d(logits). Can't fail (a backend failure shows
 * at its check op). */
void loss_apply(backend *be, const loss_targets *t, const float *logits, float *dlogits, float *loss_out,
                float loss_scale);

#endif
