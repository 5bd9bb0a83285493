/* BatchNorm kernels for a channels-last x (NHWC: R = N*H*W rows of C contiguous channels), called by
 * norm_batch.c when x->nhwc. The arithmetic per element is the NCHW path's; the loops are turned
 * so that the inner one runs over the contiguous channels. Per-channel sums go block by block
 * (BNH_ROWS rows) into per-chunk double partials; the chunks split the rows by the shape alone and
 * are combined in chunk order, so the bits do not depend on the thread count. Elementwise passes
 * are parallel over row blocks. bf16 converts whole blocks (rows x C, contiguous) through
 * per-thread scratch. */
#include "norm_batch_nhwc.h"

#include "segc/ops.h"

#define BNH_ROWS 64          /* rows per block */
#define BNH_MAX_CHUNKS 256   /* reduction chunks (each >= 4 blocks) */

static int64_t bnh_chunks(int64_t R) { return nl_chunks(R, 4 * BNH_ROWS, BNH_MAX_CHUNKS); }
static int64_t bnh_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* per-thread scratch, n floats per thread (NULL for n == 0), and this thread's part of it */
static float *bnh_scratch(segc_ctx *ctx, int64_t n) {
    return n ? segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * n) * sizeof(float)) : NULL;
}
static inline float *bnh_thread(float *s, int64_t n) { return s ? s + (int64_t)omp_get_thread_num() * n : NULL; }

/* ---------------------------------------------------------------- statistics */

/* sum (x - shift) and sum (x - shift)^2 per channel over rows [r0, r1) into p1, p2, in double as
 * nl_shifted_sums does */
static void bnh_shifted_rows(const segc_tensor *x, int64_t r0, int64_t r1, int64_t C, const float *shift, float *sc,
                             double *restrict p1, double *restrict p2) {
    for (int64_t c = 0; c < C; c++) p1[c] = p2[c] = 0;
    for (int64_t b = r0; b < r1; b += BNH_ROWS) {
        const int64_t rows = bnh_min(r1 - b, BNH_ROWS);
        const float *xp = nl_load(x, b * C, rows * C, sc);
        for (int64_t i = 0; i < rows; i++) {
            const float *xr = xp + i * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                const double d = (double)xr[c] - shift[c];
                p1[c] += d;
                p2[c] += d * d;
            }
        }
    }
}

/* the chunks' partials part[k][2][C] summed in chunk order into s1, s2 */
static void bnh_reduce(const double *part, int64_t K, int64_t C, double *s1, double *s2) {
    for (int64_t c = 0; c < C; c++) s1[c] = s2[c] = 0;
    for (int64_t k = 0; k < K; k++) {
        const double *p = part + 2 * k * C;
        for (int64_t c = 0; c < C; c++) s1[c] += p[c], s2[c] += p[C + c];
    }
}

/* per-channel shifted sums over all rows: s1[c] = sum (x - shift[c]), s2[c] = sum (x - shift[c])^2 */
static void bnh_stats_sums(segc_ctx *ctx, const segc_tensor *x, int64_t R, int64_t C, const float *shift, double *s1,
                           double *s2) {
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    const int64_t K = bnh_chunks(R), B = x->dtype == SEGC_BF16 ? BNH_ROWS * C : 0;
    double *part = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(2 * K * C) * sizeof(double));
    float *scratch = bnh_scratch(ctx, B);
#pragma omp parallel for schedule(static) if (R * C >= BN_PAR_MIN)
    for (int64_t k = 0; k < K; k++)
        bnh_shifted_rows(x, nl_chunk_begin(R, K, k), nl_chunk_begin(R, K, k + 1), C, shift, bnh_thread(scratch, B),
                         part + 2 * k * C, part + (2 * k + 1) * C);
    bnh_reduce(part, K, C, s1, s2);
    segc_arena_rewind(&ctx->arena, mark);
}

void bn_nhwc_sync_stats(segc_ctx *ctx, const segc_tensor *x, int64_t C, double *out, double *M) {
    const int64_t R = x->shape[0] * x->shape[2] * x->shape[3];
    float *shift = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
    for (int64_t c = 0; c < C; c++) shift[c] = 0.f;
    /* round 1: plain sums and the count give the global mean; out[C..2C) is overwritten after */
    bnh_stats_sums(ctx, x, R, C, shift, out, out + C);
    out[C] = (double)R;
    ctx->sum_hook(ctx->sum_hook_user, out, C + 1);
    const double m = out[C];
    *M = m;
    for (int64_t c = 0; c < C; c++) shift[c] = (float)(out[c] / m);
    /* round 2: sums around that mean (shifted, no cancellation) give the variance */
    bnh_stats_sums(ctx, x, R, C, shift, out, out + C);
    ctx->sum_hook(ctx->sum_hook_user, out, 2 * C);
    for (int64_t c = 0; c < C; c++) {
        double dm = out[c] / m, v = out[C + c] / m - dm * dm;
        out[c] = shift[c] + dm;
        out[C + c] = v > 0 ? v : 0;
    }
}

/* ---------------------------------------------------------------- forward */

/* one row of y: the NCHW path's expressions (add_relu: bf16 rounds bn(x) before the sum, the
 * relu follows on the stored value in bnh_apply) */
static inline void bnh_row(const float *xr, const float *ir, float *restrict yr, int64_t C, const float *m,
                           const float *ml, const float *ka, const float *kb, bool relu, bool bf) {
    if (ir && bf) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = round_bf16(fmaf((xr[c] - m[c]) - ml[c], ka[c], kb[c])) + ir[c];
    } else if (ir) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float v = fmaf((xr[c] - m[c]) - ml[c], ka[c], kb[c]) + ir[c];
            yr[c] = v > 0.0f ? v : 0.0f;
        }
    } else if (relu) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float v = fmaf((xr[c] - m[c]) - ml[c], ka[c], kb[c]);
            yr[c] = v > 0.0f ? v : 0.0f;
        }
    } else {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = fmaf((xr[c] - m[c]) - ml[c], ka[c], kb[c]);
    }
}

/* y from x (and id) with sv's statistics and the constants ka, kb; relu when sv->ka is set. The
 * forward and the refill both come here, so the refill reproduces the output bit for bit. */
static void bnh_apply(segc_ctx *ctx, const segc_tensor *x, segc_tensor *y, const segc_tensor *id, const bn_saved *sv,
                      const float *ka, const float *kb) {
    const int64_t C = sv->C, R = sv->N * sv->S, B = BNH_ROWS * C, nb = (R + BNH_ROWS - 1) / BNH_ROWS;
    const bool bf = x->dtype == SEGC_BF16, relu = sv->ka != NULL;
    float *scratch = bnh_scratch(ctx, bf ? 3 * B : 0);   /* per thread: x, y and id blocks */
#pragma omp parallel for schedule(static) if (R * C >= BN_PAR_MIN)
    for (int64_t j = 0; j < nb; j++) {
        float *sc = bnh_thread(scratch, bf ? 3 * B : 0);
        const int64_t rows = bnh_min(R - j * BNH_ROWS, BNH_ROWS), off = j * B, len = rows * C;
        const float *xp = nl_load(x, off, len, sc);
        const float *ip = id ? nl_load(id, off, len, sc ? sc + 2 * B : NULL) : NULL;
        float *yp = nl_dst(y, off, sc ? sc + B : NULL);
        for (int64_t i = 0; i < rows; i++)
            bnh_row(xp + i * C, ip ? ip + i * C : NULL, yp + i * C, C, sv->mean, sv->mean_lo, ka, kb, relu, bf);
        nl_store(y, off, len, yp);
        if (id && bf) {   /* relu_ on the stored bf16 value: sign bit set -> 0 */
            uint16_t *yb = segc_bf16p(y) + off;
            for (int64_t i = 0; i < len; i++) yb[i] = yb[i] & 0x8000 ? 0 : yb[i];
        }
    }
}

void bn_nhwc_forward(segc_ctx *ctx, const segc_tensor *x, segc_tensor *y, const segc_tensor *id, bn_saved *sv,
                     const float *g, const float *bt, const float *rm, const float *rv, const double *gsum, float eps,
                     float *var_unbiased) {
    const int64_t C = sv->C, R = sv->N * sv->S;
    const double M = sv->M;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    const size_t fc = (size_t)nl_max1(C) * sizeof(float), dc = (size_t)nl_max1(C) * sizeof(double);
    float *shift = NULL;
    double *s1 = NULL, *s2 = NULL;
    if (sv->batch_stats && !gsum) {   /* shifted by the channel's first value, as the NCHW path */
        shift = segc_arena_alloc(&ctx->arena, fc);
        s1 = segc_arena_alloc(&ctx->arena, dc);
        s2 = segc_arena_alloc(&ctx->arena, dc);
        for (int64_t c = 0; c < C; c++)
            shift[c] = x->dtype == SEGC_BF16 ? segc_bf16_to_f32(segc_bf16p(x)[c]) : segc_f32(x)[c];
        bnh_stats_sums(ctx, x, R, C, shift, s1, s2);
    }
    float *ka = sv->ka ? sv->ka : segc_arena_alloc(&ctx->arena, fc);
    float *kb = sv->kb ? sv->kb : segc_arena_alloc(&ctx->arena, fc);
    for (int64_t c = 0; c < C; c++) {
        double mean, var;
        bn_channel_stats(c, C, gsum, s1 != NULL, s1 ? s1[c] : 0, s2 ? s2[c] : 0, shift ? shift[c] : 0.f, M, rm, rv,
                         var_unbiased, &mean, &var);
        bn_channel_consts(mean, var, eps, g ? g[c] : 1.f, bt ? bt[c] : 0.f, &sv->mean[c], &sv->mean_lo[c], &sv->rstd[c],
                          &ka[c], &kb[c]);
    }
    bnh_apply(ctx, x, y, id, sv, ka, kb);
    segc_arena_rewind(&ctx->arena, mark);
}

void bn_nhwc_relu_refill(segc_ctx *ctx, segc_node *nd) {
    const bn_saved *sv = nd->saved;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    bnh_apply(ctx, nd->in[0], nd->out, NULL, sv, sv->ka, sv->kb);
    segc_arena_rewind(&ctx->arena, mark);
}

/* ---------------------------------------------------------------- backward */

/* one row's contribution to sum dy and sum dy * (x - mean), f32 per block as bn_channel_sums;
 * batch_norm_relu (ka set): dy masked where the forward's pre-relu value was not positive */
static inline void bnh_sums_row(const float *xr, const float *dr, int64_t C, const bn_saved *sv, float *restrict fa,
                                float *restrict fb) {
    const float *m = sv->mean, *ml = sv->mean_lo, *ka = sv->ka, *kb = sv->kb;
    if (ka) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            const float v = (xr[c] - m[c]) - ml[c], d = fmaf(v, ka[c], kb[c]) > 0.0f ? dr[c] : 0.0f;
            fa[c] += d;
            fb[c] += d * v;
        }
    } else {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            fa[c] += dr[c];
            fb[c] += dr[c] * ((xr[c] - m[c]) - ml[c]);
        }
    }
}

/* sum dy and sum dy * (x - mean) per channel over rows [r0, r1) into pdy, pdyx (double);
 * ws: this thread's BNH_ROWS * C floats for a bf16 x, then 2C for the block sums */
static void bnh_grad_rows(const segc_tensor *x, const float *dy, const bn_saved *sv, int64_t r0, int64_t r1,
                          float *ws, double *restrict pdy, double *restrict pdyx) {
    const int64_t C = sv->C;
    float *sc = x->dtype == SEGC_BF16 ? ws : NULL, *fa = ws + (sc ? BNH_ROWS * C : 0), *fb = fa + C;
    for (int64_t c = 0; c < C; c++) pdy[c] = pdyx[c] = 0;
    for (int64_t b = r0; b < r1; b += BNH_ROWS) {
        const int64_t rows = bnh_min(r1 - b, BNH_ROWS);
        const float *xp = nl_load(x, b * C, rows * C, sc), *dyp = dy + b * C;
        for (int64_t c = 0; c < C; c++) fa[c] = fb[c] = 0.f;
        for (int64_t i = 0; i < rows; i++) bnh_sums_row(xp + i * C, dyp + i * C, C, sv, fa, fb);
        for (int64_t c = 0; c < C; c++) pdy[c] += fa[c], pdyx[c] += fb[c];
    }
}

/* per-channel sdy[c] = sum dy, sdyx[c] = sum dy * (x - mean) over all rows */
static void bnh_grad_sums(segc_ctx *ctx, const segc_tensor *x, const float *dy, const bn_saved *sv, double *sdy,
                          double *sdyx) {
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    const int64_t C = sv->C, R = sv->N * sv->S, K = bnh_chunks(R);
    const int64_t W = (x->dtype == SEGC_BF16 ? BNH_ROWS * C : 0) + 2 * C;
    double *part = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(2 * K * C) * sizeof(double));
    float *ws = bnh_scratch(ctx, nl_max1(W));
#pragma omp parallel for schedule(static) if (R * C >= BN_PAR_MIN)
    for (int64_t k = 0; k < K; k++)
        bnh_grad_rows(x, dy, sv, nl_chunk_begin(R, K, k), nl_chunk_begin(R, K, k + 1), bnh_thread(ws, nl_max1(W)),
                      part + 2 * k * C, part + (2 * k + 1) * C);
    bnh_reduce(part, K, C, sdy, sdyx);
    segc_arena_rewind(&ctx->arena, mark);
}

/* one row of dx = dy*kd + (x - mean)*k1 + k0 (nl_dx_block's expression), stored when ow, else
 * added; batch_norm_relu: dy masked first as in bnh_sums_row (mk: C floats) */
static inline void bnh_dx_row(const float *xr, const float *dr, float *restrict out, int64_t C, const bn_saved *sv,
                              const float *kd, const float *k1, const float *k0, int ow, float *restrict mk) {
    const float *m = sv->mean, *ml = sv->mean_lo, *ka = sv->ka, *kb = sv->kb;
    if (ka) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) mk[c] = fmaf((xr[c] - m[c]) - ml[c], ka[c], kb[c]) > 0.0f ? dr[c] : 0.0f;
        dr = mk;
    }
    if (ow) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) out[c] = fmaf(dr[c], kd[c], fmaf((xr[c] - m[c]) - ml[c], k1[c], k0[c]));
    } else {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) out[c] += fmaf(dr[c], kd[c], fmaf((xr[c] - m[c]) - ml[c], k1[c], k0[c]));
    }
}

static void bnh_dx(segc_ctx *ctx, const segc_tensor *x, const float *dy, float *dx, int ow, const bn_saved *sv,
                   const float *kd, const float *k1, const float *k0) {
    const int64_t C = sv->C, R = sv->N * sv->S, B = BNH_ROWS * C, nb = (R + BNH_ROWS - 1) / BNH_ROWS;
    const bool bf = x->dtype == SEGC_BF16;
    const int64_t W = nl_max1((bf ? B : 0) + C);   /* per thread: the bf16 x block, the masked dy row */
    float *scratch = bnh_scratch(ctx, W);
#pragma omp parallel for schedule(static) if (R * C >= BN_PAR_MIN)
    for (int64_t j = 0; j < nb; j++) {
        float *ws = bnh_thread(scratch, W), *mk = ws + (bf ? B : 0);
        const int64_t rows = bnh_min(R - j * BNH_ROWS, BNH_ROWS), off = j * B;
        const float *xp = nl_load(x, off, rows * C, ws);
        for (int64_t i = 0; i < rows; i++)
            bnh_dx_row(xp + i * C, dy + off + i * C, dx + off + i * C, C, sv, kd, k1, k0, ow, mk);
    }
}

void bn_nhwc_backward_dy(segc_ctx *ctx, segc_node *nd, const float *dy, float *dx, int ow, float *dg, float *db) {
    const bn_saved *sv = nd->saved;
    const segc_tensor *x = nd->in[0], *gamma = nd->in[1];
    const int64_t C = sv->C;
    const double M = sv->M;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    /* this process's sums (s), and with SyncBatchNorm their sums over every process (gs) */
    double *s = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(2 * C) * sizeof(double)), *gs = s;
    bnh_grad_sums(ctx, x, dy, sv, s, s + C);
    if (sv->sync && sv->batch_stats && ctx->sum_hook) {
        gs = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(2 * C) * sizeof(double));
        memcpy(gs, s, (size_t)(2 * C) * sizeof(double));
        ctx->sum_hook(ctx->sum_hook_user, gs, 2 * C);
    }
    const float *g = nl_param_f32(ctx, gamma);
    float *kd = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(3 * C) * sizeof(float)), *k1 = kd + C, *k0 = kd + 2 * C;
    for (int64_t c = 0; c < C; c++) {   /* bn_backward_dy's constants, expression for expression */
        const float rs = sv->rstd[c], gc = g ? g[c] : 1.f;
        if (dg) dg[c] += (float)(s[C + c] * rs);   /* this process's part: the gradient all-reduce sums them */
        if (db) db[c] += (float)s[c];
        const double sdy = gs[c], sdyx = gs[C + c];
        kd[c] = gc * rs;
        k1[c] = sv->batch_stats ? (float)(-(double)gc * rs * rs * rs * sdyx / M) : 0.f;
        k0[c] = sv->batch_stats ? (float)(-(double)gc * rs * sdy / M) : 0.f;
    }
    if (dx) bnh_dx(ctx, x, dy, dx, ow, sv, kd, k1, k0);
    segc_arena_rewind(&ctx->arena, mark);
}
