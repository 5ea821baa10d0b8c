/* stage/json_view.h — the reading options tap and frames2json share: --vocab FILE shows the
 * token of each input id beside it, --arrays shows tensors as JSON arrays (wire/framejson.h).
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
#define BP_JSON_VIEW_LONGOPTS                              \
    {"vocab", required_argument, 0, BP_OPT_VIEW_VOCAB},    \
    {"arrays", no_argument, 0, BP_OPT_VIEW_ARRAYS}
#define BP_JSON_VIEW_USAGE                                                                          \
    "  --vocab FILE      add \"tokens\" after each input_ids: the vocab.txt line of every id (not replayable)\n" \
    "  --arrays          show tensors' data as JSON arrays of numbers, not base64 (not replayable)\n"

/* Handle one getopt result if it is a view option (--vocab loads the file, dying with the
 * one error line when it cannot): returns 1 when handled. */
int bp_json_view_option(bp_json_opts *opts, int opt, const char *arg);

#endif
