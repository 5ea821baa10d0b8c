/* framegen — emit a synthetic, valid frame stream: hello, N feature frames, eos.
 *
 * For transport tests and benchmarks: every frame carries "seq" and "example_id"
 * (PREFIX-seq) so a consumer can prove each arrived exactly once, and a u8 tensor of
 * --bytes bytes as payload. Never used by pipelines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage/stage.h"

int main(int argc, char **argv) {
    bp_io_opts io;
    bp_stage_init(&io, argv);
    long count = 10, bytes = 16;
    const char *prefix = "g";
    static const struct option longopts[] = {
        BP_IO_LONGOPTS, {"count", required_argument, 0, 'n'}, {"bytes", required_argument, 0, 'b'},
        {"prefix", required_argument, 0, 'p'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case 'n': count = bp_opt_long("--count", optarg, 0, 1L << 40); break;
        case 'b': bytes = bp_opt_long("--bytes", optarg, 0, 1L << 30); break;
        case 'p': prefix = optarg; break;
        default: bp_usage_error();
        }
    }
    unsigned char *payload = malloc((size_t)bytes + 1);
    if (!payload) bp_die(1, NULL, "out of memory");
    for (long i = 0; i < bytes; i++) payload[i] = (unsigned char)(i * 131 + 7);
    bp_out *out = bp_open_out(&io);
    bp_writer w;
    bp_writer_init(&w);
    bp_hello_begin(&w);
    bp_put_str(&w, "task", "synthetic");
    if (bp_out_hello(out, &w)) bp_die_err(bp_out_err(out));
    char id[128];
    for (long i = 0; i < count; i++) {
        bp_begin(&w, BP_FEATURE);
        bp_put_int(&w, "seq", i);
        snprintf(id, sizeof id, "%s-%ld", prefix, i);
        bp_put_str(&w, "example_id", id);
        int64_t shape[1] = {bytes};
        bp_put_tensor(&w, "payload", BP_U8, 1, shape, payload);
        if (bp_out_send(out, &w)) bp_die_err(bp_out_err(out));
    }
    bp_err err;
    if (bp_out_close(out, &err)) bp_die_err(&err);
    bp_writer_free(&w);
    free(payload);
    return 0;
}
