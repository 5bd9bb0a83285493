/* Data-parallel training over MPI: see segc/dist.h. The only file that
 * includes mpi.h. Only the main thread calls MPI (MPI_THREAD_FUNNELED).
 *
 * Reduction order (why not MPI_Allreduce): the gradient all-reduce is a
 * reduce-scatter + all-gather written as MPI_Ialltoall (rank q sends chunk r
 * of its bucket to rank r) + a sum by rank r over q = 0, 1, ..., W-1 in that
 * order + MPI_Iallgather of the summed chunks. Both MPI calls only move bytes,
 * so the result does not depend on which algorithm Open MPI's tuned/han
 * components choose (MPI_Reduce_scatter_block and MPI_Allreduce may add in a
 * tree or ring order that changes with message size, process count and
 * placement), and every rank ends with the same bits. The traffic is the
 * ring all-reduce's: 2 (W-1)/W of the bucket per rank. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "segc/dist.h"
#include "segc/task.h"

static struct {
    bool on;                  /* MPI initialised by segc */
    int rank, world, local_rank, local_size;
    int job_rank, job_world;  /* in MPI_COMM_WORLD (rank / world unless in local mode) */
    bool local;               /* local mode: rank / world read 0 / 1, collectives are no-ops */
    char host[MPI_MAX_PROCESSOR_NAME + 1];
    double timeout_s;
    int64_t bucket_elems;
    float *send, *recv;       /* bucket staging buffers (world * chunk floats each) */
    int64_t stage_cap;
    segc_dist_stats stats;
} D = {.world = 1, .job_world = 1, .local_size = 1, .host = "localhost", .timeout_s = 45, .bucket_elems = 25 << 18};

static bool launched(void) {
    const char *v[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (getenv(v[i])) return true;
    return getenv("SLURM_PROCID") && getenv("SLURM_STEP_ID");
}

bool segc_dist_init(char *err, size_t errlen) {
    if (D.on || !launched()) {
        if (!D.on) gethostname(D.host, sizeof D.host - 1);
        return true;
    }
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return segc_errorf(err, errlen, "MPI_Init_thread failed");
    D.on = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &D.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &D.world);
    D.job_rank = D.rank, D.job_world = D.world;
    int len = 0;
    MPI_Get_processor_name(D.host, &len);
    D.host[len] = 0;
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, D.rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &D.local_rank);
        MPI_Comm_size(node, &D.local_size);
        MPI_Comm_free(&node);
    }
    return true;
}

static void ov_free(void);

void segc_dist_finalize(void) {
    free(D.send);
    free(D.recv);
    D.send = D.recv = NULL;
    D.stage_cap = 0;
    ov_free();
    if (D.on) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
        D.on = false;
    }
}

int segc_dist_rank(void) { return D.rank; }
int segc_dist_world(void) { return D.world; }
int segc_dist_local_rank(void) { return D.local_rank; }
int segc_dist_local_size(void) { return D.local_size; }
const char *segc_dist_host(void) { return D.host; }
bool segc_dist_is_writer(void) { return D.rank == 0; }
segc_dist_stats segc_dist_get_stats(void) { return D.stats; }

int segc_dist_default_threads(void) {
    if (!D.on) return 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int t = (int)(cores / (D.local_size > 0 ? D.local_size : 1));
    return t > 0 ? t : 1;
}

void segc_dist_configure(double bucket_mb, double timeout_s) {
    if (bucket_mb > 0) D.bucket_elems = (int64_t)(bucket_mb * 1048576.0 / sizeof(float));
    if (D.bucket_elems < 1024) D.bucket_elems = 1024;
    if (timeout_s > 0) D.timeout_s = timeout_s;
}

void segc_dist_fail(const char *msg) {
    fprintf(stderr, "segc: rank %d on %s: %s\n", D.job_rank, D.host, msg);
    fflush(stderr);
    if (D.on) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

static void check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char s[MPI_MAX_ERROR_STRING], m[MPI_MAX_ERROR_STRING + 128];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    s[len] = 0;
    snprintf(m, sizeof m, "%s failed: %s; ending the job", what, s);
    segc_dist_fail(m);
}

/* The watchdog: polls the request (MPI progresses it inside MPI_Test), sleeping
 * between polls so waiting ranks leave the cores to the compute of others;
 * past the deadline the job ends naming this rank, its host and the collective. */
static void wait_req(MPI_Request *req, const char *what) {
    double t0 = segc_now_s();
    int done = 0;
    for (int spins = 0;; spins++) {
        check(MPI_Test(req, &done, MPI_STATUS_IGNORE), what);
        if (done) return;
        if (spins > 64) {
            struct timespec ts = {0, spins > 4096 ? 1000000 : 50000};
            nanosleep(&ts, NULL);
        }
        double waited = segc_now_s() - t0;
        if (waited > D.timeout_s) {
            char m[300];
            snprintf(m, sizeof m, "%s: no answer from the other ranks for %.0f s (dist.timeout_s): a rank died or hangs; "
                     "ending the job", what, waited);
            segc_dist_fail(m);
        }
    }
}

#define CHUNK_MAX ((int64_t)1 << 30)   /* elements per MPI call (counts are int) */

void segc_dist_bcast_f32(float *v, int64_t n, const char *what) {
    if (!D.on || D.world == 1) return;
    for (int64_t o = 0; o < n; o += CHUNK_MAX) {
        MPI_Request r;
        int cnt = (int)(n - o < CHUNK_MAX ? n - o : CHUNK_MAX);
        check(MPI_Ibcast(v + o, cnt, MPI_FLOAT, 0, MPI_COMM_WORLD, &r), what);
        wait_req(&r, what);
    }
}

static bool stage(int64_t elems) {
    if (elems <= D.stage_cap) return true;
    float *a = realloc(D.send, (size_t)elems * sizeof(float)), *b = a ? realloc(D.recv, (size_t)elems * sizeof(float)) : NULL;
    if (a) D.send = a;
    if (b) D.recv = b;
    if (!a || !b) return false;
    D.stage_cap = elems;
    return true;
}

void segc_dist_allreduce_mean_f32(float *v, int64_t n) {
    if (!D.on || D.world == 1 || n <= 0) return;
    const int W = D.world;
    const float inv = 1.0f / (float)W;
    double t0 = segc_now_s();
    for (int64_t o = 0; o < n; o += D.bucket_elems) {
        int64_t len = n - o < D.bucket_elems ? n - o : D.bucket_elems, chunk = (len + W - 1) / W;
        if (!stage(chunk * W)) segc_dist_fail("all-reduce: out of memory for the bucket buffers");
        memcpy(D.send, v + o, (size_t)len * sizeof(float));
        memset(D.send + len, 0, (size_t)(chunk * W - len) * sizeof(float));
        MPI_Request r;
        check(MPI_Ialltoall(D.send, (int)chunk, MPI_FLOAT, D.recv, (int)chunk, MPI_FLOAT, MPI_COMM_WORLD, &r),
              "gradient all-reduce (alltoall)");
        wait_req(&r, "gradient all-reduce (alltoall)");
        /* this rank's chunk: the sum over ranks 0..W-1, in that order */
        float *mine = D.send + (int64_t)D.rank * chunk;
        for (int64_t i = 0; i < chunk; i++) mine[i] = D.recv[i];
        for (int q = 1; q < W; q++) {
            const float *src = D.recv + (int64_t)q * chunk;
            for (int64_t i = 0; i < chunk; i++) mine[i] += src[i];
        }
        for (int64_t i = 0; i < chunk; i++) mine[i] *= inv;
        check(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, D.send, (int)chunk, MPI_FLOAT, MPI_COMM_WORLD, &r),
              "gradient all-reduce (allgather)");
        wait_req(&r, "gradient all-reduce (allgather)");
        memcpy(v + o, D.send, (size_t)len * sizeof(float));
        D.stats.bytes += len * (int64_t)sizeof(float);
        D.stats.buckets++;
    }
    D.stats.calls++;
    D.stats.seconds += segc_now_s() - t0;
    D.stats.exposed_s += segc_now_s() - t0;
}

void segc_dist_sum_f64(double *v, int64_t n) {
    if (!D.on || D.world == 1 || n <= 0) return;
    static double *all;   /* kept: no heap allocation in a steady-state step */
    static int64_t cap;
    if (n * D.world > cap) {
        double *a = realloc(all, (size_t)(n * D.world) * sizeof(double));
        if (!a) segc_dist_fail("sum: out of memory");
        all = a, cap = n * D.world;
    }
    MPI_Request r;
    check(MPI_Iallgather(v, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD, &r), "sum (allgather)");
    wait_req(&r, "sum (allgather)");
    for (int64_t i = 0; i < n; i++) {
        double s = all[i];
        for (int q = 1; q < D.world; q++) s += all[(int64_t)q * n + i];
        v[i] = s;
    }
}

static void sum_hook(void *user, double *v, int64_t n) {
    (void)user;
    segc_dist_sum_f64(v, n);
}

void segc_dist_sync_bn(segc_ctx *ctx) {
    if (!D.on || D.world == 1) return;
    ctx->sum_hook = sum_hook;
    ctx->sum_hook_user = NULL;
}

#define MSG 480
bool segc_dist_agree(bool ok, char *err, size_t errlen) {
    if (!D.on || D.world == 1) return ok;
    char mine[MSG] = {0}, *all = calloc((size_t)D.world, MSG);
    if (!all) segc_dist_fail("agree: out of memory");
    mine[0] = ok ? 1 : 2;
    if (!ok && err) snprintf(mine + 1, MSG - 1, "%s", err);
    MPI_Request r;
    check(MPI_Iallgather(mine, MSG, MPI_CHAR, all, MSG, MPI_CHAR, MPI_COMM_WORLD, &r), "agreement (allgather)");
    wait_req(&r, "agreement (allgather)");
    bool all_ok = true;
    for (int q = 0; q < D.world && all_ok; q++)
        if (all[(size_t)q * MSG] != 1) {
            all_ok = false;
            char m[MSG];
            snprintf(m, sizeof m, "%s", all + (size_t)q * MSG + 1);
            if (q != D.rank) segc_errorf(err, errlen, "rank %d: %s", q, m);   /* this rank's own message stays as it is */
        }
    free(all);
    return all_ok;
}

bool segc_dist_same(uint64_t value, const char *what, char *err, size_t errlen) {
    if (!D.on || D.world == 1) return true;
    uint64_t *all = malloc((size_t)D.world * sizeof *all);
    if (!all) segc_dist_fail("same: out of memory");
    MPI_Request r;
    check(MPI_Iallgather(&value, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD, &r), "check (allgather)");
    wait_req(&r, "check (allgather)");
    bool same = true;
    for (int q = 1; q < D.world && same; q++)
        if (all[q] != all[0]) {
            same = false;
            segc_errorf(err, errlen, "rank %d was started with another %s than rank 0 (%016llx vs %016llx): every rank "
                        "must run the same segc build with the same configuration", q, what,
                        (unsigned long long)all[q], (unsigned long long)all[0]);
        }
    free(all);
    return same;
}

bool segc_dist_shard_batch(segc_ctx *ctx, int global_batch, int *local_batch, char *err, size_t errlen) {
    *local_batch = global_batch;
    if (!D.on || D.world == 1) return true;
    if (global_batch % D.world)
        return segc_errorf(err, errlen, "data.batch_size %d (the global batch) is not divisible by the %d processes; use "
                           "a multiple of %d", global_batch, D.world, D.world);
    *local_batch = global_batch / D.world;
    /* the sampler interleaves ranks (rank r takes global stream positions r, r+W, ...), so local
     * sample j is sample j*W + r of the global batch */
    ctx->sample_count = *local_batch;
    ctx->sample_stride = D.world;
    ctx->sample_first = D.rank;
    return true;
}

void segc_dist_loader_shard(int *rank, int *world) {
    *rank = D.rank;
    *world = D.world;
}

void segc_dist_eval_share(int64_t max_global, int *rank, int *world, int64_t *max_local) {
    *rank = D.rank;
    *world = D.world;
    /* positions 0..max_global-1 of the pass; this rank stands on rank, rank + W, ... */
    *max_local = max_global <= 0 ? 0 : (max_global - D.rank + D.world - 1) / D.world;   /* >= 1 when max_global >= world */
}

bool segc_dist_merge_evaluator(segc_evaluator *ev, char *err, size_t errlen) {
    if (!D.on || D.world == 1) return true;
    int64_t n = 0;
    int64_t *mine = segc_evaluator_serialize(ev, &n);
    if (!mine) segc_dist_fail("evaluation merge: out of memory");
    int *counts = malloc((size_t)D.world * sizeof *counts), *displs = malloc((size_t)D.world * sizeof *displs);
    int cnt = (int)n;
    MPI_Request r;
    check(MPI_Iallgather(&cnt, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD, &r), "evaluation merge (sizes)");
    wait_req(&r, "evaluation merge (sizes)");
    int64_t total = 0;
    for (int q = 0; q < D.world; q++) displs[q] = (int)total, total += counts[q];
    int64_t *all = malloc((size_t)total * sizeof *all);
    if (!all) segc_dist_fail("evaluation merge: out of memory");
    check(MPI_Iallgatherv(mine, cnt, MPI_INT64_T, all, counts, displs, MPI_INT64_T, MPI_COMM_WORLD, &r),
          "evaluation merge (states)");
    wait_req(&r, "evaluation merge (states)");
    /* every rank rebuilds the merged state in rank order: reset, then add ranks 0..W-1 */
    segc_evaluator_reset(ev);
    bool ok = true;
    for (int q = 0; q < D.world && ok; q++) ok = segc_evaluator_merge_serialized(ev, all + displs[q], counts[q], err, errlen);
    free(all);
    free(mine);
    free(counts);
    free(displs);
    return ok;
}

void segc_dist_sampler_position(int64_t g, int64_t n, int64_t *epoch, int64_t *position) {
    int64_t p = g + D.rank;
    *epoch = p / n;
    *position = p % n;
}

/* ---- gradient all-reduce overlapped with backward ----
 * Buckets cover the flat gradient buffer from its end (the head's parameters, whose gradients are
 * final first) to its start. A parameter's gradient is final once every tape node that reads it
 * has been visited by backward (ctx->node_hook); a bucket is ready when all its parameters are.
 * MPI needs every rank to issue collectives in the same order, so issue points are fixed by the
 * tape (identical on every rank), never by timing: a bucket's alltoall is issued when it becomes
 * ready; just before, the previous bucket's alltoall is completed, summed and its allgather issued.
 * Between issue points the hook only tests requests (MPI progresses them inside MPI_Test). Each
 * element is the same ordered sum as segc_dist_allreduce_mean_f32, so the bits are the same. */
typedef struct ov_bucket {
    int64_t lo, hi, chunk;
    int pending;               /* parameters of this bucket whose gradient is not final yet */
    int stage;                 /* 0 waiting, 1 alltoall issued, 2 allgather issued, 3 done */
    bool req_done;
    MPI_Request req;
    float *send, *recv;
    uint64_t sum;              /* checksum of the gradients when sent (verified after backward) */
} ov_bucket;

static struct {
    segc_params *p;
    ov_bucket *b;
    int nb, cap;
    int *uses;                 /* per parameter: tape nodes still to visit that read it */
    int last;                  /* last issued bucket (-1: none) */
    bool in_backward;
    double t0;
} OV = {.last = -1};

static int param_of(const segc_params *p, const segc_tensor *t) {
    if (!t || !t->is_param || !t->grad || t->grad < p->grad || t->grad >= p->grad + p->total) return -1;
    int64_t off = t->grad - p->grad;
    int lo = 0, hi = p->n - 1;
    while (lo < hi) {   /* last tensor starting at or before off */
        int mid = (lo + hi + 1) / 2;
        if (p->offset[mid] <= off) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* order-dependent checksum of the bits of n floats */
static uint64_t bits_sum(const float *v, int64_t n) {
    const uint32_t *u = (const uint32_t *)v;
    uint64_t h = 0;
    for (int64_t i = 0; i < n; i++) h = h * 0x9E3779B97F4A7C15ull + u[i] + 1;
    return h;
}

static void ov_sum_and_gather(ov_bucket *b) {
    const int W = D.world;
    const float inv = 1.0f / (float)W;
    float *mine = b->send + (int64_t)D.rank * b->chunk;
    for (int64_t i = 0; i < b->chunk; i++) mine[i] = b->recv[i];
    for (int q = 1; q < W; q++) {
        const float *src = b->recv + (int64_t)q * b->chunk;
        for (int64_t i = 0; i < b->chunk; i++) mine[i] += src[i];
    }
    for (int64_t i = 0; i < b->chunk; i++) mine[i] *= inv;
    check(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b->send, (int)b->chunk, MPI_FLOAT, MPI_COMM_WORLD, &b->req),
          "gradient all-reduce (allgather)");
    b->req_done = false;
    b->stage = 2;
}

static void ov_finish_stage1(ov_bucket *b) {
    if (!b->req_done) wait_req(&b->req, "gradient all-reduce (alltoall)");
    ov_sum_and_gather(b);
}

static void ov_issue(int k) {
    ov_bucket *b = &OV.b[k];
    if (OV.last >= 0 && OV.b[OV.last].stage == 1) ov_finish_stage1(&OV.b[OV.last]);
    int64_t len = b->hi - b->lo;
    memcpy(b->send, OV.p->grad + b->lo, (size_t)len * sizeof(float));
    b->sum = bits_sum(b->send, len);
    memset(b->send + len, 0, (size_t)(b->chunk * D.world - len) * sizeof(float));
    check(MPI_Ialltoall(b->send, (int)b->chunk, MPI_FLOAT, b->recv, (int)b->chunk, MPI_FLOAT, MPI_COMM_WORLD, &b->req),
          "gradient all-reduce (alltoall)");
    b->req_done = false;
    b->stage = 1;
    if (OV.t0 == 0) OV.t0 = segc_now_s();   /* the all-reduce time starts with the first bucket */
    OV.last = k;
    D.stats.bytes += len * (int64_t)sizeof(float);
    D.stats.buckets++;
    D.stats.buckets_in_backward += OV.in_backward;
}

static void ov_param_final(int i) {
    const segc_params *p = OV.p;
    int64_t lo = p->offset[i], hi = lo + segc_numel(p->t[i]);
    if (hi <= lo) return;
    for (int k = 0; k < OV.nb; k++)
        if (OV.b[k].lo < hi && lo < OV.b[k].hi && --OV.b[k].pending == 0) ov_issue(k);
}

static void ov_hook(void *user, const segc_node *nd) {
    (void)user;
    for (int k = 0; k < nd->n_in; k++) {
        int i = param_of(OV.p, nd->in[k]);
        if (i >= 0 && --OV.uses[i] == 0) ov_param_final(i);
    }
    for (int k = 0; k < OV.nb; k++) {   /* progress what is in flight */
        ov_bucket *b = &OV.b[k];
        if ((b->stage == 1 || b->stage == 2) && !b->req_done) {
            int done = 0;
            check(MPI_Test(&b->req, &done, MPI_STATUS_IGNORE), "gradient all-reduce (progress)");
            b->req_done = done != 0;
        }
    }
}

void segc_dist_grads_begin(segc_ctx *ctx, segc_params *p) {
    if (!D.on || D.world == 1) return;
    OV.p = p;
    OV.last = -1;
    OV.t0 = 0;
    int64_t B = D.bucket_elems, nb = (p->total + B - 1) / B;
    if (nb > OV.cap) {
        ov_bucket *nbk = realloc(OV.b, (size_t)nb * sizeof *nbk);
        if (!nbk) segc_dist_fail("all-reduce: out of memory for buckets");
        memset(nbk + OV.cap, 0, (size_t)(nb - OV.cap) * sizeof *nbk);
        OV.b = nbk;
        OV.cap = (int)nb;
    }
    OV.nb = (int)nb;
    int *u = realloc(OV.uses, (size_t)(p->n > 0 ? p->n : 1) * sizeof *u);
    if (!u) segc_dist_fail("all-reduce: out of memory");
    OV.uses = u;
    memset(u, 0, (size_t)p->n * sizeof *u);
    for (const segc_node *nd = ctx->tape; nd; nd = nd->prev)
        for (int k = 0; k < nd->n_in; k++) {
            int i = param_of(p, nd->in[k]);
            if (i >= 0) u[i]++;
        }
    for (int k = 0; k < OV.nb; k++) {
        ov_bucket *b = &OV.b[k];
        b->hi = p->total - k * B;
        b->lo = b->hi - B > 0 ? b->hi - B : 0;
        int64_t chunk = (b->hi - b->lo + D.world - 1) / D.world;
        if (chunk != b->chunk || !b->send) {
            free(b->send);
            free(b->recv);
            b->send = malloc((size_t)(chunk * D.world) * sizeof(float));
            b->recv = malloc((size_t)(chunk * D.world) * sizeof(float));
            if (!b->send || !b->recv) segc_dist_fail("all-reduce: out of memory for the bucket buffers");
            b->chunk = chunk;
        }
        b->stage = 0;
        b->pending = 0;
        for (int i = 0; i < p->n; i++) {
            int64_t lo = p->offset[i], hi = lo + segc_numel(p->t[i]);
            if (u[i] > 0 && lo < b->hi && b->lo < hi) b->pending++;
        }
    }
    for (int k = 0; k < OV.nb; k++)   /* buckets nothing on the tape writes: ready now */
        if (OV.b[k].pending == 0) ov_issue(k);
    ctx->node_hook = ov_hook;
    ctx->node_hook_user = NULL;
    OV.in_backward = true;
}

void segc_dist_grads_finish(segc_ctx *ctx, segc_params *p) {
    if (!D.on || D.world == 1) return;
    ctx->node_hook = NULL;
    OV.in_backward = false;
    double t1 = segc_now_s();
    for (int k = 0; k < OV.nb; k++)   /* gradients backward never reached (an aborted tape) */
        if (OV.b[k].stage == 0) ov_issue(k);
    if (OV.last >= 0 && OV.b[OV.last].stage == 1) ov_finish_stage1(&OV.b[OV.last]);
    for (int k = 0; k < OV.nb; k++) {
        ov_bucket *b = &OV.b[k];
        if (!b->req_done) wait_req(&b->req, "gradient all-reduce (allgather)");
        /* a gradient written after its bucket left (an op writing a parameter's gradient that is not
         * among its tape inputs) would be lost silently: refuse instead */
        if (bits_sum(p->grad + b->lo, b->hi - b->lo) != b->sum)
            segc_dist_fail("gradient all-reduce: a parameter gradient changed after its bucket was sent (an op writes "
                           "the gradient of a parameter that is not among its tape inputs); train with dist.overlap=false");
        memcpy(p->grad + b->lo, b->send, (size_t)(b->hi - b->lo) * sizeof(float));
        b->stage = 3;
    }
    D.stats.calls++;
    D.stats.seconds += segc_now_s() - OV.t0;
    D.stats.exposed_s += segc_now_s() - t1;
}

static void ov_free(void) {
    for (int k = 0; k < OV.cap; k++) free(OV.b[k].send), free(OV.b[k].recv);
    free(OV.b);
    free(OV.uses);
    OV.b = NULL, OV.uses = NULL, OV.cap = OV.nb = 0;
}

/* ---- local mode and point-to-point messages (segc tune over ranks) ---- */
void segc_dist_set_local(bool on) {
    D.local = on;
    D.rank = on ? 0 : D.job_rank;
    D.world = on ? 1 : D.job_world;
}

int segc_dist_job_rank(void) { return D.job_rank; }
int segc_dist_job_world(void) { return D.job_world; }

/* polls (MPI progresses inside MPI_Test / MPI_Iprobe), sleeping between polls so a waiting
 * rank leaves the cores to the others; no deadline */
static void nap(int spins) {
    if (spins <= 64) return;
    struct timespec ts = {0, spins > 4096 ? 2000000 : 50000};
    nanosleep(&ts, NULL);
}

void segc_dist_send_bytes(int dest, int tag, const void *buf, size_t n) {
    if (!D.on || dest < 0 || dest >= D.job_world || dest == D.job_rank || n > (size_t)1 << 30)
        segc_dist_fail("send: bad destination or size");
    MPI_Request r;
    check(MPI_Isend(buf, (int)n, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &r), "send");
    int done = 0;
    for (int spins = 0; !done; spins++) {
        check(MPI_Test(&r, &done, MPI_STATUS_IGNORE), "send");
        if (!done) nap(spins);
    }
}

int64_t segc_dist_recv_bytes(int src, int tag, void *buf, size_t cap, int *from, double wait_s) {
    if (!D.on) segc_dist_fail("receive: MPI is not running");
    double t0 = segc_now_s();
    int found = 0;
    MPI_Status st;
    for (int spins = 0;; spins++) {
        check(MPI_Iprobe(src < 0 ? MPI_ANY_SOURCE : src, tag, MPI_COMM_WORLD, &found, &st), "receive (probe)");
        if (found) break;
        if (wait_s >= 0 && segc_now_s() - t0 >= wait_s) return -1;
        nap(spins);
    }
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if ((size_t)count > cap) segc_dist_fail("receive: message larger than the buffer");
    check(MPI_Recv(buf, count, MPI_BYTE, st.MPI_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "receive");
    if (from) *from = st.MPI_SOURCE;
    return count;
}
