/* tokenize_dump.c — run the C tokenizer over JSONL examples and print what it made, in the
 * exact JSON shape tests/reference/tokenize_ref.js prints, so scripts/parity-tokenize can
 * compare the two line by line, and scripts/bench-tokenize can time it (--bench).
 *
 *   tokenize_dump --vocab V [--lowercase 0|1] [--max-length 384] [--stride 128] [--pad]
 *                 [--bench] < in.jsonl > out.jsonl
 *
 * Input lines: {"id":..,"text":..} or {"id":..,"question":..,"context":..
 * [,"answer_start":N,"answer_text":".."]}. A test/bench driver only: it may exit on bad input.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "text/tokenizer.h"

typedef struct example {
    json_t *id; /* NULL when the line has none */
    const char *text, *question, *context, *answer_text;
    size_t text_len, question_len, context_len, answer_len;
    int64_t answer_start;
    int has_answer;
    json_t *root; /* owns the strings above */
} example;

static void usage(void) {
    bp_die(2, NULL, "usage: tokenize_dump --vocab V [--lowercase 0|1] [--max-length N] "
                    "[--stride N] [--pad] [--bench] < in.jsonl");
}

static const char *string_field(json_t *root, const char *key, size_t *len, long line) {
    json_t *value = json_object_get(root, key);
    if (!value) return NULL;
    if (!json_is_string(value)) bp_die(1, NULL, "\"%s\" must be a string (stdin line %ld)", key, line);
    *len = json_string_length(value);
    return json_string_value(value);
}

static example *read_examples(FILE *in, size_t *count) {
    size_t capacity = 1024, n = 0;
    example *examples = malloc(capacity * sizeof *examples);
    if (!examples) bp_die(1, NULL, "out of memory reading examples");
    char *line = NULL;
    size_t line_capacity = 0;
    ssize_t got;
    long line_no = 0;
    while ((got = getline(&line, &line_capacity, in)) > 0) {
        line_no++;
        if (got == 1 && line[0] == '\n') continue;
        json_error_t jerr;
        json_t *root = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        if (!root || !json_is_object(root))
            bp_die(1, NULL, "invalid JSON: %s (stdin line %ld)", root ? "not an object" : jerr.text, line_no);
        if (n == capacity) {
            capacity *= 2;
            example *grown = realloc(examples, capacity * sizeof *examples);
            if (!grown) bp_die(1, NULL, "out of memory reading examples");
            examples = grown;
        }
        example *ex = &examples[n++];
        memset(ex, 0, sizeof *ex);
        ex->root = root;
        ex->id = json_object_get(root, "id");
        ex->text = string_field(root, "text", &ex->text_len, line_no);
        ex->question = string_field(root, "question", &ex->question_len, line_no);
        ex->context = string_field(root, "context", &ex->context_len, line_no);
        ex->answer_text = string_field(root, "answer_text", &ex->answer_len, line_no);
        json_t *start = json_object_get(root, "answer_start");
        if (start && ex->answer_text) {
            if (!json_is_integer(start)) bp_die(1, NULL, "answer_start must be an integer (stdin line %ld)", line_no);
            ex->answer_start = json_integer_value(start);
            ex->has_answer = 1;
        }
        if (!ex->text && !(ex->question && ex->context))
            bp_die(1, NULL, "need \"text\" or \"question\"+\"context\" (stdin line %ld)", line_no);
    }
    free(line);
    if (ferror(in)) bp_die(1, NULL, "read error (stdin)");
    *count = n;
    return examples;
}

static int encode(const tok_tokenizer *tok, const example *ex, int max_length, int stride, int pad,
                  tok_encoding *enc, bp_err *err) {
    if (ex->text) return tok_encode_single(tok, ex->text, ex->text_len, max_length, pad, enc, err);
    tok_answer answer = {ex->answer_start, ex->answer_text, ex->answer_len};
    return tok_encode_pair(tok, ex->question, ex->question_len, ex->context, ex->context_len,
                           max_length, stride, pad, ex->has_answer ? &answer : NULL, enc, err);
}

static void print_ints32(FILE *out, const char *key, const int32_t *values, int n, int comma) {
    fprintf(out, "\"%s\":[", key);
    for (int i = 0; i < n; i++) fprintf(out, i ? ",%d" : "%d", values[i]);
    fprintf(out, "]%s", comma ? "," : "");
}

static void print_result(FILE *out, const example *ex, const tok_encoding *enc, int status) {
    fputc('{', out);
    if (ex->id) {
        char *id = json_dumps(ex->id, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!id) bp_die(1, NULL, "out of memory printing an id");
        fprintf(out, "\"id\":%s,", id);
        free(id);
    }
    if (status == TOK_ERR_QUESTION_TOO_LONG || status == TOK_ERR_STRIDE) {
        fprintf(out, "\"error\":\"%s\"}\n", status == TOK_ERR_STRIDE ? "stride" : "question_too_long");
        return;
    }
    fprintf(out, "\"windows\":[");
    for (int w = 0; w < enc->n_windows; w++) {
        size_t base = (size_t)w * (size_t)enc->row_length;
        int n = enc->lengths[w];
        fprintf(out, "%s{", w ? "," : "");
        print_ints32(out, "ids", enc->input_ids + base, n, 1);
        print_ints32(out, "type_ids", enc->token_type_ids + base, n, 1);
        print_ints32(out, "mask", enc->attention_mask + base, n, 1);
        fprintf(out, "\"seq\":[");
        for (int i = 0; i < n; i++) fprintf(out, i ? ",%d" : "%d", enc->sequence_ids[base + (size_t)i]);
        fprintf(out, "],\"offsets\":[");
        for (int i = 0; i < n; i++)
            fprintf(out, "%s[%d,%d]", i ? "," : "", enc->offset_starts[base + (size_t)i],
                    enc->offset_ends[base + (size_t)i]);
        fprintf(out, "]}");
    }
    fputc(']', out);
    if (status == TOK_ANSWER_MISMATCH) { /* windows are valid; only the labels are missing */
        fprintf(out, ",\"error\":\"answer_mismatch\"}\n");
        return;
    }
    if (ex->has_answer) {
        fprintf(out, ",\"labels\":[");
        for (int w = 0; w < enc->n_windows; w++)
            fprintf(out, "%s[%d,%d]", w ? "," : "", enc->start_positions[w], enc->end_positions[w]);
        fputc(']', out);
    }
    fprintf(out, "}\n");
}

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    const char *vocab = NULL;
    int lowercase = 1, max_length = 384, stride = 128, pad = 0, bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc) vocab = argv[++i];
        else if (!strcmp(argv[i], "--lowercase") && i + 1 < argc) lowercase = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-length") && i + 1 < argc) max_length = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--stride") && i + 1 < argc) stride = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pad")) pad = 1;
        else if (!strcmp(argv[i], "--bench")) bench = 1;
        else usage();
    }
    if (!vocab) usage();
    bp_err err;
    tok_tokenizer *tok = tok_load(vocab, lowercase, &err);
    if (!tok) bp_die_err(&err);
    size_t n_examples;
    example *examples = read_examples(stdin, &n_examples);
    tok_encoding enc;
    tok_encoding_init(&enc);

    if (bench) {
        size_t bytes = 0;
        for (size_t i = 0; i < n_examples; i++)
            bytes += examples[i].text ? examples[i].text_len : examples[i].question_len + examples[i].context_len;
        long windows = 0;
        double t0 = bp_now();
        for (size_t i = 0; i < n_examples; i++) {
            int status = encode(tok, &examples[i], max_length, stride, pad, &enc, &err);
            if (status < 0) bp_die(1, NULL, "%s (example %zu)", err.msg, i + 1);
            windows += enc.n_windows;
        }
        double seconds = bp_now() - t0;
        printf("%.3f %zu %.3f %ld\n", (double)bytes / 1e6 / seconds, bytes, seconds, windows);
    } else {
        for (size_t i = 0; i < n_examples; i++) {
            int status = encode(tok, &examples[i], max_length, stride, pad, &enc, &err);
            if (status < 0 && status != TOK_ERR_QUESTION_TOO_LONG && status != TOK_ERR_STRIDE)
                bp_die(1, NULL, "%s (example %zu)", err.msg, i + 1);
            print_result(stdout, &examples[i], &enc, status);
        }
    }
    if (fflush(stdout) != 0) bp_die(1, NULL, "write error (stdout)");
    for (size_t i = 0; i < n_examples; i++) json_decref(examples[i].root);
    free(examples);
    tok_encoding_free(&enc);
    tok_free(tok);
    return 0;
}
