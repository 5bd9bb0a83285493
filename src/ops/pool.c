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
#include "segc/profile.h"

/* One output index along an axis: input range [lo, hi) (inside the input)
 * and its factor of the averaging divisor. */
typedef struct { int64_t lo, hi, cnt; } win;

/* Column taps of a fixed-window pool: tap j (input column ow*s + j - p)
 * is inside the input for outputs [lo[j], hi[j]). Loops over taps, then
 * outputs, run along contiguous memory for stride 1. */
typedef struct { int k, s, p; int64_t *lo, *hi; } col_taps;

typedef struct {
    int64_t n, c, h, w, oh, ow;
    const win *wh, *ww;          /* windows per output row / column */
    const col_taps *ct;          /* fixed-window pools: column taps (NULL: adaptive) */
    const float *cntw;           /* avg: ww[].cnt as floats */
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

/* any_layout: the op takes channels-last x too (max pooling; the average pools take NCHW only) */
static bool pool_check(segc_ctx *ctx, const char *op, const segc_tensor *x, bool any_layout, int kh, int kw, int sh,
                       int sw, int ph, int pw, bool ceil_mode, int64_t *oh, int64_t *ow) {
    char bx[96];
    if (!(any_layout ? segc_check_float_any_layout : segc_check_float)(ctx, op, "x", x) ||
        !segc_check_ndim(ctx, op, "x", x, 4))
        return false;
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

/* f32 view of plane pl: the data itself, or converted into buf (inside the
 * callers' parallel loops, so no parallel helper here) */
static const float *plane_in(const segc_tensor *x, int64_t pl, int64_t size, float *buf) {
    if (x->dtype == SEGC_F32) return segc_f32(x) + pl * size;
    const uint16_t *h = segc_bf16p(x) + pl * size;
    for (int64_t i = 0; i < size; i++) buf[i] = segc_bf16_to_f32(h[i]);
    return buf;
}
static void plane_out(segc_tensor *y, int64_t pl, int64_t size, const float *v) {
    uint16_t *h = segc_bf16p(y) + pl * size;
    for (int64_t i = 0; i < size; i++) h[i] = segc_f32_to_bf16(v[i]);
}

static col_taps make_col_taps(segc_ctx *ctx, int k, int s, int p, int64_t in, int64_t out) {
    col_taps t = {k, s, p, segc_arena_alloc(&ctx->arena, 2 * (size_t)k * sizeof(int64_t)), NULL};
    t.hi = t.lo + k;
    for (int j = 0; j < k; j++) {
        int64_t off = j - p;
        t.lo[j] = off < 0 ? (-off + s - 1) / s : 0;
        t.hi[j] = in - 1 - off >= 0 ? (in - 1 - off) / s + 1 : 0;
        if (t.hi[j] > out) t.hi[j] = out;
        if (t.lo[j] > t.hi[j]) t.lo[j] = t.hi[j];
    }
    return t;
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

/* channels-last: argmax per output element (n, oh, ow, c) is the cell h * W + w of its window.
 * Threads own (n, block of channels) in backward, and each input cell takes its outputs in
 * ascending order as in the NCHW kernel, so the sums are the NCHW kernel's, bit for bit. */
#define NHWC_CBLOCK 64
static void max_pool_nhwc_backward(segc_ctx *ctx, segc_node *nd) {
    const pool_saved *s = nd->saved;
    float *gx = segc_grad(ctx, nd->in[0]);
    const float *g = nd->out->grad;
    const int64_t C = s->c, nb = (C + NHWC_CBLOCK - 1) / NHWC_CBLOCK, out_sz = s->oh * s->ow;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < s->n * nb; t++) {
        const int64_t n = t / nb, c0 = (t % nb) * NHWC_CBLOCK, c1 = c0 + NHWC_CBLOCK < C ? c0 + NHWC_CBLOCK : C;
        float *d = gx + n * s->h * s->w * C;
        for (int64_t o = 0; o < out_sz; o++) {
            const float *gp = g + (n * out_sz + o) * C;
            const int32_t *am = s->argmax + (n * out_sz + o) * C;
            for (int64_t c = c0; c < c1; c++) d[(int64_t)am[c] * C + c] += gp[c];
        }
    }
}

static void max_pool_nhwc_forward(const segc_tensor *x, segc_tensor *y, const win *wh, int kw, int sw, int pw,
                                  int64_t OW, int32_t *argmax) {
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], OH = y->shape[2];
    const bool bf16 = x->dtype == SEGC_BF16;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N * OH; r++) {
        const int64_t n = r / OH, oh = r % OH;
        for (int64_t ow = 0; ow < OW; ow++) {
            const int64_t o = (r * OW + ow) * C;
            int32_t *a = argmax + o;
            float m[NHWC_CBLOCK];
            for (int64_t c0 = 0; c0 < C; c0 += NHWC_CBLOCK) {
                const int64_t len = C - c0 < NHWC_CBLOCK ? C - c0 : NHWC_CBLOCK;
                for (int64_t c = 0; c < len; c++) m[c] = -INFINITY, a[c0 + c] = -1;
                /* the NCHW kernel's walk: window cells in row-major order, strict '>', NaN wins */
                for (int64_t h = wh[oh].lo; h < wh[oh].hi; h++)
                    for (int j = 0; j < kw; j++) {
                        const int64_t col = ow * sw + j - pw;
                        if (col < 0 || col >= W) continue;
                        const int64_t off = ((n * H + h) * W + col) * C + c0;
                        const int32_t cell = (int32_t)(h * W + col);
                        for (int64_t c = 0; c < len; c++) {
                            const float v = bf16 ? segc_bf16_to_f32(segc_bf16p(x)[off + c]) : segc_f32(x)[off + c];
                            const bool take = v > m[c] || v != v || a[c0 + c] < 0;
                            m[c] = take ? v : m[c];
                            a[c0 + c] = take ? cell : a[c0 + c];
                        }
                    }
                for (int64_t c = 0; c < len; c++) {
                    if (bf16) segc_bf16p(y)[o + c0 + c] = segc_f32_to_bf16(m[c]);
                    else segc_f32(y)[o + c0 + c] = m[c];
                }
            }
        }
    }
}

segc_tensor *segc_max_pool2d(segc_ctx *ctx, segc_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw,
                             bool ceil_mode) {
    SEGC_PROF_OP(ctx, "max_pool2d");
    if (!x) return NULL;
    int64_t OH, OW;
    if (!pool_check(ctx, "max_pool2d", x, true, kh, kw, sh, sw, ph, pw, ceil_mode, &OH, &OW)) return NULL;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 4, (int64_t[]){N, C, OH, OW});
    if (!y) return NULL;
    if (x->nhwc) {
        y->nhwc = true;
        const win *wh = pool_windows(ctx, H, OH, kh, sh, ph, false);
        int32_t *argmax = segc_arena_alloc(&ctx->arena, (size_t)(N * C * OH * OW) * sizeof(int32_t));
        max_pool_nhwc_forward(x, y, wh, kw, sw, pw, OW, argmax);
        if (segc_needs_grad(ctx, &x, 1)) {
            pool_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
            *s = (pool_saved){N, C, H, W, OH, OW, wh, NULL, NULL, NULL, argmax};
            segc_record(ctx, "max_pool2d", max_pool_nhwc_backward, y, &x, 1, s);
        }
        return y;
    }
    const win *wh = pool_windows(ctx, H, OH, kh, sh, ph, false);
    const col_taps ct = make_col_taps(ctx, kw, sw, pw, W, OW);
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
                    for (int64_t ow = ct.lo[j]; ow < ct.hi[j]; ow++) {
                        const int64_t col = ow * sw + off;
                        const float v = row[col];
                        const bool take = v > m[ow] || v != v || a[ow] < 0;
                        m[ow] = take ? v : m[ow];
                        a[ow] = take ? (int32_t)(h * W + col) : a[ow];
                    }
                }
            }
        }
        if (bf16) plane_out(y, pl, OH * OW, yp);
    }
    if (segc_needs_grad(ctx, &x, 1)) {
        pool_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
        *s = (pool_saved){N, C, H, W, OH, OW, wh, NULL, NULL, NULL, argmax};
        segc_record(ctx, "max_pool2d", max_pool_backward, y, &x, 1, s);
    }
    return y;
}

/* ---- average pools (fixed and adaptive windows) ---- */

/* Summation order matches a window walk in row-major order per output (and,
 * in backward, ascending outputs per input), whichever loop shape runs. */

static void avg_backward(segc_ctx *ctx, segc_node *nd) {
    const pool_saved *s = nd->saved;
    float *gx = segc_grad(ctx, nd->in[0]);
    const float *g = nd->out->grad;
    const int64_t W = s->w, OW = s->ow;
    const col_taps *ct = s->ct;
    size_t stride;
    float *scratch = thread_scratch(ctx, (size_t)(W + OW), &stride);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        float *restrict rowg = scratch + (size_t)omp_get_thread_num() * stride, *restrict v = rowg + W;
        float *d = gx + pl * s->h * W;
        const float *gp = g + pl * s->oh * OW;
        for (int64_t oh = 0; oh < s->oh; oh++) {
            /* spread this output row over one input row, then add it to every row of the window */
            const float hc = (float)s->wh[oh].cnt;
            for (int64_t ow = 0; ow < OW; ow++) v[ow] = gp[oh * OW + ow] / (hc * s->cntw[ow]);
            memset(rowg, 0, (size_t)W * sizeof(float));
            if (ct) {
                for (int j = ct->k - 1; j >= 0; j--) {   /* descending taps: ascending outputs per column */
                    float *r = rowg + j - ct->p;
                    if (ct->s == 1)
                        for (int64_t ow = ct->lo[j]; ow < ct->hi[j]; ow++) r[ow] += v[ow];
                    else
                        for (int64_t ow = ct->lo[j]; ow < ct->hi[j]; ow++) r[ow * ct->s] += v[ow];
                }
            } else {
                for (int64_t ow = 0; ow < OW; ow++)
                    for (int64_t w = s->ww[ow].lo; w < s->ww[ow].hi; w++) rowg[w] += v[ow];
            }
            for (int64_t h = s->wh[oh].lo; h < s->wh[oh].hi; h++) {
                float *restrict dr = d + h * W;
                for (int64_t w = 0; w < W; w++) dr[w] += rowg[w];
            }
        }
    }
}

static segc_tensor *avg_forward(segc_ctx *ctx, const char *op, segc_tensor *x, int64_t OH, int64_t OW, const win *wh,
                                const win *ww, const col_taps *ct) {
    SEGC_PROF_OP(ctx, op);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 4, (int64_t[]){N, C, OH, OW});
    const bool bf16 = x->dtype == SEGC_BF16;
    float *cntw = segc_arena_alloc(&ctx->arena, (size_t)OW * sizeof(float));
    for (int64_t ow = 0; ow < OW; ow++) cntw[ow] = (float)ww[ow].cnt;
    size_t stride;
    float *scratch = thread_scratch(ctx, (size_t)(W + OW) + (bf16 ? (size_t)(H * W + OH * OW) : 0), &stride);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < N * C; pl++) {
        float *restrict rows = scratch + (size_t)omp_get_thread_num() * stride, *restrict sum = rows + W;
        float *buf = sum + OW;
        const float *xp = plane_in(x, pl, H * W, buf);
        float *yp = bf16 ? buf + H * W : segc_f32(y) + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            /* column sums over the window's rows, then sums along each window's columns */
            memset(rows, 0, (size_t)W * sizeof(float));
            for (int64_t h = wh[oh].lo; h < wh[oh].hi; h++) {
                const float *restrict xr = xp + h * W;
                for (int64_t w = 0; w < W; w++) rows[w] += xr[w];
            }
            if (ct) {
                memset(sum, 0, (size_t)OW * sizeof(float));
                for (int j = 0; j < ct->k; j++) {
                    const float *r = rows + j - ct->p;
                    if (ct->s == 1)
                        for (int64_t ow = ct->lo[j]; ow < ct->hi[j]; ow++) sum[ow] += r[ow];
                    else
                        for (int64_t ow = ct->lo[j]; ow < ct->hi[j]; ow++) sum[ow] += r[ow * ct->s];
                }
            } else {
                for (int64_t ow = 0; ow < OW; ow++) {
                    float acc = 0;
                    for (int64_t w = ww[ow].lo; w < ww[ow].hi; w++) acc += rows[w];
                    sum[ow] = acc;
                }
            }
            const float hc = (float)wh[oh].cnt;
            for (int64_t ow = 0; ow < OW; ow++) yp[oh * OW + ow] = sum[ow] / (hc * cntw[ow]);
        }
        if (bf16) plane_out(y, pl, OH * OW, yp);
    }
    if (segc_needs_grad(ctx, &x, 1)) {
        pool_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
        col_taps *cts = NULL;
        if (ct) {
            cts = segc_arena_alloc(&ctx->arena, sizeof *cts);
            *cts = *ct;
        }
        *s = (pool_saved){N, C, H, W, OH, OW, wh, ww, cts, cntw, NULL};
        segc_record(ctx, op, avg_backward, y, &x, 1, s);
    }
    return y;
}

segc_tensor *segc_avg_pool2d(segc_ctx *ctx, segc_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw,
                             bool ceil_mode, bool count_include_pad) {
    if (!x) return NULL;
    int64_t OH, OW;
    if (!pool_check(ctx, "avg_pool2d", x, false, kh, kw, sh, sw, ph, pw, ceil_mode, &OH, &OW)) return NULL;
    const win *wh = pool_windows(ctx, x->shape[2], OH, kh, sh, ph, count_include_pad);
    const win *ww = pool_windows(ctx, x->shape[3], OW, kw, sw, pw, count_include_pad);
    const col_taps ct = make_col_taps(ctx, kw, sw, pw, x->shape[3], OW);
    return avg_forward(ctx, "avg_pool2d", x, OH, OW, wh, ww, &ct);
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
    return avg_forward(ctx, "adaptive_avg_pool2d", x, out_h, out_w, wh, ww, NULL);
}
