/* stage/json_view.c — --vocab and --arrays for the stages that print frames (json_view.h).
 * Must never: change what the stage forwards or records for replay without those options.
 */
#include "stage/json_view.h"

#include "base/log.h"
#include "text/tokenizer.h"

/* Held for the stage's life (and reachable, so a leak checker sees no leak). */
static tok_tokenizer *view_tok;

static const char *token_of(void *ctx, int32_t id) { return tok_id_to_token(ctx, id); }

int bp_json_view_option(bp_json_opts *opts, int opt, const char *arg) {
    bp_err err;
    switch (opt) {
    case BP_OPT_VIEW_ARRAYS: opts->arrays = 1; return 1;
    case BP_OPT_VIEW_VOCAB: {
        /* Casing does not matter here: only the id -> line table is used. The tokenizer lives
         * until the stage exits. */
        tok_free(view_tok);
        if (!(view_tok = tok_load(arg, 1, &err))) bp_die_err(&err);
        opts->token_of = token_of;
        opts->token_ctx = view_tok;
        return 1;
    }
    default: return 0;
    }
}
