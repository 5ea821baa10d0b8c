/* bench_batches.h — what the training benchmarks share: the batch formula (the same in their
 * PyTorch peers, tests/reference/bench_*_torch.py, so both sides run the same tokens, padding
 * and targets), CPU time, and the command line's --name value lookups. Header-only, static.
 * Must never: be part of the test suite.
 */
#ifndef BP_BENCH_BATCHES_H
#define BP_BENCH_BATCHES_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/log.h"
#include "model/bert.h"

/* Batch k of the benchmark (same formula as bench_train_torch.py): row b has length
 * T - ((b * 7 + k * 3) % (T / 4)); ids (b * 1009 + t * 131 + k * 17) % (V - 1000) + 1000 with
 * [CLS] = 101 first and [SEP] = 102 last; second segment from the middle. */
static inline void make_batch(int k, int B, int T, int V, int num_labels, int32_t *ids, int32_t *types,
                       int32_t *mask, int32_t *labels, int32_t *starts, int32_t *ends) {
    for (int b = 0; b < B; b++) {
        int len = T - ((b * 7 + k * 3) % (T / 4));
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            ids[i] = t < len ? (b * 1009 + t * 131 + k * 17) % (V - 1000) + 1000 : 0;
            if (t == 0) ids[i] = 101;
            if (t == len - 1) ids[i] = 102;
            types[i] = t < len && t >= len / 2 ? 1 : 0;
            mask[i] = t < len;
        }
        labels[b] = (b + k) % num_labels;
        starts[b] = (b * 5 + k) % len;
        ends[b] = starts[b] + (b % 4) < len ? starts[b] + (b % 4) : len - 1;
    }
}

static inline double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static inline long arg_int(int argc, char **argv, const char *name, long fallback) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return strtol(argv[i + 1], NULL, 10);
    return fallback;
}
static inline const char *arg_str(int argc, char **argv, const char *name, const char *fallback) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return fallback;
}

/* Host arrays for batches of B x T and a bert_batch over them (labels, or start/end positions). */
typedef struct bench_inputs {
    int32_t *ids, *types, *mask, *labels, *starts, *ends;
    bert_batch batch;
} bench_inputs;

/* Dies when out of memory. */
static inline void bench_inputs_alloc(bench_inputs *in, int B, int T, int qa) {
    size_t N = (size_t)B * T;
    in->ids = malloc(N * 4); in->types = malloc(N * 4); in->mask = malloc(N * 4);
    in->labels = malloc((size_t)B * 4); in->starts = malloc((size_t)B * 4); in->ends = malloc((size_t)B * 4);
    if (!in->ids || !in->types || !in->mask || !in->labels || !in->starts || !in->ends) bp_die(1, NULL, "out of memory");
    in->batch = (bert_batch){ .B = B, .T = T, .input_ids = in->ids, .token_type_ids = in->types, .attention_mask = in->mask };
    if (qa) { in->batch.start_positions = in->starts; in->batch.end_positions = in->ends; }
    else in->batch.labels = in->labels;
}

/* Batch k (make_batch) into the arrays. */
static inline void bench_inputs_fill(bench_inputs *in, int k, int V, int num_labels) {
    make_batch(k, in->batch.B, in->batch.T, V, num_labels, in->ids, in->types, in->mask, in->labels, in->starts, in->ends);
}

static inline void bench_inputs_free(bench_inputs *in) {
    free(in->ids); free(in->types); free(in->mask); free(in->labels); free(in->starts); free(in->ends);
}

#endif
