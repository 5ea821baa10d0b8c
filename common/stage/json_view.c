/* stage/json_view.c — --vocab, --examples and --arrays for the stages that print frames
 * (json_view.h).
 * Must never: change what the stage forwards or records for replay without those options.
 */
#include "stage/json_view.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "stage/stage.h"
#include "text/tokenizer.h"

/* Held for the stage's life (and reachable, so a leak checker sees no leak). */
static tok_tokenizer *view_tok;

static const char *token_of(void *ctx, int32_t id) { return tok_id_to_token(ctx, id); }

/* ---- the contexts of the QA examples seen, by example_id --------------------------------
 * An open-addressing table of copies, for the stage's life. Consecutive examples of one
 * paragraph (SQuAD's order) share one copy of their context. */
typedef struct known_example {
    char *id;
    size_t id_len;
    const char *context;
    size_t context_len;
} known_example;

static struct {
    known_example *slots;
    size_t cap, used;
    char *last_context;   /* the latest copy, shared when the next example repeats it */
    size_t last_len;
} known;

static size_t id_hash(const char *id, size_t len) {
    uint64_t h = 1469598103934665603u;   /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)id[i]) * 1099511628211u;
    return (size_t)h;
}

static known_example *slot_of(known_example *slots, size_t cap, const char *id, size_t len) {
    for (size_t i = id_hash(id, len) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!slots[i].id || (slots[i].id_len == len && !memcmp(slots[i].id, id, len))) return &slots[i];
}

static const char *context_of(void *ctx, const char *id, size_t len, size_t *text_len) {
    (void)ctx;
    if (!known.cap) return NULL;
    const known_example *e = slot_of(known.slots, known.cap, id, len);
    if (!e->id) return NULL;
    *text_len = e->context_len;
    return e->context;
}

static void grow_known(void) {
    size_t cap = known.cap ? known.cap * 2 : 1024;
    known_example *slots = calloc(cap, sizeof *slots);
    if (!slots) bp_die(1, NULL, "out of memory keeping %zu example contexts", known.used);
    for (size_t i = 0; i < known.cap; i++)
        if (known.slots[i].id) *slot_of(slots, cap, known.slots[i].id, known.slots[i].id_len) = known.slots[i];
    free(known.slots);
    known.slots = slots;
    known.cap = cap;
}

/* Keep the context of example id (a later example with the same id replaces it). */
static void keep_context(const char *id, size_t id_len, const char *context, size_t len) {
    if ((known.used + 1) * 10 > known.cap * 7) grow_known();
    if (!known.last_context || known.last_len != len || memcmp(known.last_context, context, len)) {
        char *copy = malloc(len + 1);
        if (!copy) bp_die(1, NULL, "out of memory keeping the context of %.*s", (int)id_len, id);
        memcpy(copy, context, len);
        copy[len] = 0;
        known.last_context = copy;
        known.last_len = len;
    }
    known_example *e = slot_of(known.slots, known.cap, id, id_len);
    if (!e->id) {
        if (!(e->id = malloc(id_len ? id_len : 1))) bp_die(1, NULL, "out of memory keeping an example id");
        memcpy(e->id, id, id_len);
        e->id_len = id_len;
        known.used++;
    }
    e->context = known.last_context;
    e->context_len = len;
}

void bp_json_view_note(const bp_json_opts *opts, const bp_frame *f) {
    if (!opts->context_of || f->kind != BP_EXAMPLE) return;
    const char *id, *context;
    size_t id_len = 0, len = 0;
    bp_err err;
    /* A frame without the two strings (a classification example) has no offsets into it. */
    if (bp_find_str(f, "example_id", &id, &id_len, &err) != 1) return;
    if (bp_find_str(f, "context", &context, &len, &err) != 1) return;
    keep_context(id, id_len, context, len);
}

/* --examples SPEC: every example of that stream, read to its eos before the input opens. */
static void read_examples(bp_json_opts *opts, const char *spec) {
    bp_io_opts io = {.in = spec, .out = "-", .producers = 1};
    bp_in *in = bp_open_in(&io);
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        bp_json_view_note(opts, &f);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_in_close(in);
}

int bp_json_view_option(bp_json_opts *opts, int opt, const char *arg) {
    bp_err err;
    switch (opt) {
    case BP_OPT_VIEW_ARRAYS: opts->arrays = 1; return 1;
    case BP_OPT_VIEW_VOCAB:
        /* Casing does not matter here: only the id -> line table is used. The tokenizer lives
         * until the stage exits. */
        tok_free(view_tok);
        if (!(view_tok = tok_load(arg, 1, &err))) bp_die_err(&err);
        opts->token_of = token_of;
        opts->token_ctx = view_tok;
        opts->context_of = context_of;
        return 1;
    case BP_OPT_VIEW_EXAMPLES:
        opts->context_of = context_of;
        read_examples(opts, arg);
        return 1;
    default: return 0;
    }
}
