/* framesink — consume a frame stream, check every example_id arrives exactly once, and
 * print one line: "frames N bytes B seconds S unique U". For transport tests and benchmarks.
 * The clock starts at the first data frame, so start-up and connection time are excluded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage/stage.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    static const struct option longopts[] = {BP_IO_LONGOPTS, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1)
        if (!bp_io_option(&io, opt, optarg)) bp_usage_error();
    bp_in *in = bp_open_in(&io);
    size_t n = 0, cap = 1024;
    char **ids = malloc(cap * sizeof *ids);
    double start = 0, bytes = 0;
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (n == 0) start = bp_now();
        bytes += (double)f.raw_len;
        bp_err err;
        char *id = bp_get_strdup(&f, "example_id", &err);
        if (!id) bp_die_err(&err);
        if (n == cap && !(ids = realloc(ids, (cap *= 2) * sizeof *ids))) bp_die(1, NULL, "out of memory");
        ids[n++] = id;
        bp_frame_release(&f);
    }
    if (r < 0) bp_die_err(bp_in_err(in));
    double secs = n ? bp_now() - start : 0;
    qsort(ids, n, sizeof *ids, cmp_str);
    size_t unique = 0;
    for (size_t i = 0; i < n; i++) unique += i == 0 || strcmp(ids[i], ids[i - 1]) != 0;
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    bp_in_close(in);
    printf("frames %zu bytes %.0f seconds %.6f unique %zu\n", n, bytes, secs, unique);
    return unique == n ? 0 : 1;
}
