/* tap — pass a frame stream through unchanged, printing each frame as one JSON line.
 *
 * Binds/connects exactly like any stage (--in, --out), so it can be spliced between any two
 * stages of a pipeline. It forwards hello and eos frames as they are (it is invisible to
 * both neighbours) while still checking the stream rules.
 * Must never: alter a frame.
 */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "stage/json_view.h"
#include "stage/stage.h"

static const char usage[] =
    "usage: tap [--log FILE [--append]] [--brief] [--vocab FILE] [--examples SPEC] [--arrays] [--in SPEC] [--out SPEC] [--producers N]\n"
    "Pass frames through unchanged; write each as one JSON line to stderr or FILE.\n"
    "  --log FILE        write the JSON lines to FILE instead of stderr (a new file each run)\n"
    "  --append          add to the --log FILE instead of starting it again\n"
    "  --brief           show binary payloads over 32 bytes as their size only\n"
    BP_JSON_VIEW_USAGE
    "  --delay-ms N      wait N ms before passing each frame on (simulates a slow stage)\n" BP_IO_USAGE;

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    bp_set_usage(usage);
    const char *log_path = NULL;
    bp_json_opts jopts = {0};
    long delay_ms = 0;
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, {"log", required_argument, 0, 'l'}, {"brief", no_argument, 0, 'b'},
        {"delay-ms", required_argument, 0, 'd'}, {"append", no_argument, 0, 'a'}, BP_JSON_VIEW_LONGOPTS,
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int append = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (bp_io_option(&io, opt, optarg) || bp_json_view_option(&jopts, opt, optarg)) continue;
        switch (opt) {
        case 'l': log_path = optarg; break;
        case 'a': append = 1; break;
        case 'b': jopts.brief = 1; break;
        case 'd': delay_ms = bp_opt_long("--delay-ms", optarg, 0, 3600000); break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
    if (append && !log_path) bp_usage_die("--append needs --log FILE");
    FILE *log = stderr;
    if (log_path && !(log = fopen(log_path, append ? "a" : "w"))) bp_die(1, log_path, "cannot open log file");

    bp_in *in = bp_open_in(&io);
    bp_out *out = bp_open_out(&io);
    bp_in_set_raw(in, 1);
    bp_out_set_raw(out, 1);
    /* From N producers, one stream: the first hello, and one eos with the total at the end. */
    if (io.producers > 1) bp_out_merge_eos(out);

    char *line = NULL;
    size_t cap = 0;
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        size_t len = 0;
        bp_err err;
        bp_json_view_note(&jopts, &f);
        if (bp_frame_to_json(&f, &jopts, &line, &len, &cap, &err)) bp_die_err(&err);
        if (fwrite(line, 1, len, log) != len || fflush(log)) bp_die(1, log_path ? log_path : "stderr", "cannot write the log");
        if (delay_ms) {
            struct timespec pause = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
            while (nanosleep(&pause, &pause) && errno == EINTR) {}
        }
        if (bp_out_send_frame(out, &f)) bp_die_err(bp_out_err(out));
        bp_frame_release(&f);
    }
    free(line);
    if (r < 0) bp_die_err(bp_in_err(in));
    bp_close_out(out);
    bp_in_close(in);
    if (log != stderr && fclose(log)) bp_die(1, log_path, "cannot close the log");
    return 0;
}
