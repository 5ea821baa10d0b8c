/* fuzz_torchbin.c — the torch.save readers on arbitrary bytes: the zip (seekable from a file
 * and streamed from a descriptor) and the legacy format, and the pickle VM under both
 * (ckpt/torchbin.h). */
#include <fcntl.h>

#include "ckpt/torchbin.h"
#include "fuzz_common.h"

static void touch(const tb_file *file) {
    volatile unsigned char sink = 0;
    for (size_t i = 0; file && i < file->n_tensors; i++)
        if (file->tensors[i].nbytes) sink ^= ((const unsigned char *)file->tensors[i].data)[file->tensors[i].nbytes - 1];
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bp_err err;
    const char *path = fuzz_input_file(data, size);
    tb_file *file = tb_open(path, &err);
    touch(file);
    tb_close(file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        file = tb_read_fd(fd, "<fuzz stream>", &err);
        touch(file);
        tb_close(file);
        close(fd);
    }
    return 0;
}
