/* stage/bert_input.h — what train and eval share between batch frames and the model: the
 * largest batch a stream announces, the device, the vocabulary check, and one batch frame
 * copied into the host tensors a bert_batch points at.
 *
 * Only stages include this (it dies where it says so); the model never sees a frame.
 *
 * Must never: be included by library code, or decide anything about the model beyond the
 * shapes and ids a batch frame carries.
 */
#ifndef BP_BERT_INPUT_H
#define BP_BERT_INPUT_H
#include "model/bert.h"
#include "wire/frame.h"

/* The backend --device, --threads and --precision ask for; logs the choice ("device: cpu
 * (...)"), dies when it cannot be had. Destroy it with be->destroy(be). */
backend *bp_open_device(const char *device, int threads, const char *precision);

/* batch_size and max_length of a batch stream's hello: the largest batch to plan for. Dies
 * naming the input when they are absent ("is this a batch stream?") or out of range. */
void bp_batch_shape(const bp_frame *hello, const char *in_spec, int *max_B, int *max_T);

/* The tokenizer's vocabulary (the hello's vocab_size, when it has one) must fit the model's
 * embedding: an id past it means vocab.txt and checkpoint do not belong together, better
 * said here than as a bad id in the first batch. Dies otherwise. */
void bp_check_vocab_fits(const bp_frame *hello, int vocab_size);

/* Host copies of one batch frame's tensors, for batches up to max_B x max_T. */
typedef struct bp_batch_tensors {
    int max_B, max_T;
    int32_t *input_ids, *token_type_ids, *attention_mask;   /* [max_B, max_T] */
    int32_t *labels, *start_positions, *end_positions;      /* [max_B] */
    float *label_values;                                    /* [max_B]: labels as regression targets */
} bp_batch_tensors;

/* Dies when out of memory. */
void bp_batch_tensors_alloc(bp_batch_tensors *h, int max_B, int max_T);
void bp_batch_tensors_free(bp_batch_tensors *h);

/* Copy batch frame f into h and point b at it: the inputs always; with `targets` (a model's
 * config) also what its head learns from: start/end positions (QA), labels checked against
 * num_labels (classification), or labels and labels as values (num_labels 1: regression, BCE's
 * one logit). Returns 0, or -1 with err naming the frame ("tensor 'labels' ... (batch frame 3)",
 * "batch of 16 x 14 exceeds the hello's 8 x 32, its batch_size x max_length (batch frame 3)"). */
int bp_batch_read(const bp_frame *f, const bert_config *targets, bp_batch_tensors *h, bert_batch *b, bp_err *err);

#endif
