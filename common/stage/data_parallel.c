/* stage/data_parallel.c — train's ranks: sharing rank 0's input, shards, gradient sums
 * (data_parallel.h).
 * Must never: write frames or checkpoints, or wait on anything but the run's collectives.
 */
#include "stage/data_parallel.h"

#include <stdlib.h>
#include <string.h>

#include "stage/stage.h"

/* What rank 0 tells the others before each frame. */
enum { SHARE_FRAME = 1, SHARE_END = 0, SHARE_STOP = 2, SHARE_FAILED = -1 };

static int device_collectives(bp_dp *dp, bp_err *err) {
    backend *be = dp->be;
    if (be->host_visible && !be->collective_init) return 0;
    if (!be->collective_init)
        return bp_err_set(err, "data-parallel: the %s backend has no collectives in this build", be->name);
    char id[512];
    size_t len = 0;
    if (dp->rank == 0 && be->collective_id(be, id, sizeof id, &len, err)) return -1;
    uint64_t n = len;
    if (dp->dist->broadcast(dp->dist, &n, sizeof n, 0, err)) return -1;
    if (n > sizeof id) return bp_err_set(err, "data-parallel: a collective id of %llu bytes", (unsigned long long)n);
    if (dp->dist->broadcast(dp->dist, id, (size_t)n, 0, err)) return -1;
    if (be->collective_init(be, dp->rank, dp->size, id, (size_t)n, err)) return -1;
    dp->on_device = 1;
    return 0;
}

int bp_dp_open(bp_dp *dp, const char *mode, bp_err *err) {
    *dp = (bp_dp){.rank = 0, .size = 1};
    if (bp_dist_open(mode, &dp->dist, err)) return -1;
    if (!dp->dist) return 0;
    dp->rank = dp->dist->rank;
    dp->size = dp->dist->size;
    return 0;
}

int bp_dp_use_backend(bp_dp *dp, backend *be, bp_err *err) {
    dp->be = be;
    if (!dp->dist) return 0;
    /* every rank on the same kind of backend: NCCL on some and MPI on others would wait forever */
    double on_device = be->collective_init != NULL;
    if (dp->dist->sum_doubles(dp->dist, &on_device, 1, err)) return -1;
    if (on_device != 0 && on_device != dp->size)
        return bp_err_set(err, "data-parallel: %g of %d ranks have a GPU backend (this one: %s); give every rank one GPU "
                          "(CUDA_VISIBLE_DEVICES) or use --device cpu", on_device, dp->size, be->name);
    return device_collectives(dp, err);
}

void bp_dp_pin_device(const bp_dp *dp, const char *device) {
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!dp->dist || (device && !strcmp(device, "cpu")) || !local || getenv("CUDA_VISIBLE_DEVICES")) return;
    setenv("CUDA_VISIBLE_DEVICES", local, 1);
}

int bp_dp_close(bp_dp *dp, bp_err *err) {
    if (dp->closed) return 0;
    dp->closed = 1;
    int rc = bp_dist_close(dp->dist, err);
    dp->dist = NULL;
    free(dp->rows);
    dp->rows = NULL;
    return rc;
}

void bp_dp_abort(bp_dp *dp, int code) {
    if (dp->dist && !dp->closed) dp->dist->abort(dp->dist, code);
    exit(code);
}

void bp_dp_shard(const bp_dp *dp, int B, int *first, int *rows) {
    int base = B / dp->size, extra = B % dp->size;
    *first = dp->rank * base + (dp->rank < extra ? dp->rank : extra);
    *rows = base + (dp->rank < extra);
}

/* Rank 0: share code, and with a frame its bytes. */
static int share(bp_dp *dp, int64_t code, int64_t sig, const bp_frame *f, bp_err *err) {
    int64_t head[3] = {code, code == SHARE_FRAME ? (int64_t)f->raw_len : 0, sig};
    if (dp->dist->broadcast(dp->dist, head, sizeof head, 0, err)) return -1;
    if (code == SHARE_FRAME) return dp->dist->broadcast(dp->dist, (void *)f->raw, f->raw_len, 0, err);
    return 0;
}

/* The others: what rank 0 shared; a frame is decoded into *f, which owns its bytes. */
static int receive(bp_dp *dp, bp_frame *f, int *sig, bp_err *err) {
    int64_t head[3];
    if (dp->dist->broadcast(dp->dist, head, sizeof head, 0, err)) return -1;
    if (head[0] == SHARE_END) return 0;
    if (head[0] == SHARE_STOP) {
        *sig = (int)head[2];
        return 2;
    }
    if (head[0] != SHARE_FRAME) return bp_err_set(err, "data-parallel: rank 0's input failed (its error says why)");
    if (head[1] <= 0 || (uint64_t)head[1] > BP_FRAME_MAX_BYTES)
        return bp_err_set(err, "data-parallel: rank 0 shared a frame of %lld bytes", (long long)head[1]);
    char *bytes = malloc((size_t)head[1]);
    if (!bytes) return bp_err_set(err, "data-parallel: out of memory for a frame of %lld bytes", (long long)head[1]);
    if (dp->dist->broadcast(dp->dist, bytes, (size_t)head[1], 0, err) ||
        bp_frame_decode(f, bytes, (size_t)head[1], free, bytes, err)) {
        free(bytes);
        return -1;
    }
    return 1;
}

int bp_dp_next(bp_dp *dp, bp_in *in, bp_frame *f, int *sig, bp_err *err) {
    *sig = 0;
    if (dp->rank > 0) return receive(dp, f, sig, err);
    int rc = bp_stop_signal() ? -1 : bp_in_next(in, f);
    if (rc < 0 && !bp_stop_signal()) *err = *bp_in_err(in);
    int code = bp_stop_signal() ? SHARE_STOP : rc == 1 ? SHARE_FRAME : rc == 0 ? SHARE_END : SHARE_FAILED;
    if (code == SHARE_STOP) *sig = bp_stop_signal();
    bp_err share_err;
    if (dp->dist && share(dp, code, *sig, f, &share_err)) {
        *err = share_err;
        return -1;
    }
    return code == SHARE_STOP ? 2 : code == SHARE_FAILED ? -1 : rc;
}

int bp_dp_share_hello(bp_dp *dp, const bp_frame *hello, bp_frame *f, bp_err *err) {
    int sig;
    if (!dp->dist) return 0;
    if (dp->rank == 0) return share(dp, SHARE_FRAME, 0, hello, err);
    int rc = receive(dp, f, &sig, err);
    return rc == 1 ? 0 : rc < 0 ? -1 : bp_err_set(err, "data-parallel: rank 0 shared no hello");
}

/* Sum one span of floats: in place on the host, or with the backend's own collective. */
static int sum_span(bp_dp *dp, float *x, size_t n, bp_err *err) {
    dp->bytes_summed += n * sizeof *x;
    if (!dp->on_device) return dp->dist->sum_floats(dp->dist, x, n, err);
    dp->be->allreduce_sum(dp->be, x, n);
    return 0;
}

static int or_span(bp_dp *dp, uint8_t *x, size_t n, bp_err *err) {
    dp->bytes_summed += n;
    if (!dp->on_device) return dp->dist->or_bytes(dp->dist, x, n, err);
    dp->be->allreduce_or(dp->be, x, n);
    return 0;
}

/* The flagged rows of s between its gradient and the packed buffer (to_packed: into it). */
static void move_flagged_rows(bp_dp *dp, const model_sparse_span *s, int to_packed) {
    size_t bytes = s->row_len * sizeof(float), at = 0;
    for (size_t r = 0; r < s->rows; r++) {
        if (!s->flags[r]) continue;
        float *row = s->grads + r * s->row_len, *packed = dp->rows + at;
        memcpy(to_packed ? packed : row, to_packed ? row : packed, bytes);
        at += s->row_len;
    }
}

/* A row-sparse gradient on the host, its flags or-ed already: only the rows some rank
 * flagged travel, packed (the others are zero on every rank). */
static int sum_flagged_rows(bp_dp *dp, const model_sparse_span *s, bp_err *err) {
    size_t flagged = 0;
    for (size_t r = 0; r < s->rows; r++) flagged += s->flags[r] != 0;
    size_t need = flagged * s->row_len;
    if (need > dp->rows_cap) {
        float *grown = realloc(dp->rows, need * sizeof *grown);
        if (!grown) return bp_err_set(err, "data-parallel: out of memory for %zu gradient rows", flagged);
        dp->rows = grown;
        dp->rows_cap = need;
    }
    move_flagged_rows(dp, s, 1);
    if (sum_span(dp, dp->rows, need, err)) return -1;
    move_flagged_rows(dp, s, 0);
    return 0;
}

/* A gradient span, less the row-sparse gradients inside it (host: summed by their rows). */
static int sum_dense(bp_dp *dp, const model_grad_span *g, const model_sparse_span *sp, int ns, bp_err *err) {
    float *at = g->grads, *end = g->grads + g->n;
    while (at < end) {
        float *next = end, *skip_to = end;   /* the first sparse span at or after at */
        for (int i = 0; i < ns && !dp->on_device; i++)
            if (sp[i].grads >= at && sp[i].grads < next) {
                next = sp[i].grads;
                skip_to = sp[i].grads + sp[i].rows * sp[i].row_len;
            }
        if (next > at && sum_span(dp, at, (size_t)(next - at), err)) return -1;
        at = skip_to;
    }
    return 0;
}

int bp_dp_sum_gradients(bp_dp *dp, model *m, bp_err *err) {
    if (!dp->dist) return 0;
    double start = bp_now();
    model_grad_span g[4];
    model_flag_span fl[4];
    model_sparse_span sp[4];
    int ng = model_grad_spans(m, g, 4), nf = model_flag_spans(m, fl, 4), ns = model_sparse_spans(m, sp, 4);
    for (int i = 0; i < nf; i++)
        if (or_span(dp, fl[i].flags, fl[i].n, err)) return -1;
    for (int i = 0; i < ng; i++)
        if (sum_dense(dp, &g[i], sp, ns, err)) return -1;
    for (int i = 0; i < ns && !dp->on_device; i++)
        if (sum_flagged_rows(dp, &sp[i], err)) return -1;
    if (dp->on_device && dp->be->check(dp->be, err)) return -1;
    dp->comm_seconds += bp_now() - start;
    dp->sums++;
    return 0;
}

int bp_dp_sum(bp_dp *dp, double *x, size_t n, bp_err *err) {
    return dp->dist ? dp->dist->sum_doubles(dp->dist, x, n, err) : 0;
}

int bp_dp_share_params(bp_dp *dp, model *m, bp_err *err) {
    if (!dp->dist) return 0;
    float *host = malloc(m->num_params * sizeof *host);
    if (!host) return bp_err_set(err, "data-parallel: out of memory for %zu parameters", m->num_params);
    int rc = model_copy_to_host(m, NULL, MODEL_STATE_PARAMS, 0, host, err);
    if (!rc) rc = dp->dist->broadcast(dp->dist, host, m->num_params * sizeof *host, 0, err);
    if (!rc && dp->rank > 0) rc = model_copy_from_host(m, NULL, MODEL_STATE_PARAMS, 0, host, err);
    free(host);
    return rc;
}
