/* ckpt/load.h — open a Hugging Face checkpoint in either format and copy its tensors into
 * the model's parameters by name, reporting missing and unexpected keys as transformers does.
 *
 * The caller (the model) lists its parameters as bp_named_tensor whose data are the
 * destinations; this module matches names, checks shapes, converts f16/bf16/f64 to f32, and
 * returns the lists transformers would warn about.
 * Must never: know the model's structure (only names, shapes and dtypes), print, or exit.
 */
#ifndef BP_CKPT_LOAD_H
#define BP_CKPT_LOAD_H
#include <stddef.h>

#include "base/log.h"
#include "ckpt/safetensors.h"
#include "base/tensor.h"
#include "ckpt/tfckpt.h"
#include "ckpt/torchbin.h"

/* A checkpoint's tensors, whatever the file format. Fields are read-only for callers. */
typedef struct ckpt_source {
    char *path;                       /* the weights file (TF: checkpoint prefix) actually opened */
    const char *format;               /* "safetensors", "pytorch" or "tensorflow" */
    const bp_named_tensor *tensors;   /* owned by st/tb/tf below */
    size_t n_tensors;
    st_file *st;                      /* private: exactly one of these is set */
    tb_file *tb;
    tf_checkpoint *tf;
} ckpt_source;

/* Open PATH: a directory (model.safetensors preferred over pytorch_model.bin, as
 * transformers prefers it, then Google's bert_model.ckpt.index), a TF checkpoint prefix or
 * its .index file (PATH ending in ".ckpt" or ".index"), or a weights file (format sniffed
 * from its first bytes: a zip or pickle is torch, anything else is tried as safetensors).
 * TF tensors come under transformers' names with kernels transposed (see tfckpt.h).
 * Returns a source to free with ckpt_close, or NULL with err naming the file. */
ckpt_source *ckpt_open(const char *path, bp_err *err);

/* Free the source and the tensors it holds; NULL is fine. */
void ckpt_close(ckpt_source *source);

/* What ckpt_load_into found, names sorted (byte order = Python's sorted()). Owned; free
 * with ckpt_report_free. */
typedef struct ckpt_report {
    char **missing;      /* model parameters not in the checkpoint: the caller initialises them */
    size_t n_missing;
    char **unexpected;   /* checkpoint tensors the model has no use for */
    size_t n_unexpected;
    char **mismatched;   /* ckpt_load_into_ignoring_sizes: "- NAME: found shape ... in the model instantiated" */
    size_t n_mismatched;
} ckpt_report;

/* Copy CKPT's tensors into PARAMS (data = destination, nbytes = its size; dtype f32, or the
 * checkpoint's own dtype for a plain copy) by name, as transformers' from_pretrained does:
 *  - checkpoint names ending ".gamma"/".beta" (old LayerNorm) count as ".weight"/".bias";
 *  - "*position_ids*" buffers are ignored on both sides;
 *  - BASE_PREFIX (e.g. "bert"): when the parameters carry "bert." and the checkpoint does
 *    not (a BertModel checkpoint), the prefix is stripped from the parameter names for
 *    matching, and added in the opposite case; reported names are in the matching space;
 *  - checkpoint names containing any of IGNORE_UNEXPECTED (NULL-terminated list of
 *    substrings, e.g. {"pooler", NULL} for BertForQuestionAnswering, which has no pooler;
 *    may be NULL) are left out of the unexpected list.
 * LOADED (may be NULL) gets 1 for each parameter that was filled, 0 for a missing one.
 * CKPT_LABEL names the checkpoint in errors. Converts f32, f16, bf16, f64 to f32.
 * Returns 0 with REPORT filled, or -1 with err naming the tensor on a shape mismatch
 * (both shapes given), a dtype that cannot be converted, or two checkpoint names meaning
 * the same parameter; REPORT is then empty. */
int ckpt_load_into(const bp_named_tensor *params, size_t n_params, unsigned char *loaded,
                   const bp_named_tensor *ckpt, size_t n_ckpt, const char *ckpt_label,
                   const char *base_prefix, const char *const *ignore_unexpected,
                   ckpt_report *report, bp_err *err);

/* The same, but a parameter whose checkpoint tensor has another shape (a head for another label
 * count) is left as the caller initialised it and listed in REPORT->mismatched instead of being
 * an error: transformers' from_pretrained(..., ignore_mismatched_sizes=True). */
int ckpt_load_into_ignoring_sizes(const bp_named_tensor *params, size_t n_params, unsigned char *loaded,
                                  const bp_named_tensor *ckpt, size_t n_ckpt, const char *ckpt_label,
                                  const char *base_prefix, const char *const *ignore_unexpected, ckpt_report *report,
                                  bp_err *err);

void ckpt_report_free(ckpt_report *report);

/* The one-line messages transformers logs, as malloc'd strings (caller frees), or NULL when
 * the list is empty (or out of memory):
 *   "Some weights of the model checkpoint at CKPT were not used when initializing MODEL: ['a', 'b']"
 *   "Some weights of MODEL were not initialized from the model checkpoint at CKPT and are newly initialized: ['c']" */
char *ckpt_format_unexpected(const ckpt_report *report, const char *ckpt_label, const char *model_class);
char *ckpt_format_missing(const ckpt_report *report, const char *ckpt_label, const char *model_class);
/* transformers' lines for the mismatched list (NULL when empty):
 *   "Some weights of MODEL were not initialized from the model checkpoint at X and are newly
 *    initialized because the shapes did not match:\n- NAME: found shape ...\nYou should probably TRAIN ..." */
char *ckpt_format_mismatched(const ckpt_report *report, const char *ckpt_label, const char *model_class);

/* The three messages as one malloc'd text, one per line (NULL when none has anything to say).
 * Can't fail (out of memory gives NULL). */
char *ckpt_format_notes(const ckpt_report *report, const char *ckpt_label, const char *model_class);

#endif
