/* batch — feature frames in, padded batch frames out: seeded shuffle per epoch, epochs,
 * padding to the longest in the batch or to --max-length, optional length bucketing, the
 * last partial batch kept, an epoch frame after each epoch.
 *
 * It must hold a whole split to shuffle it, so features are kept as their raw frame bytes
 * (compact) and spilled to an unlinked temporary file past --memory-limit. It never changes
 * a token: padding uses the hello's pad_id (0 by default), type 0, mask 0, offsets -1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* One stored feature: where its frame bytes are and what sorting needs. */
typedef struct stored {
    int64_t offset;     /* in memory arena or spill file */
    uint32_t size;
    uint32_t length;    /* tokens */
    int spilled;
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

static void store_add(store *s, const char *bytes, size_t size, uint32_t length) {
    if (s->n == s->items_cap) {
        s->items_cap = s->items_cap ? s->items_cap * 2 : 4096;
        if (!(s->items = realloc(s->items, s->items_cap * sizeof *s->items))) bp_die(1, NULL, "out of memory");
    }
    stored *it = &s->items[s->n++];
    it->size = (uint32_t)size;
    it->length = length;
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
        if (!(s->spill = tmpfile())) bp_die(1, NULL, "cannot create a spill file: %s", strerror(errno));
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

static store *sort_store;
static int by_length(const void *a, const void *b) {
    uint32_t la = sort_store->items[*(const size_t *)a].length, lb = sort_store->items[*(const size_t *)b].length;
    return la < lb ? -1 : la > lb ? 1 : (*(const size_t *)a < *(const size_t *)b ? -1 : 1);
}

/* Fields a batch carries, one row per feature. */
typedef struct rows {
    int B, T;
    int32_t *input_ids, *token_type_ids, *attention_mask, *offsets, *windows, *labels, *starts, *ends;
    char **example_ids;
} rows;

typedef struct schema { int qa, has_labels, has_offsets, has_positions; int32_t pad_id; } schema;

static void need(int rc, const bp_err *err) {
    if (rc) bp_die_err(err);
}

/* Decode feature `bytes` into row r of the batch, padded to T. */
static void fill_row(rows *b, int r, const char *bytes, size_t size, const schema *sc) {
    bp_frame f;
    bp_err err;
    need(bp_frame_decode(&f, bytes, size, NULL, NULL, &err), &err);
    bp_tensor_view ids, types, mask;
    need(bp_get_tensor(&f, "input_ids", &ids, &err), &err);
    need(bp_tensor_expect(&ids, "input_ids", BP_I32, 1, NULL, &err), &err);
    int64_t n = ids.shape[0], want[2] = {n, 2};
    need(bp_get_tensor(&f, "token_type_ids", &types, &err), &err);
    need(bp_tensor_expect(&types, "token_type_ids", BP_I32, 1, want, &err), &err);
    need(bp_get_tensor(&f, "attention_mask", &mask, &err), &err);
    need(bp_tensor_expect(&mask, "attention_mask", BP_I32, 1, want, &err), &err);
    size_t row = (size_t)r * (size_t)b->T;
    for (int t = 0; t < b->T; t++) {
        b->input_ids[row + t] = sc->pad_id;
        b->token_type_ids[row + t] = 0;
        b->attention_mask[row + t] = 0;
    }
    memcpy(b->input_ids + row, ids.data, (size_t)n * 4);
    memcpy(b->token_type_ids + row, types.data, (size_t)n * 4);
    memcpy(b->attention_mask + row, mask.data, (size_t)n * 4);
    if (sc->has_offsets) {
        bp_tensor_view off;
        need(bp_get_tensor(&f, "offsets", &off, &err), &err);
        need(bp_tensor_expect(&off, "offsets", BP_I32, 2, want, &err), &err);
        for (int t = 0; t < 2 * b->T; t++) b->offsets[2 * row + t] = -1;
        memcpy(b->offsets + 2 * row, off.data, (size_t)n * 8);
    }
    int64_t v = 0;
    need(bp_find_int(&f, "window", 0, BP_I32_MAX, &v, &err) < 0, &err);
    b->windows[r] = (int32_t)v;
    if (sc->has_labels) {
        need(bp_get_int(&f, "label", BP_I32_MIN, BP_I32_MAX, &v, &err), &err);
        b->labels[r] = (int32_t)v;
    }
    if (sc->has_positions) {
        need(bp_get_int(&f, "start_position", BP_I32_MIN, BP_I32_MAX, &v, &err), &err);
        b->starts[r] = (int32_t)v;
        need(bp_get_int(&f, "end_position", BP_I32_MIN, BP_I32_MAX, &v, &err), &err);
        b->ends[r] = (int32_t)v;
    }
    free(b->example_ids[r]);
    b->example_ids[r] = bp_get_strdup(&f, "example_id", &err);
    if (!b->example_ids[r]) need(-1, &err);
    bp_frame_release(&f);
}

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    long batch_size = 8, epochs = 1, max_length = 0, bucket = 0;
    size_t memory_limit = (size_t)1 << 30;
    int do_shuffle = 1, pad_max = 0, drop_last = 0;
    uint64_t seed = 42;
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
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case O_BS: batch_size = bp_opt_long("--batch-size", optarg, 1, 1 << 20); break;
        case O_EP: epochs = bp_opt_long("--epochs", optarg, 1, 1 << 20); break;
        case O_SH: do_shuffle = 1; break;
        case O_NOSH: do_shuffle = 0; break;
        case O_SEED: seed = (uint64_t)bp_opt_long("--seed", optarg, 0, (1L << 62)); break;
        case O_PAD:
            if (strcmp(optarg, "max") == 0) pad_max = 1;
            else if (strcmp(optarg, "longest") == 0) pad_max = 0;
            else bp_die(2, NULL, "--pad wants longest or max, got '%s'", optarg);
            break;
        case O_MAXLEN: max_length = bp_opt_long("--max-length", optarg, 1, 1 << 20); break;
        case O_BUCKET: bucket = bp_opt_long("--bucket", optarg, 1, 1 << 20); break;
        case O_DROP: drop_last = 1; break;
        case O_MEM: {
            char digits[32];
            size_t len = strlen(optarg), shift = 0;
            char unit = len ? optarg[len - 1] : 0;
            if (unit == 'K' || unit == 'k') shift = 10;
            else if (unit == 'M' || unit == 'm') shift = 20;
            else if (unit == 'G' || unit == 'g') shift = 30;
            snprintf(digits, sizeof digits, "%.*s", (int)(shift ? len - 1 : len), optarg);
            memory_limit = (size_t)bp_opt_long("--memory-limit", digits, 0, 1L << 40) << shift;
            break;
        }
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&io, &hello);
    schema sc = {0};
    bp_err err;
    sc.qa = bp_hello_is_qa(hello);
    int64_t v = 0;
    if (bp_find_int(hello, "pad_id", 0, BP_I32_MAX, &v, &err) < 0) bp_die_err(&err);
    sc.pad_id = (int32_t)v;
    if (!max_length && bp_find_int(hello, "max_length", 1, 1 << 20, &max_length, &err) < 0) bp_die_err(&err);
    if (pad_max && !max_length) bp_die(2, NULL, "--pad max needs --max-length (the input hello has none)");

    /* Read the whole split, keeping frame bytes only. */
    store s = {0};
    s.limit = memory_limit;
    bp_frame f;
    int r, first = 1, longest = 0;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_FEATURE) bp_die(1, io.in, "batch takes feature frames, got %s", bp_kind_name(f.kind));
        bp_tensor_view ids;
        if (bp_get_tensor(&f, "input_ids", &ids, &err) || bp_tensor_expect(&ids, "input_ids", BP_I32, 1, NULL, &err))
            bp_die(1, NULL, "feature %lld: %s", (long long)s.n, err.msg);
        if (first) {
            sc.has_labels = bp_has(&f, "label");
            sc.has_positions = bp_has(&f, "start_position");
            sc.has_offsets = bp_has(&f, "offsets");
            first = 0;
        }
        if (pad_max && ids.shape[0] > max_length)
            bp_die(1, NULL, "feature %lld has %lld tokens, more than --max-length %ld", (long long)s.n,
                   (long long)ids.shape[0], max_length);
        if (ids.shape[0] > longest) longest = (int)ids.shape[0];
        store_add(&s, f.raw, f.raw_len, (uint32_t)ids.shape[0]);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));

    size_t n = s.n;
    size_t per_epoch = drop_last ? n / (size_t)batch_size : (n + (size_t)batch_size - 1) / (size_t)batch_size;
    bp_out *out = bp_open_out(&io);
    bp_writer w;
    bp_writer_init(&w);
    /* Pass the upstream schema on, then say what batch adds. */
    static const char *const pass_on[] = {"task", "labels", "num_labels", "max_length", "stride", "lowercase",
                                          "vocab_size", "split", "source", "pad_id", NULL};
    bp_hello_begin_from(&w, hello, pass_on);
    bp_put_int(&w, "batch_size", batch_size);
    bp_put_int(&w, "epochs", epochs);
    bp_put_int(&w, "batches_per_epoch", (int64_t)per_epoch);
    bp_put_int(&w, "features", (int64_t)n);
    bp_send_hello(out, &w);

    size_t *order = malloc((n ? n : 1) * sizeof *order);
    size_t *batch_starts = malloc((per_epoch + 1) * sizeof *batch_starts);
    int T_max = pad_max ? (int)max_length : longest;
    rows b = {0};
    size_t cells = (size_t)batch_size * (size_t)(T_max ? T_max : 1);
    b.input_ids = malloc(cells * 4);
    b.token_type_ids = malloc(cells * 4);
    b.attention_mask = malloc(cells * 4);
    b.offsets = sc.has_offsets ? malloc(cells * 8) : NULL;
    b.windows = malloc((size_t)batch_size * 4);
    b.labels = malloc((size_t)batch_size * 4);
    b.starts = malloc((size_t)batch_size * 4);
    b.ends = malloc((size_t)batch_size * 4);
    b.example_ids = calloc((size_t)batch_size, sizeof *b.example_ids);
    if (!order || !batch_starts || !b.input_ids || !b.token_type_ids || !b.attention_mask ||
        (sc.has_offsets && !b.offsets) || !b.windows || !b.labels || !b.starts || !b.ends || !b.example_ids)
        bp_die(1, NULL, "out of memory for %zu features", n);

    uint64_t state = seed;
    int64_t seq = 0;
    bp_progress prog;
    bp_progress_start(&prog, "batch", (int64_t)per_epoch * epochs);
    for (long epoch = 1; epoch <= epochs; epoch++) {
        for (size_t i = 0; i < n; i++) order[i] = i;
        if (do_shuffle) shuffle(order, n, &state);
        if (bucket > 0) {
            /* Sort runs of K batches by length, then shuffle the batch order. */
            size_t run = (size_t)bucket * (size_t)batch_size;
            sort_store = &s;
            for (size_t i = 0; i < n; i += run) qsort(order + i, (i + run <= n ? run : n - i), sizeof *order, by_length);
        }
        for (size_t k = 0; k < per_epoch; k++) batch_starts[k] = k * (size_t)batch_size;
        if (bucket > 0 && do_shuffle) shuffle(batch_starts, per_epoch, &state);
        for (size_t k = 0; k < per_epoch; k++) {
            size_t start = batch_starts[k];
            int B = (int)((start + (size_t)batch_size <= n) ? (size_t)batch_size : n - start);
            int T = 0;
            for (int i = 0; i < B; i++)
                if ((int)s.items[order[start + (size_t)i]].length > T) T = (int)s.items[order[start + (size_t)i]].length;
            if (pad_max) T = (int)max_length;
            b.B = B;
            b.T = T;
            for (int i = 0; i < B; i++) {
                size_t idx = order[start + (size_t)i];
                fill_row(&b, i, store_get(&s, idx), s.items[idx].size, &sc);
            }
            bp_begin(&w, BP_BATCH);
            bp_put_int(&w, "seq", seq++);
            bp_put_int(&w, "epoch", epoch);
            bp_put_strs(&w, "example_ids", (const char *const *)b.example_ids, (size_t)B);
            int64_t shape_b[1] = {B}, shape_bt[2] = {B, T}, shape_bt2[3] = {B, T, 2};
            bp_put_tensor(&w, "windows", BP_I32, 1, shape_b, b.windows);
            bp_put_tensor(&w, "input_ids", BP_I32, 2, shape_bt, b.input_ids);
            bp_put_tensor(&w, "token_type_ids", BP_I32, 2, shape_bt, b.token_type_ids);
            bp_put_tensor(&w, "attention_mask", BP_I32, 2, shape_bt, b.attention_mask);
            if (sc.has_labels) bp_put_tensor(&w, "labels", BP_I32, 1, shape_b, b.labels);
            if (sc.has_positions) {
                bp_put_tensor(&w, "start_positions", BP_I32, 1, shape_b, b.starts);
                bp_put_tensor(&w, "end_positions", BP_I32, 1, shape_b, b.ends);
            }
            if (sc.has_offsets) bp_put_tensor(&w, "offsets", BP_I32, 3, shape_bt2, b.offsets);
            bp_send(out, &w);
            bp_progress_update(&prog, seq, NULL);
        }
        bp_begin(&w, BP_EPOCH);
        bp_put_int(&w, "seq", seq++);
        bp_put_int(&w, "epoch", epoch);
        bp_send(out, &w);
    }
    bp_progress_finish(&prog, NULL);
    bp_log("%zu features -> %zu batches per epoch x %ld epochs (batch size %ld, %s)", n, per_epoch, epochs,
           batch_size, pad_max ? "padded to max length" : "padded to longest");
    bp_close_out(out);
    bp_in_close(in);
    for (int i = 0; i < batch_size; i++) free(b.example_ids[i]);
    free(b.example_ids); free(b.input_ids); free(b.token_type_ids); free(b.attention_mask); free(b.offsets);
    free(b.windows); free(b.labels); free(b.starts); free(b.ends);
    free(order); free(batch_starts);
    free(s.arena); free(s.items); free(s.scratch);
    if (s.spill) fclose(s.spill);
    bp_writer_free(&w);
    return 0;
}
