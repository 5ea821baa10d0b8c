/* text/unicode.h — the character classes and the uncased mapping the BERT tokenizer needs,
 * as Hugging Face tokenizers computes them (not as the latest Unicode says).
 *
 * Hugging Face's BertNormalizer/BertPreTokenizer mix Unicode tables of different ages:
 * Rust std (recent) for whitespace and lowercasing, an old `unicode_categories` table for
 * control/format, punctuation and non-spacing marks, and an old NFD table. utf8proc gives us
 * the rules; text/unicode_delta.c lists the code points where Hugging Face differs from those
 * rules (generated from the reference, see tests/reference/gen_unicode_delta.sh).
 *
 * Internal to the tokenizer (common/text/tokenizer.c and the delta generator tool).
 * Must never: allocate per call: the table is built once per process and then only read.
 */
#ifndef BP_TOK_UNICODE_H
#define BP_TOK_UNICODE_H
#include <stdint.h>

enum {
    TOKU_DROP = 1,    /* removed by clean_text: controls, format chars, U+0000, U+FFFD */
    TOKU_SPACE = 2,   /* whitespace: splits words (clean_text maps it to ' ') */
    TOKU_PUNCT = 4,   /* a word of its own: Unicode P* plus ASCII 33-47, 58-64, 91-96, 123-126 */
    TOKU_CJK = 8,     /* CJK ideograph: padded with spaces, so a word of its own */
    TOKU_MAPPED = 16, /* uncased form (NFD, drop Mn, lowercase) differs from the char itself */
};

#define TOKU_MAX_MAPPED 8 /* longest uncased expansion we store (NFD gives at most 4) */

/* One code point whose Hugging Face behaviour differs from the utf8proc rules. */
typedef struct toku_delta {
    uint32_t cp;
    uint8_t flags;   /* the TOKU_* flags Hugging Face gives it (TOKU_MAPPED ignored) */
    uint8_t n_mapped; /* length of its uncased form */
    uint32_t mapped[TOKU_MAX_MAPPED];
} toku_delta;

extern const toku_delta toku_deltas[];
extern const int toku_n_deltas;

/* The rules alone (utf8proc + Rust whitespace + BERT's CJK ranges), without the deltas:
 * fills *flags and the uncased form (mapped[0..return)). Returns the uncased length
 * (0 when the char disappears). Used to build the table and by the delta generator. */
int toku_rule_classify(uint32_t cp, uint8_t *flags, uint32_t mapped[TOKU_MAX_MAPPED]);

/* Flags of every code point 0..0x10FFFF (deltas applied). Built on first use, thread-safe,
 * never freed (process lifetime, about 1.1 MB). Returns NULL only when out of memory. */
const uint8_t *toku_flags_table(void);

/* Uncased form of a code point with TOKU_MAPPED set: points *out at its chars and returns
 * how many (0: the char vanishes, e.g. a combining accent). Call only after
 * toku_flags_table() succeeded. */
int toku_uncased(uint32_t cp, const uint32_t **out);

#endif
