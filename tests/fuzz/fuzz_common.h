/* fuzz_common.h — what the libFuzzer harnesses in tests/fuzz share.
 *
 * Each harness (tests/fuzz/fuzz_NAME.c, built by `make fuzz` with clang's
 * -fsanitize=fuzzer,address,undefined) calls one library reader in-process on the fuzzer's
 * bytes and frees everything, so a crash, a leak, an out-of-bounds read or a hang in the
 * reader is a finding. Readers that open paths get the bytes as an in-memory file: a memfd,
 * reached as /proc/self/fd/N, so no input ever touches the disk. Errors are the expected
 * outcome for most inputs and are ignored; only the sanitizers and libFuzzer judge.
 * Header-only: each harness is its own program.
 */
#ifndef BP_FUZZ_COMMON_H
#define BP_FUZZ_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fuzz input as a file: one memfd per harness process, rewritten for every input.
 * Returns its path, "/proc/self/fd/N". Exits when no memfd can be made (a setup failure,
 * not a finding). */
static inline const char *fuzz_input_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            exit(2);
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("fuzz input file");
        exit(2);
    }
    return path;
}

/* A NUL-terminated copy of data[0..size), or exits when out of memory. Free it. */
static inline char *fuzz_string(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) exit(2);
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* A file of the repository (tests/fixtures/...), found from the working directory or
 * $BERTPIPE_TOP. */
static inline const char *fuzz_repo_path(const char *relative) {
    static char path[4096];
    const char *top = getenv("BERTPIPE_TOP");
    snprintf(path, sizeof path, "%s/%s", top && *top ? top : ".", relative);
    return path;
}

#ifdef BP_FRAMEJSON_H
/* The replay law of a decoded frame (frames2json, then json2frames): its JSON line reads back
 * into a frame that decodes and prints the same line. Aborts, a finding, when it does not;
 * a frame with no JSON form (an ext value) passes. For harnesses that include wire/framejson.h
 * first. */
static inline void fuzz_check_replay(const bp_frame *f) {
    bp_err err;
    char *line = NULL, *again = NULL;
    size_t len = 0, cap = 0, len2 = 0, cap2 = 0;
    if (bp_frame_to_json(f, NULL, &line, &len, &cap, &err) == 0) {
        bp_writer w;
        bp_writer_init(&w);
        bp_frame back;
        size_t blen;
        if (bp_json_to_frame(line, len - 1, &w, &err)) abort();
        const char *bytes = bp_finish(&w, &blen);
        if (bp_frame_decode(&back, bytes, blen, NULL, NULL, &err)) abort();
        if (bp_frame_to_json(&back, NULL, &again, &len2, &cap2, &err) || len2 != len || memcmp(line, again, len)) abort();
        bp_frame_release(&back);
        bp_writer_free(&w);
    }
    free(line);
    free(again);
}
#endif

#endif
