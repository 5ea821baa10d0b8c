/* fuzz_archive.c — archive input on arbitrary bytes: gzip/bzip2/xz/zstd streams, zip, tar
 * and tar.gz members, read as lines and as bytes, with the end-of-archive and CRC checks;
 * and the IMDB reader, which walks every member (base/archive_input.h, data/datasets.h). */
#include "base/archive_input.h"
#include "data/datasets.h"
#include "fuzz_common.h"

static int consume(const ds_example *example, void *user, bp_err *err) {
    size_t *total = user;
    *total += strlen(example->text);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file(data, size);
    bp_err err;
    arc_input *in = arc_open(path, &err);
    if (in) {
        int member = 0, got;
        while ((got = arc_next_member(in, &err)) == 1 && member < 64) {
            (void)arc_member_name(in);
            (void)arc_where(in);
            if (member++ % 2 == 0) {
                char *line;
                size_t len;
                while (arc_read_line(in, &line, &len, &err) == 1) (void)arc_line_number(in);
            } else {
                char buf[4096];
                while (arc_read(in, buf, sizeof buf, &err) > 0) continue;
            }
        }
        arc_close(in);
    }
    in = arc_open(path, &err);
    if (in) {
        if (arc_find_member(in, "train.tsv", &err) == 1) {
            char *line;
            size_t len;
            while (arc_read_line(in, &line, &len, &err) == 1) continue;
        }
        arc_close(in);
    }
    size_t total = 0;
    ds_options imdb = {.format = DS_FORMAT_IMDB};
    ds_read(path, &imdb, consume, &total, NULL, &err);
    return 0;
}
