/* Benchmarks for the shape/resampling ops: the 150-class-style x4 bilinear
 * upsample and the NCHW->NHWC permute, fwd and bwd, f32 and bf16. One JSON
 * line per case; bench/torch_shape.py times the same cases in PyTorch.
 * The bwd figure is the op's own backward (gradient buffer allocation
 * included), fed a ready upstream gradient. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/ops.h"

#include "bench_common.h"

typedef segc_tensor *(*build_fn)(segc_ctx *ctx, segc_tensor *x);

static segc_tensor *input(segc_dtype dt, int ndim, const int64_t *shape) {
    segc_tensor *t = segc_tensor_heap(dt, ndim, shape);
    int64_t n = segc_numel(t);
    float *f = malloc((size_t)n * sizeof *f);
    segc_rng rng;
    segc_rng_init(&rng, 1);
    segc_rng_fill_normal(&rng, f, n, 0, 1);
    segc_store_f32(t, f);
    free(f);
    t->requires_grad = true;
    return t;
}

static double run_once(segc_ctx *ctx, build_fn fn, segc_tensor *x, bool bwd, float *gout) {
    segc_ctx_step_begin(ctx);
    x->grad = NULL; /* the previous step's gradient lived in the arena */
    double t0 = segc_now_s();
    segc_tensor *y = fn(ctx, x);
    double t1 = segc_now_s();
    if (!y || !ctx->tape) {
        fprintf(stderr, "bench: %s\n", y ? "no tape node recorded" : segc_last_error(ctx));
        exit(1);
    }
    if (!bwd) return (t1 - t0) * 1e3;
    y->grad = gout;
    t0 = segc_now_s();
    ctx->tape->backward(ctx, ctx->tape);
    t1 = segc_now_s();
    if (ctx->has_err) {
        fprintf(stderr, "bench: %s\n", segc_last_error(ctx));
        exit(1);
    }
    return (t1 - t0) * 1e3;
}

typedef struct { segc_ctx *ctx; build_fn fn; segc_tensor *x; bool bwd; float *gout; } timed_run;
static double timed_once(void *u) {
    timed_run *r = u;
    return run_once(r->ctx, r->fn, r->x, r->bwd, r->gout);
}

static double median_ms(segc_ctx *ctx, build_fn fn, segc_tensor *x, bool bwd, float *gout) {
    timed_run r = {ctx, fn, x, bwd, gout};
    return bench_median_ms(timed_once, &r);
}

static segc_tensor *build_bilinear_up4(segc_ctx *ctx, segc_tensor *x) {
    return segc_resize_bilinear(ctx, x, (int)x->shape[2] * 4, (int)x->shape[3] * 4, false);
}
static segc_tensor *build_permute(segc_ctx *ctx, segc_tensor *x) { return segc_permute(ctx, x, (const int[]){0, 2, 3, 1}); }

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    struct { const char *op, *shape; build_fn fn; int64_t dims[4]; int64_t out_numel; } cases[] = {
        {"bilinear_up4", "2x256x128x128", build_bilinear_up4, {2, 256, 128, 128}, 2LL * 256 * 512 * 512},
        {"permute_nchw_nhwc", "2x64x128x128", build_permute, {2, 64, 128, 128}, 2LL * 64 * 128 * 128},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        float *gout = malloc((size_t)cases[c].out_numel * sizeof(float));
        for (int64_t i = 0; i < cases[c].out_numel; i++) gout[i] = (float)(i % 97) * 0.01f - 0.48f;
        for (int d = 0; d < 2; d++) {
            segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
            segc_tensor *x = input(dt, 4, cases[c].dims);
            for (int b = 0; b < 2; b++) {
                double ms = median_ms(ctx, cases[c].fn, x, b, gout);
                printf("{\"op\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.3f}\n",
                       cases[c].op, cases[c].shape, segc_dtype_name(dt), b ? "bwd" : "fwd", ms);
                fflush(stdout);
            }
            segc_tensor_free(x);
        }
        free(gout);
    }
    segc_ctx_free(ctx);
    return 0;
}
