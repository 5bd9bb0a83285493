/* DeepLabV3+ R50 (V1c, output stride 16, ADE20K's 150 classes, aux head) training-step and
 * inference benchmark, and a ResNet-50 classification trunk (torchvision layout: 7x7 stem, output
 * stride 32, global pool, fc 1000, cross entropy); segc side of bench/torch_deeplab.py. Same output
 * keys as bench_unet2d.c / bench_train.c.
 * usage: bench_deeplab train H W BATCH f32|bf16 [steps]   DeepLabV3+ step  -> one JSON line
 *        bench_deeplab trunk H W BATCH f32|bf16 [steps]   ResNet-50 step   -> one JSON line
 *        bench_deeplab infer H W f32|bf16 [reps]          DeepLabV3+ batch-1 inference
 * Step: forward, loss (mmseg CE + 0.4 aux CE; or CE on 1000 classes), backward, SGD (lr 0.01,
 * momentum 0.9, weight decay 5e-4). One case per process so peak RSS is per case. channels_last=1 in the
 * environment runs the ResNet on channels-last activations (as the twin's torch.channels_last). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "segc/deeplabv3plus.h"
#include "segc/optim.h"

#include "bench_common.h"

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s train|trunk H W BATCH f32|bf16 [steps] | infer H W f32|bf16 [reps]\n", argv[0]);
        return 2;
    }
    const bool trunk = !strcmp(argv[1], "trunk"), train = trunk || !strcmp(argv[1], "train");
    int H = atoi(argv[2]), W = atoi(argv[3]), B = train ? atoi(argv[4]) : 1;
    const char *dts = argv[train ? 5 : 4];
    int reps = argc > (train ? 6 : 5) ? atoi(argv[train ? 6 : 5]) : (train ? 3 : 5);
    if (argc < (train ? 6 : 5) || H < 32 || W < 32 || B < 1 || reps < 1) {
        fprintf(stderr, "bench_deeplab: bad arguments\n");
        return 2;
    }
    segc_dtype dt = !strcmp(dts, "bf16") ? SEGC_BF16 : SEGC_F32;
    /* channels_last=1 in the environment, as for the PyTorch twin: the backbone runs NHWC */
    const bool channels_last = getenv("channels_last") && !strcmp(getenv("channels_last"), "1");
    const int K = trunk ? 1000 : 150;
    char err[512];
    segc_params params;
    segc_params_init(&params);
    segc_deeplab *dl = NULL;
    segc_resnet *rn = NULL;
    segc_linear_layer fc;
    if (trunk) {
        segc_resnet_config rc;
        segc_resnet_config_default(&rc, 50, 3);
        rc.stem = SEGC_RESNET_STEM_PLAIN;
        rc.zero_init_residual = false;   /* torchvision's default */
        segc_resnet_set_output_stride(&rc, 32);
        rc.channels_last = channels_last;
        rn = segc_resnet_new(&rc, &params, "", err, sizeof err);
        if (!rn) { fprintf(stderr, "bench_deeplab: %s\n", err); return 1; }
        segc_linear_layer_init(&fc, &params, "fc", 2048, K, true);
        segc_params_finalize(&params);
        segc_rng rng;
        segc_rng_init(&rng, 1);
        segc_resnet_init(rn, &rng);
        segc_init_normal(fc.weight, &rng, 0.0f, 0.01f);
    } else {
        segc_deeplab_config c;
        segc_deeplab_config_default(&c, 50, 16, 3, K);
        c.backbone.channels_last = channels_last;
        dl = segc_deeplab_new(&c, &params, err, sizeof err);
        if (!dl) { fprintf(stderr, "bench_deeplab: %s\n", err); return 1; }
        segc_deeplab_init(dl, 1);
    }
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 0.01);
    oc.momentum = 0.9;
    oc.weight_decay = 5e-4;
    segc_optimizer *opt = segc_optimizer_new(&params, &oc, err, sizeof err);
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = train;
    ctx->grad_enabled = train;
    ctx->free_activations = train;   /* as the trainer: no activation is read after backward */
    ctx->bf16_grads = bench_bf16_grads();
    int nthreads = segc_get_num_threads();
    int64_t npix = (int64_t)B * H * W;
    float *img = malloc((size_t)npix * 3 * sizeof(float));
    uint8_t *lab = malloc((size_t)npix);
    int32_t *cls = malloc((size_t)B * sizeof(int32_t));
    segc_rng r;
    segc_rng_init(&r, 5);
    segc_rng_fill_normal(&r, img, npix * 3, 0, 1);
    for (int64_t i = 0; i < npix; i++) lab[i] = (uint8_t)(segc_rng_u32(&r) % 101 == 100 ? 255 : (i / 97) % K);
    for (int i = 0; i < B; i++) cls[i] = (int32_t)(segc_rng_u32(&r) % (uint32_t)K);
    double best = 1e30, total = 0;
    for (int it = 0; it < reps + 2; it++) {
        if (it == 2) bench_work_begin();   /* FLOPs of the timed steps */
        double t0 = segc_now_s();
        segc_ctx_step_begin(ctx);
        ctx->profile = getenv("SEGC_PROFILE") && it == reps + 1;   /* profile the last step */
        segc_profile_mark(ctx);
        segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){B, 3, H, W}, img);
        if (dt == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        segc_tensor *loss = NULL;
        if (trunk) {
            segc_tensor *f[4];
            if (segc_resnet_forward(ctx, rn, x, f)) {
                segc_tensor *pooled = segc_reshape(ctx, segc_adaptive_avg_pool2d(ctx, f[3], 1, 1), 2, (int64_t[]){B, 2048});
                segc_tensor *logits = segc_linear_layer_fwd(ctx, &fc, pooled);
                segc_tensor *y = segc_tensor_wrap(ctx, SEGC_I32, 1, (int64_t[]){B}, cls);
                loss = segc_cross_entropy(ctx, logits, y, NULL);
            }
        } else {
            segc_tensor *maps[2];
            int n_maps = segc_deeplab_forward(ctx, dl, x, maps);
            if (train && n_maps) {
                segc_tensor *y = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){B, H, W}, lab);
                loss = segc_deeplab_loss(ctx, dl, maps, n_maps, y, 255);
            } else if (!n_maps) {
                fprintf(stderr, "bench_deeplab: %s\n", segc_last_error(ctx));
                return 1;
            }
        }
        if (train) {
            if (!loss || !segc_backward(ctx, loss)) { fprintf(stderr, "bench_deeplab: %s\n", segc_last_error(ctx)); return 1; }
            segc_optimizer_step(opt, 0.01);
            segc_params_zero_grad(&params);
        }
        double dtm = segc_now_s() - t0;
        /* iterations 0 and 1 warm up: primitive caches, arena growth, then its consolidation */
        if (it > 1) { total += dtm; if (dtm < best) best = dtm; }
    }
    double mean = total / reps;
    bench_work_end(dt, reps);
    if (getenv("SEGC_PROFILE")) segc_profile_print(ctx, stderr);
    const char *model = trunk ? (channels_last ? "resnet50_nhwc" : "resnet50")
                              : (channels_last ? "deeplabv3plus_r50_os16_nhwc" : "deeplabv3plus_r50_os16");
    bench_print_model_row(model, train, H, W, B, dts, nthreads, mean, best);
    free(img);
    free(lab);
    free(cls);
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_deeplab_free(dl);
    segc_resnet_free(rn);
    segc_params_free(&params);
    return 0;
}
