/* Benchmarks for the conv group: a dense 3x3 convolution and a depthwise 3x3
 * convolution (pad 1, with bias), fwd and bwd, f32 and bf16. One JSON line
 * per case; bench/torch_conv.py times the same cases in PyTorch. The bwd
 * figure is the backward pass alone (gradients for input, weight and bias),
 * fed a ready upstream gradient; weight and bias are parameters with
 * persistent f32 gradient buffers, as in training. */
#include <stdio.h>
#include <stdlib.h>

#include "segc/ops.h"

#include "bench_common.h"

static segc_tensor *heap_tensor(segc_rng *rng, segc_dtype dt, int ndim, const int64_t *shape, float scale, bool param) {
    segc_tensor *t = segc_tensor_heap(dt, ndim, shape);
    int64_t n = segc_numel(t);
    float *f = malloc((size_t)n * sizeof *f);
    segc_rng_fill_normal(rng, f, n, 0, scale);
    segc_store_f32(t, f);
    free(f);
    t->requires_grad = true;
    if (param) {
        t->is_param = true;
        t->grad = calloc((size_t)n, sizeof(float));
    }
    return t;
}

typedef struct { segc_tensor *x, *w, *b; segc_conv_params p; } conv_case;

static double run_once(segc_ctx *ctx, conv_case *c, bool bwd, const float *gout) {
    segc_ctx_step_begin(ctx);
    c->x->grad = NULL; /* the previous step's input gradient lived in the arena */
    double t0 = segc_now_s();
    segc_tensor *y = segc_conv2d(ctx, c->x, c->w, c->b, &c->p);
    double t1 = segc_now_s();
    if (!y) {
        fprintf(stderr, "bench: %s\n", segc_last_error(ctx));
        exit(1);
    }
    if (!bwd) return (t1 - t0) * 1e3;
    t0 = segc_now_s();
    if (!segc_backward_from(ctx, y, gout)) {
        fprintf(stderr, "bench: %s\n", segc_last_error(ctx));
        exit(1);
    }
    return (segc_now_s() - t0) * 1e3;
}

typedef struct { segc_ctx *ctx; conv_case *c; bool bwd; const float *gout; } timed_run;
static double timed_once(void *u) {
    timed_run *r = u;
    return run_once(r->ctx, r->c, r->bwd, r->gout);
}

static double median_ms(segc_ctx *ctx, conv_case *c, bool bwd, const float *gout) {
    timed_run r = {ctx, c, bwd, gout};
    return bench_median_ms(timed_once, &r);
}

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    segc_rng rng;
    segc_rng_init(&rng, 7);
    struct {
        const char *op, *shape;
        int64_t n, c, h, w, o;
        int groups;
    } cases[] = {
        {"conv3x3", "8x64x128x128->64", 8, 64, 128, 128, 64, 1},
        {"dwconv3x3", "2x256x64x64", 2, 256, 64, 64, 256, 256},
    };
    const segc_dtype dts[] = {SEGC_F32, SEGC_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int d = 0; d < 2; d++) {
            conv_case c;
            c.x = heap_tensor(&rng, dts[d], 4, (int64_t[]){cases[i].n, cases[i].c, cases[i].h, cases[i].w}, 1, false);
            c.w = heap_tensor(&rng, dts[d], 4, (int64_t[]){cases[i].o, cases[i].c / cases[i].groups, 3, 3}, 0.1f, true);
            c.b = heap_tensor(&rng, SEGC_F32, 1, (int64_t[]){cases[i].o}, 0.1f, true);
            c.p = segc_conv_params_default();
            c.p.pad[0] = c.p.pad[1] = 1;
            c.p.groups = cases[i].groups;
            int64_t ny = cases[i].n * cases[i].o * cases[i].h * cases[i].w;
            float *gout = malloc((size_t)ny * sizeof *gout);
            segc_rng_fill_normal(&rng, gout, ny, 0, 1);
            for (int bwd = 0; bwd < 2; bwd++)
                printf("{\"op\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"pass\": \"%s\", \"segc_ms\": %.3f}\n",
                       cases[i].op, cases[i].shape, segc_dtype_name(dts[d]), bwd ? "bwd" : "fwd",
                       median_ms(ctx, &c, bwd, gout));
            fflush(stdout);
            free(gout);
            segc_tensor_free(c.x);
            free(c.w->grad);
            c.w->grad = NULL;
            segc_tensor_free(c.w);
            free(c.b->grad);
            c.b->grad = NULL;
            segc_tensor_free(c.b);
        }
    }
    segc_ctx_free(ctx);
    return 0;
}
