/* extract — a data set (file, folder, .gz, .zip, .tar.gz) in, example frames out.
 *
 * Formats come from common/data/datasets.h: SST trees, raw SST, GLUE SST-2, IMDB, any CSV/TSV, SQuAD
 * v1.1/v2.0; plus "lines" (one unlabelled text per line, for predictions on your own
 * sentences) and a single QA example from --question/--context. It streams: each example is
 * sent as soon as it is read.
 * Must never: drop a record silently: every skip is counted and
 * reported, and a SQuAD answer whose answer_start does not slice its context is reported by id.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/datasets.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: extract [options] PATH            (PATH may be - for --format lines)\n"
    "       extract --question Q --context C  (one QA example, e.g. for predict-squad)\n"
    "Read a data set and send one example frame per record.\n"
    "  --format F          sst-trees sst-raw sst2 imdb csv squad lines (default: guessed from PATH)\n"
    "  --split S           train, validation (dev) or test (default train)\n"
    "  --limit N           stop after N examples\n"
    "  --sample N          a seeded random sample of N examples (--seed, default 42)\n"
    "  --binarize          SST: two classes (trees: neutral dropped; raw: score rounded)\n"
    "  --skip-empty        skip and count empty texts instead of failing\n"
    "  --text-column C --label-column C --id-column C   CSV/TSV columns (name or 0-based index)\n"
    "  --label-map LIST    CSV/TSV label values in class order, e.g. -1,0,1,2 or negative,positive\n"
    "  --delimiter D       , or tab (default: tab for .tsv, else ,)     --no-header\n"
    "  --validation-ratio R   hold out exactly ceil(R*n) seeded examples of the train split as the\n"
    "                      validation split (--split train then reads the rest); --seed N\n"
    "  --test-ratio T      hold out ceil(T*n) more as the test split (for a source without one)\n"
    "  --stratify          the hold-out keeps each label's share in every split\n"
    "  --articles A-B      SQuAD: only articles A..B (0-based, in file order)\n"
    "  --strict            SQuAD: an answer_start that does not match its answer is an error\n"
    "  --shard K/N         send only the examples whose index i (0-based, after every selection\n"
    "                      above) has i mod N = K, each with its seq i: N workers with K = 0..N-1\n"
    "                      send every example once, and batch restores the unsharded order\n"
    "  --out SPEC          output endpoint (default -: stdout)\n"
    BP_CURVE_USAGE
    "  --version           print \"extract (bertpipe) VERSION\" and exit\n";

typedef struct emitter {
    bp_out *out;
    bp_writer w;
    int64_t seq;          /* examples sent */
    int64_t index;        /* examples selected, on every shard: the next one's seq */
    int64_t shard, shards; /* --shard K/N (0/1: everything) */
    int64_t other_shards; /* selected examples left to the other shards */
    const char *split;
    int n_labels;         /* classes the hello names (0: none named, labels unchecked) */
    bp_answer *answers;   /* the current example's answers, as the frame writes them */
    size_t answers_cap;
    /* --articles */
    int64_t first_article, last_article, article;
    char *last_title;
    int64_t out_of_range;
} emitter;

/* What the command line asks for. */
typedef struct extract_args {
    bp_io_opts io;
    ds_options ds;
    const char *format, *path, *question, *context;
    int lines;    /* --format lines */
    int qa;
} extract_args;

static void put_common(emitter *e, const ds_example *ex) {
    bp_begin(&e->w, BP_EXAMPLE);
    bp_put_int(&e->w, "seq", e->index - 1);
    e->seq++;
    bp_put_str(&e->w, "example_id", ex->id);
    bp_put_str(&e->w, "split", e->split);
}

/* --articles: 0 to send ex, 1 to stop reading (past the range), -1 to skip it (before). */
static int article_filter(emitter *e, const ds_example *ex, bp_err *err) {
    if (e->first_article < 0) return 0;
    const char *title = ex->title ? ex->title : "";
    if (!e->last_title || strcmp(e->last_title, title)) {
        if (e->last_title) e->article++;
        free(e->last_title);
        if (!(e->last_title = strdup(title))) return bp_err_set(err, "out of memory");
    }
    if (e->article > e->last_article) {   /* past the range: count this one, stop reading */
        e->out_of_range++;
        return 1;
    }
    if (e->article < e->first_article) {
        e->out_of_range++;
        return -1;
    }
    return 0;
}

/* --shard: 1 when the next selected example is this shard's. It counts every selected example,
 * so an example's seq is its place in the unsharded stream on every shard. */
static int on_this_shard(emitter *e) {
    int64_t i = e->index++;
    if (i % e->shards == e->shard) return 1;
    e->other_shards++;
    return 0;
}

static int put_answers(emitter *e, const ds_example *ex, bp_err *err) {
    if (ex->n_answers > e->answers_cap) {
        bp_answer *grown = realloc(e->answers, ex->n_answers * sizeof *grown);
        if (!grown) return bp_err_set(err, "out of memory");
        e->answers = grown;
        e->answers_cap = ex->n_answers;
    }
    for (size_t i = 0; i < ex->n_answers; i++) {
        const ds_answer *a = &ex->answers[i];
        e->answers[i] = (bp_answer){.text = a->text, .text_len = strlen(a->text), .answer_start = a->start};
        if (!a->matches)
            bp_warn("example %s: answer %zu (\"%.60s\") does not match the context at answer_start %lld (%s)", ex->id, i,
                    a->text, (long long)a->start, ex->source);
    }
    bp_put_answers(&e->w, e->answers, ex->n_answers);
    return 0;
}

static int emit(const ds_example *ex, void *user, bp_err *err) {
    emitter *e = user;
    if (ex->question) {
        int filter = article_filter(e, ex, err);
        if (filter) return filter < 0 ? 0 : filter;
        if (!on_this_shard(e)) return 0;
        put_common(e, ex);
        bp_put_str(&e->w, "title", ex->title ? ex->title : "");
        bp_put_str(&e->w, "question", ex->question);
        bp_put_str(&e->w, "context", ex->context);
        if (put_answers(e, ex, err)) return -1;
        bp_put_bool(&e->w, "is_impossible", ex->is_impossible);
    } else {
        /* a label the hello does not name would train a class the model has no row for */
        if (ex->label < -1 || (e->n_labels > 0 && ex->label >= e->n_labels))
            return bp_err_set(err, "example %s: label %d is outside the %d classes the stream names (%s line %lld)", ex->id,
                              ex->label, e->n_labels, ex->source ? ex->source : "?", (long long)ex->line);
        if (!on_this_shard(e)) return 0;
        put_common(e, ex);
        bp_put_str(&e->w, "text", ex->text);
        bp_put_int(&e->w, "label", ex->label);
        if (ex->has_score) bp_put_float(&e->w, "score", ex->score);
    }
    if (bp_out_send(e->out, &e->w)) return bp_err_set(err, "%s", bp_out_error(e->out));
    return 0;
}

/* --format lines: one unlabelled example per non-empty line of path ("-" = stdin). */
static int read_lines(const char *path, emitter *e, int64_t limit, bp_err *err) {
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) return bp_err_set(err, "cannot open (%s)", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t lineno = 0, sent = 0;
    char id[32];
    while ((limit <= 0 || sent < limit) && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (ds_check_text(line, (size_t)n, "text", path, lineno, err)) break;   /* a NUL or bad UTF-8 is never cut */
        snprintf(id, sizeof id, "line-%lld", (long long)lineno);
        ds_example ex = {.id = id, .text = line, .label = -1, .source = path, .line = lineno};
        if (emit(&ex, e, err) < 0) break;
        sent++;
    }
    int bad = ferror(f);
    free(line);
    if (f != stdin) fclose(f);
    if (bad && bp_stop_reason()) return bp_err_set(err, "%s (%s)", bp_stop_reason(), path);
    if (bad) return bp_err_set(err, "read failed (%s)", path);
    return err->msg[0] ? -1 : 0;
}

/* --articles A-B into e's range. */
static void parse_articles(const char *articles, emitter *e) {
    char *dash;
    long a = strtol(articles, &dash, 10), b = a;
    if (*dash == '-') b = strtol(dash + 1, &dash, 10);
    if (*dash || a < 0 || b < a) bp_die(2, NULL, "--articles wants A-B with 0 <= A <= B, got '%s'", articles);
    e->first_article = a;
    e->last_article = b;
}

/* Something besides white space. */
static int has_text(const char *s) {
    for (; *s; s++)
        if (!strchr(" \t\r\n\f\v", *s)) return 1;
    return 0;
}

/* --shard K/N into e: 0 <= K < N. */
static void parse_shard(const char *text, emitter *e) {
    char *slash, *end = NULL;
    long k = strtol(text, &slash, 10), n = 0;
    if (slash != text && *slash == '/') n = strtol(slash + 1, &end, 10);
    if (n < 1 || n > (1L << 20) || k < 0 || k >= n || !end || *end || !isdigit((unsigned char)text[0]))
        bp_die(2, NULL, "--shard wants K/N with 0 <= K < N (e.g. 0/2 and 1/2 for two workers), got '%s'", text);
    e->shard = k;
    e->shards = n;
}

static char parse_delimiter(const char *text) {
    if (strcmp(text, "tab") == 0 || strcmp(text, "\\t") == 0 || strcmp(text, "\t") == 0) return '\t';
    if (strlen(text) != 1) bp_die(2, NULL, "--delimiter wants one character or 'tab', got '%s'", text);
    return text[0];
}

static void parse_args(int argc, char **argv, extract_args *a, emitter *e) {
    enum { O_FORMAT = 1, O_SPLIT, O_LIMIT, O_SAMPLE, O_SEED, O_BIN, O_SKIP, O_TEXT, O_LABEL, O_ID, O_MAP, O_DELIM,
           O_NOHEAD, O_RATIO, O_TEST_RATIO, O_STRATIFY, O_ARTICLES, O_STRICT, O_QUESTION, O_CONTEXT, O_SHARD };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
        {"format", required_argument, 0, O_FORMAT}, {"split", required_argument, 0, O_SPLIT},
        {"limit", required_argument, 0, O_LIMIT}, {"sample", required_argument, 0, O_SAMPLE},
        {"seed", required_argument, 0, O_SEED}, {"binarize", no_argument, 0, O_BIN},
        {"skip-empty", no_argument, 0, O_SKIP}, {"text-column", required_argument, 0, O_TEXT},
        {"label-column", required_argument, 0, O_LABEL}, {"id-column", required_argument, 0, O_ID},
        {"label-map", required_argument, 0, O_MAP}, {"delimiter", required_argument, 0, O_DELIM},
        {"no-header", no_argument, 0, O_NOHEAD}, {"validation-ratio", required_argument, 0, O_RATIO},
        {"test-ratio", required_argument, 0, O_TEST_RATIO}, {"stratify", no_argument, 0, O_STRATIFY},
        {"articles", required_argument, 0, O_ARTICLES}, {"strict", no_argument, 0, O_STRICT},
        {"question", required_argument, 0, O_QUESTION}, {"context", required_argument, 0, O_CONTEXT},
        {"shard", required_argument, 0, O_SHARD}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    ds_options *o = &a->ds;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_FORMAT: a->format = optarg; break;
        case O_SPLIT: o->split = optarg; break;
        case O_LIMIT: o->limit = bp_opt_long("--limit", optarg, 1, 1L << 40); break;
        case O_SAMPLE: o->sample = bp_opt_long("--sample", optarg, 1, 1L << 40); break;
        case O_SEED: o->seed = (uint64_t)bp_opt_long("--seed", optarg, 0, 1L << 62); break;
        case O_BIN: o->binary = 1; break;
        case O_SKIP: o->skip_empty = 1; break;
        case O_TEXT: o->text_column = optarg; break;
        case O_LABEL: o->label_column = optarg; break;
        case O_ID: o->id_column = optarg; break;
        case O_MAP: o->label_map = optarg; break;
        case O_DELIM: o->delimiter = parse_delimiter(optarg); break;
        case O_NOHEAD: o->no_header = 1; break;
        case O_RATIO: o->validation_ratio = bp_opt_double("--validation-ratio", optarg, 0, 1); break;
        case O_TEST_RATIO: o->test_ratio = bp_opt_double("--test-ratio", optarg, 0, 1); break;
        case O_STRATIFY: o->stratify = 1; break;
        case O_ARTICLES: parse_articles(optarg, e); break;
        case O_STRICT: o->answers_must_match = 1; break;
        case O_QUESTION: a->question = optarg; break;
        case O_CONTEXT: a->context = optarg; break;
        case O_SHARD: parse_shard(optarg, e); break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    a->path = optind < argc ? argv[optind] : NULL;
    if (optind + 1 < argc) bp_usage_die("unexpected argument '%s'", argv[optind + 1]);
    if (!!a->question != !!a->context) bp_die(2, NULL, "--question and --context go together");
    if (a->question && !has_text(a->question)) bp_die(2, NULL, "--question is empty: there is nothing to answer");
    if (a->context && !has_text(a->context)) bp_die(2, NULL, "--context is empty: there is nothing to answer from");
    if (!a->question && !a->path) bp_usage_die("give the data set PATH");
    /* A missing file is said as such, before any guess at its format from its name. */
    if (a->path && strcmp(a->path, "-") != 0 && access(a->path, F_OK) != 0) {
        if (errno == ENOENT) bp_die(1, a->path, "no such file or folder");
        bp_die(1, a->path, "cannot read the data set: %s", strerror(errno));
    }
    bp_err err;
    if (a->format && strcmp(a->format, "lines") == 0) a->lines = 1;
    else if (a->format && ds_format_parse(a->format, &o->format, &err)) bp_die(2, NULL, "%s", err.msg);
    else if (!a->format && !a->question && ds_format_guess(a->path, &o->format, &err)) bp_die(2, NULL, "%s (use --format)", err.msg);
    a->qa = a->question || o->format == DS_FORMAT_SQUAD;
    if ((a->lines || a->question) && (o->validation_ratio > 0 || o->test_ratio > 0 || o->stratify))
        bp_die(2, NULL, "--validation-ratio, --test-ratio and --stratify are for data sets, not --format lines or --question");
}

/* What was read, so that a consumer can tell whether two streams may share examples:
 * split_origin "member" (the split is its own part of the source), "whole" (the source is one
 * split, read whole: the split is only a name) or "held-out" (a seeded side of the train
 * split, with its ratios and seed), and split_part, the part of the source drawn from. */
static void put_split_info(emitter *e, const extract_args *a) {
    ds_split_info info = {.origin = DS_ORIGIN_WHOLE, .part = "all"};
    bp_err err;
    if (!a->lines && !a->question && ds_split_info_of(a->path, &a->ds, &info, &err)) bp_die_err(&err);
    bp_put_str(&e->w, "split_origin", ds_origin_name(info.origin));
    bp_put_str(&e->w, "split_part", info.part);
    if (info.origin != DS_ORIGIN_HELD_OUT) return;
    bp_put_float(&e->w, "validation_ratio", a->ds.validation_ratio);
    bp_put_float(&e->w, "test_ratio", a->ds.test_ratio);
    bp_put_int(&e->w, "holdout_seed", (int64_t)a->ds.seed);
    bp_put_bool(&e->w, "stratify", a->ds.stratify);
}

/* The schema: task and, for classification, the class names. */
static void send_hello(emitter *e, const extract_args *a) {
    char names[4096] = "";
    int n_labels = 0;
    bp_err err;
    if (!a->qa && !a->lines && (n_labels = ds_label_names(a->path, &a->ds, names, sizeof names, &err)) < 0)
        bp_die_err(&err);
    /* "a,b,c" -> {"a", "b", "c"} in place */
    const char *labels[256];
    int n = 0;
    for (char *name = names; n_labels > 0 && name && n < (int)(sizeof labels / sizeof *labels); n++) {
        labels[n] = name;
        if ((name = strchr(name, ','))) *name++ = 0;
    }
    bp_hello_begin(&e->w);
    bp_put_str(&e->w, "task", a->qa ? "qa" : "classification");
    e->n_labels = n_labels > 0 ? n : 0;
    if (n_labels > 0) {
        bp_put_strs(&e->w, "labels", labels, (size_t)n);
        bp_put_int(&e->w, "num_labels", n_labels);
    }
    bp_put_str(&e->w, "split", e->split);
    bp_put_str(&e->w, "source", a->question ? "--question/--context" : a->path);
    put_split_info(e, a);
    if (e->shards > 1) {
        char shard[48];
        snprintf(shard, sizeof shard, "%lld/%lld", (long long)e->shard, (long long)e->shards);
        bp_put_str(&e->w, "shard", shard);
    }
    bp_send_hello(e->out, &e->w);
}

/* Send every example; st gets the reader's counts. */
static void send_examples(emitter *e, const extract_args *a, ds_stats *st) {
    bp_err err = {{0}};
    int rc;
    if (a->question) {
        ds_example ex = {.id = "question-1", .title = "", .question = a->question, .context = a->context, .source = "argv"};
        rc = emit(&ex, e, &err) < 0 ? -1 : 0;
        st->records = st->emitted = rc == 0;
    } else if (a->lines) {
        rc = read_lines(a->path, e, a->ds.limit, &err);
        st->emitted = e->seq;
        st->records = e->index;
    } else {
        rc = ds_read(a->path, &a->ds, emit, e, st, &err);
    }
    if (rc) bp_die_err(&err);
}

int main(int argc, char **argv) {
    extract_args a = {.ds = {.seed = 42}};
    emitter e = {.first_article = -1, .last_article = -1, .shards = 1};
    bp_stage_init(&a.io, argv);
    bp_set_usage(usage);
    parse_args(argc, argv, &a, &e);
    e.split = a.ds.split ? a.ds.split : "train";

    e.out = bp_open_out(&a.io);
    bp_writer_init(&e.w);
    send_hello(&e, &a);
    ds_stats st = {0};
    send_examples(&e, &a, &st);
    bp_log("%lld records read, %lld examples sent; skipped: %lld neutral, %lld empty, %lld other split side, "
           "%lld outside --articles, %lld on other shards; %lld answers, %lld not matching their context",
           (long long)st.records, (long long)e.seq, (long long)st.skipped_neutral, (long long)st.skipped_empty,
           (long long)st.skipped_other_side, (long long)e.out_of_range, (long long)e.other_shards, (long long)st.answers,
           (long long)st.answer_mismatches);
    bp_close_out(e.out);
    bp_writer_free(&e.w);
    free(e.answers);
    free(e.last_title);
    return 0;
}
