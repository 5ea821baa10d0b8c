/* tokenize — example frames in, feature frames out: BERT WordPiece, identical to Hugging
 * Face's BertTokenizerFast (common/text/tokenizer.h does the work).
 *
 * Classification: [CLS] text [SEP] truncated to --max-length, one feature per example.
 * QA: [CLS] question [SEP] context [SEP] with truncation only_second and --doc-stride
 * overflow windows, one feature per window, context offsets and run_qa's training labels.
 * Stateless, so N of them can run side by side (fan-out from extract, fan-in to batch).
 * It never mislabels: an answer that does not slice its context drops the example from
 * the labelled stream with a warning naming it (or stops the stage with --strict).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage/stage.h"
#include "text/tokenizer.h"

static const char usage[] =
    "usage: tokenize (--vocab FILE | --checkpoint DIR) [options] [--in SPEC] [--out SPEC]\n"
    "Turn example frames into feature frames.\n"
    "  --vocab FILE        WordPiece vocab.txt (uncased unless --cased)\n"
    "  --checkpoint DIR    take DIR/vocab.txt; casing from its tokenizer_config.json/config.json\n"
    "  --lowercase | --cased   override the casing\n"
    "  --max-length N      tokens per feature, specials included (default 128; QA 384)\n"
    "  --doc-stride N      QA: context tokens shared by consecutive windows (default 128)\n"
    "  --pad none|max_length   pad every feature to --max-length (default none: batch pads)\n"
    "  --strict            an answer that does not match its context is an error\n"
    "  --keep-unlabelled   QA: keep examples whose answer does not match (no labels)\n"
    "  --no-overflow       QA: only the first window (the simple recipe: truncate the context)\n"
    BP_IO_USAGE;

typedef struct counts { int64_t examples, features, mismatched, truncated; } counts;

/* Send window w of enc as one feature frame. qa: offsets for context tokens only. */
static void send_feature(bp_out *out, bp_writer *w, const tok_encoding *enc, int win, const char *id,
                         size_t id_len, int64_t seq, int qa, int has_label, int64_t label, int labelled) {
    int n = enc->lengths[win];
    size_t row = (size_t)win * (size_t)enc->row_length;
    int64_t shape[2] = {n, 2};
    bp_begin(w, BP_FEATURE);
    bp_put_int(w, "seq", seq);
    bp_put_strn(w, "example_id", id, id_len);
    bp_put_int(w, "window", win);
    bp_put_tensor(w, "input_ids", BP_I32, 1, shape, enc->input_ids + row);
    bp_put_tensor(w, "token_type_ids", BP_I32, 1, shape, enc->token_type_ids + row);
    bp_put_tensor(w, "attention_mask", BP_I32, 1, shape, enc->attention_mask + row);
    if (qa) {
        int32_t *offsets = malloc((size_t)n * 2 * sizeof *offsets);
        if (!offsets) bp_die(1, id, "out of memory");
        for (int i = 0; i < n; i++) {
            int context = enc->sequence_ids[row + (size_t)i] == 1;
            offsets[2 * i] = context ? enc->offset_starts[row + (size_t)i] : -1;
            offsets[2 * i + 1] = context ? enc->offset_ends[row + (size_t)i] : -1;
        }
        bp_put_tensor(w, "offsets", BP_I32, 2, shape, offsets);
        free(offsets);
        if (labelled) {
            bp_put_int(w, "start_position", enc->start_positions[win]);
            bp_put_int(w, "end_position", enc->end_positions[win]);
        }
    } else if (has_label) {
        bp_put_int(w, "label", label);
    }
    bp_send(out, w);
}

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    const char *vocab = NULL, *checkpoint = NULL;
    int lowercase = -1, pad = 0, strict = 0, keep_unlabelled = 0, no_overflow = 0;
    long max_length = 0, stride = 128;
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
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case O_VOCAB: vocab = optarg; break;
        case O_CKPT: checkpoint = optarg; break;
        case O_LOWER: lowercase = 1; break;
        case O_CASED: lowercase = 0; break;
        case O_MAXLEN: max_length = bp_opt_long("--max-length", optarg, 2, 1 << 16); break;
        case O_STRIDE: stride = bp_opt_long("--doc-stride", optarg, 0, 1 << 16); break;
        case O_PAD:
            if (strcmp(optarg, "max_length") == 0) pad = 1;
            else if (strcmp(optarg, "none") == 0) pad = 0;
            else bp_die(2, NULL, "--pad wants none or max_length, got '%s'", optarg);
            break;
        case O_STRICT: strict = 1; break;
        case O_KEEP: keep_unlabelled = 1; break;
        case O_NO_OVERFLOW: no_overflow = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_die(2, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!vocab == !checkpoint) bp_die(2, NULL, "give exactly one of --vocab FILE or --checkpoint DIR");

    bp_err err;
    tok_tokenizer *tok = vocab ? tok_load(vocab, lowercase < 0 ? 1 : lowercase, &err)
                               : tok_load_checkpoint(checkpoint, lowercase, &err);
    if (!tok) bp_die_err(&err);

    const bp_frame *hello;
    bp_in *in = bp_open_in_hello(&io, &hello);
    int qa = bp_hello_is_qa(hello);
    if (!max_length) max_length = qa ? 384 : 128;

    bp_out *out = bp_open_out(&io);
    bp_writer w;
    bp_writer_init(&w);
    static const char *const pass_on[] = {"task", "labels", "num_labels", "split", "source", NULL};
    bp_hello_begin_from(&w, hello, pass_on);
    bp_put_int(&w, "max_length", max_length);
    if (qa) bp_put_int(&w, "stride", stride);
    bp_put_bool(&w, "lowercase", tok_is_lowercase(tok));
    bp_put_int(&w, "vocab_size", tok_vocab_size(tok));
    bp_put_int(&w, "pad_id", tok_pad_id(tok));
    char checksum[32];
    snprintf(checksum, sizeof checksum, "%016llx", (unsigned long long)tok_vocab_checksum(tok));
    bp_put_str(&w, "vocab_checksum", checksum);
    bp_send_hello(out, &w);

    tok_encoding enc;
    tok_encoding_init(&enc);
    counts c = {0};
    bp_frame f;
    int r;
    char where[300];
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind != BP_EXAMPLE) bp_die(1, io.in, "tokenize takes example frames, got %s", bp_kind_name(f.kind));
        const char *id;
        size_t id_len;
        if (bp_get_str(&f, "example_id", &id, &id_len, &err)) bp_die(1, io.in, "%s", err.msg);
        snprintf(where, sizeof where, "example %.*s", (int)(id_len > 200 ? 200 : id_len), id);
        c.examples++;
        if (!qa) {
            const char *text;
            size_t text_len;
            if (bp_get_str(&f, "text", &text, &text_len, &err)) bp_die(1, where, "%s", err.msg);
            int rc = tok_encode_single(tok, text, text_len, (int)max_length, pad, &enc, &err);
            if (rc < 0) bp_die(1, where, "%s", err.msg);
            int64_t label = -1;
            if (bp_find_int(&f, "label", -1, BP_I32_MAX, &label, &err) < 0) bp_die(1, where, "%s", err.msg);
            int has_label = label >= 0;
            send_feature(out, &w, &enc, 0, id, id_len, c.features++, 0, has_label, label, 0);
        } else {
            const char *question, *context;
            size_t question_len, context_len;
            if (bp_get_str(&f, "question", &question, &question_len, &err) ||
                bp_get_str(&f, "context", &context, &context_len, &err))
                bp_die(1, where, "%s", err.msg);
            /* Training labels come from the first answer, as run_qa does. */
            tok_answer answer, *answer_ptr = NULL;
            bp_answer *answers;
            size_t n_answers;
            if (bp_find_answers(&f, &answers, &n_answers, &err) < 0) bp_die(1, where, "%s", err.msg);
            if (n_answers > 0) {
                answer = (tok_answer){.text = answers[0].text, .text_len = answers[0].text_len,
                                      .start_char = answers[0].answer_start};
                answer_ptr = &answer;
            }
            free(answers);
            int rc = tok_encode_pair(tok, question, question_len, context, context_len, (int)max_length, (int)stride,
                                     pad, answer_ptr, &enc, &err);
            if (rc < 0) bp_die(1, where, "%s", err.msg);
            int labelled = answer_ptr != NULL;
            if (rc == TOK_ANSWER_MISMATCH) {
                c.mismatched++;
                if (strict) bp_die(1, where, "%s", err.msg);
                bp_warn("%s: %s: %s", where, err.msg, keep_unlabelled ? "kept without labels" : "example dropped");
                if (!keep_unlabelled) {
                    bp_frame_release(&f);
                    continue;
                }
                labelled = 0;
            }
            int windows = no_overflow ? 1 : enc.n_windows;
            for (int win = 0; win < windows; win++)
                send_feature(out, &w, &enc, win, id, id_len, c.features++, 1, 0, 0, labelled);
        }
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_log("%lld examples -> %lld features%s; %lld answers not matching their context", (long long)c.examples,
           (long long)c.features, qa ? " (windows)" : "", (long long)c.mismatched);
    bp_close_out(out);
    bp_in_close(in);
    tok_encoding_free(&enc);
    tok_free(tok);
    bp_writer_free(&w);
    return 0;
}
