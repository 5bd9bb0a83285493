/* SegFormer-B0 training-step and inference benchmark (segc side of `make bench-train`).
 * usage: bench_train train H W BATCH f32|bf16 [steps]   -> one JSON line
 *        bench_train infer H W f32|bf16 [reps]          -> one JSON line
 * One case per process so peak RSS is per case. Not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "segc/optim.h"
#include "segc/model.h"

#include "bench_common.h"

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s train H W BATCH f32|bf16 [steps] | infer H W f32|bf16 [reps]\n", argv[0]);
        return 2;
    }
    bool train = !strcmp(argv[1], "train");
    int H = atoi(argv[2]), W = atoi(argv[3]), B = train ? atoi(argv[4]) : 1;
    const char *dts = argv[train ? 5 : 4];
    int reps = argc > (train ? 6 : 5) ? atoi(argv[train ? 6 : 5]) : (train ? 3 : 5);
    segc_dtype dt = !strcmp(dts, "bf16") ? SEGC_BF16 : SEGC_F32;
    /* through the model registry, as `segc train` builds it */
    segc_model_spec spec = {"segformer", "b0", 150, 3, NULL, 0, NULL};
    char err[256];
    segc_model *m = segc_model_new(&spec, err, sizeof err);
    if (!m) { fprintf(stderr, "bench_train: %s\n", err); return 1; }
    segc_model_init(m, 1);
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 6e-5);
    oc.weight_decay = 0.01;
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = train;
    ctx->grad_enabled = train;
    ctx->free_activations = train;   /* as the trainer: no activation is read after backward */
    ctx->bf16_grads = bench_bf16_grads();
    int nthreads = segc_get_num_threads();
    int64_t npix = (int64_t)B * H * W;
    float *img = malloc((size_t)npix * 3 * sizeof(float));
    uint8_t *lab = malloc((size_t)npix);
    segc_rng r;
    segc_rng_init(&r, 5);
    segc_rng_fill_normal(&r, img, npix * 3, 0, 1);
    for (int64_t i = 0; i < npix; i++) lab[i] = (uint8_t)(segc_rng_u32(&r) % 151 == 150 ? 255 : (i / 97) % 150);
    double best = 1e30, total = 0;
    for (int it = 0; it < reps + 2; it++) {
        if (it == 2) bench_work_begin();   /* FLOPs of the timed steps */
        double t0 = segc_now_s();
        segc_ctx_step_begin(ctx);
        ctx->profile = getenv("SEGC_PROFILE") && it == reps + 1;   /* profile the last step */
        segc_profile_mark(ctx);
        segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){B, 3, H, W}, img);
        if (dt == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        segc_model_out out;
        segc_tensor *logits = segc_model_forward(ctx, m, x, &out) ? out.maps[0] : NULL;
        if (train) {
            segc_tensor *y = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){B, H, W}, lab);
            segc_targets tg = {.labels = y, .ignore_index = 255};
            segc_tensor *loss = logits ? segc_model_loss(ctx, m, &out, &tg) : NULL;
            if (!loss || !segc_backward(ctx, loss)) { fprintf(stderr, "bench_train: %s\n", segc_last_error(ctx)); return 1; }
            segc_optimizer_step(opt, 6e-5);
            segc_params_zero_grad(&m->params);
        } else if (!logits) {
            fprintf(stderr, "bench_train: %s\n", segc_last_error(ctx));
            return 1;
        }
        double dtm = segc_now_s() - t0;
        /* iterations 0 and 1 warm up: primitive caches, arena growth, then its consolidation */
        if (it > 1) { total += dtm; if (dtm < best) best = dtm; }
    }
    double mean = total / reps;
    bench_work_end(dt, reps);
    if (getenv("SEGC_PROFILE")) segc_profile_print(ctx, stderr);
    bench_print_model_row("segformer-b0", train, H, W, B, dts, nthreads, mean, best);
    free(img);
    free(lab);
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_model_free(m);
    return 0;
}
