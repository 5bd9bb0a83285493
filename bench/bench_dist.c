/* Data-parallel SegFormer-B0 training step over MPI (segc side of `make bench-dist`).
 * usage: [mpirun -np N] bench_dist H W GLOBAL_BATCH THREADS [steps]  -> one JSON line from rank 0:
 * step time, global img/s, all-reduce time per step, the part of it hidden behind backward (the
 * buckets are all-reduced while backward runs) and the bytes all-reduced per step. Synthetic data,
 * SyncBatchNorm on, the trainer's path (segc/dist.h). Not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/dist.h"
#include "segc/model.h"
#include "segc/optim.h"

int main(int argc, char **argv) {
    char err[512];
    if (argc < 5) {
        fprintf(stderr, "usage: %s H W GLOBAL_BATCH THREADS [steps]\n", argv[0]);
        return 2;
    }
    if (!segc_dist_init(err, sizeof err)) { fprintf(stderr, "bench_dist: %s\n", err); return 1; }
    int H = atoi(argv[1]), W = atoi(argv[2]), GB = atoi(argv[3]), T = atoi(argv[4]), steps = argc > 5 ? atoi(argv[5]) : 5;
    segc_model_spec spec = {"segformer", "b0", 150, 3, NULL, 0, NULL};
    segc_model *m = segc_model_new(&spec, err, sizeof err);
    if (!m) { fprintf(stderr, "bench_dist: %s\n", err); return 1; }
    segc_model_init(m, 1);
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 6e-5);
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    segc_ctx *ctx = segc_ctx_new(0);
    segc_set_num_threads(ctx, T);
    int B = GB;
    if (!segc_dist_shard_batch(ctx, GB, &B, err, sizeof err)) segc_dist_fail(err);
    segc_dist_sync_bn(ctx);
    const char *bmb = getenv("BENCH_DIST_BUCKET_MB");   /* default 25, as dist.bucket_mb */
    segc_dist_configure(bmb ? atof(bmb) : 25, 120);
    segc_dist_bcast_f32(m->params.data, m->params.total, "parameter broadcast");
    int64_t npix = (int64_t)B * H * W;
    float *img = malloc((size_t)npix * 3 * sizeof(float));
    uint8_t *lab = malloc((size_t)npix);
    segc_rng r;
    segc_rng_init(&r, 5 + (uint64_t)segc_dist_rank());
    segc_rng_fill_normal(&r, img, npix * 3, 0, 1);
    for (int64_t i = 0; i < npix; i++) lab[i] = (uint8_t)((i / 97) % 150);
    double *times = calloc((size_t)steps, sizeof *times);
    segc_dist_stats s0 = {0};
    for (int it = 0; it < steps + 2; it++) {
        if (it == 2) s0 = segc_dist_get_stats();   /* two warm-up steps */
        double t0 = segc_now_s();
        segc_ctx_step_begin(ctx);
        segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){B, 3, H, W}, img);
        segc_tensor *y = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){B, H, W}, lab);
        segc_model_out out;
        segc_targets tg = {.labels = y, .ignore_index = 255};
        segc_tensor *loss = segc_model_forward(ctx, m, x, &out) ? segc_model_loss(ctx, m, &out, &tg) : NULL;
        segc_params_zero_grad(&m->params);
        segc_dist_grads_begin(ctx, &m->params);
        if (!loss || !segc_backward(ctx, loss)) segc_dist_fail(segc_last_error(ctx));
        segc_dist_grads_finish(ctx, &m->params);
        segc_optimizer_step(opt, 6e-5);
        double dt = segc_now_s() - t0;
        double v[1] = {dt};
        segc_dist_sum_f64(v, 1);   /* the mean over ranks (they wait for each other anyway) */
        if (it >= 2) times[it - 2] = v[0] / segc_dist_world();
    }
    segc_dist_stats s = segc_dist_get_stats();
    double sum = 0, best = 1e30;
    for (int i = 0; i < steps; i++) sum += times[i], best = times[i] < best ? times[i] : best;
    double step = sum / steps, ar = (s.seconds - s0.seconds) / steps, ex = (s.exposed_s - s0.exposed_s) / steps;
    if (segc_dist_is_writer())
        printf("{\"bench\":\"dist\",\"model\":\"segformer-b0\",\"h\":%d,\"w\":%d,\"global_batch\":%d,\"processes\":%d,"
               "\"threads\":%d,\"step_ms\":%.1f,\"step_ms_min\":%.1f,\"img_s\":%.2f,\"allreduce_ms\":%.1f,"
               "\"exposed_ms\":%.1f,\"hidden_frac\":%.3f,\"bytes_per_step\":%lld,\"buckets_per_step\":%.1f,"
               "\"buckets_in_backward\":%.1f}\n",
               H, W, GB, segc_dist_world(), T, 1e3 * step, 1e3 * best, GB / step, 1e3 * ar, 1e3 * ex,
               ar > 0 ? 1 - ex / ar : 0, (long long)((s.bytes - s0.bytes) / (steps > 0 ? steps : 1)),
               (double)(s.buckets - s0.buckets) / steps, (double)(s.buckets_in_backward - s0.buckets_in_backward) / steps);
    free(times);
    free(img);
    free(lab);
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_model_free(m);
    segc_dist_finalize();
    return 0;
}
