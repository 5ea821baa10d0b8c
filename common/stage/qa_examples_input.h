/* stage/qa_examples_input.h — a QA example stream (e.g. file:validation.examples, the recording
 * extract made) read whole into eval/qa_examples.h: ids, contexts, gold answer texts and
 * is_impossible. postprocess and train's evaluation read their side input through it, so both
 * keep the same examples in the same order.
 *
 * Only stages include this (it dies where it says so).
 * Must never: keep a second example of an id silently (it warns, the first is used).
 */
#ifndef BP_QA_EXAMPLES_INPUT_H
#define BP_QA_EXAMPLES_INPUT_H
#include "eval/qa_examples.h"

/* Every example frame of the stream at SPEC into xs (initialised here; free it with
 * qa_examples_free). Dies naming SPEC on a bad frame or a stream that does not end with its
 * eos; an id seen twice is one warning. */
void bp_read_qa_examples(const char *spec, qa_examples *xs);

#endif
