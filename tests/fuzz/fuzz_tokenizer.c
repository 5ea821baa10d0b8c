/* fuzz_tokenizer.c — WordPiece tokenization on arbitrary text: single sequences and
 * question/context pairs with truncation, stride, padding and answer labels, with the
 * fixture vocabularies (cased and uncased). Five header bytes pick the call (text/tokenizer.h):
 *   0: bit 0 pair, bit 1 uncased, bit 2 pad, bit 3 answer;  1: max_length;  2: stride;
 *   3: answer start (code points);  4: answer length (bytes, from the context's start)
 * then the text; a pair splits it at its first '\n' into question and context. */
#include "fuzz_common.h"
#include "text/tokenizer.h"

static tok_tokenizer *vocabs[2];
static tok_encoding enc;

static void setup(void) {
    bp_err err;
    vocabs[0] = tok_load(fuzz_repo_path("tests/fixtures/tokenize/vocab-cased.txt"), 0, &err);
    if (vocabs[0]) vocabs[1] = tok_load(fuzz_repo_path("tests/fixtures/tokenize/vocab-uncased.txt"), 1, &err);
    if (!vocabs[1]) {
        fprintf(stderr, "fuzz_tokenizer: %s (run from the repository root)\n", err.msg);
        exit(2);
    }
    tok_encoding_init(&enc); /* reused across inputs, as a stage reuses it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!vocabs[0]) setup();
    if (size < 5) return 0;
    const tok_tokenizer *tok = vocabs[(data[0] >> 1) & 1];
    int max_length = data[1], stride = data[2], pad = (data[0] >> 2) & 1;
    const char *text = (const char *)data + 5;
    size_t len = size - 5;
    bp_err err;
    if (!(data[0] & 1)) {
        tok_encode_single(tok, text, len, max_length, pad, &enc, &err);
        tok_pieces pieces = {0};
        tok_tokenize(tok, text, len, &pieces, &err);
        tok_pieces_free(&pieces);
        return 0;
    }
    const char *newline = memchr(text, '\n', len);
    size_t question_len = newline ? (size_t)(newline - text) : len / 2;
    const char *context = text + question_len + (newline ? 1 : 0);
    size_t context_len = len - (size_t)(context - text);
    size_t answer_len = data[4] < context_len ? data[4] : context_len;
    tok_answer answer = {.start_char = data[3], .text = context, .text_len = answer_len};
    tok_encode_pair(tok, text, question_len, context, context_len, max_length, stride, pad,
                    (data[0] & 8) ? &answer : NULL, &enc, &err);
    return 0;
}
