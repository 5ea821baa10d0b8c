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
#include "eval/qa_postprocess.h"
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

/* The classes (from the first logits frame) and buffers sized for the widest frame so far. */
typedef struct cls_state {
    char **labels;
    int n_labels, C;
    FILE *pred_file;
    float *logits, *probs;
    int32_t *gold;
    size_t cap;
    int64_t index;     /* rows so far: the predictions file's index column */
} cls_state;

/* The first logits frame fixes the classes; the predictions file gets its header. */
static void cls_start(sink *k, cls_state *c, int64_t C) {
    bp_err err;
    c->C = (int)C;
    if (c->n_labels && c->n_labels != c->C)
        bp_die(1, NULL, "logits have %d classes but the stream names %d labels", c->C, c->n_labels);
    const char *path = k->args->pred_path;
    if (!path) return;
    if (!(c->pred_file = fopen(path, "w"))) bp_die(1, path, "cannot create");
    if (metrics_cls_write_predictions_header(c->pred_file, c->n_labels ? (const char *const *)c->labels : NULL, c->C, 1,
                                             &err))
        bp_die_err(&err);
}

static void cls_grow(cls_state *c, size_t cells) {
    if (cells <= c->cap) return;
    c->cap = cells;
    c->logits = realloc(c->logits, cells * sizeof *c->logits);
    c->probs = realloc(c->probs, cells * sizeof *c->probs);
    c->gold = realloc(c->gold, cells * sizeof *c->gold);
    if (!c->logits || !c->probs || !c->gold) bp_die(1, NULL, "out of memory");
}

/* Row i of the current frame: softmax, argmax, one prediction frame and file lines. */
static void cls_predict_row(sink *k, cls_state *c, int64_t i, const bp_str *id, int has_gold) {
    bp_err err;
    int C = c->C;
    const float *row = c->logits + i * C;
    for (int j = 0; j < C; j++)
        if (!(row[j] == row[j]) || row[j] > 3e38f || row[j] < -3e38f)
            bp_die(1, NULL, "logits frame %lld row %lld is not finite", (long long)k->seq, (long long)i);
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
    bp_tensor_view t, lt;
    if (bp_get_tensor_of(f, "logits", BP_F32, 2, NULL, &t, &err)) bp_die_err(&err);
    int64_t B = t.shape[0], b1[1] = {B};
    if (c->C == 0) cls_start(k, c, t.shape[1]);
    else if (t.shape[1] != c->C)
        bp_die(1, NULL, "logits frame %lld has %lld classes, earlier ones %d", (long long)k->seq, (long long)t.shape[1], c->C);
    cls_grow(c, (size_t)(B * c->C));
    bp_tensor_copy(&t, c->logits);
    int has_gold = bp_find_tensor_of(f, "labels", BP_I32, 1, b1, &lt, &err);
    if (has_gold < 0) bp_die_err(&err);
    if (has_gold) bp_tensor_copy(&lt, c->gold);
    bp_str *ids;
    size_t n_ids;
    if (bp_get_strs(f, "example_ids", &ids, &n_ids, &err)) bp_die_err(&err);
    if (n_ids != (size_t)B)
        bp_die(1, NULL, "logits frame %lld: example_ids missing or not %lld strings", (long long)k->seq, (long long)B);
    for (int64_t i = 0; i < B; i++) cls_predict_row(k, c, i, &ids[i], has_gold);
    free(ids);
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
    free(c.logits);
    free(c.probs);
    free(c.gold);
}

/* ---- QA ---------------------------------------------------------------------------- */

typedef struct qa_window_data {
    int window, T;
    float *start, *end;
    qa_post_offset *offsets;
    int32_t gold_start, gold_end;
} qa_window_data;

typedef struct qa_example {
    char *id, *context;
    char **answers;
    int n_answers, is_impossible;
    qa_window_data *windows;
    int n_windows, cap_windows;
} qa_example;

/* The examples in their order, found by id through the process's one hsearch table. */
typedef struct qa_examples {
    qa_example *ex;
    size_t n, cap;
    const char *spec;    /* where they came from, for messages */
} qa_examples;

static int cmp_window(const void *a, const void *b) {
    return ((const qa_window_data *)a)->window - ((const qa_window_data *)b)->window;
}

/* One example frame: the id, context, gold answer texts and is_impossible are kept. */
static void keep_example(qa_examples *xs, const bp_frame *f) {
    bp_err err;
    if (xs->n == xs->cap && !(xs->ex = realloc(xs->ex, (xs->cap = xs->cap ? 2 * xs->cap : 1024) * sizeof *xs->ex)))
        bp_die(1, NULL, "out of memory");
    qa_example *e = &xs->ex[xs->n++];
    *e = (qa_example){0};
    bp_answer *answers;
    size_t n_answers;
    if (!(e->id = bp_get_strdup(f, "example_id", &err)) || !(e->context = bp_get_strdup(f, "context", &err)) ||
        bp_find_bool(f, "is_impossible", &e->is_impossible, &err) < 0 || bp_find_answers(f, &answers, &n_answers, &err) < 0)
        bp_die(1, xs->spec, "%s", err.msg);
    if (!(e->answers = calloc(n_answers + 1, sizeof *e->answers))) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < n_answers; i++)
        if (!(e->answers[e->n_answers++] = strndup(answers[i].text, answers[i].text_len))) bp_die(1, NULL, "out of memory");
    free(answers);
}

static void read_examples(qa_examples *xs) {
    bp_err err;
    bp_in *ein = bp_in_open(xs->spec, 1, &err);
    if (!ein) bp_die_err(&err);
    bp_frame f;
    int r;
    while ((r = bp_in_next(ein, &f)) == 1) {
        if (f.kind == BP_EXAMPLE) keep_example(xs, &f);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(ein));
    bp_in_close(ein);
    if (!hcreate(xs->n * 2 + 16)) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < xs->n; i++) {
        ENTRY item = {xs->ex[i].id, &xs->ex[i]}, *found;
        if (!(found = hsearch(item, ENTER))) bp_die(1, NULL, "out of memory");
        if (found->data != &xs->ex[i]) bp_warn("example id %s appears twice in %s; the first is used", xs->ex[i].id, xs->spec);
    }
}

/* The example of `id`, or NULL. The whole id, however long: a truncated key could find the
 * wrong example. */
static qa_example *find_example(const bp_str *id) {
    char *key = strndup(id->ptr, id->len);
    if (!key) bp_die(1, NULL, "out of memory");
    ENTRY q = {key, NULL}, *found = hsearch(q, FIND);
    free(key);
    return found ? found->data : NULL;
}

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
    bp_tensor_view ts, te, to, tw, tgs, tge;
    if (bp_get_tensor_of(f, "start_logits", BP_F32, 2, NULL, &ts, &err)) bp_die_err(&err);
    int64_t B = ts.shape[0], T = ts.shape[1], bt[2] = {B, T}, bt2[3] = {B, T, 2}, b1[1] = {B};
    if (bp_get_tensor_of(f, "end_logits", BP_F32, 2, bt, &te, &err) ||
        bp_get_tensor_of(f, "offsets", BP_I32, 3, bt2, &to, &err) || bp_get_tensor_of(f, "windows", BP_I32, 1, b1, &tw, &err))
        bp_die_err(&err);
    int has_gold = bp_has(f, "start_positions") && bp_has(f, "end_positions");
    if (has_gold && (bp_get_tensor_of(f, "start_positions", BP_I32, 1, b1, &tgs, &err) ||
                     bp_get_tensor_of(f, "end_positions", BP_I32, 1, b1, &tge, &err)))
        bp_die_err(&err);
    bp_str *ids;
    size_t n_ids;
    if (bp_get_strs(f, "example_ids", &ids, &n_ids, &err)) bp_die_err(&err);
    if (n_ids != (size_t)B) bp_die(1, NULL, "logits frame: example_ids missing or not %lld strings", (long long)B);
    *l = (qa_logits){.B = B, .T = T, .ids = ids, .start = malloc(ts.nbytes), .end = malloc(te.nbytes),
                     .offsets = malloc(to.nbytes), .windows = malloc(tw.nbytes),
                     .gold_start = has_gold ? malloc(tgs.nbytes) : NULL, .gold_end = has_gold ? malloc(tge.nbytes) : NULL};
    if (!l->start || !l->end || !l->offsets || !l->windows || (has_gold && (!l->gold_start || !l->gold_end)))
        bp_die(1, NULL, "out of memory");
    bp_tensor_copy(&ts, l->start);
    bp_tensor_copy(&te, l->end);
    bp_tensor_copy(&to, l->offsets);
    bp_tensor_copy(&tw, l->windows);
    if (has_gold) {
        bp_tensor_copy(&tgs, l->gold_start);
        bp_tensor_copy(&tge, l->gold_end);
    }
}

static void qa_logits_free(qa_logits *l) {
    free(l->start); free(l->end); free(l->offsets); free(l->windows); free(l->gold_start); free(l->gold_end); free(l->ids);
}

/* Row i of l becomes one more window of its example. */
static void add_window(qa_example *e, const qa_logits *l, int64_t i) {
    int64_t T = l->T;
    if (e->n_windows == e->cap_windows &&
        !(e->windows = realloc(e->windows, (size_t)(e->cap_windows = e->cap_windows ? 2 * e->cap_windows : 4) * sizeof *e->windows)))
        bp_die(1, NULL, "out of memory");
    qa_window_data *wd = &e->windows[e->n_windows++];
    *wd = (qa_window_data){.window = l->windows[i], .T = (int)T,
                           .start = malloc((size_t)T * sizeof *wd->start), .end = malloc((size_t)T * sizeof *wd->end),
                           .offsets = malloc((size_t)T * sizeof *wd->offsets),
                           .gold_start = l->gold_start ? l->gold_start[i] : -1, .gold_end = l->gold_end ? l->gold_end[i] : -1};
    if (!wd->start || !wd->end || !wd->offsets) bp_die(1, NULL, "out of memory");
    memcpy(wd->start, l->start + i * T, (size_t)T * sizeof *wd->start);
    memcpy(wd->end, l->end + i * T, (size_t)T * sizeof *wd->end);
    for (int64_t t = 0; t < T; t++) {
        wd->offsets[t].start = l->offsets[2 * (i * T + t)];
        wd->offsets[t].end = l->offsets[2 * (i * T + t) + 1];
    }
}

/* The logits, gathered per example. Returns the rows read; *unknown counts those naming no
 * example. */
static int64_t gather_logits(bp_in *in, int64_t *unknown) {
    int64_t rows = 0;
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_LOGITS) {
            qa_logits l;
            qa_logits_read(&f, &l);
            for (int64_t i = 0; i < l.B; i++, rows++) {
                qa_example *e = find_example(&l.ids[i]);
                if (e) add_window(e, &l, i);
                else (*unknown)++;
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
        const qa_window_data *wd = &e->windows[best->window];
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
    qsort(e->windows, (size_t)e->n_windows, sizeof *e->windows, cmp_window);
    for (int i = 1; i < e->n_windows; i++)
        if (e->windows[i].window == e->windows[i - 1].window)
            /* a stream replayed twice or a fan-in counted twice: never score a window twice */
            bp_die(1, NULL, "example %s: window %d has logits twice", e->id, e->windows[i].window);
    qa_post_window *pw = calloc((size_t)e->n_windows, sizeof *pw);
    if (!pw) bp_die(1, NULL, "out of memory");
    for (int i = 0; i < e->n_windows; i++)
        pw[i] = (qa_post_window){.seq_len = e->windows[i].T, .start_logits = e->windows[i].start,
                                 .end_logits = e->windows[i].end, .offsets = e->windows[i].offsets};
    qa_post_result res;
    if (qa_post_process(e->context, pw, e->n_windows, &k->args->po, &res, &err))
        bp_die(1, NULL, "example %s: %s", e->id, err.msg);
    if (qa_post_json_add(preds, nbest, NULL, e->id, &res, &err)) bp_die_err(&err);
    send_qa_prediction(k, e, &res);
    qa_post_result_free(&res);
    free(pw);
}

static void free_examples(qa_examples *xs) {
    for (size_t k = 0; k < xs->n; k++) {
        qa_example *e = &xs->ex[k];
        for (int i = 0; i < e->n_windows; i++) {
            free(e->windows[i].start);
            free(e->windows[i].end);
            free(e->windows[i].offsets);
        }
        for (int i = 0; i < e->n_answers; i++) free(e->answers[i]);
        free(e->answers);
        free(e->windows);
        free(e->id);
        free(e->context);
    }
    free(xs->ex);
}

static void qa(bp_in *in, sink *k) {
    const postprocess_args *a = k->args;
    bp_err err;
    qa_examples xs = {.spec = a->examples};
    read_examples(&xs);
    int64_t unknown = 0, rows = gather_logits(in, &unknown);
    if (unknown) bp_warn("%lld logits rows name examples missing from %s: ignored", (long long)unknown, xs.spec);

    /* one prediction per example, in the examples' order */
    json_t *preds = json_object(), *nbest = a->nbest_path ? json_object() : NULL;
    int64_t missing = 0;
    for (size_t i = 0; i < xs.n; i++) {
        qa_example *e = &xs.ex[i];
        if (e->n_windows == 0) {
            missing++;
            if (!a->allow_missing)
                bp_die(1, NULL, "example %s has no logits in the input (is the logits stream complete?)", e->id);
            continue;
        }
        predict_example(k, e, preds, nbest);
    }
    if (a->pred_path && qa_post_json_write_file(preds, a->pred_path, &err)) bp_die_err(&err);
    if (a->nbest_path && qa_post_json_write_file(nbest, a->nbest_path, &err)) bp_die_err(&err);
    if (missing) bp_warn("%lld examples had no logits and got no prediction (--allow-missing)", (long long)missing);
    bp_log("%lld examples, %lld windows -> %lld predictions%s%s", (long long)xs.n, (long long)rows, (long long)k->seq,
           a->pred_path ? " written to " : "", a->pred_path ? a->pred_path : "");
    json_decref(preds);
    json_decref(nbest);
    hdestroy();
    free_examples(&xs);
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

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    bp_err err;
    int is_qa = bp_hello_is_qa(hello);
    if (is_qa && !a.examples) bp_die(2, NULL, "QA post-processing needs --examples SPEC (the example frames with the contexts)");
    char **labels;
    int n_labels = bp_hello_labels(hello, &labels, &err);
    if (n_labels < 0) bp_die_err(&err);

    bp_writer w;
    bp_writer_init(&w);
    sink k = {.args = &a, .out = bp_open_out(&a.io), .w = &w};
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
