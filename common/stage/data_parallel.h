/* stage/data_parallel.h — train's data parallelism: N processes (one MPI rank each) train one
 * model on shards of every global batch and sum their gradients before each update, so the
 * result is the one process's on the whole batch (docs/data-parallel.md).
 *
 * Rank 0 reads the input stream as a single train does and broadcasts every frame (hello,
 * batches, epochs) and the stream's end, a stop signal or its failure; each rank trains on
 * rows [first, first + rows) of every batch, its loss weighted rows / B, so the summed
 * gradient is the full batch's mean. Gradients are summed with the engine (MPI_Allreduce on
 * host memory, a row-sparse one only over the rows some rank flagged; on a backend with its
 * own collectives, NCCL on the GPU, through them, whole).
 * With no launcher (or --data-parallel off) every call is the single process's own: no MPI.
 * Must never: write frames or checkpoints (the stage does, on rank 0 only).
 */
#ifndef BP_DATA_PARALLEL_H
#define BP_DATA_PARALLEL_H
#include <stddef.h>
#include <stdint.h>

#include "dist/dist.h"
#include "model/model.h"
#include "wire/endpoint.h"

typedef struct bp_dp {
    bp_dist *dist;            /* NULL: one process */
    int rank, size;           /* 0, 1 without dist */
    int on_device;            /* the backend's collectives (NCCL) sum the gradients */
    backend *be;
    double comm_seconds;      /* spent in the gradient sums */
    uint64_t bytes_summed;    /* bytes of gradient and flags summed, over all steps */
    long sums;                /* gradient sums made (optimizer steps) */
    float *rows;              /* host: the flagged rows of a row-sparse gradient, packed */
    size_t rows_cap;          /* floats rows holds */
    int closed;
} bp_dp;

/* Join the run --data-parallel mode asks for (dist.h's bp_dist_open). 0, or -1 with err. */
int bp_dp_open(bp_dp *dp, const char *mode, bp_err *err);
/* The backend the gradients live on: one with collectives (be->collective_init: cuda's NCCL)
 * sums them itself, set up over the dist (rank 0's id broadcast); a host-visible one without
 * them has MPI sum its memory. 0, or -1 with err (a device backend without collectives). */
int bp_dp_use_backend(bp_dp *dp, backend *be, bp_err *err);
/* One GPU per rank: before the backend is opened, a rank that may use cuda (device not "cpu")
 * sees only the GPU of its local rank (OMPI_COMM_WORLD_LOCAL_RANK) unless CUDA_VISIBLE_DEVICES
 * is set already. Can't fail. */
void bp_dp_pin_device(const bp_dp *dp, const char *device);
/* The run's end (bp_dist_close). 0, or -1 with err. */
int bp_dp_close(bp_dp *dp, bp_err *err);
/* End every process now (the launcher ends the rest): the exit of a rank that failed. */
void bp_dp_abort(bp_dp *dp, int code) __attribute__((noreturn));

/* The rows of a batch of B rows this rank trains on: [*first, *first + *rows), the ranks'
 * shards contiguous and in rank order, sizes differing by at most one (0 when B < size). */
void bp_dp_shard(const bp_dp *dp, int B, int *first, int *rows);

/* The next input frame on every rank. Rank 0 reads `in` (the others pass NULL) and shares
 * what it read. Returns 1 with a frame in *f, 0 at the stream's end, 2 when rank 0 saw a stop
 * signal (*sig set on every rank), -1 when reading failed: on rank 0 err is the input's error;
 * on the others err says rank 0's input failed. */
int bp_dp_next(bp_dp *dp, bp_in *in, bp_frame *f, int *sig, bp_err *err);
/* The hello of rank 0's input, on every rank (the others' *f owns a decoded copy). */
int bp_dp_share_hello(bp_dp *dp, const bp_frame *hello, bp_frame *f, bp_err *err);

/* Sum the model's gradients and sparse-row flags over the ranks (timed into comm_seconds). */
int bp_dp_sum_gradients(bp_dp *dp, model *m, bp_err *err);
/* Sum n doubles over the ranks (losses, counts). */
int bp_dp_sum(bp_dp *dp, double *x, size_t n, bp_err *err);
/* Rank 0's parameters on every rank, so all start from the same weights. */
int bp_dp_share_params(bp_dp *dp, model *m, bp_err *err);

#endif
