/* postprocess — logits frames in, prediction frames (and prediction files) out.
 *
 * Classification: softmax over each row, the argmax label and its probability; a run_glue
 * style predictions file with --predictions. QA: Hugging Face run_qa's post-processing
 * (common/eval/qa_postprocess.h): for every example, the n-best spans over all its windows,
 * their text sliced from the example's context by offsets, predictions.json and
 * nbest_predictions.json. The context comes from the example frames themselves, read from
 * the side input --examples (e.g. file:validation.examples, the recording extract made).
 * Must never: invent an answer: an example without logits is an error naming it.
 */
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/metrics.h"
#include "eval/qa_examples.h"
#include "stage/frame_input.h"
#include "stage/qa_examples_input.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: postprocess [options] [--in SPEC] [--out SPEC]\n"
    "Turn logits frames into prediction frames.\n"
    "  --predictions FILE  classification: index<TAB>label<TAB>p_... lines; QA: predictions.json\n"
    "  --text FILE         one readable line per prediction: LABEL<TAB>PROBABILITY, or ANSWER<TAB>SCORE\n"
    "  QA only:\n"
    "  --examples SPEC     the example frames (context text), e.g. file:validation.examples\n"
    "  --nbest FILE        nbest_predictions.json\n"
    "  --n-best N          candidates kept per example (default 20)\n"
    "  --max-answer-length N   in tokens (default 30)\n"
    "  --version-2         SQuAD v2: the null answer competes (--null-threshold X, default 0)\n"
    "  --allow-missing     an example with no logits gets no prediction instead of an error\n"
    BP_IO_USAGE;

/* What the command line asks for. */
typedef struct postprocess_args {
    bp_io_opts io;
    const char *pred_path, *nbest_path, *examples, *text_path;
    int allow_missing;
    qa_post_options po;
} postprocess_args;

/* Where predictions go: the frames, and the files the options ask for. */
typedef struct sink {
    const postprocess_args *args;
    bp_out *out;
    bp_writer *w;
    FILE *text_out;    /* --text, or NULL */
    int64_t seq;       /* prediction frames sent */
} sink;

/* ---- classification ---------------------------------------------------------------- */

/* The classes (from the first logits frame) and buffers sized for the largest frame so far. */
typedef struct cls_state {
    char **labels;
    int n_labels, C;
    FILE *pred_file;
    float *logits, *probs;   /* [rows, C] */
    int32_t *gold;           /* [rows] */
    size_t rows_cap;
    int64_t index;     /* rows so far: the predictions file's index column */
    void *seen;        /* tsearch tree of "WINDOW:ID": every (example, window) is predicted once */
} cls_state;

/* The first logits frame fixes the classes; the predictions file gets its header. */
static void cls_start(sink *k, cls_state *c, const bp_frame *f, int64_t C) {
    bp_err err;
    char where[64];
    c->C = (int)C;   /* at least 1 (bp_cls_logits_read) */
    if (c->n_labels && c->n_labels != c->C)
        bp_die(1, bp_frame_where(f, where, sizeof where), "logits have %d classes but the stream names %d labels", c->C,
               c->n_labels);
    const char *path = k->args->pred_path;
    if (!path) return;
    if (!(c->pred_file = fopen(path, "w"))) bp_die(1, path, "cannot create");
    if (metrics_cls_write_predictions_header(c->pred_file, c->n_labels ? (const char *const *)c->labels : NULL, c->C, 1,
                                             &err))
        bp_die_err(&err);
}

/* Room for `rows` rows of C classes. */
static void cls_grow(cls_state *c, size_t rows) {
    if (rows <= c->rows_cap) return;
    c->rows_cap = rows;
    c->logits = realloc(c->logits, rows * (size_t)c->C * sizeof *c->logits);
    c->probs = realloc(c->probs, rows * (size_t)c->C * sizeof *c->probs);
    c->gold = realloc(c->gold, rows * sizeof *c->gold);
    if (!c->logits || !c->probs || !c->gold) bp_die(1, NULL, "out of memory for %zu rows of logits", rows);
}

static int cmp_key(const void *a, const void *b) { return strcmp(a, b); }

/* Row i of frame f is example id's window: refused when that (example, window) came before, so
 * a stream replayed twice or an eval over two epochs never counts an example twice. */
static void cls_once(cls_state *c, const bp_frame *f, int64_t i, const bp_str *id, int32_t window) {
    char where[64];
    char *key = malloc(id->len + 16);
    if (!key) bp_die(1, NULL, "out of memory");
    snprintf(key, id->len + 16, "%d:%.*s", (int)window, (int)id->len, id->ptr);
    char **found = tsearch(key, &c->seen, cmp_key);
    if (!found) bp_die(1, NULL, "out of memory");
    if (*found != key) {
        free(key);
        bp_die(1, bp_frame_where(f, where, sizeof where), "row %lld: example %.*s window %d has logits twice "
               "(a stream replayed, or an evaluation over more than one epoch?)", (long long)i,
               (int)(id->len > 200 ? 200 : id->len), id->ptr, (int)window);
    }
}

/* Row i of frame f: softmax, argmax, one prediction frame and file lines. */
static void cls_predict_row(sink *k, cls_state *c, const bp_frame *f, int64_t i, const bp_str *id, int has_gold) {
    bp_err err;
    char where[64];
    int C = c->C;
    const float *row = c->logits + i * C;
    for (int j = 0; j < C; j++)
        if (!(row[j] == row[j]) || row[j] > 3e38f || row[j] < -3e38f)
            bp_die(1, bp_frame_where(f, where, sizeof where), "row %lld of 'logits' is not finite", (long long)i);
    float *p = c->probs + i * C;
    metrics_softmax(row, C, p);
    int label = metrics_argmax(p, C);
    int32_t gold = has_gold ? c->gold[i] : -1;
    int64_t shape[1] = {C};
    bp_writer *w = k->w;
    bp_begin(w, BP_PREDICTION);
    bp_put_int(w, "seq", k->seq++);
    bp_put_strn(w, "example_id", id->ptr, id->len);
    bp_put_int(w, "label", label);
    bp_put_tensor(w, "probs", BP_F32, 1, shape, p);
    bp_put_int(w, "gold", gold);
    if (gold >= 0 && gold < C) bp_put_float(w, "loss", metrics_cross_entropy(row, C, gold));
    bp_send(k->out, w);
    const char *const *names = c->n_labels ? (const char *const *)c->labels : NULL;
    if (c->pred_file && metrics_cls_write_prediction_line(c->pred_file, c->index, label, names, p, C, &err))
        bp_die_err(&err);
    if (k->text_out) {
        if (names) fprintf(k->text_out, "%s\t%.4f\n", names[label], p[label]);
        else fprintf(k->text_out, "%d\t%.4f\n", label, p[label]);
    }
    c->index++;
}

static void cls_logits_frame(sink *k, cls_state *c, const bp_frame *f) {
    bp_err err;
    char where[64];
    bp_cls_logits_view l;
    if (bp_cls_logits_read(f, &l, &err)) bp_die_err(&err);
    if (c->C == 0) cls_start(k, c, f, l.C);
    else if (l.C != c->C)
        bp_die(1, bp_frame_where(f, where, sizeof where), "logits have %lld classes, earlier frames %d", (long long)l.C, c->C);
    cls_grow(c, (size_t)l.B);
    bp_tensor_copy(&l.logits, c->logits);
    if (l.has_labels) bp_tensor_copy(&l.labels, c->gold);
    int32_t window = 0;
    for (int64_t i = 0; i < l.B; i++) {
        if (l.has_windows) memcpy(&window, (const char *)l.windows.data + i * 4, 4);
        cls_once(c, f, i, &l.ids[i], window);
        cls_predict_row(k, c, f, i, &l.ids[i], l.has_labels);
    }
    bp_cls_logits_view_free(&l);
}

static void classification(bp_in *in, sink *k, char **labels, int n_labels) {
    cls_state c = {.labels = labels, .n_labels = n_labels};
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_LOGITS) cls_logits_frame(k, &c, &f);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    const char *path = k->args->pred_path;
    if (c.pred_file && fclose(c.pred_file)) bp_die(1, path, "write failed");
    bp_log("%lld predictions%s%s", (long long)c.index, path ? " written to " : "", path ? path : "");
    tdestroy(c.seen, free);
    free(c.logits);
    free(c.probs);
    free(c.gold);
}

/* ---- QA ---------------------------------------------------------------------------- */

/* One logits frame's tensors, copied out of the frame. */
typedef struct qa_logits {
    int64_t B, T;
    float *start, *end;       /* [B, T] */
    int32_t *offsets;         /* [B, T, 2] */
    int32_t *windows;         /* [B] */
    int32_t *gold_start, *gold_end;   /* [B], when the frame has them */
    bp_str *ids;
} qa_logits;

static void qa_logits_read(const bp_frame *f, qa_logits *l) {
    bp_err err;
    bp_qa_logits_view v;
    if (bp_qa_logits_read(f, &v, &err)) bp_die_err(&err);
    *l = (qa_logits){.B = v.B, .T = v.T, .ids = v.ids, .start = malloc(v.start.nbytes), .end = malloc(v.end.nbytes),
                     .offsets = malloc(v.offsets.nbytes), .windows = malloc(v.windows.nbytes),
                     .gold_start = v.has_positions ? malloc(v.start_positions.nbytes) : NULL,
                     .gold_end = v.has_positions ? malloc(v.end_positions.nbytes) : NULL};
    if (!l->start || !l->end || !l->offsets || !l->windows || (v.has_positions && (!l->gold_start || !l->gold_end)))
        bp_die(1, NULL, "out of memory");
    bp_tensor_copy(&v.start, l->start);
    bp_tensor_copy(&v.end, l->end);
    bp_tensor_copy(&v.offsets, l->offsets);
    bp_tensor_copy(&v.windows, l->windows);
    if (v.has_positions) {
        bp_tensor_copy(&v.start_positions, l->gold_start);
        bp_tensor_copy(&v.end_positions, l->gold_end);
    }
}

static void qa_logits_free(qa_logits *l) {
    free(l->start); free(l->end); free(l->offsets); free(l->windows); free(l->gold_start); free(l->gold_end); free(l->ids);
}

/* Row i of l becomes one more window of its example. */
static void add_window(qa_example *e, const qa_logits *l, int64_t i) {
    bp_err err;
    int64_t T = l->T;
    if (qa_example_add_window(e, l->windows[i], (int)T, l->start + i * T, l->end + i * T, l->offsets + 2 * i * T,
                              l->gold_start ? l->gold_start[i] : -1, l->gold_end ? l->gold_end[i] : -1, &err))
        bp_die_err(&err);
}

/* The logits, gathered per example. Returns the rows read. A row naming no example of
 * --examples means the two streams do not belong together: an error, never a row dropped. */
static int64_t gather_logits(bp_in *in, const qa_examples *xs, const char *examples_spec) {
    int64_t rows = 0;
    bp_frame f;
    int r;
    char where[64];
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_LOGITS) {
            qa_logits l;
            qa_logits_read(&f, &l);
            for (int64_t i = 0; i < l.B; i++, rows++) {
                qa_example *e = qa_examples_find(xs, l.ids[i].ptr, l.ids[i].len);
                if (!e)
                    bp_die(1, bp_frame_where(&f, where, sizeof where), "row %lld names example %.*s, which %s does not have",
                           (long long)i, (int)(l.ids[i].len > 200 ? 200 : l.ids[i].len), l.ids[i].ptr, examples_spec);
                add_window(e, &l, i);
            }
            qa_logits_free(&l);
        }
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    return rows;
}

/* The prediction frame of one example and its line in --text. */
static void send_qa_prediction(sink *k, const qa_example *e, qa_post_result *res) {
    const qa_post_candidate *best = res->n_nbest > 0 ? &res->nbest[res->answer_index] : NULL;
    bp_writer *w = k->w;
    bp_begin(w, BP_PREDICTION);
    bp_put_int(w, "seq", k->seq++);
    bp_put_str(w, "example_id", e->id);
    bp_put_str(w, "text", res->answer);
    bp_put_float(w, "score", res->answer_score);
    bp_put_strs(w, "answers", (const char *const *)e->answers, (size_t)e->n_answers);
    bp_put_bool(w, "is_impossible", e->is_impossible);
    if (best && best->window >= 0 && e->windows[best->window].gold_start >= 0) {
        const qa_window_logits *wd = &e->windows[best->window];
        bp_put_bool(w, "span_match", best->start_index == wd->gold_start && best->end_index == wd->gold_end);
    }
    bp_send(k->out, w);
    if (k->text_out) {
        /* one line per answer: tabs and newlines inside the text become spaces */
        for (char *c = res->answer; *c; c++)
            if (*c == '\t' || *c == '\n' || *c == '\r') *c = ' ';
        fprintf(k->text_out, "%s\t%.4f\n", res->answer, res->answer_score);
    }
}

/* run_qa's post-processing over every window of e: one prediction. */
static void predict_example(sink *k, qa_example *e, json_t *preds, json_t *nbest) {
    bp_err err;
    char where[300];
    snprintf(where, sizeof where, "example %.200s", e->id);
    qa_post_result res;
    if (qa_example_predict(e, &k->args->po, &res, &err)) bp_die(1, where, "%s", err.msg);
    if (qa_post_json_add(preds, nbest, NULL, e->id, &res, &err)) bp_die_err(&err);
    send_qa_prediction(k, e, &res);
    qa_post_result_free(&res);
}

static void qa(bp_in *in, sink *k) {
    const postprocess_args *a = k->args;
    bp_err err;
    qa_examples examples, *xs = &examples;
    bp_read_qa_examples(a->examples, xs);
    int64_t rows = gather_logits(in, xs, a->examples);

    /* one prediction per example, in the examples' order */
    json_t *preds = json_object(), *nbest = a->nbest_path ? json_object() : NULL;
    int64_t missing = 0;
    for (size_t i = 0; i < xs->n; i++) {
        qa_example *e = &xs->ex[i];
        if (e->n_windows == 0) {
            missing++;
            if (!a->allow_missing)
                bp_die(1, a->examples, "example %s has no logits in the input: is the logits stream complete?", e->id);
            continue;
        }
        predict_example(k, e, preds, nbest);
    }
    if (a->pred_path && qa_post_json_write_file(preds, a->pred_path, &err)) bp_die_err(&err);
    if (a->nbest_path && qa_post_json_write_file(nbest, a->nbest_path, &err)) bp_die_err(&err);
    if (missing) bp_warn("%lld examples had no logits and got no prediction (--allow-missing)", (long long)missing);
    bp_log("%lld examples, %lld windows -> %lld predictions%s%s", (long long)xs->n, (long long)rows, (long long)k->seq,
           a->pred_path ? " written to " : "", a->pred_path ? a->pred_path : "");
    json_decref(preds);
    json_decref(nbest);
    qa_examples_free(xs);
}

static void parse_args(int argc, char **argv, postprocess_args *a) {
    enum { O_PRED = 1, O_NBESTF, O_EXAMPLES, O_NBEST, O_MAXLEN, O_V2, O_NULL, O_ALLOW, O_TEXT };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
        {"predictions", required_argument, 0, O_PRED}, {"nbest", required_argument, 0, O_NBESTF},
        {"examples", required_argument, 0, O_EXAMPLES}, {"n-best", required_argument, 0, O_NBEST},
        {"max-answer-length", required_argument, 0, O_MAXLEN}, {"version-2", no_argument, 0, O_V2},
        {"null-threshold", required_argument, 0, O_NULL}, {"allow-missing", no_argument, 0, O_ALLOW},
        {"text", required_argument, 0, O_TEXT},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    qa_post_options *po = &a->po;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_PRED: a->pred_path = optarg; break;
        case O_NBESTF: a->nbest_path = optarg; break;
        case O_EXAMPLES: a->examples = optarg; break;
        case O_NBEST: po->n_best = (int)bp_opt_long("--n-best", optarg, 1, 10000); break;
        case O_MAXLEN: po->max_answer_length = (int)bp_opt_long("--max-answer-length", optarg, 1, 100000); break;
        case O_V2: po->version_2_with_negative = 1; break;
        case O_NULL: po->null_score_diff_threshold = (float)bp_opt_double("--null-threshold", optarg, -1e9, 1e9); break;
        case O_ALLOW: a->allow_missing = 1; break;
        case O_TEXT: a->text_path = optarg; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
}

int main(int argc, char **argv) {
    postprocess_args a = {0};
    qa_post_options_default(&a.po);
    bp_stage_init(&a.io, argv);
    parse_args(argc, argv, &a);

    bp_out *out = bp_open_out(&a.io);
    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    bp_err err;
    int is_qa = bp_stream_is_qa(hello);
    if (is_qa && !a.examples) bp_die(2, NULL, "QA post-processing needs --examples SPEC (the example frames with the contexts)");
    char **labels;
    int n_labels = bp_hello_labels(hello, &labels, &err);
    if (n_labels < 0) bp_die_err(&err);

    bp_writer w;
    bp_writer_init(&w);
    sink k = {.args = &a, .out = out, .w = &w};
    static const char *const pass_on[] = {"task", "labels", "num_labels", "split", "source", NULL};
    bp_hello_begin_from(&w, hello, pass_on);
    if (is_qa) bp_put_bool(&w, "version_2", a.po.version_2_with_negative);
    bp_send_hello(k.out, &w);
    if (a.text_path && !(k.text_out = fopen(a.text_path, "w"))) bp_die(1, a.text_path, "cannot create");
    if (is_qa) qa(in, &k);
    else classification(in, &k, labels, n_labels);
    if (k.text_out && fclose(k.text_out)) bp_die(1, a.text_path, "write failed");
    bp_close_out(k.out);
    bp_in_close(in);
    bp_labels_free(labels, n_labels);
    bp_writer_free(&w);
    return 0;
}
