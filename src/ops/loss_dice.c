/* Soft multi-class Dice on softmax probabilities (mmseg 0.x DiceLoss, with
 * ignored pixels left out of every sum; see ops_loss.h). Blocks of pixels as
 * in cross entropy: softmax per block in L2, per-(sample, class) sums of p^e,
 * p at the target and the target count; chunk partials combined in order. */
/* No code here reads floating-point exception flags; without this GCC will
 * not if-convert (so not vectorise) the loops around the exp/log polynomials. */
#pragma GCC optimize("no-trapping-math")
#include <math.h>

#include "normloss_util.h"
#include "segc/ops.h"
#include "segc/profile.h"

#define DICE_BW NL_BW
#define DICE_PAR_MIN 16384

segc_dice_opts segc_dice_opts_default(void) {
    return (segc_dice_opts){.ignore_index = 255, .smooth = 1.f, .exponent = 2, .class_weight = NULL,
                            .reduction = SEGC_LOSS_MEAN};
}

typedef struct {
    int64_t N, C, S;
    int ignore, e;
    segc_loss_reduction red;
    float *mx, *lz;         /* [N*S] per pixel: max logit, log sum exp(z - max) */
    float *alpha, *beta;    /* [N*C] d loss / d p = alpha * p^(e-1) - beta * [t == c], per unit upstream gradient */
} dice_saved;

static inline float ipowf(float x, int e) {
    float r = 1.f;
    for (int i = 0; i < e; i++) r *= x;
    return r;
}

/* the block's C rows as f32 (stride S for f32 logits, DICE_BW in scratch for bf16) */
static const float *dice_rows(const segc_tensor *x, int64_t base, int64_t C, int64_t S, int64_t len, float *scratch,
                              int64_t *stride) {
    if (x->dtype == SEGC_F32) {
        *stride = S;
        return segc_f32(x) + base;
    }
    for (int64_t c = 0; c < C; c++) segc_ew_load_bf16(segc_bf16p(x) + base + c * S, scratch + c * DICE_BW, len);
    *stride = DICE_BW;
    return scratch;
}

static void dice_backward(segc_ctx *ctx, segc_node *nd) {
    const dice_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *target = nd->in[1];
    if (!x->requires_grad) return;
    const int64_t N = sv->N, C = sv->C, S = sv->S, bps = (S + DICE_BW - 1) / DICE_BW;
    const int e = sv->e;
    const float *gout = nd->out->grad;
    int ow = 0;
    float *gx = nl_grad_buf(ctx, x, &ow);
    const int nt = omp_get_max_threads();
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)(nt * 2 * C * DICE_BW) * sizeof(float));
#pragma omp parallel for schedule(static) if (N * C * S >= DICE_PAR_MIN)
    for (int64_t blk = 0; blk < N * bps; blk++) {
        const int64_t n = blk / bps, s0 = (blk % bps) * DICE_BW, len = S - s0 < DICE_BW ? S - s0 : DICE_BW;
        const int64_t base = n * C * S + s0;
        float *sc = scratch + (int64_t)omp_get_thread_num() * 2 * C * DICE_BW, *prob = sc + C * DICE_BW;
        const float g = sv->red == SEGC_LOSS_NONE ? gout[n] : sv->red == SEGC_LOSS_MEAN ? gout[0] / (float)N : gout[0];
        const float *al = sv->alpha + n * C, *be = sv->beta + n * C, *mx = sv->mx + n * S + s0, *lz = sv->lz + n * S + s0;
        int32_t t[DICE_BW];
        float vm[DICE_BW];
        double s[DICE_BW];   /* double: the gradient is a difference of terms close to s */
        nl_load_labels(target, n * S + s0, len, t);
        for (int64_t p = 0; p < len; p++) {
            vm[p] = t[p] == sv->ignore ? 0.f : g;
            s[p] = 0.f;
        }
        int64_t zs;
        const float *z = dice_rows(x, base, C, S, len, sc, &zs);
        /* p, and s = sum_j p_j * dL/dp_j (the target term added below) */
        for (int64_t c = 0; c < C; c++) {
            const float a = al[c], *zc = z + c * zs;
            float *pc = prob + c * DICE_BW;
            if (e == 2) {
#pragma omp simd
                for (int64_t p = 0; p < len; p++) { pc[p] = nl_expf((zc[p] - mx[p]) - lz[p]); s[p] += (double)a * pc[p] * pc[p]; }
            } else {
                for (int64_t p = 0; p < len; p++) { pc[p] = nl_expf((zc[p] - mx[p]) - lz[p]); s[p] += (double)a * ipowf(pc[p], e); }
            }
        }
        for (int64_t p = 0; p < len; p++)
            if (t[p] != sv->ignore) s[p] -= (double)be[t[p]] * prob[t[p] * DICE_BW + p];
        float *gp = gx + base;
        for (int64_t c = 0; c < C; c++) {
            const float a = al[c], *pc = prob + c * DICE_BW;
            float *gc = gp + c * S;
            float d[DICE_BW];
            if (e == 2) {
#pragma omp simd
                for (int64_t p = 0; p < len; p++) d[p] = (float)(vm[p] * pc[p] * ((double)a * pc[p] - s[p]));
            } else {
                for (int64_t p = 0; p < len; p++) d[p] = (float)(vm[p] * pc[p] * ((double)a * ipowf(pc[p], e - 1) - s[p]));
            }
            if (ow) memcpy(gc, d, (size_t)len * sizeof(float));
            else {
#pragma omp simd
                for (int64_t p = 0; p < len; p++) gc[p] += d[p];
            }
        }
        for (int64_t p = 0; p < len; p++)
            if (t[p] != sv->ignore) gp[(int64_t)t[p] * S + p] -= vm[p] * prob[t[p] * DICE_BW + p] * be[t[p]];
    }
}

segc_tensor *segc_dice_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, const segc_dice_opts *o) {
    static const char *op = "dice_loss";
    SEGC_PROF_OP(ctx, op);
    if (!logits || !target) return NULL;
    const segc_dice_opts opts = o ? *o : segc_dice_opts_default();
    int64_t N, C, S;
    if (!nl_check_class_logits(ctx, op, logits, target, &N, &C, &S)) return NULL;
    if (!nl_check_vec(ctx, op, "class_weight", opts.class_weight, C)) return NULL;
    if (opts.exponent < 1 || opts.exponent > 8 || !(opts.smooth >= 0.f) || (unsigned)opts.reduction > SEGC_LOSS_NONE) {
        segc_set_error(ctx, "%s: need exponent in [1, 8], smooth >= 0 and a known reduction, found %d, %g, %d", op,
                       opts.exponent, (double)opts.smooth, (int)opts.reduction);
        return NULL;
    }
    const int e = opts.exponent;
    dice_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (dice_saved){.N = N, .C = C, .S = S, .ignore = opts.ignore_index, .e = e, .red = opts.reduction};
    sv->mx = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * S) * sizeof(float));
    sv->lz = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * S) * sizeof(float));
    sv->alpha = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * C) * sizeof(float));
    sv->beta = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * C) * sizeof(float));

    /* per (sample, chunk, class): sum p^e, sum p at the target, target count */
    const int64_t bps = (S + DICE_BW - 1) / DICE_BW, K = nl_chunks(bps, 4, 64);
    double *part = segc_arena_calloc(&ctx->arena, (size_t)(N * K * C * 3) * sizeof(double) + 8);
    int64_t *bad = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * K) * sizeof(int64_t));
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * C * DICE_BW) * sizeof(float));
#pragma omp parallel for schedule(static) if (N * C * S >= DICE_PAR_MIN)
    for (int64_t nk = 0; nk < N * K; nk++) {
        const int64_t n = nk / K, k = nk % K;
        float *sc = scratch + (int64_t)omp_get_thread_num() * C * DICE_BW;
        double *pe = part + nk * C * 3, *pt = pe + C, *cnt = pt + C;
        bad[nk] = -1;
        for (int64_t b = nl_chunk_begin(bps, K, k); b < nl_chunk_begin(bps, K, k + 1); b++) {
            const int64_t s0 = b * DICE_BW, len = S - s0 < DICE_BW ? S - s0 : DICE_BW;
            int64_t zs;
            const float *z = dice_rows(logits, n * C * S + s0, C, S, len, sc, &zs);
            float *mx = sv->mx + n * S + s0, *lz = sv->lz + n * S + s0, vm[DICE_BW];
            int32_t t[DICE_BW];
            nl_block_lse(z, zs, C, len, mx, lz, NULL, NULL);
            nl_load_labels(target, n * S + s0, len, t);
            for (int64_t p = 0; p < len; p++) {
                vm[p] = 1.f;
                if (t[p] == sv->ignore) { vm[p] = 0.f; continue; }
                if (t[p] < 0 || t[p] >= C) { if (bad[nk] < 0) bad[nk] = n * S + s0 + p; vm[p] = 0.f; continue; }
                pt[t[p]] += nl_expf((z[t[p] * zs + p] - mx[p]) - lz[p]);
                cnt[t[p]] += 1;
            }
            for (int64_t c = 0; c < C; c++) {
                const float *zc = z + c * zs;
                float acc = 0.f;
                if (e == 2) {
#pragma omp simd reduction(+ : acc)
                    for (int64_t p = 0; p < len; p++) {
                        float pv = nl_expf((zc[p] - mx[p]) - lz[p]);
                        acc += vm[p] * pv * pv;
                    }
                } else {
                    for (int64_t p = 0; p < len; p++) acc += vm[p] * ipowf(nl_expf((zc[p] - mx[p]) - lz[p]), e);
                }
                pe[c] += acc;
            }
        }
    }
    for (int64_t nk = 0; nk < N * K; nk++)
        if (bad[nk] >= 0) { nl_bad_label(ctx, op, target, bad[nk], C, opts.ignore_index); return NULL; }

    const float *w = nl_param_f32(ctx, opts.class_weight);
    segc_tensor *out = opts.reduction == SEGC_LOSS_NONE ? segc_tensor_new(ctx, SEGC_F32, 1, &N)
                                                        : segc_tensor_new(ctx, SEGC_F32, 0, NULL);
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        double ln = 0;
        for (int64_t c = 0; c < C; c++) {
            double P = 0, I = 0, T = 0;
            for (int64_t k = 0; k < K; k++) {   /* chunks in order */
                const double *pk = part + (n * K + k) * C * 3;
                P += pk[c];
                I += pk[C + c];
                T += pk[2 * C + c];
            }
            const double wc = (c == opts.ignore_index ? 0.0 : w ? w[c] : 1.0) / (double)C;
            const double den = P + T + opts.smooth, num = 2 * I + opts.smooth;
            if (den > 0 && wc != 0) {
                ln += wc * (1 - num / den);
                sv->alpha[n * C + c] = (float)(wc * num * e / (den * den));
                sv->beta[n * C + c] = (float)(wc * 2 / den);
            } else {   /* nothing to compare (smooth 0, no valid pixel): no loss */
                sv->alpha[n * C + c] = sv->beta[n * C + c] = 0.f;
            }
        }
        if (opts.reduction == SEGC_LOSS_NONE) segc_f32(out)[n] = (float)ln;
        total += ln;
    }
    if (opts.reduction != SEGC_LOSS_NONE) segc_f32(out)[0] = (float)(opts.reduction == SEGC_LOSS_MEAN ? total / nl_max1(N) : total);
    segc_tensor *ins[2] = {logits, target};
    if (segc_needs_grad(ctx, ins, 1)) segc_record(ctx, op, dice_backward, out, ins, 2, sv);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}
