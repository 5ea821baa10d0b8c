/* ckpt/torchbin.h — read `pytorch_model.bin` state dicts written by torch.save (zip format).
 *
 * A torch.save zip holds TOP/data.pkl (a pickle of the state dict whose tensors refer to
 * storages by key) and TOP/data/KEY (each storage's raw little-endian bytes); TOP is
 * "archive" or the file's stem depending on the torch version. The zip is read with
 * libarchive, from a file or a stream (pipe), and data.pkl is run on a minimal pickle VM
 * that knows only what state dicts use: anything else is refused by opcode or global name,
 * never executed. The legacy pre-1.6 non-zip format (back-to-back pickles followed by the raw
 * storages, as in many older hub checkpoints) is read too, from files only.
 *
 * Must never: run a pickle opcode or global beyond what state dicts use, print, exit, or know
 * the model.
 */
#ifndef BP_TORCHBIN_H
#define BP_TORCHBIN_H
#include <stddef.h>

#include "base/log.h"
#include "base/tensor.h"

struct tb_storage_set;

/* A loaded state dict. Fields are read-only for callers. */
typedef struct tb_file {
    char *path;                   /* path or stream label given to the opener */
    bp_named_tensor *tensors;     /* state dict order; contiguous data owned by the tb_file */
    size_t n_tensors;
    struct tb_storage_set *owned; /* private: storages and contiguous copies */
} tb_file;

/* Read the torch.save file at PATH (zip, or the legacy format). Tensors saved as views (storage offset, shared storage)
 * point into their storage; non-contiguous ones (e.g. a saved transpose) are copied into
 * C order. Returns a tb_file to free with tb_close, or NULL with err = one line naming the
 * file and the tensor, storage or pickle opcode at fault. */
tb_file *tb_open(const char *path, bp_err *err);

/* The same from an already open descriptor, read as a stream (works on pipes: libarchive's
 * streaming zip reader is used when FD cannot seek). LABEL names the source in errors.
 * The legacy format is refused here (it needs the whole file). The descriptor is not closed. */
tb_file *tb_read_fd(int fd, const char *label, bp_err *err);

/* Free everything; NULL is fine. */
void tb_close(tb_file *file);

/* The tensor called NAME, or NULL. */
const bp_named_tensor *tb_find(const tb_file *file, const char *name);

#endif
