/* conv2d, conv_transpose2d, max/avg/adaptive-avg pooling: PyTorch parity
 * (f32 + bf16), finite-difference gradients, errors, determinism, gradient
 * accumulation and steady-state arena use. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/cpu.h"
#include "segc/ops.h"

static segc_st_file *g_fx;
static int g_threads;   /* the default thread count, restored after tests that change it */

/* ---- fixture adapters ---- */

static segc_conv_params fx_conv_params(const segc_st_file *f, const char *cas) {
    segc_conv_params p = segc_conv_params_default();
    long v[2];
    if (fx_param_ints(f, cas, "stride", v, 2) == 2) { p.stride[0] = (int)v[0]; p.stride[1] = (int)v[1]; }
    if (fx_param_ints(f, cas, "pad", v, 2) == 2) { p.pad[0] = (int)v[0]; p.pad[1] = (int)v[1]; }
    if (fx_param_ints(f, cas, "dilation", v, 2) == 2) { p.dilation[0] = (int)v[0]; p.dilation[1] = (int)v[1]; }
    if (fx_param_ints(f, cas, "output_padding", v, 2) == 2) {
        p.output_padding[0] = (int)v[0];
        p.output_padding[1] = (int)v[1];
    }
    p.groups = (int)fx_param_int(f, cas, "groups", 1);
    p.act = (segc_act)fx_param_int(f, cas, "act", 0);
    p.act_alpha = (float)fx_param_double(f, cas, "alpha", 0);
    return p;
}

static segc_tensor *fx_conv(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    segc_conv_params p = fx_conv_params(f, cas);
    return segc_conv2d(ctx, ins[0], ins[1], n > 2 ? ins[2] : NULL, &p);
}
static segc_tensor *fx_convt(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    segc_conv_params p = fx_conv_params(f, cas);
    return segc_conv_transpose2d(ctx, ins[0], ins[1], n > 2 ? ins[2] : NULL, &p);
}

typedef struct { long k[2], s[2], p[2]; bool ceil, incl; } pool_p;
static pool_p fx_pool_params(const segc_st_file *f, const char *cas) {
    pool_p p;
    fx_param_ints(f, cas, "kernel", p.k, 2);
    fx_param_ints(f, cas, "stride", p.s, 2);
    fx_param_ints(f, cas, "pad", p.p, 2);
    p.ceil = fx_param_int(f, cas, "ceil", 0) != 0;
    p.incl = fx_param_int(f, cas, "include_pad", 1) != 0;
    return p;
}
static segc_tensor *fx_maxpool(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    pool_p p = fx_pool_params(f, cas);
    return segc_max_pool2d(ctx, ins[0], (int)p.k[0], (int)p.k[1], (int)p.s[0], (int)p.s[1], (int)p.p[0], (int)p.p[1],
                           p.ceil);
}
static segc_tensor *fx_avgpool(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    pool_p p = fx_pool_params(f, cas);
    return segc_avg_pool2d(ctx, ins[0], (int)p.k[0], (int)p.k[1], (int)p.s[0], (int)p.s[1], (int)p.p[0], (int)p.p[1],
                           p.ceil, p.incl);
}
static segc_tensor *fx_adapool(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    long o[2];
    fx_param_ints(f, cas, "out", o, 2);
    return segc_adaptive_avg_pool2d(ctx, ins[0], (int)o[0], (int)o[1]);
}

static void test_conv2d_parity(void **state) { assert_true(fx_check_all(g_fx, "conv2d_", fx_conv, 1e-5, 2e-2) >= 30); }
static void test_conv_transpose2d_parity(void **state) {
    assert_true(fx_check_all(g_fx, "convT_", fx_convt, 1e-5, 2e-2) >= 10);
}
static void test_max_pool_parity(void **state) { assert_true(fx_check_all(g_fx, "maxpool_", fx_maxpool, 1e-5, 2e-2) >= 8); }
static void test_avg_pool_parity(void **state) { assert_true(fx_check_all(g_fx, "avgpool_", fx_avgpool, 1e-5, 2e-2) >= 10); }
static void test_adaptive_pool_parity(void **state) {
    assert_true(fx_check_all(g_fx, "adapool_", fx_adapool, 1e-5, 2e-2) >= 8);
}

/* ---- finite differences ---- */

typedef struct { segc_conv_params p; bool transposed; } conv_user;

static segc_tensor *gc_conv(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    conv_user *u = user;
    segc_tensor *b = n > 2 ? ins[2] : NULL;
    return u->transposed ? segc_conv_transpose2d(ctx, ins[0], ins[1], b, &u->p) : segc_conv2d(ctx, ins[0], ins[1], b, &u->p);
}

typedef struct { int64_t x[4], w[4]; int stride[2], pad[2], dil[2], outpad[2], groups; bool bias, transposed; } conv_cfg;

static bool gradcheck_conv(const char *name, conv_cfg c) {
    segc_ctx *ctx = segc_ctx_new(77);
    conv_user u = {segc_conv_params_default(), c.transposed};
    for (int i = 0; i < 2; i++) {
        u.p.stride[i] = c.stride[i] ? c.stride[i] : 1;
        u.p.pad[i] = c.pad[i];
        u.p.dilation[i] = c.dil[i] ? c.dil[i] : 1;
        u.p.output_padding[i] = c.outpad[i];
    }
    u.p.groups = c.groups ? c.groups : 1;
    segc_tensor *ins[3];
    ins[0] = t_randn(ctx, 4, c.x, 1, true);
    ins[1] = t_randn(ctx, 4, c.w, 0.5f, true);
    int64_t oc = c.transposed ? c.w[1] * u.p.groups : c.w[0];
    ins[2] = t_randn(ctx, 1, &oc, 0.5f, true);
    bool ok = gradcheck(ctx, name, gc_conv, ins, c.bias ? 3 : 2, &u, gc_default());
    segc_ctx_free(ctx);
    return ok;
}

static void test_conv_gradcheck(void **state) {
    bool ok = true;
    ok &= gradcheck_conv("conv 3x3 s1 p1", (conv_cfg){{2, 3, 5, 6}, {4, 3, 3, 3}, .pad = {1, 1}, .bias = true});
    ok &= gradcheck_conv("conv 3x3 s2 asym pad", (conv_cfg){{1, 2, 7, 6}, {3, 2, 3, 2}, {2, 2}, {1, 0}, .bias = true});
    ok &= gradcheck_conv("conv 1x1 on 1x1", (conv_cfg){{3, 5, 1, 1}, {2, 5, 1, 1}, .bias = true});
    ok &= gradcheck_conv("conv dilated groups3", (conv_cfg){{1, 6, 7, 7}, {3, 2, 3, 3}, .pad = {2, 1}, .dil = {2, 1},
                                                            .groups = 3});
    ok &= gradcheck_conv("conv depthwise s1", (conv_cfg){{2, 3, 6, 5}, {3, 1, 3, 3}, .pad = {1, 1}, .groups = 3,
                                                         .bias = true});
    ok &= gradcheck_conv("conv depthwise s2 d2", (conv_cfg){{1, 2, 9, 8}, {2, 1, 3, 3}, {2, 2}, {2, 1}, {2, 1},
                                                            .groups = 2, .bias = true});
    ok &= gradcheck_conv("conv depthwise k1 p1 (pad > extent)", (conv_cfg){{2, 3, 4, 3}, {3, 1, 1, 1}, .pad = {1, 1},
                                                                           .groups = 3, .bias = true});
    ok &= gradcheck_conv("conv depthwise k3 p3 asym", (conv_cfg){{1, 2, 3, 4}, {2, 1, 3, 2}, .pad = {3, 2}, .groups = 2});
    ok &= gradcheck_conv("conv kernel == input", (conv_cfg){{1, 2, 3, 3}, {2, 2, 3, 3}, .bias = true});
    ok &= gradcheck_conv("convT k2 s2", (conv_cfg){{1, 3, 3, 4}, {3, 2, 2, 2}, {2, 2}, .bias = true, .transposed = true});
    ok &= gradcheck_conv("convT k3 s2 p1 op1 g2", (conv_cfg){{2, 4, 3, 3}, {4, 1, 3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1},
                                                             2, true, true});
    ok &= gradcheck_conv("convT on 1x1", (conv_cfg){{2, 3, 1, 1}, {3, 2, 3, 3}, .bias = true, .transposed = true});
    assert_true(ok);
}

typedef struct { int kind, k[2], s[2], p[2], out[2]; bool ceil, incl; } pool_user;

static segc_tensor *gc_pool(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    pool_user *u = user;
    if (u->kind == 0) return segc_max_pool2d(ctx, ins[0], u->k[0], u->k[1], u->s[0], u->s[1], u->p[0], u->p[1], u->ceil);
    if (u->kind == 1)
        return segc_avg_pool2d(ctx, ins[0], u->k[0], u->k[1], u->s[0], u->s[1], u->p[0], u->p[1], u->ceil, u->incl);
    return segc_adaptive_avg_pool2d(ctx, ins[0], u->out[0], u->out[1]);
}

static bool gradcheck_pool(const char *name, const int64_t *shape, pool_user u) {
    segc_ctx *ctx = segc_ctx_new(5);
    segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, shape);
    int64_t n = segc_numel(x);
    /* distinct values 0.05 apart, shuffled: no max-pool ties within the FD step */
    float *v = segc_f32(x);
    for (int64_t i = 0; i < n; i++) v[i] = 0.05f * (float)(i - n / 2);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(segc_rng_u32(&ctx->rng) % (uint64_t)(i + 1));
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    x->requires_grad = true;
    gc_opts o = gc_default();
    o.eps = 1e-3;
    bool ok = gradcheck(ctx, name, gc_pool, &x, 1, &u, o);
    segc_ctx_free(ctx);
    return ok;
}

static void test_pool_gradcheck(void **state) {
    bool ok = true;
    ok &= gradcheck_pool("max 3x3 s2 p1", SHAPE(2, 2, 7, 6), (pool_user){.k = {3, 3}, .s = {2, 2}, .p = {1, 1}});
    ok &= gradcheck_pool("max 2x3 s1x2 ceil", SHAPE(1, 3, 5, 8), (pool_user){.k = {2, 3}, .s = {1, 2}, .p = {0, 1}, .ceil = true});
    ok &= gradcheck_pool("max 1x1 input", SHAPE(2, 2, 1, 1), (pool_user){.k = {1, 1}, .s = {1, 1}});
    ok &= gradcheck_pool("avg 3x3 s2 p1 incl ceil", SHAPE(1, 2, 8, 6), (pool_user){1, {3, 3}, {2, 2}, {1, 1}, .ceil = true, .incl = true});
    ok &= gradcheck_pool("avg 3x2 s1 excl", SHAPE(2, 2, 5, 4), (pool_user){.kind = 1, .k = {3, 2}, .s = {1, 1}, .p = {1, 1}});
    ok &= gradcheck_pool("adaptive 7x9 -> 3x2", SHAPE(1, 3, 7, 9), (pool_user){2, .out = {3, 2}});
    ok &= gradcheck_pool("adaptive 3x3 -> 5x4", SHAPE(2, 1, 3, 3), (pool_user){2, .out = {5, 4}});
    assert_true(ok);
}

/* ---- errors ---- */

static void test_conv_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_conv_params p = segc_conv_params_default();
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 6, 5, 5), 1, false);
    segc_tensor *w = t_randn(ctx, 4, SHAPE(4, 6, 3, 3), 1, false);
    segc_tensor *b = t_randn(ctx, 1, SHAPE(4), 1, false);
    assert_non_null(segc_conv2d(ctx, x, w, b, &p));
    /* channel mismatch */
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, t_randn(ctx, 4, SHAPE(4, 5, 3, 3), 1, false), b, &p), "conv2d:", "channel mismatch");
    /* groups not dividing C */
    p.groups = 4;
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, w, b, &p), "conv2d:", "groups");
    p = segc_conv_params_default();
    /* kernel larger than padded input */
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, t_randn(ctx, 4, SHAPE(4, 6, 7, 7), 1, false), b, &p), "conv2d:",
                 "kernel larger than padded input");
    p.dilation[0] = 3;
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, w, b, &p), "conv2d:", "kernel larger than padded input");
    p = segc_conv_params_default();
    /* wrong ndim, integer dtype, dtype mismatch, bias shape, bad params */
    EXPECT_ERR(ctx, segc_conv2d(ctx, t_randn(ctx, 3, SHAPE(6, 5, 5), 1, false), w, b, &p), "conv2d:", "4-D");
    EXPECT_ERR(ctx, segc_conv2d(ctx, segc_tensor_new(ctx, SEGC_I32, 4, SHAPE(2, 6, 5, 5)), w, b, &p), "conv2d:", "i32");
    EXPECT_ERR(ctx, segc_conv2d(ctx, segc_cast(ctx, x, SEGC_BF16), w, b, &p), "conv2d:", "dtype");
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, w, t_randn(ctx, 1, SHAPE(5), 1, false), &p), "conv2d:", "b must be [4]");
    p.stride[1] = 0;
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, w, b, &p), "conv2d:", "stride");
    p = segc_conv_params_default();
    p.output_padding[0] = 1;
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, w, b, &p), "conv2d:", "output_padding");
    p = segc_conv_params_default();
    p.act = SEGC_ACT_LEAKY_RELU;
    p.act_alpha = -0.5f;
    EXPECT_ERR(ctx, segc_conv2d(ctx, x, w, b, &p), "conv2d:", "act_alpha");
    /* NULL input: NULL result, first error kept */
    segc_set_error(ctx, "first");
    assert_null(segc_conv2d(ctx, NULL, w, b, NULL));
    assert_string_equal(segc_last_error(ctx), "first");
    segc_clear_error(ctx);

    /* transposed: w is [Cin, Cout/groups, kh, kw] */
    p = segc_conv_params_default();
    segc_tensor *wt = t_randn(ctx, 4, SHAPE(6, 3, 2, 2), 1, false);
    assert_non_null(segc_conv_transpose2d(ctx, x, wt, NULL, &p));
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, x, t_randn(ctx, 4, SHAPE(5, 3, 2, 2), 1, false), NULL, &p),
                 "conv_transpose2d:", "channel mismatch");
    p.groups = 4;
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, x, wt, NULL, &p), "conv_transpose2d:", "groups");
    p = segc_conv_params_default();
    p.output_padding[1] = 1;   /* not smaller than stride 1 or dilation 1 */
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, x, wt, NULL, &p), "conv_transpose2d:", "output_padding");
    p = segc_conv_params_default();
    p.pad[0] = 3;   /* (5-1)*1 - 6 + 2 = 0 rows */
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, x, wt, NULL, &p), "conv_transpose2d:", "empty");
    p = segc_conv_params_default();
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, x, t_randn(ctx, 2, SHAPE(6, 3), 1, false), NULL, &p),
                 "conv_transpose2d:", "4-D");
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, segc_tensor_new(ctx, SEGC_U8, 4, SHAPE(2, 6, 5, 5)), wt, NULL, &p),
                 "conv_transpose2d:", "u8");
    EXPECT_ERR(ctx, segc_conv_transpose2d(ctx, x, wt, t_randn(ctx, 1, SHAPE(4), 1, false), &p), "conv_transpose2d:",
                 "b must be [3]");
    segc_ctx_free(ctx);
}

static void test_pool_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 2, 4, 5), 1, false);
    EXPECT_ERR(ctx, segc_max_pool2d(ctx, x, 7, 3, 1, 1, 1, 1, false), "max_pool2d:", "kernel larger than padded input");
    EXPECT_ERR(ctx, segc_max_pool2d(ctx, x, 3, 3, 1, 1, 2, 1, false), "max_pool2d:", "half the kernel");
    EXPECT_ERR(ctx, segc_max_pool2d(ctx, x, 3, 3, 0, 1, 1, 1, false), "max_pool2d:", "stride");
    EXPECT_ERR(ctx, segc_max_pool2d(ctx, t_randn(ctx, 3, SHAPE(2, 4, 5), 1, false), 2, 2, 2, 2, 0, 0, false),
                 "max_pool2d:", "4-D");
    EXPECT_ERR(ctx, segc_max_pool2d(ctx, segc_tensor_new(ctx, SEGC_I64, 4, SHAPE(1, 2, 4, 5)), 2, 2, 2, 2, 0, 0, false),
                 "max_pool2d:", "i64");
    EXPECT_ERR(ctx, segc_avg_pool2d(ctx, x, 3, 6, 1, 1, 0, 0, false, true), "avg_pool2d:",
                 "kernel larger than padded input");
    EXPECT_ERR(ctx, segc_avg_pool2d(ctx, x, 0, 2, 1, 1, 0, 0, false, true), "avg_pool2d:", "kernel");
    EXPECT_ERR(ctx, segc_avg_pool2d(ctx, segc_tensor_new(ctx, SEGC_U8, 4, SHAPE(1, 2, 4, 5)), 2, 2, 1, 1, 0, 0, false,
                                      true), "avg_pool2d:", "u8");
    EXPECT_ERR(ctx, segc_adaptive_avg_pool2d(ctx, x, 0, 2), "adaptive_avg_pool2d:", "output size");
    EXPECT_ERR(ctx, segc_adaptive_avg_pool2d(ctx, t_randn(ctx, 2, SHAPE(4, 5), 1, false), 2, 2),
                 "adaptive_avg_pool2d:", "4-D");
    EXPECT_ERR(ctx, segc_adaptive_avg_pool2d(ctx, segc_tensor_new(ctx, SEGC_I32, 4, SHAPE(1, 2, 4, 5)), 1, 1),
                 "adaptive_avg_pool2d:", "i32");
    assert_null(segc_max_pool2d(ctx, NULL, 2, 2, 2, 2, 0, 0, false));
    assert_null(segc_adaptive_avg_pool2d(ctx, NULL, 1, 1));
    segc_ctx_free(ctx);
}

/* ---- behaviour ---- */

/* forward + backward of conv (oneDNN path and depthwise path), relu fused;
 * returns output and gradients copied to the heap */
typedef struct { float *y, *gx, *gw, *gb; int64_t ny, nx, nw, nb; } run_out;

static run_out run_conv(int64_t c, int groups, int threads, segc_dtype dt) {
    segc_ctx *ctx = segc_ctx_new(9);
    ctx->retain_grads = true;   /* the gradients of cast outputs are compared */
    segc_set_num_threads(ctx, threads);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, c, 11, 13), 1, true);
    segc_tensor *w = t_randn(ctx, 4, SHAPE(c, c / groups, 3, 3), 0.3f, true);
    segc_tensor *b = t_randn(ctx, 1, SHAPE(c), 0.3f, true);
    if (dt == SEGC_BF16) {
        x = segc_cast(ctx, x, SEGC_BF16);
        w = segc_cast(ctx, w, SEGC_BF16);
    }
    segc_conv_params p = segc_conv_params_default();
    p.pad[0] = p.pad[1] = 1;
    p.groups = groups;
    p.act = SEGC_ACT_RELU;
    segc_tensor *y = segc_conv2d(ctx, x, w, b, &p);
    assert_non_null(y);
    int64_t ny = segc_numel(y);
    float *g = malloc((size_t)ny * sizeof(float));
    for (int64_t i = 0; i < ny; i++) g[i] = sinf((float)i);
    assert_true(segc_backward_from(ctx, y, g));
    free(g);
    run_out r = {malloc((size_t)ny * 4), NULL, NULL, NULL, ny, segc_numel(x), segc_numel(w), c};
    float *yf = segc_as_f32(ctx, y);
    memcpy(r.y, yf, (size_t)ny * 4);
    r.gx = malloc((size_t)r.nx * 4);
    memcpy(r.gx, x->grad, (size_t)r.nx * 4);
    r.gw = malloc((size_t)r.nw * 4);
    memcpy(r.gw, w->grad, (size_t)r.nw * 4);
    r.gb = malloc((size_t)c * 4);
    memcpy(r.gb, b->grad, (size_t)c * 4);
    segc_ctx_free(ctx);
    segc_set_num_threads(NULL, g_threads);
    return r;
}
static bool same_run(run_out a, run_out b) {
    return !memcmp(a.y, b.y, (size_t)a.ny * 4) && !memcmp(a.gx, b.gx, (size_t)a.nx * 4) &&
           !memcmp(a.gw, b.gw, (size_t)a.nw * 4) && !memcmp(a.gb, b.gb, (size_t)a.nb * 4);
}
static void free_run(run_out r) { free(r.y); free(r.gx); free(r.gw); free(r.gb); }

static void test_determinism(void **state) {
    for (int dt = 0; dt < 2; dt++) {
        /* oneDNN path: identical on a rerun with the same thread count, also
         * after running with another count in between */
        run_out a = run_conv(24, 1, 2, (segc_dtype)dt), one = run_conv(24, 1, 1, (segc_dtype)dt);
        run_out b = run_conv(24, 1, 2, (segc_dtype)dt), one2 = run_conv(24, 1, 1, (segc_dtype)dt);
        assert_true(same_run(a, b) && same_run(one, one2));
        free_run(a);
        free_run(b);
        free_run(one);
        free_run(one2);
        /* depthwise kernels: identical for any thread count */
        a = run_conv(24, 24, 2, (segc_dtype)dt);
        b = run_conv(24, 24, 1, (segc_dtype)dt);
        run_out c = run_conv(24, 24, 2, (segc_dtype)dt);
        assert_true(same_run(a, b) && same_run(a, c));
        free_run(a);
        free_run(b);
        free_run(c);
    }
    /* pools: identical for any thread count */
    for (int kind = 0; kind < 3; kind++) {
        float *res[2];
        int64_t ny = 0;
        for (int t = 0; t < 2; t++) {
            segc_ctx *ctx = segc_ctx_new(3);
            ctx->retain_grads = true;   /* the gradients of cast outputs are compared */
            segc_set_num_threads(ctx, t + 1);
            segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 5, 9, 11), 1, true);
            segc_tensor *y = kind == 0   ? segc_max_pool2d(ctx, x, 3, 3, 2, 2, 1, 1, true)
                             : kind == 1 ? segc_avg_pool2d(ctx, x, 3, 3, 2, 2, 1, 1, true, false)
                                         : segc_adaptive_avg_pool2d(ctx, x, 3, 4);
            ny = segc_numel(y);
            float *g = malloc((size_t)ny * sizeof(float));
            for (int64_t i = 0; i < ny; i++) g[i] = cosf((float)i);
            assert_true(segc_backward_from(ctx, y, g));
            res[t] = malloc((990 + (size_t)ny) * sizeof(float));
            memcpy(res[t], x->grad, 990 * sizeof(float));
            memcpy(res[t] + 990, y->data, segc_nbytes(y));
            free(g);
            segc_ctx_free(ctx);
        }
        assert_memory_equal(res[0], res[1], (990 + (size_t)ny) * sizeof(float));
        free(res[0]);
        free(res[1]);
    }
    segc_set_num_threads(NULL, g_threads);
}

/* train.conv_algo: Winograd (where oneDNN has it: AVX-512) agrees with direct to
 * f32 rounding of its transforms in the output and all three gradients, and is
 * deterministic; without a kernel for it the direct primitive runs, bit for bit */
/* channels-last (x stored NHWC): the same convolution, max pooling and gradients as NCHW, within
 * rounding, for plain, strided, dilated, grouped/depthwise, transposed and activation-fused cases */
static void conv_nhwc_case(segc_dtype dt, int64_t C, int64_t O, int k, int s, int pad, int dil, int groups, bool transposed,
                           segc_act act) {
    segc_ctx *ctx = segc_ctx_new(1);
    const int64_t N = 2, H = 11, W = 9;
    segc_tensor *x = t_uniform(ctx, 4, SHAPE(N, C, H, W), -1, 1, true);
    segc_tensor *w = transposed ? t_uniform(ctx, 4, SHAPE(C, O / groups, k, k), -0.5f, 0.5f, true)
                                : t_uniform(ctx, 4, SHAPE(O, C / groups, k, k), -0.5f, 0.5f, true);
    segc_tensor *b = t_uniform(ctx, 1, SHAPE(O), -0.5f, 0.5f, true);
    segc_conv_params p = segc_conv_params_default();
    p.stride[0] = p.stride[1] = s, p.pad[0] = p.pad[1] = pad, p.dilation[0] = p.dilation[1] = dil, p.groups = groups;
    p.act = act;
    segc_tensor *(*conv)(segc_ctx *, segc_tensor *, segc_tensor *, segc_tensor *, const segc_conv_params *) =
        transposed ? segc_conv_transpose2d : segc_conv2d;
    segc_tensor *y[2], *pooled[2];
    float *g[2][3];
    for (int m = 0; m < 2; m++) {   /* (each backward consumes its graph: the casts are made anew) */
        segc_tensor *xin = dt == SEGC_BF16 ? segc_cast(ctx, x, SEGC_BF16) : x;
        segc_tensor *wi = dt == SEGC_BF16 ? segc_cast(ctx, w, SEGC_BF16) : w;
        segc_tensor *xi = m ? segc_to_channels_last(ctx, xin) : xin;
        segc_tensor *yi = conv(ctx, xi, wi, b, &p);
        if (!yi) fail_msg("%s", segc_last_error(ctx));
        assert_int_equal(yi->nhwc, m);
        segc_tensor *pi = segc_max_pool2d(ctx, yi, 3, 3, 2, 2, 1, 1, false);
        if (!pi) fail_msg("%s", segc_last_error(ctx));
        assert_int_equal(pi->nhwc, m);
        y[m] = segc_cast(ctx, segc_to_channels_first(ctx, yi), SEGC_F32);
        pooled[m] = segc_cast(ctx, segc_to_channels_first(ctx, pi), SEGC_F32);
        segc_tensor *r1 = segc_tensor_new(ctx, SEGC_F32, 4, y[m]->shape), *r2 = segc_tensor_new(ctx, SEGC_F32, 4, pooled[m]->shape);
        for (int64_t i = 0; i < segc_numel(r1); i++) segc_f32(r1)[i] = (float)((i * 7) % 13) / 13.0f - 0.4f;
        for (int64_t i = 0; i < segc_numel(r2); i++) segc_f32(r2)[i] = (float)((i * 5) % 11) / 11.0f - 0.3f;
        segc_tensor *l = segc_add(ctx, segc_sum(ctx, segc_mul(ctx, y[m], r1), NULL, 0, false),
                                  segc_sum(ctx, segc_mul(ctx, pooled[m], r2), NULL, 0, false));
        x->grad = w->grad = b->grad = NULL;
        assert_true(segc_backward(ctx, l));
        segc_tensor *ts[3] = {x, w, b};
        for (int t = 0; t < 3; t++) {
            if (!ts[t]->grad) fail_msg("mode %d: no gradient for input %d", m, t);
            g[m][t] = segc_arena_alloc(&ctx->arena, segc_numel(ts[t]) * sizeof(float));
            memcpy(g[m][t], ts[t]->grad, segc_numel(ts[t]) * sizeof(float));
        }
    }
    const double tol = dt == SEGC_BF16 ? 1e-2 : 1e-5;
    bool ok = fx_close_norm("nhwc conv output", segc_f32(y[1]), segc_f32(y[0]), segc_numel(y[0]), 0, tol);
    ok &= fx_close_norm("nhwc max pool output", segc_f32(pooled[1]), segc_f32(pooled[0]), segc_numel(pooled[0]), 0, tol);
    ok &= fx_close_norm("nhwc dx", g[1][0], g[0][0], segc_numel(x), 0, tol);
    ok &= fx_close_norm("nhwc dw", g[1][1], g[0][1], segc_numel(w), 0, tol);
    ok &= fx_close_norm("nhwc db", g[1][2], g[0][2], segc_numel(b), 0, tol);
    assert_true(ok);
    segc_ctx_free(ctx);
}

static void test_channels_last(void **state) {
    for (int d = 0; d < 2; d++) {
        const segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
        conv_nhwc_case(dt, 16, 32, 3, 1, 1, 1, 1, false, SEGC_ACT_NONE);
        conv_nhwc_case(dt, 16, 32, 1, 1, 0, 1, 1, false, SEGC_ACT_RELU);
        conv_nhwc_case(dt, 8, 16, 3, 2, 1, 1, 1, false, SEGC_ACT_NONE);
        conv_nhwc_case(dt, 16, 16, 3, 1, 2, 2, 1, false, SEGC_ACT_NONE);
        conv_nhwc_case(dt, 16, 16, 3, 1, 1, 1, 16, false, SEGC_ACT_NONE);   /* depthwise */
        conv_nhwc_case(dt, 16, 8, 2, 2, 0, 1, 1, true, SEGC_ACT_NONE);      /* transposed */
    }
    /* ops without a channels-last kernel refuse it */
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = segc_to_channels_last(ctx, t_uniform(ctx, 4, SHAPE(1, 4, 5, 5), -1, 1, false));
    assert_null(segc_avg_pool2d(ctx, x, 2, 2, 2, 2, 0, 0, false, true));
    assert_non_null(strstr(segc_last_error(ctx), "channels-last"));
    assert_null(segc_reshape(ctx, x, 2, SHAPE(4, 25)));
    assert_non_null(strstr(segc_last_error(ctx), "channels-last"));
    segc_ctx_free(ctx);
}

static void test_winograd_vs_direct(void **state) {
    segc_conv_set_algo(SEGC_CONV_ALGO_DIRECT);
    run_out d = run_conv(32, 1, 2, SEGC_F32);
    segc_conv_set_algo(SEGC_CONV_ALGO_WINOGRAD);
    assert_int_equal(segc_conv_get_algo(), SEGC_CONV_ALGO_WINOGRAD);
    run_out w = run_conv(32, 1, 2, SEGC_F32), w2 = run_conv(32, 1, 2, SEGC_F32);
    segc_conv_set_algo(SEGC_CONV_ALGO_AUTO);
    assert_true(same_run(w, w2));
    printf("  winograd vs direct (ISA %s):\n", segc_isa_name(segc_cpu_isa()));
    bool ok = fx_close_norm("y", w.y, d.y, d.ny, 0, 1e-5);
    ok &= fx_close_norm("dx", w.gx, d.gx, d.nx, 0, 1e-5);
    ok &= fx_close_norm("dw", w.gw, d.gw, d.nw, 0, 1e-5);
    ok &= fx_close_norm("db", w.gb, d.gb, d.nb, 0, 1e-5);
    assert_true(ok);
    if (segc_cpu_isa() < SEGC_ISA_AVX512) assert_true(same_run(w, d));   /* no kernel: direct ran */
    else assert_false(same_run(w, d));   /* oneDNN's AVX-512 Winograd kernel ran */
    free_run(d);
    free_run(w);
    free_run(w2);
    segc_conv_algo a;
    assert_true(segc_conv_algo_parse("direct", &a) && a == SEGC_CONV_ALGO_DIRECT);
    assert_false(segc_conv_algo_parse("fft", &a));
}

/* gradients add to what the tensors already hold (parameters' persistent
 * buffers, inputs used twice) */
static void test_grad_accumulates(void **state) {
    for (int groups = 1; groups <= 6; groups += 5) {
        float *fresh[3];
        for (int pass = 0; pass < 2; pass++) {
            segc_ctx *ctx = segc_ctx_new(4);
            segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 6, 5, 4), 1, true);
            segc_tensor *w = t_randn(ctx, 4, SHAPE(6, 6 / groups, 3, 3), 0.3f, true);
            segc_tensor *b = t_randn(ctx, 1, SHAPE(6), 0.3f, true);
            segc_tensor *t[3] = {x, w, b};
            float *pre[3];
            for (int i = 0; i < 3; i++) {
                int64_t n = segc_numel(t[i]);
                pre[i] = malloc((size_t)n * 4);
                for (int64_t j = 0; j < n; j++) pre[i][j] = pass ? 0.25f * (float)(j % 7) : 0.0f;
                if (pass) {
                    t[i]->grad = segc_arena_alloc(&ctx->arena, (size_t)n * 4);
                    memcpy(t[i]->grad, pre[i], (size_t)n * 4);
                }
            }
            w->is_param = pass == 1;
            segc_conv_params p = segc_conv_params_default();
            p.pad[0] = p.pad[1] = 1;
            p.groups = groups;
            segc_tensor *y = segc_conv2d(ctx, x, w, b, &p);
            float g[120];
            for (int i = 0; i < 120; i++) g[i] = cosf((float)i);
            assert_true(segc_backward_from(ctx, y, g));
            for (int i = 0; i < 3; i++) {
                int64_t n = segc_numel(t[i]);
                if (!pass) {
                    fresh[i] = malloc((size_t)n * 4);
                    memcpy(fresh[i], t[i]->grad, (size_t)n * 4);
                } else {
                    for (int64_t j = 0; j < n; j++) assert_float_equal(t[i]->grad[j], fresh[i][j] + pre[i][j], 1e-5);
                    free(fresh[i]);
                }
                free(pre[i]);
            }
            segc_ctx_free(ctx);
        }
    }
}

/* bf16 x/w with an f32 bias equals the same call with the bias rounded to bf16
 * when the bias values are exactly representable */
static void test_bf16_bias_dtypes(void **state) {
    segc_ctx *ctx = segc_ctx_new(2);
    segc_tensor *x = segc_cast(ctx, t_randn(ctx, 4, SHAPE(1, 3, 6, 6), 1, false), SEGC_BF16);
    segc_tensor *w = segc_cast(ctx, t_randn(ctx, 4, SHAPE(4, 3, 3, 3), 0.3f, false), SEGC_BF16);
    segc_tensor *b32 = segc_cast(ctx, segc_cast(ctx, t_randn(ctx, 1, SHAPE(4), 1, false), SEGC_BF16), SEGC_F32);
    segc_tensor *b16 = segc_cast(ctx, b32, SEGC_BF16);
    segc_tensor *y1 = segc_conv2d(ctx, x, w, b32, NULL), *y2 = segc_conv2d(ctx, x, w, b16, NULL);
    assert_non_null(y1);
    assert_non_null(y2);
    assert_int_equal(y1->dtype, SEGC_BF16);
    assert_memory_equal(y1->data, y2->data, segc_nbytes(y1));
    segc_ctx_free(ctx);
}

/* a second identical step fits the consolidated arena: no new chunk */
static void test_steady_state_arena(void **state) {
    segc_ctx *ctx = segc_ctx_new(8);
    for (int step = 0; step < 3; step++) {
        segc_ctx_step_begin(ctx);
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 16, 12, 12), 1, true);
        segc_tensor *w = t_randn(ctx, 4, SHAPE(16, 16, 3, 3), 0.3f, true);
        segc_tensor *wd = t_randn(ctx, 4, SHAPE(16, 1, 3, 3), 0.3f, true);
        segc_tensor *wt = t_randn(ctx, 4, SHAPE(16, 8, 2, 2), 0.3f, true);
        segc_conv_params p = segc_conv_params_default(), pd, pt = segc_conv_params_default();
        p.pad[0] = p.pad[1] = 1;
        pd = p;
        pd.groups = 16;
        pt.stride[0] = pt.stride[1] = 2;
        segc_tensor *y = segc_conv2d(ctx, x, w, NULL, &p);
        y = segc_conv2d(ctx, y, wd, NULL, &pd);
        y = segc_max_pool2d(ctx, y, 3, 3, 2, 2, 1, 1, false);
        y = segc_conv_transpose2d(ctx, y, wt, NULL, &pt);
        y = segc_avg_pool2d(ctx, y, 2, 2, 2, 2, 0, 0, false, true);
        y = segc_adaptive_avg_pool2d(ctx, y, 1, 1);
        assert_non_null(y);
        float g[16];
        for (int i = 0; i < 16; i++) g[i] = 1.0f;
        assert_true(segc_backward_from(ctx, y, g));
        if (step == 2) assert_int_equal(ctx->arena.n_chunks, 1);
    }
    segc_ctx_free(ctx);
}

static int setup(void **state) {
    g_threads = segc_get_num_threads();
    g_fx = fx_open("conv.safetensors");
    return g_fx ? 0 : -1;
}
static int teardown(void **state) {
    segc_st_close(g_fx);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_parity),        cmocka_unit_test(test_conv_transpose2d_parity),
        cmocka_unit_test(test_max_pool_parity),      cmocka_unit_test(test_avg_pool_parity),
        cmocka_unit_test(test_adaptive_pool_parity), cmocka_unit_test(test_conv_gradcheck),
        cmocka_unit_test(test_pool_gradcheck),       cmocka_unit_test(test_conv_errors),
        cmocka_unit_test(test_pool_errors),          cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_grad_accumulates),     cmocka_unit_test(test_bf16_bias_dtypes),
        cmocka_unit_test(test_steady_state_arena),   cmocka_unit_test(test_winograd_vs_direct),
        cmocka_unit_test(test_channels_last),
    };
    return cmocka_run_group_tests_name("conv", tests, setup, teardown);
}
