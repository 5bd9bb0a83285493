/* SSD300-ResNet34 (MLPerf, 80 COCO classes) training-step and batch-1 inference benchmark; segc
 * side of bench/torch_ssd.py. Same output keys as bench_deeplab.c, plus segc_detect_ms (decode,
 * thresholds and NMS: the detect hook) for inference.
 * usage: bench_ssd train BATCH f32|bf16 [steps]   forward, matching + loss, backward, SGD -> JSON
 *        bench_ssd infer f32|bf16 [reps]          forward + detect at batch 1            -> JSON
 * Targets: 6 fixed boxes per image (pixels of the 300x300 input), one of them crowd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/model.h"
#include "segc/optim.h"

#include "bench_common.h"

int main(int argc, char **argv) {
    const bool train = argc > 1 && !strcmp(argv[1], "train");
    if (argc < (train ? 4 : 3)) {
        fprintf(stderr, "usage: %s train BATCH f32|bf16 [steps] | infer f32|bf16 [reps]\n", argv[0]);
        return 2;
    }
    const int B = train ? atoi(argv[2]) : 1, S = 300, K = 80;
    const char *dts = argv[train ? 3 : 2];
    const int reps = argc > (train ? 4 : 3) ? atoi(argv[train ? 4 : 3]) : (train ? 3 : 5);
    if (B < 1 || reps < 1) {
        fprintf(stderr, "bench_ssd: bad arguments\n");
        return 2;
    }
    const segc_dtype dt = !strcmp(dts, "bf16") ? SEGC_BF16 : SEGC_F32;
    char err[512];
    /* channels_last=1 in the environment: the ResNet trunk on NHWC activations (model.channels_last) */
    segc_model_opt cl_opt = {.key = "channels_last", .value = "true"};
    const bool channels_last = getenv("channels_last") && !strcmp(getenv("channels_last"), "1");
    segc_model_spec spec = {.type = "ssd", .variant = "r34", .num_classes = K, .in_channels = 3,
                            .opts = channels_last ? &cl_opt : NULL, .n_opts = channels_last ? 1 : 0};
    segc_model *m = segc_model_new(&spec, err, sizeof err);
    if (!m) { fprintf(stderr, "bench_ssd: %s\n", err); return 1; }
    segc_model_init(m, 1);
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 0.0025);
    oc.momentum = 0.9;
    oc.weight_decay = 5e-4;
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = train;
    ctx->grad_enabled = train;
    ctx->free_activations = train;   /* as the trainer: no activation is read after backward */
    ctx->bf16_grads = bench_bf16_grads();
    const int nthreads = segc_get_num_threads();
    float *img = malloc((size_t)B * 3 * S * S * sizeof(float));
    segc_rng r;
    segc_rng_init(&r, 5);
    segc_rng_fill_normal(&r, img, (int64_t)B * 3 * S * S, 0, 1);
    enum { NB = 6 };
    static const float box[NB][4] = {{30, 40, 120, 200}, {150, 20, 290, 140}, {10, 10, 60, 50},
                                     {200, 180, 280, 290}, {5, 100, 295, 260}, {120, 130, 140, 150}};
    int *nb = malloc((size_t)B * sizeof *nb);
    float **boxes = malloc((size_t)B * sizeof *boxes);
    int32_t **labels = malloc((size_t)B * sizeof *labels);
    uint8_t **crowd = malloc((size_t)B * sizeof *crowd);
    for (int i = 0; i < B; i++) {
        nb[i] = NB;
        boxes[i] = malloc(sizeof box);
        memcpy(boxes[i], box, sizeof box);
        labels[i] = malloc(NB * sizeof(int32_t));
        crowd[i] = calloc(NB, 1);
        for (int k = 0; k < NB; k++) labels[i][k] = (i * 7 + k * 13) % K;
        crowd[i][2] = 1;
    }
    segc_targets tg = {.n_images = B, .n_boxes = nb, .boxes = boxes, .box_labels = labels, .box_crowd = crowd,
                       .img_h = S, .img_w = S};
    segc_detect_opts dopt;
    segc_detect_opts_default(&dopt);
    segc_detections dets = {0};
    double best = 1e30, total = 0, det_total = 0;
    int64_t n_det = 0;
    for (int it = 0; it < reps + 2; it++) {
        if (it == 2) bench_work_begin();   /* FLOPs of the timed steps */
        double t0 = segc_now_s();
        segc_ctx_step_begin(ctx);
        ctx->profile = getenv("SEGC_PROFILE") && it == reps + 1;   /* profile the last step */
        segc_profile_mark(ctx);
        segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){B, 3, S, S}, img);
        if (dt == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        segc_model_out out;
        if (!segc_model_forward(ctx, m, x, &out)) { fprintf(stderr, "bench_ssd: %s\n", segc_last_error(ctx)); return 1; }
        double t_det = 0;
        if (train) {
            segc_tensor *loss = segc_model_loss(ctx, m, &out, &tg);
            if (!loss || !segc_backward(ctx, loss)) { fprintf(stderr, "bench_ssd: %s\n", segc_last_error(ctx)); return 1; }
            segc_optimizer_step(opt, 0.0025);
            segc_params_zero_grad(&m->params);
        } else {
            double td = segc_now_s();
            const int ori_h = 480, ori_w = 640;
            if (!segc_model_detect(ctx, m, &out, S, S, &ori_h, &ori_w, &dopt, &dets)) {
                fprintf(stderr, "bench_ssd: %s\n", segc_last_error(ctx));
                return 1;
            }
            t_det = segc_now_s() - td;
            n_det = dets.off[1];
        }
        double dtm = segc_now_s() - t0;
        /* iterations 0 and 1 warm up: primitive caches, arena growth, then its consolidation */
        if (it > 1) {
            total += dtm;
            det_total += t_det;
            if (dtm < best) best = dtm;
        }
    }
    const double mean = total / reps;
    bench_work_end(dt, reps);
    if (getenv("SEGC_PROFILE")) segc_profile_print(ctx, stderr);
    if (train)
        bench_print_model_row("ssd300_r34", true, S, S, B, dts, nthreads, mean, best);
    else
        printf("{\"model\": \"ssd300_r34\", \"mode\": \"infer\", \"shape\": \"%dx%d\", \"batch\": 1, \"dtype\": \"%s\", "
               "\"threads\": %d, \"segc_ms\": %.1f, \"segc_best_ms\": %.1f, \"segc_detect_ms\": %.2f, "
               "\"segc_detections\": %lld, \"segc_peak_rss_mib\": %.0f}\n",
               S, S, dts, nthreads, 1e3 * mean, 1e3 * best, 1e3 * det_total / reps, (long long)n_det,
               bench_row_work.rss_mib);   /* read before the peak GEMM (bench_work_end) */
    for (int i = 0; i < B; i++) free(boxes[i]), free(labels[i]), free(crowd[i]);
    free(nb), free(boxes), free(labels), free(crowd), free(img);
    segc_detections_free(&dets);
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_model_free(m);
    return 0;
}
