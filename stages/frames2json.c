/* frames2json — record a frame stream as JSON lines on stdout (one frame per line).
 *
 * Hello and eos frames are written too, so json2frames can replay the stream exactly.
 * It checks the stream like any consumer (hello first, eos counts) and fails loudly.
 * Must never: write a recording of a broken stream as if it were whole.
 */
#include <stdio.h>
#include <stdlib.h>

#include "stage/json_view.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: frames2json [--brief] [--vocab FILE] [--examples SPEC] [--arrays] [--in SPEC] [--producers N] [--out FILE]\n"
    "Write every frame of the input stream as one JSON line (to stdout or --out FILE).\n"
    "  --brief           show binary payloads over 32 bytes as their size only (not replayable)\n"
    BP_JSON_VIEW_USAGE
    "  --in SPEC         input endpoint (default -: stdin)\n"
    "  --producers N     input streams to wait for (default 1)\n"
    BP_CURVE_USAGE
    "  --version         print \"frames2json (bertpipe) VERSION\" and exit\n";

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    bp_set_usage(usage);
    bp_json_opts jopts = {0};
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, BP_JSON_VIEW_LONGOPTS, {"brief", no_argument, 0, 'b'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&io, opt, optarg) || bp_json_view_option(&jopts, opt, optarg)) continue;
        switch (opt) {
        case 'b': jopts.brief = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
    FILE *dst = stdout;
    const char *dst_name = "stdout";
    if (io.out[0] && !(io.out[0] == '-' && !io.out[1])) {
        dst_name = io.out;
        if (!(dst = fopen(io.out, "w"))) bp_die(1, io.out, "cannot create output file");
    }
    bp_in *in = bp_open_in(&io);
    bp_in_set_raw(in, 1);
    char *line = NULL;
    size_t cap = 0;
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        size_t len = 0;
        bp_err err;
        bp_json_view_note(&jopts, &f);
        if (bp_frame_to_json(&f, &jopts, &line, &len, &cap, &err)) bp_die_err(&err);
        bp_frame_release(&f);
        /* one frame, one flushed line: a follower (tail -f, a test) sees each as it comes */
        if (fwrite(line, 1, len, dst) != len || fflush(dst)) bp_die(1, dst_name, "write failed");
    }
    free(line);
    if (fflush(dst) || (dst != stdout && fclose(dst))) bp_die(1, dst_name, "write failed");
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_in_close(in);
    return 0;
}
