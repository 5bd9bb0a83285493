/* Benchmarks for the shape/resampling ops: the 150-class-style x4 bilinear
 * upsample and the NCHW->NHWC permute, fwd and bwd, f32 and bf16. One JSON
 * line per case; bench/torch_shape.py times the same cases in PyTorch.
 * The bwd figure is the backward alone (gradient buffers included), fed a
 * ready upstream gradient (bf16 in bf16 cases where the op reads bf16
 * gradients: bench_op in bench_common.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/ops.h"

#include "bench_common.h"

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

static segc_tensor *build_bilinear_up4(segc_ctx *ctx, void *u) {
    segc_tensor *x = u;
    return segc_resize_bilinear(ctx, x, (int)x->shape[2] * 4, (int)x->shape[3] * 4, false);
}
static segc_tensor *build_permute(segc_ctx *ctx, void *x) { return segc_permute(ctx, x, (const int[]){0, 2, 3, 1}); }

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    struct { const char *op, *shape; bench_build_fn fn; int64_t dims[4]; int64_t out_numel; } cases[] = {
        {"bilinear_up4", "2x256x128x128", build_bilinear_up4, {2, 256, 128, 128}, 2LL * 256 * 512 * 512},
        {"permute_nchw_nhwc", "2x64x128x128", build_permute, {2, 64, 128, 128}, 2LL * 64 * 128 * 128},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        float *gout = malloc((size_t)cases[c].out_numel * sizeof(float));
        for (int64_t i = 0; i < cases[c].out_numel; i++) gout[i] = (float)(i % 97) * 0.01f - 0.48f;
        uint16_t *gout16 = bench_bf16_copy(gout, cases[c].out_numel);
        for (int d = 0; d < 2; d++) {
            segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
            ctx->bf16_grads = d && bench_bf16_grads();   /* bf16: gradients as bf16 training keeps them */
            segc_tensor *x = input(dt, 4, cases[c].dims);
            for (int b = 0; b < 2; b++) {
                double ms = bench_op_ms((bench_op){ctx, cases[c].fn, x, {x}, b, gout, gout16});
                printf("{\"op\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.3f}\n",
                       cases[c].op, cases[c].shape, segc_dtype_name(dt), b ? "bwd" : "fwd", ms);
                fflush(stdout);
            }
            segc_tensor_free(x);
        }
        free(gout), free(gout16);
    }
    segc_ctx_free(ctx);
    return 0;
}
