/* dist/dist.h — the processes of one data-parallel run: who this process is among them, and
 * the few collectives training needs (sum, bitwise or, broadcast), behind a plain C table.
 *
 * The collectives run on an existing engine, never a home-made one: OpenMPI, whose code lives
 * in a plugin (dist/mpi_plugin.c, built with mpicc into libbertpipe_mpi.so) that bp_dist_open
 * loads with dlopen only when a run asks for it. So a program linked with this file has no
 * libmpi dependency: a single process needs no MPI at run time. The plugin fills the table;
 * this file finds the plugin and knows nothing of MPI.
 * Every call is collective (each process of the run makes it, in the same order) and blocks
 * until the others have made it; a process that died makes the launcher end the rest.
 * Must never: print or exit (abort is the one call that ends the process, on purpose), or
 * include <mpi.h> outside the plugin.
 */
#ifndef BP_DIST_H
#define BP_DIST_H
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

/* The version of the table below: a plugin built for another one is refused. */
#define BP_DIST_ABI 1

typedef struct bp_dist bp_dist;
struct bp_dist {
    int abi;                 /* BP_DIST_ABI */
    const char *engine;      /* "mpi" */
    char library[128];       /* the engine's own version line ("Open MPI v4.1.4, ...") */
    int rank, size;          /* this process, of size (0 <= rank < size) */
    void *state;             /* the plugin's */
    /* In place over every process: x[i] = the sum of every process's x[i]. 0, or -1 with err. */
    int (*sum_floats)(bp_dist *d, float *x, size_t n, bp_err *err);
    int (*sum_doubles)(bp_dist *d, double *x, size_t n, bp_err *err);
    /* x[i] = the bitwise or of every process's x[i] (row flags). */
    int (*or_bytes)(bp_dist *d, uint8_t *x, size_t n, bp_err *err);
    /* root's n bytes at buf into every process's buf. */
    int (*broadcast)(bp_dist *d, void *buf, size_t n, int root, bp_err *err);
    /* End every process of the run now with exit status code (the one call that never returns). */
    void (*abort)(bp_dist *d, int code) __attribute__((noreturn));
    /* The run's end, after the last collective (bp_dist_close calls it). 0, or -1 with err. */
    int (*finalize)(bp_dist *d, bp_err *err);
};

/* The symbol a plugin exports: fill d (abi, engine, rank, size, the calls). 0, or -1 with err. */
typedef int (*bp_dist_open_fn)(bp_dist *d, bp_err *err);
#define BP_DIST_OPEN_SYMBOL "bp_dist_mpi_open"

/* Whether this process was started by an MPI launcher (mpirun/mpiexec or a PMI one: the
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK it sets). */
int bp_dist_launched(void);

/* The run for --data-parallel MODE: "off" (and "auto" outside a launcher) gives *out = NULL, a
 * single process; "mpi" (and "auto" under a launcher) loads the plugin and joins the run.
 * The plugin is BERTPIPE_MPI_PLUGIN when set, else libbertpipe_mpi.so in the first of
 * EXE/../lib/bertpipe, EXE/../build/lib, EXE/../lib that has it (EXE: this program's folder:
 * an installed stage, bin/ in the tree, build/san/bin). Returns 0, or -1 with err saying what
 * is missing (the plugin, libmpi) or what the engine refused. The caller ends a run with
 * bp_dist_close, or abort. */
int bp_dist_open(const char *mode, bp_dist **out, bp_err *err);
/* Finalize the engine and free d (NULL: nothing). 0, or -1 with err. */
int bp_dist_close(bp_dist *d, bp_err *err);

#endif
