/* dist/dist.c — finding and loading the data-parallel plugin (dist.h): launcher detection, the
 * plugin's path, dlopen, the table's version check.
 * Must never: link or include MPI (the plugin does), print or exit.
 */
#include "dist/dist.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLUGIN_NAME "libbertpipe_mpi.so"

int bp_dist_launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

/* The plugin's path into buf: BERTPIPE_MPI_PLUGIN, else the first candidate next to this
 * program that exists (else the first candidate, for the error message). */
static void plugin_path(char *buf, size_t size) {
    const char *env = getenv("BERTPIPE_MPI_PLUGIN");
    if (env && *env) {
        snprintf(buf, size, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(buf, size, "%s", PLUGIN_NAME);   /* the loader's own search path */
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    static const char *const under[] = {"../lib/bertpipe", "../build/lib", "../lib"};
    for (int i = 0; i < 3; i++) {
        snprintf(buf, size, "%s/%s/%s", exe, under[i], PLUGIN_NAME);
        if (access(buf, R_OK) == 0) return;
    }
    snprintf(buf, size, "%s/%s/%s", exe, under[0], PLUGIN_NAME);   /* none: the error names the installed place */
}

/* Load the plugin at path and let it fill d. */
static int load_plugin(const char *path, bp_dist *d, bp_err *err) {
    /* RTLD_GLOBAL: Open MPI's own components, which it dlopens in turn, resolve libmpi's
     * symbols from the global scope */
    void *lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!lib)
        return bp_err_set(err, "data-parallel: cannot load the MPI plugin: %s (build it with `make` where mpicc "
                          "exists: Debian's libopenmpi-dev; or set BERTPIPE_MPI_PLUGIN)", dlerror());
    bp_dist_open_fn open_fn;
    *(void **)&open_fn = dlsym(lib, BP_DIST_OPEN_SYMBOL);
    if (!open_fn) return bp_err_set(err, "data-parallel: %s has no %s: not a bertpipe MPI plugin", path, BP_DIST_OPEN_SYMBOL);
    if (open_fn(d, err)) return -1;
    if (d->abi != BP_DIST_ABI)
        return bp_err_set(err, "data-parallel: %s speaks version %d of dist.h, this program %d: rebuild it", path, d->abi,
                          BP_DIST_ABI);
    return 0;
}

int bp_dist_open(const char *mode, bp_dist **out, bp_err *err) {
    *out = NULL;
    if (!mode) mode = "auto";
    if (strcmp(mode, "auto") && strcmp(mode, "mpi") && strcmp(mode, "off"))
        return bp_err_set(err, "--data-parallel '%s' unknown (auto, mpi, off)", mode);
    if (!strcmp(mode, "off") || (!strcmp(mode, "auto") && !bp_dist_launched())) return 0;
    bp_dist *d = calloc(1, sizeof *d);
    if (!d) return bp_err_set(err, "data-parallel: out of memory");
    char path[PATH_MAX + 64];
    plugin_path(path, sizeof path);
    if (load_plugin(path, d, err)) {
        free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int bp_dist_close(bp_dist *d, bp_err *err) {
    if (!d) return 0;
    int rc = d->finalize(d, err);
    free(d);
    return rc;
}
