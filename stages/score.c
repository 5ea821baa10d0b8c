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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/archive_input.h"
#include "eval/metrics.h"
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
    "  --in SPEC           input endpoint (default -: stdin)\n";

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
    metrics_squad_totals st1, st2;    /* QA: which version applies is known only at the end */
    int saw_impossible;
    int64_t n, unscored;              /* predictions; those without gold answers / label */
} tally;

/* A QA prediction's "answers" (the gold texts) as C strings, NULL-terminated; *n their count. */
static char **gold_texts(const bp_frame *f, int *n) {
    bp_err err;
    bp_str *answers = NULL;
    size_t n_answers = 0;
    if (bp_find_strs(f, "answers", &answers, &n_answers, &err) < 0) bp_die_err(&err);
    char **golds = calloc(n_answers + 1, sizeof *golds);
    if (!golds) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < n_answers; i++)
        if (!(golds[i] = strndup(answers[i].ptr, answers[i].len))) bp_die(1, NULL, "out of memory");
    free(answers);
    *n = (int)n_answers;
    return golds;
}

/* One QA prediction frame into both totals. */
static void add_qa(tally *t, const bp_frame *f) {
    bp_err err;
    char where[64];
    int n_golds, impossible = 0, match = 0;
    char *text = bp_get_strdup(f, "text", &err);
    if (!text || bp_find_bool(f, "is_impossible", &impossible, &err) < 0) bp_die_err(&err);
    int has_match = bp_find_bool(f, "span_match", &match, &err);
    if (has_match < 0) bp_die_err(&err);
    char **golds = gold_texts(f, &n_golds);
    if (impossible) t->saw_impossible = 1;
    if ((n_golds > 0 && metrics_squad_add(&t->st1, text, (const char *const *)golds, n_golds, NULL, NULL, &err)) ||
        metrics_squad_add(&t->st2, text, (const char *const *)golds, n_golds, NULL, NULL, &err))
        bp_die(1, NULL, "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
    if (n_golds == 0) t->unscored++;
    if (has_match) {
        /* add_span compares token indexes: (0,0) against (0,0) is a match, (1,0) is not */
        metrics_squad_add_span(&t->st1, match ? 0 : 1, 0, 0, 0);
        metrics_squad_add_span(&t->st2, match ? 0 : 1, 0, 0, 0);
    }
    for (int i = 0; i < n_golds; i++) free(golds[i]);
    free(golds);
    free(text);
}

/* The classes: the stream's labels, else the first prediction's probs, at least 2. */
static void cls_setup(tally *t, const bp_frame *f) {
    bp_err err;
    bp_tensor_view p;
    int C = t->n_labels;
    int has_probs = C ? 0 : bp_find_tensor(f, "probs", &p, &err);
    if (has_probs < 0) bp_die_err(&err);
    if (has_probs && p.ndim == 1) C = (int)p.shape[0];
    if (metrics_cls_init(&t->mc, C < 2 ? 2 : C, &err)) bp_die_err(&err);
    t->mc_ready = 1;
}

/* One classification prediction frame: its label against the gold one, its loss. */
static void add_cls(tally *t, const bp_frame *f) {
    bp_err err;
    char where[64];
    int64_t label, gold;
    double loss;
    if (bp_get_int(f, "label", BP_I32_MIN, BP_I32_MAX, &label, &err) ||
        bp_get_int(f, "gold", BP_I32_MIN, BP_I32_MAX, &gold, &err))
        bp_die_err(&err);
    if (!t->mc_ready) cls_setup(t, f);
    if (gold < 0) {   /* unlabelled (a test split): nothing to score, but counted */
        t->unscored++;
        return;
    }
    if (metrics_cls_add_prediction(&t->mc, (int)label, (int)gold, &err))
        bp_die(1, NULL, "%s: %s", bp_frame_where(f, where, sizeof where), err.msg);
    int has_loss = bp_find_float(f, "loss", &loss, &err);
    if (has_loss < 0) bp_die_err(&err);
    if (has_loss) {
        t->mc.loss_sum += loss;
        t->mc.loss_count++;
    }
}

/* Every prediction of the stream into t; closes the input. */
static void read_predictions(bp_in *in, tally *t) {
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_PREDICTION) {
            t->n++;
            if (t->qa) add_qa(t, &f);
            else add_cls(t, &f);
        }
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_in_close(in);
    if (t->qa && t->saw_impossible) t->v2 = 1;
    if (t->unscored && (!t->qa || !t->v2))
        bp_warn("%lld of %lld predictions carry no gold %s: not scored", (long long)t->unscored, (long long)t->n,
                t->qa ? "answers" : "label");
    bp_log("%lld predictions, %lld scored", (long long)t->n, (long long)(t->qa && t->v2 ? t->n : t->n - t->unscored));
}

/* QA: the summary JSON, the two lines on stderr, the metric frame's fields. */
static void report_qa(const tally *t, FILE *jf, const char *jname, bp_writer *w) {
    bp_err err;
    metrics_squad_summary s = metrics_squad_summarize(t->v2 ? &t->st2 : &t->st1);
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
static void report_cls(tally *t, FILE *jf, bp_writer *w) {
    bp_err err;
    const char *const *names = t->n_labels ? (const char *const *)t->labels : NULL;
    if (!t->mc_ready && metrics_cls_init(&t->mc, t->n_labels > 1 ? t->n_labels : 2, &err)) bp_die_err(&err);
    if (metrics_cls_write_json(&t->mc, names, jf, &err) || metrics_cls_format_table(&t->mc, names, stderr, &err))
        bp_die_err(&err);
    if (w) {
        bp_put_float(w, "accuracy", metrics_cls_accuracy(&t->mc));
        bp_put_float(w, "macro_f1", metrics_cls_macro_f1(&t->mc));
        if (t->mc.loss_count) bp_put_float(w, "loss", metrics_cls_mean_loss(&t->mc));
    }
    metrics_cls_free(&t->mc);
}

/* The JSON summary, and with --out a stream of one metric frame (scope "score"). */
static void report(tally *t, const score_args *a) {
    bp_out *out = a->out_given ? bp_open_out(&a->io) : NULL;
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
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!!a->dataset != !!a->predictions) bp_die(2, NULL, "file mode needs both --dataset and --predictions");
}

int main(int argc, char **argv) {
    score_args a = {0};
    bp_stage_init(&a.io, argv);
    parse_args(argc, argv, &a);
    if (a.dataset) {
        score_files(&a);
        return 0;
    }

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    bp_err err;
    tally t = {.qa = bp_hello_is_qa(hello), .v2 = a.v2};
    int hello_v2 = 0;
    if (bp_find_bool(hello, "version_2", &hello_v2, &err) < 0 || (t.n_labels = bp_hello_labels(hello, &t.labels, &err)) < 0)
        bp_die_err(&err);
    if (hello_v2) t.v2 = 1;
    metrics_squad_totals_init(&t.st1, METRICS_SQUAD_V1);
    metrics_squad_totals_init(&t.st2, METRICS_SQUAD_V2);
    read_predictions(in, &t);
    report(&t, &a);
    bp_labels_free(t.labels, t.n_labels);
    return 0;
}
