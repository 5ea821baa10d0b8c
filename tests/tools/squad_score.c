/* squad_score.c — a driver for the SQuAD metrics in common/eval/metrics.c, used by
 * scripts/parity-squad-score to compare them with tests/reference/squad_metric_ref.py.
 *
 *   squad_score DATASET PREDICTIONS [--v1|--v2]   print the official result JSON
 *   squad_score --unicode-table                   per-code-point rules, in the format of
 *                                                 squad_metric_ref.py --unicode-table
 *
 * It is a test tool, not a stage: no frames; the real `bin/score` is the lead's.
 */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "eval/metrics.h"

/* Lines for the code points where lower-casing changes something or a flag is set,
 * flags as Python can observe them: the final-sigma rule skips case-ignorable
 * characters before it asks "cased?", so a character that is both reads as ignorable. */
static int print_unicode_table(void) {
    for (int32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        int32_t lower[3];
        unsigned flags;
        int n = metrics_squad_char_rules(cp, lower, &flags);
        int ignorable = (flags & METRICS_CHAR_CASE_IGNORABLE) != 0;
        int cased = (flags & METRICS_CHAR_CASED) && !ignorable;
        char text[8] = "";
        size_t at = 0;
        if (flags & METRICS_CHAR_SPACE) text[at++] = 's';
        if (flags & METRICS_CHAR_WORD) text[at++] = 'w';
        if (cased) text[at++] = 'c';
        if (ignorable) text[at++] = 'i';
        text[at] = '\0';
        if (n == 1 && lower[0] == cp && at == 0) continue;
        printf("%X ", (unsigned)cp);
        for (int i = 0; i < n; i++) printf(i ? ",%X" : "%X", (unsigned)lower[i]);
        printf(" %s\n", at ? text : "-");
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    bp_set_stage(argv[0]);
    if (argc == 2 && strcmp(argv[1], "--unicode-table") == 0) return print_unicode_table();
    metrics_squad_version version = METRICS_SQUAD_AUTO;
    if (argc == 4 && strcmp(argv[3], "--v1") == 0) version = METRICS_SQUAD_V1;
    else if (argc == 4 && strcmp(argv[3], "--v2") == 0) version = METRICS_SQUAD_V2;
    else if (argc != 3) {
        fprintf(stderr, "usage: squad_score DATASET PREDICTIONS [--v1|--v2]\n"
                        "       squad_score --unicode-table\n");
        return 2;
    }
    metrics_squad_summary summary;
    bp_err err;
    if (metrics_squad_score_files(argv[1], argv[2], version, &summary, &err) ||
        metrics_squad_write_official(&summary, stdout, &err))
        bp_die_err(&err);
    if (summary.missing) bp_warn("%lld questions had no prediction (scored 0)", (long long)summary.missing);
    return 0;
}
