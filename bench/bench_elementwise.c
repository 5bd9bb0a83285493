/* Benchmarks for the elementwise group: exact GELU, last-dim softmax and a
 * per-channel broadcast add, fwd and bwd, f32 and bf16. One JSON line per
 * case; bench/torch_elementwise.py times the same cases in PyTorch. The bwd
 * figure is the op's own backward (gradient buffer allocation included), fed
 * a ready upstream gradient. */
#include <stdio.h>
#include <stdlib.h>

#include "segc/ops.h"

#include "bench_common.h"

typedef segc_tensor *(*build_fn)(segc_ctx *ctx, segc_tensor **ins);

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

static double run_once(segc_ctx *ctx, build_fn fn, segc_tensor **ins, int n, bool bwd, float *gout) {
    segc_ctx_step_begin(ctx);
    for (int i = 0; i < n; i++) ins[i]->grad = NULL; /* the previous step's gradients lived in the arena */
    double t0 = segc_now_s();
    segc_tensor *y = fn(ctx, ins);
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

typedef struct { segc_ctx *ctx; build_fn fn; segc_tensor **ins; int n; bool bwd; float *gout; } timed_run;
static double timed_once(void *u) {
    timed_run *r = u;
    return run_once(r->ctx, r->fn, r->ins, r->n, r->bwd, r->gout);
}

static double median_ms(segc_ctx *ctx, build_fn fn, segc_tensor **ins, int n, bool bwd, float *gout) {
    timed_run r = {ctx, fn, ins, n, bwd, gout};
    return bench_median_ms(timed_once, &r);
}

static segc_tensor *build_gelu(segc_ctx *ctx, segc_tensor **ins) { return segc_gelu(ctx, ins[0]); }
static segc_tensor *build_softmax(segc_ctx *ctx, segc_tensor **ins) { return segc_softmax(ctx, ins[0], -1); }
static segc_tensor *build_add(segc_ctx *ctx, segc_tensor **ins) { return segc_add(ctx, ins[0], ins[1]); }

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    segc_rng rng;
    segc_rng_init(&rng, 7);
    struct {
        const char *op, *shape;
        build_fn fn;
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
            segc_rng_fill_normal(&rng, gout, n_out, 0, 1);
            for (int pass = 0; pass < 2; pass++) {
                double ms = median_ms(ctx, cases[c].fn, ins, cases[c].n, pass == 1, gout);
                printf("{\"op\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.3f}\n",
                       cases[c].op, cases[c].shape, segc_dtype_name(dts[d]), pass ? "bwd" : "fwd", ms);
                fflush(stdout);
            }
            free(gout);
            for (int i = 0; i < cases[c].n; i++) segc_tensor_free(ins[i]);
        }
    }
    segc_ctx_free(ctx);
    return 0;
}
