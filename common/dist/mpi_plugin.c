/* dist/mpi_plugin.c — dist.h's table on OpenMPI: MPI_COMM_WORLD, MPI_Allreduce, MPI_Bcast,
 * MPI_Abort. Built with mpicc into libbertpipe_mpi.so (never into libbertpipe.a), and loaded
 * by dist/dist.c only when a run is data-parallel.
 * Errors return (MPI_ERRORS_RETURN on the communicator): every call's code is checked and
 * turned into err with MPI_Error_string. Counts over INT_MAX go in INT_MAX pieces.
 * Must never: print or exit (abort ends the run on purpose, with MPI_Abort).
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"

int bp_dist_mpi_open(bp_dist *d, bp_err *err);

/* err from an MPI return code: "data-parallel: MPI_Allreduce failed: <the engine's text>".
 * (Filled here, not with bp_err_set: the plugin links nothing of libbertpipe.a.) */
static int mpi_fail(const char *call, int rc, bp_err *err) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error code %d", rc);
    text[strcspn(text, "\n")] = 0;
    if (err) snprintf(err->msg, sizeof err->msg, "data-parallel: %s failed: %s", call, text);
    return -1;
}

/* MPI_Allreduce in place over n elements of `size` bytes, in pieces of at most INT_MAX. */
static int allreduce(void *x, size_t n, size_t size, MPI_Datatype type, MPI_Op op, bp_err *err) {
    char *at = x;
    while (n > 0) {
        int piece = n > INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Allreduce(MPI_IN_PLACE, at, piece, type, op, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail("MPI_Allreduce", rc, err);
        at += (size_t)piece * size;
        n -= (size_t)piece;
    }
    return 0;
}

static int mpi_sum_floats(bp_dist *d, float *x, size_t n, bp_err *err) {
    return allreduce(x, n, sizeof *x, MPI_FLOAT, MPI_SUM, err);
}

static int mpi_sum_doubles(bp_dist *d, double *x, size_t n, bp_err *err) {
    return allreduce(x, n, sizeof *x, MPI_DOUBLE, MPI_SUM, err);
}

static int mpi_or_bytes(bp_dist *d, uint8_t *x, size_t n, bp_err *err) {
    return allreduce(x, n, 1, MPI_UNSIGNED_CHAR, MPI_BOR, err);
}

static int mpi_broadcast(bp_dist *d, void *buf, size_t n, int root, bp_err *err) {
    char *at = buf;
    while (n > 0) {
        int piece = n > INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Bcast(at, piece, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail("MPI_Bcast", rc, err);
        at += piece;
        n -= (size_t)piece;
    }
    return 0;
}

__attribute__((noreturn)) static void mpi_abort(bp_dist *d, int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code);   /* MPI_Abort does not return; should it, the process still ends */
}

static int mpi_finalize(bp_dist *d, bp_err *err) {
    int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? 0 : mpi_fail("MPI_Finalize", rc, err);
}

int bp_dist_mpi_open(bp_dist *d, bp_err *err) {
    int rc, inited = 0;
    if ((rc = MPI_Initialized(&inited)) != MPI_SUCCESS) return mpi_fail("MPI_Initialized", rc, err);
    if (!inited && (rc = MPI_Init(NULL, NULL)) != MPI_SUCCESS) return mpi_fail("MPI_Init", rc, err);
    if ((rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)) != MPI_SUCCESS)
        return mpi_fail("MPI_Comm_set_errhandler", rc, err);
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, &d->rank)) != MPI_SUCCESS) return mpi_fail("MPI_Comm_rank", rc, err);
    if ((rc = MPI_Comm_size(MPI_COMM_WORLD, &d->size)) != MPI_SUCCESS) return mpi_fail("MPI_Comm_size", rc, err);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if ((rc = MPI_Get_library_version(version, &len)) != MPI_SUCCESS) return mpi_fail("MPI_Get_library_version", rc, err);
    version[strcspn(version, ",\n")] = 0;   /* "Open MPI v4.1.4" */
    snprintf(d->library, sizeof d->library, "%.120s", version);
    d->abi = BP_DIST_ABI;
    d->engine = "mpi";
    d->sum_floats = mpi_sum_floats;
    d->sum_doubles = mpi_sum_doubles;
    d->or_bytes = mpi_or_bytes;
    d->broadcast = mpi_broadcast;
    d->abort = mpi_abort;
    d->finalize = mpi_finalize;
    return 0;
}
