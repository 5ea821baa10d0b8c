/* text/unicode.c — one read-only table of BERT character classes for all of Unicode, plus
 * the uncased forms of the few thousand chars that change when lowercased/accent-stripped.
 *
 * Built once per process (pthread_once) from utf8proc and the Hugging Face deltas, so the
 * tokenizer's inner loop is a byte lookup and never calls utf8proc.
 * Must never: be written after construction: tokenizers on several threads read it without locks.
 */
#include "text/unicode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define TOKU_N_CODEPOINTS 0x110000

/* Rust's char::is_whitespace (the White_Space property), which Hugging Face uses; this list
 * has been stable since Unicode 6.3. */
static int is_rust_whitespace(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* The CJK blocks BERT pads with spaces (the original BERT's _is_chinese_char ranges). */
static int is_bert_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static int is_ascii_punct(uint32_t cp) {
    return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
           (cp >= 123 && cp <= 126);
}

int toku_rule_classify(uint32_t cp, uint8_t *flags, uint32_t mapped[TOKU_MAX_MAPPED]) {
    uint8_t f = 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) { /* never decoded from valid UTF-8 */
        *flags = TOKU_DROP;
        return 0;
    }
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
    int other = cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
                cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CS;
    /* Hugging Face keeps unassigned (Cn) chars: its "other" table has no Cn entries. */
    if (cp == 0 || cp == 0xFFFD || (other && cp != '\t' && cp != '\n' && cp != '\r'))
        f |= TOKU_DROP;
    if (is_rust_whitespace(cp)) f |= TOKU_SPACE;
    if (is_ascii_punct(cp) || (cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO))
        f |= TOKU_PUNCT;
    if (is_bert_cjk(cp)) f |= TOKU_CJK;

    /* Uncased: NFD, drop non-spacing marks, then lowercase (Hugging Face's order). */
    utf8proc_int32_t decomposed[TOKU_MAX_MAPPED];
    int last_boundclass = 0;
    utf8proc_ssize_t n_dec = utf8proc_decompose_char((utf8proc_int32_t)cp, decomposed,
                                                     TOKU_MAX_MAPPED, UTF8PROC_DECOMPOSE,
                                                     &last_boundclass);
    int n = 0;
    if (n_dec < 0 || n_dec > TOKU_MAX_MAPPED) { /* cannot happen for NFD; keep the char */
        decomposed[0] = (utf8proc_int32_t)cp;
        n_dec = 1;
    }
    for (utf8proc_ssize_t i = 0; i < n_dec; i++) {
        utf8proc_int32_t c = decomposed[i];
        if (utf8proc_category(c) == UTF8PROC_CATEGORY_MN) continue;
        if (c == 0x130) { /* the one char whose full lowercase is two chars */
            if (n + 2 > TOKU_MAX_MAPPED) break;
            mapped[n++] = 0x69;
            mapped[n++] = 0x307;
            continue;
        }
        if (n + 1 > TOKU_MAX_MAPPED) break;
        mapped[n++] = (uint32_t)utf8proc_tolower(c);
    }
    if (!(n == 1 && mapped[0] == cp)) f |= TOKU_MAPPED;
    *flags = f;
    return n;
}

typedef struct toku_map_entry {
    uint32_t cp;
    uint32_t pool_offset;
    uint32_t length;
} toku_map_entry;

static uint8_t *flags_table;
static toku_map_entry *map_entries;
static int n_map_entries;
static uint32_t *map_pool;
static pthread_once_t build_once = PTHREAD_ONCE_INIT;

static const toku_delta *find_delta(uint32_t cp) {
    int lo = 0, hi = toku_n_deltas - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (toku_deltas[mid].cp == cp) return &toku_deltas[mid];
        if (toku_deltas[mid].cp < cp) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

/* Classify one code point with the Hugging Face deltas applied. */
static int classify(uint32_t cp, uint8_t *flags, uint32_t mapped[TOKU_MAX_MAPPED]) {
    const toku_delta *delta = find_delta(cp);
    if (!delta) return toku_rule_classify(cp, flags, mapped);
    uint8_t f = delta->flags & (uint8_t)~TOKU_MAPPED;
    memcpy(mapped, delta->mapped, delta->n_mapped * sizeof mapped[0]);
    if (!(delta->n_mapped == 1 && delta->mapped[0] == cp)) f |= TOKU_MAPPED;
    *flags = f;
    return delta->n_mapped;
}

static void build_tables(void) {
    uint8_t *table = malloc(TOKU_N_CODEPOINTS);
    if (!table) return;
    /* Two passes: count mapped chars and pool size, then fill. */
    int n_entries = 0;
    size_t pool_size = 0;
    uint32_t mapped[TOKU_MAX_MAPPED];
    for (uint32_t cp = 0; cp < TOKU_N_CODEPOINTS; cp++) {
        int n = classify(cp, &table[cp], mapped);
        if (table[cp] & TOKU_MAPPED) {
            n_entries++;
            pool_size += (size_t)n;
        }
    }
    toku_map_entry *entries = malloc((size_t)n_entries * sizeof *entries + 1);
    uint32_t *pool = malloc(pool_size * sizeof *pool + 1);
    if (!entries || !pool) {
        free(table);
        free(entries);
        free(pool);
        return;
    }
    int entry_index = 0;
    size_t pool_used = 0;
    for (uint32_t cp = 0; cp < TOKU_N_CODEPOINTS; cp++) {
        if (!(table[cp] & TOKU_MAPPED)) continue;
        uint8_t unused_flags;
        int n = classify(cp, &unused_flags, mapped);
        entries[entry_index].cp = cp;
        entries[entry_index].pool_offset = (uint32_t)pool_used;
        entries[entry_index].length = (uint32_t)n;
        memcpy(pool + pool_used, mapped, (size_t)n * sizeof *pool);
        pool_used += (size_t)n;
        entry_index++;
    }
    map_entries = entries;
    map_pool = pool;
    n_map_entries = n_entries;
    flags_table = table;
}

const uint8_t *toku_flags_table(void) {
    pthread_once(&build_once, build_tables);
    return flags_table;
}

int toku_uncased(uint32_t cp, const uint32_t **out) {
    int lo = 0, hi = n_map_entries - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (map_entries[mid].cp == cp) {
            *out = map_pool + map_entries[mid].pool_offset;
            return (int)map_entries[mid].length;
        }
        if (map_entries[mid].cp < cp) lo = mid + 1;
        else hi = mid - 1;
    }
    /* Not mapped: the char is its own uncased form. Callers check TOKU_MAPPED first. */
    *out = NULL;
    return -1;
}
