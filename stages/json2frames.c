/* json2frames — replay JSON lines (as frames2json writes them) as a frame stream.
 *
 * Each non-empty line is one frame, sent as given: the file holds its own hello and eos.
 * --recount rewrites each eos count to the number of data frames before it (after editing
 * a recording by hand). Every frame is validated before it is sent; a bad line stops the
 * replay with its line number, and downstream is told through an error frame.
 * Must never: send a line it has not validated as a frame.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/framejson.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: json2frames [--recount] [--out SPEC] [FILE]\n"
    "Send each JSON line of FILE (default stdin) as one frame.\n"
    "  --recount         set every eos count to the data frames actually sent before it\n"
    "  --out SPEC        output endpoint (default -: stdout; ipc://, tcp://, @bind, >connect)\n"
    BP_CURVE_USAGE
    "  --version         print \"json2frames (bertpipe) VERSION\" and exit\n";

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    bp_set_usage(usage);
    int recount = 0;
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, {"recount", no_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case 'r': recount = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    const char *path = optind < argc ? argv[optind] : "-";
    if (optind + 1 < argc) bp_usage_die("unexpected argument '%s'", argv[optind + 1]);
    FILE *src = stdin;
    if (strcmp(path, "-") && !(src = fopen(path, "r"))) bp_die(1, path, "cannot open");
    const char *name = strcmp(path, "-") ? path : "stdin";

    bp_out *out = bp_open_out(&io);
    bp_out_set_raw(out, 1);
    bp_writer w;
    bp_writer_init(&w);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int64_t data_since_eos = 0;
    char where[512];
    while ((n = getline(&line, &cap, src)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n == 0) continue;
        snprintf(where, sizeof where, "%s line %ld", name, lineno);
        bp_err err;
        bp_frame f;
        size_t len;
        if (bp_json_to_frame(line, (size_t)n, &w, &err)) bp_die(1, where, "%s", err.msg);
        const char *bytes = bp_finish(&w, &len);
        if (bp_frame_decode(&f, bytes, len, NULL, NULL, &err)) bp_die(1, where, "%s", err.msg);
        if (recount && f.kind == BP_EOS) {
            /* Re-encode the eos with the true count. */
            bp_frame_release(&f);
            bp_begin(&w, BP_EOS);
            bp_put_str(&w, "from", bp_stage());
            bp_put_int(&w, "count", data_since_eos);
            bytes = bp_finish(&w, &len);
            if (bp_frame_decode(&f, bytes, len, NULL, NULL, &err)) bp_die(1, where, "%s", err.msg);
        }
        if (f.kind == BP_EOS) data_since_eos = 0;
        else if (f.kind != BP_HELLO && f.kind != BP_ERROR) data_since_eos++;
        if (bp_out_send_frame(out, &f)) bp_die_err(bp_out_err(out));
        bp_frame_release(&f);
    }
    if (ferror(src)) bp_die(1, name, "%s", bp_stop_reason() ? bp_stop_reason() : "read failed");
    free(line);
    bp_writer_free(&w);
    if (src != stdin) fclose(src);
    bp_close_out(out);
    return 0;
}
