/* matmul, linear, attention and the strided GEMM: PyTorch parity, finite
 * differences, a double-precision attention reference across query chunks,
 * determinism, steady-state arena use and error messages. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/ops.h"

/* ---- PyTorch parity ---- */

static segc_tensor *fx_matmul(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_matmul(ctx, ins[0], ins[1], fx_param_int(f, cas, "trans_a", 0), fx_param_int(f, cas, "trans_b", 0));
}
static segc_tensor *fx_linear(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_linear(ctx, ins[0], ins[1], n > 2 ? ins[2] : NULL);
}
static segc_tensor *fx_attention(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_attention(ctx, ins[0], ins[1], ins[2], (int)fx_param_int(f, cas, "heads", 1),
                          (float)fx_param_double(f, cas, "scale", 1.0));
}

/* Max |got - want| / max|want|: the bf16 attention check. Its softmax output
 * and dS are rounded to bf16 before their GEMMs (what a bf16 GEMM needs), so
 * elements that cancel to near zero carry bf16 rounding of the terms, which an
 * elementwise relative metric would flag; normwise the error stays at a few
 * bf16 ulps of the largest value. */
static bool close_normwise(const char *what, const segc_tensor *got, const float *gotf, const segc_tensor *want,
                           double tol) {
    int64_t n = segc_numel(want);
    double maxabs = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double w = want->dtype == SEGC_BF16 ? segc_bf16_to_f32(segc_bf16p(want)[i]) : segc_f32(want)[i];
        double g = gotf ? gotf[i] : got->dtype == SEGC_BF16 ? segc_bf16_to_f32(segc_bf16p(got)[i]) : segc_f32(got)[i];
        maxabs = fmax(maxabs, fabs(w));
        worst = fmax(worst, fabs(g - w));
    }
    worst /= fmax(maxabs, 1e-30);
    print_message("  %-40s %s normwise err %.3g (tol %.1g)\n", what, worst <= tol ? "ok  " : "FAIL", worst, tol);
    return worst <= tol;
}

static int check_normwise_all(const segc_st_file *f, const char *prefix, fx_op_fn fn, double tol) {
    int ran = 0;
    bool all = true;
    for (int i = 0; i < segc_st_count(f); i++) {
        const char *name = segc_st_at(f, i)->name, *slash = strrchr(name, '/');
        if (!slash || strcmp(slash, "/out") != 0 || strncmp(name, prefix, strlen(prefix)) != 0) continue;
        char cas[256], what[300];
        snprintf(cas, sizeof cas, "%.*s", (int)(slash - name), name);
        segc_ctx *ctx = segc_ctx_new(1);
        segc_tensor *ins[SEGC_MAX_INPUTS], *grads[SEGC_MAX_INPUTS];
        int n = fx_n_inputs(f, cas);
        for (int k = 0; k < n; k++) {
            snprintf(what, sizeof what, "in%d", k);
            ins[k] = fx_tensor(ctx, f, cas, what);
            snprintf(what, sizeof what, "grad%d", k);
            grads[k] = fx_tensor(ctx, f, cas, what);
            ins[k]->requires_grad = grads[k] != NULL;
        }
        segc_tensor *out = fn(ctx, ins, n, f, cas);
        assert_non_null(out);
        snprintf(what, sizeof what, "%s out", cas);
        all &= close_normwise(what, out, NULL, fx_tensor(ctx, f, cas, "out"), tol);
        assert_true(segc_backward_from(ctx, out, segc_f32(fx_tensor(ctx, f, cas, "gout"))));
        for (int k = 0; k < n; k++) {
            snprintf(what, sizeof what, "%s grad%d", cas, k);
            all &= close_normwise(what, NULL, ins[k]->grad, grads[k], tol);
        }
        segc_ctx_free(ctx);
        ran++;
    }
    assert_true(all);
    return ran;
}

/* f32 cases are compared with float64 references. The harness's elementwise
 * metric floors |want| at 1e-3 of the tensor's max, so a 1e-5 tolerance asks
 * near-zero (cancelling) elements for 1e-8 of the max: below f32 epsilon.
 * PyTorch's own f32 results miss float64 by up to 3e-5 (linear) and 1e-4
 * (attention) on these cases; 1e-4 / 2e-4 is about one ulp of the max. */
static void test_matmul_fixtures(void **state) {
    segc_st_file *f = fx_open("matmul.safetensors");
    assert_int_equal(fx_check_all(f, "matmul/", fx_matmul, 1e-4, 2e-2), 22);
    segc_st_close(f);
}
static void test_linear_fixtures(void **state) {
    segc_st_file *f = fx_open("matmul.safetensors");
    assert_int_equal(fx_check_all(f, "linear/", fx_linear, 1e-4, 2e-2), 10);
    segc_st_close(f);
}
static void test_attention_fixtures(void **state) {
    segc_st_file *f = fx_open("matmul.safetensors");
    assert_int_equal(fx_check_all(f, "attention/f32/", fx_attention, 2e-4, 2e-2), 5);
    assert_int_equal(check_normwise_all(f, "attention/bf16/", fx_attention, 1e-2), 5);
    segc_st_close(f);
}

/* ---- finite differences ---- */

typedef struct { bool ta, tb; int heads; float scale; } gc_params;

static segc_tensor *gc_matmul(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    const gc_params *p = user;
    return segc_matmul(ctx, ins[0], ins[1], p->ta, p->tb);
}
static segc_tensor *gc_linear(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    return segc_linear(ctx, ins[0], ins[1], n > 2 ? ins[2] : NULL);
}
static segc_tensor *gc_attention(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    const gc_params *p = user;
    return segc_attention(ctx, ins[0], ins[1], ins[2], p->heads, p->scale);
}

static void test_matmul_gradcheck(void **state) {
    struct { int nda, ndb; int64_t sa[4], sb[4]; bool ta, tb; } cases[] = {
        {2, 2, {4, 6}, {6, 3}, false, false},
        {2, 2, {6, 4}, {3, 6}, true, true},
        {3, 3, {2, 1, 5}, {2, 5, 3}, false, false},       /* M = 1 */
        {3, 2, {3, 4, 2}, {4, 5}, true, false},           /* shared b, loop reduction */
        {3, 2, {2, 3, 4}, {5, 4}, false, true},           /* shared b, folded reduction */
        {4, 4, {2, 2, 3, 1}, {2, 2, 1, 4}, false, false}, /* K = 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        segc_ctx *ctx = segc_ctx_new(10 + i);
        segc_tensor *ins[2] = {t_randn(ctx, cases[i].nda, cases[i].sa, 1, true),
                               t_randn(ctx, cases[i].ndb, cases[i].sb, 1, true)};
        gc_params p = {.ta = cases[i].ta, .tb = cases[i].tb};
        char name[64];
        snprintf(name, sizeof name, "matmul case %zu", i);
        assert_true(gradcheck(ctx, name, gc_matmul, ins, 2, &p, gc_default()));
        segc_ctx_free(ctx);
    }
}

static void test_linear_gradcheck(void **state) {
    segc_ctx *ctx = segc_ctx_new(3);
    segc_tensor *ins[3] = {t_randn(ctx, 3, SHAPE(2, 3, 7), 1, true), t_randn(ctx, 2, SHAPE(5, 7), 0.4f, true),
                           t_randn(ctx, 1, SHAPE(5), 1, true)};
    assert_true(gradcheck(ctx, "linear 3-D with bias", gc_linear, ins, 3, NULL, gc_default()));
    segc_tensor *ins2[2] = {t_randn(ctx, 1, SHAPE(1), 1, true), t_randn(ctx, 2, SHAPE(3, 1), 1, true)};
    assert_true(gradcheck(ctx, "linear 1-D x, in 1, no bias", gc_linear, ins2, 2, NULL, gc_default()));
    segc_tensor *ins3[3] = {t_randn(ctx, 2, SHAPE(300, 4), 1, true), t_randn(ctx, 2, SHAPE(3, 4), 0.5f, true),
                            t_randn(ctx, 1, SHAPE(3), 1, true)};
    assert_true(gradcheck(ctx, "linear 300 rows (chunked bias grad)", gc_linear, ins3, 3, NULL, gc_default()));
    segc_ctx_free(ctx);
}

static void test_attention_gradcheck(void **state) {
    struct { int64_t B, Nq, Nk, H, D, Dv; } cases[] = {
        {2, 5, 3, 1, 4, 4}, {1, 4, 1, 2, 3, 2}, {2, 3, 6, 3, 2, 5}, {1, 1, 2, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        segc_ctx *ctx = segc_ctx_new(20 + i);
        int64_t B = cases[i].B, H = cases[i].H;
        segc_tensor *ins[3] = {t_randn(ctx, 3, SHAPE(B, cases[i].Nq, H * cases[i].D), 1, true),
                               t_randn(ctx, 3, SHAPE(B, cases[i].Nk, H * cases[i].D), 1, true),
                               t_randn(ctx, 3, SHAPE(B, cases[i].Nk, H * cases[i].Dv), 1, true)};
        gc_params p = {.heads = (int)H, .scale = 1.0f / sqrtf((float)cases[i].D)};
        char name[64];
        snprintf(name, sizeof name, "attention case %zu", i);
        assert_true(gradcheck(ctx, name, gc_attention, ins, 3, &p, gc_default()));
        segc_ctx_free(ctx);
    }
}

/* ---- attention across several query chunks against a double reference ---- */

static void attention_ref(const float *q, const float *k, const float *v, const float *go, int64_t B, int64_t Nq,
                          int64_t Nk, int64_t H, int64_t D, int64_t Dv, double scale, double *out, double *gq,
                          double *gk, double *gv) {
    int64_t C = H * D, Cv = H * Dv;
    double *p = malloc(Nk * sizeof *p), *dp = malloc(Nk * sizeof *dp);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Nq; i++) {
                const float *qi = q + (b * Nq + i) * C + h * D;
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < Nk; j++) {
                    const float *kj = k + (b * Nk + j) * C + h * D;
                    double s = 0;
                    for (int64_t d = 0; d < D; d++) s += (double)qi[d] * kj[d];
                    p[j] = s * scale;
                    m = fmax(m, p[j]);
                }
                for (int64_t j = 0; j < Nk; j++) sum += p[j] = exp(p[j] - m);
                for (int64_t j = 0; j < Nk; j++) p[j] /= sum;
                const float *goi = go + (b * Nq + i) * Cv + h * Dv;
                double delta = 0;
                for (int64_t j = 0; j < Nk; j++) {
                    const float *vj = v + (b * Nk + j) * Cv + h * Dv;
                    dp[j] = 0;
                    for (int64_t e = 0; e < Dv; e++) {
                        out[(b * Nq + i) * Cv + h * Dv + e] += p[j] * vj[e];
                        gv[(b * Nk + j) * Cv + h * Dv + e] += p[j] * goi[e];
                        dp[j] += (double)goi[e] * vj[e];
                    }
                    delta += p[j] * dp[j];
                }
                for (int64_t j = 0; j < Nk; j++) {
                    double ds = p[j] * (dp[j] - delta) * scale;
                    const float *kj = k + (b * Nk + j) * C + h * D;
                    for (int64_t d = 0; d < D; d++) {
                        gq[(b * Nq + i) * C + h * D + d] += ds * kj[d];
                        gk[(b * Nk + j) * C + h * D + d] += ds * qi[d];
                    }
                }
            }
    free(p);
    free(dp);
}

static void check_close_d(const char *what, const float *got, const double *want, int64_t n, double tol) {
    double maxabs = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - want[i]) / fmax(fabs(want[i]), 1e-3 * maxabs));
    print_message("  %-40s max rel err %.3g\n", what, worst);
    assert_true(worst <= tol);
}

static void test_attention_chunks_reference(void **state) {
    /* Nk 1500: ~43-row query chunks, so 400 queries span several chunks per
     * head; 1 and 3 threads exercise the per-thread dK/dV sums */
    int64_t B = 2, Nq = 400, Nk = 1500, H = 2, D = 3, Dv = 2;
    for (int nthr = 1; nthr <= 3; nthr += 2) {
        segc_ctx *ctx = segc_ctx_new(5);
        segc_set_num_threads(ctx, nthr);
        segc_tensor *q = t_randn(ctx, 3, SHAPE(B, Nq, H * D), 1, true);
        segc_tensor *k = t_randn(ctx, 3, SHAPE(B, Nk, H * D), 1, true);
        segc_tensor *v = t_randn(ctx, 3, SHAPE(B, Nk, H * Dv), 1, true);
        segc_tensor *go = t_randn(ctx, 3, SHAPE(B, Nq, H * Dv), 1, false);
        float scale = 0.7f;
        segc_tensor *out = segc_attention(ctx, q, k, v, (int)H, scale);
        assert_non_null(out);
        assert_true(segc_backward_from(ctx, out, segc_f32(go)));
        int64_t no = B * Nq * H * Dv, nq = B * Nq * H * D, nk = B * Nk * H * D, nv = B * Nk * H * Dv;
        double *ro = calloc(no, 8), *rq = calloc(nq, 8), *rk = calloc(nk, 8), *rv = calloc(nv, 8);
        attention_ref(segc_f32(q), segc_f32(k), segc_f32(v), segc_f32(go), B, Nq, Nk, H, D, Dv, scale, ro, rq, rk, rv);
        /* PyTorch's f32 attention misses float64 by up to 4.6e-4 on a shape like this */
        print_message("  %d thread(s)\n", nthr);
        check_close_d("chunked attention out", segc_f32(out), ro, no, 5e-4);
        check_close_d("chunked attention grad q", q->grad, rq, nq, 5e-4);
        check_close_d("chunked attention grad k", k->grad, rk, nk, 5e-4);
        check_close_d("chunked attention grad v", v->grad, rv, nv, 5e-4);
        free(ro), free(rq), free(rk), free(rv);
        segc_set_num_threads(ctx, 2);
        segc_ctx_free(ctx);
    }
}

/* ---- gelu_linear: segc_linear(segc_gelu(h)) without keeping gelu(h) ---- */

static segc_tensor *gc_gelu_linear(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    return segc_gelu_linear(ctx, ins[0], ins[1], n > 2 ? ins[2] : NULL);
}

/* output and all three gradients of the fused op equal the unfused pair bit for bit (same
 * kernels, same GEMMs), in f32 and bf16, with a gradient already present on h (accumulate) */
static void test_gelu_linear(void **state) {
    segc_ctx *ctx = segc_ctx_new(4);
    segc_tensor *ins[3] = {t_randn(ctx, 3, SHAPE(2, 3, 7), 1, true), t_randn(ctx, 2, SHAPE(5, 7), 0.4f, true),
                           t_randn(ctx, 1, SHAPE(5), 1, true)};
    assert_true(gradcheck(ctx, "gelu_linear", gc_gelu_linear, ins, 3, NULL, gc_default()));
    segc_ctx_free(ctx);
    for (int d = 0; d < 2; d++) {
        segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
        float *res[2][4];
        int64_t rows = 2 * 300, in = 40, out = 24, n[4] = {rows * out, rows * in, out * in, out};
        for (int fused = 0; fused < 2; fused++) {
            segc_ctx *c = segc_ctx_new(1);
            segc_set_num_threads(c, 2);
            segc_rng_init(&c->rng, 17);
            segc_tensor *h = t_randn(c, 3, SHAPE(2, 300, 40), 1, true), *w = t_randn(c, 2, SHAPE(24, 40), 0.2f, true);
            segc_tensor *bias = t_randn(c, 1, SHAPE(24), 1, true);
            segc_tensor *hs = segc_cast(c, h, dt), *ws = segc_cast(c, w, dt), *bs = segc_cast(c, bias, dt);
            segc_tensor *y = fused ? segc_gelu_linear(c, hs, ws, bs) : segc_linear(c, segc_gelu(c, hs), ws, bs);
            /* h also feeds a second path, so its gradient is accumulated into, not written */
            segc_tensor *o = segc_cast(c, segc_add(c, segc_sum(c, segc_cast(c, y, SEGC_F32), NULL, 0, false),
                                                   segc_sum(c, h, NULL, 0, false)), SEGC_F32);
            assert_non_null(o);
            assert_true(segc_backward(c, o));
            const float *src[4] = {segc_f32(segc_cast(c, y, SEGC_F32)), h->grad, w->grad, bias->grad};
            for (int i = 0; i < 4; i++) res[fused][i] = malloc(n[i] * 4), memcpy(res[fused][i], src[i], n[i] * 4);
            segc_ctx_free(c);
        }
        for (int i = 0; i < 4; i++) {
            assert_memory_equal(res[0][i], res[1][i], n[i] * 4);
            free(res[0][i]), free(res[1][i]);
        }
    }
}

/* ---- determinism and steady state ---- */

static void run_all_ops(segc_ctx *ctx, segc_dtype dt, float **outs) {
    segc_ctx_step_begin(ctx);
    segc_rng_init(&ctx->rng, 99);
    segc_tensor *x = t_randn(ctx, 3, SHAPE(2, 600, 24), 1, true), *w = t_randn(ctx, 2, SHAPE(24, 24), 0.2f, true);
    segc_tensor *bias = t_randn(ctx, 1, SHAPE(24), 1, true);
    segc_tensor *xs = segc_cast(ctx, x, dt), *ws = segc_cast(ctx, w, dt), *bs = segc_cast(ctx, bias, dt);
    segc_tensor *y = segc_linear(ctx, xs, ws, bs);
    segc_tensor *z = t_randn(ctx, 3, SHAPE(2, 50, 24), 1, true);
    segc_tensor *kv = segc_linear(ctx, segc_cast(ctx, z, dt), ws, NULL);
    segc_tensor *a = segc_attention(ctx, y, kv, kv, 3, 0.35f);
    segc_tensor *o = segc_cast(ctx, segc_matmul(ctx, a, ws, false, true), SEGC_F32);
    assert_non_null(o);
    float *g = segc_arena_alloc(&ctx->arena, segc_numel(o) * sizeof *g);
    for (int64_t i = 0; i < segc_numel(o); i++) g[i] = (float)((i * 7919) % 13) - 6.0f;
    assert_true(segc_backward_from(ctx, o, g));
    outs[0] = segc_f32(o), outs[1] = x->grad, outs[2] = w->grad, outs[3] = bias->grad, outs[4] = z->grad;
}

static void test_determinism_and_arena(void **state) {
    for (int d = 0; d < 2; d++) {
        segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
        segc_ctx *ctx = segc_ctx_new(1);
        segc_set_num_threads(ctx, 2);
        int64_t n[5] = {2 * 600 * 24, 2 * 600 * 24, 24 * 24, 24, 2 * 50 * 24};
        float *first[5], *outs[5], *copy[5];
        run_all_ops(ctx, dt, first);
        for (int i = 0; i < 5; i++) copy[i] = malloc(n[i] * 4), memcpy(copy[i], first[i], n[i] * 4);
        run_all_ops(ctx, dt, outs);
        size_t chunks = ctx->arena.n_chunks, hw = ctx->arena.high_water;
        run_all_ops(ctx, dt, outs);
        assert_int_equal(ctx->arena.n_chunks, chunks);   /* steady state: no arena growth */
        assert_int_equal(ctx->arena.high_water, hw);
        for (int i = 0; i < 5; i++) {
            assert_memory_equal(copy[i], outs[i], n[i] * 4);
            free(copy[i]);
        }
        segc_ctx_free(ctx);
    }
}

/* ---- segc_gemm_run corner paths ---- */

static void test_gemm_paths(void **state) {
    segc_ctx *ctx = segc_ctx_new(2);
    /* K = 0: C = bias (bf16 C), then accumulate into f32 C */
    uint16_t biasb[3] = {segc_f32_to_bf16(1.5f), segc_f32_to_bf16(-2.0f), segc_f32_to_bf16(0.25f)};
    uint16_t cb[6];
    float dummy = 0;
    segc_gemm g = {.batch = 1, .M = 2, .N = 3, .K = 0, .a = &dummy, .a_dtype = SEGC_F32, .a_rs = 1, .a_cs = 1,
                   .b = &dummy, .b_dtype = SEGC_F32, .b_rs = 3, .b_cs = 1, .c = cb, .c_dtype = SEGC_BF16, .c_rs = 3,
                   .bias = biasb, .bias_dtype = SEGC_BF16, .alpha = 1};
    assert_true(segc_gemm_run(ctx, "test", &g));
    for (int i = 0; i < 6; i++) assert_int_equal(cb[i], biasb[i % 3]);
    /* alpha, accumulate, broadcast A over a batch, bf16 operands into bf16 C */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[2 * 3 * 2], c[2 * 2 * 2];
    for (int i = 0; i < 12; i++) b[i] = (float)(i % 5) - 2.0f;
    for (int i = 0; i < 8; i++) c[i] = 1.0f;
    segc_gemm h = {.batch = 2, .M = 2, .N = 2, .K = 3, .a = a, .a_dtype = SEGC_F32, .a_bs = 0, .a_rs = 3, .a_cs = 1,
                   .b = b, .b_dtype = SEGC_F32, .b_bs = 6, .b_rs = 2, .b_cs = 1, .c = c, .c_dtype = SEGC_F32,
                   .c_bs = 4, .c_rs = 2, .alpha = 0.5f, .accumulate = true};
    assert_true(segc_gemm_run(ctx, "test", &h));
    for (int i = 0; i < 2; i++)
        for (int m = 0; m < 2; m++)
            for (int n = 0; n < 2; n++) {
                float want = 1.0f;
                for (int kk = 0; kk < 3; kk++) want += 0.5f * a[m * 3 + kk] * b[i * 6 + kk * 2 + n];
                assert_float_equal(c[i * 4 + m * 2 + n], want, 1e-5);
            }
    uint16_t ab[6], bb[12], cbb[8];
    segc_f32_to_bf16_n(a, ab, 6);
    segc_f32_to_bf16_n(b, bb, 12);
    h.a = ab, h.a_dtype = SEGC_BF16, h.b = bb, h.b_dtype = SEGC_BF16, h.c = cbb, h.c_dtype = SEGC_BF16;
    h.accumulate = false;
    assert_true(segc_gemm_run(ctx, "test", &h));
    for (int i = 0; i < 8; i++) assert_float_equal(segc_bf16_to_f32(cbb[i]), c[i] - 1.0f, 1e-2 * fabsf(c[i] - 1.0f) + 1e-6);
    /* bad arguments name the op */
    h.c_dtype = SEGC_BF16, h.accumulate = true;
    assert_false(segc_gemm_run(ctx, "myop", &h));
    assert_non_null(strstr(segc_last_error(ctx), "myop:"));
    segc_clear_error(ctx);
    h.c_dtype = SEGC_F32, h.accumulate = false, h.a_rs = 3, h.a_cs = 2;
    h.a = a, h.a_dtype = SEGC_F32, h.c = c;
    assert_false(segc_gemm_run(ctx, "myop", &h));
    assert_non_null(strstr(segc_last_error(ctx), "unit row or column stride"));
    segc_clear_error(ctx);

    /* plans: each of 3 threads computes its own row block of C = A B^T */
    enum { R = 3 * 5, K = 7, N = 4 };
    float pa[R * K], pb[N * K], pc[R * N];
    for (int i = 0; i < R * K; i++) pa[i] = (float)((i * 37) % 11) - 5.0f;
    for (int i = 0; i < N * K; i++) pb[i] = (float)((i * 13) % 7) - 3.0f;
    segc_gemm pg = {.batch = 1, .M = 5, .N = N, .K = K, .a_dtype = SEGC_F32, .a_rs = K, .a_cs = 1,
                    .b_dtype = SEGC_F32, .b_rs = 1, .b_cs = K, .c_dtype = SEGC_F32, .c_rs = N, .alpha = 2.0f};
    segc_gemm_plan *plan = segc_gemm_plan_new(ctx, "test", &pg, 3);
    assert_non_null(plan);
    bool ok = true;
#pragma omp parallel num_threads(3) reduction(&& : ok)
    ok = segc_gemm_plan_run(plan, omp_get_thread_num(), pa + omp_get_thread_num() * 5 * K, pb,
                            pc + omp_get_thread_num() * 5 * N);
    assert_true(ok);
    for (int r = 0; r < R; r++)
        for (int n = 0; n < N; n++) {
            float want = 0;
            for (int kk = 0; kk < K; kk++) want += 2.0f * pa[r * K + kk] * pb[n * K + kk];
            assert_float_equal(pc[r * N + n], want, 1e-4);
        }
    assert_false(segc_gemm_plan_run(plan, 3, pa, pb, pc));   /* no such thread */
    pg.batch = 2;
    assert_null(segc_gemm_plan_new(ctx, "myplan", &pg, 2));
    assert_non_null(strstr(segc_last_error(ctx), "myplan: gemm plan expected batch 1"));
    segc_clear_error(ctx);
    pg.batch = 1, pg.a_dtype = pg.b_dtype = SEGC_BF16;
    if (!segc_gemm_native_bf16()) {
        assert_null(segc_gemm_plan_new(ctx, "myplan", &pg, 2));
        assert_non_null(strstr(segc_last_error(ctx), "native bf16"));
    }
    segc_ctx_free(ctx);
}

/* A tall bf16 GEMM large enough for the reordered-B path (want_pack_b in matmul.c: M >= 1024,
 * K*N >= 2^18, row-major B, bf16 C) and a column-major B, which never takes it, against f32
 * sums of the same bf16 values; the result is bf16-rounded, so 2^-8 relative to the row scale. */
static void test_gemm_packed_b(void **state) {
    segc_ctx *ctx = segc_ctx_new(3);
    enum { MMAX = 2064, K = 256, N = 1024 + 16 };
    uint16_t *a = malloc(sizeof *a * MMAX * K), *b = malloc(sizeof *b * K * N), *c = malloc(sizeof *c * MMAX * N);
    uint16_t *bt = malloc(sizeof *bt * K * N);
    float *af = malloc(sizeof *af * MMAX * K), *bf = malloc(sizeof *bf * K * N);
    for (int i = 0; i < MMAX * K; i++) af[i] = segc_bf16_to_f32(segc_f32_to_bf16((float)((i * 37) % 17) / 8.0f - 1.0f));
    for (int i = 0; i < K * N; i++) bf[i] = segc_bf16_to_f32(segc_f32_to_bf16((float)((i * 11) % 13) / 16.0f - 0.4f));
    segc_f32_to_bf16_n(af, a, MMAX * K);
    segc_f32_to_bf16_n(bf, b, K * N);
    /* column-major: the same values read through strides (B^T stored row-major) */
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) bt[(size_t)n * K + k] = b[(size_t)k * N + n];
    /* two heights (oneDNN may block B differently for each: the reorders must not mix), each
     * twice (the second run reuses the cached primitives), and a column-major B */
    static const int Ms[] = {1040, 2064, 1040, 2064};
    for (int colmajor = 0; colmajor < 2; colmajor++)
        for (int rep = 0; rep < 4; rep++) {
            const int M = Ms[rep];
            segc_gemm g = {.batch = 1, .M = M, .N = N, .K = K, .a = a, .a_dtype = SEGC_BF16, .a_rs = K, .a_cs = 1,
                           .b = colmajor ? bt : b, .b_dtype = SEGC_BF16, .b_rs = colmajor ? 1 : N,
                           .b_cs = colmajor ? K : 1, .c = c, .c_dtype = SEGC_BF16, .c_rs = N, .alpha = 1};
            memset(c, 0, sizeof *c * MMAX * N);
            assert_true(segc_gemm_run(ctx, "test", &g));
            double worst = 0;
            for (int m = 0; m < M; m += 7)
                for (int n = 0; n < N; n += 5) {
                    double want = 0, scale = 0;
                    for (int k = 0; k < K; k++) {
                        want += (double)af[m * K + k] * bf[k * N + n];
                        scale += fabs((double)af[m * K + k] * bf[k * N + n]);
                    }
                    double e = fabs(segc_bf16_to_f32(c[(size_t)m * N + n]) - want) / (scale + 1e-6);
                    if (e > worst) worst = e;
                }
            assert_true(worst < 1.0 / 256);
        }
    free(a), free(b), free(bt), free(c), free(af), free(bf);
    segc_ctx_free(ctx);
}

/* ---- errors ---- */

static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(4);
    segc_tensor *a = t_randn(ctx, 2, SHAPE(3, 5), 1, false), *b = t_randn(ctx, 2, SHAPE(4, 7), 1, false);
    EXPECT_ERR(ctx, segc_matmul(ctx, a, b, false, false), "matmul: inner dims");
    segc_tensor *a3 = t_randn(ctx, 3, SHAPE(2, 3, 5), 1, false), *b3 = t_randn(ctx, 3, SHAPE(3, 5, 2), 1, false);
    EXPECT_ERR(ctx, segc_matmul(ctx, a3, b3, false, false), "matmul: batch dims");
    segc_tensor *ai = segc_tensor_new(ctx, SEGC_I32, 2, SHAPE(3, 5));
    EXPECT_ERR(ctx, segc_matmul(ctx, ai, t_randn(ctx, 2, SHAPE(5, 2), 1, false), false, false), "matmul:");
    segc_tensor *bb = segc_cast(ctx, t_randn(ctx, 2, SHAPE(5, 2), 1, false), SEGC_BF16);
    EXPECT_ERR(ctx, segc_matmul(ctx, a, bb, false, false), "matmul: a and b expected the same dtype");
    EXPECT_ERR(ctx, segc_matmul(ctx, t_randn(ctx, 1, SHAPE(5), 1, false), a, false, false), "matmul: expected a");
    assert_null(segc_matmul(ctx, NULL, a, false, false));
    assert_false(ctx->has_err);

    segc_tensor *x = t_randn(ctx, 3, SHAPE(2, 3, 5), 1, false), *w = t_randn(ctx, 2, SHAPE(4, 6), 1, false);
    EXPECT_ERR(ctx, segc_linear(ctx, x, w, NULL), "linear: expected x [..., in]");
    w = t_randn(ctx, 2, SHAPE(4, 5), 1, false);
    EXPECT_ERR(ctx, segc_linear(ctx, x, w, t_randn(ctx, 1, SHAPE(3), 1, false)), "linear: expected");
    EXPECT_ERR(ctx, segc_linear(ctx, segc_tensor_new(ctx, SEGC_I64, 2, SHAPE(2, 5)), w, NULL), "linear:");

    segc_tensor *q = t_randn(ctx, 3, SHAPE(2, 6, 6), 1, false), *k = t_randn(ctx, 3, SHAPE(2, 4, 6), 1, false);
    EXPECT_ERR(ctx, segc_attention(ctx, q, k, k, 4, 1.0f), "attention: heads 4 expected to divide");
    EXPECT_ERR(ctx, segc_attention(ctx, q, t_randn(ctx, 3, SHAPE(3, 4, 6), 1, false), k, 2, 1.0f),
                 "attention: expected q [B, Nq, H*D]");
    EXPECT_ERR(ctx, segc_attention(ctx, q, t_randn(ctx, 3, SHAPE(2, 4, 5), 1, false), k, 1, 1.0f),
                 "attention: expected");
    EXPECT_ERR(ctx, segc_attention(ctx, q, k, t_randn(ctx, 3, SHAPE(2, 3, 6), 1, false), 1, 1.0f),
                 "attention: expected");
    segc_tensor *qi = segc_tensor_new(ctx, SEGC_I32, 3, SHAPE(2, 6, 6));
    EXPECT_ERR(ctx, segc_attention(ctx, qi, k, k, 1, 1.0f), "attention:");
    EXPECT_ERR(ctx, segc_attention(ctx, q, k, k, 0, 1.0f), "attention: heads 0");
    EXPECT_ERR(ctx, segc_attention(ctx, q, k, k, 1, NAN), "attention: heads 1");
    segc_tensor *q0 = t_randn(ctx, 3, SHAPE(2, 6, 0), 1, false), *k0 = t_randn(ctx, 3, SHAPE(2, 4, 0), 1, false);
    EXPECT_ERR(ctx, segc_attention(ctx, q0, k0, k, 1, 1.0f), "at least one per head");
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_fixtures),    cmocka_unit_test(test_linear_fixtures),
        cmocka_unit_test(test_attention_fixtures), cmocka_unit_test(test_matmul_gradcheck),
        cmocka_unit_test(test_linear_gradcheck),   cmocka_unit_test(test_attention_gradcheck),
        cmocka_unit_test(test_attention_chunks_reference), cmocka_unit_test(test_determinism_and_arena),
        cmocka_unit_test(test_gemm_paths),         cmocka_unit_test(test_gemm_packed_b),
        cmocka_unit_test(test_errors),             cmocka_unit_test(test_gelu_linear),
    };
    return cmocka_run_group_tests_name("matmul", tests, NULL, NULL);
}
