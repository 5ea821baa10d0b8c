/* text/tokenizer.h — BERT WordPiece tokenization, identical to Hugging Face's BertTokenizerFast
 * (ids, token types, offsets, overflow windows), for single texts and question/context pairs.
 *
 * Must never: know about frames, sockets or files other than vocab/config, print, or exit:
 * failures return an error code and fill a bp_err ("WHAT (WHERE)"). Never allocates per call
 * in the steady state: a tok_encoding keeps its buffers and reuses them, so a stage encodes
 * example after example with one encoding per thread.
 *
 * Behaviour (docs/tokenize.md has the details and the Hugging Face subtleties):
 *   clean text (drop controls/format chars, U+0000, U+FFFD; whitespace splits), pad CJK
 *   ideographs, uncased only: NFD + drop non-spacing marks + lowercase; split on whitespace
 *   and punctuation; greedy longest-match-first WordPiece with "##"; words over 100 chars
 *   -> [UNK]. Special-token strings in the raw text ("[CLS]", "[SEP]", "[PAD]", "[UNK]",
 *   "[MASK]", when in the vocab) become those tokens, as in Hugging Face.
 *   Offsets are [start, end) in Unicode code points of the text they came from (the
 *   question's for question tokens, the context's for context tokens); specials and
 *   padding get (0, 0), as Hugging Face returns them.
 */
#ifndef BP_TOKENIZER_H
#define BP_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

/* Words longer than this many (normalized) chars become one [UNK], as in BERT. */
#define TOK_MAX_WORD_CHARS 100

/* Return codes of the encode functions. Negative: nothing usable was produced. */
enum {
    TOK_OK = 0,
    TOK_ANSWER_MISMATCH = 1, /* encoding valid, but answer_start + text do not slice the context:
                                labels are -1; count it and report the example id */
    TOK_ERR_UTF8 = -1,       /* invalid UTF-8 in the input */
    TOK_ERR_QUESTION_TOO_LONG = -2, /* question + 3 specials leave no room for context */
    TOK_ERR_STRIDE = -3,     /* room for context <= stride: windows could not advance */
    TOK_ERR_ARGUMENT = -4,   /* bad max_length/stride, NULL pointer, text over 2 GiB */
    TOK_ERR_NOMEM = -5,
};

typedef struct tok_tokenizer tok_tokenizer; /* immutable once loaded: share across threads */

/* Load vocab.txt (one token per line, id = line number, trailing whitespace trimmed, a later
 * duplicate wins as in Hugging Face). lowercase: 1 uncased (lowercase + strip accents),
 * 0 cased. Fails when the file cannot be read or lacks [CLS], [SEP], [UNK] or [PAD].
 * Returns a tokenizer the caller frees with tok_free, or NULL with err filled. */
tok_tokenizer *tok_load(const char *vocab_path, int lowercase, bp_err *err);

/* Load CHECKPOINT_DIR/vocab.txt. lowercase < 0: decide from the checkpoint
 * (tok_config_lowercase; uncased when it says nothing, Hugging Face's default), else as given.
 * Returns NULL with err filled on failure. */
tok_tokenizer *tok_load_checkpoint(const char *checkpoint_dir, int lowercase, bp_err *err);

/* Read do_lower_case from CHECKPOINT_DIR/tokenizer_config.json, else from config.json.
 * Returns 1 and sets *lowercase when found, 0 when neither file says (missing files are
 * fine), -1 with err filled when a file exists but is not valid JSON or do_lower_case is
 * not a boolean, or when tokenizer_config.json asks for what this tokenizer cannot do
 * (strip_accents different from lowercase, tokenize_chinese_chars false). */
int tok_config_lowercase(const char *checkpoint_dir, int *lowercase, bp_err *err);

/* model_max_length of CHECKPOINT_DIR/tokenizer_config.json (the length the checkpoint was
 * trained with, when train saved it) into *max_length. Returns 1 when it is there and bounded
 * (2..TOK_MAX_MODEL_LENGTH), 0 when the file or the key is missing or holds transformers'
 * "unbounded" int(1e30), -1 with err when the file is not valid JSON or the key not a number. */
#define TOK_MAX_MODEL_LENGTH 65536
int tok_config_max_length(const char *checkpoint_dir, long *max_length, bp_err *err);

void tok_free(tok_tokenizer *tok); /* NULL is fine */

int tok_is_lowercase(const tok_tokenizer *tok);
int tok_vocab_size(const tok_tokenizer *tok);    /* lines in vocab.txt */
int32_t tok_cls_id(const tok_tokenizer *tok);
int32_t tok_sep_id(const tok_tokenizer *tok);
int32_t tok_pad_id(const tok_tokenizer *tok);
int32_t tok_unk_id(const tok_tokenizer *tok);
/* The token text of an id (owned by the tokenizer), or NULL when out of range. */
const char *tok_id_to_token(const tok_tokenizer *tok, int32_t id);
/* 64-bit FNV-1a of the vocab file's bytes, for stream headers: producer and consumer can
 * check they use the same vocab. */
uint64_t tok_vocab_checksum(const tok_tokenizer *tok);

/* Tokens of one text, without specials. Arrays grow as needed and are reused. */
typedef struct tok_pieces {
    int32_t *ids;
    int32_t *starts, *ends; /* offsets [start, end) in code points of the text */
    int count, capacity;
} tok_pieces;

/* Tokenize text[0..len) (UTF-8, need not be NUL-terminated) into pieces (overwritten).
 * Returns TOK_OK, or TOK_ERR_UTF8 (err names the byte offset), TOK_ERR_ARGUMENT (over 2 GiB),
 * TOK_ERR_NOMEM, with err filled. */
int tok_tokenize(const tok_tokenizer *tok, const char *text, size_t len, tok_pieces *pieces,
                 bp_err *err);
void tok_pieces_free(tok_pieces *pieces);

/* The result of an encode call: one or more windows, each a row of row_length tokens.
 * Row w's token i is at [w * row_length + i]. Tokens past lengths[w] are padding
 * ([PAD], type 0, mask 0, offsets (0,0), sequence id -1), so rows can be sent as-is.
 * Initialise with tok_encoding_init (or zero it); release with tok_encoding_free. */
typedef struct tok_encoding {
    int row_length;          /* = max_length of the call */
    int n_windows;
    int *lengths;            /* tokens to emit per window: row_length when padding, else real */
    int32_t *input_ids;
    int32_t *token_type_ids; /* 0 for [CLS] first [SEP], 1 for second [SEP] */
    int32_t *attention_mask; /* 1 real token, 0 padding */
    int32_t *offset_starts;  /* code points of the token's own text; (0,0) specials/padding */
    int32_t *offset_ends;
    int8_t *sequence_ids;    /* -1 special/padding, 0 first text (question), 1 context */
    int32_t *start_positions; /* per window: answer start token, 0 ([CLS]) when the answer is */
    int32_t *end_positions;   /* not wholly inside; -1 when no answer given or it mismatched */
    /* scratch reused between calls */
    tok_pieces first, second;
    size_t capacity_tokens; /* allocated tokens in the per-token arrays */
    int capacity_windows;
} tok_encoding;

void tok_encoding_init(tok_encoding *enc);
void tok_encoding_free(tok_encoding *enc);

/* Single sequence (classification): [CLS] text [SEP], truncated to max_length tokens
 * (Hugging Face truncation=True; what is cut is dropped). pad: 1 pads lengths[0] up to
 * max_length. Always one window. max_length must be >= 2.
 * Returns TOK_OK or a negative TOK_ERR_* with err filled. */
int tok_encode_single(const tok_tokenizer *tok, const char *text, size_t len, int max_length,
                      int pad, tok_encoding *enc, bp_err *err);

/* An answer for QA training labels. start_char and the answer's length count code points
 * of the context, as SQuAD's answer_start does. */
typedef struct tok_answer {
    int64_t start_char;
    const char *text;
    size_t text_len; /* bytes */
} tok_answer;

/* Question/context pair, Hugging Face truncation="only_second", return_overflowing_tokens:
 * [CLS] question [SEP] context-window [SEP], one window per stride step, consecutive
 * windows sharing `stride` context tokens, the last window ending at the context's end.
 * pad: 1 pads every window to max_length (and then affects labels exactly as in run_qa).
 * answer: NULL for no labels; else per-window start/end token positions computed exactly as
 * Hugging Face run_qa's prepare_train_features (including its quirks; docs/tokenize.md).
 * Returns TOK_OK; TOK_ANSWER_MISMATCH (windows valid, labels -1, err says why); or a
 * negative TOK_ERR_* (err filled): question too long for max_length, stride too large for
 * the room left, invalid UTF-8 (err names "question" or "context" and the byte offset). */
int tok_encode_pair(const tok_tokenizer *tok, const char *question, size_t question_len,
                    const char *context, size_t context_len, int max_length, int stride,
                    int pad, const tok_answer *answer, tok_encoding *enc, bp_err *err);

#endif
