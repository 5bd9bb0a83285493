/* GroupNorm and InstanceNorm (= GroupNorm with one channel per group) over
 * x[N, C, spatial...]. Each (sample, group) is one contiguous row of
 * (C/groups)*S values; threads split the rows. Statistics in one pass (sums
 * shifted by the row's first value, accumulated in double);
 * gamma/beta gradients are kept per (sample, channel) and summed over the
 * samples in order afterwards, so nothing depends on the thread count. */
#include <math.h>

#include "normloss_util.h"
#include "segc/cpu.h"
#include "segc/ops.h"
#include "segc/profile.h"

/* Compiled twice: as itself for the baseline, and by norm_group_avx512.c with AVX-512 enabled
 * (the compiler's 512-bit vectorisation of these loops halves UNet2D's InstanceNorm time on an
 * AVX-512 CPU). gn_forward picks the variant from segc_cpu_isa(); the backward it records is
 * its own variant's. Each variant is deterministic; the two round their sums in different
 * vector orders, so they agree to float rounding, not bitwise. */
#ifdef SEGC_ISA_VARIANT_AVX512
#define GN_FORWARD_LINKAGE
#define gn_forward segc_gn_forward_avx512
#else
#define GN_FORWARD_LINKAGE static
#endif
segc_tensor *segc_gn_forward_avx512(segc_ctx *ctx, const char *op, segc_tensor *x, int64_t G, segc_tensor *gamma,
                                    segc_tensor *beta, float eps, bool act, float slope);

#define GN_BLOCK 2048
#define GN_PAR_MIN 32768

typedef struct {
    int64_t N, C, S, G;
    float *mean, *mean_lo, *rstd;   /* per (sample, group) row; mean + mean_lo: ~48 bits */
    bool act;                       /* a LeakyReLU(slope) follows (fused: its input is never stored) */
    float slope;
} gn_saved;

/* dy through the fused LeakyReLU: the output's sign is the normalised value's
 * (slope >= 0), so no pre-activation copy is kept */
static float *lrelu_masked_grad(segc_ctx *ctx, const segc_tensor *y, const float *dy, float slope) {
    const int64_t n = segc_numel(y);
    float *m = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(n) * sizeof(float));
    if (y->dtype == SEGC_BF16) {
        const uint16_t *yb = segc_bf16p(y);
#pragma omp parallel for simd schedule(static) if (n >= GN_PAR_MIN)
        for (int64_t i = 0; i < n; i++) m[i] = (yb[i] & 0x8000) || !(yb[i] & 0x7fff) ? dy[i] * slope : dy[i];
    } else {
        const float *yf = segc_f32(y);
#pragma omp parallel for simd schedule(static) if (n >= GN_PAR_MIN)
        for (int64_t i = 0; i < n; i++) m[i] = yf[i] > 0.f ? dy[i] : dy[i] * slope;
    }
    return m;
}

static void gn_backward(segc_ctx *ctx, segc_node *nd) {
    const gn_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2];
    const int64_t N = sv->N, C = sv->C, S = sv->S, G = sv->G, Cg = C / G;
    int ow = 0;
    float *dx = x->requires_grad ? nl_grad_buf(ctx, x, &ow) : NULL;
    bool need_g = gamma && gamma->requires_grad, need_b = beta && beta->requires_grad;
    /* gradient buffers first (a bf16 gamma's is made in the arena here), then this call's scratch */
    float *dg = need_g ? segc_grad(ctx, gamma) : NULL, *db = need_b ? segc_grad(ctx, beta) : NULL;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    const float *dy = sv->act ? lrelu_masked_grad(ctx, nd->out, nd->out->grad, sv->slope) : nd->out->grad;
    const float *g = nl_param_f32(ctx, gamma);
    /* per (sample, channel): sum dy*(x - mean) and sum dy */
    double *sdyx = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * C) * sizeof(double));
    double *sdy = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * C) * sizeof(double));
    float *scratch = x->dtype == SEGC_F32 ? NULL
                                          : segc_arena_alloc(&ctx->arena, (size_t)omp_get_max_threads() * GN_BLOCK * sizeof(float));
    const double L = (double)(Cg * S);
#pragma omp parallel for schedule(static) if (N * C * S >= GN_PAR_MIN)
    for (int64_t row = 0; row < N * G; row++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * GN_BLOCK : NULL;
        const int64_t n = row / G, c0 = (row % G) * Cg;
        const float m = sv->mean[row], ml = sv->mean_lo[row], rs = sv->rstd[row];
        double A = 0, B = 0;   /* sum over the group of g*dy and g*dy*(x - mean) */
        for (int64_t c = c0; c < c0 + Cg; c++) {
            double a = 0, b = 0;
            for (int64_t s0 = 0; s0 < S; s0 += GN_BLOCK) {
                int64_t len = S - s0 < GN_BLOCK ? S - s0 : GN_BLOCK, off = (n * C + c) * S + s0;
                const float *xp = nl_load(x, off, len, sc), *dyp = dy + off;
                float pa = 0.f, pb = 0.f;   /* per block in f32, totals in double */
#pragma omp simd reduction(+ : pa, pb)
                for (int64_t i = 0; i < len; i++) {
                    pa += dyp[i];
                    pb += dyp[i] * ((xp[i] - m) - ml);
                }
                a += pa;
                b += pb;
            }
            sdy[n * C + c] = a;
            sdyx[n * C + c] = b;
            const double gc = g ? g[c] : 1.0;
            A += gc * a;
            B += gc * b;
        }
        if (!dx) continue;
        const float k1 = (float)(-(double)rs * rs * rs * B / L), k0 = (float)(-(double)rs * A / L);
        for (int64_t c = c0; c < c0 + Cg; c++) {
            const float kd = (g ? g[c] : 1.f) * rs;
            nl_apply_dx(x, dy, dx, (n * C + c) * S, S, GN_BLOCK, sc, m, ml, kd, k1, k0, ow);
        }
    }
    if (need_g || need_b) {
        for (int64_t c = 0; c < C; c++) {
            double a = 0, b = 0;
            for (int64_t n = 0; n < N; n++) {
                a += sdy[n * C + c];
                b += sdyx[n * C + c] * sv->rstd[n * G + c / Cg];
            }
            if (dg) dg[c] += (float)b;
            if (db) db[c] += (float)a;
        }
    }
    segc_arena_rewind(&ctx->arena, mark);
}

GN_FORWARD_LINKAGE segc_tensor *gn_forward(segc_ctx *ctx, const char *op, segc_tensor *x, int64_t G,
                                           segc_tensor *gamma, segc_tensor *beta, float eps, bool act, float slope) {
#ifndef SEGC_ISA_VARIANT_AVX512
    if (segc_cpu_isa() >= SEGC_ISA_AVX512) return segc_gn_forward_avx512(ctx, op, x, G, gamma, beta, eps, act, slope);
#endif
    SEGC_PROF_OP(ctx, op);
    char a[96];
    const int64_t N = x->shape[0], C = x->shape[1], S = segc_numel(x) / nl_max1(N * C);
    if (!nl_check_vec(ctx, op, "gamma", gamma, C) || !nl_check_vec(ctx, op, "beta", beta, C)) return NULL;
    if (!(eps >= 0.f)) { segc_set_error(ctx, "%s: eps must be >= 0, found %g", op, (double)eps); return NULL; }
    if (G < 1 || C % G != 0) {
        segc_set_error(ctx, "%s: groups %lld must be >= 1 and divide the channels %lld of x %s", op, (long long)G,
                       (long long)C, segc_shape_str(x, a, sizeof a));
        return NULL;
    }
    const int64_t Cg = C / G;
    segc_tensor *y = segc_tensor_like(ctx, x);
    gn_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (gn_saved){.N = N, .C = C, .S = S, .G = G, .act = act, .slope = slope};
    sv->mean = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * G) * sizeof(float));
    sv->mean_lo = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * G) * sizeof(float));
    sv->rstd = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * G) * sizeof(float));
    const float *g = nl_param_f32(ctx, gamma), *bt = nl_param_f32(ctx, beta);
    const bool bf = x->dtype == SEGC_BF16;
    float *scratch = bf ? segc_arena_alloc(&ctx->arena, (size_t)omp_get_max_threads() * 2 * GN_BLOCK * sizeof(float)) : NULL;
    const double L = (double)(Cg * S);

#pragma omp parallel for schedule(static) if (N * C * S >= GN_PAR_MIN)
    for (int64_t row = 0; row < N * G; row++) {
        if (L == 0) continue;
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 2 * GN_BLOCK : NULL;
        const int64_t base = row * Cg * S, n = row / G, c0 = (row % G) * Cg;
        const float shift = bf ? segc_bf16_to_f32(segc_bf16p(x)[base]) : segc_f32(x)[base];
        double s1 = 0, s2 = 0;
        nl_shifted_sums(x, base, Cg * S, shift, sc, GN_BLOCK, &s1, &s2);
        double dm = s1 / L, v = s2 / L - dm * dm;
        const double rsd = 1.0 / sqrt((v > 0 ? v : 0) + eps);
        const float m = (float)(shift + dm), ml = (float)(shift + dm - (double)m);
        sv->mean[row] = m;
        sv->mean_lo[row] = ml;
        sv->rstd[row] = (float)rsd;
        for (int64_t c = c0; c < c0 + Cg; c++) {
            const float ka = (float)(rsd * (g ? g[c] : 1.f)), kb = bt ? bt[c] : 0.f;
            for (int64_t s0 = 0; s0 < S; s0 += GN_BLOCK) {
                int64_t len = S - s0 < GN_BLOCK ? S - s0 : GN_BLOCK, off = (n * C + c) * S + s0;
                const float *xp = nl_load(x, off, len, sc);
                float *yp = nl_dst(y, off, sc ? sc + GN_BLOCK : NULL);
#pragma omp simd
                for (int64_t i = 0; i < len; i++) yp[i] = fmaf((xp[i] - m) - ml, ka, kb);
                if (act) {
#pragma omp simd
                    for (int64_t i = 0; i < len; i++) yp[i] = yp[i] > 0.f ? yp[i] : yp[i] * slope;
                }
                nl_store(y, off, len, yp);
            }
        }
    }
    segc_tensor *ins[3] = {x, gamma, beta};
    if (segc_needs_grad(ctx, ins, 3)) segc_record(ctx, op, gn_backward, y, ins, 3, sv);
    if (!segc_check_finite_out(ctx, op, y)) return NULL;
    return y;
}

#ifndef SEGC_ISA_VARIANT_AVX512   /* the public entry points: once, in the baseline object */
segc_tensor *segc_group_norm(segc_ctx *ctx, segc_tensor *x, int groups, segc_tensor *gamma, segc_tensor *beta,
                             float eps) {
    char a[96];
    if (!x) return NULL;
    if (!segc_check_float(ctx, "group_norm", "x", x)) return NULL;
    if (x->ndim < 2) {
        segc_set_error(ctx, "group_norm: x must be [N, C, ...] (at least 2-D), found %s", segc_shape_str(x, a, sizeof a));
        return NULL;
    }
    return gn_forward(ctx, "group_norm", x, groups, gamma, beta, eps, false, 0.f);
}

segc_tensor *segc_instance_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta, float eps) {
    char a[96];
    if (!x) return NULL;
    if (!segc_check_float(ctx, "instance_norm", "x", x)) return NULL;
    if (x->ndim < 3) {
        segc_set_error(ctx, "instance_norm: x must be [N, C, spatial...] (at least 3-D), found %s",
                       segc_shape_str(x, a, sizeof a));
        return NULL;
    }
    return gn_forward(ctx, "instance_norm", x, x->shape[1] > 0 ? x->shape[1] : 1, gamma, beta, eps, false, 0.f);
}

segc_tensor *segc_instance_norm_lrelu(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta, float eps,
                                      float negative_slope) {
    char a[96];
    if (!x) return NULL;
    if (!segc_check_float(ctx, "instance_norm_lrelu", "x", x)) return NULL;
    if (x->ndim < 3) {
        segc_set_error(ctx, "instance_norm_lrelu: x must be [N, C, spatial...] (at least 3-D), found %s",
                       segc_shape_str(x, a, sizeof a));
        return NULL;
    }
    if (!(negative_slope >= 0.f) || !isfinite(negative_slope)) {
        segc_set_error(ctx, "instance_norm_lrelu: negative_slope must be finite and >= 0, found %g", (double)negative_slope);
        return NULL;
    }
    return gn_forward(ctx, "instance_norm_lrelu", x, x->shape[1] > 0 ? x->shape[1] : 1, gamma, beta, eps, true,
                      negative_slope);
}
#endif
