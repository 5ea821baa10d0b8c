/* stage/json_view.h — the reading options tap and frames2json share: --vocab FILE shows the
 * token of each input id beside it and the text span of each offset pair, --examples SPEC
 * gives those spans the contexts of another stream's examples, --arrays shows tensors as JSON
 * arrays (wire/framejson.h).
 *
 * Spans: the offsets of a QA feature (and of a batch or logits frame) index the context of its
 * example, which travels in the example stream, not beside the offsets. With --vocab or
 * --examples the stage keeps the context of every QA example frame it sees, by example_id:
 * those of --examples SPEC (read whole before the input), and those that come earlier in its
 * own input (a stream that holds both kinds). An offsets tensor whose example is known gets
 * "spans"; one whose example is not, none. Memory: one copy of each distinct context.
 *
 * Must never: be used for a recording meant for replay (json2frames reads base64 tensors
 * only: these views are for people).
 */
#ifndef BP_JSON_VIEW_H
#define BP_JSON_VIEW_H
#include <getopt.h>

#include "wire/framejson.h"

#define BP_OPT_VIEW_VOCAB 0x1101
#define BP_OPT_VIEW_ARRAYS 0x1102
#define BP_OPT_VIEW_EXAMPLES 0x1103
#define BP_JSON_VIEW_LONGOPTS                              \
    {"vocab", required_argument, 0, BP_OPT_VIEW_VOCAB},    \
    {"examples", required_argument, 0, BP_OPT_VIEW_EXAMPLES}, \
    {"arrays", no_argument, 0, BP_OPT_VIEW_ARRAYS}
#define BP_JSON_VIEW_USAGE                                                                          \
    "  --vocab FILE      add \"tokens\" after each input_ids: the vocab.txt line of every id, and\n"  \
    "                    \"spans\" after each QA offsets: the context text of every pair (not replayable)\n" \
    "  --examples SPEC   the QA examples whose contexts the spans show (e.g. file:PATH; those in\n"  \
    "                    the input itself are used too)\n"                                        \
    "  --arrays          show tensors' data as JSON arrays of numbers, not base64 (not replayable)\n"

/* Handle one getopt result if it is a view option (--vocab loads the file, dying with the
 * one error line when it cannot): returns 1 when handled. */
int bp_json_view_option(bp_json_opts *opts, int opt, const char *arg);
/* Keep f's context when spans are on (--vocab or --examples) and f is a QA example: call it
 * for every frame before printing it. */
void bp_json_view_note(const bp_json_opts *opts, const bp_frame *f);

#endif
