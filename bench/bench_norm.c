/* Benchmarks for the norm/loss group: layer_norm over 16384x64 and cross
 * entropy over 2x150x512x512 logits (ignore_index 255, ~5% ignored pixels),
 * fwd and bwd, f32 and bf16. One JSON line per case; bench/torch_norm.py
 * times the same cases in PyTorch. "bwd" is the backward pass alone (gradient
 * buffers included), after an untimed forward. */
#include <stdio.h>
#include <stdlib.h>

#include "segc/ops.h"

#include "bench_common.h"

typedef struct {
    segc_tensor *x, *gamma, *beta, *target;
    segc_ce_opts ce;
} bench_in;

static segc_tensor *build_layer_norm(segc_ctx *ctx, void *u) {
    bench_in *in = u;
    return segc_layer_norm(ctx, in->x, in->gamma, in->beta, 1e-5f);
}
static segc_tensor *build_cross_entropy(segc_ctx *ctx, void *u) {
    bench_in *in = u;
    return segc_cross_entropy(ctx, in->x, in->target, &in->ce);
}

static segc_tensor *heap_randn(segc_rng *rng, segc_dtype dt, int ndim, const int64_t *shape, float mean, bool rg) {
    segc_tensor *t = segc_tensor_heap(dt, ndim, shape);
    int64_t n = segc_numel(t);
    float *f = malloc((size_t)n * sizeof *f);
    segc_rng_fill_normal(rng, f, n, mean, 1);
    segc_store_f32(t, f);
    free(f);
    t->requires_grad = rg;
    return t;
}

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    segc_rng rng;
    segc_rng_init(&rng, 7);
    const segc_dtype dts[] = {SEGC_F32, SEGC_BF16};

    /* layer_norm 16384x64 */
    float *gout_ln = malloc(16384 * 64 * sizeof(float));
    segc_rng_fill_normal(&rng, gout_ln, 16384 * 64, 0, 1);
    uint16_t *gout_ln16 = bench_bf16_copy(gout_ln, 16384 * 64);
    for (int d = 0; d < 2; d++) {
        ctx->bf16_grads = d && bench_bf16_grads();   /* bf16: gradients as bf16 training keeps them */
        bench_in in = {.x = heap_randn(&rng, dts[d], 2, (int64_t[]){16384, 64}, 0, true),
                       .gamma = heap_randn(&rng, dts[d], 1, (int64_t[]){64}, 1, true),
                       .beta = heap_randn(&rng, dts[d], 1, (int64_t[]){64}, 0, true)};
        for (int b = 0; b < 2; b++)
            printf("{\"op\": \"layer_norm\", \"shape\": \"16384x64\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.4f}\n",
                   segc_dtype_name(dts[d]), b ? "bwd" : "fwd", bench_op_ms((bench_op){ctx, build_layer_norm, &in, {in.x, in.gamma, in.beta}, b, gout_ln, gout_ln16}));
        fflush(stdout);
        segc_tensor_free(in.x);
        segc_tensor_free(in.gamma);
        segc_tensor_free(in.beta);
    }
    free(gout_ln), free(gout_ln16);
    ctx->bf16_grads = false;

    /* cross_entropy 2x150x512x512, labels uniform over the classes, 5% ignored (255) */
    segc_tensor *target = segc_tensor_heap(SEGC_I64, 3, (int64_t[]){2, 512, 512});
    int64_t *lab = target->data;
    for (int64_t i = 0; i < segc_numel(target); i++) lab[i] = segc_rng_uniform(&rng) < 0.05f ? 255 : segc_rng_u32(&rng) % 150;
    float one = 1.f;
    for (int d = 0; d < 2; d++) {
        bench_in in = {.x = heap_randn(&rng, dts[d], 4, (int64_t[]){2, 150, 512, 512}, 0, true), .target = target,
                       .ce = segc_ce_opts_default()};
        in.ce.ignore_index = 255;
        for (int b = 0; b < 2; b++)
            printf("{\"op\": \"cross_entropy\", \"shape\": \"2x150x512x512\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.4f}\n",
                   segc_dtype_name(dts[d]), b ? "bwd" : "fwd", bench_op_ms((bench_op){ctx, build_cross_entropy, &in, {in.x}, b, &one, NULL}));
        fflush(stdout);
        segc_tensor_free(in.x);
    }
    segc_tensor_free(target);
    segc_ctx_free(ctx);
    return 0;
}
