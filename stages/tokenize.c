/* tokenize — example frames in, feature frames out: BERT WordPiece, identical to Hugging
 * Face's BertTokenizerFast (common/text/tokenizer.h does the work).
 *
 * Classification: [CLS] text [SEP] truncated to --max-length, one feature per example.
 * QA: [CLS] question [SEP] context [SEP] with truncation only_second and --doc-stride
 * overflow windows, one feature per window, context offsets and run_qa's training labels.
 * Stateless, so N of them can run side by side (fan-out from extract, fan-in to batch).
 * Must never: mislabel: an answer that does not slice its context drops the example from
 * the labelled stream with a warning naming it (or stops the stage with --strict).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage/frame_input.h"
#include "stage/stage.h"
#include "text/tokenizer.h"

static const char usage[] =
    "usage: tokenize (--vocab FILE | --checkpoint DIR) [options] [--in SPEC] [--out SPEC]\n"
    "Turn example frames into feature frames.\n"
    "  --vocab FILE        WordPiece vocab.txt (uncased unless --cased)\n"
    "  --checkpoint DIR    take DIR/vocab.txt; casing and max length from its tokenizer_config.json\n"
    "  --lowercase | --cased   override the casing\n"
    "  --max-length N      tokens per feature, specials included (default: the checkpoint's\n"
    "                      model_max_length, else 128; QA 384)\n"
    "  --doc-stride N      QA: context tokens shared by consecutive windows (default 128)\n"
    "  --pad none|max_length   pad every feature to --max-length (default none: batch pads)\n"
    "  --strict            an answer that does not match its context is an error\n"
    "  --keep-unlabelled   QA: keep examples whose answer does not match (no labels)\n"
    "  --no-overflow       QA: only the first window (the simple recipe: truncate the context)\n"
    BP_IO_USAGE;

/* What the command line asks for. */
typedef struct tokenize_args {
    bp_io_opts io;
    const char *vocab, *checkpoint;
    int lowercase;   /* -1: as the vocab / checkpoint says */
    int pad, strict, keep_unlabelled, no_overflow;
    long max_length, stride;
} tokenize_args;

/* The stage at work: the tokenizer, the output and what it has counted. */
typedef struct tokenizer_job {
    const tokenize_args *args;
    tok_tokenizer *tok;
    int qa;
    bp_out *out;
    bp_writer w;
    tok_encoding enc;
    int64_t num_labels;   /* classes the hello names (num_labels, else its labels); 0: unchecked */
    int64_t examples, features, mismatched;
} tokenizer_job;

/* One feature frame: a window of the job's encoding and the example it came from. */
typedef struct feature {
    const char *example_id;
    size_t example_id_len;
    int64_t example_seq; /* the example frame's seq (-1: it had none): its place in extract's order */
    int window;
    int has_label;      /* classification */
    int64_t label;
    int labelled;       /* QA: the window carries start/end positions */
} feature;

/* Send one feature frame. QA: offsets for context tokens only. */
static void send_feature(tokenizer_job *j, const feature *ft) {
    const tok_encoding *enc = &j->enc;
    bp_writer *w = &j->w;
    int win = ft->window, n = enc->lengths[win];
    size_t row = (size_t)win * (size_t)enc->row_length;
    int64_t shape[2] = {n, 2};
    bp_begin(w, BP_FEATURE);
    bp_put_int(w, "seq", j->features++);
    bp_put_strn(w, "example_id", ft->example_id, ft->example_id_len);
    bp_put_int(w, "window", win);
    if (ft->example_seq >= 0) bp_put_int(w, "example_seq", ft->example_seq);
    bp_put_tensor(w, "input_ids", BP_I32, 1, shape, enc->input_ids + row);
    bp_put_tensor(w, "token_type_ids", BP_I32, 1, shape, enc->token_type_ids + row);
    bp_put_tensor(w, "attention_mask", BP_I32, 1, shape, enc->attention_mask + row);
    if (j->qa) {
        int32_t *offsets = malloc((size_t)n * 2 * sizeof *offsets);
        if (!offsets) bp_die(1, NULL, "out of memory");
        for (int i = 0; i < n; i++) {
            int context = enc->sequence_ids[row + (size_t)i] == 1;
            offsets[2 * i] = context ? enc->offset_starts[row + (size_t)i] : -1;
            offsets[2 * i + 1] = context ? enc->offset_ends[row + (size_t)i] : -1;
        }
        bp_put_tensor(w, "offsets", BP_I32, 2, shape, offsets);
        free(offsets);
        if (ft->labelled) {
            bp_put_int(w, "start_position", enc->start_positions[win]);
            bp_put_int(w, "end_position", enc->end_positions[win]);
        }
    } else if (ft->has_label) {
        bp_put_int(w, "label", ft->label);
    }
    bp_send(j->out, w);
}

/* [CLS] text [SEP]: one feature. */
static void tokenize_single(tokenizer_job *j, const bp_example_view *ex, feature *ft, const char *where) {
    bp_err err;
    if (tok_encode_single(j->tok, ex->text.ptr, ex->text.len, (int)j->args->max_length, j->args->pad, &j->enc, &err) < 0)
        bp_die(1, where, "%s", err.msg);
    ft->has_label = ex->label >= 0;
    ft->label = ex->label;
    send_feature(j, ft);
}

/* [CLS] question [SEP] context [SEP], one feature per window. Training labels come from the
 * first answer, as run_qa does; an answer that does not slice its context drops the example
 * (or keeps it unlabelled, or stops the stage with --strict). */
static void tokenize_pair(tokenizer_job *j, const bp_example_view *ex, feature *ft, const char *where) {
    const tokenize_args *a = j->args;
    bp_err err;
    tok_answer answer = {0};
    if (ex->n_answers > 0)
        answer = (tok_answer){.text = ex->answers[0].text, .text_len = ex->answers[0].text_len,
                              .start_char = ex->answers[0].answer_start};
    int rc = tok_encode_pair(j->tok, ex->question.ptr, ex->question.len, ex->context.ptr, ex->context.len,
                             (int)a->max_length, (int)a->stride, a->pad, ex->n_answers > 0 ? &answer : NULL, &j->enc, &err);
    if (rc < 0) bp_die(1, where, "%s", err.msg);
    ft->labelled = ex->n_answers > 0;
    if (rc == TOK_ANSWER_MISMATCH) {
        j->mismatched++;
        if (a->strict) bp_die(1, where, "%s", err.msg);
        bp_warn("%s: %s: %s", where, err.msg, a->keep_unlabelled ? "kept without labels" : "example dropped");
        if (!a->keep_unlabelled) return;
        ft->labelled = 0;
    }
    int windows = a->no_overflow ? 1 : j->enc.n_windows;
    for (ft->window = 0; ft->window < windows; ft->window++) send_feature(j, ft);
}

static void tokenize_example(tokenizer_job *j, const bp_frame *f) {
    bp_err err;
    bp_example_view ex;
    if (f->kind != BP_EXAMPLE) bp_die(1, j->args->io.in, "tokenize takes example frames, got %s", bp_kind_name(f->kind));
    /* a field's error names its frame (stage/frame_input.h); the tokenizer's names the example */
    if (bp_example_read(f, j->qa, j->num_labels, &ex, &err)) bp_die_err(&err);
    /* With N workers each sees some of the examples: the seq extract gave one is what lets
     * batch put the features back in extract's order, whichever worker ends first. */
    feature ft = {.example_id = ex.id.ptr, .example_id_len = ex.id.len, .example_seq = ex.seq};
    char where[300];
    snprintf(where, sizeof where, "example %.*s", (int)(ex.id.len > 200 ? 200 : ex.id.len), ex.id.ptr);
    j->examples++;
    if (j->qa) tokenize_pair(j, &ex, &ft, where);
    else tokenize_single(j, &ex, &ft, where);
    bp_example_view_free(&ex);
}

static void parse_args(int argc, char **argv, tokenize_args *a) {
    enum { O_VOCAB = 1, O_CKPT, O_LOWER, O_CASED, O_MAXLEN, O_STRIDE, O_PAD, O_STRICT, O_KEEP, O_NO_OVERFLOW };
    static const struct option longopts[] = {
        BP_IO_LONGOPTS,
        {"vocab", required_argument, 0, O_VOCAB}, {"checkpoint", required_argument, 0, O_CKPT},
        {"lowercase", no_argument, 0, O_LOWER}, {"cased", no_argument, 0, O_CASED},
        {"max-length", required_argument, 0, O_MAXLEN}, {"doc-stride", required_argument, 0, O_STRIDE},
        {"pad", required_argument, 0, O_PAD}, {"strict", no_argument, 0, O_STRICT},
        {"keep-unlabelled", no_argument, 0, O_KEEP}, {"no-overflow", no_argument, 0, O_NO_OVERFLOW}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&a->io, opt, optarg)) continue;
        switch (opt) {
        case O_VOCAB: a->vocab = optarg; break;
        case O_CKPT: a->checkpoint = optarg; break;
        case O_LOWER: a->lowercase = 1; break;
        case O_CASED: a->lowercase = 0; break;
        case O_MAXLEN: a->max_length = bp_opt_long("--max-length", optarg, 2, 1 << 16); break;
        case O_STRIDE: a->stride = bp_opt_long("--doc-stride", optarg, 0, 1 << 16); break;
        case O_PAD:
            if (strcmp(optarg, "max_length") == 0) a->pad = 1;
            else if (strcmp(optarg, "none") == 0) a->pad = 0;
            else bp_die(2, NULL, "--pad wants none or max_length, got '%s'", optarg);
            break;
        case O_STRICT: a->strict = 1; break;
        case O_KEEP: a->keep_unlabelled = 1; break;
        case O_NO_OVERFLOW: a->no_overflow = 1; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!a->vocab == !a->checkpoint) bp_die(2, NULL, "give exactly one of --vocab FILE or --checkpoint DIR");
}

/* The checkpoint's model_max_length (what train saved: the length it was trained with), else
 * run_glue's 128 / run_qa's 384. */
static long default_max_length(const tokenize_args *a, int qa) {
    bp_err err;
    long n = 0;
    int found = a->checkpoint ? tok_config_max_length(a->checkpoint, &n, &err) : 0;
    if (found < 0) bp_die_err(&err);
    return found ? n : qa ? 384 : 128;
}

static tok_tokenizer *load_tokenizer(const tokenize_args *a) {
    bp_err err;
    tok_tokenizer *tok = a->vocab ? tok_load(a->vocab, a->lowercase < 0 ? 1 : a->lowercase, &err)
                                  : tok_load_checkpoint(a->checkpoint, a->lowercase, &err);
    if (!tok) bp_die_err(&err);
    return tok;
}

/* The classes a hello names: num_labels, else how many labels it lists; 0 when neither. */
static int64_t hello_classes(const bp_frame *hello) {
    bp_err err;
    int64_t n = 0;
    char **labels;
    int found = bp_find_int(hello, "num_labels", 1, 1 << 20, &n, &err), listed = found < 0 ? 0 : bp_hello_labels(hello, &labels, &err);
    if (found < 0 || listed < 0) bp_die_err(&err);
    bp_labels_free(labels, listed);
    if (found && listed && listed != n)
        bp_die(1, "hello frame 0", "the hello names %d labels but says num_labels %lld", listed, (long long)n);
    return found ? n : listed;
}

/* The upstream schema, then what the features need to be read right: lengths, casing, vocab. */
static void send_hello(tokenizer_job *j, const bp_frame *hello) {
    static const char *const pass_on[] = {"task", "labels", "num_labels", "split", "source", "split_origin",
                                          "split_part", NULL};
    bp_writer *w = &j->w;
    bp_hello_begin_from(w, hello, pass_on);
    bp_put_int(w, "max_length", j->args->max_length);
    if (j->qa) bp_put_int(w, "stride", j->args->stride);
    bp_put_bool(w, "lowercase", tok_is_lowercase(j->tok));
    bp_put_int(w, "vocab_size", tok_vocab_size(j->tok));
    bp_put_int(w, "pad_id", tok_pad_id(j->tok));
    char checksum[32];
    snprintf(checksum, sizeof checksum, "%016llx", (unsigned long long)tok_vocab_checksum(j->tok));
    bp_put_str(w, "vocab_checksum", checksum);
    bp_send_hello(j->out, w);
}

int main(int argc, char **argv) {
    tokenize_args a = {.lowercase = -1, .stride = 128};
    bp_stage_init(&a.io, argv);
    parse_args(argc, argv, &a);
    tokenizer_job j = {.args = &a, .out = bp_open_out(&a.io)};
    j.tok = load_tokenizer(&a);

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&a.io, &hello);
    j.qa = bp_stream_is_qa(hello);
    j.num_labels = hello_classes(hello);
    if (!a.max_length) a.max_length = default_max_length(&a, j.qa);
    bp_writer_init(&j.w);
    send_hello(&j, hello);

    tok_encoding_init(&j.enc);
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        tokenize_example(&j, &f);
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_log("%lld examples -> %lld features%s; %lld answers not matching their context", (long long)j.examples,
           (long long)j.features, j.qa ? " (windows)" : "", (long long)j.mismatched);
    bp_close_out(j.out);
    bp_in_close(in);
    tok_encoding_free(&j.enc);
    tok_free(j.tok);
    bp_writer_free(&j.w);
    return 0;
}
