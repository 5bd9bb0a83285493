/* Cross entropy over logits [N, C, spatial...] in place (no NCHW -> NHWC copy).
 * Pixels are processed in blocks of CE_BW: for each block the C class rows
 * (CE_BW contiguous values each, stride S apart) are swept twice while they
 * sit in L2 -- max, then sum of exp -- with a polynomial exp that vectorises
 * over the pixels. Only the per-pixel log-sum-exp is saved; backward
 * recomputes softmax from it and writes the logits' gradient in one sweep.
 * Reductions are summed per fixed chunk of blocks and combined in order, so
 * nothing depends on the thread count. */
/* No code here reads floating-point exception flags; without this GCC will
 * not if-convert (so not vectorise) the loops around the exp/log polynomials. */
#pragma GCC optimize("no-trapping-math")
#include <math.h>

#include "normloss_util.h"
#include "segc/ops.h"
#include "segc/profile.h"

#define CE_BW NL_BW     /* pixels per block */
#define CE_PAR_MIN 16384

segc_ce_opts segc_ce_opts_default(void) {
    return (segc_ce_opts){.ignore_index = -100, .reduction = SEGC_LOSS_MEAN, .weight = NULL, .label_smoothing = 0.f};
}

typedef struct {
    int64_t N, C, S;
    int ignore;
    float eps;                /* label smoothing */
    segc_loss_reduction red;
    const float *w;           /* class weights (f32) or NULL */
    float wsum;               /* sum of the class weights (C without) */
    double den;               /* denominator of the loss; 0: loss and gradient are 0 */
    float *mx, *lz;           /* [N*S] per pixel: max logit, log sum exp(z - max) */
} ce_saved;

/* the block's C x len logits as f32 rows: the tensor itself (stride S) for
 * f32, converted into scratch (stride CE_BW) for bf16 */
static const float *ce_block_rows(const segc_tensor *x, int64_t base, int64_t C, int64_t S, int64_t len,
                                  float *scratch, int64_t *stride) {
    if (x->dtype == SEGC_F32) {
        *stride = S;
        return segc_f32(x) + base;
    }
    for (int64_t c = 0; c < C; c++) segc_ew_load_bf16(segc_bf16p(x) + base + c * S, scratch + c * CE_BW, len);
    *stride = CE_BW;
    return scratch;
}

static void ce_backward(segc_ctx *ctx, segc_node *nd) {
    const ce_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *target = nd->in[1];
    if (!x->requires_grad) return;
    const int64_t N = sv->N, C = sv->C, S = sv->S, bps = (S + CE_BW - 1) / CE_BW, nblocks = N * bps;
    const float *gout = nd->out->grad;
    int ow = 0;
    float *gx = nl_grad_buf(ctx, x, &ow);
    if (sv->den == 0) {   /* loss defined as 0: zero gradient */
        if (ow) memset(gx, 0, (size_t)segc_numel(x) * sizeof(float));
        return;
    }
    const bool none = sv->red == SEGC_LOSS_NONE;
    const float a_scale = (float)((1.0 - sv->eps) / sv->den), m_scale = (float)(sv->eps / ((double)C * sv->den));
    float *scratch = x->dtype == SEGC_F32 ? NULL
                                          : segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * C * CE_BW) * sizeof(float));
#pragma omp parallel for schedule(static) if (N * C * S >= CE_PAR_MIN)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t n = blk / bps, s0 = (blk % bps) * CE_BW, len = S - s0 < CE_BW ? S - s0 : CE_BW;
        const int64_t base = n * C * S + s0;
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * C * CE_BW : NULL;
        int32_t t[CE_BW];
        float a[CE_BW], k[CE_BW], m[CE_BW];
        nl_load_labels(target, n * S + s0, len, t);
        const float *mx = sv->mx + n * S + s0, *lz = sv->lz + n * S + s0;
        for (int64_t p = 0; p < len; p++) {
            const float g = none ? gout[n * S + s0 + p] : gout[0];
            if (t[p] == sv->ignore) {
                a[p] = k[p] = m[p] = 0.f;
                continue;
            }
            a[p] = g * a_scale * (sv->w ? sv->w[t[p]] : 1.f);
            m[p] = g * m_scale;
            k[p] = a[p] + m[p] * sv->wsum;
        }
        int64_t zs;
        const float *z = ce_block_rows(x, base, C, S, len, sc, &zs);
        float *gp = gx + base, q[CE_BW], pt[CE_BW];
        for (int64_t p = 0; p < len; p++) q[p] = pt[p] = 0.f;
        /* every class but the target: k*p_c - m*w_c. The target's a*(p_t - 1)
         * is formed below as -a * sum_{c != t} p_c, which keeps its relative
         * accuracy when p_t is close to 1. */
        for (int64_t c = 0; c < C; c++) {
            const float wc = sv->w ? sv->w[c] : 1.f, *zc = z + c * zs;
            const int32_t ci = (int32_t)c;
            float *gc = gp + c * S;
            if (ow) {
#pragma omp simd
                for (int64_t p = 0; p < len; p++) {
                    const float e = nl_expf((zc[p] - mx[p]) - lz[p]), v = fmaf(k[p], e, -m[p] * wc);
                    const bool is_t = t[p] == ci;
                    q[p] += is_t ? 0.f : e;
                    pt[p] = is_t ? e : pt[p];
                    gc[p] = is_t ? 0.f : v;
                }
            } else {
#pragma omp simd
                for (int64_t p = 0; p < len; p++) {
                    const float e = nl_expf((zc[p] - mx[p]) - lz[p]), v = fmaf(k[p], e, -m[p] * wc);
                    const bool is_t = t[p] == ci;
                    q[p] += is_t ? 0.f : e;
                    pt[p] = is_t ? e : pt[p];
                    gc[p] += is_t ? 0.f : v;
                }
            }
        }
        for (int64_t p = 0; p < len; p++)
            if (t[p] != sv->ignore)
                gp[(int64_t)t[p] * S + p] += m[p] * (sv->wsum * pt[p] - (sv->w ? sv->w[t[p]] : 1.f)) - a[p] * q[p];
    }
}

segc_tensor *segc_cross_entropy(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, const segc_ce_opts *o) {
    static const char *op = "cross_entropy";
    SEGC_PROF_OP(ctx, op);
    if (!logits || !target) return NULL;
    const segc_ce_opts opts = o ? *o : segc_ce_opts_default();
    int64_t N, C, S;
    if (!nl_check_class_logits(ctx, op, logits, target, &N, &C, &S)) return NULL;
    if (!nl_check_vec(ctx, op, "weight", opts.weight, C)) return NULL;
    if (!(opts.label_smoothing >= 0.f && opts.label_smoothing <= 1.f)) {
        segc_set_error(ctx, "%s: label_smoothing must be in [0, 1], found %g", op, (double)opts.label_smoothing);
        return NULL;
    }
    if ((unsigned)opts.reduction > SEGC_LOSS_NONE) {
        segc_set_error(ctx, "%s: unknown reduction %d", op, (int)opts.reduction);
        return NULL;
    }

    ce_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (ce_saved){.N = N, .C = C, .S = S, .ignore = opts.ignore_index, .eps = opts.label_smoothing,
                     .red = opts.reduction, .w = nl_param_f32(ctx, opts.weight), .wsum = (float)C};
    if (sv->w) {
        double ws = 0;
        for (int64_t c = 0; c < C; c++) ws += sv->w[c];
        sv->wsum = (float)ws;
    }
    sv->mx = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * S) * sizeof(float));
    sv->lz = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * S) * sizeof(float));
    const float *w1 = sv->w;   /* class weights for the smoothing sum: ones without weights */
    if (!w1) {
        float *ones = segc_arena_alloc(&ctx->arena, (size_t)C * sizeof(float));
        for (int64_t c = 0; c < C; c++) ones[c] = 1.f;
        w1 = ones;
    }
    const bool none = opts.reduction == SEGC_LOSS_NONE, smoothing = opts.label_smoothing > 0.f;
    segc_tensor *out = none ? segc_tensor_new(ctx, SEGC_F32, target->ndim, target->shape)
                            : segc_tensor_new(ctx, SEGC_F32, 0, NULL);
    float *lnone = none ? segc_f32(out) : NULL;

    /* per chunk: sum w_t*nll, sum w_t, sum smoothing term, first bad label */
    const int64_t bps = (S + CE_BW - 1) / CE_BW, nblocks = N * bps, K = nl_chunks(nblocks, 4, 256);
    double *part = segc_arena_calloc(&ctx->arena, (size_t)K * 3 * sizeof(double));
    int64_t *bad = segc_arena_alloc(&ctx->arena, (size_t)K * sizeof(int64_t));
    float *scratch = logits->dtype == SEGC_F32 ? NULL
                                               : segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * C * CE_BW) * sizeof(float));
    const float keep = 1.f - opts.label_smoothing, smooth_c = opts.label_smoothing / (float)C;

#pragma omp parallel for schedule(static) if (N * C * S >= CE_PAR_MIN)
    for (int64_t kc = 0; kc < K; kc++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * C * CE_BW : NULL;
        double snll = 0, swt = 0, ssm = 0;
        bad[kc] = -1;
        for (int64_t blk = nl_chunk_begin(nblocks, K, kc); blk < nl_chunk_begin(nblocks, K, kc + 1); blk++) {
            const int64_t n = blk / bps, s0 = (blk % bps) * CE_BW, len = S - s0 < CE_BW ? S - s0 : CE_BW;
            int64_t zs;
            const float *z = ce_block_rows(logits, n * C * S + s0, C, S, len, sc, &zs);
            float *mx = sv->mx + n * S + s0, *lz = sv->lz + n * S + s0, wz[CE_BW];
            int32_t t[CE_BW];
            nl_block_lse(z, zs, C, len, mx, lz, w1, smoothing ? wz : NULL);
            nl_load_labels(target, n * S + s0, len, t);
            for (int64_t p = 0; p < len; p++) {
                float l = 0.f;
                if (t[p] != sv->ignore) {
                    if (t[p] < 0 || t[p] >= C) {
                        if (bad[kc] < 0) bad[kc] = n * S + s0 + p;
                        continue;
                    }
                    const float wt = sv->w ? sv->w[t[p]] : 1.f;
                    const float nll = (mx[p] - z[t[p] * zs + p]) + lz[p];
                    /* sum_c w_c * (lse - z_c) = wsum * (lse - max) - sum_c w_c * (z_c - max) */
                    const float sm = smoothing ? sv->wsum * lz[p] - wz[p] : 0.f;
                    snll += (double)wt * nll;
                    swt += wt;
                    ssm += sm;
                    l = keep * wt * nll + smooth_c * sm;
                }
                if (lnone) lnone[n * S + s0 + p] = l;
            }
        }
        part[kc * 3] = snll;
        part[kc * 3 + 1] = swt;
        part[kc * 3 + 2] = ssm;
    }
    double snll = 0, swt = 0, ssm = 0;
    for (int64_t kc = 0; kc < K; kc++) {
        if (bad[kc] >= 0) {
            nl_bad_label(ctx, op, target, bad[kc], C, opts.ignore_index);
            return NULL;
        }
        snll += part[kc * 3];
        swt += part[kc * 3 + 1];
        ssm += part[kc * 3 + 2];
    }
    if (opts.reduction == SEGC_LOSS_MEAN) {
        sv->den = swt;   /* sum of the target weights: the count of valid targets without weights */
    } else {
        sv->den = 1;
    }
    if (!none) segc_f32(out)[0] = sv->den == 0 ? 0.f : (float)((keep * snll + smooth_c * ssm) / sv->den);
    segc_tensor *ins[2] = {logits, target};
    if (segc_needs_grad(ctx, ins, 1)) segc_record(ctx, op, ce_backward, out, ins, 2, sv);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}
