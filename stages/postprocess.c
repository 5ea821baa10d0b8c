/* postprocess — logits frames in, prediction frames (and prediction files) out.
 *
 * Classification: softmax over each row, the argmax label and its probability; a run_glue
 * style predictions file with --predictions. QA: Hugging Face run_qa's post-processing
 * (common/eval/qa_postprocess.h): for every example, the n-best spans over all its windows,
 * their text sliced from the example's context by offsets, predictions.json and
 * nbest_predictions.json. The context comes from the example frames themselves, read from
 * the side input --examples (e.g. file:validation.examples, the recording extract made).
 * It never invents an answer: an example without logits is an error naming it.
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

/* ---- classification ---------------------------------------------------------------- */

static void classification(bp_in *in, bp_out *out, bp_writer *w, const char *pred_path, FILE *text_out, char **labels,
                           int n_labels) {
    FILE *pf = NULL;
    bp_err err;
    float *logits = NULL, *probs = NULL;
    int32_t *gold = NULL;
    size_t cap = 0;
    int64_t seq = 0, index = 0;
    int C = 0;
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_LOGITS) {
            bp_frame_release(&f);
            continue;
        }
        bp_tensor_view t, lt;
        if (bp_get_tensor(&f, "logits", &t, &err) || bp_tensor_expect(&t, "logits", BP_F32, 2, NULL, &err)) bp_die_err(&err);
        int64_t B = t.shape[0];
        if (C == 0) {
            C = (int)t.shape[1];
            if (n_labels && n_labels != C) {
                bp_err_set(&err, "logits have %d classes but the stream names %d labels", C, n_labels);
                bp_die_err(&err);
            }
            if (pred_path) {
                if (!(pf = fopen(pred_path, "w"))) {
                    bp_err_set(&err, "cannot create (%s)", pred_path);
                    bp_die_err(&err);
                }
                if (metrics_cls_write_predictions_header(pf, n_labels ? (const char *const *)labels : NULL, C, 1, &err))
                    bp_die_err(&err);
            }
        } else if (t.shape[1] != C) {
            bp_err_set(&err, "logits frame %lld has %lld classes, earlier ones %d", (long long)seq, (long long)t.shape[1], C);
            bp_die_err(&err);
        }
        if ((size_t)(B * C) > cap) {
            cap = (size_t)(B * C);
            logits = realloc(logits, cap * sizeof *logits);
            probs = realloc(probs, cap * sizeof *probs);
            gold = realloc(gold, cap * sizeof *gold);
            if (!logits || !probs || !gold) bp_die(1, NULL, "out of memory");
        }
        bp_tensor_copy(&t, logits);
        int64_t b1[1] = {B};
        int has_gold = bp_find_tensor_of(&f, "labels", BP_I32, 1, b1, &lt, &err);
        if (has_gold < 0) bp_die_err(&err);
        if (has_gold) bp_tensor_copy(&lt, gold);
        bp_str *ids;
        size_t n_ids;
        if (bp_get_strs(&f, "example_ids", &ids, &n_ids, &err)) bp_die_err(&err);
        if (n_ids != (size_t)B) {
            bp_err_set(&err, "logits frame %lld: example_ids missing or not %lld strings", (long long)seq, (long long)B);
            bp_die_err(&err);
        }
        for (int64_t i = 0; i < B; i++) {
            const float *row = logits + i * C;
            for (int c = 0; c < C; c++)
                if (!(row[c] == row[c]) || row[c] > 3e38f || row[c] < -3e38f) {
                    bp_err_set(&err, "logits frame %lld row %lld is not finite", (long long)seq, (long long)i);
                    bp_die_err(&err);
                }
            float *p = probs + i * C;
            metrics_softmax(row, C, p);
            int label = metrics_argmax(p, C);
            bp_begin(w, BP_PREDICTION);
            bp_put_int(w, "seq", seq++);
            bp_put_strn(w, "example_id", ids[i].ptr, ids[i].len);
            bp_put_int(w, "label", label);
            int64_t shape[1] = {C};
            bp_put_tensor(w, "probs", BP_F32, 1, shape, p);
            bp_put_int(w, "gold", has_gold ? gold[i] : -1);
            if (has_gold && gold[i] >= 0 && gold[i] < C) bp_put_float(w, "loss", metrics_cross_entropy(row, C, gold[i]));
            bp_send(out, w);
            if (pf && metrics_cls_write_prediction_line(pf, index, label, n_labels ? (const char *const *)labels : NULL, p, C, &err))
                bp_die_err(&err);
            if (text_out) {
                if (n_labels) fprintf(text_out, "%s\t%.4f\n", labels[label], p[label]);
                else fprintf(text_out, "%d\t%.4f\n", label, p[label]);
            }
            index++;
        }
        free(ids);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    if (pf && fclose(pf)) bp_die(1, pred_path, "write failed");
    bp_log("%lld predictions%s%s", (long long)index, pred_path ? " written to " : "", pred_path ? pred_path : "");
    free(logits);
    free(probs);
    free(gold);
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

static int cmp_window(const void *a, const void *b) {
    return ((const qa_window_data *)a)->window - ((const qa_window_data *)b)->window;
}

static void qa(bp_in *in, bp_out *out, bp_writer *w, const char *examples_spec, const char *pred_path,
               const char *nbest_path, FILE *text_out, const qa_post_options *po, int allow_missing) {
    bp_err err;
    /* 1. the examples, in their order, indexed by id */
    bp_in *ein = bp_in_open(examples_spec, 1, &err);
    if (!ein) bp_die_err(&err);
    qa_example *ex = NULL;
    size_t n_ex = 0, cap_ex = 0;
    bp_frame f;
    int r;
    while ((r = bp_in_next(ein, &f)) == 1) {
        if (f.kind != BP_EXAMPLE) { bp_frame_release(&f); continue; }
        if (n_ex == cap_ex && !(ex = realloc(ex, (cap_ex = cap_ex ? 2 * cap_ex : 1024) * sizeof *ex)))
            bp_die(1, NULL, "out of memory");
        qa_example *e = &ex[n_ex];
        memset(e, 0, sizeof *e);
        if (!(e->id = bp_get_strdup(&f, "example_id", &err)) || !(e->context = bp_get_strdup(&f, "context", &err)))
            bp_die_err(&err);
        if (bp_find_bool(&f, "is_impossible", &e->is_impossible, &err) < 0) bp_die_err(&err);
        bp_answer *answers;
        size_t n_answers;
        if (bp_find_answers(&f, &answers, &n_answers, &err) < 0) bp_die_err(&err);
        e->answers = calloc(n_answers + 1, sizeof *e->answers);
        if (!e->answers) bp_die(1, NULL, "out of memory");
        for (size_t i = 0; i < n_answers; i++)
            if (!(e->answers[e->n_answers++] = strndup(answers[i].text, answers[i].text_len))) bp_die(1, NULL, "out of memory");
        free(answers);
        n_ex++;
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(ein));
    bp_in_close(ein);
    if (!hcreate(n_ex * 2 + 16)) bp_die(1, NULL, "out of memory");
    for (size_t i = 0; i < n_ex; i++) {
        ENTRY item = {ex[i].id, &ex[i]}, *found;
        if (!(found = hsearch(item, ENTER))) bp_die(1, NULL, "out of memory");
        if (found->data != &ex[i]) bp_warn("example id %s appears twice in %s; the first is used", ex[i].id, examples_spec);
    }

    /* 2. the logits, gathered per example */
    int64_t rows = 0, unknown = 0;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_LOGITS) { bp_frame_release(&f); continue; }
        bp_tensor_view ts, te, to, tw, tgs, tge;
        if (bp_get_tensor(&f, "start_logits", &ts, &err) || bp_tensor_expect(&ts, "start_logits", BP_F32, 2, NULL, &err))
            bp_die_err(&err);
        int64_t B = ts.shape[0], T = ts.shape[1], bt[2] = {B, T}, bt2[3] = {B, T, 2}, b1[1] = {B};
        if (bp_get_tensor(&f, "end_logits", &te, &err) || bp_tensor_expect(&te, "end_logits", BP_F32, 2, bt, &err) ||
            bp_get_tensor(&f, "offsets", &to, &err) || bp_tensor_expect(&to, "offsets", BP_I32, 3, bt2, &err) ||
            bp_get_tensor(&f, "windows", &tw, &err) || bp_tensor_expect(&tw, "windows", BP_I32, 1, b1, &err))
            bp_die_err(&err);
        int has_gold = bp_has(&f, "start_positions") && bp_has(&f, "end_positions");
        if (has_gold && (bp_get_tensor(&f, "start_positions", &tgs, &err) || bp_tensor_expect(&tgs, "start_positions", BP_I32, 1, b1, &err) ||
                         bp_get_tensor(&f, "end_positions", &tge, &err) || bp_tensor_expect(&tge, "end_positions", BP_I32, 1, b1, &err)))
            bp_die_err(&err);
        bp_str *ids;
        size_t n_ids;
        if (bp_get_strs(&f, "example_ids", &ids, &n_ids, &err)) bp_die_err(&err);
        if (n_ids != (size_t)B) {
            bp_err_set(&err, "logits frame: example_ids missing or not %lld strings", (long long)B);
            bp_die_err(&err);
        }
        float *all_s = malloc(ts.nbytes), *all_e = malloc(te.nbytes);
        int32_t *all_o = malloc(to.nbytes), *win = malloc(tw.nbytes), *gs = malloc((size_t)B * 4), *ge = malloc((size_t)B * 4);
        if (!all_s || !all_e || !all_o || !win || !gs || !ge) bp_die(1, NULL, "out of memory");
        bp_tensor_copy(&ts, all_s);
        bp_tensor_copy(&te, all_e);
        bp_tensor_copy(&to, all_o);
        bp_tensor_copy(&tw, win);
        if (has_gold) { bp_tensor_copy(&tgs, gs); bp_tensor_copy(&tge, ge); }
        for (int64_t i = 0; i < B; i++) {
            /* the whole id, however long: a truncated key could find the wrong example */
            char *key = strndup(ids[i].ptr, ids[i].len);
            if (!key) bp_die(1, NULL, "out of memory");
            ENTRY q = {key, NULL}, *found = hsearch(q, FIND);
            free(key);
            rows++;
            if (!found) { unknown++; continue; }
            qa_example *e = found->data;
            if (e->n_windows == e->cap_windows &&
                !(e->windows = realloc(e->windows, (size_t)(e->cap_windows = e->cap_windows ? 2 * e->cap_windows : 4) * sizeof *e->windows)))
                bp_die(1, NULL, "out of memory");
            qa_window_data *wd = &e->windows[e->n_windows++];
            wd->window = win[i];
            wd->T = (int)T;
            wd->start = malloc((size_t)T * sizeof(float));
            wd->end = malloc((size_t)T * sizeof(float));
            wd->offsets = malloc((size_t)T * sizeof *wd->offsets);
            if (!wd->start || !wd->end || !wd->offsets) bp_die(1, NULL, "out of memory");
            memcpy(wd->start, all_s + i * T, (size_t)T * sizeof(float));
            memcpy(wd->end, all_e + i * T, (size_t)T * sizeof(float));
            for (int64_t t = 0; t < T; t++) {
                wd->offsets[t].start = all_o[2 * (i * T + t)];
                wd->offsets[t].end = all_o[2 * (i * T + t) + 1];
            }
            wd->gold_start = has_gold ? gs[i] : -1;
            wd->gold_end = has_gold ? ge[i] : -1;
        }
        free(all_s); free(all_e); free(all_o); free(win); free(gs); free(ge);
        free(ids);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    if (unknown) bp_warn("%lld logits rows name examples missing from %s: ignored", (long long)unknown, examples_spec);

    /* 3. one prediction per example, in the examples' order */
    json_t *preds = json_object(), *nbest = nbest_path ? json_object() : NULL;
    int64_t seq = 0, missing = 0;
    for (size_t k = 0; k < n_ex; k++) {
        qa_example *e = &ex[k];
        if (e->n_windows == 0) {
            missing++;
            if (allow_missing) continue;
            bp_err_set(&err, "example %s has no logits in the input (is the logits stream complete?)", e->id);
            bp_die_err(&err);
        }
        qsort(e->windows, (size_t)e->n_windows, sizeof *e->windows, cmp_window);
        for (int i = 1; i < e->n_windows; i++)
            if (e->windows[i].window == e->windows[i - 1].window) {
                /* a stream replayed twice or a fan-in counted twice: never score a window twice */
                bp_err_set(&err, "example %s: window %d has logits twice", e->id, e->windows[i].window);
                bp_die_err(&err);
            }
        qa_post_window *pw = calloc((size_t)e->n_windows, sizeof *pw);
        if (!pw) bp_die(1, NULL, "out of memory");
        for (int i = 0; i < e->n_windows; i++)
            pw[i] = (qa_post_window){e->windows[i].T, e->windows[i].start, e->windows[i].end, e->windows[i].offsets};
        qa_post_result res;
        if (qa_post_process(e->context, pw, e->n_windows, po, &res, &err)) {
            char where[600];
            snprintf(where, sizeof where, "example %s: %s", e->id, err.msg);
            bp_err_set(&err, "%s", where);
            bp_die_err(&err);
        }
        if (qa_post_json_add(preds, nbest, NULL, e->id, &res, &err)) bp_die_err(&err);
        const qa_post_candidate *best = res.n_nbest > 0 ? &res.nbest[res.answer_index] : NULL;
        bp_begin(w, BP_PREDICTION);
        bp_put_int(w, "seq", seq++);
        bp_put_str(w, "example_id", e->id);
        bp_put_str(w, "text", res.answer);
        bp_put_float(w, "score", res.answer_score);
        bp_put_strs(w, "answers", (const char *const *)e->answers, (size_t)e->n_answers);
        bp_put_bool(w, "is_impossible", e->is_impossible);
        if (best && best->window >= 0 && e->windows[best->window].gold_start >= 0) {
            const qa_window_data *wd = &e->windows[best->window];
            bp_put_bool(w, "span_match", best->start_index == wd->gold_start && best->end_index == wd->gold_end);
        }
        bp_send(out, w);
        if (text_out) {
            /* one line per answer: tabs and newlines inside the text become spaces */
            for (char *c = res.answer; *c; c++)
                if (*c == '\t' || *c == '\n' || *c == '\r') *c = ' ';
            fprintf(text_out, "%s\t%.4f\n", res.answer, res.answer_score);
        }
        qa_post_result_free(&res);
        free(pw);
    }
    if (pred_path && qa_post_json_write_file(preds, pred_path, &err)) bp_die_err(&err);
    if (nbest_path && qa_post_json_write_file(nbest, nbest_path, &err)) bp_die_err(&err);
    if (missing) bp_warn("%lld examples had no logits and got no prediction (--allow-missing)", (long long)missing);
    bp_log("%lld examples, %lld windows -> %lld predictions%s%s", (long long)n_ex, (long long)rows, (long long)seq,
           pred_path ? " written to " : "", pred_path ? pred_path : "");
    json_decref(preds);
    json_decref(nbest);
    hdestroy();
    for (size_t k = 0; k < n_ex; k++) {
        for (int i = 0; i < ex[k].n_windows; i++) {
            free(ex[k].windows[i].start);
            free(ex[k].windows[i].end);
            free(ex[k].windows[i].offsets);
        }
        for (int i = 0; i < ex[k].n_answers; i++) free(ex[k].answers[i]);
        free(ex[k].answers);
        free(ex[k].windows);
        free(ex[k].id);
        free(ex[k].context);
    }
    free(ex);
}

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    const char *pred_path = NULL, *nbest_path = NULL, *examples = NULL, *text_path = NULL;
    int allow_missing = 0;
    qa_post_options po;
    qa_post_options_default(&po);
    enum { O_PRED = 1, O_NBESTF, O_EXAMPLES, O_NBEST, O_MAXLEN, O_V2, O_NULL, O_ALLOW, O_TEXT };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
        {"predictions", required_argument, 0, O_PRED}, {"nbest", required_argument, 0, O_NBESTF},
        {"examples", required_argument, 0, O_EXAMPLES}, {"n-best", required_argument, 0, O_NBEST},
        {"max-answer-length", required_argument, 0, O_MAXLEN}, {"version-2", no_argument, 0, O_V2},
        {"null-threshold", required_argument, 0, O_NULL}, {"allow-missing", no_argument, 0, O_ALLOW},
        {"text", required_argument, 0, O_TEXT},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case O_PRED: pred_path = optarg; break;
        case O_NBESTF: nbest_path = optarg; break;
        case O_EXAMPLES: examples = optarg; break;
        case O_NBEST: po.n_best = (int)bp_opt_long("--n-best", optarg, 1, 10000); break;
        case O_MAXLEN: po.max_answer_length = (int)bp_opt_long("--max-answer-length", optarg, 1, 100000); break;
        case O_V2: po.version_2_with_negative = 1; break;
        case O_NULL: po.null_score_diff_threshold = (float)bp_opt_double("--null-threshold", optarg, -1e9, 1e9); break;
        case O_ALLOW: allow_missing = 1; break;
        case O_TEXT: text_path = optarg; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&io, &hello);
    bp_err err;
    int is_qa = bp_hello_is_qa(hello);
    if (is_qa && !examples) bp_die(2, NULL, "QA post-processing needs --examples SPEC (the example frames with the contexts)");
    char **labels;
    int n_labels = bp_hello_labels(hello, &labels, &err);
    if (n_labels < 0) bp_die_err(&err);
    bp_out *out = bp_open_out(&io);
    bp_writer w;
    bp_writer_init(&w);
    static const char *const pass_on[] = {"task", "labels", "num_labels", "split", "source", NULL};
    bp_hello_begin_from(&w, hello, pass_on);
    if (is_qa) bp_put_bool(&w, "version_2", po.version_2_with_negative);
    bp_send_hello(out, &w);
    FILE *text_out = NULL;
    if (text_path && !(text_out = fopen(text_path, "w"))) bp_die(1, text_path, "cannot create");
    if (is_qa) qa(in, out, &w, examples, pred_path, nbest_path, text_out, &po, allow_missing);
    else classification(in, out, &w, pred_path, text_out, labels, n_labels);
    if (text_out && fclose(text_out)) bp_die(1, text_path, "write failed");
    bp_close_out(out);
    bp_in_close(in);
    bp_labels_free(labels, n_labels);
    bp_writer_free(&w);
    return 0;
}
