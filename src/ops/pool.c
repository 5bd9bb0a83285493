/* Max, average and adaptive-average pooling on plain NCHW planes.
 *
 * Direct kernels rather than oneDNN: on this project's CPUs oneDNN 2.6 pools
 * plain NCHW with its reference "simple_nchw" code (8x64x128x128 3x3 s2 max
 * pool: 144 ms forward), needs two reorders (~20 ms) around its blocked
 * kernels, and has no bf16 pooling without AVX-512. These loops read each
 * input row once per window row and run along output rows.
 *
 * One thread owns a whole (n, c) plane in forward and backward, so results
 * do not depend on the thread count. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "segc/ops.h"

/* One output index along an axis: input range [lo, hi) (inside the input)
 * and its factor of the averaging divisor. */
typedef struct { int64_t lo, hi, cnt; } win;

typedef struct {
    int64_t n, c, h, w, oh, ow;
    const win *wh, *ww;          /* windows per output row / column */
    int32_t *argmax;             /* max pool: flat index in the plane per output */
} pool_saved;

/* PyTorch's pooling output size (dilation 1) */
static int64_t pool_out_size(int64_t in, int k, int s, int p, bool ceil_mode) {
    int64_t num = in + 2 * (int64_t)p - k + (ceil_mode ? s - 1 : 0);
    if (num < 0) return 0;
    int64_t o = num / s + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;   /* the last window must start inside input or left pad */
    return o;
}

static bool pool_check(segc_ctx *ctx, const char *op, const segc_tensor *x, int kh, int kw, int sh, int sw, int ph,
                       int pw, bool ceil_mode, int64_t *oh, int64_t *ow) {
    char bx[96];
    if (!segc_check_float(ctx, op, "x", x) || !segc_check_ndim(ctx, op, "x", x, 4)) return false;
    for (int i = 0; i < 4; i++)
        if (x->shape[i] < 1) {
            segc_set_error(ctx, "%s: x needs sizes >= 1, found %s", op, segc_shape_str(x, bx, sizeof bx));
            return false;
        }
    if (x->shape[2] * x->shape[3] > INT32_MAX) {
        segc_set_error(ctx, "%s: plane of x %s too large (over 2^31 elements)", op, segc_shape_str(x, bx, sizeof bx));
        return false;
    }
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0) {
        segc_set_error(ctx, "%s: expected kernel >= 1, stride >= 1, pad >= 0, found kernel [%d, %d] stride [%d, %d] "
                       "pad [%d, %d]", op, kh, kw, sh, sw, ph, pw);
        return false;
    }
    if (ph > kh / 2 || pw > kw / 2) {
        segc_set_error(ctx, "%s: pad must be at most half the kernel, found kernel [%d, %d] pad [%d, %d]", op, kh, kw,
                       ph, pw);
        return false;
    }
    *oh = pool_out_size(x->shape[2], kh, sh, ph, ceil_mode);
    *ow = pool_out_size(x->shape[3], kw, sw, pw, ceil_mode);
    if (*oh < 1 || *ow < 1) {
        segc_set_error(ctx, "%s: kernel larger than padded input: kernel [%d, %d] pad [%d, %d] for x %s", op, kh, kw,
                       ph, pw, segc_shape_str(x, bx, sizeof bx));
        return false;
    }
    return true;
}

/* pooling windows (PyTorch: the end is clipped to the padded input first; the
 * include-pad divisor counts that clipped extent) */
static win *pool_windows(segc_ctx *ctx, int64_t in, int64_t out, int k, int s, int p, bool include_pad) {
    win *r = segc_arena_alloc(&ctx->arena, (size_t)out * sizeof *r);
    for (int64_t o = 0; o < out; o++) {
        int64_t start = o * s - p, end = start + k;
        if (end > in + p) end = in + p;
        int64_t lo = start < 0 ? 0 : start, hi = end > in ? in : end;
        r[o] = (win){lo, hi, include_pad ? end - start : hi - lo};
    }
    return r;
}

static win *adaptive_windows(segc_ctx *ctx, int64_t in, int64_t out) {
    win *r = segc_arena_alloc(&ctx->arena, (size_t)out * sizeof *r);
    for (int64_t o = 0; o < out; o++) {
        int64_t lo = o * in / out, hi = ((o + 1) * in + out - 1) / out;
        r[o] = (win){lo, hi, hi - lo};
    }
    return r;
}

/* per-thread f32 scratch, 64-byte aligned slices of `per` floats */
static float *thread_scratch(segc_ctx *ctx, size_t per, size_t *stride) {
    *stride = (per + 15) & ~(size_t)15;
    return segc_arena_alloc(&ctx->arena, (size_t)omp_get_max_threads() * *stride * sizeof(float));
}

static const float *plane_in(const segc_tensor *x, int64_t pl, int64_t size, float *buf) {
    if (x->dtype == SEGC_F32) return segc_f32(x) + pl * size;
    segc_bf16_to_f32_n(segc_bf16p(x) + pl * size, buf, size);
    return buf;
}

/* ---- max pool ---- */

static void max_pool_backward(segc_ctx *ctx, segc_node *nd) {
    const pool_saved *s = nd->saved;
    float *gx = segc_grad(ctx, nd->in[0]);
    const float *g = nd->out->grad;
    const int64_t in_sz = s->h * s->w, out_sz = s->oh * s->ow;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        float *d = gx + pl * in_sz;
        const float *gp = g + pl * out_sz;
        const int32_t *am = s->argmax + pl * out_sz;
        for (int64_t o = 0; o < out_sz; o++) d[am[o]] += gp[o];
    }
}

segc_tensor *segc_max_pool2d(segc_ctx *ctx, segc_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw,
                             bool ceil_mode) {
    if (!x) return NULL;
    int64_t OH, OW;
    if (!pool_check(ctx, "max_pool2d", x, kh, kw, sh, sw, ph, pw, ceil_mode, &OH, &OW)) return NULL;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 4, (int64_t[]){N, C, OH, OW});
    const win *wh = pool_windows(ctx, H, OH, kh, sh, ph, false);
    /* column taps: input column ow*sw + j - pw for outputs [lo, hi) */
    int64_t *tlo = segc_arena_alloc(&ctx->arena, 2 * (size_t)kw * sizeof(int64_t)), *thi = tlo + kw;
    for (int j = 0; j < kw; j++) {
        int64_t off = j - pw;
        tlo[j] = off < 0 ? (-off + sw - 1) / sw : 0;
        thi[j] = W - 1 - off >= 0 ? (W - 1 - off) / sw + 1 : 0;
        if (thi[j] > OW) thi[j] = OW;
        if (tlo[j] > thi[j]) tlo[j] = thi[j];
    }
    int32_t *argmax = segc_arena_alloc(&ctx->arena, (size_t)(N * C * OH * OW) * sizeof(int32_t));
    const bool bf16 = x->dtype == SEGC_BF16;
    size_t stride;
    float *scratch = thread_scratch(ctx, bf16 ? (size_t)(H * W + OH * OW) : 1, &stride);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < N * C; pl++) {
        float *buf = scratch + (size_t)omp_get_thread_num() * stride;
        const float *xp = plane_in(x, pl, H * W, buf);
        float *yp = bf16 ? buf + H * W : segc_f32(y) + pl * OH * OW;
        int32_t *ap = argmax + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            float *restrict m = yp + oh * OW;
            int32_t *restrict a = ap + oh * OW;
            for (int64_t ow = 0; ow < OW; ow++) { m[ow] = -INFINITY; a[ow] = -1; }
            /* window cells in row-major order with a strict '>' keep the first
             * maximum, and a NaN wins, as in PyTorch */
            for (int64_t h = wh[oh].lo; h < wh[oh].hi; h++) {
                const float *row = xp + h * W;
                for (int j = 0; j < kw; j++) {
                    const int64_t off = j - pw;
                    for (int64_t ow = tlo[j]; ow < thi[j]; ow++) {
                        const int64_t col = ow * sw + off;
                        const float v = row[col];
                        const bool take = v > m[ow] || v != v || a[ow] < 0;
                        m[ow] = take ? v : m[ow];
                        a[ow] = take ? (int32_t)(h * W + col) : a[ow];
                    }
                }
            }
        }
        if (bf16) segc_f32_to_bf16_n(yp, segc_bf16p(y) + pl * OH * OW, OH * OW);
    }
    if (segc_needs_grad(ctx, &x, 1)) {
        pool_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
        *s = (pool_saved){N, C, H, W, OH, OW, wh, NULL, argmax};
        segc_record(ctx, "max_pool2d", max_pool_backward, y, &x, 1, s);
    }
    return y;
}

/* ---- average pools (fixed and adaptive windows) ---- */

static void avg_backward(segc_ctx *ctx, segc_node *nd) {
    const pool_saved *s = nd->saved;
    float *gx = segc_grad(ctx, nd->in[0]);
    const float *g = nd->out->grad;
    const int64_t W = s->w;
    size_t stride;
    float *scratch = thread_scratch(ctx, (size_t)W, &stride);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        float *restrict rowg = scratch + (size_t)omp_get_thread_num() * stride;
        float *d = gx + pl * s->h * W;
        const float *gp = g + pl * s->oh * s->ow;
        for (int64_t oh = 0; oh < s->oh; oh++) {
            /* spread this output row over one input row, then add it to every row of the window */
            memset(rowg, 0, (size_t)W * sizeof(float));
            for (int64_t ow = 0; ow < s->ow; ow++) {
                const win c = s->ww[ow];
                const float v = gp[oh * s->ow + ow] / (float)(s->wh[oh].cnt * c.cnt);
                for (int64_t w = c.lo; w < c.hi; w++) rowg[w] += v;
            }
            for (int64_t h = s->wh[oh].lo; h < s->wh[oh].hi; h++) {
                float *restrict dr = d + h * W;
                for (int64_t w = 0; w < W; w++) dr[w] += rowg[w];
            }
        }
    }
}

static segc_tensor *avg_forward(segc_ctx *ctx, const char *op, segc_tensor *x, int64_t OH, int64_t OW, const win *wh,
                                const win *ww) {
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 4, (int64_t[]){N, C, OH, OW});
    const bool bf16 = x->dtype == SEGC_BF16;
    size_t stride;
    float *scratch = thread_scratch(ctx, (size_t)W + (bf16 ? (size_t)(H * W + OH * OW) : 0), &stride);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < N * C; pl++) {
        float *restrict rows = scratch + (size_t)omp_get_thread_num() * stride;
        float *buf = rows + W;
        const float *xp = plane_in(x, pl, H * W, buf);
        float *yp = bf16 ? buf + H * W : segc_f32(y) + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            /* column sums over the window's rows, then sums along each window's columns */
            memset(rows, 0, (size_t)W * sizeof(float));
            for (int64_t h = wh[oh].lo; h < wh[oh].hi; h++) {
                const float *restrict xr = xp + h * W;
                for (int64_t w = 0; w < W; w++) rows[w] += xr[w];
            }
            for (int64_t ow = 0; ow < OW; ow++) {
                float sum = 0;
                for (int64_t w = ww[ow].lo; w < ww[ow].hi; w++) sum += rows[w];
                yp[oh * OW + ow] = sum / (float)(wh[oh].cnt * ww[ow].cnt);
            }
        }
        if (bf16) segc_f32_to_bf16_n(yp, segc_bf16p(y) + pl * OH * OW, OH * OW);
    }
    if (segc_needs_grad(ctx, &x, 1)) {
        pool_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
        *s = (pool_saved){N, C, H, W, OH, OW, wh, ww, NULL};
        segc_record(ctx, op, avg_backward, y, &x, 1, s);
    }
    return y;
}

segc_tensor *segc_avg_pool2d(segc_ctx *ctx, segc_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw,
                             bool ceil_mode, bool count_include_pad) {
    if (!x) return NULL;
    int64_t OH, OW;
    if (!pool_check(ctx, "avg_pool2d", x, kh, kw, sh, sw, ph, pw, ceil_mode, &OH, &OW)) return NULL;
    const win *wh = pool_windows(ctx, x->shape[2], OH, kh, sh, ph, count_include_pad);
    const win *ww = pool_windows(ctx, x->shape[3], OW, kw, sw, pw, count_include_pad);
    return avg_forward(ctx, "avg_pool2d", x, OH, OW, wh, ww);
}

segc_tensor *segc_adaptive_avg_pool2d(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w) {
    if (!x) return NULL;
    char bx[96];
    if (!segc_check_float(ctx, "adaptive_avg_pool2d", "x", x) || !segc_check_ndim(ctx, "adaptive_avg_pool2d", "x", x, 4))
        return NULL;
    if (out_h < 1 || out_w < 1 || x->shape[0] < 1 || x->shape[1] < 1 || x->shape[2] < 1 || x->shape[3] < 1) {
        segc_set_error(ctx, "adaptive_avg_pool2d: expected output size >= 1 and x sizes >= 1, found output [%d, %d] "
                       "for x %s", out_h, out_w, segc_shape_str(x, bx, sizeof bx));
        return NULL;
    }
    const win *wh = adaptive_windows(ctx, x->shape[2], out_h), *ww = adaptive_windows(ctx, x->shape[3], out_w);
    return avg_forward(ctx, "adaptive_avg_pool2d", x, out_h, out_w, wh, ww);
}
