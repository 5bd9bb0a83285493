/* Benchmarks for the elementwise group: exact GELU, last-dim softmax and a
 * per-channel broadcast add, fwd and bwd, f32 and bf16. One JSON line per
 * case; bench/torch_elementwise.py times the same cases in PyTorch. The bwd
 * figure is the backward alone (gradient buffers included), fed a ready
 * upstream gradient of the case's dtype: bf16 cases run with bf16 activation
 * gradients (ctx->bf16_grads), as PyTorch keeps bf16 gradients for bf16 tensors,
 * where bf16 training uses them (CPUs with native bf16 GEMMs; else the bf16
 * upstream gradient is widened and gradients stay f32, as in training). */
#include <stdio.h>
#include <stdlib.h>

#include "segc/ops.h"

#include "bench_common.h"

static segc_tensor *input(segc_rng *rng, segc_dtype dt, int ndim, const int64_t *shape) {
    segc_tensor *t = segc_tensor_heap(dt, ndim, shape);
    int64_t n = segc_numel(t);
    float *f = malloc((size_t)n * sizeof *f);
    segc_rng_fill_normal(rng, f, n, 0, 1);
    segc_store_f32(t, f);
    free(f);
    t->requires_grad = true;
    return t;
}

static segc_tensor *build_gelu(segc_ctx *ctx, void *ins) { return segc_gelu(ctx, ((segc_tensor **)ins)[0]); }
static segc_tensor *build_softmax(segc_ctx *ctx, void *ins) { return segc_softmax(ctx, ((segc_tensor **)ins)[0], -1); }
static segc_tensor *build_add(segc_ctx *ctx, void *ins) {
    return segc_add(ctx, ((segc_tensor **)ins)[0], ((segc_tensor **)ins)[1]);
}

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    segc_rng rng;
    segc_rng_init(&rng, 7);
    struct {
        const char *op, *shape;
        bench_build_fn fn;
        int n;
        int nd[2];
        int64_t shapes[2][4];
    } cases[] = {
        {"gelu", "2x16384x256", build_gelu, 1, {3, 0}, {{2, 16384, 256}}},
        {"softmax", "2x16384x256", build_softmax, 1, {3, 0}, {{2, 16384, 256}}},
        {"add_broadcast", "8x64x128x128+64x1x1", build_add, 2, {4, 3}, {{8, 64, 128, 128}, {64, 1, 1}}},
    };
    const segc_dtype dts[] = {SEGC_F32, SEGC_BF16};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int d = 0; d < 2; d++) {
            segc_tensor *ins[2] = {NULL, NULL};
            for (int i = 0; i < cases[c].n; i++) ins[i] = input(&rng, dts[d], cases[c].nd[i], cases[c].shapes[i]);
            int64_t n_out = segc_numel(ins[0]);
            float *gout = malloc((size_t)n_out * sizeof *gout);
            uint16_t *gout16 = malloc((size_t)n_out * sizeof *gout16);
            segc_rng_fill_normal(&rng, gout, n_out, 0, 1);
            segc_f32_to_bf16_n(gout, gout16, n_out);
            bool bf16 = dts[d] == SEGC_BF16;
            ctx->bf16_grads = bf16 && bench_bf16_grads();   /* as training runs them on this CPU */
            for (int pass = 0; pass < 2; pass++) {
                double ms = bench_op_ms((bench_op){ctx, cases[c].fn, ins, {ins[0], ins[1]}, pass == 1, gout, gout16});
                printf("{\"op\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.3f}\n",
                       cases[c].op, cases[c].shape, segc_dtype_name(dts[d]), pass ? "bwd" : "fwd", ms);
                fflush(stdout);
            }
            free(gout);
            free(gout16);
            for (int i = 0; i < cases[c].n; i++) segc_tensor_free(ins[i]);
        }
    }
    segc_ctx_free(ctx);
    return 0;
}
