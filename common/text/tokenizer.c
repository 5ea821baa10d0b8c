/* text/tokenizer.c — BERT WordPiece tokenization identical to Hugging Face BertTokenizerFast:
 * vocab loading, normalization + pre-tokenization in one pass, WordPiece, and the
 * single/pair encodings with overflow windows and QA labels (see tokenizer.h).
 *
 * Speed comes from doing everything in one pass over the bytes: ASCII goes through a
 * 128-entry class table (no utf8proc, no decoding), other chars through one byte lookup in
 * the text/unicode.c table, and WordPiece probes a hash table with prefix hashes computed once
 * per start position, never building "##"-prefixed strings.
 * Must never: allocate per call once the caller's buffers have grown, or print.
 */
#include "text/tokenizer.h"

#include <errno.h>
#include <stdint.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic_dir.h"
#include "base/limits.h"
#include "base/utf8.h"
#include "text/unicode.h"

/* ---------------------------------------------------------------------------------------
 * Vocabulary: two open-addressing hash tables keyed by 64-bit FNV-1a of the token bytes,
 * one for word-initial pieces and one for "##" continuations (stored without the "##").
 */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

typedef struct vocab_slot {
    uint64_t hash;
    uint32_t key_offset; /* into tok->key_pool */
    uint32_t key_len;
    int32_t id;          /* -1: empty slot */
} vocab_slot;

typedef struct vocab_table {
    vocab_slot *slots;
    uint64_t mask;
    uint32_t max_key_len; /* longest key in bytes: WordPiece never probes longer */
} vocab_table;

typedef struct special_token {
    const char *text;
    size_t len;
    int32_t id;
} special_token;

struct tok_tokenizer {
    int lowercase;
    int vocab_size;
    char *key_pool;        /* every vocab line, NUL-terminated, in file order */
    uint32_t *line_offset; /* id -> offset of its text in key_pool */
    vocab_table initial, continuation;
    int32_t cls_id, sep_id, pad_id, unk_id;
    special_token specials[5]; /* those of [PAD] [UNK] [CLS] [SEP] [MASK] in the vocab */
    int n_specials;
    uint64_t checksum;
    const uint8_t *flags; /* text/unicode.c's table */
};

static uint64_t fnv1a(const char *bytes, size_t len) {
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)bytes[i]) * FNV_PRIME;
    return h;
}

static int table_init(vocab_table *table, int n_keys) {
    uint64_t size = 16;
    while (size < (uint64_t)n_keys * 2) size <<= 1;
    table->slots = malloc(size * sizeof *table->slots);
    if (!table->slots) return -1;
    for (uint64_t i = 0; i < size; i++) table->slots[i].id = -1;
    table->mask = size - 1;
    table->max_key_len = 0;
    return 0;
}

/* Insert or overwrite (a later duplicate line wins, as in Hugging Face's vocab reader). */
static void table_put(vocab_table *table, const char *pool, uint32_t key_offset,
                      uint32_t key_len, int32_t id) {
    uint64_t hash = fnv1a(pool + key_offset, key_len);
    uint64_t i = hash & table->mask;
    while (table->slots[i].id >= 0) {
        vocab_slot *slot = &table->slots[i];
        if (slot->hash == hash && slot->key_len == key_len &&
            memcmp(pool + slot->key_offset, pool + key_offset, key_len) == 0) {
            slot->id = id;
            return;
        }
        i = (i + 1) & table->mask;
    }
    table->slots[i] = (vocab_slot){hash, key_offset, key_len, id};
    if (key_len > table->max_key_len) table->max_key_len = key_len;
}

static inline int32_t table_get(const vocab_table *table, const char *pool, uint64_t hash,
                                const char *key, uint32_t key_len) {
    uint64_t i = hash & table->mask;
    for (;;) {
        const vocab_slot *slot = &table->slots[i];
        if (slot->id < 0) return -1;
        if (slot->hash == hash && slot->key_len == key_len &&
            memcmp(pool + slot->key_offset, key, key_len) == 0)
            return slot->id;
        i = (i + 1) & table->mask;
    }
}

static int32_t vocab_find(const tok_tokenizer *tok, const char *text) {
    size_t len = strlen(text);
    return table_get(&tok->initial, tok->key_pool, fnv1a(text, len), text, (uint32_t)len);
}

static int read_whole_file(const char *path, char **data, size_t *size, bp_err *err) {
    FILE *file = fopen(path, "rb");
    if (!file) return bp_err_set(err, "cannot open vocab: %s (%s)", strerror(errno), path);
    if (bp_check_file_size(path, BP_LIMIT_VOCAB_BYTES, "the vocabulary", err) != 0) {
        fclose(file);
        return -1;
    }
    size_t capacity = 1 << 16, used = 0;
    char *buffer = malloc(capacity);
    if (!buffer) {
        fclose(file);
        return bp_err_set(err, "out of memory reading vocab (%s)", path);
    }
    for (;;) {
        if (used == capacity) {
            char *grown = realloc(buffer, capacity * 2);
            if (!grown) {
                free(buffer);
                fclose(file);
                return bp_err_set(err, "out of memory reading vocab (%s)", path);
            }
            buffer = grown;
            capacity *= 2;
        }
        size_t got = fread(buffer + used, 1, capacity - used, file);
        used += got;
        if (got == 0) break;
        /* The file may grow while it is read (or be a pipe): the limit holds for what arrives. */
        if (bp_check_limit(used, BP_LIMIT_VOCAB_BYTES, "bytes", "the vocabulary", path, err) != 0) {
            free(buffer);
            fclose(file);
            return -1;
        }
    }
    int failed = ferror(file);
    fclose(file);
    if (failed) {
        free(buffer);
        return bp_err_set(err, "read error on vocab (%s)", path);
    }
    *data = buffer;
    *size = used;
    return 0;
}

/* Rust's str::trim_end trims Unicode whitespace; vocab lines only ever end in ASCII
 * whitespace or U+0085/U+00A0/U+3000-like chars, so decode backwards over any of them. */
static size_t trimmed_length(const char *line, size_t len, const uint8_t *flags) {
    while (len > 0) {
        size_t start = len - 1;
        while (start > 0 && ((uint8_t)line[start] & 0xC0) == 0x80 && len - start < 4) start--;
        uint32_t cp = (uint8_t)line[start];
        size_t n = len - start;
        if (n == 2) cp = ((cp & 0x1Fu) << 6) | ((uint8_t)line[start + 1] & 0x3Fu);
        else if (n == 3)
            cp = ((cp & 0x0Fu) << 12) | (((uint8_t)line[start + 1] & 0x3Fu) << 6) |
                 ((uint8_t)line[start + 2] & 0x3Fu);
        else if (n == 4)
            cp = ((cp & 0x07u) << 18) | (((uint8_t)line[start + 1] & 0x3Fu) << 12) |
                 (((uint8_t)line[start + 2] & 0x3Fu) << 6) | ((uint8_t)line[start + 3] & 0x3Fu);
        if (cp >= 0x110000 || !(flags[cp] & TOKU_SPACE)) break;
        len = start;
    }
    return len;
}

tok_tokenizer *tok_load(const char *vocab_path, int lowercase, bp_err *err) {
    const uint8_t *flags = toku_flags_table();
    if (!flags) {
        bp_err_set(err, "out of memory building the Unicode table (%s)", vocab_path);
        return NULL;
    }
    char *data = NULL;
    size_t size = 0;
    if (read_whole_file(vocab_path, &data, &size, err) < 0) return NULL;
    tok_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        free(data);
        bp_err_set(err, "out of memory loading vocab (%s)", vocab_path);
        return NULL;
    }
    tok->lowercase = lowercase ? 1 : 0;
    tok->flags = flags;
    tok->checksum = fnv1a(data, size);

    /* Lines: split on '\n' (a final line without newline counts; an empty file has none),
     * and drop a '\r' before it, as Rust's BufRead::lines does. */
    int n_lines = 0;
    for (size_t i = 0; i < size; i++)
        if (data[i] == '\n') n_lines++;
    if (size > 0 && data[size - 1] != '\n') n_lines++;
    tok->key_pool = malloc(size + 1);
    tok->line_offset = malloc(((size_t)n_lines + 1) * sizeof *tok->line_offset);
    if (!tok->key_pool || !tok->line_offset || table_init(&tok->initial, n_lines) < 0 ||
        table_init(&tok->continuation, n_lines) < 0) {
        bp_err_set(err, "out of memory loading vocab (%s)", vocab_path);
        goto fail;
    }
    size_t pool_used = 0, line_start = 0;
    for (int id = 0; id < n_lines; id++) {
        size_t line_end = line_start;
        while (line_end < size && data[line_end] != '\n') line_end++;
        size_t next = line_end + 1;
        if (line_end > line_start && data[line_end - 1] == '\r') line_end--;
        /* Hugging Face reads vocab.txt as UTF-8 text and fails on a bad byte; so do we. */
        int64_t bad = bp_utf8_invalid_at(data + line_start, line_end - line_start);
        if (bad >= 0 || memchr(data + line_start, '\0', line_end - line_start)) {
            bp_err_set(err, "vocab token %s (%s:%d)", bad >= 0 ? "is not valid UTF-8" : "holds a NUL byte", vocab_path,
                       id + 1);
            goto fail;
        }
        size_t len = trimmed_length(data + line_start, line_end - line_start, flags);
        memcpy(tok->key_pool + pool_used, data + line_start, len);
        tok->key_pool[pool_used + len] = 0;
        tok->line_offset[id] = (uint32_t)pool_used;
        const char *key = tok->key_pool + pool_used;
        if (len >= 2 && key[0] == '#' && key[1] == '#')
            table_put(&tok->continuation, tok->key_pool, (uint32_t)pool_used + 2,
                      (uint32_t)len - 2, id);
        table_put(&tok->initial, tok->key_pool, (uint32_t)pool_used, (uint32_t)len, id);
        pool_used += len + 1;
        line_start = next;
    }
    tok->vocab_size = n_lines;
    free(data);
    data = NULL;

    static const char *const required[] = {"[CLS]", "[SEP]", "[UNK]", "[PAD]"};
    int32_t *required_ids[] = {&tok->cls_id, &tok->sep_id, &tok->unk_id, &tok->pad_id};
    for (int i = 0; i < 4; i++) {
        *required_ids[i] = vocab_find(tok, required[i]);
        if (*required_ids[i] < 0) {
            bp_err_set(err, "vocab lacks the special token %s (%s)", required[i], vocab_path);
            goto fail;
        }
    }
    static const char *const specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < 5; i++) {
        int32_t id = vocab_find(tok, specials[i]);
        if (id < 0) continue;
        tok->specials[tok->n_specials++] = (special_token){specials[i], strlen(specials[i]), id};
    }
    return tok;
fail:
    free(data);
    tok_free(tok);
    return NULL;
}

void tok_free(tok_tokenizer *tok) {
    if (!tok) return;
    free(tok->key_pool);
    free(tok->line_offset);
    free(tok->initial.slots);
    free(tok->continuation.slots);
    free(tok);
}

/* Look a boolean up in one JSON file. Returns 1 found (value in *out), 0 absent, -1 error.
 * When the file parsed, *root_out holds it (the caller json_decrefs it), else NULL. */
static int json_bool_field(const char *path, const char *key, int *out, int *file_exists,
                           json_t **root_out, bp_err *err) {
    FILE *probe = fopen(path, "rb");
    *file_exists = probe != NULL;
    *root_out = NULL;
    if (!probe) return 0;
    fclose(probe);
    if (bp_check_file_size(path, BP_LIMIT_JSON_FILE_BYTES, "the tokenizer settings file", err) != 0) return -1;
    json_error_t jerr;
    /* as reals: transformers writes an unbounded model_max_length as int(1e30), past int64 */
    json_t *root = json_load_file(path, JSON_DECODE_INT_AS_REAL, &jerr);
    if (!root) return bp_err_set(err, "invalid JSON: %s (%s line %d)", jerr.text, path, jerr.line);
    if (!json_is_object(root)) {
        json_decref(root);
        return bp_err_set(err, "expected a JSON object (%s)", path);
    }
    json_t *value = json_object_get(root, key);
    if (value && !json_is_null(value) && !json_is_boolean(value)) {
        json_decref(root);
        return bp_err_set(err, "%s must be true or false (%s)", key, path);
    }
    *root_out = root; /* the caller reads more settings from it, then frees it */
    if (!value || json_is_null(value)) return 0;
    *out = json_is_true(value);
    return 1;
}

int tok_config_lowercase(const char *checkpoint_dir, int *lowercase, bp_err *err) {
    char path[4096];
    int exists, value = 1, found;
    json_t *root;

    if (snprintf(path, sizeof path, "%s/tokenizer_config.json", checkpoint_dir) >= (int)sizeof path)
        return bp_err_set(err, "checkpoint path too long (%.200s...)", checkpoint_dir);
    found = json_bool_field(path, "do_lower_case", &value, &exists, &root, err);
    if (found < 0) return -1;
    if (root) {
        /* Settings we do not implement must fail loudly rather than tokenize differently. */
        int strip = -1, chinese = 1;
        json_t *strip_value = json_object_get(root, "strip_accents");
        json_t *chinese_value = json_object_get(root, "tokenize_chinese_chars");
        if (strip_value && json_is_boolean(strip_value)) strip = json_is_true(strip_value);
        if (chinese_value && json_is_boolean(chinese_value)) chinese = json_is_true(chinese_value);
        json_decref(root);
        int effective_lowercase = found ? value : 1;
        if (strip >= 0 && strip != effective_lowercase)
            return bp_err_set(err, "strip_accents different from do_lower_case is not supported (%s)", path);
        if (!chinese)
            return bp_err_set(err, "tokenize_chinese_chars=false is not supported (%s)", path);
    }
    if (found) {
        *lowercase = value;
        return 1;
    }
    if (snprintf(path, sizeof path, "%s/config.json", checkpoint_dir) >= (int)sizeof path)
        return bp_err_set(err, "checkpoint path too long (%.200s...)", checkpoint_dir);
    found = json_bool_field(path, "do_lower_case", &value, &exists, &root, err);
    if (root) json_decref(root);
    if (found < 0) return -1;
    if (found) *lowercase = value;
    return found;
}

int tok_config_max_length(const char *checkpoint_dir, long *max_length, bp_err *err) {
    char path[4096];
    int exists, unused;
    json_t *root;
    if (snprintf(path, sizeof path, "%s/tokenizer_config.json", checkpoint_dir) >= (int)sizeof path)
        return bp_err_set(err, "checkpoint path too long (%.200s...)", checkpoint_dir);
    if (json_bool_field(path, "do_lower_case", &unused, &exists, &root, err) < 0) return -1;
    if (!root) return 0;
    json_t *value = json_object_get(root, "model_max_length");
    int found = json_is_number(value) && json_number_value(value) >= 2 && json_number_value(value) <= TOK_MAX_MODEL_LENGTH;
    if (found) *max_length = (long)json_number_value(value);
    else if (value && !json_is_null(value) && !json_is_number(value)) {
        json_decref(root);
        return bp_err_set(err, "model_max_length is not a number (%s)", path);
    }
    json_decref(root);
    return found;
}

tok_tokenizer *tok_load_checkpoint(const char *checkpoint_dir, int lowercase, bp_err *err) {
    if (ad_recover(checkpoint_dir, err) != 0) return NULL; /* a save stopped mid-swap */
    if (lowercase < 0) {
        lowercase = 1; /* BertTokenizerFast's default do_lower_case */
        if (tok_config_lowercase(checkpoint_dir, &lowercase, err) < 0) return NULL;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/vocab.txt", checkpoint_dir) >= (int)sizeof path) {
        bp_err_set(err, "checkpoint path too long (%.200s...)", checkpoint_dir);
        return NULL;
    }
    return tok_load(path, lowercase, err);
}

int tok_is_lowercase(const tok_tokenizer *tok) { return tok->lowercase; }
int tok_vocab_size(const tok_tokenizer *tok) { return tok->vocab_size; }
int32_t tok_cls_id(const tok_tokenizer *tok) { return tok->cls_id; }
int32_t tok_sep_id(const tok_tokenizer *tok) { return tok->sep_id; }
int32_t tok_pad_id(const tok_tokenizer *tok) { return tok->pad_id; }
int32_t tok_unk_id(const tok_tokenizer *tok) { return tok->unk_id; }
uint64_t tok_vocab_checksum(const tok_tokenizer *tok) { return tok->checksum; }

const char *tok_id_to_token(const tok_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->vocab_size) return NULL;
    return tok->key_pool + tok->line_offset[id];
}

/* ---------------------------------------------------------------------------------------
 * Tokenization: one pass that normalizes, splits words and runs WordPiece on each word.
 */

enum { ASCII_WORD = 0, ASCII_SPACE, ASCII_PUNCT, ASCII_DROP };

/* Class of each ASCII byte: controls other than \t \n \r vanish, those three and ' ' split,
 * BERT's ASCII punctuation ranges stand alone, the rest (letters, digits) build words. */
#define W ASCII_WORD
#define S ASCII_SPACE
#define P ASCII_PUNCT
#define D ASCII_DROP
static const uint8_t ascii_class[128] = {
    D, D, D, D, D, D, D, D, D, S, S, D, D, S, D, D, /* 0x00: only \t \n \r split */
    D, D, D, D, D, D, D, D, D, D, D, D, D, D, D, D, /* 0x10 */
    S, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, /* ' ' !"#$%&'()*+,-./ */
    W, W, W, W, W, W, W, W, W, W, P, P, P, P, P, P, /* 0-9 :;<=>? */
    P, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, /* @ A-O */
    W, W, W, W, W, W, W, W, W, W, W, P, P, P, P, P, /* P-Z [\]^_ */
    P, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, /* ` a-o */
    W, W, W, W, W, W, W, W, W, W, W, P, P, P, P, D, /* p-z {|}~ DEL */
};
#undef W
#undef S
#undef P
#undef D

/* The word being built: normalized UTF-8 bytes, where each char starts, and the code point
 * index in the original text each char came from (its offset). */
#define WORD_MAX_BYTES (TOK_MAX_WORD_CHARS * 4 * 2 + 16)
typedef struct word_buffer {
    char bytes[WORD_MAX_BYTES];
    int char_start[TOK_MAX_WORD_CHARS + 2]; /* char_start[n_chars] = end */
    int32_t origin[TOK_MAX_WORD_CHARS + 1];
    int n_chars;
    int n_bytes;
    int too_long;          /* more than TOK_MAX_WORD_CHARS chars: becomes [UNK] */
    int32_t first_origin, last_origin;
} word_buffer;

static int pieces_reserve(tok_pieces *pieces, int needed) {
    if (needed <= pieces->capacity) return 0;
    int capacity = pieces->capacity ? pieces->capacity : 256;
    while (capacity < needed) {
        if (capacity > INT32_MAX / 2) return -1;
        capacity *= 2;
    }
    int32_t *ids = realloc(pieces->ids, (size_t)capacity * sizeof *ids);
    if (!ids) return -1;
    pieces->ids = ids;
    int32_t *starts = realloc(pieces->starts, (size_t)capacity * sizeof *starts);
    if (!starts) return -1;
    pieces->starts = starts;
    int32_t *ends = realloc(pieces->ends, (size_t)capacity * sizeof *ends);
    if (!ends) return -1;
    pieces->ends = ends;
    pieces->capacity = capacity;
    return 0;
}

void tok_pieces_free(tok_pieces *pieces) {
    free(pieces->ids);
    free(pieces->starts);
    free(pieces->ends);
    memset(pieces, 0, sizeof *pieces);
}

static inline int push_piece(tok_pieces *pieces, int32_t id, int32_t start, int32_t end) {
    if (pieces->count == pieces->capacity && pieces_reserve(pieces, pieces->count + 1) < 0)
        return -1;
    pieces->ids[pieces->count] = id;
    pieces->starts[pieces->count] = start;
    pieces->ends[pieces->count] = end;
    pieces->count++;
    return 0;
}

static inline int utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Append one normalized char that came from original char `origin`. */
static inline void word_append(word_buffer *word, uint32_t cp, int32_t origin) {
    if (word->n_chars == 0 && !word->too_long) word->first_origin = origin;
    word->last_origin = origin;
    if (word->too_long) return;
    if (word->n_chars == TOK_MAX_WORD_CHARS) { /* one more than allowed: the word is [UNK] */
        word->too_long = 1;
        return;
    }
    word->char_start[word->n_chars] = word->n_bytes;
    word->origin[word->n_chars] = origin;
    word->n_bytes += utf8_encode(cp, word->bytes + word->n_bytes);
    word->n_chars++;
}

/* Append one ASCII byte: the common case, kept tiny. */
static inline void word_append_ascii(word_buffer *word, char byte, int32_t origin) {
    if (word->n_chars < TOK_MAX_WORD_CHARS && !word->too_long) {
        if (word->n_chars == 0) word->first_origin = origin;
        word->last_origin = origin;
        word->char_start[word->n_chars] = word->n_bytes;
        word->origin[word->n_chars] = origin;
        word->bytes[word->n_bytes++] = byte;
        word->n_chars++;
        return;
    }
    word_append(word, (uint8_t)byte, origin);
}

/* WordPiece on the finished word, then reset it. Greedy longest-match-first: at each start,
 * hash every prefix once (FNV-1a extends byte by byte), then probe from the longest down,
 * never past the longest key of the table. If some position matches nothing, the whole word
 * is one [UNK], as in BERT. Returns -1 only when out of memory. */
static int word_flush(const tok_tokenizer *tok, word_buffer *word, tok_pieces *pieces) {
    if (word->n_chars == 0 && !word->too_long) return 0;
    int32_t word_start = word->first_origin, word_end = word->last_origin + 1;
    int n_chars = word->n_chars, too_long = word->too_long;
    word->char_start[n_chars] = word->n_bytes;
    word->n_chars = 0;
    word->n_bytes = 0;
    word->too_long = 0;
    if (too_long) return push_piece(pieces, tok->unk_id, word_start, word_end);

    const char *bytes = word->bytes;
    const int *char_start = word->char_start;
    int first_piece = pieces->count;
    uint64_t prefix_hash[TOK_MAX_WORD_CHARS + 1];
    int start = 0;
    while (start < n_chars) {
        const vocab_table *table = start == 0 ? &tok->initial : &tok->continuation;
        int start_byte = char_start[start];
        uint64_t hash = FNV_OFFSET;
        int end = start;
        while (end < n_chars && (uint32_t)(char_start[end + 1] - start_byte) <= table->max_key_len) {
            for (int b = char_start[end]; b < char_start[end + 1]; b++)
                hash = (hash ^ (uint8_t)bytes[b]) * FNV_PRIME;
            end++;
            prefix_hash[end] = hash;
        }
        int32_t id = -1;
        for (; end > start; end--) {
            id = table_get(table, tok->key_pool, prefix_hash[end], bytes + start_byte,
                           (uint32_t)(char_start[end] - start_byte));
            if (id >= 0) break;
        }
        if (id < 0) {
            pieces->count = first_piece;
            return push_piece(pieces, tok->unk_id, word_start, word_end);
        }
        if (push_piece(pieces, id, word->origin[start], word->origin[end - 1] + 1) < 0) return -1;
        start = end;
    }
    return 0;
}

/* Decode one UTF-8 char at s[0..avail). Returns its length, or -1 when invalid (truncated,
 * overlong, surrogate, beyond U+10FFFF, stray continuation byte). */
static inline int utf8_decode(const uint8_t *s, size_t avail, uint32_t *cp) {
    uint8_t b0 = s[0];
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (avail < 2 || (s[1] & 0xC0) != 0x80) return -1;
        *cp = ((uint32_t)(b0 & 0x1F) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return -1;
        uint32_t c = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3Fu);
        if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return -1;
        *cp = c;
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return -1;
        uint32_t c = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                     ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3Fu);
        if (c < 0x10000 || c > 0x10FFFF) return -1;
        *cp = c;
        return 4;
    }
    return -1;
}

/* A special token's text starting at s (Hugging Face matches them in the raw text before
 * any normalization). Returns its index in tok->specials or -1. */
static int match_special(const tok_tokenizer *tok, const uint8_t *s, size_t avail) {
    for (int i = 0; i < tok->n_specials; i++) {
        const special_token *special = &tok->specials[i];
        if (special->len <= avail && memcmp(s, special->text, special->len) == 0) return i;
    }
    return -1;
}

/* One normalized char (after uncasing) enters the pre-tokenizer: whitespace ends the word,
 * punctuation is a word of its own, anything else extends the word. */
static inline int add_normalized(const tok_tokenizer *tok, word_buffer *word, uint32_t cp,
                                 int32_t origin, tok_pieces *pieces) {
    uint8_t f = tok->flags[cp];
    if (f & TOKU_SPACE) return word_flush(tok, word, pieces);
    if (f & TOKU_PUNCT) {
        if (word_flush(tok, word, pieces) < 0) return -1;
        word_append(word, cp, origin);
        return word_flush(tok, word, pieces);
    }
    word_append(word, cp, origin);
    return 0;
}

int tok_tokenize(const tok_tokenizer *tok, const char *text, size_t len, tok_pieces *pieces,
                 bp_err *err) {
    pieces->count = 0;
    if (len > (size_t)INT32_MAX) /* offsets are int32 code point indexes */
        return bp_err_set(err, "text of %zu bytes is too long to tokenize", len), TOK_ERR_ARGUMENT;
    if (pieces_reserve(pieces, 256) < 0) goto nomem;
    word_buffer word;
    word.n_chars = 0;
    word.n_bytes = 0;
    word.too_long = 0;
    const uint8_t *s = (const uint8_t *)text;
    const int lowercase = tok->lowercase;
    size_t i = 0;
    int32_t char_index = 0;
    while (i < len) {
        uint8_t b = s[i];
        if (b < 0x80) {
            switch (ascii_class[b]) {
            case ASCII_WORD:
                word_append_ascii(&word, (char)(lowercase && b >= 'A' && b <= 'Z' ? b + 32 : b),
                                  char_index);
                break;
            case ASCII_SPACE:
                if (word_flush(tok, &word, pieces) < 0) goto nomem;
                break;
            case ASCII_PUNCT:
                if (word_flush(tok, &word, pieces) < 0) goto nomem;
                if (b == '[') {
                    int special = match_special(tok, s + i, len - i);
                    if (special >= 0) {
                        int32_t n = (int32_t)tok->specials[special].len; /* ASCII: bytes = chars */
                        if (push_piece(pieces, tok->specials[special].id, char_index, char_index + n) < 0)
                            goto nomem;
                        i += (size_t)n;
                        char_index += n;
                        continue;
                    }
                }
                word_append_ascii(&word, (char)b, char_index);
                if (word_flush(tok, &word, pieces) < 0) goto nomem;
                break;
            default: /* ASCII_DROP: removed without splitting the word */
                break;
            }
            i++;
            char_index++;
            continue;
        }
        uint32_t cp;
        int n = utf8_decode(s + i, len - i, &cp);
        if (n < 0) return bp_err_set(err, "invalid UTF-8 at byte %zu", i), TOK_ERR_UTF8;
        uint8_t f = tok->flags[cp];
        int failed = 0;
        if (f & TOKU_DROP) {
            /* removed by clean_text */
        } else if (f & TOKU_SPACE) {
            failed = word_flush(tok, &word, pieces);
        } else if (f & TOKU_CJK) {
            const uint32_t *mapped = &cp;
            int n_mapped = 1;
            if (lowercase && (f & TOKU_MAPPED)) n_mapped = toku_uncased(cp, &mapped);
            failed = word_flush(tok, &word, pieces);
            for (int k = 0; k < n_mapped && !failed; k++) word_append(&word, mapped[k], char_index);
            if (!failed) failed = word_flush(tok, &word, pieces);
        } else if (lowercase && (f & TOKU_MAPPED)) {
            const uint32_t *mapped;
            int n_mapped = toku_uncased(cp, &mapped);
            for (int k = 0; k < n_mapped && !failed; k++)
                failed = add_normalized(tok, &word, mapped[k], char_index, pieces);
        } else {
            failed = add_normalized(tok, &word, cp, char_index, pieces);
        }
        if (failed) goto nomem;
        i += (size_t)n;
        char_index++;
    }
    if (word_flush(tok, &word, pieces) < 0) goto nomem;
    return TOK_OK;
nomem:
    return bp_err_set(err, "out of memory tokenizing %zu bytes", len), TOK_ERR_NOMEM;
}

/* ---------------------------------------------------------------------------------------
 * Encodings: specials, truncation, overflow windows, padding, QA labels.
 */

void tok_encoding_init(tok_encoding *enc) { memset(enc, 0, sizeof *enc); }

void tok_encoding_free(tok_encoding *enc) {
    free(enc->lengths);
    free(enc->input_ids);
    free(enc->token_type_ids);
    free(enc->attention_mask);
    free(enc->offset_starts);
    free(enc->offset_ends);
    free(enc->sequence_ids);
    free(enc->start_positions);
    free(enc->end_positions);
    tok_pieces_free(&enc->first);
    tok_pieces_free(&enc->second);
    memset(enc, 0, sizeof *enc);
}

static int grow(void **array, size_t count, size_t element_size) {
    void *grown = realloc(*array, count * element_size);
    if (!grown) return -1;
    *array = grown;
    return 0;
}

static int encoding_reserve(tok_encoding *enc, int n_windows, int row_length) {
    size_t tokens = (size_t)n_windows * (size_t)row_length;
    if (tokens > enc->capacity_tokens) {
        size_t capacity = enc->capacity_tokens ? enc->capacity_tokens : 512;
        while (capacity < tokens) capacity *= 2;
        if (grow((void **)&enc->input_ids, capacity, sizeof(int32_t)) < 0 ||
            grow((void **)&enc->token_type_ids, capacity, sizeof(int32_t)) < 0 ||
            grow((void **)&enc->attention_mask, capacity, sizeof(int32_t)) < 0 ||
            grow((void **)&enc->offset_starts, capacity, sizeof(int32_t)) < 0 ||
            grow((void **)&enc->offset_ends, capacity, sizeof(int32_t)) < 0 ||
            grow((void **)&enc->sequence_ids, capacity, sizeof(int8_t)) < 0)
            return -1;
        enc->capacity_tokens = capacity;
    }
    if (n_windows > enc->capacity_windows) {
        int capacity = enc->capacity_windows ? enc->capacity_windows : 8;
        while (capacity < n_windows) capacity *= 2;
        if (grow((void **)&enc->lengths, (size_t)capacity, sizeof(int)) < 0 ||
            grow((void **)&enc->start_positions, (size_t)capacity, sizeof(int32_t)) < 0 ||
            grow((void **)&enc->end_positions, (size_t)capacity, sizeof(int32_t)) < 0)
            return -1;
        enc->capacity_windows = capacity;
    }
    return 0;
}

/* Writes into one row, token by token. */
typedef struct row_writer {
    tok_encoding *enc;
    size_t base;
    int n;
} row_writer;

static inline void row_put(row_writer *row, int32_t id, int32_t type, int32_t start, int32_t end,
                           int8_t sequence) {
    size_t at = row->base + (size_t)row->n++;
    row->enc->input_ids[at] = id;
    row->enc->token_type_ids[at] = type;
    row->enc->attention_mask[at] = 1;
    row->enc->offset_starts[at] = start;
    row->enc->offset_ends[at] = end;
    row->enc->sequence_ids[at] = sequence;
}

static void row_put_pieces(row_writer *row, const tok_pieces *pieces, int from, int to,
                           int32_t type, int8_t sequence) {
    for (int i = from; i < to; i++)
        row_put(row, pieces->ids[i], type, pieces->starts[i], pieces->ends[i], sequence);
}

/* Pad the rest of the row and record its length. */
static void row_finish(const tok_tokenizer *tok, row_writer *row, int window, int pad) {
    tok_encoding *enc = row->enc;
    enc->lengths[window] = pad ? enc->row_length : row->n;
    for (int i = row->n; i < enc->row_length; i++) {
        size_t at = row->base + (size_t)i;
        enc->input_ids[at] = tok->pad_id;
        enc->token_type_ids[at] = 0;
        enc->attention_mask[at] = 0;
        enc->offset_starts[at] = 0;
        enc->offset_ends[at] = 0;
        enc->sequence_ids[at] = -1;
    }
    enc->start_positions[window] = -1;
    enc->end_positions[window] = -1;
}

int tok_encode_single(const tok_tokenizer *tok, const char *text, size_t len, int max_length,
                      int pad, tok_encoding *enc, bp_err *err) {
    if (!tok || !enc || (!text && len) || max_length < 2)
        return bp_err_set(err, "bad arguments to tok_encode_single (max_length %d)", max_length),
               TOK_ERR_ARGUMENT;
    int status = tok_tokenize(tok, text, len, &enc->first, err);
    if (status != TOK_OK) return status;
    if (encoding_reserve(enc, 1, max_length) < 0)
        return bp_err_set(err, "out of memory encoding (max_length %d)", max_length), TOK_ERR_NOMEM;
    enc->row_length = max_length;
    enc->n_windows = 1;
    int keep = enc->first.count < max_length - 2 ? enc->first.count : max_length - 2;
    row_writer row = {enc, 0, 0};
    row_put(&row, tok->cls_id, 0, 0, 0, -1);
    row_put_pieces(&row, &enc->first, 0, keep, 0, 0);
    row_put(&row, tok->sep_id, 0, 0, 0, -1);
    row_finish(tok, &row, 0, pad);
    return TOK_OK;
}

/* Code point count of a UTF-8 string already known to be valid enough to count. */
static int64_t count_code_points(const char *s, size_t len) {
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((uint8_t)s[i] & 0xC0) != 0x80;
    return n;
}

/* Does context[start_char : start_char + len(answer)] (code points) equal the answer? */
static int answer_slices(const char *context, size_t context_len, const tok_answer *answer,
                         int64_t *end_char, bp_err *err) {
    if (answer->text_len == 0)
        return bp_err_set(err, "empty answer text at answer_start %lld", (long long)answer->start_char);
    if (answer->start_char < 0)
        return bp_err_set(err, "negative answer_start %lld", (long long)answer->start_char);
    size_t byte = 0;
    int64_t cp = 0;
    while (byte < context_len && cp < answer->start_char) {
        byte++;
        while (byte < context_len && ((uint8_t)context[byte] & 0xC0) == 0x80) byte++;
        cp++;
    }
    if (cp < answer->start_char)
        return bp_err_set(err, "answer_start %lld is past the context's end (%lld code points)",
                          (long long)answer->start_char, (long long)cp);
    if (byte + answer->text_len > context_len ||
        memcmp(context + byte, answer->text, answer->text_len) != 0 ||
        (byte + answer->text_len < context_len &&
         ((uint8_t)context[byte + answer->text_len] & 0xC0) == 0x80))
        return bp_err_set(err, "context at answer_start %lld does not read \"%.*s\"",
                          (long long)answer->start_char,
                          answer->text_len > 60 ? 60 : (int)answer->text_len, answer->text);
    *end_char = answer->start_char + count_code_points(answer->text, answer->text_len);
    return 0;
}

/* The start/end labels of one window, step for step as Hugging Face run_qa's
 * prepare_train_features computes them, including that the start scan may run past the
 * context into [SEP]/padding (their offsets are (0, 0)) when the answer starts in the
 * window's last context token. */
static void label_window(tok_encoding *enc, int window, int64_t start_char, int64_t end_char) {
    size_t base = (size_t)window * (size_t)enc->row_length;
    const int8_t *sequence = enc->sequence_ids + base;
    const int32_t *starts = enc->offset_starts + base, *ends = enc->offset_ends + base;
    int length = enc->lengths[window];
    int cls_index = 0;
    int first = 0, last = length - 1;
    while (first < length && sequence[first] != 1) first++;
    while (last >= 0 && sequence[last] != 1) last--;
    if (first >= length || !(starts[first] <= start_char && ends[last] >= end_char)) {
        enc->start_positions[window] = cls_index;
        enc->end_positions[window] = cls_index;
        return;
    }
    while (first < length && starts[first] <= start_char) first++;
    enc->start_positions[window] = first - 1;
    while (last >= 0 && ends[last] >= end_char) last--;
    enc->end_positions[window] = last + 1;
}

int tok_encode_pair(const tok_tokenizer *tok, const char *question, size_t question_len,
                    const char *context, size_t context_len, int max_length, int stride,
                    int pad, const tok_answer *answer, tok_encoding *enc, bp_err *err) {
    if (!tok || !enc || (!question && question_len) || (!context && context_len) ||
        max_length < 4 || stride < 0)
        return bp_err_set(err, "bad arguments to tok_encode_pair (max_length %d, stride %d)",
                          max_length, stride),
               TOK_ERR_ARGUMENT;
    bp_err inner;
    int status = tok_tokenize(tok, question, question_len, &enc->first, &inner);
    if (status != TOK_OK) return bp_err_set(err, "%s (question)", inner.msg), status;
    status = tok_tokenize(tok, context, context_len, &enc->second, &inner);
    if (status != TOK_OK) return bp_err_set(err, "%s (context)", inner.msg), status;
    int n_question = enc->first.count, n_context = enc->second.count;

    /* Window layout, as tokenizers' Encoding::truncate with stride. */
    int room = n_context, step = n_context > 0 ? n_context : 1, n_windows = 1;
    if (n_question + n_context + 3 > max_length) {
        if (n_question + 3 >= max_length)
            return bp_err_set(err, "question alone is %d tokens: no room for context in max_length %d",
                              n_question, max_length),
                   TOK_ERR_QUESTION_TOO_LONG;
        room = max_length - 3 - n_question;
        if (stride >= room)
            return bp_err_set(err, "stride %d must be less than the %d context tokens that fit "
                                   "next to a %d-token question in max_length %d",
                              stride, room, n_question, max_length),
                   TOK_ERR_STRIDE;
        step = room - stride;
        n_windows = 1;
        for (int start = 0; start + room < n_context; start += step) n_windows++;
    }
    if (encoding_reserve(enc, n_windows, max_length) < 0)
        return bp_err_set(err, "out of memory encoding %d windows", n_windows), TOK_ERR_NOMEM;
    enc->row_length = max_length;
    enc->n_windows = n_windows;
    for (int w = 0; w < n_windows; w++) {
        int from = w * step;
        int to = from + room < n_context ? from + room : n_context;
        row_writer row = {enc, (size_t)w * (size_t)max_length, 0};
        row_put(&row, tok->cls_id, 0, 0, 0, -1);
        row_put_pieces(&row, &enc->first, 0, n_question, 0, 0);
        row_put(&row, tok->sep_id, 0, 0, 0, -1);
        row_put_pieces(&row, &enc->second, from, to, 1, 1);
        row_put(&row, tok->sep_id, 1, 0, 0, -1);
        row_finish(tok, &row, w, pad);
    }
    if (!answer) return TOK_OK;
    int64_t end_char = 0;
    if (answer_slices(context, context_len, answer, &end_char, err) < 0) return TOK_ANSWER_MISMATCH;
    for (int w = 0; w < n_windows; w++) label_window(enc, w, answer->start_char, end_char);
    return TOK_OK;
}
