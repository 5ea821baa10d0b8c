/* data/squad.c — SQuAD v1.1 and v2.0 JSON, plain, .gz or .zip (see datasets.h).
 *
 * Memory stays bounded by the largest article, not the file: a byte scanner walks the
 * top-level object as it streams out of libarchive, and each element of its "data" array
 * (one article) is cut out and parsed on its own with jansson, turned into examples, and
 * freed. The 30 MB train-v1.1.json thus never sits in memory as one JSON tree. Syntax
 * inside an article is checked by jansson; outside, the scanner only tracks strings and
 * brackets (values of keys other than "data", e.g. "version", are skipped unparsed).
 *
 * Every answer_start is checked: it counts Unicode code points (as Python slices), and
 * context[start : start + len(text)] must equal text. A mismatch is counted and flagged on
 * the answer (or an error with answers_must_match). Must never: print, exit, or know frames.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "base/utf8.h"
#include "data/sink.h"
#include "data/readers.h"

/* Byte offset of code point `start` in a UTF-8 string of len bytes; -1 past the end. */
static int64_t byte_offset_of(const char *s, size_t len, int64_t start) {
    size_t i = 0;
    for (int64_t cp = 0; cp < start; cp++) {
        if (i >= len) return -1;
        i++;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return (int64_t)i;
}

/* Where an article's problem is: "FILE:LINE, article N". */
typedef struct article_place {
    const char *where;
    int64_t line;
    int64_t number;
} article_place;

static const char *string_field(json_t *object, const char *key) {
    json_t *v = json_object_get(object, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int emit_question(ds_sink *sink, const article_place *at, const char *title, const char *context,
                         size_t context_len, json_t *qa, int64_t paragraph, ds_answer **answers, size_t *answers_cap,
                         bp_err *err) {
    const char *id = string_field(qa, "id");
    if (!id)
        return bp_err_set(err, "not SQuAD: question without a string \"id\" (%s:%lld, article %lld, paragraph %lld)",
                          at->where, (long long)at->line, (long long)at->number, (long long)paragraph);
    const char *question = string_field(qa, "question");
    /* a test split may have no "answers" at all: an unlabelled question, as "answers": [] */
    json_t *answer_list = json_object_get(qa, "answers");
    if (!question || (answer_list && !json_is_array(answer_list)))
        return bp_err_set(err, "not SQuAD: missing \"%s\" (%s:%lld, id %s)", question ? "answers" : "question",
                          at->where, (long long)at->line, id);
    json_t *impossible = json_object_get(qa, "is_impossible");
    if (impossible && !json_is_boolean(impossible))
        return bp_err_set(err, "not SQuAD: \"is_impossible\" is not true/false (%s:%lld, id %s)", at->where,
                          (long long)at->line, id);
    size_t n = json_array_size(answer_list);
    if (n > *answers_cap) {
        ds_answer *grown = realloc(*answers, n * sizeof *grown);
        if (!grown) return bp_err_set(err, "out of memory (%s, id %s)", at->where, id);
        *answers = grown;
        *answers_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *answer = json_array_get(answer_list, i);
        const char *text = string_field(answer, "text");
        json_t *start = json_object_get(answer, "answer_start");
        if (!text || !json_is_integer(start))
            return bp_err_set(err, "not SQuAD: answer %zu lacks \"text\" or an integer \"answer_start\" (%s:%lld, id %s)",
                              i, at->where, (long long)at->line, id);
        int64_t start_cp = (int64_t)json_integer_value(start);
        int64_t start_byte = start_cp >= 0 ? byte_offset_of(context, context_len, start_cp) : -1;
        size_t text_len = strlen(text);
        int matches = start_byte >= 0 && (size_t)start_byte + text_len <= context_len &&
                      memcmp(context + start_byte, text, text_len) == 0;
        sink->stats->answers++;
        if (!matches) {
            sink->stats->answer_mismatches++;
            if (sink->options->answers_must_match)
                return bp_err_set(err, "answer_start %lld does not slice to answer %zu \"%.60s\" (%s:%lld, id %s)",
                                  (long long)start_cp, i, text, at->where, (long long)at->line, id);
        }
        (*answers)[i] = (ds_answer){.text = text, .start = start_cp, .matches = matches};
    }
    int is_impossible = impossible && json_is_true(impossible);
    if (is_impossible) sink->stats->impossible++;
    sink->stats->records++;
    ds_example example = {.id = id, .label = -1, .title = title, .question = question, .context = context,
                          .answers = *answers, .n_answers = n, .is_impossible = is_impossible,
                          .source = at->where, .line = at->line};
    return ds_sink_push(sink, &example, err);
}

/* Turn one article's JSON text into examples. Returns 0, 1 (stop), -1 with err. */
static int emit_article(ds_sink *sink, const char *json_text, size_t len, const article_place *at, bp_err *err) {
    json_error_t parse_error;
    json_t *article = json_loadb(json_text, len, 0, &parse_error);
    if (!article)
        return bp_err_set(err, "invalid JSON: %s (%s:%lld, article %lld)", parse_error.text, at->where,
                          (long long)(at->line + parse_error.line - 1), (long long)at->number);
    int rc = 0;
    ds_answer *answers = NULL;
    size_t answers_cap = 0;
    json_t *title_value = json_object_get(article, "title");
    const char *title = json_is_string(title_value) ? json_string_value(title_value) : "";
    json_t *paragraphs = json_object_get(article, "paragraphs");
    if (!json_is_array(paragraphs)) {
        rc = bp_err_set(err, "not SQuAD: article without a \"paragraphs\" array (%s:%lld, article %lld)", at->where,
                        (long long)at->line, (long long)at->number);
        goto done;
    }
    for (size_t p = 0; p < json_array_size(paragraphs) && rc == 0; p++) {
        json_t *paragraph = json_array_get(paragraphs, p);
        json_t *context_value = json_object_get(paragraph, "context");
        json_t *qas = json_object_get(paragraph, "qas");
        if (!json_is_string(context_value) || !json_is_array(qas)) {
            rc = bp_err_set(err, "not SQuAD: paragraph without \"%s\" (%s:%lld, article %lld, paragraph %zu)",
                            json_is_string(context_value) ? "qas" : "context", at->where, (long long)at->line,
                            (long long)at->number, p);
            break;
        }
        const char *context = json_string_value(context_value);
        size_t context_len = json_string_length(context_value);
        for (size_t q = 0; q < json_array_size(qas) && rc == 0; q++)
            rc = emit_question(sink, at, title, context, context_len, json_array_get(qas, q), (int64_t)p, &answers,
                               &answers_cap, err);
    }
done:
    free(answers);
    json_decref(article);
    return rc;
}

/* The scanner's state over the top-level object. */
typedef struct squad_scanner {
    int depth;          /* bracket depth outside strings; 1 = inside the top-level object */
    int in_string, escaped;
    char key[64];       /* the last string seen at depth 1 (a key, or a value we skip) */
    size_t key_len;
    int value_is_data;  /* the ':' after key "data" was seen: the next '[' opens the articles */
    int in_data;        /* inside the "data" array */
    int saw_data, closed;
    ds_bytes article;   /* bytes of the article being cut out */
    bp_utf8_state utf8; /* the whole file must be UTF-8, as json.load wants it */
    unsigned char utf8_lead; /* first byte of the character being decoded */
    int64_t article_line, article_number;
    int64_t line;
} squad_scanner;

/* Append c to the article being cut out; -1 with err when out of memory or over the limit. */
static int article_put(squad_scanner *s, char c, const char *where, bp_err *err) {
    if (s->article.len >= BP_LIMIT_DOCUMENT_BYTES) {
        char place[600];
        snprintf(place, sizeof place, "%s:%lld, article %lld", where, (long long)s->article_line,
                 (long long)s->article_number);
        return bp_check_limit(s->article.len + 1, BP_LIMIT_DOCUMENT_BYTES, "bytes", "a SQuAD article", place, err);
    }
    if (ds_bytes_append(&s->article, &c, 1) != 0)
        return bp_err_set(err, "out of memory (%s:%lld)", where, (long long)s->line);
    return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Feed bytes. Returns 0 to go on, 1 when the sink asked to stop, -1 with err. */
static int scan_bytes(squad_scanner *s, const char *bytes, size_t n, ds_sink *sink, const char *where, bp_err *err) {
    for (size_t i = 0; i < n; i++) {
        char c = bytes[i];
        int capturing = s->in_data && s->depth >= 3;
        if (!bp_utf8_incomplete(&s->utf8)) s->utf8_lead = (unsigned char)c;
        if (bp_utf8_step(&s->utf8, (unsigned char)c) != 0)
            return bp_err_set(err, "not valid UTF-8: byte 0x%02x (%s:%lld)", s->utf8_lead, where, (long long)s->line);
        if (capturing && article_put(s, c, where, err) != 0) return -1;
        if (c == '\n') s->line++;
        if (s->in_string) {
            if (s->escaped) s->escaped = 0;
            else if (c == '\\') s->escaped = 1;
            else if (c == '"') s->in_string = 0;
            else if (s->depth == 1 && s->key_len + 1 < sizeof s->key) s->key[s->key_len++] = c;
            continue;
        }
        if (is_space(c)) continue;
        if (s->closed) return bp_err_set(err, "invalid JSON: text after the top-level object (%s:%lld)", where, (long long)s->line);
        if (s->depth == 0 && c != '{')
            return bp_err_set(err, "not SQuAD: the file is not a JSON object (%s:%lld)", where, (long long)s->line);
        if (s->in_data && s->depth == 2 && c != ',' && c != ']') {
            if (c != '{')
                return bp_err_set(err, "not SQuAD: element %lld of \"data\" is not an object (%s:%lld)",
                                  (long long)s->article_number, where, (long long)s->line);
            s->article.len = 0;
            s->article_line = s->line;
            if (article_put(s, c, where, err) != 0) return -1;
            s->depth = 3;
            continue;
        }
        switch (c) {
        case '"':
            s->in_string = 1;
            if (s->depth == 1) s->key_len = 0;
            break;
        case ':':
            if (s->depth == 1) {
                s->key[s->key_len] = '\0';
                s->value_is_data = strcmp(s->key, "data") == 0;
            }
            break;
        case ',':
            if (s->depth == 1) s->value_is_data = 0;
            break;
        case '{':
        case '[':
            if (s->depth == 1 && s->value_is_data) {
                if (c != '[') return bp_err_set(err, "not SQuAD: \"data\" is not an array (%s:%lld)", where, (long long)s->line);
                s->in_data = 1;
                s->saw_data = 1;
            }
            s->depth++;
            break;
        case '}':
        case ']':
            if (s->depth == 0) return bp_err_set(err, "invalid JSON: unbalanced '%c' (%s:%lld)", c, where, (long long)s->line);
            s->depth--;
            if (s->in_data && s->depth == 2) {
                article_place at = {where, s->article_line, s->article_number++};
                int rc = emit_article(sink, s->article.data, s->article.len, &at, err);
                if (rc != 0) return rc;
            } else if (s->in_data && s->depth == 1) {
                s->in_data = 0;
                s->value_is_data = 0;
            } else if (s->depth == 0) {
                s->closed = 1;
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

int ds_read_squad(const char *path, ds_sink *sink, bp_err *err) {
    static const char *const suffixes[] = {".json", NULL};
    arc_input *in = ds_open_first_member(path, suffixes, err);
    if (!in) return -1;
    int rc = 0;
    squad_scanner scanner = {.line = 1};
    char *chunk = malloc(65536);
    if (!chunk) rc = bp_err_set(err, "out of memory (%s)", path);
    int64_t total = 0;
    while (rc == 0) {
        ssize_t n = arc_read(in, chunk, 65536, err);
        if (n < 0) {
            rc = -1;
            break;
        }
        if (n == 0) break;
        total += n;
        rc = scan_bytes(&scanner, chunk, (size_t)n, sink, arc_where(in), err);
    }
    if (rc == 0) {
        if (total == 0)
            rc = bp_err_set(err, "not SQuAD: empty file (%s)", arc_where(in));
        else if (bp_utf8_incomplete(&scanner.utf8))
            rc = bp_err_set(err, "not valid UTF-8: the file ends inside a character (%s:%lld)", arc_where(in),
                            (long long)scanner.line);
        else if (scanner.depth != 0 || scanner.in_string || !scanner.closed)
            rc = bp_err_set(err, "truncated JSON: the file ends inside %s (%s:%lld)",
                            scanner.in_data ? "the \"data\" array" : "the top-level object", arc_where(in),
                            (long long)scanner.line);
        else if (!scanner.saw_data)
            rc = bp_err_set(err, "not SQuAD: no \"data\" array (%s)", arc_where(in));
    }
    free(chunk);
    free(scanner.article.data);
    arc_close(in);
    return rc < 0 ? -1 : 0;
}
