/* BatchNorm over x[N, C, spatial...] with PyTorch semantics (training: batch
 * statistics + in-place running-stat update with the unbiased variance; eval:
 * running statistics). Threads split the channels; each channel's N runs of S
 * contiguous values are swept in L1-sized blocks. Statistics take one pass
 * (sums shifted by the channel's first value, so the variance does not suffer
 * from cancellation when |mean| >> std), accumulated in double.
 * per-channel reduction is done by a single thread, so results
 * do not depend on the thread count. A channels-last x (x->nhwc) goes to the kernels of
 * norm_batch_nhwc.c instead, with the same arithmetic per element. */
#include <math.h>

#include "norm_batch_nhwc.h"
#include "normloss_util.h"
#include "segc/ops.h"
#include "segc/profile.h"

#define BN_BLOCK 2048      /* values per sweep block (8 KiB of f32) */

/* batch_norm_relu: dy where the forward's pre-relu value fmaf((x - m) - ml, ka, kb) was positive,
 * else 0 -- the same expression as the forward, so the same mask as relu's on the stored output
 * (bf16: except pre-relu values below bf16's smallest subnormal, which round to 0) */
static inline const float *bn_relu_mask(const float *xp, const float *dyp, int64_t len, float m, float ml, float ka,
                                        float kb, float *restrict out) {
#pragma omp simd
    for (int64_t i = 0; i < len; i++) out[i] = fmaf((xp[i] - m) - ml, ka, kb) > 0.0f ? dyp[i] : 0.0f;
    return out;
}

/* sum dy and sum dy * (x - mean) of channel c: per block in f32 (<= 2048 values), totals in double.
 * sc: BN_BLOCK floats for a bf16 x, then BN_BLOCK for the relu-masked dy (NULL when neither) */
static void bn_channel_sums(const segc_tensor *x, const float *dy, const bn_saved *sv, int64_t c, float *sc,
                            double *sdy, double *sdyx) {
    const int64_t N = sv->N, C = sv->C, S = sv->S;
    const float m = sv->mean[c], ml = sv->mean_lo[c];
    for (int64_t n = 0; n < N; n++)
        for (int64_t s0 = 0; s0 < S; s0 += BN_BLOCK) {
            int64_t len = S - s0 < BN_BLOCK ? S - s0 : BN_BLOCK, off = (n * C + c) * S + s0;
            const float *xp = nl_load(x, off, len, sc), *dyp = dy + off;
            if (sv->ka) dyp = bn_relu_mask(xp, dyp, len, m, ml, sv->ka[c], sv->kb[c], sc + BN_BLOCK);
            float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
            for (int64_t i = 0; i < len; i++) {
                a += dyp[i];
                b += dyp[i] * ((xp[i] - m) - ml);
            }
            *sdy += a;
            *sdyx += b;
        }
}

/* the gradients of x (dx, written when ow, else added to), gamma and beta from dy */
static void bn_backward_dy(segc_ctx *ctx, segc_node *nd, const float *dy, float *dx, int ow, float *dg, float *db) {
    if (nd->in[0]->nhwc) {
        bn_nhwc_backward_dy(ctx, nd, dy, dx, ow, dg, db);
        return;
    }
    const bn_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *gamma = nd->in[1];
    const int64_t N = sv->N, C = sv->C, S = sv->S;
    const double M = sv->M;
    float *scratch = x->dtype == SEGC_F32 && !sv->ka
                         ? NULL
                         : segc_arena_alloc(&ctx->arena, (size_t)omp_get_max_threads() * 2 * BN_BLOCK * sizeof(float));
    /* SyncBatchNorm: this process's sums (lsum) first, then their sums over every process (gsum) */
    double *lsum = NULL, *gsum = NULL;
    if (sv->sync && sv->batch_stats && ctx->sum_hook) {
        lsum = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(2 * C) * sizeof(double));
        gsum = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(2 * C) * sizeof(double));
#pragma omp parallel for schedule(static) if (N * C * S >= BN_PAR_MIN)
        for (int64_t c = 0; c < C; c++) {
            float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 2 * BN_BLOCK : NULL;
            lsum[c] = lsum[C + c] = 0;
            bn_channel_sums(x, dy, sv, c, sc, &lsum[c], &lsum[C + c]);
        }
        memcpy(gsum, lsum, (size_t)(2 * C) * sizeof(double));
        ctx->sum_hook(ctx->sum_hook_user, gsum, 2 * C);
    }
    const float *g = nl_param_f32(ctx, gamma);
#pragma omp parallel for schedule(static) if (N * C * S >= BN_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 2 * BN_BLOCK : NULL;
        const float m = sv->mean[c], ml = sv->mean_lo[c], rs = sv->rstd[c], gc = g ? g[c] : 1.f;
        double sdy = 0, sdyx = 0;   /* sum dy, sum dy * (x - mean) */
        if (lsum) sdy = lsum[c], sdyx = lsum[C + c];
        else bn_channel_sums(x, dy, sv, c, sc, &sdy, &sdyx);
        if (dg) dg[c] += (float)(sdyx * rs);   /* this process's part: the gradient all-reduce sums them */
        if (db) db[c] += (float)sdy;
        if (!dx) continue;
        if (gsum) sdy = gsum[c], sdyx = gsum[C + c];
        /* dx = dy*g*rstd + (x - mean)*k1 + k0; k0 = k1 = 0 with running statistics */
        const float kd = gc * rs;
        const float k1 = sv->batch_stats ? (float)(-(double)gc * rs * rs * rs * sdyx / M) : 0.f;
        const float k0 = sv->batch_stats ? (float)(-(double)gc * rs * sdy / M) : 0.f;
        if (!sv->ka) {
            for (int64_t n = 0; n < N; n++) nl_apply_dx(x, dy, dx, (n * C + c) * S, S, BN_BLOCK, sc, m, ml, kd, k1, k0, ow);
            continue;
        }
        for (int64_t n = 0; n < N; n++)   /* relu-masked dy, block by block */
            for (int64_t s0 = 0; s0 < S; s0 += BN_BLOCK) {
                int64_t len = S - s0 < BN_BLOCK ? S - s0 : BN_BLOCK, off = (n * C + c) * S + s0;
                const float *xp = nl_load(x, off, len, sc);
                const float *dyp = bn_relu_mask(xp, dy + off, len, m, ml, sv->ka[c], sv->kb[c], sc + BN_BLOCK);
                nl_dx_block(xp, dyp, dx + off, len, m, ml, kd, k1, k0, ow);
            }
    }
}

static void bn_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2];
    int ow = 0;
    float *dx = x->requires_grad ? nl_grad_buf(ctx, x, &ow) : NULL;
    float *dg = gamma && gamma->requires_grad ? segc_grad(ctx, gamma) : NULL;
    float *db = beta && beta->requires_grad ? segc_grad(ctx, beta) : NULL;
    bn_backward_dy(ctx, nd, nd->out->grad, dx, ow, dg, db);
}

/* batch_norm_add_relu: g = dy where the output is positive (relu_'s own test on the stored
 * value, bf16 included), added to the residual's gradient and fed to the BN backward as add's
 * gradient is in the unfused ops. g lives only for this node. Elementwise: x, y and id share one
 * layout, so this serves NHWC as it is. */
static void bn_add_relu_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2], *id = nd->in[3], *y = nd->out;
    int ow = 0, owi = 0;
    float *dx = x->requires_grad ? nl_grad_buf(ctx, x, &ow) : NULL;
    float *dg = gamma && gamma->requires_grad ? segc_grad(ctx, gamma) : NULL;
    float *db = beta && beta->requires_grad ? segc_grad(ctx, beta) : NULL;
    float *di = id->requires_grad ? nl_grad_buf(ctx, id, &owi) : NULL;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    const int64_t n = segc_numel(y);
    const float *dy = y->grad;
    float *g = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(n) * sizeof *g);
    if (y->dtype == SEGC_BF16) {
        const uint16_t *yb = segc_bf16p(y);
#pragma omp parallel for simd schedule(static) if (n > BN_PAR_MIN)
        for (int64_t i = 0; i < n; i++) g[i] = (yb[i] & 0x7fff) && !(yb[i] & 0x8000) ? dy[i] : 0.0f;
    } else {
        const float *yf = segc_f32(y);
#pragma omp parallel for simd schedule(static) if (n > BN_PAR_MIN)
        for (int64_t i = 0; i < n; i++) g[i] = yf[i] > 0.0f ? dy[i] : 0.0f;
    }
    if (di) {
        if (owi) memcpy(di, g, (size_t)n * sizeof *g);
        else {
#pragma omp parallel for simd schedule(static) if (n > BN_PAR_MIN)
            for (int64_t i = 0; i < n; i++) di[i] += g[i];
        }
    }
    bn_backward_dy(ctx, nd, g, dx, ow, dg, db);
    segc_arena_rewind(&ctx->arena, mark);
}

/* SyncBatchNorm statistics: out[c] = mean, out[C + c] = biased variance over every process's
 * values of channel c, in two rounds through ctx->sum_hook: the sums and the count give the mean,
 * then sums of (x - mean) and (x - mean)^2 (shifted, no cancellation) give the variance. *M = the
 * global count. out holds 2C + 1 doubles. */
static void bn_sync_stats(segc_ctx *ctx, const segc_tensor *x, int64_t N, int64_t C, int64_t S, float *scratch,
                          double *out, double *M) {
    float *shift = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
#pragma omp parallel for schedule(static) if (N * C * S >= BN_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 2 * BN_BLOCK : NULL;
        double s1 = 0, s2 = 0;
        for (int64_t n = 0; n < N; n++) nl_shifted_sums(x, (n * C + c) * S, S, 0.f, sc, BN_BLOCK, &s1, &s2);
        out[c] = s1;
    }
    out[C] = (double)(N * S);
    ctx->sum_hook(ctx->sum_hook_user, out, C + 1);
    const double m = out[C];
    *M = m;
    for (int64_t c = 0; c < C; c++) shift[c] = (float)(out[c] / m);
#pragma omp parallel for schedule(static) if (N * C * S >= BN_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 2 * BN_BLOCK : NULL;
        double s1 = 0, s2 = 0;
        for (int64_t n = 0; n < N; n++) nl_shifted_sums(x, (n * C + c) * S, S, shift[c], sc, BN_BLOCK, &s1, &s2);
        out[c] = s1;
        out[C + c] = s2;
    }
    ctx->sum_hook(ctx->sum_hook_user, out, 2 * C);
    for (int64_t c = 0; c < C; c++) {
        double dm = out[c] / m, v = out[C + c] / m - dm * dm;
        out[c] = shift[c] + dm;
        out[C + c] = v > 0 ? v : 0;
    }
}

/* relu(bn(x)) of one block: the forward's expression, which the refill repeats bit for bit */
static inline void bn_relu_block(const float *xp, float *restrict yp, int64_t len, float m, float ml, float ka, float kb) {
#pragma omp simd
    for (int64_t i = 0; i < len; i++) {
        float v = fmaf((xp[i] - m) - ml, ka, kb);
        yp[i] = v > 0.0f ? v : 0.0f;
    }
}

/* batch_norm_relu's output again from x and the saved statistics (segc_release_recompute) */
static void bn_relu_refill(segc_ctx *ctx, segc_node *nd) {
    const bn_saved *sv = nd->saved;
    const segc_tensor *x = nd->in[0];
    segc_tensor *y = nd->out;
    const int64_t N = sv->N, C = sv->C, S = sv->S;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    float *scratch = x->dtype == SEGC_BF16
                         ? segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * 2 * BN_BLOCK) * sizeof(float))
                         : NULL;
#pragma omp parallel for schedule(static) if (N * C * S >= BN_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 2 * BN_BLOCK : NULL;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s0 = 0; s0 < S; s0 += BN_BLOCK) {
                int64_t len = S - s0 < BN_BLOCK ? S - s0 : BN_BLOCK, off = (n * C + c) * S + s0;
                float *yp = nl_dst(y, off, sc ? sc + BN_BLOCK : NULL);
                bn_relu_block(nl_load(x, off, len, sc), yp, len, sv->mean[c], sv->mean_lo[c], sv->ka[c], sv->kb[c]);
                nl_store(y, off, len, yp);
            }
    }
    segc_arena_rewind(&ctx->arena, mark);
}

/* the NCHW forward: per channel, the statistics (batch, or running: rm, rv; gsum: SyncBatchNorm's),
 * sv's constants, and y */
static void bn_nchw_forward(const segc_tensor *x, segc_tensor *y, const segc_tensor *id, bn_saved *sv, const float *g,
                            const float *bt, const float *rm, const float *rv, const double *gsum, float eps,
                            float *var_unbiased, float *scratch, int64_t sstride) {
    const int64_t N = sv->N, C = sv->C, S = sv->S;
    const double M = sv->M;
    const bool bf = x->dtype == SEGC_BF16, relu = sv->ka != NULL, batch_stats = sv->batch_stats;
#pragma omp parallel for schedule(static) if (N * C * S >= BN_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * sstride : NULL;
        double mean, var, s1 = 0, s2 = 0;
        float shift = 0.f;
        if (!gsum && batch_stats) {
            shift = bf ? segc_bf16_to_f32(segc_bf16p(x)[c * S]) : segc_f32(x)[c * S];
            for (int64_t n = 0; n < N; n++) nl_shifted_sums(x, (n * C + c) * S, S, shift, sc, BN_BLOCK, &s1, &s2);
        }
        bn_channel_stats(c, C, gsum, batch_stats, s1, s2, shift, M, rm, rv, var_unbiased, &mean, &var);
        float ka, kb;
        bn_channel_consts(mean, var, eps, g ? g[c] : 1.f, bt ? bt[c] : 0.f, &sv->mean[c], &sv->mean_lo[c], &sv->rstd[c],
                          &ka, &kb);
        const float m = sv->mean[c], ml = sv->mean_lo[c];
        if (relu) sv->ka[c] = ka, sv->kb[c] = kb;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s0 = 0; s0 < S; s0 += BN_BLOCK) {
                int64_t len = S - s0 < BN_BLOCK ? S - s0 : BN_BLOCK, off = (n * C + c) * S + s0;
                const float *xp = nl_load(x, off, len, sc);
                float *yp = nl_dst(y, off, sc ? sc + BN_BLOCK : NULL);
                if (id) {   /* the unfused ops' values: bf16 rounds bn(x), then the sum (relu below) */
                    const float *ip = nl_load(id, off, len, sc ? sc + 2 * BN_BLOCK : NULL);
                    if (bf) {
#pragma omp simd
                        for (int64_t i = 0; i < len; i++) yp[i] = round_bf16(fmaf((xp[i] - m) - ml, ka, kb)) + ip[i];
                    } else {
#pragma omp simd
                        for (int64_t i = 0; i < len; i++) {
                            float v = fmaf((xp[i] - m) - ml, ka, kb) + ip[i];
                            yp[i] = v > 0.0f ? v : 0.0f;
                        }
                    }
                    nl_store(y, off, len, yp);
                    if (bf) {   /* relu_ on the stored bf16 value: sign bit set -> 0 */
                        uint16_t *yb = segc_bf16p(y) + off;
                        for (int64_t i = 0; i < len; i++) yb[i] = yb[i] & 0x8000 ? 0 : yb[i];
                    }
                    continue;
                }
                if (relu) {
                    bn_relu_block(xp, yp, len, m, ml, ka, kb);
                } else {
#pragma omp simd
                    for (int64_t i = 0; i < len; i++) yp[i] = fmaf((xp[i] - m) - ml, ka, kb);
                }
                nl_store(y, off, len, yp);
            }
    }
}

static const char *bn_layout_name(const segc_tensor *t) {
    return t->nhwc ? "channels-last (NHWC)" : "channels-first (NCHW)";
}

/* the channels-last rules: x 4-D, the residual in x's layout */
static bool bn_check_layout(segc_ctx *ctx, const char *op, const segc_tensor *x, const segc_tensor *id) {
    char a[96];
    if (x->nhwc && x->ndim != 4) {
        segc_set_error(ctx, "%s: a channels-last x must be 4-D [N, C, H, W], found %s", op,
                       segc_shape_str(x, a, sizeof a));
        return false;
    }
    if (id && id->nhwc != x->nhwc) {
        segc_set_error(ctx, "%s: the residual must have x's layout: x is %s, id is %s", op, bn_layout_name(x),
                       bn_layout_name(id));
        return false;
    }
    return true;
}

/* relu: ReLU after the normalisation; id: relu(bn(x) + id) (a residual block's end) */
static segc_tensor *batch_norm(segc_ctx *ctx, const char *op, bool relu, segc_tensor *x, segc_tensor *gamma,
                               segc_tensor *beta, segc_tensor *running_mean, segc_tensor *running_var, float momentum,
                               float eps, segc_tensor *id) {
    SEGC_PROF_OP(ctx, op);
    char a[96], b[96];
    if (!x) return NULL;
    if (!segc_check_float_any_layout(ctx, op, "x", x) || !bn_check_layout(ctx, op, x, id)) return NULL;
    if (x->ndim < 2) {
        segc_set_error(ctx, "%s: x must be [N, C, ...] (at least 2-D), found %s", op, segc_shape_str(x, a, sizeof a));
        return NULL;
    }
    if (id && (id->dtype != x->dtype || !segc_same_shape(id, x))) {
        segc_set_error(ctx, "%s: the residual expected x's shape and dtype %s %s, found %s %s", op,
                       segc_shape_str(x, a, sizeof a), segc_dtype_name(x->dtype), segc_shape_str(id, b, sizeof b),
                       segc_dtype_name(id->dtype));
        return NULL;
    }
    const int64_t N = x->shape[0], C = x->shape[1], S = segc_numel(x) / nl_max1(N * C);
    if (!nl_check_vec(ctx, op, "gamma", gamma, C) || !nl_check_vec(ctx, op, "beta", beta, C)) return NULL;
    if (!running_mean != !running_var) {
        segc_set_error(ctx, "%s: running_mean and running_var must be given together, found %s without %s", op,
                       running_mean ? "running_mean" : "running_var", running_mean ? "running_var" : "running_mean");
        return NULL;
    }
    if (running_mean) {
        if (!segc_check_dtype(ctx, op, "running_mean", running_mean, SEGC_F32) ||
            !segc_check_dtype(ctx, op, "running_var", running_var, SEGC_F32) ||
            !nl_check_vec(ctx, op, "running_mean", running_mean, C) || !nl_check_vec(ctx, op, "running_var", running_var, C))
            return NULL;
    }
    if (!(eps >= 0.f) || !(momentum >= 0.f && momentum <= 1.f)) {
        segc_set_error(ctx, "%s: need eps >= 0 and momentum in [0, 1], found eps %g momentum %g", op, (double)eps,
                       (double)momentum);
        return NULL;
    }
    const bool batch_stats = ctx->training || !running_mean;
    if (batch_stats && N * S <= 1) {
        segc_set_error(ctx, "%s: batch statistics need more than 1 value per channel, found x %s", op,
                       segc_shape_str(x, a, sizeof a));
        return NULL;
    }

    const bool sync = batch_stats && ctx->training && ctx->sum_hook;
    segc_tensor *y = segc_tensor_like(ctx, x);
    y->nhwc = x->nhwc;   /* y and its gradient in x's layout */
    bn_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (bn_saved){.N = N, .C = C, .S = S, .M = (double)(N * S), .batch_stats = batch_stats, .sync = sync};
    sv->mean = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
    sv->mean_lo = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
    sv->rstd = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
    if (relu) {
        sv->ka = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
        sv->kb = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
    }
    float *var_unbiased = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(C) * sizeof(float));
    const float *g = nl_param_f32(ctx, gamma), *bt = nl_param_f32(ctx, beta);
    const float *rm = running_mean ? segc_f32(running_mean) : NULL, *rv = running_var ? segc_f32(running_var) : NULL;
    const bool bf = x->dtype == SEGC_BF16;
    const int64_t sstride = (id ? 3 : 2) * BN_BLOCK;   /* per thread: x, y (and the residual) blocks */
    float *scratch = bf && !x->nhwc ? segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * sstride) * sizeof(float)) : NULL;
    double M = (double)(N * S);
    /* SyncBatchNorm: the global mean first (sums + count over every process), then the sums of
     * squares around it; gsum[c] = mean, gsum[C + c] = biased variance */
    double *gsum = NULL;
    if (sync) {
        gsum = segc_arena_alloc(&ctx->arena, (size_t)(2 * C + 1) * sizeof(double));
        if (x->nhwc) bn_nhwc_sync_stats(ctx, x, C, gsum, &M);
        else bn_sync_stats(ctx, x, N, C, S, scratch, gsum, &M);
        sv->M = M;
        if (!(M > 1)) {
            segc_set_error(ctx, "%s: batch statistics need more than 1 value per channel, found %g over all processes", op, M);
            return NULL;
        }
    }

    if (x->nhwc) bn_nhwc_forward(ctx, x, y, id, sv, g, bt, rm, rv, gsum, eps, var_unbiased);
    else bn_nchw_forward(x, y, id, sv, g, bt, rm, rv, gsum, eps, var_unbiased, scratch, sstride);

    if (ctx->training && running_mean) {
        float *wm = segc_f32(running_mean), *wv = segc_f32(running_var);
        for (int64_t c = 0; c < C; c++) {
            wm[c] = (1.f - momentum) * wm[c] + momentum * sv->mean[c];
            wv[c] = (1.f - momentum) * wv[c] + momentum * var_unbiased[c];
        }
    }
    segc_tensor *ins[4] = {x, gamma, beta, id};
    if (segc_needs_grad(ctx, ins, id ? 4 : 3)) {
        segc_node *nd = segc_record(ctx, op, id ? bn_add_relu_backward : bn_backward, y, ins, id ? 4 : 3, sv);
        if (relu) nd->refill = x->nhwc ? bn_nhwc_relu_refill : bn_relu_refill;
    }
    if (!segc_check_finite_out(ctx, op, y)) return NULL;
    return y;
}

segc_tensor *segc_batch_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta,
                             segc_tensor *running_mean, segc_tensor *running_var, float momentum, float eps) {
    return batch_norm(ctx, "batch_norm", false, x, gamma, beta, running_mean, running_var, momentum, eps, NULL);
}

segc_tensor *segc_batch_norm_relu(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta,
                                  segc_tensor *running_mean, segc_tensor *running_var, float momentum, float eps) {
    return batch_norm(ctx, "batch_norm_relu", true, x, gamma, beta, running_mean, running_var, momentum, eps, NULL);
}

segc_tensor *segc_batch_norm_add_relu(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta,
                                      segc_tensor *running_mean, segc_tensor *running_var, float momentum, float eps,
                                      segc_tensor *id) {
    if (!id) return NULL;
    return batch_norm(ctx, "batch_norm_add_relu", false, x, gamma, beta, running_mean, running_var, momentum, eps, id);
}
