/* score — prediction frames in, metrics out: a JSON summary, a readable table on stderr,
 * and a metric frame when --out is given.
 *
 * Classification: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and
 * eval loss (common/eval/metrics.h). QA: the official SQuAD v1.1 exact match and F1 (v2.0 with
 * HasAns/NoAns when the stream says version_2 or any prediction is_impossible), plus span
 * accuracy. File mode, like the official script:
 *   score --dataset dev-v1.1.json --predictions predictions.json
 * prints {"exact_match": ..., "f1": ...}; either file may be .gz or inside a .zip/.tar.gz.
 * The JSON summary goes to --json FILE, else stdout — unless the metric frame itself goes
 * to stdout (--out -), when it goes to stderr so the two never mix.
 * Must never: score a partial stream as whole: the input must end with its eos.
 */
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/archive_input.h"
#include "eval/metrics.h"
#include "stage/frame_input.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: score [--json FILE] [--version-2] [--in SPEC] [--out SPEC]\n"
    "       score --dataset DATA.json --predictions predictions.json [--version-2] [--json FILE]\n"
    "Metrics of prediction frames (or of a SQuAD predictions file).\n"
    "  --json FILE         write the JSON summary here (default: stdout; stderr when --out is -)\n"
    "  --out SPEC          also send a metric frame (scope \"score\") to SPEC\n"
    "  --dataset FILE      file mode: the SQuAD dataset JSON (.json, .gz, or in a .zip/.tar.gz)\n"
    "  --predictions FILE  file mode: {id: answer text}\n"
    "  --version-2         score as SQuAD v2.0 (default: as the dataset or the stream says)\n"
    "  --in SPEC           input endpoint (default -: stdin)\n"
    BP_CURVE_USAGE;

/* The one JSON document in path: a plain or compressed file, or the first *.json member of
 * an archive or folder (macOS "._" shadow files skipped). Returns the parsed JSON (caller
 * decrefs) or NULL with err naming path and member; frees what it read either way. */
static json_t *load_json_any(const char *path, const char *what, bp_err *err) {
    arc_input *a = arc_open(path, err);
    if (!a) return NULL;
    int r;
    while ((r = arc_next_member(a, err)) == 1) {
        if (!arc_is_container(a)) break;
        const char *name = arc_member_name(a), *base = strrchr(name, '/');
        base = base ? base + 1 : name;
        size_t n = strlen(base);
        if (n > 5 && strcmp(base + n - 5, ".json") == 0 && strncmp(base, "._", 2) != 0) break;
    }
    if (r == 0) bp_err_set(err, "no .json member holding the %s (%s)", what, path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    ssize_t got = r == 1 ? 1 : -1;
    while (got > 0) {
        if (cap - len < 65536) {
            char *grown = realloc(buf, cap = cap ? 2 * cap : 1 << 20);
            if (!grown) {
                bp_err_set(err, "out of memory reading the %s (%s)", what, arc_where(a));
                got = -1;
                break;
            }
            buf = grown;
        }
        if ((got = arc_read(a, buf + len, cap - len, err)) > 0) len += (size_t)got;
    }
    json_t *root = NULL;
    if (got == 0) {
        json_error_t jerr;
        if (!(root = json_loadb(buf, len, 0, &jerr)))
            bp_err_set(err, "cannot read the %s JSON: %s (%s line %d column %d)", what, jerr.text, arc_where(a),
                       jerr.line, jerr.column);
    }
    free(buf);
    arc_close(a);
    return root;
}

static FILE *open_json(const char *path) {
    if (!path) return stdout;
    FILE *f = fopen(path, "w");
    if (!f) bp_die(1, path, "cannot create");
    return f;
}

static void close_json(FILE *f, const char *path) {
    if (fflush(f) || (f != stdout && fclose(f))) bp_die(1, path ? path : "stdout", "write failed");
}

/* What the command line asks for. */
typedef struct score_args {
    bp_io_opts io;
    const char *json_path, *dataset, *predictions;
    int v2, out_given;
} score_args;

/* What the prediction stream adds up to. */
typedef struct tally {
    int qa, v2;
    char **labels;
    int n_labels;
    metrics_cls mc;                   /* classification, set up by the first prediction */
    int mc_ready;
    metrics_squad_tally squad;        /* QA: which version applies is known only at the end */
    int64_t n, unscored;              /* predictions; those without gold answers / label */
    void *ids;                        /* tsearch tree of the example ids scored so far */
} tally;

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

/* Every prediction names its example, each example once: 16 predictions are never scored
 * as if 16 examples had been asked (a stream replayed, two epochs evaluated). */
static void count_once(tally *t, const bp_frame *f, const bp_str *example_id) {
    char where[64];
    char *id = strndup(example_id->ptr, example_id->len);
    if (!id) bp_die(1, NULL, "out of memory");
    char **found = tsearch(id, &t->ids, cmp_id);
    if (!found) bp_die(1, NULL, "out of memory");
    if (*found != id) {
        char shown[208];
        snprintf(shown, sizeof shown, "%.200s", id);
        free(id);
        bp_die(1, bp_frame_where(f, where, sizeof where), "example %s is predicted twice", shown);
    }
}

/* A QA prediction's "answers" (the gold texts) as C strings, NULL-terminated. */
static char **gold_texts(const bp_prediction_view *p) {
    char **golds = calloc(p->n_answers + 1, sizeof *golds);
    if (!golds) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < p->n_answers; i++)
        if (!(golds[i] = strndup(p->answers[i].ptr, p->answers[i].len))) bp_die(1, NULL, "out of memory");
    return golds;
}

/* One QA prediction into both totals. */
static void add_qa(tally *t, const bp_frame *f, const bp_prediction_view *p) {
    bp_err err;
    char where[64];
    int n_golds = (int)p->n_answers;
    char *text = strndup(p->text.ptr, p->text.len);
    char **golds = gold_texts(p);
    if (!text) bp_die(1, NULL, "out of memory");
    if (metrics_squad_tally_add(&t->squad, text, (const char *const *)golds, n_golds, p->is_impossible, &err))
        bp_die(1, bp_frame_where(f, where, sizeof where), "%s", err.msg);
    if (p->has_span_match) {
        /* add_span compares token indexes: (0,0) against (0,0) is a match, (1,0) is not */
        metrics_squad_add_span(&t->squad.v1, p->span_match ? 0 : 1, 0, 0, 0);
        metrics_squad_add_span(&t->squad.v2, p->span_match ? 0 : 1, 0, 0, 0);
    }
    for (int i = 0; i < n_golds; i++) free(golds[i]);
    free(golds);
    free(text);
}

/* The classes: the stream's labels, else the first prediction's probs, at least 2. */
static void cls_setup(tally *t, const bp_frame *f) {
    bp_err err;
    char where[64];
    bp_tensor_view p;
    int C = t->n_labels;
    int has_probs = C ? 0 : bp_find_tensor(f, "probs", &p, &err);
    if (has_probs < 0) bp_die_err(&err);
    if (has_probs && p.ndim == 1) C = p.shape[0] > METRICS_MAX_CLASSES ? METRICS_MAX_CLASSES + 1 : (int)p.shape[0];
    if (metrics_cls_init(&t->mc, C < 2 ? 2 : C, &err)) bp_die(1, bp_frame_where(f, where, sizeof where), "%s", err.msg);
    t->mc_ready = 1;
}

/* One classification prediction: its label against the gold one, its loss. */
static void add_cls(tally *t, const bp_frame *f, const bp_prediction_view *p) {
    bp_err err;
    char where[64];
    if (!t->mc_ready) cls_setup(t, f);
    if (p->gold < 0) {   /* unlabelled (a test split): nothing to score, but counted */
        t->unscored++;
        return;
    }
    if (metrics_cls_add_prediction(&t->mc, (int)p->label, (int)p->gold, &err))
        bp_die(1, bp_frame_where(f, where, sizeof where), "%s", err.msg);
    if (p->has_loss) {
        t->mc.loss_sum += p->loss;
        t->mc.loss_count++;
    }
}

/* Every prediction of the stream into t; closes the input. */
static void read_predictions(bp_in *in, tally *t) {
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_PREDICTION) {
            bp_err err;
            bp_prediction_view p;
            if (bp_prediction_read(&f, t->qa, &p, &err)) bp_die_err(&err);
            count_once(t, &f, &p.example_id);
            t->n++;
            if (t->qa) add_qa(t, &f, &p);
            else add_cls(t, &f, &p);
            bp_prediction_view_free(&p);
        }
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_in_close(in);
    tdestroy(t->ids, free);
    t->ids = NULL;
    if (t->qa) {
        t->v2 = metrics_squad_tally_is_v2(&t->squad, t->v2);
        t->unscored = t->squad.unscored;
    }
    if (t->unscored && (!t->qa || !t->v2))
        bp_warn("%lld of %lld predictions carry no gold %s: not scored", (long long)t->unscored, (long long)t->n,
                t->qa ? "answers" : "label");
    bp_log("%lld predictions, %lld scored", (long long)t->n, (long long)(t->qa && t->v2 ? t->n : t->n - t->unscored));
}

/* QA: the summary JSON, the two lines on stderr, the metric frame's fields. */
static void report_qa(const tally *t, FILE *jf, const char *jname, bp_writer *w) {
    bp_err err;
    metrics_squad_summary s = metrics_squad_tally_summarize(&t->squad, t->v2);
    json_t *j = metrics_squad_summary_to_json(&s, &err);
    if (!j) bp_die_err(&err);
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(16));
    if (!text || fprintf(jf, "%s\n", text) < 0) bp_die(1, jname, "write failed");
    fprintf(stderr, "score: exact match %.2f  F1 %.2f  span accuracy %.2f  (%lld questions)\n", s.exact, s.f1,
            s.span_total ? s.span_accuracy : 0.0 / 0.0, (long long)s.total);
    if (t->v2)
        fprintf(stderr, "score: HasAns exact %.2f F1 %.2f (%lld)  NoAns exact %.2f F1 %.2f (%lld)\n", s.has_ans_exact,
                s.has_ans_f1, (long long)s.has_ans_total, s.no_ans_exact, s.no_ans_f1, (long long)s.no_ans_total);
    if (w) {
        bp_put_float(w, "exact_match", s.exact);
        bp_put_float(w, "f1", s.f1);
        if (s.span_total) bp_put_float(w, "span_accuracy", s.span_accuracy);
        if (t->v2 && s.has_ans_total) {
            bp_put_float(w, "has_ans_exact", s.has_ans_exact);
            bp_put_float(w, "has_ans_f1", s.has_ans_f1);
        }
        if (t->v2 && s.no_ans_total) {
            bp_put_float(w, "no_ans_exact", s.no_ans_exact);
            bp_put_float(w, "no_ans_f1", s.no_ans_f1);
        }
    }
    free(text);
    json_decref(j);
}

/* Classification: the summary JSON, the table on stderr, the metric frame's fields. */
/* A model that answers one class whatever the input has learnt nothing yet (a fresh model at
 * too high a learning rate, too few steps): one line says so, with what to try. */
static void hint_one_class(const metrics_cls *mc, const char *const *names, int n_names) {
    if (mc->count < 2) return;
    for (int c = 0; c < mc->num_classes; c++) {
        int64_t predicted = 0;
        for (int g = 0; g < mc->num_classes; g++) predicted += mc->confusion[(size_t)g * (size_t)mc->num_classes + (size_t)c];
        if (predicted != mc->count) continue;
        char label[32];
        snprintf(label, sizeof label, "class %d", c);
        bp_warn("all %lld predictions are %s: the model has not learnt to tell the classes apart; "
                "try a lower --lr or more epochs", (long long)mc->count, names && c < n_names ? names[c] : label);
        return;
    }
}

static void report_cls(tally *t, FILE *jf, bp_writer *w) {
    bp_err err;
    const char *const *names = t->n_labels ? (const char *const *)t->labels : NULL;
    if (!t->mc_ready && metrics_cls_init(&t->mc, t->n_labels > 1 ? t->n_labels : 2, &err)) bp_die_err(&err);
    if (metrics_cls_write_json(&t->mc, names, jf, &err) || metrics_cls_format_table(&t->mc, names, stderr, &err))
        bp_die_err(&err);
    hint_one_class(&t->mc, names, t->n_labels);
    if (w) {
        bp_put_float(w, "accuracy", metrics_cls_accuracy(&t->mc));
        bp_put_float(w, "macro_f1", metrics_cls_macro_f1(&t->mc));
        if (t->mc.loss_count) bp_put_float(w, "loss", metrics_cls_mean_loss(&t->mc));
    }
    metrics_cls_free(&t->mc);
}

/* The JSON summary, and with --out a stream of one metric frame (scope "score"). */
static void report(tally *t, const score_args *a, bp_out *out) {
    bp_writer w;
    bp_writer_init(&w);
    if (out) {
        bp_hello_begin(&w);
        bp_put_str(&w, "task", t->qa ? "qa" : "classification");
        bp_send_hello(out, &w);
        bp_begin(&w, BP_METRIC);
        bp_put_int(&w, "seq", 0);
        bp_put_str(&w, "scope", "score");
        bp_put_int(&w, "examples", t->n);
    }
    /* the metric frame on stdout leaves stderr for the JSON */
    FILE *jf = a->json_path ? open_json(a->json_path) : out && strcmp(a->io.out, "-") == 0 ? stderr : stdout;
    const char *jname = a->json_path ? a->json_path : jf == stderr ? "stderr" : "stdout";
    if (t->qa) report_qa(t, jf, jname, out ? &w : NULL);
    else report_cls(t, jf, out ? &w : NULL);
    if (fflush(jf) || (a->json_path && fclose(jf))) bp_die(1, jname, "write failed");
    if (out) {
        bp_send(out, &w);
        bp_close_out(out);
    }
    bp_writer_free(&w);
}

/* File mode, like the official script: {"exact_match": ..., "f1": ...}. */
static void score_files(const score_args *a) {
    bp_err err;
    if (a->out_given) bp_die(2, NULL, "file mode writes JSON only: --out does not apply");
    json_t *d = load_json_any(a->dataset, "dataset", &err), *p = d ? load_json_any(a->predictions, "predictions", &err) : NULL;
    metrics_squad_summary s;
    /* a load error already names its file; a scoring error gets both names */
    int loaded = p != NULL;
    int failed = !loaded || metrics_squad_score_json(d, p, a->v2 ? METRICS_SQUAD_V2 : METRICS_SQUAD_AUTO, &s, &err);
    json_decref(d);
    json_decref(p);
    if (failed && loaded) bp_die(1, NULL, "%s (%s, %s)", err.msg, a->dataset, a->predictions);
    if (failed) bp_die_err(&err);
    if (s.missing) bp_warn("%lld questions have no prediction (scored 0)", (long long)s.missing);
    FILE *f = open_json(a->json_path);
    if (metrics_squad_write_official(&s, f, &err)) bp_die_err(&err);
    close_json(f, a->json_path);
}

static void parse_args(int argc, char **argv, score_args *a) {
    enum { O_JSON = 1, O_DATASET, O_PREDS, O_V2 };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, {"json", required_argument, 0, O_JSON}, {"dataset", required_argument, 0, O_DATASET},
        {"predictions", required_argument, 0, O_PREDS}, {"version-2", no_argument, 0, O_V2},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == BP_OPT_OUT) a->out_given = 1;
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_JSON: a->json_path = optarg; break;
        case O_DATASET: a->dataset = optarg; break;
        case O_PREDS: a->predictions = optarg; break;
        case O_V2: a->v2 = 1; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
    if (!!a->dataset != !!a->predictions) bp_usage_die("file mode needs both --dataset and --predictions");
}

int main(int argc, char **argv) {
    score_args a = {0};
    bp_stage_init(&a.io, argv);
    bp_set_usage(usage);
    parse_args(argc, argv, &a);
    if (a.dataset) {
        score_files(&a);
        return 0;
    }

    bp_out *out = a.out_given ? bp_open_out(&a.io) : NULL;
    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    bp_err err;
    tally t = {.qa = bp_stream_is_qa(hello), .v2 = a.v2};
    int hello_v2 = 0;
    if (bp_find_bool(hello, "version_2", &hello_v2, &err) < 0 || (t.n_labels = bp_hello_labels(hello, &t.labels, &err)) < 0)
        bp_die_err(&err);
    if (hello_v2) t.v2 = 1;
    metrics_squad_tally_init(&t.squad);
    read_predictions(in, &t);
    report(&t, &a, out);
    bp_labels_free(t.labels, t.n_labels);
    return 0;
}
