/* eval/qa_examples.h — the examples of a QA evaluation and the logits of their windows,
 * gathered by example id, then one answer per example through qa_post_process.
 *
 * The postprocess stage and train's in-process evaluation both use it, so the answers train
 * reports during training are the very ones eval | postprocess | score gives on the same
 * weights: same windows in the same order, same options, same code.
 * Must never: know about frames, print, or exit; answer an example from a window given twice.
 */
#ifndef BP_QA_EXAMPLES_H
#define BP_QA_EXAMPLES_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "eval/qa_postprocess.h"

/* One window's logits, copied. */
typedef struct qa_window_logits {
    int window, T;                    /* the window's index in its example; tokens */
    float *start, *end;               /* (T,) */
    qa_post_offset *offsets;          /* (T,) */
    int32_t gold_start, gold_end;     /* the window's answer positions; -1 when unknown */
} qa_window_logits;

typedef struct qa_example {
    char *id, *context;
    char **answers;                   /* n_answers gold texts, then NULL */
    int n_answers, is_impossible;
    qa_window_logits *windows;        /* as added; qa_example_predict sorts them by window */
    int n_windows, cap_windows;
} qa_example;

/* The examples in the order they were added, and an index by id. */
typedef struct qa_examples {
    qa_example *ex;
    size_t n, cap;
    size_t *slots;                    /* private: open addressing, index + 1, 0 = empty */
    size_t n_slots;
} qa_examples;

/* An empty set. Can't fail. Free with qa_examples_free. */
void qa_examples_init(qa_examples *xs);

/* Add an example (everything is copied; answers[i] is answer_lens[i] bytes). Returns 0, 1
 * when an example of that id is already there (the first is kept, this one is not added), or
 * -1 with err when out of memory. */
int qa_examples_add(qa_examples *xs, const char *id, size_t id_len, const char *context, size_t context_len,
                    const char *const *answers, const size_t *answer_lens, int n_answers, int is_impossible,
                    bp_err *err);

/* The example of id (id_len bytes, compared whole), or NULL. */
qa_example *qa_examples_find(const qa_examples *xs, const char *id, size_t id_len);

/* One more window of e: T tokens of start and end logits, offsets as T (start, end) pairs,
 * its gold positions (-1 when unknown). Returns 0, or -1 with err when out of memory. */
int qa_example_add_window(qa_example *e, int window, int T, const float *start, const float *end,
                          const int32_t *offsets, int32_t gold_start, int32_t gold_end, bp_err *err);

/* The answer of e from every window it has (at least one): windows sorted by index, then
 * qa_post_process. Fills *res (free with qa_post_result_free); candidates' `window` index
 * e->windows. Returns 0, or -1 with err "example ID: WHAT" (a window given twice, what
 * qa_post_process refuses, out of memory). */
int qa_example_predict(qa_example *e, const qa_post_options *options, qa_post_result *res, bp_err *err);

/* Forget every example's windows, keeping the examples (the next evaluation's logits). */
void qa_examples_clear_windows(qa_examples *xs);

/* Free everything; xs is empty afterwards. */
void qa_examples_free(qa_examples *xs);

#endif
