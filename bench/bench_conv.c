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

static segc_tensor *build_conv(segc_ctx *ctx, void *u) {
    conv_case *c = u;
    return segc_conv2d(ctx, c->x, c->w, c->b, &c->p);
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
                       bench_op_ms((bench_op){ctx, build_conv, &c, {c.x}, bwd, gout, NULL}));
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
