/* segc data-parallel training over MPI (Open MPI): the only part of segc that
 * knows how many processes there are. src/train/dist.c is the only file that
 * includes mpi.h; everything above it (trainer, evaluation, tune) calls these
 * functions, which are cheap no-ops in a plain process (world size 1).
 *
 * Launch: `mpirun -np N segc train CFG`, `mpirun -H a:2,b:2 segc train CFG`,
 * `srun segc train CFG`. MPI is initialised only when a launcher's variables
 * are present (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK, SLURM_PROCID with
 * SLURM_STEP_ID); otherwise segc runs as one process without touching MPI.
 *
 * Determinism: every reduction here has a fixed order, independent of the
 * algorithm MPI picks. Sums are computed by segc, not by MPI: a reduce-
 * scatter is an MPI_Ialltoall (bytes only) followed by an element-wise sum
 * over ranks 0, 1, ..., W-1 by the chunk's owner, and the all-gather that
 * follows is MPI_Iallgather (bytes only). MPI_Allreduce / MPI_Reduce_scatter
 * are never used on floats: Open MPI picks their algorithm (and so the order
 * of the additions) by message size and process count, so their results may
 * differ between runs or between ranks.
 *
 * Failure: every collective waits with a deadline (dist.timeout_s); a rank
 * that died or hangs ends the whole job (MPI_Abort) with a message naming
 * this rank, its host and the collective. MPI errors are returned
 * (MPI_ERRORS_RETURN) and end the job the same way. */
#ifndef SEGC_DIST_H
#define SEGC_DIST_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segc/core.h"
#include "segc/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct segc_evaluator segc_evaluator;

/* Initialises MPI when launched by a launcher (idempotent; false + message
 * when MPI fails to start). Call early in main; segc_dist_finalize at exit. */
bool segc_dist_init(char *err, size_t errlen);
void segc_dist_finalize(void);

/* Rank and world of this process (0 of 1 without a launcher), the processes
 * on this host and this one's index among them, the host name. Exposed for
 * the trainer, `segc tune` (trials over ranks) and messages. */
int segc_dist_rank(void);
int segc_dist_world(void);
int segc_dist_local_rank(void);
int segc_dist_local_size(void);
const char *segc_dist_host(void);
/* true on the process that writes logs, metrics, reports and checkpoints (rank 0) */
bool segc_dist_is_writer(void);
/* Default compute threads: the host's cores / processes on this host when
 * launched (0 in a plain process: OpenMP's default). */
int segc_dist_default_threads(void);

/* Gradient all-reduce bucket size (MiB) and the collective deadline (s). */
void segc_dist_configure(double bucket_mb, double timeout_s);

/* ---- collectives (all ranks call them in the same order) ---- */
/* rank 0's v[0..n) on every rank */
void segc_dist_bcast_f32(float *v, int64_t n, const char *what);
/* v = (sum over ranks in rank order) / world, in buckets; identical bits on every rank */
void segc_dist_allreduce_mean_f32(float *v, int64_t n);
/* The same all-reduce of p->grad overlapped with backward: begin after the
 * forward (it reads ctx's tape and sets ctx->node_hook), finish after
 * segc_backward; bitwise the result of segc_dist_allreduce_mean_f32. */
void segc_dist_grads_begin(segc_ctx *ctx, segc_params *p);
void segc_dist_grads_finish(segc_ctx *ctx, segc_params *p);
/* v[i] = sum over ranks, added in rank order (identical on every rank); small n */
void segc_dist_sum_f64(double *v, int64_t n);
/* Collective success: false on every rank when any rank passes ok = false,
 * with err set to the first failing rank's message ("rank R (HOST): ...");
 * true otherwise. */
bool segc_dist_agree(bool ok, char *err, size_t errlen);
/* false + message naming the first rank whose value differs from rank 0's */
bool segc_dist_same(uint64_t value, const char *what, char *err, size_t errlen);
/* Ends the whole job now: prints "segc: rank R on HOST: msg" and aborts every
 * rank with exit status 1 (a plain process just exits). */
void segc_dist_fail(const char *msg) __attribute__((noreturn));

/* ---- helpers for the trainer and evaluation ---- */
/* The batch this process computes of a global batch of global_batch samples
 * (its local size, false + message when the world does not divide it), and
 * ctx's sample map so random streams are drawn for the global batch. */
bool segc_dist_shard_batch(segc_ctx *ctx, int global_batch, int *local_batch, char *err, size_t errlen);
/* The loader's rank / world_size for this process's shard of every batch. */
void segc_dist_loader_shard(int *rank, int *world);
/* SyncBatchNorm: ctx's batch-norm statistics summed over every rank (no-op in one process). */
void segc_dist_sync_bn(segc_ctx *ctx);
/* This rank's share of a sequential pass: rank / world and the samples of
 * the first max_global (0: all) that fall to this rank. */
void segc_dist_eval_share(int64_t max_global, int *rank, int *world, int64_t *max_local);
/* Merges every rank's evaluator state into ev (in rank order, the same result
 * on every rank). false + message. */
bool segc_dist_merge_evaluator(segc_evaluator *ev, char *err, size_t errlen);
/* The sampler position of this rank from the global stream position g
 * (samples consumed by all ranks) of a dataset of n samples. */
void segc_dist_sampler_position(int64_t g, int64_t n, int64_t *epoch, int64_t *position);

/* ---- several jobs in one launch (segc tune: one trial per rank) ---- */
/* Local mode: this process trains alone. segc_dist_rank / world read 0 / 1 (so
 * every collective above is a no-op and this process writes its own run dir),
 * while the messages below still reach every rank of the launch. */
void segc_dist_set_local(bool on);
/* rank and size of the whole launch (MPI_COMM_WORLD), also in local mode */
int segc_dist_job_rank(void);
int segc_dist_job_world(void);
/* Point-to-point bytes over the whole launch. Send: to rank dest with a tag (>= 0),
 * returns once the bytes are on their way. Receive: the next message with tag from
 * src (-1: any rank) into buf (cap bytes; a larger message ends the job); returns
 * its size and sets *from, or -1 when none arrived within wait_s (< 0: waits
 * forever, without the collectives' dist.timeout_s deadline: a tune worker may
 * wait long for its next trial). Waiting polls and sleeps (cores stay free). */
void segc_dist_send_bytes(int dest, int tag, const void *buf, size_t n);
int64_t segc_dist_recv_bytes(int src, int tag, void *buf, size_t cap, int *from, double wait_s);

/* all-reduce statistics of this process (bench-dist): bytes, calls, seconds */
typedef struct segc_dist_stats {
    int64_t bytes, calls;
    double seconds;            /* from the first bucket's start to the end of the all-reduce */
    double exposed_s;          /* of which after backward (not hidden behind it) */
    int64_t buckets, buckets_in_backward;   /* buckets issued, and of those before backward ended */
} segc_dist_stats;
segc_dist_stats segc_dist_get_stats(void);

#ifdef __cplusplus
}
#endif
#endif
