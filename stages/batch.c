/* batch — feature frames in, padded batch frames out: seeded shuffle per epoch, epochs,
 * padding to the longest in the batch or to --max-length, optional length bucketing, the
 * last partial batch kept, an epoch frame after each epoch.
 *
 * The batches are a function of the features and the seed only, never of their arrival
 * order: before the shuffle the features are put in extract's order (example_seq, then
 * example_id, then window), so 1, 2 or 4 tokenize workers fanning in give the same stream.
 *
 * It must hold a whole split to shuffle it, so features are kept as their raw frame bytes
 * (compact) and spilled to an unlinked temporary file past --memory-limit.
 * Must never: change a token: padding uses the hello's pad_id (0 by default), type 0, mask 0,
 * offsets -1.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stage/frame_input.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: batch [options] [--in SPEC] [--out SPEC]\n"
    "Group feature frames into padded batches.\n"
    "  --batch-size N      examples per batch (default 8)\n"
    "  --epochs N          passes over the data (default 1)\n"
    "  --shuffle / --no-shuffle   reshuffle each epoch with --seed (default: shuffle)\n"
    "  --seed N            shuffle seed (default 42)\n"
    "  --pad longest|max   pad to the longest feature of the batch, or to --max-length\n"
    "  --max-length N      length for --pad max (default: the hello's max_length)\n"
    "  --bucket K          sort windows of K batches by length before batching (less padding)\n"
    "  --drop-last         drop the last partial batch (default: keep it)\n"
    "  --memory-limit SIZE keep at most SIZE bytes of features in memory (K/M/G suffix; default 1G),\n"
    "                      spill the rest to a temporary file\n"
    BP_IO_USAGE;

/* One stored feature: where its frame bytes are, and what sorting needs. */
typedef struct stored {
    int64_t offset;     /* in memory arena or spill file */
    uint32_t size;
    uint32_t length;    /* tokens */
    int spilled;
    int32_t window;
    int64_t example_seq; /* the example's seq in extract's stream; -1 when the feature has none */
    uint64_t id_hash;    /* of example_id: orders examples of equal seq (two extracts fanning in) */
    int64_t arrival;     /* 0-based as it arrived: how errors name it (feature frame N) */
} stored;

typedef struct store {
    char *arena;
    size_t used, cap, limit;
    FILE *spill;
    int64_t spill_used;
    stored *items;
    size_t n, items_cap;
    char *scratch;
    size_t scratch_cap;
} store;

/* Keep a feature's bytes; place has its length, window, example_seq and id_hash. */
static void store_add(store *s, const char *bytes, size_t size, const stored *place) {
    if (s->n == s->items_cap) {
        s->items_cap = s->items_cap ? s->items_cap * 2 : 4096;
        if (!(s->items = realloc(s->items, s->items_cap * sizeof *s->items))) bp_die(1, NULL, "out of memory");
    }
    stored *it = &s->items[s->n];
    *it = *place;
    it->arrival = (int64_t)s->n++;
    it->size = (uint32_t)size;
    if (s->used + size <= s->limit) {
        if (s->used + size > s->cap) {
            size_t cap = s->cap ? s->cap : 1 << 20;
            while (cap < s->used + size) cap *= 2;
            if (cap > s->limit) cap = s->limit;
            if (!(s->arena = realloc(s->arena, cap))) bp_die(1, NULL, "out of memory");
            s->cap = cap;
        }
        memcpy(s->arena + s->used, bytes, size);
        it->offset = (int64_t)s->used;
        it->spilled = 0;
        s->used += size;
        return;
    }
    if (!s->spill) {
        if (!(s->spill = tmpfile())) bp_die(1, "spill file", "cannot create it: %s", strerror(errno));
        bp_log("memory limit reached after %zu features: spilling the rest to a temporary file", s->n - 1);
    }
    if (fwrite(bytes, 1, size, s->spill) != size) bp_die(1, "spill file", "write failed: %s", strerror(errno));
    it->offset = s->spill_used;
    it->spilled = 1;
    s->spill_used += (int64_t)size;
}

/* The frame bytes of item i; valid until the next call. */
static const char *store_get(store *s, size_t i) {
    stored *it = &s->items[i];
    if (!it->spilled) return s->arena + it->offset;
    if (it->size > s->scratch_cap) {
        s->scratch_cap = it->size;
        if (!(s->scratch = realloc(s->scratch, s->scratch_cap))) bp_die(1, NULL, "out of memory");
    }
    if (fflush(s->spill) || pread(fileno(s->spill), s->scratch, it->size, it->offset) != (ssize_t)it->size)
        bp_die(1, "spill file", "read failed: %s", strerror(errno));
    return s->scratch;
}

/* splitmix64: small, seeded, identical everywhere. */
static uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void shuffle(size_t *order, size_t n, uint64_t *state) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(state) % i);
        size_t t = order[i - 1]; order[i - 1] = order[j]; order[j] = t;
    }
}

/* Extract's order: example_seq, then example_id (its hash), then window. Arrival breaks what
 * is left, a feature sent twice, whose copies make the same batch rows either way. */
static int by_place(const void *a, const void *b) {
    const stored *x = a, *y = b;
    if (x->example_seq != y->example_seq) return x->example_seq < y->example_seq ? -1 : 1;
    if (x->id_hash != y->id_hash) return x->id_hash < y->id_hash ? -1 : 1;
    if (x->window != y->window) return x->window < y->window ? -1 : 1;
    return (x->arrival > y->arrival) - (x->arrival < y->arrival);
}

/* Put the features in extract's order, so the shuffle and the batches never depend on which
 * producer delivered first. Features without example_seq (a stream written by hand or by an
 * older tokenize) keep their arrival order, which with several producers varies: said once. */
static void restore_order(store *s, int producers) {
    size_t without = 0;
    for (size_t i = 0; i < s->n; i++) without += s->items[i].example_seq < 0;
    if (without == 0) {
        qsort(s->items, s->n, sizeof *s->items, by_place);
        return;
    }
    if (producers > 1)
        bp_warn("%zu of %zu features carry no example_seq: they stay in the order %d producers delivered them, "
                "which differs from run to run", without, s->n, producers);
}

static uint64_t hash_bytes(const char *bytes, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)bytes[i]) * 1099511628211ull;
    return h;
}

static store *sort_store;
static int by_length(const void *a, const void *b) {
    uint32_t la = sort_store->items[*(const size_t *)a].length, lb = sort_store->items[*(const size_t *)b].length;
    return la < lb ? -1 : la > lb ? 1 : (*(const size_t *)a < *(const size_t *)b ? -1 : 1);
}

/* What the command line asks for. */
typedef struct batch_args {
    bp_io_opts io;
    long batch_size, epochs, max_length, bucket;
    size_t memory_limit;
    int shuffle, pad_max, drop_last;
    uint64_t seed;
} batch_args;

/* What the stream's features carry, from its hello and its first feature. */
typedef struct schema {
    int qa;
    unsigned fields;    /* BP_FEATURE_LABEL / _POSITIONS / _OFFSETS: what every feature must carry */
    int32_t pad_id;
} schema;

/* Fields a batch carries, one row per feature, for up to B_max rows of T_max tokens. */
typedef struct rows {
    int B, T;
    int32_t *input_ids, *token_type_ids, *attention_mask;   /* [B, T] */
    int32_t *offsets;                                       /* [B, T, 2] when the features have them */
    int32_t *windows, *labels, *starts, *ends;              /* [B] */
    char **example_ids;                                     /* [B] */
} rows;

static void rows_alloc(rows *b, size_t B_max, size_t T_max, int with_offsets) {
    size_t cells = B_max * (T_max ? T_max : 1);
    *b = (rows){
        .input_ids = malloc(cells * sizeof *b->input_ids),
        .token_type_ids = malloc(cells * sizeof *b->token_type_ids),
        .attention_mask = malloc(cells * sizeof *b->attention_mask),
        .offsets = with_offsets ? malloc(2 * cells * sizeof *b->offsets) : NULL,
        .windows = malloc(B_max * sizeof *b->windows),
        .labels = malloc(B_max * sizeof *b->labels),
        .starts = malloc(B_max * sizeof *b->starts),
        .ends = malloc(B_max * sizeof *b->ends),
        .example_ids = calloc(B_max, sizeof *b->example_ids),
    };
    if (!b->input_ids || !b->token_type_ids || !b->attention_mask || (with_offsets && !b->offsets) || !b->windows ||
        !b->labels || !b->starts || !b->ends || !b->example_ids)
        bp_die(1, NULL, "out of memory for batches of %zu x %zu", B_max, T_max);
}

static void rows_free(rows *b, size_t B_max) {
    for (size_t i = 0; i < B_max; i++) free(b->example_ids[i]);
    free(b->example_ids); free(b->input_ids); free(b->token_type_ids); free(b->attention_mask); free(b->offsets);
    free(b->windows); free(b->labels); free(b->starts); free(b->ends);
}

static void need(int rc, const bp_err *err) {
    if (rc) bp_die_err(err);
}

/* Copy the n values of a feature's tensor into a row padded with `pad` to `width` values. */
static void pad_row(int32_t *row, size_t width, const bp_tensor_view *t, int32_t pad) {
    for (size_t i = 0; i < width; i++) row[i] = pad;
    bp_tensor_copy(t, row);
}

/* Decode a stored feature (its bytes; `arrival`: its index as it arrived) into row r of the
 * batch, padded to T. */
static void fill_row(rows *b, int r, const char *bytes, size_t size, int64_t arrival, const schema *sc) {
    bp_frame f;
    bp_err err;
    bp_feature_view ft;
    need(bp_frame_decode(&f, bytes, size, NULL, NULL, &err), &err);
    f.index = arrival;   /* errors name the feature as it arrived */
    need(bp_feature_read(&f, sc->fields, b->T, &ft, &err), &err);
    size_t T = (size_t)b->T, row = (size_t)r * T;
    pad_row(b->input_ids + row, T, &ft.input_ids, sc->pad_id);
    pad_row(b->token_type_ids + row, T, &ft.token_type_ids, 0);
    pad_row(b->attention_mask + row, T, &ft.attention_mask, 0);
    if (sc->fields & BP_FEATURE_OFFSETS) pad_row(b->offsets + 2 * row, 2 * T, &ft.offsets, -1);
    b->windows[r] = ft.window;
    b->labels[r] = ft.label;
    b->starts[r] = ft.start_position;
    b->ends[r] = ft.end_position;
    free(b->example_ids[r]);
    if (!(b->example_ids[r] = strndup(ft.example_id.ptr, ft.example_id.len))) bp_die(1, NULL, "out of memory");
    bp_frame_release(&f);
}

static size_t parse_size(const char *name, const char *text) {
    char digits[32];
    size_t len = strlen(text), shift = 0;
    char unit = len ? text[len - 1] : 0;
    if (unit == 'K' || unit == 'k') shift = 10;
    else if (unit == 'M' || unit == 'm') shift = 20;
    else if (unit == 'G' || unit == 'g') shift = 30;
    snprintf(digits, sizeof digits, "%.*s", (int)(shift ? len - 1 : len), text);
    return (size_t)bp_opt_long(name, digits, 0, 1L << 40) << shift;
}

static void parse_args(int argc, char **argv, batch_args *a) {
    enum { O_BS = 1, O_EP, O_SH, O_NOSH, O_SEED, O_PAD, O_MAXLEN, O_BUCKET, O_DROP, O_MEM };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
        {"batch-size", required_argument, 0, O_BS}, {"epochs", required_argument, 0, O_EP},
        {"shuffle", no_argument, 0, O_SH}, {"no-shuffle", no_argument, 0, O_NOSH},
        {"seed", required_argument, 0, O_SEED}, {"pad", required_argument, 0, O_PAD},
        {"max-length", required_argument, 0, O_MAXLEN}, {"bucket", required_argument, 0, O_BUCKET},
        {"drop-last", no_argument, 0, O_DROP}, {"memory-limit", required_argument, 0, O_MEM},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_BS: a->batch_size = bp_opt_long("--batch-size", optarg, 1, 1 << 20); break;
        case O_EP: a->epochs = bp_opt_long("--epochs", optarg, 1, 1 << 20); break;
        case O_SH: a->shuffle = 1; break;
        case O_NOSH: a->shuffle = 0; break;
        case O_SEED: a->seed = (uint64_t)bp_opt_long("--seed", optarg, 0, (1L << 62)); break;
        case O_PAD:
            if (strcmp(optarg, "max") == 0) a->pad_max = 1;
            else if (strcmp(optarg, "longest") == 0) a->pad_max = 0;
            else bp_die(2, NULL, "--pad wants longest or max, got '%s'", optarg);
            break;
        case O_MAXLEN: a->max_length = bp_opt_long("--max-length", optarg, 1, 1 << 20); break;
        case O_BUCKET: a->bucket = bp_opt_long("--bucket", optarg, 1, 1 << 20); break;
        case O_DROP: a->drop_last = 1; break;
        case O_MEM: a->memory_limit = parse_size("--memory-limit", optarg); break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
}

/* pad_id and, unless --max-length gave one, max_length from the features' hello. */
static schema read_hello(const bp_frame *hello, batch_args *a) {
    bp_err err;
    schema sc = {.qa = bp_stream_is_qa(hello)};
    int64_t pad_id = 0, max_length = a->max_length;
    if (bp_find_int(hello, "pad_id", 0, BP_I32_MAX, &pad_id, &err) < 0 ||
        (!a->max_length && bp_find_int(hello, "max_length", 1, 1 << 20, &max_length, &err) < 0))
        bp_die_err(&err);
    sc.pad_id = (int32_t)pad_id;
    a->max_length = (long)max_length;
    if (a->pad_max && !a->max_length) bp_die(2, NULL, "--pad max needs --max-length (the input hello has none)");
    return sc;
}

/* Read the whole split, keeping frame bytes only. Returns the longest feature's length. */
static int read_features(bp_in *in, store *s, schema *sc, const batch_args *a) {
    bp_frame f;
    bp_err err;
    int r, longest = 0;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_FEATURE) bp_die(1, a->io.in, "batch takes feature frames, got %s", bp_kind_name(f.kind));
        if (s->n == 0) sc->fields = bp_feature_fields(&f);
        /* read whole as it comes, so a bad feature fails now, not when its batch is made */
        bp_feature_view ft;
        if (bp_feature_read(&f, sc->fields, a->pad_max ? a->max_length : 1 << 20, &ft, &err)) bp_die_err(&err);
        int64_t n = ft.input_ids.shape[0];
        if (n > longest) longest = (int)n;
        stored place = {.length = (uint32_t)n, .example_seq = ft.example_seq, .window = ft.window,
                        .id_hash = hash_bytes(ft.example_id.ptr, ft.example_id.len)};
        store_add(s, f.raw, f.raw_len, &place);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    restore_order(s, a->io.producers);
    return longest;
}

/* Pass the upstream schema on, then say what batch adds. */
static void send_hello(bp_out *out, bp_writer *w, const bp_frame *hello, const batch_args *a, size_t per_epoch,
                       size_t features) {
    static const char *const pass_on[] = {"task", "labels", "num_labels", "max_length", "stride", "lowercase",
                                          "vocab_size", "split", "source", "split_origin", "split_part",
                                          "pad_id", NULL};
    bp_hello_begin_from(w, hello, pass_on);
    bp_put_int(w, "batch_size", a->batch_size);
    bp_put_int(w, "epochs", a->epochs);
    bp_put_int(w, "batches_per_epoch", (int64_t)per_epoch);
    bp_put_int(w, "features", (int64_t)features);
    bp_send_hello(out, w);
}

static void send_batch(bp_out *out, bp_writer *w, const rows *b, const schema *sc, int64_t seq, long epoch) {
    int64_t shape_b[1] = {b->B}, shape_bt[2] = {b->B, b->T}, shape_bt2[3] = {b->B, b->T, 2};
    bp_begin(w, BP_BATCH);
    bp_put_int(w, "seq", seq);
    bp_put_int(w, "epoch", epoch);
    bp_put_strs(w, "example_ids", (const char *const *)b->example_ids, (size_t)b->B);
    bp_put_tensor(w, "windows", BP_I32, 1, shape_b, b->windows);
    bp_put_tensor(w, "input_ids", BP_I32, 2, shape_bt, b->input_ids);
    bp_put_tensor(w, "token_type_ids", BP_I32, 2, shape_bt, b->token_type_ids);
    bp_put_tensor(w, "attention_mask", BP_I32, 2, shape_bt, b->attention_mask);
    if (sc->fields & BP_FEATURE_LABEL) bp_put_tensor(w, "labels", BP_I32, 1, shape_b, b->labels);
    if (sc->fields & BP_FEATURE_POSITIONS) {
        bp_put_tensor(w, "start_positions", BP_I32, 1, shape_b, b->starts);
        bp_put_tensor(w, "end_positions", BP_I32, 1, shape_b, b->ends);
    }
    if (sc->fields & BP_FEATURE_OFFSETS) bp_put_tensor(w, "offsets", BP_I32, 3, shape_bt2, b->offsets);
    bp_send(out, w);
}

/* The batching of one run: the store, the order of this epoch, where each batch starts. */
typedef struct batcher {
    const batch_args *args;
    const schema *sc;
    store *s;
    size_t *order, *batch_starts, per_epoch;
    uint64_t rng;
    rows b;
    bp_out *out;
    bp_writer *w;
    int64_t seq;
    bp_progress prog;
} batcher;

/* This epoch's order of features and of batches: shuffled, bucketed by length. */
static void plan_epoch(batcher *bt) {
    const batch_args *a = bt->args;
    size_t n = bt->s->n, batch_size = (size_t)a->batch_size;
    for (size_t i = 0; i < n; i++) bt->order[i] = i;
    if (a->shuffle) shuffle(bt->order, n, &bt->rng);
    if (a->bucket > 0) {
        /* Sort runs of K batches by length, then shuffle the batch order. */
        size_t run = (size_t)a->bucket * batch_size;
        sort_store = bt->s;
        for (size_t i = 0; i < n; i += run) qsort(bt->order + i, (i + run <= n ? run : n - i), sizeof *bt->order, by_length);
    }
    for (size_t k = 0; k < bt->per_epoch; k++) bt->batch_starts[k] = k * batch_size;
    if (a->bucket > 0 && a->shuffle) shuffle(bt->batch_starts, bt->per_epoch, &bt->rng);
}

/* Batch k of this epoch: its features padded to the longest (or to --max-length). */
static void send_batch_k(batcher *bt, size_t k, long epoch) {
    const batch_args *a = bt->args;
    store *s = bt->s;
    size_t start = bt->batch_starts[k], batch_size = (size_t)a->batch_size;
    int B = (int)(start + batch_size <= s->n ? batch_size : s->n - start), T = 0;
    for (int i = 0; i < B; i++)
        if ((int)s->items[bt->order[start + (size_t)i]].length > T) T = (int)s->items[bt->order[start + (size_t)i]].length;
    if (a->pad_max) T = (int)a->max_length;
    bt->b.B = B;
    bt->b.T = T;
    for (int i = 0; i < B; i++) {
        size_t idx = bt->order[start + (size_t)i];
        fill_row(&bt->b, i, store_get(s, idx), s->items[idx].size, s->items[idx].arrival, bt->sc);
    }
    send_batch(bt->out, bt->w, &bt->b, bt->sc, bt->seq++, epoch);
    bp_progress_update(&bt->prog, bt->prog.done + 1, NULL);   /* batches: seq counts epoch frames too */
}

static void send_epochs(batcher *bt) {
    for (long epoch = 1; epoch <= bt->args->epochs; epoch++) {
        plan_epoch(bt);
        for (size_t k = 0; k < bt->per_epoch; k++) send_batch_k(bt, k, epoch);
        bp_begin(bt->w, BP_EPOCH);
        bp_put_int(bt->w, "seq", bt->seq++);
        bp_put_int(bt->w, "epoch", epoch);
        bp_send(bt->out, bt->w);
    }
}

int main(int argc, char **argv) {
    batch_args a = {.batch_size = 8, .epochs = 1, .memory_limit = (size_t)1 << 30, .shuffle = 1, .seed = 42};
    bp_stage_init(&a.io, argv);
    bp_set_usage(usage);
    parse_args(argc, argv, &a);

    /* Open before reading: the hello waits for the whole split (it says how many batches), but
     * a failure while reading it reaches downstream as an error frame, not as silence. */
    bp_out *out = bp_open_out(&a.io);
    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    schema sc = read_hello(hello, &a);
    store s = {.limit = a.memory_limit};
    int longest = read_features(in, &s, &sc, &a);

    size_t n = s.n, batch_size = (size_t)a.batch_size;
    size_t per_epoch = a.drop_last ? n / batch_size : (n + batch_size - 1) / batch_size;
    bp_writer w;
    bp_writer_init(&w);
    batcher bt = {.args = &a, .sc = &sc, .s = &s, .per_epoch = per_epoch, .rng = a.seed, .w = &w,
                  .order = malloc((n ? n : 1) * sizeof *bt.order),
                  .batch_starts = malloc((per_epoch + 1) * sizeof *bt.batch_starts)};
    if (!bt.order || !bt.batch_starts) bp_die(1, NULL, "out of memory for %zu features", n);
    rows_alloc(&bt.b, batch_size, (size_t)(a.pad_max ? (int)a.max_length : longest), sc.fields & BP_FEATURE_OFFSETS);
    bt.out = out;
    send_hello(bt.out, &w, hello, &a, per_epoch, n);

    bp_progress_start(&bt.prog, "batch", (int64_t)per_epoch * a.epochs);
    send_epochs(&bt);
    bp_progress_finish(&bt.prog, NULL);
    bp_log("%zu features -> %zu batches per epoch x %ld epochs (batch size %ld, %s)", n, per_epoch, a.epochs,
           a.batch_size, a.pad_max ? "padded to max length" : "padded to longest");
    bp_close_out(bt.out);
    bp_in_close(in);
    rows_free(&bt.b, batch_size);
    free(bt.order); free(bt.batch_starts);
    free(s.arena); free(s.items); free(s.scratch);
    if (s.spill) fclose(s.spill);
    bp_writer_free(&w);
    return 0;
}
