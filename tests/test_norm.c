/* norm: layer_norm, add_layer_norm, batch_norm, group_norm, instance_norm.
 * PyTorch parity (f32 + bf16), finite-difference gradients, running-stat
 * updates, thread-count independence, error messages. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/ops.h"

static bool g_side_ok = true;   /* checks made inside fixture callbacks */

static segc_tensor *opt_in(segc_tensor **ins, int n, int k) { return k < n ? ins[k] : NULL; }

/* ---------------- PyTorch parity ---------------- */
static segc_tensor *fx_layer_norm(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_layer_norm(ctx, ins[0], opt_in(ins, n, 1), opt_in(ins, n, 2), (float)fx_param_double(f, cas, "eps", 1e-5));
}

static segc_tensor *fx_add_layer_norm(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    segc_tensor *sum = NULL;
    segc_tensor *y = segc_add_layer_norm(ctx, ins[0], ins[1], opt_in(ins, n, 2), opt_in(ins, n, 3),
                                         (float)fx_param_double(f, cas, "eps", 1e-5), &sum);
    if (!y) return NULL;
    char what[160];
    snprintf(what, sizeof what, "%s sum", cas);
    g_side_ok &= fx_close(what, sum, fx_tensor(ctx, f, cas, "sum"), 0);   /* same f32 add, same rounding */
    /* the sum's other consumers: their gradient is already there when backward runs */
    segc_tensor *gsum = fx_tensor(ctx, f, cas, "gsum");
    memcpy(segc_grad(ctx, sum), gsum->data, segc_nbytes(gsum));
    return y;
}

static segc_tensor *fx_batch_norm(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    ctx->training = fx_param_int(f, cas, "training", 1);
    bool stats = fx_param_int(f, cas, "stats", 0);
    segc_tensor *rm = stats ? fx_tensor(ctx, f, cas, "rm0") : NULL, *rv = stats ? fx_tensor(ctx, f, cas, "rv0") : NULL;
    segc_tensor *y = segc_batch_norm(ctx, ins[0], opt_in(ins, n, 1), opt_in(ins, n, 2), rm, rv,
                                     (float)fx_param_double(f, cas, "momentum", 0.1),
                                     (float)fx_param_double(f, cas, "eps", 1e-5));
    if (y && stats) {
        char what[160];
        snprintf(what, sizeof what, "%s running_mean", cas);
        g_side_ok &= fx_close(what, rm, fx_tensor(ctx, f, cas, "rm1"), 1e-5);
        snprintf(what, sizeof what, "%s running_var", cas);
        g_side_ok &= fx_close(what, rv, fx_tensor(ctx, f, cas, "rv1"), 1e-5);
    }
    return y;
}

static segc_tensor *fx_group_norm(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_group_norm(ctx, ins[0], (int)fx_param_int(f, cas, "groups", 1), opt_in(ins, n, 1), opt_in(ins, n, 2),
                           (float)fx_param_double(f, cas, "eps", 1e-5));
}

static segc_tensor *fx_instance_norm(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_instance_norm(ctx, ins[0], opt_in(ins, n, 1), opt_in(ins, n, 2), (float)fx_param_double(f, cas, "eps", 1e-5));
}

static void test_parity(void **state) {
    segc_st_file *f = fx_open("norm.safetensors");
    g_side_ok = true;
    /* The references are float64. Outputs and gradients near zero come from
     * cancelling O(1) terms, so any f32 evaluation sits ~1e-5 from them at the
     * 1e-3*max floor (PyTorch's own f32 results: up to 3.5e-5 on these cases);
     * 3e-5 leaves room for another vector width's summation order. */
    const double tol = 3e-5;
    assert_int_equal(fx_check_all(f, "layer_norm_", fx_layer_norm, tol, 2e-2), 14);
    assert_int_equal(fx_check_all(f, "add_layer_norm_", fx_add_layer_norm, tol, 2e-2), 6);
    assert_int_equal(fx_check_all(f, "batch_norm_", fx_batch_norm, tol, 2e-2), 12);
    assert_int_equal(fx_check_all(f, "group_norm_", fx_group_norm, tol, 2e-2), 12);
    assert_int_equal(fx_check_all(f, "instance_norm_", fx_instance_norm, tol, 2e-2), 6);
    assert_true(g_side_ok);
    segc_st_close(f);
}

/* ---------------- finite differences ---------------- */
typedef struct { int kind; int groups; bool training, stats; float eps; } gc_cfg;
enum { K_LN, K_ADDLN_Y, K_ADDLN_SUM, K_BN, K_BN_RELU, K_GN, K_IN, K_IN_LRELU };

static segc_tensor *gc_norm(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    const gc_cfg *c = user;
    switch (c->kind) {
    case K_LN: return segc_layer_norm(ctx, ins[0], opt_in(ins, n, 1), opt_in(ins, n, 2), c->eps);
    case K_ADDLN_Y:
    case K_ADDLN_SUM: {
        segc_tensor *sum = NULL, *y = segc_add_layer_norm(ctx, ins[0], ins[1], opt_in(ins, n, 2), opt_in(ins, n, 3), c->eps, &sum);
        return c->kind == K_ADDLN_Y ? y : sum;
    }
    case K_BN:
    case K_BN_RELU: {
        ctx->training = c->training;
        segc_tensor *rm = NULL, *rv = NULL;
        if (c->stats) {   /* fresh buffers each call: eval output depends on them */
            rm = segc_tensor_new(ctx, SEGC_F32, 1, &ins[0]->shape[1]);
            rv = segc_tensor_new(ctx, SEGC_F32, 1, &ins[0]->shape[1]);
            for (int64_t i = 0; i < rm->shape[0]; i++) {
                segc_f32(rm)[i] = 0.3f * (float)i - 0.5f;
                segc_f32(rv)[i] = 0.5f + 0.25f * (float)i;
            }
        }
        return (c->kind == K_BN_RELU ? segc_batch_norm_relu : segc_batch_norm)(ctx, ins[0], opt_in(ins, n, 1),
                                                                                opt_in(ins, n, 2), rm, rv, 0.1f, c->eps);
    }
    case K_GN: return segc_group_norm(ctx, ins[0], c->groups, opt_in(ins, n, 1), opt_in(ins, n, 2), c->eps);
    case K_IN_LRELU: return segc_instance_norm_lrelu(ctx, ins[0], opt_in(ins, n, 1), opt_in(ins, n, 2), c->eps, 0.01f);
    default: return segc_instance_norm(ctx, ins[0], opt_in(ins, n, 1), opt_in(ins, n, 2), c->eps);
    }
}

static bool run_gc(const char *name, gc_cfg cfg, int ndim, const int64_t *shape, int64_t C, bool affine, bool residual) {
    segc_ctx *ctx = segc_ctx_new(99);
    segc_tensor *ins[4] = {0};
    int n = 0;
    ins[n++] = t_randn(ctx, ndim, shape, 1.5f, true);
    if (residual) ins[n++] = t_randn(ctx, ndim, shape, 1.0f, true);
    if (affine) {
        ins[n++] = t_uniform(ctx, 1, &C, 0.5f, 1.5f, true);
        ins[n++] = t_randn(ctx, 1, &C, 0.5f, true);
    }
    bool ok = gradcheck(ctx, name, gc_norm, ins, n, &cfg, gc_default());
    segc_ctx_free(ctx);
    return ok;
}

static void test_gradcheck(void **state) {
    bool ok = true;
    ok &= run_gc("layer_norm [3,5,7]", (gc_cfg){K_LN, .eps = 1e-5f}, 3, SHAPE(3, 5, 7), 7, true, false);
    ok &= run_gc("layer_norm [2,1,6] no affine", (gc_cfg){K_LN, .eps = 1e-5f}, 3, SHAPE(2, 1, 6), 6, false, false);
    ok &= run_gc("layer_norm [1,1]", (gc_cfg){K_LN, .eps = 1e-5f}, 2, SHAPE(1, 1), 1, true, false);
    ok &= run_gc("add_layer_norm y [4,9]", (gc_cfg){K_ADDLN_Y, .eps = 1e-5f}, 2, SHAPE(4, 9), 9, true, true);
    ok &= run_gc("add_layer_norm sum [4,9]", (gc_cfg){K_ADDLN_SUM, .eps = 1e-5f}, 2, SHAPE(4, 9), 9, false, true);
    ok &= run_gc("batch_norm train [3,4,2,3]", (gc_cfg){K_BN, .training = true, .stats = true, .eps = 1e-5f}, 4,
                 SHAPE(3, 4, 2, 3), 4, true, false);
    ok &= run_gc("batch_norm train no stats [5,3]", (gc_cfg){K_BN, .training = true, .eps = 1e-5f}, 2, SHAPE(5, 3), 3,
                 true, false);
    ok &= run_gc("batch_norm eval [2,3,4]", (gc_cfg){K_BN, .training = false, .stats = true, .eps = 1e-5f}, 3,
                 SHAPE(2, 3, 4), 3, true, false);
    ok &= run_gc("batch_norm train [2,1,1,1]", (gc_cfg){K_BN, .training = true, .eps = 1e-3f}, 4, SHAPE(2, 1, 1, 1), 1,
                 true, false);
    ok &= run_gc("batch_norm_relu train [3,4,2,3]", (gc_cfg){K_BN_RELU, .training = true, .stats = true, .eps = 1e-5f},
                 4, SHAPE(3, 4, 2, 3), 4, true, false);
    ok &= run_gc("batch_norm_relu eval [2,3,4]", (gc_cfg){K_BN_RELU, .training = false, .stats = true, .eps = 1e-5f}, 3,
                 SHAPE(2, 3, 4), 3, true, false);
    ok &= run_gc("group_norm g1 [2,6,3,2]", (gc_cfg){K_GN, .groups = 1, .eps = 1e-5f}, 4, SHAPE(2, 6, 3, 2), 6, true, false);
    ok &= run_gc("group_norm g3 [2,6,3,2]", (gc_cfg){K_GN, .groups = 3, .eps = 1e-5f}, 4, SHAPE(2, 6, 3, 2), 6, true, false);
    ok &= run_gc("group_norm g2 [3,8] no spatial", (gc_cfg){K_GN, .groups = 2, .eps = 1e-5f}, 2, SHAPE(3, 8), 8, false,
                 false);
    ok &= run_gc("instance_norm [2,3,5]", (gc_cfg){K_IN, .eps = 1e-5f}, 3, SHAPE(2, 3, 5), 3, true, false);
    ok &= run_gc("instance_norm [1,2,2,2] no affine", (gc_cfg){K_IN, .eps = 1e-5f}, 4, SHAPE(1, 2, 2, 2), 2, false, false);
    ok &= run_gc("instance_norm_lrelu [2,3,5]", (gc_cfg){K_IN_LRELU, .eps = 1e-5f}, 3, SHAPE(2, 3, 5), 3, true, false);
    assert_true(ok);
}

/* batch_norm_relu is batch_norm then relu_, bit for bit in f32 (values, every gradient and the
 * running statistics), training and eval, above the threading threshold */
static void test_batch_norm_relu_fused(void **state) {
    segc_ctx *ctx = segc_ctx_new(6);
    segc_set_num_threads(ctx, 2);
    const int64_t C = 24;
    segc_tensor *x = t_randn(ctx, 4, SHAPE(3, 24, 30, 31), 1.5f, true), *g = t_uniform(ctx, 1, &C, 0.5f, 1.5f, true),
                *b = t_randn(ctx, 1, &C, 0.5f, true);
    segc_tensor *dy = t_randn(ctx, 4, SHAPE(3, 24, 30, 31), 1.f, false);
    for (int training = 0; training < 2; training++) {
        ctx->training = training;
        float *grads[2][3], *stats[2];
        segc_tensor *outs[2];
        for (int fused = 0; fused < 2; fused++) {
            segc_tensor *rm = segc_tensor_new(ctx, SEGC_F32, 1, &C), *rv = segc_tensor_new(ctx, SEGC_F32, 1, &C);
            for (int64_t i = 0; i < C; i++) segc_f32(rm)[i] = 0.1f * (float)i - 1.f, segc_f32(rv)[i] = 0.5f + 0.2f * (float)i;
            /* a consumer between the relu and backward, so relu_ takes its in-place (aliased) path */
            segc_tensor *y = fused ? segc_batch_norm_relu(ctx, x, g, b, rm, rv, 0.1f, 1e-5f)
                                   : segc_relu_(ctx, segc_batch_norm(ctx, x, g, b, rm, rv, 0.1f, 1e-5f));
            assert_non_null(y);
            outs[fused] = y;
            segc_tensor *z = segc_mul_scalar(ctx, y, 1.0f);
            segc_tensor *ps[3] = {x, g, b};
            for (int i = 0; i < 3; i++) ps[i]->grad = NULL;
            assert_true(segc_backward_from(ctx, z, segc_f32(dy)));
            for (int i = 0; i < 3; i++) {
                grads[fused][i] = segc_arena_alloc(&ctx->arena, (size_t)segc_numel(ps[i]) * sizeof(float));
                memcpy(grads[fused][i], ps[i]->grad, (size_t)segc_numel(ps[i]) * sizeof(float));
            }
            stats[fused] = segc_arena_alloc(&ctx->arena, 2 * C * sizeof(float));
            memcpy(stats[fused], rm->data, C * sizeof(float));
            memcpy(stats[fused] + C, rv->data, C * sizeof(float));
        }
        int64_t zeros = 0;
        for (int64_t i = 0; i < segc_numel(outs[1]); i++) zeros += segc_f32(outs[1])[i] == 0.f;
        assert_true(zeros > segc_numel(outs[1]) / 10);   /* the mask matters */
        assert_memory_equal(outs[0]->data, outs[1]->data, segc_nbytes(outs[0]));
        assert_memory_equal(grads[0][0], grads[1][0], (size_t)segc_numel(x) * sizeof(float));
        assert_memory_equal(grads[0][1], grads[1][1], C * sizeof(float));
        assert_memory_equal(grads[0][2], grads[1][2], C * sizeof(float));
        assert_memory_equal(stats[0], stats[1], 2 * C * sizeof(float));
    }
    segc_ctx_free(ctx);
}

/* batch_norm_add_relu is relu_(add(batch_norm(x), id)), bit for bit (values, the gradients of x,
 * gamma, beta and the residual, running statistics) in f32 and bf16, training and eval, with the
 * residual also read elsewhere (its gradient accumulated, not written) */
static void test_batch_norm_add_relu_fused(void **state) {
    segc_ctx *ctx = segc_ctx_new(7);
    segc_set_num_threads(ctx, 2);
    const int64_t C = 24, n = 3 * 24 * 30 * 31;
    segc_tensor *x = t_randn(ctx, 4, SHAPE(3, 24, 30, 31), 1.5f, true), *g = t_uniform(ctx, 1, &C, 0.5f, 1.5f, true),
                *b = t_randn(ctx, 1, &C, 0.5f, true), *id = t_randn(ctx, 4, SHAPE(3, 24, 30, 31), 1.f, true);
    segc_tensor *dy = t_randn(ctx, 4, SHAPE(3, 24, 30, 31), 1.f, false);
    for (int d = 0; d < 2; d++)
        for (int training = 0; training < 2; training++) {
            segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
            ctx->training = training;
            float *res[2][6];
            int64_t sz[6] = {n, n, C, C, n, 2 * C};
            for (int fused = 0; fused < 2; fused++) {
                segc_tensor *rm = segc_tensor_new(ctx, SEGC_F32, 1, &C), *rv = segc_tensor_new(ctx, SEGC_F32, 1, &C);
                for (int64_t i = 0; i < C; i++) segc_f32(rm)[i] = 0.1f * (float)i - 1.f, segc_f32(rv)[i] = 0.5f + 0.2f * (float)i;
                segc_tensor *ps[4] = {x, g, b, id};
                for (int i = 0; i < 4; i++) ps[i]->grad = NULL;
                segc_tensor *xs = segc_cast(ctx, x, dt), *gs = segc_cast(ctx, g, dt), *bs = segc_cast(ctx, b, dt);
                segc_tensor *ids = segc_cast(ctx, id, dt);
                segc_tensor *y = fused ? segc_batch_norm_add_relu(ctx, xs, gs, bs, rm, rv, 0.1f, 1e-5f, ids)
                                       : segc_relu_(ctx, segc_add(ctx, segc_batch_norm(ctx, xs, gs, bs, rm, rv, 0.1f, 1e-5f), ids));
                assert_non_null(y);
                segc_tensor *z = segc_add(ctx, segc_cast(ctx, y, SEGC_F32), segc_mul_scalar(ctx, id, 0.5f));
                assert_non_null(z);
                assert_true(segc_backward_from(ctx, z, segc_f32(dy)));
                const float *src[6] = {segc_f32(segc_cast(ctx, y, SEGC_F32)), x->grad, g->grad, b->grad, id->grad, NULL};
                for (int i = 0; i < 5; i++) {
                    res[fused][i] = segc_arena_alloc(&ctx->arena, (size_t)sz[i] * sizeof(float));
                    memcpy(res[fused][i], src[i], (size_t)sz[i] * sizeof(float));
                }
                res[fused][5] = segc_arena_alloc(&ctx->arena, 2 * C * sizeof(float));
                memcpy(res[fused][5], rm->data, C * sizeof(float));
                memcpy(res[fused][5] + C, rv->data, C * sizeof(float));
            }
            int64_t zeros = 0;
            for (int64_t i = 0; i < n; i++) zeros += res[1][0][i] == 0.f;
            assert_true(zeros > n / 10);   /* the mask matters */
            for (int i = 0; i < 6; i++) assert_memory_equal(res[0][i], res[1][i], (size_t)sz[i] * sizeof(float));
            print_message("  batch_norm_add_relu %s %s: %lld of %lld outputs zero, bitwise equal\n", d ? "bf16" : "f32",
                          training ? "train" : "eval", (long long)zeros, (long long)n);
        }
    segc_ctx_free(ctx);
}

/* instance_norm_lrelu is instance_norm then leaky_relu, bit for bit in f32
 * (values and every gradient), above the threading threshold */
static void test_instance_norm_lrelu_fused(void **state) {
    segc_ctx *ctx = segc_ctx_new(5);
    const int64_t C = 16;
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 16, 40, 40), 1.5f, true), *g = t_uniform(ctx, 1, &C, 0.5f, 1.5f, true),
                *b = t_randn(ctx, 1, &C, 0.5f, true);
    segc_tensor *dy = t_randn(ctx, 4, SHAPE(2, 16, 40, 40), 1.f, false);
    float *grads[2][3];
    segc_tensor *outs[2];
    for (int fused = 0; fused < 2; fused++) {
        segc_tensor *y = fused ? segc_instance_norm_lrelu(ctx, x, g, b, 1e-5f, 0.01f)
                               : segc_leaky_relu(ctx, segc_instance_norm(ctx, x, g, b, 1e-5f), 0.01f);
        assert_non_null(y);
        outs[fused] = y;
        segc_tensor *ps[3] = {x, g, b};
        for (int i = 0; i < 3; i++) ps[i]->grad = NULL;
        assert_true(segc_backward_from(ctx, y, segc_f32(dy)));
        for (int i = 0; i < 3; i++) {
            grads[fused][i] = segc_arena_alloc(&ctx->arena, (size_t)segc_numel(ps[i]) * sizeof(float));
            memcpy(grads[fused][i], ps[i]->grad, (size_t)segc_numel(ps[i]) * sizeof(float));
        }
    }
    assert_memory_equal(outs[0]->data, outs[1]->data, segc_nbytes(outs[0]));
    assert_memory_equal(grads[0][0], grads[1][0], (size_t)segc_numel(x) * sizeof(float));
    assert_memory_equal(grads[0][1], grads[1][1], C * sizeof(float));
    assert_memory_equal(grads[0][2], grads[1][2], C * sizeof(float));
    assert_null(segc_instance_norm_lrelu(ctx, x, g, b, 1e-5f, -0.1f));
    assert_non_null(strstr(segc_last_error(ctx), "instance_norm_lrelu: negative_slope must be finite and >= 0"));
    segc_ctx_free(ctx);
}

/* ---------------- bitwise identical for 1 and 2 threads ---------------- */
static void test_thread_independent(void **state) {
    const int64_t shape[4] = {4, 16, 32, 32};   /* 65536 values: above the threading threshold */
    enum { NOUT = 6, NIN = 8 };
    float *res[2][NOUT + NIN];
    int64_t sizes[NOUT + NIN];
    segc_ctx *ctxs[2];
    for (int t = 0; t < 2; t++) {
        segc_ctx *ctx = ctxs[t] = segc_ctx_new(5);
        ctx->retain_grads = true;   /* gradients of cast outputs are compared */
        segc_set_num_threads(ctx, t + 1);
        segc_tensor *x = t_randn(ctx, 4, shape, 2.0f, true), *r = t_randn(ctx, 4, shape, 1.0f, true);
        /* layer_norm normalises the last dim (32); the channel norms take [16] parameters */
        segc_tensor *g32 = t_uniform(ctx, 1, SHAPE(32), 0.5f, 1.5f, true), *b32 = t_randn(ctx, 1, SHAPE(32), 1, true);
        segc_tensor *g = t_uniform(ctx, 1, SHAPE(16), 0.5f, 1.5f, true), *b = t_randn(ctx, 1, SHAPE(16), 1, true);
        segc_tensor *g16 = segc_cast(ctx, g, SEGC_BF16), *b16 = segc_cast(ctx, b, SEGC_BF16);
        segc_tensor *outs[NOUT], *sum = NULL;
        outs[0] = segc_add_layer_norm(ctx, x, r, g32, b32, 1e-5f, &sum);
        outs[1] = sum;
        outs[2] = segc_batch_norm(ctx, x, g, b, NULL, NULL, 0.1f, 1e-5f);
        outs[3] = segc_group_norm(ctx, x, 4, g, b, 1e-5f);
        outs[4] = segc_instance_norm(ctx, x, g16, b16, 1e-5f);
        outs[5] = segc_layer_norm(ctx, segc_cast(ctx, x, SEGC_BF16), NULL, NULL, 1e-5f);
        /* one backward over the whole tape with an upstream gradient on every output */
        for (int k = 0; k < NOUT; k++) {
            assert_non_null(outs[k]);
            int64_t n = sizes[k] = segc_numel(outs[k]);
            float *gout = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
            segc_rng rng;
            segc_rng_init(&rng, 100 + k);
            segc_rng_fill_normal(&rng, gout, n, 0, 1);
            if (k < NOUT - 1) memcpy(segc_grad(ctx, outs[k]), gout, (size_t)n * sizeof(float));
            else assert_true(segc_backward_from(ctx, outs[k], gout));
            res[t][k] = segc_as_f32(ctx, outs[k]);
        }
        segc_tensor *gt[NIN] = {x, r, g32, b32, g, b, g16, b16};
        for (int k = 0; k < NIN; k++) {
            assert_non_null(gt[k]->grad);
            res[t][NOUT + k] = gt[k]->grad;
            sizes[NOUT + k] = segc_numel(gt[k]);
        }
    }
    for (int k = 0; k < NOUT + NIN; k++) assert_memory_equal(res[0][k], res[1][k], (size_t)sizes[k] * sizeof(float));
    segc_set_num_threads(NULL, 2);
    segc_ctx_free(ctxs[0]);
    segc_ctx_free(ctxs[1]);
}

/* ---------------- behaviour details ---------------- */
static void test_semantics(void **state) {
    segc_ctx *ctx = segc_ctx_new(3);
    /* bf16 activations with f32 affine parameters give the f32 result within bf16 rounding */
    segc_tensor *x = t_randn(ctx, 3, SHAPE(2, 3, 40), 1.0f, false), *g = t_uniform(ctx, 1, SHAPE(40), 0.5f, 1.5f, false);
    segc_tensor *xb = segc_cast(ctx, x, SEGC_BF16), *xr = segc_cast(ctx, xb, SEGC_F32);
    segc_tensor *y32 = segc_layer_norm(ctx, xr, g, NULL, 1e-5f), *y16 = segc_layer_norm(ctx, xb, g, NULL, 1e-5f);
    assert_int_equal(y16->dtype, SEGC_BF16);
    assert_true(fx_close("bf16 x, f32 gamma", y16, y32, 1e-2));
    /* eval batch norm without running stats uses the batch statistics; no grad recorded without requires_grad */
    ctx->training = false;
    segc_tensor *xb4 = t_randn(ctx, 4, SHAPE(3, 2, 2, 2), 1.0f, false);
    segc_tensor *yb = segc_batch_norm(ctx, xb4, NULL, NULL, NULL, NULL, 0.1f, 0.f);
    assert_non_null(yb);
    assert_false(yb->requires_grad);
    double m = 0;
    for (int n = 0; n < 3; n++) for (int s = 0; s < 4; s++) m += segc_f32(yb)[n * 8 + s];
    assert_true(fabs(m) < 1e-5);
    /* eval with running stats does not touch them; training moves them */
    segc_tensor *rm = segc_tensor_zeros(ctx, SEGC_F32, 1, SHAPE(2)), *rv = segc_tensor_zeros(ctx, SEGC_F32, 1, SHAPE(2));
    segc_f32(rv)[0] = segc_f32(rv)[1] = 1.f;
    assert_non_null(segc_batch_norm(ctx, xb4, NULL, NULL, rm, rv, 0.1f, 1e-5f));
    assert_true(segc_f32(rm)[0] == 0.f && segc_f32(rv)[1] == 1.f);
    ctx->training = true;
    assert_non_null(segc_batch_norm(ctx, xb4, NULL, NULL, rm, rv, 1.0f, 1e-5f));
    double s = 0;
    for (int n = 0; n < 3; n++) for (int k = 0; k < 4; k++) s += segc_f32(xb4)[n * 8 + k];
    assert_float_equal(segc_f32(rm)[0], s / 12, 1e-5);   /* momentum 1: the batch mean itself */
    /* the residual's sum is reported even without gradients, and NULL sum_out is fine */
    segc_tensor *sum = NULL;
    assert_non_null(segc_add_layer_norm(ctx, x, x, NULL, NULL, 1e-5f, &sum));
    assert_float_equal(segc_f32(sum)[7], 2 * segc_f32(x)[7], 0);
    assert_non_null(segc_add_layer_norm(ctx, x, x, NULL, NULL, 1e-5f, NULL));
    /* x + x: both inputs are the same tensor, the gradient doubles */
    segc_tensor *xs = t_randn(ctx, 2, SHAPE(2, 5), 1.0f, true);
    segc_tensor *sum2 = NULL;
    segc_tensor *y2 = segc_add_layer_norm(ctx, xs, xs, NULL, NULL, 1e-5f, &sum2);
    (void)y2;
    float ones[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_true(segc_backward_from(ctx, sum2, ones));
    for (int i = 0; i < 10; i++) assert_float_equal(xs->grad[i], 2.f, 0);
    /* empty batch with running stats in eval mode: nothing to do, no error */
    ctx->training = false;
    segc_tensor *e = segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(0, 2, 3, 3));
    assert_non_null(segc_batch_norm(ctx, e, NULL, NULL, rm, rv, 0.1f, 1e-5f));
    segc_ctx_free(ctx);
}

/* ---------------- errors ---------------- */
static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 6, 3, 3), 1, false), *g5 = t_randn(ctx, 1, SHAPE(5), 1, false);
    segc_tensor *g6 = t_randn(ctx, 1, SHAPE(6), 1, false), *g3 = t_randn(ctx, 1, SHAPE(3), 1, false);
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_I64, 2, SHAPE(2, 3));
    EXPECT_ERR(ctx, segc_layer_norm(ctx, x, g5, NULL, 1e-5f), "layer_norm: gamma must have shape [3], found [5]");
    EXPECT_ERR(ctx, segc_layer_norm(ctx, x, NULL, g6, 1e-5f), "layer_norm: beta must have shape [3], found [6]");
    EXPECT_ERR(ctx, segc_layer_norm(ctx, lab, NULL, NULL, 1e-5f), "layer_norm: x must be f32 or bf16, found i64");
    EXPECT_ERR(ctx, segc_layer_norm(ctx, x, NULL, NULL, -1.f), "layer_norm: eps");
    EXPECT_ERR(ctx, segc_add_layer_norm(ctx, x, g6, g3, NULL, 1e-5f, NULL), "add_layer_norm: residual must match x");
    EXPECT_ERR(ctx, segc_batch_norm(ctx, x, g5, NULL, NULL, NULL, 0.1f, 1e-5f), "batch_norm: gamma must have shape [6], found [5]");
    segc_tensor *rm16 = segc_tensor_zeros(ctx, SEGC_BF16, 1, SHAPE(6));
    EXPECT_ERR(ctx, segc_batch_norm(ctx, x, NULL, NULL, rm16, rm16, 0.1f, 1e-5f), "batch_norm: running_mean must be f32, found bf16");
    EXPECT_ERR(ctx, segc_batch_norm(ctx, x, NULL, NULL, g6, NULL, 0.1f, 1e-5f), "batch_norm: running_mean and running_var");
    EXPECT_ERR(ctx, segc_batch_norm(ctx, x, NULL, NULL, g5, g5, 0.1f, 1e-5f), "batch_norm: running_mean must have shape [6]");
    EXPECT_ERR(ctx, segc_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 1.5f, 1e-5f), "batch_norm: need eps >= 0 and momentum");
    segc_tensor *one = t_randn(ctx, 4, SHAPE(1, 6, 1, 1), 1, false);
    EXPECT_ERR(ctx, segc_batch_norm(ctx, one, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), "batch_norm: batch statistics need more than 1");
    EXPECT_ERR(ctx, segc_batch_norm(ctx, g6, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), "batch_norm: x must be [N, C, ...]");
    EXPECT_ERR(ctx, segc_batch_norm_add_relu(ctx, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, one),
               "batch_norm_add_relu: the residual expected x's shape and dtype [2, 6, 3, 3] f32, found [1, 6, 1, 1] f32");
    EXPECT_ERR(ctx, segc_group_norm(ctx, x, 4, NULL, NULL, 1e-5f), "group_norm: groups 4 must be >= 1 and divide the channels 6");
    EXPECT_ERR(ctx, segc_group_norm(ctx, x, 0, NULL, NULL, 1e-5f), "group_norm: groups 0");
    EXPECT_ERR(ctx, segc_group_norm(ctx, x, 2, g5, NULL, 1e-5f), "group_norm: gamma must have shape [6], found [5]");
    EXPECT_ERR(ctx, segc_instance_norm(ctx, x, NULL, g3, 1e-5f), "instance_norm: beta must have shape [6], found [3]");
    EXPECT_ERR(ctx, segc_instance_norm(ctx, lab, NULL, NULL, 1e-5f), "instance_norm: x must be f32 or bf16");
    EXPECT_ERR(ctx, segc_instance_norm(ctx, segc_tensor_new(ctx, SEGC_F32, 2, SHAPE(2, 6)), NULL, NULL, 1e-5f),
               "instance_norm: x must be [N, C, spatial...]");
    /* NULL inputs: NULL result, first error kept */
    segc_clear_error(ctx);
    segc_set_error(ctx, "earlier failure");
    assert_null(segc_layer_norm(ctx, NULL, NULL, NULL, 1e-5f));
    assert_null(segc_add_layer_norm(ctx, x, NULL, NULL, NULL, 1e-5f, NULL));
    assert_null(segc_batch_norm(ctx, NULL, NULL, NULL, NULL, NULL, 0.1f, 1e-5f));
    assert_null(segc_group_norm(ctx, NULL, 1, NULL, NULL, 1e-5f));
    assert_null(segc_instance_norm(ctx, NULL, NULL, NULL, 1e-5f));
    assert_string_equal(segc_last_error(ctx), "earlier failure");
    segc_ctx_free(ctx);
}

/* ---------------- channels-last (NHWC) batch norm ---------------- */
enum { BN_PLAIN, BN_RELU, BN_ADD_RELU };
static const char *const bn_variant_name[3] = {"batch_norm", "batch_norm_relu", "batch_norm_add_relu"};

static segc_tensor *bn_variant(segc_ctx *ctx, int v, segc_tensor *x, segc_tensor *g, segc_tensor *b, segc_tensor *rm,
                               segc_tensor *rv, segc_tensor *id) {
    if (v == BN_PLAIN) return segc_batch_norm(ctx, x, g, b, rm, rv, 0.1f, 1e-5f);
    if (v == BN_RELU) return segc_batch_norm_relu(ctx, x, g, b, rm, rv, 0.1f, 1e-5f);
    return segc_batch_norm_add_relu(ctx, x, g, b, rm, rv, 0.1f, 1e-5f, id);
}

/* one layout's results, f32 in NCHW order: y, the gradients of x, gamma, beta, id, running stats */
enum { R_Y, R_GX, R_GG, R_GB, R_GI, R_STATS, R_N };
typedef struct { float *v[R_N]; int64_t n[R_N]; } bn_res;

static float *bn_copy(segc_ctx *ctx, const float *src, int64_t n) {
    float *d = segc_arena_alloc(&ctx->arena, (size_t)(n ? n : 1) * sizeof(float));
    if (src) memcpy(d, src, (size_t)n * sizeof(float));
    else memset(d, 0, (size_t)(n ? n : 1) * sizeof(float));
    return d;
}

/* variant v on x (cast to dt; channels-last when nhwc), backward of sum(channels_first(y) * r) */
static void bn_run(segc_ctx *ctx, int v, bool nhwc, segc_dtype dt, segc_tensor *const in[5], bn_res *res) {
    segc_tensor *x = in[0], *g = in[1], *b = in[2], *id = in[3], *r = in[4];
    const int64_t C = x->shape[1], n = segc_numel(x);
    segc_tensor *rm = segc_tensor_new(ctx, SEGC_F32, 1, &C), *rv = segc_tensor_new(ctx, SEGC_F32, 1, &C);
    for (int64_t i = 0; i < C; i++) segc_f32(rm)[i] = 0.1f * (float)i - 1.f, segc_f32(rv)[i] = 0.5f + 0.2f * (float)i;
    for (int i = 0; i < 4; i++) in[i]->grad = NULL;
    segc_tensor *xs = segc_cast(ctx, x, dt), *ids = segc_cast(ctx, id, dt);
    if (nhwc) xs = segc_to_channels_last(ctx, xs), ids = segc_to_channels_last(ctx, ids);
    segc_tensor *y = bn_variant(ctx, v, xs, g, b, rm, rv, ids);
    if (!y) print_message("  %s failed: %s\n", bn_variant_name[v], segc_last_error(ctx));
    assert_non_null(y);
    assert_true(y->nhwc == nhwc);
    segc_tensor *yc = segc_cast(ctx, segc_to_channels_first(ctx, y), SEGC_F32);
    segc_tensor *loss = segc_sum(ctx, segc_mul(ctx, yc, r), NULL, 0, false);
    assert_non_null(loss);
    assert_true(segc_backward(ctx, loss));
    const float *src[R_STATS] = {segc_f32(yc), x->grad, g->grad, b->grad, v == BN_ADD_RELU ? id->grad : NULL};
    const int64_t sz[R_STATS] = {n, n, C, C, n};
    for (int i = 0; i < R_STATS; i++) res->v[i] = bn_copy(ctx, src[i], res->n[i] = sz[i]);
    res->v[R_STATS] = bn_copy(ctx, NULL, res->n[R_STATS] = 2 * C);
    memcpy(res->v[R_STATS], rm->data, (size_t)C * sizeof(float));
    memcpy(res->v[R_STATS] + C, rv->data, (size_t)C * sizeof(float));
}

/* max |got - want| <= tol * max |want|; *worst: the largest share of its tolerance an error used */
static bool bn_close(const char *what, const float *got, const float *want, int64_t n, double tol, double *worst) {
    double d = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)got[i] - want[i]));
        ref = fmax(ref, fabs((double)want[i]));
    }
    const bool ok = d <= tol * fmax(ref, 1e-30);
    *worst = fmax(*worst, d / (tol * fmax(ref, 1e-30)));
    if (!ok) print_message("  %-50s FAIL max abs diff %.3g (tol %.1g x max %.3g)\n", what, d, tol, ref);
    return ok;
}

/* NHWC against NCHW, relative to the largest value: f32 within rounding (y: 1e-5, gradients: 1e-4,
 * running statistics: 1e-6); bf16 outputs round to bf16, and a value near a rounding boundary may
 * round either way (1 ulp: 2^-8 relative), the gradients following from those outputs */
static double bn_tol(int bf16, int k) {
    if (k == R_STATS) return 1e-6;
    if (k == R_Y) return bf16 ? 1e-2 : 1e-5;
    return bf16 ? 2e-2 : 1e-4;
}

/* NHWC against NCHW: outputs, running statistics and gradients, f32 and bf16, every variant,
 * training and eval, an even and an odd shape */
static void test_batch_norm_nhwc(void **state) {
    const int64_t shapes[2][4] = {{2, 24, 5, 7}, {2, 3, 17, 17}};
    const char *names[R_N] = {"y", "dx", "dgamma", "dbeta", "did", "running stats"};
    bool ok = true;
    int cases = 0;
    double worst[2][R_N] = {{0}};   /* per dtype and result */
    for (int si = 0; si < 2; si++) {
        segc_ctx *ctx = segc_ctx_new(11 + si);
        const int64_t *sh = shapes[si], C = sh[1];
        segc_tensor *in[5] = {t_randn(ctx, 4, sh, 1.5f, true), t_uniform(ctx, 1, &C, 0.5f, 1.5f, true),
                              t_randn(ctx, 1, &C, 0.5f, true), t_randn(ctx, 4, sh, 1.f, true),
                              t_randn(ctx, 4, sh, 1.f, false)};
        for (int64_t i = 0; i < segc_numel(in[0]); i++) segc_f32(in[0])[i] += 3.f;   /* |mean| > std */
        for (int d = 0; d < 2; d++)
            for (int v = 0; v < 3; v++)
                for (int training = 0; training < 2; training++) {
                    const segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
                    ctx->training = training;
                    bn_res res[2];
                    for (int nhwc = 0; nhwc < 2; nhwc++) bn_run(ctx, v, nhwc, dt, in, &res[nhwc]);
                    for (int k = 0; k < R_N; k++) {
                        char what[128];
                        snprintf(what, sizeof what, "%s [%lld,%lld,%lld,%lld] %s %s %s", bn_variant_name[v],
                                 (long long)sh[0], (long long)sh[1], (long long)sh[2], (long long)sh[3],
                                 d ? "bf16" : "f32", training ? "train" : "eval", names[k]);
                        ok &= bn_close(what, res[1].v[k], res[0].v[k], res[0].n[k], bn_tol(d, k), &worst[d][k]);
                    }
                    cases++;
                }
        segc_ctx_free(ctx);
    }
    print_message("  %d NHWC batch-norm cases compared with NCHW; the largest error as a share of its tolerance:\n",
                  cases);
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < R_N; k++) print_message("    %s %-14s %.3g\n", d ? "bf16" : "f32", names[k], worst[d][k]);
    assert_true(ok);
}

/* the NHWC forward and backward give the same bits for 1 and 2 threads (above the threading
 * threshold), and batch_norm_relu's refill reproduces its NHWC output bit for bit */
static void test_batch_norm_nhwc_threads_refill(void **state) {
    const int saved_threads = omp_get_max_threads();
    const int64_t C = 24, *sh = SHAPE(2, 24, 40, 40);
    for (int d = 0; d < 2; d++)
        for (int v = 0; v < 3; v++) {
            const segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
            bn_res res[2];
            for (int t = 0; t < 2; t++) {
                omp_set_num_threads(t + 1);
                segc_ctx *ctx = segc_ctx_new(21);
                ctx->training = true;
                segc_tensor *in[5] = {t_randn(ctx, 4, sh, 1.5f, true), t_uniform(ctx, 1, &C, 0.5f, 1.5f, true),
                                      t_randn(ctx, 1, &C, 0.5f, true), t_randn(ctx, 4, sh, 1.f, true),
                                      t_randn(ctx, 4, sh, 1.f, false)};
                bn_run(ctx, v, true, dt, in, &res[t]);
                /* the results live in ctx's arena: keep them on the heap */
                for (int k = 0; k < R_N; k++) {
                    float *h = malloc((size_t)res[t].n[k] * sizeof(float));
                    memcpy(h, res[t].v[k], (size_t)res[t].n[k] * sizeof(float));
                    res[t].v[k] = h;
                }
                segc_ctx_free(ctx);
            }
            omp_set_num_threads(saved_threads);
            for (int k = 0; k < R_N; k++) {
                assert_memory_equal(res[0].v[k], res[1].v[k], (size_t)res[0].n[k] * sizeof(float));
                free(res[0].v[k]);
                free(res[1].v[k]);
            }
        }
    omp_set_num_threads(saved_threads);

    for (int d = 0; d < 2; d++) {
        segc_ctx *ctx = segc_ctx_new(22);
        ctx->training = true;
        ctx->free_activations = true;
        segc_tensor *x0 = t_randn(ctx, 4, sh, 1.5f, true);
        segc_tensor *x = segc_to_channels_last(ctx, segc_cast(ctx, x0, d ? SEGC_BF16 : SEGC_F32));
        segc_tensor *g = t_uniform(ctx, 1, &C, 0.5f, 1.5f, true), *b = t_randn(ctx, 1, &C, 0.5f, true);
        segc_tensor *y = segc_batch_norm_relu(ctx, x, g, b, NULL, NULL, 0.1f, 1e-5f);
        assert_non_null(y);
        assert_non_null(y->producer);
        assert_non_null(y->producer->refill);
        const size_t nb = segc_nbytes(y);
        void *ref = malloc(nb);
        memcpy(ref, y->data, nb);
        segc_release_recompute(ctx, y);
        assert_null(y->data);   /* released: the refill must recompute every byte */
        y->data = segc_arena_alloc(&ctx->arena, nb);
        memset(y->data, 0xA5, nb);
        y->producer->refill(ctx, y->producer);
        assert_memory_equal(y->data, ref, nb);
        free(ref);
        segc_ctx_free(ctx);
    }
}

/* SyncBatchNorm (ctx->sum_hook) with one process: the hook leaves the sums as they are, so the NHWC
 * results match NCHW's through the same sync code paths */
static void bn_hook_count(void *user, double *v, int64_t n) {
    (void)v, (void)n;
    ++*(int *)user;
}

static void test_batch_norm_nhwc_sync(void **state) {
    segc_ctx *ctx = segc_ctx_new(24);
    const int64_t C = 24, *sh = SHAPE(2, 24, 5, 7);
    segc_tensor *in[5] = {t_randn(ctx, 4, sh, 1.5f, true), t_uniform(ctx, 1, &C, 0.5f, 1.5f, true),
                          t_randn(ctx, 1, &C, 0.5f, true), t_randn(ctx, 4, sh, 1.f, true),
                          t_randn(ctx, 4, sh, 1.f, false)};
    int calls = 0;
    ctx->sum_hook = bn_hook_count;
    ctx->sum_hook_user = &calls;
    ctx->training = true;
    for (int d = 0; d < 2; d++)
        for (int v = 0; v < 3; v++) {
            bn_res res[2];
            for (int nhwc = 0; nhwc < 2; nhwc++) {
                calls = 0;
                bn_run(ctx, v, nhwc, d ? SEGC_BF16 : SEGC_F32, in, &res[nhwc]);
                assert_int_equal(calls, 3);   /* forward: mean, then variance; backward: the two sums */
            }
            double worst = 0;
            for (int k = 0; k < R_N; k++)
                assert_true(bn_close(bn_variant_name[v], res[1].v[k], res[0].v[k], res[0].n[k], bn_tol(d, k), &worst));
        }
    segc_ctx_free(ctx);
}

/* layout errors: the residual must share x's layout */
static void test_batch_norm_nhwc_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(23);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 6, 3, 3), 1, false), *id = t_randn(ctx, 4, SHAPE(2, 6, 3, 3), 1, false);
    segc_tensor *xl = segc_to_channels_last(ctx, x), *idl = segc_to_channels_last(ctx, id);
    EXPECT_ERR(ctx, segc_batch_norm_add_relu(ctx, xl, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, id),
               "batch_norm_add_relu: the residual must have x's layout: x is channels-last (NHWC), id is",
               "channels-first (NCHW)");
    EXPECT_ERR(ctx, segc_batch_norm_add_relu(ctx, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, idl),
               "batch_norm_add_relu: the residual must have x's layout: x is channels-first (NCHW), id is",
               "channels-last (NHWC)");
    segc_clear_error(ctx);
    segc_tensor *y = segc_batch_norm_add_relu(ctx, xl, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, idl);
    assert_non_null(y);
    assert_true(y->nhwc);
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity),     cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_instance_norm_lrelu_fused), cmocka_unit_test(test_batch_norm_relu_fused),
        cmocka_unit_test(test_batch_norm_add_relu_fused), cmocka_unit_test(test_thread_independent),
        cmocka_unit_test(test_semantics),  cmocka_unit_test(test_errors),
        cmocka_unit_test(test_batch_norm_nhwc), cmocka_unit_test(test_batch_norm_nhwc_threads_refill),
        cmocka_unit_test(test_batch_norm_nhwc_sync), cmocka_unit_test(test_batch_norm_nhwc_errors),
    };
    return cmocka_run_group_tests_name("norm", tests, NULL, NULL);
}
