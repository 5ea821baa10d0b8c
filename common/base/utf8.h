/* base/utf8.h — the one UTF-8 validator: every reader of text refuses bytes that are not UTF-8.
 *
 * Hugging Face decodes every text file as UTF-8 and fails on a bad byte; the tokenizer
 * counts code points, and SQuAD offsets are code points, so a byte that is not UTF-8 can
 * only be an error, reported with its place. Valid means what Python's decoder accepts:
 * no overlong forms, no surrogates (U+D800..U+DFFF), nothing past U+10FFFF, no cut
 * sequence.
 *
 * Must never: print, exit or allocate.
 */
#ifndef BP_UTF8_H
#define BP_UTF8_H
#include <stddef.h>
#include <stdint.h>

/* A decoder fed one byte at a time, for text that arrives in chunks. Zero-initialise. */
typedef struct bp_utf8_state {
    uint32_t cp;
    int need; /* continuation bytes still expected */
    int len;  /* length of the sequence being decoded */
} bp_utf8_state;

/* Feed byte c. Returns 0 while the text so far is valid (possibly inside a sequence), -1
 * when c makes it invalid; the state is then reset to a sequence boundary. */
static inline int bp_utf8_step(bp_utf8_state *s, unsigned char c) {
    if (s->need == 0) {
        if (c < 0x80) return 0;
        if ((c & 0xE0) == 0xC0) s->need = 1, s->cp = c & 0x1Fu, s->len = 2;
        else if ((c & 0xF0) == 0xE0) s->need = 2, s->cp = c & 0x0Fu, s->len = 3;
        else if ((c & 0xF8) == 0xF0) s->need = 3, s->cp = c & 0x07u, s->len = 4;
        else return -1;
        return 0;
    }
    if ((c & 0xC0) != 0x80) {
        s->need = 0;
        return -1;
    }
    s->cp = (s->cp << 6) | (c & 0x3Fu);
    if (--s->need) return 0;
    uint32_t cp = s->cp;
    if ((s->len == 2 && cp < 0x80) || (s->len == 3 && cp < 0x800) || (s->len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return -1;
    return 0;
}

/* 1 when the text fed so far ends inside a sequence (a cut character). */
static inline int bp_utf8_incomplete(const bp_utf8_state *s) { return s->need != 0; }

/* Offset of the first byte of s[0..len) that is not part of valid UTF-8 (the start of a
 * bad or cut sequence), or -1 when all of it is valid. Can't fail. */
int64_t bp_utf8_invalid_at(const char *s, size_t len);

#endif
