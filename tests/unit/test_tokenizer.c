/* test_tokenizer.c — the C BERT tokenizer against Hugging Face tokenizers, plus its errors.
 *
 * Fixtures (tests/fixtures/tokenize/): sentences.jsonl (our own sentences and question/context
 * pairs: accents, CJK, emoji, control chars, odd whitespace, long words, punctuation runs,
 * special-token strings), two tiny vocabs (uncased/cased), and expected-*.jsonl written by
 * tests/reference/tokenize_ref.js (npm @anush008/tokenizers, i.e. Hugging Face's Rust core)
 * via tests/fixtures/tokenize/regenerate.sh, with max length 24 and stride 6, unpadded and
 * padded. Every field of every window and every QA label must match.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "text/tokenizer.h"

static char fixture_dir[4096];

static const char *fixture(const char *name) {
    static char path[8192];
    snprintf(path, sizeof path, "%s/%s", fixture_dir, name);
    return path;
}

static json_t *load_jsonl(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    json_t *lines = json_array();
    char *line = NULL;
    size_t capacity = 0;
    ssize_t got;
    while ((got = getline(&line, &capacity, f)) > 0) {
        json_error_t jerr;
        json_t *value = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        if (!value) {
            tap_diag("bad JSON in %s: %s", path, jerr.text);
            continue;
        }
        json_array_append_new(lines, value);
    }
    free(line);
    fclose(f);
    return lines;
}

/* Compare one int array of the expected JSON with a row of the encoding. */
static int same_ints(json_t *expected, const int32_t *got, int n, const char *what, const char *id,
                     int window) {
    if (!json_is_array(expected) || (int)json_array_size(expected) != n) {
        tap_diag("%s window %d %s: %d tokens, want %d", id, window, what, n,
                 (int)json_array_size(expected));
        return 0;
    }
    for (int i = 0; i < n; i++) {
        long long want = json_integer_value(json_array_get(expected, (size_t)i));
        if (got[i] != want) {
            tap_diag("%s window %d %s[%d]: got %d, want %lld", id, window, what, i, got[i], want);
            return 0;
        }
    }
    return 1;
}

static int check_example(const tok_tokenizer *tok, json_t *input, json_t *expected, int pad,
                         tok_encoding *enc) {
    const char *id = json_string_value(json_object_get(input, "id"));
    json_t *text = json_object_get(input, "text");
    bp_err err = {""};
    int status;
    int has_answer = 0;
    if (text) {
        status = tok_encode_single(tok, json_string_value(text), json_string_length(text), 24, pad,
                                   enc, &err);
    } else {
        json_t *question = json_object_get(input, "question"), *context = json_object_get(input, "context");
        json_t *answer_text = json_object_get(input, "answer_text");
        tok_answer answer = {json_integer_value(json_object_get(input, "answer_start")),
                             json_string_value(answer_text), json_string_length(answer_text)};
        has_answer = answer_text != NULL;
        status = tok_encode_pair(tok, json_string_value(question), json_string_length(question),
                                 json_string_value(context), json_string_length(context), 24, 6, pad,
                                 has_answer ? &answer : NULL, enc, &err);
    }
    const char *want_error = json_string_value(json_object_get(expected, "error"));
    const char *got_error = status == TOK_ERR_QUESTION_TOO_LONG ? "question_too_long"
                            : status == TOK_ERR_STRIDE          ? "stride"
                            : status == TOK_ANSWER_MISMATCH     ? "answer_mismatch"
                                                                : NULL;
    if (status < 0 && !got_error) {
        tap_diag("%s: unexpected error %d: %s", id, status, err.msg);
        return 0;
    }
    if ((want_error == NULL) != (got_error == NULL) || (want_error && strcmp(want_error, got_error))) {
        tap_diag("%s: error %s, want %s (%s)", id, got_error ? got_error : "none",
                 want_error ? want_error : "none", err.msg);
        return 0;
    }
    if (status < 0) return 1; /* the expected error, no windows */
    json_t *windows = json_object_get(expected, "windows");
    if ((int)json_array_size(windows) != enc->n_windows) {
        tap_diag("%s: %d windows, want %d", id, enc->n_windows, (int)json_array_size(windows));
        return 0;
    }
    for (int w = 0; w < enc->n_windows; w++) {
        json_t *window = json_array_get(windows, (size_t)w);
        size_t base = (size_t)w * (size_t)enc->row_length;
        int n = enc->lengths[w];
        int32_t sequence[64], offsets_start[64], offsets_end[64];
        if (n > 64) return 0;
        for (int i = 0; i < n; i++) {
            sequence[i] = enc->sequence_ids[base + (size_t)i];
            offsets_start[i] = enc->offset_starts[base + (size_t)i];
            offsets_end[i] = enc->offset_ends[base + (size_t)i];
        }
        json_t *offsets = json_object_get(window, "offsets");
        json_t *want_starts = json_array(), *want_ends = json_array();
        size_t i;
        json_t *pair;
        json_array_foreach(offsets, i, pair) {
            json_array_append(want_starts, json_array_get(pair, 0));
            json_array_append(want_ends, json_array_get(pair, 1));
        }
        int ok = same_ints(json_object_get(window, "ids"), enc->input_ids + base, n, "ids", id, w) &&
                 same_ints(json_object_get(window, "type_ids"), enc->token_type_ids + base, n, "type_ids", id, w) &&
                 same_ints(json_object_get(window, "mask"), enc->attention_mask + base, n, "mask", id, w) &&
                 same_ints(json_object_get(window, "seq"), sequence, n, "sequence ids", id, w) &&
                 same_ints(want_starts, offsets_start, n, "offset starts", id, w) &&
                 same_ints(want_ends, offsets_end, n, "offset ends", id, w);
        json_decref(want_starts);
        json_decref(want_ends);
        if (!ok) return 0;
    }
    json_t *labels = json_object_get(expected, "labels");
    if (labels) {
        for (int w = 0; w < enc->n_windows; w++) {
            json_t *label = json_array_get(labels, (size_t)w);
            if (enc->start_positions[w] != json_integer_value(json_array_get(label, 0)) ||
                enc->end_positions[w] != json_integer_value(json_array_get(label, 1))) {
                tap_diag("%s window %d labels (%d, %d), want (%lld, %lld)", id, w,
                         enc->start_positions[w], enc->end_positions[w],
                         json_integer_value(json_array_get(label, 0)),
                         json_integer_value(json_array_get(label, 1)));
                return 0;
            }
        }
    } else if (has_answer && status == TOK_OK) {
        tap_diag("%s: labels computed but the reference has none", id);
        return 0;
    }
    return 1;
}

static void test_reference_fixtures(void) {
    json_t *inputs = load_jsonl(fixture("sentences.jsonl"));
    tap_ok(inputs && json_array_size(inputs) > 20, "fixture sentences load (%s)", fixture("sentences.jsonl"));
    if (!inputs) return;
    static const struct { const char *vocab, *expected; int lowercase, pad; } runs[] = {
        {"vocab-uncased.txt", "expected-uncased.jsonl", 1, 0},
        {"vocab-uncased.txt", "expected-uncased-pad.jsonl", 1, 1},
        {"vocab-cased.txt", "expected-cased.jsonl", 0, 0},
        {"vocab-cased.txt", "expected-cased-pad.jsonl", 0, 1},
    };
    tok_encoding enc;
    tok_encoding_init(&enc); /* one encoding for every call: buffers are reused */
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        bp_err err;
        tok_tokenizer *tok = tok_load(fixture(runs[r].vocab), runs[r].lowercase, &err);
        json_t *expected = load_jsonl(fixture(runs[r].expected));
        if (!tap_ok(tok && expected && json_array_size(expected) == json_array_size(inputs),
                    "%s loads with %s", runs[r].expected, runs[r].vocab)) {
            tok_free(tok);
            json_decref(expected);
            continue;
        }
        for (size_t i = 0; i < json_array_size(inputs); i++) {
            json_t *input = json_array_get(inputs, i);
            tap_ok(check_example(tok, input, json_array_get(expected, i), runs[r].pad, &enc),
                   "%s: %s matches Hugging Face", runs[r].expected,
                   json_string_value(json_object_get(input, "id")));
        }
        json_decref(expected);
        tok_free(tok);
    }
    tok_encoding_free(&enc);
    json_decref(inputs);
}

static const char *write_file(const char *dir, const char *name, const char *content) {
    static char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    fputs(content, f);
    fclose(f);
    return path;
}

static int copy_file(const char *from, const char *dir, const char *name) {
    FILE *in = fopen(from, "rb");
    if (!in) return -1;
    char content[65536];
    size_t n = fread(content, 1, sizeof content - 1, in);
    fclose(in);
    content[n] = 0;
    const char *path = write_file(dir, name, content);
    FILE *check = fopen(path, "rb");
    if (!check) return -1;
    fclose(check);
    return 0;
}

static void test_vocab_loading(const char *dir) {
    bp_err err = {""};
    tok_tokenizer *tok = tok_load(write_file(dir, "no-cls.txt", "[PAD]\n[UNK]\n[SEP]\nhello\n"), 1, &err);
    tap_ok(tok == NULL && strstr(err.msg, "[CLS]") && strstr(err.msg, "no-cls.txt"),
           "a vocab without [CLS] is refused: %s", err.msg);
    tok = tok_load(write_file(dir, "no-pad.txt", "[CLS]\n[UNK]\n[SEP]\n"), 1, &err);
    tap_ok(tok == NULL && strstr(err.msg, "[PAD]"), "a vocab without [PAD] is refused: %s", err.msg);
    tok = tok_load(write_file(dir, "empty.txt", ""), 1, &err);
    tap_ok(tok == NULL && strstr(err.msg, "lacks"), "an empty vocab is refused: %s", err.msg);
    tok = tok_load("/nonexistent/vocab.txt", 1, &err);
    tap_ok(tok == NULL && strstr(err.msg, "/nonexistent/vocab.txt"), "a missing vocab names its path: %s", err.msg);

    /* CRLF, trailing blanks and a duplicate (the later line wins, as in Hugging Face). */
    tok = tok_load(write_file(dir, "crlf.txt", "[PAD]\r\n[UNK]  \n[CLS]\n[SEP]\nhello\nhello\n##s\nno-newline"), 1, &err);
    if (!tap_ok(tok != NULL, "a CRLF vocab with trailing blanks loads")) return;
    TAP_EQ_INT(tok_vocab_size(tok), 8, "vocab size counts a last line without newline");
    TAP_EQ_INT(tok_unk_id(tok), 1, "[UNK] found despite trailing blanks");
    TAP_EQ_STR(tok_id_to_token(tok, 0), "[PAD]", "CR is not part of a token");
    TAP_EQ_STR(tok_id_to_token(tok, 7), "no-newline", "the last line without newline is a token");
    tap_ok(tok_id_to_token(tok, 8) == NULL && tok_id_to_token(tok, -1) == NULL, "ids out of range give NULL");
    TAP_EQ_INT(tok_cls_id(tok), 2, "[CLS] id");
    TAP_EQ_INT(tok_sep_id(tok), 3, "[SEP] id");
    TAP_EQ_INT(tok_pad_id(tok), 0, "[PAD] id");
    tok_pieces pieces = {0};
    int status = tok_tokenize(tok, "Hellos hello", 12, &pieces, &err);
    tap_ok(status == TOK_OK && pieces.count == 3 && pieces.ids[0] == 5 && pieces.ids[1] == 6 &&
               pieces.ids[2] == 5, "a duplicate token takes the later id; ## continuations");
    tap_ok(pieces.count == 3 && pieces.starts[1] == 5 && pieces.ends[1] == 6 && pieces.starts[2] == 7,
           "sub-word offsets");
    uint64_t checksum = tok_vocab_checksum(tok);
    tok_free(tok);
    /* Hugging Face reads vocab.txt as UTF-8 and fails on a bad byte: refused with its line. */
    tok = tok_load(write_file(dir, "latin1.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\ncaf\xe9\n"), 1, &err);
    tap_ok(tok == NULL && strstr(err.msg, "not valid UTF-8") && strstr(err.msg, "latin1.txt:5"),
           "a vocab token that is not UTF-8 is refused with its line: %s", err.msg);
    tok_free(tok);
    const char *huge = write_file(dir, "huge.txt", "");
    tok = truncate(huge, (off_t)(65 << 20)) == 0 ? tok_load(huge, 1, &err) : NULL;
    tap_ok(tok == NULL && strstr(err.msg, "over the limit of 67108864 bytes") && strstr(err.msg, "huge.txt"),
           "a 65 MiB vocab is refused at the limit before it is read: %s", err.msg);
    tok_free(tok);
    tok = tok_load(fixture("vocab-uncased.txt"), 1, &err);
    tap_ok(tok && tok_vocab_checksum(tok) != checksum, "different vocabs have different checksums");
    tok_pieces_free(&pieces);
    tok_free(tok);
}

static void test_bad_input(void) {
    bp_err err = {""};
    tok_tokenizer *tok = tok_load(fixture("vocab-uncased.txt"), 1, &err);
    if (!tap_ok(tok != NULL, "uncased fixture vocab loads")) return;
    tok_pieces pieces = {0};
    static const struct { const char *bytes; const char *what; } bad[] = {
        {"ab\xff" "cd", "a 0xFF byte"},
        {"ab\xc0\xaf", "an overlong '/'"},
        {"x\xed\xa0\x80", "a UTF-16 surrogate"},
        {"euro \xe2\x82", "a truncated char"},
        {"\x80 stray", "a stray continuation byte"},
        {"\xf4\x90\x80\x80", "a code point past U+10FFFF"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int status = tok_tokenize(tok, bad[i].bytes, strlen(bad[i].bytes), &pieces, &err);
        tap_ok(status == TOK_ERR_UTF8 && strstr(err.msg, "invalid UTF-8"),
               "%s is invalid UTF-8: %s", bad[i].what, err.msg);
    }
    tok_encoding enc;
    tok_encoding_init(&enc);
    int status = tok_encode_pair(tok, "who?", 4, "ok \xff", 4, 24, 6, 0, NULL, &enc, &err);
    tap_ok(status == TOK_ERR_UTF8 && strstr(err.msg, "(context)") && strstr(err.msg, "byte 3"),
           "invalid UTF-8 in a context names the context and byte: %s", err.msg);
    status = tok_encode_single(tok, "x", 1, 1, 0, &enc, &err);
    TAP_EQ_INT(status, TOK_ERR_ARGUMENT, "max_length 1 is refused for a single text");
    status = tok_encode_pair(tok, "a", 1, "b", 1, 24, -1, 0, NULL, &enc, &err);
    TAP_EQ_INT(status, TOK_ERR_ARGUMENT, "a negative stride is refused");

    /* Empty text: Hugging Face gives [CLS] [SEP]. */
    status = tok_encode_single(tok, "", 0, 24, 0, &enc, &err);
    tap_ok(status == TOK_OK && enc.n_windows == 1 && enc.lengths[0] == 2 &&
               enc.input_ids[0] == tok_cls_id(tok) && enc.input_ids[1] == tok_sep_id(tok),
           "an empty text is [CLS] [SEP]");

    /* A question that alone fills max_length, and one that leaves room <= stride. */
    const char *long_question = "a b c d e f g h i j k l m n o p q r s t u";
    status = tok_encode_pair(tok, long_question, strlen(long_question), "x y z", 5, 24, 6, 0, NULL, &enc, &err);
    tap_ok(status == TOK_ERR_QUESTION_TOO_LONG && strstr(err.msg, "21 tokens"),
           "a question of 21 tokens in max_length 24 is refused: %s", err.msg);
    status = tok_encode_pair(tok, long_question, strlen(long_question), "", 0, 24, 6, 0, NULL, &enc, &err);
    tap_ok(status == TOK_OK && enc.lengths[0] == 24, "...but fits exactly when the context is empty");

    /* Answers that do not slice the context: counted, never labelled. */
    const char *context = "The river flows through Paris.";
    tok_answer answers[] = {{3, "Paris", 5}, {200, "Paris", 5}, {-1, "Paris", 5}, {24, "", 0}, {24, "Pari", 4}};
    int expect_mismatch[] = {1, 1, 1, 1, 0};
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        err.msg[0] = 0;
        status = tok_encode_pair(tok, "Where?", 6, context, strlen(context), 24, 6, 0, &answers[i], &enc, &err);
        if (expect_mismatch[i])
            tap_ok(status == TOK_ANSWER_MISMATCH && enc.n_windows == 1 && enc.start_positions[0] == -1 &&
                       err.msg[0], "answer_start %lld \"%s\" is a mismatch: %s",
                   (long long)answers[i].start_char, answers[i].text, err.msg);
        else
            tap_ok(status == TOK_OK && enc.start_positions[0] == 8 && enc.end_positions[0] == 8,
                   "a prefix of a token still labels that token (start %d end %d)",
                   enc.start_positions[0], enc.end_positions[0]);
    }
    /* A code point slice must not end inside a multi-byte char. */
    tok_answer split_char = {0, "caf\xc3", 4};
    status = tok_encode_pair(tok, "What?", 5, "caf\xc3\xa9 time", 10, 24, 6, 0, &split_char, &enc, &err);
    TAP_EQ_INT(status, TOK_ANSWER_MISMATCH, "an answer ending inside a UTF-8 char is a mismatch");
    tok_pieces_free(&pieces);
    tok_encoding_free(&enc);
    tok_free(tok);
}

static void test_buffer_reuse(void) {
    bp_err err;
    tok_tokenizer *tok = tok_load(fixture("vocab-uncased.txt"), 1, &err);
    if (!tap_ok(tok != NULL, "vocab for the reuse test loads")) return;
    tok_encoding enc;
    tok_encoding_init(&enc);
    const char *context = "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9";
    int status = tok_encode_pair(tok, "Which?", 6, context, strlen(context), 24, 6, 1, NULL, &enc, &err);
    int32_t *ids = enc.input_ids;
    int *lengths = enc.lengths;
    int32_t *pieces = enc.second.ids;
    int same = status == TOK_OK;
    for (int i = 0; i < 200 && same; i++) {
        status = tok_encode_pair(tok, "Which?", 6, context + (i % 20) * 2, strlen(context) - (size_t)(i % 20) * 2,
                                 24, 6, 1, NULL, &enc, &err);
        same = status == TOK_OK && enc.input_ids == ids && enc.lengths == lengths && enc.second.ids == pieces;
    }
    tap_ok(same, "repeated encodes of no larger inputs reuse the same buffers (no allocation)");
    TAP_EQ_INT(enc.row_length, 24, "rows are max_length long");
    tok_encoding_free(&enc);
    tok_free(tok);
}

static void test_config(const char *dir) {
    bp_err err = {""};
    char sub[4096];
    int lowercase = -1;
    snprintf(sub, sizeof sub, "%s/ckpt-none", dir);
    mkdir(sub, 0700);
    TAP_EQ_INT(tok_config_lowercase(sub, &lowercase, &err), 0, "no config files: nothing decided");

    snprintf(sub, sizeof sub, "%s/ckpt-cased", dir);
    mkdir(sub, 0700);
    write_file(sub, "tokenizer_config.json", "{\"do_lower_case\": false, \"strip_accents\": null}");
    write_file(sub, "config.json", "{\"do_lower_case\": true}");
    lowercase = -1;
    int found = tok_config_lowercase(sub, &lowercase, &err);
    tap_ok(found == 1 && lowercase == 0, "tokenizer_config.json wins over config.json (cased)");
    tap_ok(copy_file(fixture("vocab-cased.txt"), sub, "vocab.txt") == 0, "copy a vocab into the checkpoint");
    tok_tokenizer *tok = tok_load_checkpoint(sub, -1, &err);
    tap_ok(tok && !tok_is_lowercase(tok), "tok_load_checkpoint follows do_lower_case=false");
    tok_free(tok);
    tok = tok_load_checkpoint(sub, 1, &err);
    tap_ok(tok && tok_is_lowercase(tok), "an explicit option overrides the checkpoint");
    tok_free(tok);

    snprintf(sub, sizeof sub, "%s/ckpt-config", dir);
    mkdir(sub, 0700);
    write_file(sub, "config.json", "{\"do_lower_case\": false}");
    found = tok_config_lowercase(sub, &lowercase, &err);
    tap_ok(found == 1 && lowercase == 0, "config.json is read when tokenizer_config.json is absent");

    snprintf(sub, sizeof sub, "%s/ckpt-bad", dir);
    mkdir(sub, 0700);
    write_file(sub, "tokenizer_config.json", "{\"do_lower_case\": tru");
    tap_ok(tok_config_lowercase(sub, &lowercase, &err) < 0 && strstr(err.msg, "tokenizer_config.json"),
           "invalid JSON is an error naming the file: %s", err.msg);
    write_file(sub, "tokenizer_config.json", "{\"do_lower_case\": \"yes\"}");
    tap_ok(tok_config_lowercase(sub, &lowercase, &err) < 0 && strstr(err.msg, "do_lower_case"),
           "a non-boolean do_lower_case is an error: %s", err.msg);
    write_file(sub, "tokenizer_config.json", "{\"do_lower_case\": true, \"strip_accents\": false}");
    tap_ok(tok_config_lowercase(sub, &lowercase, &err) < 0 && strstr(err.msg, "strip_accents"),
           "strip_accents unlike lowercase is refused, not silently ignored: %s", err.msg);
}

int main(void) {
    const char *top = getenv("BERTPIPE_TOP");
    snprintf(fixture_dir, sizeof fixture_dir, "%s/tests/fixtures/tokenize", top ? top : ".");
    char dir[] = "/tmp/test_tokenizer.XXXXXX";
    if (!mkdtemp(dir)) {
        tap_ok(0, "make a temporary directory");
        return tap_done();
    }
    test_reference_fixtures();
    test_vocab_loading(dir);
    test_bad_input();
    test_buffer_reuse();
    test_config(dir);
    char cleanup[256];
    snprintf(cleanup, sizeof cleanup, "rm -rf %s", dir);
    if (system(cleanup) != 0) tap_diag("could not remove %s", dir);
    return tap_done();
}
