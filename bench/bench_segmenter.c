/* Segmenter training-step and inference benchmark; segc side of bench/torch_segmenter.py. Same
 * output keys as bench_train.c / bench_unet2d.c.
 * usage: bench_segmenter train VARIANT DECODER H W BATCH f32|bf16 [steps]   -> one JSON line
 *        bench_segmenter infer VARIANT DECODER H W f32|bf16 [reps]          -> one JSON line
 * VARIANT vit-t|vit-s|vit-b|vit-l (patch 16, position embeddings stored for H x W), DECODER
 * mask|linear, 3 input channels, 150 classes (ADE20K). Training step: forward, CE on the logits
 * upsampled to the label size, backward, SGD (lr 0.001, momentum 0.9: mmseg's recipe); drop-path
 * 0.1 as in training. H and W must be multiples of 16. One case per process so peak RSS is per case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "segc/optim.h"
#include "segc/profile.h"
#include "segc/segmenter.h"

#include "bench_common.h"

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s train VARIANT DECODER H W BATCH f32|bf16 [steps] | infer VARIANT DECODER H W "
                "f32|bf16 [reps]\n", argv[0]);
        return 2;
    }
    bool train = !strcmp(argv[1], "train");
    const char *variant = argv[2], *decoder = argv[3];
    int H = atoi(argv[4]), W = atoi(argv[5]), B = train ? atoi(argv[6]) : 1;
    if (train && argc < 8) { fprintf(stderr, "bench_segmenter: train needs a dtype\n"); return 2; }
    const char *dts = argv[train ? 7 : 6];
    int reps = argc > (train ? 8 : 7) ? atoi(argv[train ? 8 : 7]) : (train ? 3 : 5);
    segc_dtype dt = !strcmp(dts, "bf16") ? SEGC_BF16 : SEGC_F32;
    const int K = 150;
    segc_segmenter_config c;
    memset(&c, 0, sizeof c);
    if (!segc_vit_preset(&c.vit, variant)) { fprintf(stderr, "bench_segmenter: unknown variant %s\n", variant); return 2; }
    c.vit.img_size[0] = H;
    c.vit.img_size[1] = W;
    c.decoder = !strcmp(decoder, "linear") ? SEGC_SEGMENTER_LINEAR : SEGC_SEGMENTER_MASK;
    c.num_classes = K;
    c.dec_layers = 2;
    c.dec_mlp_ratio = 4;
    c.dec_drop_path_rate = 0.1f;
    c.dec_ln_eps = 1e-5f;
    char err[256];
    segc_segmenter *m = segc_segmenter_new(&c, err, sizeof err);
    if (!m) { fprintf(stderr, "bench_segmenter: %s\n", err); return 1; }
    segc_segmenter_init(m, 1);
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 0.001);
    oc.momentum = 0.9;
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    if (!opt) { fprintf(stderr, "bench_segmenter: %s\n", err); return 1; }
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
    for (int64_t i = 0; i < npix; i++) lab[i] = (uint8_t)(segc_rng_u32(&r) % 101 == 100 ? 255 : (i / 97) % K);
    double best = 1e30, total = 0;
    for (int it = 0; it < reps + 2; it++) {
        if (it == 2) bench_work_begin();   /* FLOPs of the timed steps */
        double t0 = segc_now_s();
        segc_ctx_step_begin(ctx);
        ctx->profile = getenv("SEGC_PROFILE") && it == reps + 1;   /* profile the last step */
        if (ctx->profile && !train) segc_profiler_start(NULL);    /* inference records no nodes: trace it */
        segc_profile_mark(ctx);
        segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){B, 3, H, W}, img);
        if (dt == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        segc_tensor *logits = segc_segmenter_forward(ctx, m, x);
        if (train) {
            segc_tensor *y = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){B, H, W}, lab);
            segc_tensor *loss = segc_segmenter_loss(ctx, logits, y, 255);
            if (!loss || !segc_backward(ctx, loss)) { fprintf(stderr, "bench_segmenter: %s\n", segc_last_error(ctx)); return 1; }
            segc_optimizer_step(opt, 0.001);
            segc_params_zero_grad(&m->params);
        } else if (!logits) {
            fprintf(stderr, "bench_segmenter: %s\n", segc_last_error(ctx));
            return 1;
        }
        double dtm = segc_now_s() - t0;
        if (ctx->profile && !train && !segc_profiler_stop_and_write(stderr, err, sizeof err)) fprintf(stderr, "%s\n", err);
        /* iterations 0 and 1 warm up: primitive caches, arena growth, then its consolidation */
        if (it > 1) { total += dtm; if (dtm < best) best = dtm; }
    }
    double mean = total / reps;
    bench_work_end(dt, reps);
    if (getenv("SEGC_PROFILE") && train) segc_profile_print(ctx, stderr);
    char name[64];
    snprintf(name, sizeof name, "segmenter-%s-%s", variant, decoder);
    bench_print_model_row(name, train, H, W, B, dts, nthreads, mean, best);
    free(img);
    free(lab);
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_segmenter_free(m);
    return 0;
}
